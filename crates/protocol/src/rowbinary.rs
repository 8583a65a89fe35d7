//! The copy's binary form: a snapshot chunk read as Postgres's binary COPY
//! (`COPY (SELECT …) TO STDOUT (FORMAT binary)`) and written as ClickHouse's RowBinary for
//! the sink's columns, `_version` and `_is_deleted` included. Neither side prints or parses
//! text: Postgres sends its values as they are stored (no numeric or timestamp formatting,
//! no range checks in the statement) and ClickHouse reads fixed-width values (no number or
//! date parsing), which costs both servers less than the TabSeparated passthrough
//! (see `passthrough`) for the price of a little more of tributary's work per row.
//!
//! Each column's RowBinary is the value [`crate::chtypes::encode_field`] writes for it in
//! TabSeparated. A value the encoder would clamp or count (a date or timestamp outside
//! ClickHouse's range, a numeric NaN, infinity or one the column cannot hold, a NULL the
//! ClickHouse column cannot hold) makes its row *marked*: nothing of it is written and the
//! copy reads it again by key the ordinary way, where the encoder handles and counts it. A
//! table with a column that has no binary form here (arrays, UUID, JSON, a type only known by
//! name) or a key column other than an integer or text has no binary copy.
//!
//! Must never: give a value a ClickHouse value different from the one `encode_field` writes
//! for it, let a value the encoder would clamp or count through unmarked, read past a
//! tuple's bytes, or panic on a malformed stream (it is an error).

use crate::chtypes::{ChColumn, Codec, D32_MAX, D32_MIN, DT64_MAX, DT64_MIN};
use crate::schema::{pg_ident, Column, PgType};
use std::ops::Range;

/// Postgres's epoch (2000-01-01) in ClickHouse's: days and microseconds since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// 0001-01-01 and 9999-12-31 23:59:59.999999 (the passthrough's bounds for the legacy
/// servers' lossless columns), in days and microseconds since 1970.
const DAYS_LO: i64 = -719_162;
const DAYS_HI: i64 = 2_932_896;
const MICROS_LO: i64 = -62_135_596_800_000_000;
const MICROS_HI: i64 = 253_402_300_799_999_999;

/// How one column's Postgres binary value becomes its RowBinary value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    /// `bool` → Bool or UInt8: one byte, 0 or 1.
    Bool,
    /// An integer of 2, 4 or 8 bytes → Int16/32/64 (`bytes`): marked when it does not fit.
    Int { bytes: u8 },
    /// float4 → Float32 (`bytes` 4), float8 → Float64 (8).
    Float { bytes: u8 },
    /// numeric → Decimal(precision, scale), stored in `bytes` (4, 8 or 16).
    Decimal {
        precision: u32,
        scale: u32,
        bytes: u8,
    },
    /// The value's bytes as a String (text, its `::text` cast, bytea's raw bytes).
    Str,
    /// date → Date32 (days since 1970 in Int32), marked outside Date32's range.
    Date32,
    /// date → Int32 days since 1970 (legacy servers).
    DateDays,
    /// timestamp(tz) → DateTime64(6, 'UTC'), marked outside its range.
    DateTime64,
    /// timestamp(tz) → Int64 microseconds since 1970, UTC (legacy servers).
    Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Col {
    conv: Conv,
    nullable: bool,
}

/// A table's binary copy: the statement's select list and each column's conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryCopy {
    cols: Vec<Col>,
    /// The key columns' positions, in the key's order.
    keys: Vec<usize>,
    select: String,
}

/// A malformed binary COPY stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binary COPY: {0}")]
pub struct CopyError(String);

fn bad<T>(what: impl Into<String>) -> Result<T, CopyError> {
    Err(CopyError(what.into()))
}

/// What became of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    Written,
    /// Not written: a value must take the ordinary way.
    Marked,
}

/// `Nullable(T)` / `LowCardinality(T)` → `T`.
fn base_type(ch_type: &str) -> &str {
    let mut t = ch_type;
    loop {
        let inner = ["Nullable(", "LowCardinality("]
            .iter()
            .find_map(|p| t.strip_prefix(p).and_then(|r| r.strip_suffix(')')));
        match inner {
            Some(i) => t = i,
            None => return t,
        }
    }
}

/// `Decimal(P, S)` → (P, S).
fn decimal_of(base: &str) -> Option<(u32, u32)> {
    let inner = base.strip_prefix("Decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The conversion of one column, and whether the statement reads it as `::text`.
fn conv_of(pg: &PgType, ch: &ChColumn) -> Option<(Conv, bool)> {
    use PgType as P;
    let base = base_type(&ch.ch_type);
    Some(match (&ch.codec, pg, base) {
        (Codec::Bool { .. }, P::Bool, "Bool" | "UInt8") => (Conv::Bool, false),
        (Codec::Number, P::Int2 | P::Int4 | P::Int8, b) => {
            let bytes = match b {
                "Int16" => 2,
                "Int32" => 4,
                "Int64" => 8,
                _ => return None,
            };
            (Conv::Int { bytes }, false)
        }
        // (Not float4 into Float64: its text would be read as the nearest double, not as the
        // float's own value.)
        (Codec::Float, P::Float4, "Float32") => (Conv::Float { bytes: 4 }, false),
        (Codec::Float, P::Float8, "Float64") => (Conv::Float { bytes: 8 }, false),
        (Codec::Decimal, P::Numeric(Some(_)), b) => {
            let (precision, scale) = decimal_of(b)?;
            let bytes = match precision {
                1..=9 => 4,
                10..=18 => 8,
                19..=38 => 16,
                _ => return None,
            };
            if scale > precision {
                return None;
            }
            (
                Conv::Decimal {
                    precision,
                    scale,
                    bytes,
                },
                false,
            )
        }
        // Text types send their bytes; these others send their own binary form, so the
        // statement reads their output text (`::text` is their output function: none of
        // them has a cast of its own to text, unlike char(n) or inet).
        (Codec::Text, P::Text, "String") => (Conv::Str, false),
        (
            Codec::Text,
            P::Numeric(_) | P::Interval | P::Time | P::TimeTz | P::Json | P::Jsonb,
            "String",
        ) => (Conv::Str, true),
        (Codec::Text, P::Enum(_), "String") => (Conv::Str, true),
        (Codec::Bytea, P::Bytea, "String") => (Conv::Str, false),
        (Codec::Date32, P::Date, "Date32") => (Conv::Date32, false),
        (Codec::DateDays, P::Date, "Int32") => (Conv::DateDays, false),
        (Codec::DateTime64, P::Timestamp | P::TimestampTz, "DateTime64(6, 'UTC')") => {
            (Conv::DateTime64, false)
        }
        (Codec::TimestampMicros, P::Timestamp | P::TimestampTz, "Int64") => (Conv::Micros, false),
        _ => return None,
    })
}

/// One column's conversion and whether the statement reads it as `::text`, or why it has no
/// binary copy (a key column must be an integer or text, read as it is: the next chunk
/// starts above its value).
fn column_plan(p: &Column, c: &ChColumn) -> Result<(Conv, bool), String> {
    let Some((conv, cast)) = conv_of(&p.pg_type, c) else {
        return Err(format!(
            "column `{}` ({}) has no binary form here",
            p.name, c.ch_type
        ));
    };
    let plain_key = matches!(
        (conv, &p.pg_type),
        (Conv::Int { .. }, _) | (Conv::Str, PgType::Text)
    ) && !cast;
    if p.is_key && !plain_key {
        return Err(format!(
            "key column `{}` ({}) is not an integer or text",
            p.name, c.ch_type
        ));
    }
    Ok((conv, cast))
}

/// The binary copy of a table with Postgres columns `pg` and ClickHouse columns `ch` (one
/// each, in order); `None` when some column has no binary form or a key column is not an
/// integer or text.
pub fn plan(pg: &[Column], ch: &[ChColumn]) -> Option<BinaryCopy> {
    if pg.len() != ch.len() || pg.is_empty() {
        return None;
    }
    let mut cols = Vec::with_capacity(pg.len());
    let mut exprs = Vec::with_capacity(pg.len());
    let mut keys = Vec::new();
    for (i, (p, c)) in pg.iter().zip(ch).enumerate() {
        let (conv, cast) = column_plan(p, c).ok()?;
        if p.is_key {
            keys.push(i);
        }
        let ident = pg_ident(&p.name);
        exprs.push(if cast {
            format!("{ident}::text AS {ident}")
        } else {
            ident
        });
        cols.push(Col {
            conv,
            nullable: c.nullable,
        });
    }
    Some(BinaryCopy {
        cols,
        keys,
        select: exprs.join(", "),
    })
}

/// Why a table's copy is not binary, for the log (`None`: it is).
pub fn not_binary_because(pg: &[Column], ch: &[ChColumn]) -> Option<String> {
    if pg.len() != ch.len() {
        return Some("the sink's columns are not the table's".into());
    }
    pg.iter().zip(ch).find_map(|(p, c)| column_plan(p, c).err())
}

impl BinaryCopy {
    /// The chunk statement's select list (the table's columns, in order).
    pub fn select_list(&self) -> &str {
        &self.select
    }

    /// Writes one tuple (its bytes and its fields' ranges in them, as [`CopyReader`] gives
    /// them) as a RowBinary row at `version`, or nothing when it is marked.
    pub fn write_row(
        &self,
        tuple: &[u8],
        fields: &[Option<Range<usize>>],
        version: u64,
        out: &mut Vec<u8>,
    ) -> Result<Row, CopyError> {
        if fields.len() != self.cols.len() {
            return bad(format!(
                "a tuple of {} fields for {} columns",
                fields.len(),
                self.cols.len()
            ));
        }
        let start = out.len();
        for (col, field) in self.cols.iter().zip(fields) {
            let written = match field {
                None if col.nullable => {
                    out.push(1);
                    true
                }
                None => false,
                Some(r) => {
                    if col.nullable {
                        out.push(0);
                    }
                    write_value(col.conv, &tuple[r.clone()], out)?
                }
            };
            if !written {
                out.truncate(start);
                return Ok(Row::Marked);
            }
        }
        out.extend_from_slice(&version.to_le_bytes());
        out.push(0);
        Ok(Row::Written)
    }

    /// The tuple's key, as Postgres would print it (the next chunk starts above it).
    pub fn key_of(
        &self,
        tuple: &[u8],
        fields: &[Option<Range<usize>>],
    ) -> Result<Vec<String>, CopyError> {
        self.keys
            .iter()
            .map(|&i| {
                let Some(Some(r)) = fields.get(i) else {
                    return bad("a key column is NULL");
                };
                let v = &tuple[r.clone()];
                Ok(match self.cols[i].conv {
                    Conv::Int { .. } => int_of(v)?.to_string(),
                    _ => String::from_utf8_lossy(v).into_owned(),
                })
            })
            .collect()
    }
}

fn be<const N: usize>(v: &[u8]) -> Result<[u8; N], CopyError> {
    v.try_into()
        .or_else(|_| bad(format!("a value of {} bytes where {N} belong", v.len())))
}

/// A Postgres integer of any width.
fn int_of(v: &[u8]) -> Result<i64, CopyError> {
    Ok(match v.len() {
        2 => i16::from_be_bytes(be(v)?) as i64,
        4 => i32::from_be_bytes(be(v)?) as i64,
        8 => i64::from_be_bytes(be(v)?),
        n => return bad(format!("an integer of {n} bytes")),
    })
}

/// ClickHouse's string: LEB128 length, then the bytes.
fn put_str(out: &mut Vec<u8>, v: &[u8]) {
    let mut n = v.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(v);
}

/// Appends one value; `false` (nothing appended) when it must take the ordinary way.
fn write_value(conv: Conv, v: &[u8], out: &mut Vec<u8>) -> Result<bool, CopyError> {
    match conv {
        Conv::Bool => match v {
            [0] | [1] => out.push(v[0]),
            _ => return bad("a bool that is not 0 or 1"),
        },
        Conv::Int { bytes } => {
            let n = int_of(v)?;
            match bytes {
                2 => match i16::try_from(n) {
                    Ok(x) => out.extend_from_slice(&x.to_le_bytes()),
                    Err(_) => return Ok(false),
                },
                4 => match i32::try_from(n) {
                    Ok(x) => out.extend_from_slice(&x.to_le_bytes()),
                    Err(_) => return Ok(false),
                },
                _ => out.extend_from_slice(&n.to_le_bytes()),
            }
        }
        Conv::Float { bytes } => match (bytes, v.len()) {
            (4, 4) => out.extend_from_slice(&f32::from_be_bytes(be(v)?).to_le_bytes()),
            (8, 8) => out.extend_from_slice(&f64::from_be_bytes(be(v)?).to_le_bytes()),
            (_, n) => return bad(format!("a float of {n} bytes")),
        },
        Conv::Decimal {
            precision,
            scale,
            bytes,
        } => {
            let Some(x) = numeric_scaled(v, scale)? else {
                return Ok(false);
            };
            if x.unsigned_abs() >= 10u128.pow(precision) {
                return Ok(false);
            }
            match bytes {
                4 => out.extend_from_slice(&(x as i32).to_le_bytes()),
                8 => out.extend_from_slice(&(x as i64).to_le_bytes()),
                _ => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        Conv::Str => put_str(out, v),
        Conv::Date32 | Conv::DateDays => {
            let d = i32::from_be_bytes(be(v)?) as i64 + PG_EPOCH_DAYS;
            let (lo, hi) = if conv == Conv::Date32 {
                (D32_MIN, D32_MAX)
            } else {
                (DAYS_LO, DAYS_HI)
            };
            // (Postgres's ±infinity are i32's bounds: outside both.)
            if !(lo..=hi).contains(&d) {
                return Ok(false);
            }
            out.extend_from_slice(&(d as i32).to_le_bytes());
        }
        Conv::DateTime64 | Conv::Micros => {
            let Some(us) = i64::from_be_bytes(be(v)?).checked_add(PG_EPOCH_MICROS) else {
                return Ok(false);
            };
            let (lo, hi) = if conv == Conv::DateTime64 {
                (DT64_MIN, DT64_MAX)
            } else {
                (MICROS_LO, MICROS_HI)
            };
            if !(lo..=hi).contains(&us) {
                return Ok(false);
            }
            out.extend_from_slice(&us.to_le_bytes());
        }
    }
    Ok(true)
}

/// A binary numeric times 10^`scale`; `None` for NaN, ±infinity, a value with digits below
/// the scale or one too large for 128 bits.
fn numeric_scaled(v: &[u8], scale: u32) -> Result<Option<i128>, CopyError> {
    if v.len() < 8 {
        return bad("a numeric shorter than its header");
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]);
    let weight = i16::from_be_bytes([v[2], v[3]]) as i64;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if ndigits < 0 || v.len() != 8 + 2 * ndigits as usize {
        return bad("a numeric whose digits are not its length");
    }
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 | 0xD000 | 0xF000 => return Ok(None), // NaN, +infinity, -infinity
        _ => return bad(format!("a numeric of sign {sign:#x}")),
    };
    // value = Σ dᵢ · 10000^(weight − i); Horner over the digits, then the last digit's
    // power of ten (with the scale) applied once.
    let mut acc: i128 = 0;
    for d in v[8..].chunks_exact(2) {
        let d = u16::from_be_bytes([d[0], d[1]]);
        if d >= 10_000 {
            return bad("a numeric digit above 9999");
        }
        let Some(next) = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(d as i128))
        else {
            return Ok(None);
        };
        acc = next;
    }
    let exp = 4 * (weight - (ndigits as i64 - 1)) + scale as i64;
    let scaled = if acc == 0 {
        0
    } else if exp >= 0 {
        let Some(x) = u32::try_from(exp)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
            .and_then(|p| acc.checked_mul(p))
        else {
            return Ok(None);
        };
        x
    } else {
        let Some(p) = u32::try_from(-exp).ok().and_then(|e| 10i128.checked_pow(e)) else {
            return Ok(None);
        };
        if acc % p != 0 {
            return Ok(None);
        }
        acc / p
    };
    Ok(Some(if negative { -scaled } else { scaled }))
}

/// Reads a binary COPY stream as it arrives: the header, then one tuple at a time, then the
/// trailer.
#[derive(Debug, Default)]
pub struct CopyReader {
    buf: Vec<u8>,
    /// Where the next unread byte of `buf` is.
    pos: usize,
    header: bool,
    ended: bool,
}

/// The binary COPY signature.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl CopyReader {
    /// Takes in the next bytes of the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole tuple: its bytes, with `fields` set to each field's range in them
    /// (`None`: NULL); `None` when more bytes are needed or the trailer was read.
    pub fn next_tuple(
        &mut self,
        fields: &mut Vec<Option<Range<usize>>>,
    ) -> Result<Option<&[u8]>, CopyError> {
        if self.ended {
            return if self.pos < self.buf.len() {
                bad("bytes after the trailer")
            } else {
                Ok(None)
            };
        }
        if !self.header {
            let b = &self.buf[self.pos..];
            if b.len() < 19 {
                return Ok(None);
            }
            if &b[..11] != SIGNATURE {
                return bad("no binary COPY signature");
            }
            let ext = u32::from_be_bytes([b[15], b[16], b[17], b[18]]) as usize;
            if b.len() < 19 + ext {
                return Ok(None);
            }
            self.pos += 19 + ext;
            self.header = true;
        }
        let b = &self.buf[self.pos..];
        if b.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([b[0], b[1]]);
        if count == -1 {
            self.pos += 2;
            self.ended = true;
            return self.next_tuple(fields);
        }
        if count < 0 {
            return bad(format!("a tuple of {count} fields"));
        }
        fields.clear();
        let mut at = 2usize;
        for _ in 0..count {
            let Some(len) = b.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len == -1 {
                fields.push(None);
                continue;
            }
            let Ok(len) = usize::try_from(len) else {
                return bad(format!("a field of {len} bytes"));
            };
            if b.len() < at + len {
                return Ok(None);
            }
            fields.push(Some(at..at + len));
            at += len;
        }
        let start = self.pos;
        self.pos += at;
        Ok(Some(&self.buf[start..start + at]))
    }

    /// The trailer was read.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chtypes::{map_table, JsonAs, ServerCaps};
    use crate::testing::table;

    fn col(name: &str, t: PgType, key: bool, nullable: bool) -> Column {
        crate::testing::column(name, t, nullable, key)
    }

    fn plan_for(cols: Vec<Column>, version: &str) -> Option<BinaryCopy> {
        let s = table(cols);
        let ch = map_table(&s, &ServerCaps::from_version(version), JsonAs::String);
        plan(&s.columns, &ch)
    }

    /// Postgres's binary numeric of a decimal text (`-12.50`).
    fn numeric(text: &str) -> Vec<u8> {
        let (neg, t) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        // Pad to whole groups of four on both sides of the point.
        let ipad = (4 - int.len() % 4) % 4;
        let fpad = (4 - frac.len() % 4) % 4;
        let digits: String = "0".repeat(ipad) + int + frac + &"0".repeat(fpad);
        let mut groups: Vec<u16> = digits
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = ((ipad + int.len()) / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let mut v = Vec::new();
        v.extend_from_slice(&(groups.len() as i16).to_be_bytes());
        v.extend_from_slice(&if groups.is_empty() { 0i16 } else { weight }.to_be_bytes());
        v.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&(frac.len() as i16).to_be_bytes());
        for g in groups {
            v.extend_from_slice(&g.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_scale_exactly_or_not_at_all() {
        for (text, scale, want) in [
            ("0", 2, Some(0)),
            ("0.00", 2, Some(0)),
            ("1234.5", 2, Some(123_450)),
            ("-0.01", 2, Some(-1)),
            ("99999999.99", 2, Some(9_999_999_999)),
            ("10000", 0, Some(10_000)),
            (
                "123456789012345678901234567890.12345678",
                8,
                Some(12_345_678_901_234_567_890_123_456_789_012_345_678),
            ),
            ("0.0001", 4, Some(1)),
            ("0.00001", 4, None),
            ("1.5", 0, None),
            ("-7", 3, Some(-7000)),
        ] {
            assert_eq!(
                numeric_scaled(&numeric(text), scale).unwrap(),
                want,
                "{text} at scale {scale}"
            );
        }
        let special = |sign: u16| {
            let mut v = vec![0, 0, 0, 0];
            v.extend_from_slice(&sign.to_be_bytes());
            v.extend_from_slice(&[0, 0]);
            v
        };
        for sign in [0xC000, 0xD000, 0xF000] {
            assert_eq!(numeric_scaled(&special(sign), 2).unwrap(), None);
        }
        assert!(numeric_scaled(&special(0x1234), 2).is_err());
        assert!(numeric_scaled(&[0, 1, 0, 0], 2).is_err());
        let mut long = numeric("1");
        long.push(0);
        assert!(numeric_scaled(&long, 2).is_err());
        // Beyond 128 bits: marked, not an error or a wrapped value.
        let huge = numeric(&("9".repeat(60)));
        assert_eq!(numeric_scaled(&huge, 2).unwrap(), None);
    }

    /// A binary COPY stream of the given tuples.
    fn stream(tuples: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&4u32.to_be_bytes());
        s.extend_from_slice(b"ext!");
        for t in tuples {
            s.extend_from_slice(&(t.len() as i16).to_be_bytes());
            for f in t {
                match f {
                    None => s.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        s.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        s.extend_from_slice(v);
                    }
                }
            }
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    fn read_all(bytes: &[u8], piece: usize) -> Result<Vec<Vec<Option<Vec<u8>>>>, CopyError> {
        let mut r = CopyReader::default();
        let mut fields = Vec::new();
        let mut got = Vec::new();
        for p in bytes.chunks(piece) {
            r.push(p);
            while let Some(t) = r.next_tuple(&mut fields)? {
                got.push(
                    fields
                        .iter()
                        .map(|f| f.clone().map(|r| t[r].to_vec()))
                        .collect(),
                );
            }
        }
        if !r.ended() {
            return bad("no trailer");
        }
        Ok(got)
    }

    #[test]
    fn the_reader_takes_a_stream_in_pieces_of_any_size() {
        let tuples = vec![
            vec![
                Some(1i64.to_be_bytes().to_vec()),
                Some(b"a\tb".to_vec()),
                None,
            ],
            vec![
                Some(2i64.to_be_bytes().to_vec()),
                Some(Vec::new()),
                Some(vec![1]),
            ],
        ];
        let s = stream(&tuples);
        for piece in [1, 2, 3, 7, 19, 20, s.len()] {
            assert_eq!(read_all(&s, piece).unwrap(), tuples, "pieces of {piece}");
        }
        // Truncated, corrupted, or with bytes after the trailer: errors, never a panic.
        assert!(read_all(&s[..s.len() - 1], 5).is_err());
        let mut bad_sig = s.clone();
        bad_sig[0] = b'X';
        assert!(read_all(&bad_sig, 64).is_err());
        let mut after = s.clone();
        after.push(0);
        assert!(read_all(&after, 64).is_err());
        for cut in 0..s.len() {
            let mut mangled = s.clone();
            mangled[cut] ^= 0xff;
            let _ = read_all(&mangled, 9);
        }
    }

    #[test]
    fn the_bench_table_is_binary_on_both_generations_and_its_rows_are_rowbinary() {
        let cols = || {
            vec![
                col("id", PgType::Int8, true, false),
                col("payload", PgType::Text, false, true),
                col("amount", PgType::Numeric(Some((12, 2))), false, true),
                col("created_at", PgType::TimestampTz, false, true),
            ]
        };
        let new = plan_for(cols(), "26.9.1.1").expect("binary on 26.9");
        assert_eq!(
            new.select_list(),
            "\"id\", \"payload\", \"amount\", \"created_at\""
        );
        let old = plan_for(cols(), "18.16.1").expect("binary on 18.16");
        // 2024-01-02 03:04:05.678901 UTC in Postgres's microseconds since 2000.
        let us_1970 = 1_704_164_645_678_901i64;
        let ts = (us_1970 - PG_EPOCH_MICROS).to_be_bytes().to_vec();
        let tuple = vec![
            Some(42i64.to_be_bytes().to_vec()),
            Some("h\u{e9}llo".as_bytes().to_vec()),
            Some(numeric("-12.5")),
            Some(ts),
        ];
        let s = stream(&[
            tuple.clone(),
            vec![Some(43i64.to_be_bytes().to_vec()), None, None, None],
        ]);
        let mut r = CopyReader::default();
        r.push(&s);
        let mut fields = Vec::new();
        let mut out = Vec::new();
        let t = r.next_tuple(&mut fields).unwrap().unwrap().to_vec();
        assert_eq!(
            new.write_row(&t, &fields, 7, &mut out).unwrap(),
            Row::Written
        );
        assert_eq!(new.key_of(&t, &fields).unwrap(), vec!["42".to_string()]);
        let mut want = 42i64.to_le_bytes().to_vec();
        want.extend_from_slice(&[0, 6]);
        want.extend_from_slice("h\u{e9}llo".as_bytes());
        want.push(0);
        want.extend_from_slice(&(-1250i64).to_le_bytes()); // Decimal(12, 2): Int64
        want.push(0);
        want.extend_from_slice(&us_1970.to_le_bytes());
        want.extend_from_slice(&7u64.to_le_bytes());
        want.push(0);
        assert_eq!(out, want);
        // The legacy server's Int64 microseconds are the same bytes.
        let mut legacy = Vec::new();
        assert_eq!(
            old.write_row(&t, &fields, 7, &mut legacy).unwrap(),
            Row::Written
        );
        assert_eq!(legacy, want);
        // NULLs in Nullable columns.
        let t = r.next_tuple(&mut fields).unwrap().unwrap().to_vec();
        out.clear();
        assert_eq!(
            new.write_row(&t, &fields, 7, &mut out).unwrap(),
            Row::Written
        );
        let mut want = 43i64.to_le_bytes().to_vec();
        want.extend_from_slice(&[1, 1, 1]);
        want.extend_from_slice(&7u64.to_le_bytes());
        want.push(0);
        assert_eq!(out, want);
        assert_eq!(r.next_tuple(&mut fields).unwrap(), None);
        assert!(r.ended());
    }

    /// One column's value: its RowBinary (after the Nullable byte), or `None` when marked.
    fn one(t: PgType, version: &str, v: &[u8]) -> Option<Vec<u8>> {
        let p = plan_for(
            vec![
                col("id", PgType::Int4, true, false),
                col("v", t, false, true),
            ],
            version,
        )
        .expect("binary");
        let fields = vec![Some(0..4), Some(4..4 + v.len())];
        let mut tuple = 1i32.to_be_bytes().to_vec();
        tuple.extend_from_slice(v);
        let mut out = Vec::new();
        match p.write_row(&tuple, &fields, 0, &mut out).unwrap() {
            Row::Marked => {
                assert!(out.is_empty());
                None
            }
            Row::Written => {
                assert_eq!(out[4], 0, "the Nullable byte");
                Some(out[5..out.len() - 9].to_vec())
            }
        }
    }

    #[test]
    fn values_outside_what_the_encoder_writes_as_they_are_are_marked() {
        let days = |d: i32| (d - PG_EPOCH_DAYS as i32).to_be_bytes().to_vec();
        let micros = |u: i64| (u - PG_EPOCH_MICROS).to_be_bytes().to_vec();
        // Date32 holds 1900-01-01..2299-12-31; the legacy Int32 days 0001..9999 (as the
        // passthrough), Postgres's infinities nowhere.
        assert_eq!(
            one(PgType::Date, "26.9", &days(-25_567)),
            Some((-25_567i32).to_le_bytes().to_vec())
        );
        assert_eq!(one(PgType::Date, "26.9", &days(-25_568)), None);
        assert_eq!(one(PgType::Date, "26.9", &days(120_530)), None);
        assert_eq!(
            one(PgType::Date, "18.16.1", &days(-25_568)),
            Some((-25_568i32).to_le_bytes().to_vec())
        );
        assert_eq!(one(PgType::Date, "18.16.1", &i32::MAX.to_be_bytes()), None);
        assert_eq!(one(PgType::Date, "18.16.1", &i32::MIN.to_be_bytes()), None);
        assert_eq!(
            one(PgType::TimestampTz, "26.9", &micros(DT64_MAX)),
            Some(DT64_MAX.to_le_bytes().to_vec())
        );
        assert_eq!(
            one(PgType::TimestampTz, "26.9", &micros(DT64_MAX + 1)),
            None
        );
        assert_eq!(one(PgType::Timestamp, "26.9", &micros(DT64_MIN - 1)), None);
        assert_eq!(
            one(PgType::Timestamp, "18.16.1", &micros(DT64_MIN - 1)),
            Some((DT64_MIN - 1).to_le_bytes().to_vec())
        );
        assert_eq!(
            one(PgType::Timestamp, "18.16.1", &i64::MAX.to_be_bytes()),
            None
        );
        assert_eq!(
            one(PgType::Timestamp, "18.16.1", &i64::MIN.to_be_bytes()),
            None
        );
        // Decimal: NaN marked; a value beyond the precision (a column narrowed in
        // ClickHouse would need it) marked.
        assert_eq!(
            one(PgType::Numeric(Some((4, 2))), "26.9", &numeric("99.99")),
            Some(9999i32.to_le_bytes().to_vec())
        );
        assert_eq!(
            one(PgType::Numeric(Some((4, 2))), "26.9", &numeric("100.00")),
            None
        );
        // Floats keep their bits, NaN and infinities included (the encoder writes nan/inf).
        for f in [0.1f64, -0.0, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE] {
            let got = one(PgType::Float8, "26.9", &f.to_be_bytes()).unwrap();
            assert_eq!(got, f.to_le_bytes().to_vec());
        }
        let got = one(PgType::Float4, "26.9", &1.5f32.to_be_bytes()).unwrap();
        assert_eq!(got, 1.5f32.to_le_bytes().to_vec());
        assert_eq!(one(PgType::Bool, "26.9", &[1]), Some(vec![1]));
        assert_eq!(one(PgType::Bool, "18.16.1", &[0]), Some(vec![0]));
        // A text of 200 bytes: a two-byte length.
        let long = vec![b'x'; 200];
        let got = one(PgType::Text, "26.9", &long).unwrap();
        assert_eq!(&got[..2], &[0xc8, 0x01]);
        assert_eq!(&got[2..], &long[..]);
        assert_eq!(
            one(PgType::Bytea, "26.9", b"\0\xff"),
            Some(vec![2, 0, 0xff])
        );
    }

    #[test]
    fn tables_with_a_type_without_binary_form_or_an_unusual_key_are_not_binary() {
        let with = |t: PgType, key: bool| {
            plan_for(
                vec![col("id", PgType::Int8, true, false), col("v", t, key, !key)],
                "26.9.1.1",
            )
        };
        assert!(with(PgType::Uuid, false).is_none());
        assert!(with(PgType::Array(Box::new(PgType::Int4)), false).is_none());
        assert!(with(PgType::Other("inet".into()), false).is_none());
        assert!(with(PgType::Date, true).is_none(), "a date key");
        assert!(with(PgType::Text, true).is_some(), "a text key");
        // Types whose binary form is their own read as their text.
        let p = with(PgType::Jsonb, false).unwrap();
        assert_eq!(p.select_list(), "\"id\", \"v\"::text AS \"v\"");
        let p = with(PgType::Enum("mood".into()), false).unwrap();
        assert!(p.select_list().ends_with("::text AS \"v\""));
        // A key column is never cast (the next chunk starts above its value).
        assert!(with(PgType::Numeric(None), true).is_none());
        let pg = [
            col("id", PgType::Int8, true, false),
            col("v", PgType::Uuid, false, true),
        ];
        let s = table(pg.to_vec());
        let ch = map_table(&s, &ServerCaps::from_version("26.9.1.1"), JsonAs::String);
        assert_eq!(
            not_binary_because(&pg, &ch).as_deref(),
            Some("column `v` (Nullable(UUID)) has no binary form here")
        );
        assert_eq!(not_binary_because(&pg[..1], &ch[..1]), None);
        // A float4 column whose ClickHouse column is Float64: its text would be read as
        // the nearest double, so no binary.
        let pg = [
            col("id", PgType::Int8, true, false),
            col("v", PgType::Float4, false, true),
        ];
        let mut ch = map_table(
            &table(pg.to_vec()),
            &ServerCaps::from_version("26.9.1.1"),
            JsonAs::String,
        );
        assert!(plan(&pg, &ch).is_some());
        ch[1].ch_type = "Nullable(Float64)".into();
        assert!(plan(&pg, &ch).is_none());
    }
}
