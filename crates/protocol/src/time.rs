//! Timestamps as text: the protocol crate's one parser of RFC 3339 / ISO 8601 date-times, for
//! whatever sends them (Mastodon statuses and rate-limit headers, Debezium's
//! `ZonedTimestamp`). It reads every form that any of the separate parsers it replaces read
//! (see [`parse_rfc3339_micros`]), but not what they let through by accident, such as a sign
//! inside a field. Civil date arithmetic is [`crate::pgtext`]'s.
//!
//! Must never: panic or overflow on any input (a malformed or out-of-range value gives
//! `None`), read a clock, or need a time zone database (only numeric offsets and `Z`).

use crate::pgtext::days_from_civil;

const MICROS_PER_SEC: i128 = 1_000_000;
const MICROS_PER_DAY: i128 = 86_400 * MICROS_PER_SEC;

/// Microseconds since the Unix epoch (UTC) of an RFC 3339 / ISO 8601 date-time, such as
/// `2024-01-31T12:35:00.123Z`, `2024-01-31 14:35:00+02:00` or `+21016-11-04T06:51:30Z`.
///
/// After trimming surrounding whitespace the text must be
/// `[±]Y-M-D` + (`T` | `t` | space) + `h:m[:s[.f]]` + [`Z` | `z` | `±hhmm` | `±h[:m[:s]]`]:
/// - Every field is one or more ASCII digits, of any width (`2024-1-1T0:0:0Z` is read); a
///   sign may only lead the year or the offset.
/// - The year is astronomical (`-0001` is 2 BC), at most 999 999 either way; month 1–12,
///   day 1–31, not checked against the month (`2023-02-31` is March 3).
/// - Hour 0–24, minute 0–59, second 0–60, again not checked together: a leap second `60`
///   and hour `24` roll into the next minute or day. Seconds may be left out (`12:30Z`).
/// - The fraction has any number of digits, none included (`12:30:00.Z`). Digits past the
///   sixth are dropped, which rounds towards the past (`1969-12-31T23:59:59.9999995Z` is
///   −1 µs, not 0).
/// - No offset is UTC. An offset of exactly four digits is `hhmm` (`+0530`); otherwise the
///   first number is hours (`+5`, `+05`), then optional `:mm` and `:ss`. Offset hours 0–23,
///   minutes and seconds 0–59.
///
/// Anything else is `None`, as is a time outside the `i64` microsecond range (years beyond
/// about ±292 000).
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let days = parse_date(date)?;
    let (clock, offset_secs) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], parse_offset(&rest[i..])?),
        None => (rest, 0),
    };
    let us = i128::from(days) * MICROS_PER_DAY + i128::from(parse_clock(clock)?)
        - i128::from(offset_secs) * MICROS_PER_SEC;
    i64::try_from(us).ok()
}

/// One or more ASCII digits as a number; saturates, so huge values fail the range checks.
fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| {
        s.bytes().fold(0i64, |n, b| {
            n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
        })
    })
}

/// `[±]Y-M-D` as days since 1970-01-01.
fn parse_date(s: &str) -> Option<i64> {
    let (neg, ymd) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut it = ymd.splitn(3, '-');
    let (y, m, d) = (
        digits(it.next()?)?,
        digits(it.next()?)?,
        digits(it.next()?)?,
    );
    if y > 999_999 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(
        if neg { -y } else { y },
        m as u32,
        d as u32,
    ))
}

/// `h:m[:s[.f]]` as microseconds past midnight (fraction digits past the sixth dropped).
pub(crate) fn parse_clock(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, ':');
    let (h, m) = (digits(it.next()?)?, digits(it.next()?)?);
    let (sec, frac) = match it.next() {
        Some(r) => {
            let (sec, frac) = r.split_once('.').unwrap_or((r, ""));
            (digits(sec)?, frac)
        }
        None => (0, ""),
    };
    if h > 24 || m > 59 || sec > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_us = frac
        .bytes()
        .chain([b'0'; 6])
        .take(6)
        .fold(0, |a, b| a * 10 + i64::from(b - b'0'));
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + frac_us)
}

/// `Z`, `z`, `±hhmm` (exactly four digits) or `±h[:m[:s]]` as seconds east of UTC.
pub(crate) fn parse_offset(s: &str) -> Option<i64> {
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let (sign, body) = match s.split_at_checked(1)? {
        ("+", r) => (1, r),
        ("-", r) => (-1, r),
        _ => return None,
    };
    let mut it = body.splitn(3, ':');
    let (h, m, sec) = match (it.next()?, it.next(), it.next()) {
        (hhmm, None, None) if hhmm.len() == 4 => {
            (digits(hhmm.get(..2)?)?, digits(hhmm.get(2..)?)?, 0)
        }
        (h, m, sec) => (
            digits(h)?,
            m.map_or(Some(0), digits)?,
            sec.map_or(Some(0), digits)?,
        ),
    };
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    const MIN: i64 = 60_000_000;
    const SEC: i64 = 1_000_000;
    /// 2024-01-01T00:00:00Z.
    const Y2024: i64 = 1_704_067_200 * SEC;

    fn p(s: &str) -> Option<i64> {
        parse_rfc3339_micros(s)
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("2024-01-01T00:00:00Z"), Some(Y2024));
        // Mastodon's `created_at` and `X-RateLimit-Reset`.
        assert_eq!(p("2024-11-20T10:00:00.000Z"), Some(1_732_096_800 * SEC));
        assert_eq!(
            p("2024-01-31T12:35:00.123456Z"),
            Some(1_706_704_500 * SEC + 123_456)
        );
        // Debezium's ZonedTimestamp, the sentiment sink's example.
        assert_eq!(
            p("2016-11-04T11:51:30.123456Z"),
            Some(1_478_260_290_123_456)
        );
        assert_eq!(
            p("2024-01-02T03:04:05.678Z"),
            Some(1_704_164_645 * SEC + 678_000)
        );
    }

    #[test]
    fn separators_and_case() {
        for s in [
            "2024-01-01T00:00:00Z",
            "2024-01-01t00:00:00z",
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00",
            "  2024-01-01T00:00:00Z\n",
        ] {
            assert_eq!(p(s), Some(Y2024), "{s:?}");
        }
    }

    #[test]
    fn offsets() {
        for (off, secs_east) in [
            ("Z", 0),
            ("z", 0),
            ("+00:00", 0),
            ("-00:00", 0),
            ("+02:00", 7200),
            ("-00:30", -1800),
            ("+05:30", 19_800),
            ("+0530", 19_800),
            ("-0800", -28_800),
            ("+0000", 0),
            ("+0023", 23 * 60),
            ("+02", 7200),
            ("+2", 7200),
            ("-5", -18_000),
            ("+023", 23 * 3600),
            ("+2:5", 7500),
            ("+00005", 5 * 3600),
            ("+05:30:15", 19_815),
            ("+18:00", 18 * 3600),
            ("+23:59", 23 * 3600 + 59 * 60),
            ("-23:59:59", -86_399),
        ] {
            assert_eq!(
                p(&format!("2024-01-01T00:00:00{off}")),
                Some(Y2024 - secs_east * SEC),
                "{off}"
            );
        }
        for off in [
            "+",
            "-",
            "+24",
            "+24:00",
            "+00:60",
            "+00:00:60",
            "+2400",
            "+0060",
            "+05:",
            "+05::",
            "+ab",
            "+-5",
            "-+5",
            "+05:-3",
            "+05:30:00:00",
            "+05:30Z",
            "Zz",
            "ZZ",
            "UTC",
            "GMT",
            "+é",
            "+05.5",
            "+٠٥",
        ] {
            assert_eq!(p(&format!("2024-01-01T00:00:00{off}")), None, "{off}");
        }
    }

    #[test]
    fn fractions_are_truncated_to_micros() {
        let t = |f: &str| p(&format!("1970-01-01T00:00:01{f}Z"));
        assert_eq!(t(""), Some(SEC));
        assert_eq!(t("."), Some(SEC), "an empty fraction is read");
        assert_eq!(t(".5"), Some(SEC + 500_000));
        assert_eq!(t(".000001"), Some(SEC + 1));
        assert_eq!(t(".0000019"), Some(SEC + 1));
        assert_eq!(t(".123456789"), Some(SEC + 123_456));
        assert_eq!(t(".1234567890123456789012345"), Some(SEC + 123_456));
        // Before the epoch the fraction still counts forward from the whole second.
        assert_eq!(p("1969-12-31T23:59:59.5Z"), Some(-500_000));
        assert_eq!(p("1969-12-31T23:59:59.9999999Z"), Some(-1));
        assert_eq!(p("1969-12-31T23:59:59.999999+00"), Some(-1));
        assert_eq!(p("1970-01-01 00:00:01.5-00:30"), Some(1801 * SEC + 500_000));
        for bad in [".a", ".5.5", ".-5", ".+5", ",5", ". 5", ".5 "] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn field_widths_and_missing_seconds() {
        assert_eq!(p("2024-1-1T0:0:0Z"), Some(Y2024));
        assert_eq!(p("2024-001-0001T000:00:00Z"), Some(Y2024));
        assert_eq!(
            p("24-01-01T00:00:00Z"),
            Some(p("0024-01-01T00:00:00Z").unwrap())
        );
        assert_eq!(
            p("2024-01-01T00:00:00000000000000000000001Z"),
            Some(Y2024 + SEC)
        );
        assert_eq!(p("2024-01-01T12:30Z"), Some(Y2024 + 12 * HOUR + 30 * MIN));
        assert_eq!(p("2024-01-01T12:30"), Some(Y2024 + 12 * HOUR + 30 * MIN));
        assert_eq!(p("2024-01-01T12:30+01"), Some(Y2024 + 11 * HOUR + 30 * MIN));
        for bad in [
            "2024-01-01T12Z",
            "2024-01-01T12",
            "2024-01-01T12:30.5Z",
            "2024-01-01T12:30:Z",
            "2024-01-01T12:30:.5Z",
            "2024-01-01T:30:00Z",
            "2024-01-01T12::00Z",
            "2024-01-01T12:30:00:00Z",
            "2024-01-01TZ",
            "2024-01-01T",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn out_of_range_fields_roll_over_or_are_rejected() {
        // Leap second, hour 24 and day 31 of a short month roll over, as before.
        assert_eq!(p("2016-12-31T23:59:60Z"), p("2017-01-01T00:00:00Z"));
        assert_eq!(p("2024-01-01T24:00:00Z"), Some(Y2024 + DAY));
        assert_eq!(p("2024-01-01T24:59:60Z"), Some(Y2024 + DAY + 60 * MIN));
        assert_eq!(p("2023-02-29T00:00:00Z"), p("2023-03-01T00:00:00Z"));
        assert_eq!(p("2024-02-31T00:00:00Z"), p("2024-03-02T00:00:00Z"));
        assert_eq!(p("2023-02-31T00:00:00Z"), p("2023-03-03T00:00:00Z"));
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:61Z",
            "2024-01-01T99:99Z",
            "+99999-99-99T99:99Z",
            "1000000-01-01T00:00:00Z",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn signed_and_long_years() {
        assert_eq!(p("+2024-01-01T00:00:00Z"), Some(Y2024));
        assert_eq!(
            p("+21016-11-04T06:51:30.123456Z"),
            Some(days_from_civil(21_016, 11, 4) * DAY + 24_690_123_456)
        );
        assert_eq!(
            p("-0001-01-01T00:00:00Z"),
            Some(days_from_civil(-1, 1, 1) * DAY)
        );
        assert_eq!(
            p("0000-01-01T00:00:00Z"),
            Some(days_from_civil(0, 1, 1) * DAY)
        );
        assert_eq!(p("-0000-01-01T00:00:00Z"), p("0000-01-01T00:00:00Z"));
        // The i64 microsecond range ends in the years 294247 and -290308.
        assert_eq!(p("+294247-01-10T04:00:54.775807Z"), Some(i64::MAX));
        assert_eq!(p("+294247-01-10T04:00:54.775808Z"), None);
        assert_eq!(p("-290308-12-21T19:59:05.224192Z"), Some(i64::MIN));
        assert_eq!(p("-290308-12-21T19:59:05.224191Z"), None);
        assert_eq!(p("999999-12-31T23:59:60Z"), None);
        assert_eq!(p("-999999-01-01T00:00:00Z"), None);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            " ",
            "2024-01-01",
            "2024-01-01X00:00:00Z",
            "2024-01-01é0:00:00",
            "2024-01-01T00:00:00é",
            "2024-01-01T00:00:00 Z",
            "2024-01-01  00:00:00Z",
            "2024-01-01 T00:00:00Z",
            "2024-01-01T 00:00:00Z",
            "2024/01/01T00:00:00Z",
            "20240101T000000Z",
            "2024-01T00:00:00Z",
            "2024-01-01-0T00:00:00Z",
            "2024-+1-01T00:00:00Z",
            "2024-01-+1T00:00:00Z",
            "++2024-01-01T00:00:00Z",
            "--2024-01-01T00:00:00Z",
            "2024-01-01T+1:02:03Z",
            "2024-01-01T-0:00:00Z",
            "2024-01-01T00:00:00 BC",
            "0044-03-15 12:00:00 BC",
            "infinity",
            "-infinity",
            "2024-01-01T00:00:00Z[Europe/Paris]",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "1704067200",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    /// The forms of Postgres's text output that the sentiment sink read (through
    /// `pgtext::parse_timestamp_micros`), and that Postgres's parser's tests cover.
    #[test]
    fn postgres_text_forms() {
        assert_eq!(p("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(p("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(p("1970-01-01 05:30:00+05:30"), Some(0));
        assert_eq!(p("1969-12-31 23:59:59.999999+00"), Some(-1));
        assert_eq!(
            p("2200-06-01 12:00:00.000001+00"),
            Some(7_271_208_000 * SEC + 1)
        );
        for bad in ["2024-01-01", "2024-01-01 xx:00:00", "infinity"] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    /// Where this parser departs from the three it replaces; on every other input it gives
    /// what they gave (for the seconds of Mastodon's, the micros divided by 10⁶ rounding
    /// down).
    #[test]
    fn departures_from_the_replaced_parsers() {
        // Mastodon's `parse_rfc3339_unix` read a four-digit offset 0001–0023 as hours, the
        // sentiment sink's `rfc3339_micros` any four-digit offset (`+0530` was 530 hours).
        assert_eq!(p("2024-01-01T00:00:00+0023"), Some(Y2024 - 23 * MIN));
        assert_eq!(p("2024-01-01T00:00:00+0530"), Some(Y2024 - 330 * MIN));
        // Both let signs into fields (`str::parse` takes them); Mastodon's ignored a fourth
        // date field, and as it gave seconds, read years up to 999 999.
        for s in [
            "2024-+1-01T00:00:00Z",
            "2024-01-+1 00:00:00Z",
            "2024-01-01T+1:02:03Z",
            "2024-01-01T-0:00:00Z",
            "2024-01-01T00:00:00+-5:00",
            "2024-01-01T00:00:00-+5",
            "2024-01-01T00:00:00+05:-3",
            "2024-1-1-0T00:00:00Z",
            "999999-1-1T00:00:00Z",
        ] {
            assert_eq!(p(s), None, "{s}");
        }
        // The sentiment sink also read Postgres's `infinity` and ` BC`, offsets of any size,
        // offset fields past the third, and a `Z` after a dangling offset (`+Z` was `++00`).
        for s in [
            "infinity",
            "-infinity",
            "0044-03-15T12:00:00 BC",
            "0044-03-15T12:00:00+00 BC",
            "2024-01-01T00:00:00+24",
            "2024-01-01T00:00:00+99:00",
            "2024-01-01T00:00:00+05:75",
            "2024-01-01T00:00:00+05:30:60",
            "2024-01-01T00:00:00+2400",
            "2024-01-01T00:00:00+05:30:00:99",
            "2024-01-01T00:00:00+Z",
            "2024-01-01T00:00:00+05:Z",
        ] {
            assert_eq!(p(s), None, "{s}");
        }
        // Debezium's `parse_iso_timestamp` read nothing differently; these it did not read.
        assert_eq!(p(" 2024-01-01T00:00:00Z\t"), Some(Y2024));
        assert_eq!(p("2024-01-01T00:00:00.1234567891Z"), Some(Y2024 + 123_456));
        assert_eq!(p("2024-01-01T19:00:00+19:00"), Some(Y2024));
        assert_eq!(p("2024-01-01T00:00:00+023"), Some(Y2024 - 23 * HOUR));
        assert_eq!(p("0000000000000000002024-01-01T00:00:00Z"), Some(Y2024));
        assert_eq!(p("-290308-12-21T19:59:05.224192Z"), Some(i64::MIN));
    }

    /// xorshift noise over the grammar's characters and truncations of valid times: `None`
    /// or a value, never a panic.
    #[test]
    fn random_input_never_panics() {
        let alphabet = b"0123456789-+:.TtZz \xc3\xa9";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000 {
            let len = i % 40;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = p(&String::from_utf8_lossy(&bytes));
        }
        let s = "+021016-11-04T06:51:30.123456789+05:30:15";
        for cut in 0..=s.len() {
            let _ = p(&s[..cut]);
            let _ = p(&s[cut..]);
        }
        assert_eq!(p(&"9".repeat(100)), None);
        assert_eq!(p(&format!("2024-01-01T00:00:00+{}", "9".repeat(16))), None);
        assert_eq!(
            p(&format!("{0}-{0}-{0}T{0}:{0}:{0}Z", "9".repeat(30))),
            None
        );
    }
}
