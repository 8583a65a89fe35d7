//! Postgres text-format values (what pgoutput and `COPY ... TO STDOUT` send, with
//! DateStyle=ISO and TimeZone=UTC) converted into ClickHouse TabSeparated fields.
//!
//! Must never: panic on a malformed value (every parser returns `None` and the caller counts
//! and reports it), or write a byte into a TSV field that ClickHouse would read differently.

/// Appends `v` to `out` escaped for a TabSeparated field. Eight bytes at a time are passed
/// over while none of them needs escaping (most text needs none).
pub fn tsv_escape(out: &mut Vec<u8>, v: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < v.len() {
        while let Some(w) = v.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            if word_needs_escape(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = v.get(i) else { break };
        i += 1;
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&v[start..i - 1]);
        out.extend_from_slice(esc);
        start = i;
    }
    out.extend_from_slice(&v[start..]);
}

/// Whether any byte of `w` is one `tsv_escape` escapes (exact: the zero-byte test below has
/// no false positives as a yes/no answer).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    has_zero(w)
        || has_zero(w ^ (ONES * b'\\' as u64))
        || has_zero(w ^ (ONES * b'\t' as u64))
        || has_zero(w ^ (ONES * b'\n' as u64))
        || has_zero(w ^ (ONES * b'\r' as u64))
}

/// Appends `v` as a single-quoted ClickHouse literal (the form of strings inside arrays).
pub fn quoted_escape(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'\'');
    for &b in v {
        match b {
            b'\'' => out.extend_from_slice(b"\\'"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            b => out.push(b),
        }
    }
    out.push(b'\'');
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A Postgres date (`2024-01-31`, `0044-03-15 BC`, `infinity`) as days since 1970-01-01.
/// Infinities become `i32::MAX` / `i32::MIN`.
pub fn parse_date_days(s: &str) -> Option<i64> {
    match s {
        "infinity" => return Some(i32::MAX as i64),
        "-infinity" => return Some(i32::MIN as i64),
        _ => {}
    }
    match s.strip_suffix(" BC") {
        Some(r) => parse_ymd(r, true),
        None => parse_ymd(s, false),
    }
}

fn parse_ymd(s: &str, bc: bool) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 0 {
        return None;
    }
    Some(days_from_civil(if bc { 1 - y } else { y }, m, d))
}

/// [`parse_timestamp_micros`] of raw bytes (a pgoutput value): the form Postgres prints
/// (`YYYY-MM-DD hh:mm:ss[.f…][±hh[:mm[:ss]]]`, four-digit years) is read byte by byte, anything
/// else as text by the general parser. The same result for every input: a value streamed
/// millions of times is worth a parser without splits and UTF-8 checks.
pub fn parse_timestamp_micros_bytes(b: &[u8]) -> Option<i64> {
    match timestamp_fast(b) {
        Some(us) => Some(us),
        None => parse_timestamp_micros(std::str::from_utf8(b).ok()?),
    }
}

/// The ISO form with a four-digit year, or `None` (the caller falls back).
fn timestamp_fast(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(at..at + n)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, m, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (h, mi, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 24 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 6 {
            return None;
        }
        frac = digits(b, start, n)? * 10i64.pow((6 - n) as u32);
    }
    let mut offset = 0i64;
    if let Some(&sign) = b.get(i).filter(|c| matches!(c, b'+' | b'-')) {
        let oh = digits(b, i + 1, 2)?;
        i += 3;
        let mut om = 0;
        let mut os = 0;
        if b.get(i) == Some(&b':') {
            om = digits(b, i + 1, 2)?;
            i += 3;
            if b.get(i) == Some(&b':') {
                os = digits(b, i + 1, 2)?;
                i += 3;
            }
        }
        offset = (oh * 3600 + om * 60 + os) * if sign == b'-' { -1 } else { 1 };
    }
    if i != b.len() {
        return None; // ` BC`, or anything else: the general parser decides
    }
    let days = days_from_civil(y, m as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    secs.checked_mul(1_000_000)?.checked_add(frac)
}

/// A Postgres timestamp or timestamptz (`2024-01-31 12:34:56.789+00`, with optional
/// `+05:30` offsets and ` BC`) as microseconds since the Unix epoch, UTC. Infinities become
/// `i64::MAX` / `i64::MIN`.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(' ')?;
    let date_days = parse_ymd(date, bc)?;
    // Split off a UTC offset: the first '+' or '-' after the time of day.
    let (clock, offset) = match time.find(['+', '-']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let mut it = clock.splitn(3, ':');
    let h: i64 = it.next()?.parse().ok()?;
    let mi: i64 = it.next()?.parse().ok()?;
    let sec_s = it.next()?;
    let (sec, frac) = sec_s.split_once('.').unwrap_or((sec_s, ""));
    let sec: i64 = sec.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) || h > 24 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut micros_frac = 0i64;
    for i in 0..6 {
        micros_frac = micros_frac * 10 + frac.as_bytes().get(i).map_or(0, |d| (d - b'0') as i64);
    }
    let mut offset_secs = 0i64;
    if let Some(o) = offset {
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let mut parts = o[1..].split(':');
        let oh: i64 = parts.next()?.parse().ok()?;
        let om: i64 = parts.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
        let os: i64 = parts.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
        offset_secs = sign * (oh * 3600 + om * 60 + os);
    }
    let secs = date_days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros_frac)
}

/// Writes microseconds since the epoch as `YYYY-MM-DD hh:mm:ss.ffffff`.
pub fn write_datetime_micros(out: &mut Vec<u8>, micros: i64) {
    use std::io::Write;
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        let _ = write!(
            out,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06}",
            tod / 3600,
            tod % 3600 / 60,
            tod % 60
        );
        return;
    }
    // On the copy's hot path: the digits written directly, without the formatting machinery.
    let mut b = *b"0000-00-00 00:00:00.000000";
    put_digits(&mut b[0..4], y as u64);
    put_digits(&mut b[5..7], m as u64);
    put_digits(&mut b[8..10], d as u64);
    put_digits(&mut b[11..13], (tod / 3600) as u64);
    put_digits(&mut b[14..16], (tod % 3600 / 60) as u64);
    put_digits(&mut b[17..19], (tod % 60) as u64);
    put_digits(&mut b[20..26], frac as u64);
    out.extend_from_slice(&b);
}

/// Writes `v` in decimal (the copy's hot path: without the formatting machinery).
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes `v`'s lowest decimal digits into `slot`, zero-padded.
fn put_digits(slot: &mut [u8], mut v: u64) {
    for c in slot.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Writes a day number as `YYYY-MM-DD`.
pub fn write_date_days(out: &mut Vec<u8>, days: i64) {
    use std::io::Write;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}");
}

/// Decodes bytea's hex output (`\x48656c6c6f`).
pub fn parse_bytea_hex(s: &[u8]) -> Option<Vec<u8>> {
    let hex = s.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// One element of a Postgres array literal.
#[derive(Debug, PartialEq, Eq)]
pub enum ArrayElem {
    Null,
    Value(String),
}

/// Parses a Postgres array literal (`{1,NULL,"a \"b\""}`, optionally prefixed by bounds
/// like `[0:1]=`). Nested (multi-dimensional) arrays are flattened in order.
pub fn parse_array(s: &str) -> Option<Vec<ArrayElem>> {
    let s = if s.starts_with('[') {
        s.split_once('=')?.1
    } else {
        s
    };
    let b = s.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                i += 1;
            }
            b',' | b' ' => i += 1,
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => {
                            v.push(*b.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(ArrayElem::Value(String::from_utf8(v).ok()?));
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
                let raw = s[start..i].trim();
                if raw.eq_ignore_ascii_case("NULL") {
                    out.push(ArrayElem::Null);
                } else {
                    out.push(ArrayElem::Value(raw.to_string()));
                }
            }
        }
        if depth < 0 {
            return None;
        }
    }
    (depth == 0).then_some(out)
}

/// Postgres float output (`NaN`, `Infinity`) in ClickHouse's spelling.
pub fn float_text(s: &str) -> &str {
    match s {
        "NaN" => "nan",
        "Infinity" => "inf",
        "-Infinity" => "-inf",
        s => s,
    }
}

/// Reverses TabSeparated escaping of one field.
pub fn unescape_tsv(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_tsv() {
        assert_eq!(unescape_tsv("a\\tb\\\\"), "a\tb\\");
    }

    use super::*;

    #[test]
    fn escapes() {
        let mut o = Vec::new();
        tsv_escape(&mut o, b"a\tb\nc\\d\0");
        assert_eq!(o, b"a\\tb\\nc\\\\d\\0");
        let mut o = Vec::new();
        quoted_escape(&mut o, b"it's \\");
        assert_eq!(o, b"'it\\'s \\\\'");
    }

    /// The word-at-a-time escape gives what escaping byte by byte gives, wherever the bytes
    /// to escape fall (every length up to 40, each special byte at each place, and pseudo-random
    /// mixes).
    #[test]
    fn tsv_escape_matches_the_byte_by_byte_form() {
        fn naive(v: &[u8]) -> Vec<u8> {
            let mut o = Vec::new();
            for &b in v {
                match b {
                    b'\\' => o.extend_from_slice(b"\\\\"),
                    b'\t' => o.extend_from_slice(b"\\t"),
                    b'\n' => o.extend_from_slice(b"\\n"),
                    b'\r' => o.extend_from_slice(b"\\r"),
                    0 => o.extend_from_slice(b"\\0"),
                    _ => o.push(b),
                }
            }
            o
        }
        let check = |v: &[u8]| {
            let mut o = b"prefix".to_vec();
            tsv_escape(&mut o, v);
            assert_eq!(&o[6..], &naive(v)[..], "{v:?}");
        };
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            check(&base);
            for at in 0..len {
                for special in [b'\\', b'\t', b'\n', b'\r', 0, 0x80, 0xFF, b'\\' + 1, 8] {
                    let mut v = base.clone();
                    v[at] = special;
                    check(&v);
                }
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let v: Vec<u8> = (0..(x % 70) as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [b'a', b'\\', b'\t', b'\n', b'\r', 0, b'z', 0xE2][(x % 8) as usize]
                })
                .collect();
            check(&v);
        }
    }

    #[test]
    fn dates_round_trip() {
        for (s, days) in [
            ("1970-01-01", 0),
            ("2000-03-01", 11017),
            ("1969-12-31", -1),
            ("0001-01-01", -719162),
        ] {
            assert_eq!(parse_date_days(s), Some(days), "{s}");
            let mut o = Vec::new();
            write_date_days(&mut o, days);
            assert_eq!(String::from_utf8(o).unwrap(), s);
        }
        assert_eq!(
            parse_date_days("0001-01-01 BC"),
            Some(days_from_civil(0, 1, 1))
        );
        assert_eq!(parse_date_days("2024-13-01"), None);
        assert_eq!(parse_date_days("garbage"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_micros("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:01.5"),
            Some(1_500_000)
        );
        assert_eq!(parse_timestamp_micros("1970-01-01 05:30:00+05:30"), Some(0));
        assert_eq!(
            parse_timestamp_micros("1969-12-31 23:59:59.999999+00"),
            Some(-1)
        );
        let far = parse_timestamp_micros("2200-06-01 12:00:00.000001+00").unwrap();
        let mut o = Vec::new();
        write_datetime_micros(&mut o, far);
        assert_eq!(String::from_utf8(o).unwrap(), "2200-06-01 12:00:00.000001");
        assert_eq!(parse_timestamp_micros("infinity"), Some(i64::MAX));
        assert!(
            parse_timestamp_micros("0044-03-15 12:00:00 BC").unwrap()
                < parse_timestamp_micros("0001-01-01 00:00:00").unwrap()
        );
        assert_eq!(parse_timestamp_micros("2024-01-01"), None);
        assert_eq!(parse_timestamp_micros("2024-01-01 xx:00:00"), None);
    }

    /// The byte parser agrees with the general one on every input: Postgres' forms, and
    /// each of them with one byte changed, cut short or lengthened.
    #[test]
    fn the_byte_parser_of_timestamps_agrees_with_the_general_one() {
        let forms = [
            "2024-01-31 12:34:56.789+00",
            "2024-01-31 12:34:56+05:30",
            "1969-12-31 23:59:59.999999-08",
            "2000-02-29 00:00:00.5+05:45:30",
            "0001-01-01 00:00:00 BC",
            "9999-12-31 24:00:00",
            "2024-01-31 12:34:56.1234567",
            "12345-01-01 00:00:00",
            "infinity",
        ];
        let mut seen = 0;
        for f in forms {
            let b = f.as_bytes();
            let mut variants = vec![b.to_vec()];
            for i in 0..b.len() {
                for c in [b'0', b'9', b'1', b'+', b'-', b':', b'.', b' ', b'x', 0xC3] {
                    let mut v = b.to_vec();
                    v[i] = c;
                    variants.push(v);
                }
                variants.push(b[..i].to_vec());
                let mut longer = b.to_vec();
                longer.insert(i, b'7');
                variants.push(longer);
            }
            for v in variants {
                let general = std::str::from_utf8(&v)
                    .ok()
                    .and_then(parse_timestamp_micros);
                assert_eq!(
                    parse_timestamp_micros_bytes(&v),
                    general,
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
                seen += usize::from(general.is_some());
            }
        }
        assert!(seen > 200, "most variants are timestamps: {seen}");
    }

    #[test]
    fn integers_are_written_as_display_does() {
        for v in [0, 7, -7, 10, 1_000_000, i64::MAX, i64::MIN, -1] {
            let mut o = Vec::new();
            write_i64(&mut o, v);
            assert_eq!(String::from_utf8(o).unwrap(), v.to_string());
        }
        let mut o = Vec::new();
        write_datetime_micros(&mut o, -1);
        assert_eq!(String::from_utf8(o).unwrap(), "1969-12-31 23:59:59.999999");
    }

    #[test]
    fn arrays() {
        use ArrayElem::*;
        assert_eq!(
            parse_array(r#"{1,NULL,"a \"b\"","NULL",x y}"#).unwrap(),
            vec![
                Value("1".into()),
                Null,
                Value("a \"b\"".into()),
                Value("NULL".into()),
                Value("x y".into())
            ]
        );
        assert_eq!(parse_array("{}").unwrap(), vec![]);
        assert_eq!(
            parse_array("[0:1]={7,8}").unwrap(),
            vec![Value("7".into()), Value("8".into())]
        );
        assert_eq!(parse_array("{{1,2},{3,4}}").unwrap().len(), 4);
        assert_eq!(parse_array("{1,2"), None);
        assert_eq!(parse_array("{\"unterminated}"), None);
    }

    #[test]
    fn bytea() {
        assert_eq!(parse_bytea_hex(b"\\x00ff41").unwrap(), vec![0, 255, 65]);
        assert_eq!(parse_bytea_hex(b"\\x0"), None);
        assert_eq!(parse_bytea_hex(b"plain"), None);
    }
}
