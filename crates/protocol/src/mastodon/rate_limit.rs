//! What the rate-limit headers of a REST response (`X-RateLimit-*`, `Retry-After`) say, and
//! how long to wait, relative to the "now" the caller passes; after a 429, at least a backoff
//! that doubles with each 429 in a row.
//!
//! Must never: read a clock, turn an unparsable header into a wait (it counts as absent), or
//! let a 429 be retried at once, whatever its headers say (or do not say).

/// The wait after the first 429 in a row that announces a shorter one (or none).
pub const BACKOFF_INITIAL_SECS: u64 = 1;
/// The longest wait of the backoff after 429s in a row.
pub const BACKOFF_MAX_SECS: u64 = 300;

use super::dates::{parse_http_date_unix, parse_rfc3339_unix};

/// What the rate-limit headers of a response say, relative to the caller's "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// `X-RateLimit-Limit`.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// Seconds until `X-RateLimit-Reset` (an ISO 8601 time), 0 when it has passed.
    pub reset_in_secs: Option<u64>,
    /// `Retry-After` in seconds (given as seconds or as an HTTP date).
    pub retry_after_secs: Option<u64>,
}

impl RateLimit {
    /// Reads the headers through `header`, which is asked for lower-case names
    /// (`retry-after`, `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`)
    /// and returns the value if present. `now_unix` is the caller's clock, in seconds.
    /// Unparsable values are treated as absent.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>, now_unix: i64) -> RateLimit {
        let num = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        RateLimit {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            reset_in_secs: header("x-ratelimit-reset")
                .and_then(parse_rfc3339_unix)
                .map(|t| secs_until(t, now_unix)),
            retry_after_secs: header("retry-after").and_then(|v| parse_retry_after(v, now_unix)),
        }
    }

    /// How long to wait before the next request, if at all: `Retry-After` when given,
    /// else the time to the reset when no requests remain.
    pub fn wait_secs(&self) -> Option<u64> {
        self.retry_after_secs.or(match self.remaining {
            Some(0) => Some(self.reset_in_secs.unwrap_or(0)),
            _ => None,
        })
    }

    /// How long to wait after a 429, the `in_a_row`th since the last success (counting from
    /// 1): what the headers announce, but at least [`backoff_secs`], so a 429 without
    /// headers, or one that announces 0 s or a reset already past, is not retried at once.
    pub fn wait_after_429_secs(&self, in_a_row: u32) -> u64 {
        self.wait_secs().unwrap_or(0).max(backoff_secs(in_a_row))
    }
}

/// The backoff after the `in_a_row`th 429 in a row: 1 s after the first, doubling, at most
/// 5 minutes; 0 before any.
pub fn backoff_secs(in_a_row: u32) -> u64 {
    match in_a_row {
        0 => 0,
        n => (BACKOFF_INITIAL_SECS << (n - 1).min(16)).min(BACKOFF_MAX_SECS),
    }
}

fn secs_until(t: i64, now: i64) -> u64 {
    u64::try_from(t.saturating_sub(now)).unwrap_or(0)
}

/// `Retry-After` as seconds from now: delay-seconds, or an HTTP date (IMF-fixdate).
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse().unwrap_or(u64::MAX));
    }
    parse_http_date_unix(v).map(|t| secs_until(t, now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_from_headers() {
        let now = parse_rfc3339_unix("2024-01-31T12:30:00Z").unwrap();
        let headers = [
            ("x-ratelimit-limit", "300"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2024-01-31T12:35:00.123456Z"),
        ];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let rl = RateLimit::from_headers(get, now);
        assert_eq!(
            rl,
            RateLimit {
                limit: Some(300),
                remaining: Some(0),
                reset_in_secs: Some(300),
                retry_after_secs: None
            }
        );
        assert_eq!(rl.wait_secs(), Some(300));
        let rl = RateLimit::from_headers(|n| (n == "retry-after").then_some("12"), now);
        assert_eq!(rl.wait_secs(), Some(12));
        let rl = RateLimit::from_headers(|n| (n == "x-ratelimit-remaining").then_some("5"), now);
        assert_eq!(rl.wait_secs(), None);
        let rl = RateLimit::from_headers(|_| Some("garbage"), now);
        assert_eq!(rl, RateLimit::default());
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let waits: Vec<u64> = (0..=11).map(backoff_secs).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_secs(u32::MAX), BACKOFF_MAX_SECS);
    }

    #[test]
    fn a_429_waits_at_least_the_backoff() {
        let now = 1_700_000_000;
        let bare = RateLimit::default();
        assert_eq!(bare.wait_secs(), None);
        assert_eq!(
            (1..=4)
                .map(|n| bare.wait_after_429_secs(n))
                .collect::<Vec<_>>(),
            [1, 2, 4, 8],
            "no headers: the backoff alone"
        );
        let announced = RateLimit::from_headers(|n| (n == "retry-after").then_some("30"), now);
        assert_eq!(
            announced.wait_after_429_secs(1),
            30,
            "a longer announced wait wins"
        );
        assert_eq!(
            announced.wait_after_429_secs(7),
            64,
            "a longer backoff wins"
        );
        let zero = RateLimit::from_headers(|n| (n == "retry-after").then_some("0"), now);
        assert_eq!(
            zero.wait_after_429_secs(1),
            1,
            "\"retry now\" is not taken at its word"
        );
        let past = RateLimit::from_headers(
            |n| match n {
                "x-ratelimit-remaining" => Some("0"),
                "x-ratelimit-reset" => Some("2000-01-01T00:00:00Z"),
                _ => None,
            },
            now,
        );
        assert_eq!(
            (past.wait_secs(), past.wait_after_429_secs(2)),
            (Some(0), 2)
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = parse_http_date_unix("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(now, 784_111_777);
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(60)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(0),
            "past dates wait 0"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(u64::MAX)
        );
    }
}
