//! Value conversions shared by both directions: Postgres text values ↔ Debezium's encodings
//! of them (Decimal and VariableScaleDecimal as Java `BigInteger` bytes in base64, MicroTime,
//! MicroTimestamp, ZonedTimestamp, ZonedTime, MicroDuration), and Postgres' text output of
//! dates, timestamps and intervals.
//!
//! Must never: panic on a malformed value (the decoder, which is fuzzed, passes untrusted
//! ones): what does not parse gives `None`; or drop a digit: `decimal_parts` refuses a
//! fraction longer than the scale.

use std::fmt::Write as _;

use super::DAY_US;
use crate::pgtext::civil_from_days;
use crate::time::{parse_clock, parse_offset};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, quoted (what Jackson writes for `bytes`).
pub(super) fn b64_quoted(o: &mut String, data: &[u8]) {
    o.push('"');
    for c in data.chunks(3) {
        let at = |i: usize| *c.get(i).unwrap_or(&0) as u32;
        let n = at(0) << 16 | at(1) << 8 | at(2);
        let ch = |shift: u32| B64[(n >> shift) as usize & 63] as char;
        o.push(ch(18));
        o.push(ch(12));
        o.push(if c.len() > 1 { ch(6) } else { '=' });
        o.push(if c.len() > 2 { ch(0) } else { '=' });
    }
    o.push('"');
}

/// Base64, standard or URL-safe alphabet, padding optional.
pub(super) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        (acc, bits) = ((acc << 6 | v as u32) & 0xffff, bits + 6);
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A numeric's text as (negative, unscaled ASCII digits, scale). With `scale`, the fraction is
/// padded or trimmed of zeros to it (None if a non-zero digit would be lost); without, its
/// trailing zeros are stripped (as Debezium's VariableScaleDecimal does).
pub(super) fn decimal_parts(s: &str, scale: Option<u32>) -> Option<(bool, Vec<u8>, u32)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    let mut frac = frac.as_bytes().to_vec();
    let keep = scale.map_or(
        frac.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1),
        |s| s as usize,
    );
    if frac
        .get(keep..)
        .is_some_and(|cut| cut.iter().any(|&d| d != b'0'))
    {
        return None;
    }
    frac.resize(keep, b'0');
    let mut all = int.as_bytes().to_vec();
    all.extend(frac);
    Some((neg, all, u32::try_from(keep).ok()?))
}

/// The unscaled integer as Java's `BigInteger.toByteArray()` gives it: big-endian two's
/// complement, minimal length.
pub(super) fn twos_complement(neg: bool, digits: &[u8]) -> Vec<u8> {
    let mut limbs: Vec<u32> = Vec::new(); // little-endian, base 2^32
    for chunk in digits.chunks(9) {
        let (mul, mut carry) = chunk.iter().fold((1u64, 0u64), |(m, a), d| {
            (m * 10, a * 10 + (d - b'0') as u64)
        });
        for l in limbs.iter_mut() {
            let v = *l as u64 * mul + carry;
            (*l, carry) = (v as u32, v >> 32);
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    let mut out = vec![0u8];
    out.extend(limbs.iter().rev().flat_map(|l| l.to_be_bytes()));
    if neg {
        negate(&mut out);
    }
    let redundant = |w: &[u8]| (w[0] == 0 && w[1] < 0x80) || (w[0] == 0xff && w[1] >= 0x80);
    let start = out.windows(2).take_while(|w| redundant(w)).count();
    out.split_off(start)
}

fn negate(b: &mut [u8]) {
    b.iter_mut().for_each(|x| *x = !*x);
    for x in b.iter_mut().rev() {
        let (v, carry) = x.overflowing_add(1);
        *x = v;
        if !carry {
            break;
        }
    }
}

/// Big-endian two's complement bytes with a scale as decimal text (`-1.50`).
pub(super) fn decimal_text(bytes: &[u8], scale: i64) -> String {
    let neg = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag = bytes.to_vec();
    if neg {
        negate(&mut mag);
    }
    let mut limbs: Vec<u32> = mag
        .rchunks(4)
        .map(|c| c.iter().fold(0, |a, &x| a << 8 | x as u32))
        .collect();
    let mut parts = Vec::new(); // base 10^9, least significant first
    while let Some(i) = limbs.iter().rposition(|&l| l != 0) {
        limbs.truncate(i + 1);
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = rem << 32 | *l as u64;
            (*l, rem) = ((cur / 1_000_000_000) as u32, cur % 1_000_000_000);
        }
        parts.push(rem);
    }
    let mut digits = parts.last().map_or("0".to_string(), |top| top.to_string());
    parts
        .iter()
        .rev()
        .skip(1)
        .for_each(|p| w!(digits, "{p:09}"));
    let zero = digits == "0";
    let sc = scale.unsigned_abs() as usize;
    if scale > 0 {
        if digits.len() <= sc {
            digits.insert_str(0, &"0".repeat(sc + 1 - digits.len()));
        }
        digits.insert(digits.len() - sc, '.');
    } else if !zero {
        digits.push_str(&"0".repeat(sc));
    }
    if neg && !zero {
        digits.insert(0, '-');
    }
    digits
}

fn num(s: &str) -> Option<i64> {
    let ok = !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok()).flatten()
}

/// A time with an offset (`13:51:30.5+02`, `11:51:30Z`) as microseconds past midnight UTC.
pub(super) fn parse_time_with_offset(s: &str) -> Option<i64> {
    let i = s.find(['Z', 'z', '+', '-'])?;
    let us = parse_clock(&s[..i])? - parse_offset(&s[i..])? * 1_000_000;
    Some(us.rem_euclid(DAY_US))
}

/// Postgres-style interval output (`1 year 2 mons 3 days 04:05:06.5`) as Debezium's
/// MicroDuration: months of 365.25/12 days, computed in doubles in Debezium's order.
pub(super) fn parse_interval_micros(s: &str) -> Option<i64> {
    let (mut months, mut days, mut h, mut mi, mut sec) = (0i64, 0i64, 0i64, 0i64, 0f64);
    let mut toks = s.split_whitespace().peekable();
    toks.peek()?;
    while let Some(t) = toks.next() {
        let (sign, body) = match t.strip_prefix('-') {
            Some(b) => (-1, b),
            None => (1, t.strip_prefix('+').unwrap_or(t)),
        };
        if body.contains(':') {
            let mut it = body.splitn(3, ':');
            (h, mi) = (sign * num(it.next()?)?, sign * num(it.next()?)?);
            let ss = it.next().unwrap_or("0");
            if ss.is_empty() || !ss.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return None;
            }
            sec = sign as f64 * ss.parse::<f64>().ok()?;
        } else {
            let n = sign * num(body)?;
            match toks.next()?.trim_end_matches('s') {
                "year" => months += n.checked_mul(12)?,
                "mon" => months += n,
                "day" => days = n,
                _ => return None,
            }
        }
    }
    let days = months as f64 * (365.25 / 12.0) + days as f64;
    Some(((((days * 24.0 + h as f64) * 60.0 + mi as f64) * 60.0 + sec) * 1e6) as i64)
}

/// `HH:MM:SS` and the fraction without trailing zeros, as Postgres and Java print times.
pub(super) fn clock_text(us: i64) -> String {
    let s = us / 1_000_000;
    let mut o = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    if us % 1_000_000 != 0 {
        w!(
            o,
            ".{}",
            format!("{:06}", us % 1_000_000).trim_end_matches('0')
        );
    }
    o
}

/// Debezium's ZonedTimestamp: ISO-8601 in UTC with six fraction digits (`+` before years past
/// 9999, proleptic years ≤ 0 for BC).
pub(super) fn iso_timestamp(us: i64) -> String {
    let (y, m, d) = civil_from_days(us.div_euclid(DAY_US));
    let mut o = match y {
        10000.. => format!("+{y}"),
        ..0 => format!("-{:04}", -y),
        _ => format!("{y:04}"),
    };
    let (tod, frac) = (us.rem_euclid(DAY_US) / 1_000_000, us.rem_euclid(1_000_000));
    w!(
        o,
        "-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    o
}

/// Postgres text of a date (`0044-03-15 BC` for proleptic years ≤ 0), with `tail` (the time of
/// a timestamp) before the era.
pub(super) fn pg_date(days: i64, tail: &str) -> String {
    let (y, m, d) = civil_from_days(days);
    let era = if y <= 0 { " BC" } else { "" };
    format!(
        "{:04}-{m:02}-{d:02}{tail}{era}",
        if y <= 0 { 1 - y } else { y }
    )
}

/// Postgres text of a timestamp (`+00` when `tz`), as DateStyle=ISO prints it.
pub(super) fn pg_timestamp(us: i64, tz: bool) -> String {
    let time = format!(
        " {}{}",
        clock_text(us.rem_euclid(DAY_US)),
        if tz { "+00" } else { "" }
    );
    pg_date(us.div_euclid(DAY_US), &time)
}

/// Postgres-style interval text for a MicroDuration (days and a clock; months are gone).
pub(super) fn pg_interval(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let (days, rest) = (
        us.unsigned_abs() / DAY_US as u64,
        (us.unsigned_abs() % DAY_US as u64) as i64,
    );
    let plural = if days == 1 { "" } else { "s" };
    match (days, rest) {
        (0, _) => format!("{}{}", if rest > 0 { sign } else { "" }, clock_text(rest)),
        (_, 0) => format!("{sign}{days} day{plural}"),
        _ => format!("{sign}{days} day{plural} {sign}{}", clock_text(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_offset_is_no_time_not_a_panic() {
        assert_eq!(parse_offset("+02:00"), Some(7200));
        assert_eq!(parse_offset("+999999999999999999"), None);
        assert_eq!(parse_offset("-99999999999999999:59"), None);
        assert!(parse_time_with_offset("12:00:00+999999999999999999").is_none());
    }

    #[test]
    fn numerics_are_twos_complement_like_java_biginteger() {
        #[rustfmt::skip]
        let cases = [("0", "AA=="), ("127", "fw=="), ("128", "AIA="), ("-1", "/w=="), ("-128", "gA=="),
                     ("-129", "/38="), ("101111", "AYr3")];
        for (n, b64) in cases {
            let (neg, digits, _) = decimal_parts(n, Some(0)).unwrap();
            let mut s = String::new();
            b64_quoted(&mut s, &twos_complement(neg, &digits));
            assert_eq!(s, format!("\"{b64}\""), "{n}");
            assert_eq!(decimal_text(&b64_decode(b64).unwrap(), 0), n);
        }
        assert_eq!(decimal_text(&[0xff, 0x6a], 2), "-1.50");
        assert_eq!(decimal_text(&[5], 3), "0.005");
        assert_eq!(decimal_text(&[5], -2), "500");
        assert_eq!(
            decimal_parts("1.234", Some(2)),
            None,
            "digits would be lost"
        );
    }
}
