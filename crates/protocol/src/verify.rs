//! The SQL of `tributary verify` (issue #18): each row of a replicated table written as the
//! same canonical text on both sides (Postgres, and ClickHouse under the table's mapping),
//! hashed, and summed over a key range in the database, so that only a count and a sum cross
//! the network; ranges that differ are split until their rows can be listed by key.
//!
//! The canonical form of a value, by the column's codec (checked on PostgreSQL 15,
//! ClickHouse 18.16 and 26.9): integers as decimal text; floats as the 16 hex digits of
//! their IEEE-754 double, big-endian (float4 widened exactly), every NaN as `nan`; decimals
//! as text without trailing zeros (18.16 prints the scale, 26.9 does not; Postgres's
//! `trim_scale`, 13 and later); booleans `1`/`0`;
//! dates as days since 1970-01-01 and timestamps as microseconds since the epoch (UTC); bytes
//! as lowercase hex; everything stored as text (uuid, numeric without a scale, time,
//! interval, json as String, enums, unmapped types) as the type's output function prints it
//! (what pgoutput sent). A field is `N` (NULL) or `<bytes>:<text>`, fields joined by `,`,
//! so no two rows share a text. An array is its elements so written, `\N` for a NULL
//! element, joined by `,` (a NULL array is ClickHouse's `[]`: both are empty). A row's hash
//! is the first 64 bits of the MD5 of its text, as a signed integer; a range's is their sum
//! modulo 2^64 (order does not matter) and its count.
//!
//! Key ranges bound the first key column; text-like keys compare byte-wise on both sides
//! (Postgres with `COLLATE "C"`, ClickHouse's String order), uuids as their text.
//!
//! Must never: build SQL from a name or value without quoting it, or compare a column whose
//! canonical form is not the same on both sides (such a column is left out, and named).

use crate::chtypes::{ch_ident, ch_literal, ChColumn, Codec};
use crate::schema::{pg_ident, pg_literal};
use std::collections::BTreeMap;

/// Why a column is not compared, or `None` when it is.
pub fn not_comparable(col: &ChColumn) -> Option<&'static str> {
    match &col.codec {
        Codec::Text if base_type(&col.ch_type).starts_with("JSON") => {
            Some("stored as ClickHouse's JSON type, which rewrites the document")
        }
        Codec::Array(inner) if matches!(**inner, Codec::Array(_)) => {
            Some("nested arrays are stored as text")
        }
        _ => None,
    }
}

/// `ch_type` without `Nullable(…)` and `LowCardinality(…)`.
fn base_type(ch_type: &str) -> &str {
    let mut t = ch_type;
    for w in ["LowCardinality(", "Nullable("] {
        if let Some(inner) = t.strip_prefix(w).and_then(|r| r.strip_suffix(')')) {
            t = inner;
        }
    }
    t
}

/// The canonical text of `x` (a Postgres expression of the column's type) in Postgres; NULL
/// stays NULL.
fn pg_value(x: &str, codec: &Codec) -> String {
    match codec {
        // The type's output function (what pgoutput sent): `::text` differs for some types
        // (char(n) loses its padding, inet gains a /32).
        Codec::Text => format!("CASE WHEN ({x}) IS NULL THEN NULL ELSE format('%s', {x}) END"),
        Codec::Number => format!("({x})::text"),
        // Every NaN is one (ClickHouse keeps a sign on a NaN read inside an array).
        Codec::Float => format!(
            "CASE WHEN ({x})::float8 = 'NaN'::float8 THEN 'nan' ELSE encode(float8send(({x})::float8), 'hex') END"
        ),
        // Postgres 13 and later (a regular expression costs twice the whole row's hash).
        Codec::Decimal => format!("trim_scale({x})::text"),
        Codec::Bool { .. } => format!("(({x})::int)::text"),
        Codec::Date32 | Codec::DateDays => format!(
            "CASE WHEN isfinite({x}) THEN (({x}) - date '1970-01-01')::text ELSE ({x})::text END"
        ),
        Codec::DateTime64 | Codec::TimestampMicros => format!(
            "CASE WHEN isfinite({x}) THEN (extract(epoch from {x}) * 1000000)::bigint::text ELSE ({x})::text END"
        ),
        Codec::Bytea => format!("encode({x}, 'hex')"),
        Codec::Array(inner) => {
            let e = pg_value("u.e", inner);
            format!(
                "coalesce(array_to_string(ARRAY(SELECT octet_length({e})::text || ':' || {e} FROM unnest({x}) WITH ORDINALITY AS u(e, i) ORDER BY u.i), ',', '\\N'), '')"
            )
        }
    }
}

/// The canonical text of `x` (a ClickHouse expression of type `ch_type`) in ClickHouse.
fn ch_value(x: &str, codec: &Codec) -> String {
    match codec {
        Codec::Text | Codec::Number | Codec::DateDays | Codec::TimestampMicros => {
            format!("toString({x})")
        }
        Codec::Float => format!(
            "if(isNaN(toFloat64({x})), 'nan', lower(hex(reverse(reinterpretAsString(toFloat64({x}))))))"
        ),
        // (No `?` in SQL: the ClickHouse client reads it as a parameter.)
        Codec::Decimal => format!(
            "if(position(toString({x}), '.') > 0, replaceRegexpOne(replaceRegexpOne(toString({x}), '0+$', ''), '\\\\.$', ''), toString({x}))"
        ),
        Codec::Bool { .. } => format!("toString(toUInt8({x}))"),
        Codec::Date32 => format!("toString(toInt32({x}))"),
        Codec::DateTime64 => format!("toString(toUnixTimestamp64Micro({x}))"),
        Codec::Bytea => format!("lower(hex({x}))"),
        Codec::Array(inner) => {
            let e = ch_value("e", inner);
            format!(
                "arrayStringConcat(arrayMap(e -> ifNull(concat(toString(length({e})), ':', {e}), '\\\\N'), {x}), ',')"
            )
        }
    }
}

/// One field of a row's text in Postgres: `N`, or `<bytes>:<text>`.
pub fn pg_field(col: &ChColumn) -> String {
    let v = pg_value(&pg_ident(&col.name), &col.codec);
    format!("coalesce(octet_length({v})::text || ':' || {v}, 'N')")
}

/// The same field in ClickHouse.
pub fn ch_field(col: &ChColumn) -> String {
    let v = ch_value(&ch_ident(&col.name), &col.codec);
    format!("ifNull(concat(toString(length({v})), ':', {v}), 'N')")
}

/// The columns compared: those with one canonical form on both sides.
pub fn compared(cols: &[ChColumn]) -> Vec<&ChColumn> {
    cols.iter()
        .filter(|c| not_comparable(c).is_none())
        .collect()
}

/// A row's text in Postgres (the compared columns, in order).
pub fn pg_row_text(cols: &[&ChColumn]) -> String {
    let fields: Vec<String> = cols.iter().map(|c| pg_field(c)).collect();
    format!("concat_ws(',', {})", fields.join(", "))
}

/// A row's text in ClickHouse (the same as [`pg_row_text`] for the same row).
pub fn ch_row_text(cols: &[&ChColumn]) -> String {
    let fields: Vec<String> = cols.iter().map(|c| ch_field(c)).collect();
    // concat() wants two arguments on 18.16.
    let mut parts = Vec::with_capacity(fields.len() * 2);
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            parts.push("','".to_string());
        }
        parts.push(f);
    }
    if parts.len() == 1 {
        parts.push("''".into());
    }
    format!("concat({})", parts.join(", "))
}

/// A row's hash in Postgres: the first 64 bits of the MD5 of its text, signed.
pub fn pg_row_hash(text: &str) -> String {
    format!("('x' || left(md5({text}), 16))::bit(64)::bigint")
}

/// The same in ClickHouse.
pub fn ch_row_hash(text: &str) -> String {
    format!("reinterpretAsInt64(reverse(unhex(substring(hex(MD5({text})), 1, 16))))")
}

/// The text of a key (all key columns' canonical texts), to match rows across sides.
pub fn pg_key_text(keys: &[&ChColumn]) -> String {
    pg_row_text(keys)
}

pub fn ch_key_text(keys: &[&ChColumn]) -> String {
    ch_row_text(keys)
}

/// A range of the first key column: `lo` included, `hi` excluded; `None` is unbounded.
/// Bounds are read from Postgres by [`pg_bound_select`] and cast back on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: Option<String>,
    pub hi: Option<String>,
}

impl KeyRange {
    pub fn all() -> Self {
        KeyRange { lo: None, hi: None }
    }
}

/// How the first key column is ordered for ranges on both sides.
fn key_order(col: &ChColumn) -> KeyOrder {
    match (&col.codec, base_type(&col.ch_type)) {
        (Codec::Number, _) | (Codec::Decimal, _) | (Codec::Float, _) => KeyOrder::Native,
        (Codec::Date32 | Codec::DateDays | Codec::DateTime64 | Codec::TimestampMicros, _) => {
            KeyOrder::Native
        }
        (Codec::Bool { .. }, _) => KeyOrder::Native,
        // Bytes: hex keeps their order on both sides.
        (Codec::Bytea, _) => KeyOrder::Hex,
        _ => KeyOrder::Text,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOrder {
    /// The type's own order, the same on both sides: bounds cast to the type.
    Native,
    /// Compared as text, byte-wise (uuid, strings, enums, interval…).
    Text,
    /// Bytes, compared as lowercase hex text.
    Hex,
}

/// The Postgres expression ranges compare, and how a bound is written there.
fn pg_key_expr(col: &ChColumn) -> String {
    let x = pg_ident(&col.name);
    match key_order(col) {
        KeyOrder::Native => x,
        KeyOrder::Text => format!("({x})::text COLLATE \"C\""),
        KeyOrder::Hex => format!("encode({x}, 'hex') COLLATE \"C\""),
    }
}

fn ch_key_expr(col: &ChColumn) -> String {
    let x = ch_ident(&col.name);
    match key_order(col) {
        KeyOrder::Native => x,
        KeyOrder::Text => format!("toString({x})"),
        KeyOrder::Hex => format!("lower(hex({x}))"),
    }
}

/// A bound (as [`pg_bound_select`] reads it) as a ClickHouse value of the key's order.
fn ch_bound(col: &ChColumn, v: &str) -> String {
    match key_order(col) {
        // 18.16 compares no number with a string: cast to the column's type.
        KeyOrder::Native => format!("CAST({} AS {})", ch_literal(v), base_type(&col.ch_type)),
        KeyOrder::Text | KeyOrder::Hex => ch_literal(v),
    }
}

/// What range bounds are read as, from Postgres: the first key column as ClickHouse reads it
/// back into the column's type (timestamps as microseconds for `Int64` columns, dates as days
/// for `Int32` ones, booleans as `1`/`0`, timestamps as UTC text for DateTime64), the rest as
/// Postgres prints it. The session runs with `TimeZone = 'UTC'` and `DateStyle = 'ISO'`.
pub fn pg_bound_select(col: &ChColumn) -> String {
    let x = pg_ident(&col.name);
    match (key_order(col), &col.codec) {
        (KeyOrder::Native, Codec::TimestampMicros) => {
            format!("((extract(epoch from {x}) * 1000000)::bigint)::text")
        }
        (KeyOrder::Native, Codec::DateDays) => format!("(({x}) - date '1970-01-01')::text"),
        (KeyOrder::Native, Codec::DateTime64) => {
            format!("to_char({x}, 'YYYY-MM-DD HH24:MI:SS.US')")
        }
        (KeyOrder::Native, Codec::Bool { .. }) => format!("(({x})::int)::text"),
        (KeyOrder::Hex, _) => format!("encode({x}, 'hex')"),
        _ => format!("({x})::text"),
    }
}

/// The `WHERE` condition of `r` in Postgres (`pg_type`: the first key column's SQL type).
pub fn pg_range_cond(key: &ChColumn, pg_type: &str, r: &KeyRange) -> String {
    let e = pg_key_expr(key);
    let mut c = Vec::new();
    if let Some(lo) = &r.lo {
        c.push(format!("{e} >= {}", pg_bound(key, lo, pg_type)));
    }
    if let Some(hi) = &r.hi {
        c.push(format!("{e} < {}", pg_bound(key, hi, pg_type)));
    }
    if c.is_empty() {
        "true".into()
    } else {
        c.join(" AND ")
    }
}

/// A bound read by [`pg_bound_select`] as a Postgres value of the key's order.
fn pg_bound(key: &ChColumn, v: &str, pg_type: &str) -> String {
    let lit = pg_literal(v);
    match (key_order(key), &key.codec) {
        (KeyOrder::Native, Codec::TimestampMicros) => format!(
            "(timestamptz 'epoch' + CAST({lit} AS bigint) * interval '1 microsecond')::{pg_type}"
        ),
        (KeyOrder::Native, Codec::DateDays) => format!("(date '1970-01-01' + CAST({lit} AS int))"),
        (KeyOrder::Native, _) => format!("CAST({lit} AS {pg_type})"),
        (KeyOrder::Text | KeyOrder::Hex, _) => format!("{lit} COLLATE \"C\""),
    }
}

/// The `WHERE` condition of `r` in ClickHouse.
pub fn ch_range_cond(key: &ChColumn, r: &KeyRange) -> String {
    let e = ch_key_expr(key);
    let mut c = Vec::new();
    if let Some(lo) = &r.lo {
        c.push(format!("{e} >= {}", ch_bound(key, lo)));
    }
    if let Some(hi) = &r.hi {
        c.push(format!("{e} < {}", ch_bound(key, hi)));
    }
    if c.is_empty() {
        "1".into()
    } else {
        c.join(" AND ")
    }
}

/// One side's summary of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub rows: u64,
    /// The sum of the rows' hashes, modulo 2^64.
    pub sum: u64,
}

impl Digest {
    /// From a Postgres `count`, `sum` (numeric: unbounded, any sign) reply.
    pub fn from_pg(count: &str, sum: &str) -> Option<Digest> {
        let rows = count.trim().parse().ok()?;
        let sum = match sum.trim() {
            "" | "\\N" => 0,
            s => wrap_u64(s)?,
        };
        Some(Digest { rows, sum })
    }

    /// From a ClickHouse `count()`, `sum()` (Int64, wrapped) reply.
    pub fn from_ch(count: &str, sum: &str) -> Option<Digest> {
        let rows = count.trim().parse().ok()?;
        let sum = sum.trim().parse::<i64>().ok()? as u64;
        Some(Digest { rows, sum })
    }
}

/// A decimal integer of any size, modulo 2^64.
fn wrap_u64(s: &str) -> Option<u64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in digits.bytes() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// How ClickHouse's live rows of a table are read (as `chtypes::live_view_sql` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// ReplacingMergeTree: FINAL, without deleted rows.
    Replacing,
    /// Every version kept (`engine = "append"`): the latest by `_version` of each sort key
    /// (these columns), unless deleted.
    Append(Vec<String>),
    /// A keyless table, counted by content: each distinct row as many times as its inserts
    /// outnumber its deletes.
    Keyless,
}

/// Where a table's rows are read on each side.
#[derive(Debug, Clone)]
pub struct Sides<'a> {
    pub pg_schema: &'a str,
    pub pg_table: &'a str,
    /// The publication's row filter (SQL over the row's columns): only the rows it passes are
    /// replicated.
    pub pg_filter: Option<&'a str>,
    pub ch_db: &'a str,
    pub ch_table: &'a str,
    pub live: Live,
}

impl Sides<'_> {
    /// `FROM … WHERE …` of the rows in Postgres that pass `cond`.
    fn pg_from(&self, cond: &str) -> String {
        self.pg_from_sampled(cond, None)
    }

    /// The same over a sample of about `percent` % of the table's pages.
    fn pg_from_sampled(&self, cond: &str, percent: Option<f64>) -> String {
        let filter = self
            .pg_filter
            .map(|f| format!("({f}) AND "))
            .unwrap_or_default();
        let sample = percent
            .map(|p| format!(" TABLESAMPLE SYSTEM ({:.6})", p.clamp(0.000001, 100.0)))
            .unwrap_or_default();
        format!(
            "FROM {}.{}{sample} WHERE {filter}{cond}",
            pg_ident(self.pg_schema),
            pg_ident(self.pg_table)
        )
    }

    /// `FROM … WHERE …` of the live rows in ClickHouse that pass `cond`; a keyless table's
    /// rows (of `cols`) carry their count in `_count`.
    fn ch_from(&self, cols: &[&ChColumn], cond: &str) -> String {
        let table = format!("{}.{}", ch_ident(self.ch_db), ch_ident(self.ch_table));
        match &self.live {
            Live::Replacing => format!("FROM {table} FINAL WHERE `_is_deleted` = 0 AND {cond}"),
            Live::Append(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| ch_ident(k)).collect();
                format!(
                    "FROM (SELECT * FROM {table} FINAL ORDER BY `_version` DESC LIMIT 1 BY {}) WHERE `_is_deleted` = 0 AND {cond}",
                    keys.join(", ")
                )
            }
            Live::Keyless => {
                let names: Vec<String> = cols.iter().map(|c| ch_ident(&c.name)).collect();
                let names = names.join(", ");
                format!(
                    "FROM (SELECT {names}, sum(if(`_is_deleted` = 1, -1, 1)) AS `_count` FROM {table} FINAL GROUP BY {names} HAVING `_count` > 0) WHERE {cond}"
                )
            }
        }
    }
}

/// The summary of the rows in range `r` of the first key column `key` (of SQL type `pg_type`;
/// `None`: every row), in Postgres.
pub fn pg_digest_sql(
    s: &Sides<'_>,
    cols: &[&ChColumn],
    key: Option<(&ChColumn, &str)>,
    r: &KeyRange,
) -> String {
    let cond = key.map_or("true".to_string(), |(k, t)| pg_range_cond(k, t, r));
    format!(
        "SELECT count(*)::text, coalesce(sum({})::text, '0') {}",
        pg_row_hash(&pg_row_text(cols)),
        s.pg_from(&cond)
    )
}

/// The same in ClickHouse, over the live rows; the client asks for TabSeparated.
pub fn ch_digest_sql(
    s: &Sides<'_>,
    cols: &[&ChColumn],
    key: Option<&ChColumn>,
    r: &KeyRange,
) -> String {
    let cond = key.map_or("1".to_string(), |k| ch_range_cond(k, r));
    let hash = ch_row_hash(&ch_row_text(cols));
    match s.live {
        Live::Keyless => format!(
            "SELECT sum(`_count`), sum({hash} * `_count`) {}",
            s.ch_from(cols, &cond)
        ),
        _ => format!("SELECT count(), sum({hash}) {}", s.ch_from(cols, &cond)),
    }
}

/// The digests of every part of a split range (`parts`, as [`split`] made them, in order) in
/// one pass, in Postgres: rows of `part, count, sum` (a part without rows has no row).
pub fn pg_parts_digest_sql(
    s: &Sides<'_>,
    cols: &[&ChColumn],
    key: &ChColumn,
    pg_type: &str,
    parts: &[KeyRange],
) -> String {
    let e = pg_key_expr(key);
    let mut case = String::from("CASE");
    for (i, p) in parts.iter().enumerate().skip(1) {
        if let Some(lo) = &p.lo {
            case.push_str(&format!(
                " WHEN {e} < {} THEN {}",
                pg_bound(key, lo, pg_type),
                i - 1
            ));
        }
    }
    case.push_str(&format!(" ELSE {} END", parts.len().saturating_sub(1)));
    let whole = KeyRange {
        lo: parts.first().and_then(|p| p.lo.clone()),
        hi: parts.last().and_then(|p| p.hi.clone()),
    };
    format!(
        "SELECT ({case})::text AS part, count(*)::text, coalesce(sum({})::text, '0') {} GROUP BY 1",
        pg_row_hash(&pg_row_text(cols)),
        s.pg_from(&pg_range_cond(key, pg_type, &whole))
    )
}

/// The same in ClickHouse (rows of `part`, `count`, `sum` as TabSeparated).
pub fn ch_parts_digest_sql(
    s: &Sides<'_>,
    cols: &[&ChColumn],
    key: &ChColumn,
    parts: &[KeyRange],
) -> String {
    let e = ch_key_expr(key);
    let mut arms = Vec::new();
    for (i, p) in parts.iter().enumerate().skip(1) {
        if let Some(lo) = &p.lo {
            arms.push(format!("{e} < {}, {}", ch_bound(key, lo), i - 1));
        }
    }
    let last = parts.len().saturating_sub(1);
    // multiIf wants a condition; one part is all rows.
    let part = if arms.is_empty() {
        format!("{last}")
    } else {
        format!("multiIf({}, {last})", arms.join(", "))
    };
    let whole = KeyRange {
        lo: parts.first().and_then(|p| p.lo.clone()),
        hi: parts.last().and_then(|p| p.hi.clone()),
    };
    let hash = ch_row_hash(&ch_row_text(cols));
    format!(
        "SELECT toString(`__tributary_part`), toString(count()), toString(sum({hash})) FROM (SELECT {part} AS `__tributary_part`, * {}) GROUP BY `__tributary_part`",
        s.ch_from(cols, &ch_range_cond(key, &whole))
    )
}

/// The digests of `n` parts from the rows of [`pg_parts_digest_sql`] or
/// [`ch_parts_digest_sql`] (`part, count, sum` as text); `None` when a row cannot be read.
pub fn parts_digests<'a>(
    n: usize,
    rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    pg: bool,
) -> Option<Vec<Digest>> {
    let mut out = vec![Digest::default(); n];
    for (part, count, sum) in rows {
        let i: usize = part.trim().parse().ok()?;
        let d = if pg {
            Digest::from_pg(count, sum)?
        } else {
            Digest::from_ch(count, sum)?
        };
        *out.get_mut(i)? = d;
    }
    Some(out)
}

/// Each row's key text, hash and the short hash of each column in range `r`, in Postgres
/// (a changed row's differing columns are named from them).
pub fn pg_rows_sql(
    s: &Sides<'_>,
    cols: &[&ChColumn],
    keys: &[&ChColumn],
    key_pg_type: &str,
    r: &KeyRange,
) -> String {
    let per_col: Vec<String> = cols
        .iter()
        .map(|c| format!("left(md5({}), 16)", pg_field(c)))
        .collect();
    format!(
        "SELECT {}, {}::text, {} {}",
        pg_key_text(keys),
        pg_row_hash(&pg_row_text(cols)),
        per_col.join(" || ',' || "),
        s.pg_from(&pg_range_cond(keys[0], key_pg_type, r))
    )
}

/// The same in ClickHouse.
pub fn ch_rows_sql(s: &Sides<'_>, cols: &[&ChColumn], keys: &[&ChColumn], r: &KeyRange) -> String {
    let per_col: Vec<String> = cols
        .iter()
        .map(|c| format!("lower(substring(hex(MD5({})), 1, 16))", ch_field(c)))
        .collect();
    format!(
        "SELECT {}, toString({}), arrayStringConcat([{}], ',') {}",
        ch_key_text(keys),
        ch_row_hash(&ch_row_text(cols)),
        per_col.join(", "),
        s.ch_from(cols, &ch_range_cond(keys[0], r))
    )
}

/// A keyless table's rows by content, in Postgres: each distinct row's text and how many
/// rows have it.
pub fn pg_contents_sql(s: &Sides<'_>, cols: &[&ChColumn]) -> String {
    format!(
        "SELECT x, count(*)::text FROM (SELECT {} AS x {}) r GROUP BY x",
        pg_row_text(cols),
        s.pg_from("true")
    )
}

/// The same in ClickHouse.
pub fn ch_contents_sql(s: &Sides<'_>, cols: &[&ChColumn]) -> String {
    let count = match s.live {
        Live::Keyless => "sum(`_count`)",
        _ => "count()",
    };
    format!(
        "SELECT x, toString(n) FROM (SELECT {} AS x, {count} AS n {} GROUP BY x)",
        ch_row_text(cols),
        s.ch_from(cols, "1")
    )
}

/// The rows that differ between two tables counted by content (text, count on each side):
/// `Missing(text)` once for each copy ClickHouse lacks, `Extra(text)` for each it has too
/// many, at most `limit` in all, in text order.
pub fn diff_contents(pg: &[(String, u64)], ch: &[(String, u64)], limit: usize) -> Vec<Difference> {
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (t, n) in pg {
        counts.entry(t.as_str()).or_default().0 += n;
    }
    for (t, n) in ch {
        counts.entry(t.as_str()).or_default().1 += n;
    }
    let mut out = Vec::new();
    for (t, (p, c)) in counts {
        let (diff, make): (u64, fn(String) -> Difference) = if p > c {
            (p - c, Difference::Missing)
        } else {
            (c - p, Difference::Extra)
        };
        for _ in 0..diff.min((limit - out.len().min(limit)) as u64) {
            out.push(make(t.to_string()));
        }
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// One row of [`pg_rows_sql`] or [`ch_rows_sql`]: key text, row hash, column hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHash {
    pub key: String,
    pub hash: String,
    pub columns: String,
}

impl RowHash {
    /// From the three fields of a reply row.
    pub fn new(key: &str, hash: &str, columns: &str) -> Self {
        RowHash {
            key: key.to_string(),
            hash: hash.to_string(),
            columns: columns.to_string(),
        }
    }
}

/// Up to `parts` - 1 bounds that split range `r` into parts of about equal rows, from
/// Postgres in one sorted pass (`ntile`): the first key of each part after the first, read
/// as [`pg_bound_select`]. With `sample`, over that percentage of the table's pages (a large
/// range: its parts need not be equal, and sorting a sample is cheaper than all of it).
pub fn pg_split_sql(
    s: &Sides<'_>,
    key: &ChColumn,
    key_pg_type: &str,
    r: &KeyRange,
    parts: u32,
    sample: Option<f64>,
) -> String {
    format!(
        "SELECT DISTINCT ON (t) b FROM (SELECT {bound} AS b, {e} AS k, ntile({parts}) OVER (ORDER BY {e}) AS t \
         {}) s WHERE t > 1 ORDER BY t, k",
        s.pg_from_sampled(&pg_range_cond(key, key_pg_type, r), sample),
        bound = pg_bound_select(key),
        e = pg_key_expr(key),
    )
}

/// Splits `r` at `bounds` (each the first key of a part after the first), dropping empty
/// and repeated bounds.
pub fn split(r: &KeyRange, bounds: &[String]) -> Vec<KeyRange> {
    let mut out = Vec::new();
    let mut lo = r.lo.clone();
    for b in bounds {
        if lo.as_deref() == Some(b.as_str()) {
            continue;
        }
        out.push(KeyRange {
            lo: lo.clone(),
            hi: Some(b.clone()),
        });
        lo = Some(b.clone());
    }
    out.push(KeyRange {
        lo,
        hi: r.hi.clone(),
    });
    out
}

/// A key found different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// In Postgres, not in ClickHouse.
    Missing(String),
    /// In ClickHouse, not in Postgres.
    Extra(String),
    /// On both sides, with different values in these columns (indexes into the compared
    /// columns).
    Changed(String, Vec<usize>),
}

impl Difference {
    pub fn key(&self) -> &str {
        match self {
            Difference::Missing(k) | Difference::Extra(k) | Difference::Changed(k, _) => k,
        }
    }
}

/// The keys that differ between the two sides' rows (in key text order).
pub fn diff_rows(pg: &[RowHash], ch: &[RowHash]) -> Vec<Difference> {
    let pg: BTreeMap<&str, &RowHash> = pg.iter().map(|r| (r.key.as_str(), r)).collect();
    let ch: BTreeMap<&str, &RowHash> = ch.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut out = Vec::new();
    for (k, p) in &pg {
        match ch.get(k) {
            None => out.push(Difference::Missing(k.to_string())),
            Some(c) if c.hash != p.hash => {
                let cols = p
                    .columns
                    .split(',')
                    .zip(c.columns.split(','))
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, _)| i)
                    .collect();
                out.push(Difference::Changed(k.to_string(), cols));
            }
            Some(_) => {}
        }
    }
    for k in ch.keys() {
        if !pg.contains_key(k) {
            out.push(Difference::Extra(k.to_string()));
        }
    }
    out.sort_by(|a, b| a.key().cmp(b.key()));
    out
}

/// A key text (`<bytes>:<text>` fields joined by `,`) as people read it: the values joined
/// by `, `, `NULL` for a NULL; a text not of that form as it is.
pub fn show_key(key: &str) -> String {
    let mut out = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('N') {
            out.push("NULL".to_string());
            rest = r.strip_prefix(',').unwrap_or(r);
            continue;
        }
        let Some((len, r)) = rest.split_once(':') else {
            return key.to_string();
        };
        let Ok(n) = len.parse::<usize>() else {
            return key.to_string();
        };
        if r.len() < n || !r.is_char_boundary(n) {
            return key.to_string();
        }
        out.push(r[..n].to_string());
        rest = r[n..].strip_prefix(',').unwrap_or(&r[n..]);
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ch_type: &str, codec: Codec, is_key: bool) -> ChColumn {
        ChColumn {
            name: name.into(),
            ch_type: ch_type.into(),
            codec,
            nullable: ch_type.starts_with("Nullable"),
            is_key,
            note: None,
            default_expr: None,
            renamed_from: None,
        }
    }

    #[test]
    fn sums_wrap_modulo_2_to_the_64() {
        let d = Digest::from_pg("3", "-27670116110564327421").unwrap();
        // ClickHouse's Int64 sum of the same three hashes wraps to this.
        let c = Digest::from_ch("3", "-9223372036854775802").unwrap();
        assert_eq!(d.rows, 3);
        assert_eq!(
            wrap_u64("-27670116110564327421"),
            Some((-27670116110564327421i128).rem_euclid(1 << 64) as u64)
        );
        assert_eq!(c.sum, (-9223372036854775802i64) as u64);
        assert_eq!(Digest::from_pg("0", "").unwrap(), Digest::default());
        assert_eq!(wrap_u64("18446744073709551617"), Some(1));
        assert!(wrap_u64("1.5").is_none() && wrap_u64("-").is_none());
    }

    #[test]
    fn diff_names_missing_extra_and_changed_keys_with_their_columns() {
        let s = |v: &[(&str, &str, &str)]| -> Vec<RowHash> {
            v.iter().map(|(a, b, c)| RowHash::new(a, b, c)).collect()
        };
        let pg = s(&[
            ("1:1", "a", "x,y"),
            ("1:2", "b", "x,y"),
            ("1:3", "c", "x,y,z"),
        ]);
        let ch = s(&[
            ("1:2", "b", "x,y"),
            ("1:3", "q", "x,w,v"),
            ("1:4", "d", "x,y"),
        ]);
        assert_eq!(
            diff_rows(&pg, &ch),
            vec![
                Difference::Missing("1:1".into()),
                Difference::Changed("1:3".into(), vec![1, 2]),
                Difference::Extra("1:4".into())
            ]
        );
    }

    #[test]
    fn parts_are_digested_in_one_pass() {
        let k = col("id", "Int64", Codec::Number, true);
        let s = Sides {
            pg_schema: "s",
            pg_table: "t",
            pg_filter: None,
            ch_db: "d",
            ch_table: "t",
            live: Live::Replacing,
        };
        let r = KeyRange {
            lo: Some("5".into()),
            hi: None,
        };
        let parts = split(&r, &["10".into(), "20".into()]);
        let pg = pg_parts_digest_sql(&s, &[&k], &k, "bigint", &parts);
        assert!(
            pg.contains("CASE WHEN \"id\" < CAST('10' AS bigint) THEN 0 WHEN \"id\" < CAST('20' AS bigint) THEN 1 ELSE 2 END")
                && pg.ends_with("WHERE \"id\" >= CAST('5' AS bigint) GROUP BY 1"),
            "{pg}"
        );
        let ch = ch_parts_digest_sql(&s, &[&k], &k, &parts);
        assert!(
            ch.contains("multiIf(`id` < CAST('10' AS Int64), 0, `id` < CAST('20' AS Int64), 1, 2) AS `__tributary_part`")
                && ch.ends_with("AND `id` >= CAST('5' AS Int64)) GROUP BY `__tributary_part`"),
            "{ch}"
        );
        assert!(!ch.contains('?'));
        // Parts without rows read as empty; a part out of range is an error.
        let d = parts_digests(3, [("2", "4", "-1"), ("0", "1", "7")], false).unwrap();
        assert_eq!(d[1], Digest::default());
        assert_eq!((d[0].rows, d[2].rows, d[2].sum), (1, 4, u64::MAX));
        assert!(parts_digests(3, [("3", "1", "1")], true).is_none());
        assert!(parts_digests(3, [("x", "1", "1")], true).is_none());
    }

    #[test]
    fn contents_differ_by_their_counts() {
        let v = |x: &[(&str, u64)]| -> Vec<(String, u64)> {
            x.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        let pg = v(&[("1:a", 2), ("1:b", 1), ("1:c", 1)]);
        let ch = v(&[("1:a", 1), ("1:c", 3), ("1:d", 1)]);
        assert_eq!(
            diff_contents(&pg, &ch, 10),
            vec![
                Difference::Missing("1:a".into()),
                Difference::Missing("1:b".into()),
                Difference::Extra("1:c".into()),
                Difference::Extra("1:c".into()),
                Difference::Extra("1:d".into()),
            ]
        );
        assert_eq!(diff_contents(&pg, &ch, 3).len(), 3);
        assert!(diff_contents(&pg, &pg, 10).is_empty());
    }

    #[test]
    fn sides_read_the_live_rows_their_way() {
        let k = col("id", "Int64", Codec::Number, true);
        let v = col("v", "Nullable(String)", Codec::Text, false);
        let mut s = Sides {
            pg_schema: "s",
            pg_table: "t",
            pg_filter: Some("tenant = 1"),
            ch_db: "d",
            ch_table: "t",
            live: Live::Replacing,
        };
        let r = KeyRange::all();
        let pg = pg_digest_sql(&s, &[&k, &v], Some((&k, "bigint")), &r);
        assert!(
            pg.ends_with("FROM \"s\".\"t\" WHERE (tenant = 1) AND true"),
            "{pg}"
        );
        let ch = ch_digest_sql(&s, &[&k, &v], Some(&k), &r);
        assert!(
            ch.ends_with("FROM `d`.`t` FINAL WHERE `_is_deleted` = 0 AND 1"),
            "{ch}"
        );
        s.live = Live::Append(vec!["id".into()]);
        let ch = ch_digest_sql(&s, &[&k, &v], Some(&k), &r);
        assert!(
            ch.contains("FROM (SELECT * FROM `d`.`t` FINAL ORDER BY `_version` DESC LIMIT 1 BY `id`) WHERE `_is_deleted` = 0"),
            "{ch}"
        );
        s.live = Live::Keyless;
        let ch = ch_digest_sql(&s, &[&v], None, &r);
        assert!(
            ch.starts_with("SELECT sum(`_count`), sum(")
                && ch.contains(" * `_count`) FROM (SELECT `v`, sum(if(`_is_deleted` = 1, -1, 1)) AS `_count` FROM `d`.`t` FINAL GROUP BY `v` HAVING `_count` > 0) WHERE 1"),
            "{ch}"
        );
    }

    #[test]
    fn keys_are_shown_as_their_values() {
        assert_eq!(show_key("1:7"), "7");
        assert_eq!(show_key("3:a,b,N,0:"), "a,b, NULL, ");
        assert_eq!(show_key("2:x"), "2:x", "a malformed key is shown as it is");
    }

    #[test]
    fn split_drops_repeated_bounds() {
        let r = KeyRange::all();
        let parts = split(&r, &["10".into(), "10".into(), "20".into()]);
        assert_eq!(
            parts,
            vec![
                KeyRange {
                    lo: None,
                    hi: Some("10".into())
                },
                KeyRange {
                    lo: Some("10".into()),
                    hi: Some("20".into())
                },
                KeyRange {
                    lo: Some("20".into()),
                    hi: None
                },
            ]
        );
    }

    #[test]
    fn json_columns_and_nested_arrays_are_left_out_with_a_reason() {
        let j = col("doc", "Nullable(JSON)", Codec::Text, false);
        let s = col("doc", "Nullable(String)", Codec::Text, false);
        assert!(not_comparable(&j).is_some());
        assert!(not_comparable(&s).is_none());
        let cols = vec![j, s];
        assert_eq!(compared(&cols).len(), 1);
    }

    #[test]
    fn clickhouse_sql_has_no_question_mark() {
        // The ClickHouse client reads `?` as a query parameter.
        let codecs = [
            Codec::Text,
            Codec::Number,
            Codec::Float,
            Codec::Decimal,
            Codec::Bool { words: true },
            Codec::Date32,
            Codec::DateDays,
            Codec::DateTime64,
            Codec::TimestampMicros,
            Codec::Bytea,
            Codec::Array(Box::new(Codec::Decimal)),
        ];
        for codec in codecs {
            let c = col("c", "Nullable(String)", codec, false);
            let k = col("k", "Int32", Codec::Number, true);
            let cols = [&k, &c];
            let r = KeyRange {
                lo: Some("1".into()),
                hi: Some("9".into()),
            };
            for live in [
                Live::Replacing,
                Live::Append(vec!["k".into()]),
                Live::Keyless,
            ] {
                let s = Sides {
                    pg_schema: "public",
                    pg_table: "t",
                    pg_filter: None,
                    ch_db: "d",
                    ch_table: "t",
                    live,
                };
                for sql in [
                    ch_digest_sql(&s, &cols, Some(&k), &r),
                    ch_rows_sql(&s, &cols, &[&k], &r),
                    ch_contents_sql(&s, &cols),
                ] {
                    assert!(!sql.contains('?'), "{sql}");
                }
            }
        }
    }

    #[test]
    fn names_and_bounds_are_quoted() {
        let k = col("id\"`x", "String", Codec::Text, true);
        let r = KeyRange {
            lo: Some("a'b".into()),
            hi: None,
        };
        assert_eq!(
            pg_range_cond(&k, "text", &r),
            "(\"id\"\"`x\")::text COLLATE \"C\" >= 'a''b' COLLATE \"C\""
        );
        assert_eq!(ch_range_cond(&k, &r), "toString(`id\"\\`x`) >= 'a\\'b'");
    }
}
