//! The dates HTTP response headers carry, as Unix seconds: IMF-fixdate (`Retry-After`) and
//! RFC 3339 (Mastodon's `X-RateLimit-Reset`, read by the protocol crate's one RFC 3339
//! parser, [`crate::time::parse_rfc3339_micros`]). Nothing in it is Mastodon-specific.
//!
//! Must never: panic on a malformed date (every parser returns `None`).

use crate::pgtext::days_from_civil;
use crate::time::parse_rfc3339_micros;

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
pub fn parse_http_date_unix(s: &str) -> Option<i64> {
    let rest = s.trim().split_once(", ").map_or(s.trim(), |(_, r)| r);
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()?.to_ascii_lowercase().as_str() {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let (h, m, sec) = parse_hms(it.next()?)?;
    // HTTP dates have four-digit years; a larger one would overflow the arithmetic below
    // (a panic in debug builds, on a server's header).
    if !matches!(it.next(), Some("GMT") | Some("UTC") | None)
        || !(1..=31).contains(&day)
        || !(0..=9999).contains(&year)
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// An RFC 3339 / ISO 8601 time (`2024-01-31T12:35:00.123Z`, `…+02:00`, space instead of
/// `T` accepted) as Unix seconds, fractions dropped (rounded towards the past, so
/// `1969-12-31T23:59:59.5Z` is `-1`). The forms accepted are those of
/// [`parse_rfc3339_micros`], the crate's one RFC 3339 parser.
pub fn parse_rfc3339_unix(s: &str) -> Option<i64> {
    parse_rfc3339_micros(s).map(|us| us.div_euclid(1_000_000))
}

fn parse_hms(s: &str) -> Option<(i64, i64, i64)> {
    let mut it = s.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || h > 24 || m > 59 || sec > 60 || h < 0 || m < 0 || sec < 0 {
        return None;
    }
    Some((h, m, sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_year_is_no_date_not_a_panic() {
        assert_eq!(
            parse_http_date_unix("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(0)
        );
        assert_eq!(
            parse_http_date_unix("Thu, 01 Jan 9999999999999999 00:00:00 GMT"),
            None
        );
        assert_eq!(parse_http_date_unix("Thu, 01 Jan -5 00:00:00 GMT"), None);
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_unix("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(
            parse_rfc3339_unix("1970-01-01 00:00:01.5-00:30"),
            Some(1801)
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00:00+ab",
            "2024-01-01T00:00:00é",
            "2024-01-01é0:00:00",
        ] {
            assert_eq!(parse_rfc3339_unix(bad), None, "{bad}");
        }
        // Read since the parser is shared with Debezium's: no seconds, an empty fraction.
        assert_eq!(parse_rfc3339_unix("2024-01-01T00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339_unix("2024-01-01T00:00:00.Z"),
            Some(1_704_067_200)
        );
    }

    #[test]
    fn rfc3339_seconds_round_towards_the_past() {
        for (s, secs) in [
            ("1970-01-01T00:00:00.999999999Z", 0),
            ("1970-01-01T00:00:01.5Z", 1),
            ("1969-12-31T23:59:59Z", -1),
            ("1969-12-31T23:59:59.5Z", -1),
            ("1969-12-31T23:59:59.999999999Z", -1),
            ("1969-12-31T23:59:58.000001Z", -2),
            ("1970-01-01T00:00:00.5+00:00:01", -1),
            ("0001-01-01T00:00:00.1Z", -62_135_596_800),
        ] {
            assert_eq!(parse_rfc3339_unix(s), Some(secs), "{s}");
        }
    }
}
