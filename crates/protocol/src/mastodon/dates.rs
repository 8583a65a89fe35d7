//! The dates HTTP response headers carry, as Unix seconds: IMF-fixdate (`Retry-After`) and
//! RFC 3339 (Mastodon's `X-RateLimit-Reset`). Nothing in it is Mastodon-specific.
//!
//! Must never: panic on a malformed date (every parser returns `None`).

use crate::pgtext::days_from_civil;

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
    if !matches!(it.next(), Some("GMT") | Some("UTC") | None) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// An RFC 3339 / ISO 8601 time (`2024-01-31T12:35:00.123Z`, `…+02:00`, space instead of
/// `T` accepted) as Unix seconds, fractions dropped.
pub fn parse_rfc3339_unix(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return None;
    }
    let (date, time) = (&s[..10], &s[11..]);
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let da: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || time.len() < 8
        || !time.is_char_boundary(8)
    {
        return None;
    }
    let (h, mi, sec) = parse_hms(&time[..8])?;
    let mut tz = &time[8..];
    if let Some(frac) = tz.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        tz = &frac[n..];
    }
    let offset = match tz {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = tz[1..].split_once(':').unwrap_or((&tz[1..], "0"));
            let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + sec - offset)
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
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+ab",
            "2024-01-01T00:00:00é",
            "2024-01-01é0:00:00",
        ] {
            assert_eq!(parse_rfc3339_unix(bad), None, "{bad}");
        }
    }
}
