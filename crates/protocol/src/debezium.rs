//! Debezium PostgreSQL connector change events as Kafka Connect's JsonConverter writes them,
//! with `schemas.enable=true` (`{"schema": ..., "payload": ...}`) or false (payload only).
//! Tributary emulates Debezium [`DEBEZIUM_VERSION`] with its default settings
//! (`time.precision.mode=adaptive`, `binary.handling.mode=bytes`,
//! `interval.handling.mode=numeric`), so consumers written for Debezium read our topics, and
//! [`decode`] reads topics that a real Debezium wrote.
//!
//! Must never: panic on any input to [`decode`] (it is fuzzed), do I/O or read a clock (the
//! caller passes `now_us`), or silently change a value: what Debezium's types cannot carry
//! becomes `null` and is counted in [`EncodeStats`]. Where we differ from Debezium is listed in
//! `tests/fixtures/debezium/README.md`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::pgoutput::Cell;
use super::pgtext::{civil_from_days, days_from_civil, parse_array, parse_bytea_hex};
use super::pgtext::{parse_date_days, parse_timestamp_micros, ArrayElem};
use super::schema::{Column, PgType, TableSchema};

/// The Debezium release whose event shapes we write (`source.version`).
pub const DEBEZIUM_VERSION: &str = "2.7.4.Final";
/// Debezium's default `unavailable.value.placeholder`: an unchanged TOASTed value.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// `timestamp` ±infinity as Debezium writes them (pgjdbc's `PGStatement` constants).
const TS_POS_INF: i64 = 9_223_372_036_825_200_000;
const TS_NEG_INF: i64 = -9_223_372_036_832_400_000;
const DAY_US: i64 = 86_400_000_000;
const ENUM: &str = "io.debezium.data.Enum";
const UUID: &str = "io.debezium.data.Uuid";
const JSON: &str = "io.debezium.data.Json";
const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
/// Decoding refuses longer decimals: the conversion to text is quadratic.
const MAX_DECIMAL_BYTES: usize = 8192;

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($o:expr, $($arg:tt)*) => {{
        let _ = write!($o, $($arg)*);
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalMode {
    Precise,
    String,
    Double,
}

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// JsonConverter `schemas.enable`.
    pub schemas: bool,
    pub decimal: DecimalMode,
    /// topic prefix = Debezium's topic.prefix, also source.name
    pub prefix: String,
    /// `source.db`.
    pub database: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
    pub fn from_code(s: &str) -> Option<Op> {
        let all = [Op::Read, Op::Create, Op::Update, Op::Delete, Op::Truncate];
        all.into_iter().find(|o| o.code() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFlag {
    False,
    True,
    Last,
}

#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub lsn: u64,
    pub tx_id: Option<u32>,
    /// commit time, µs since the Unix epoch
    pub commit_us: i64,
    pub snapshot: SnapshotFlag,
    /// last committed LSN before this tx, if known
    pub last_commit_lsn: Option<u64>,
}

#[derive(Debug, Default)]
pub struct EncodeStats {
    /// Values Debezium's types cannot carry (numeric NaN in precise mode, date infinity, an
    /// unparsable value): written as `null` (or the type's zero when the field is required).
    pub unrepresentable: u64,
}

/// `<prefix>.<schema>.<table>`, sanitized as Debezium does (characters outside
/// `[A-Za-z0-9._-]` become `_`; at most 249 characters).
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let topic = format!("{prefix}.{schema}.{table}");
    let mut t: String = topic.chars().map(|c| if ok(c) { c } else { '_' }).collect();
    t.truncate(249);
    t
}

// ---------------------------------------------------------------------------------------------
// The field types of both directions.

/// A field's Debezium type: a Kafka Connect type with its semantic name.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    /// int8/16/32/64.
    Int(u8),
    F32,
    F64,
    /// A string, plain or with a semantic name (Json, Uuid, Enum).
    Str(Option<&'static str>),
    Bytes,
    /// Kafka Connect's Decimal: precision (when given) and scale.
    Decimal(Option<u32>, i64),
    VarDec,
    /// numeric under `decimal.handling.mode` string or double (encoding only).
    NumStr,
    NumF64,
    Date,
    /// Time of day or timestamp; the unit in µs: 1000 (ms), 1 (µs) or 0 (ns).
    Time(i64),
    Ts(i64),
    Tstz,
    Timetz,
    Duration,
    Array(Box<Ty>),
    /// Another struct or a map: kept as JSON text.
    Any(&'static str),
    /// Without schemas: any JSON value, with the column type inferred for it.
    Infer(PgType),
}

impl Ty {
    /// The type Debezium gives a Postgres column.
    fn of(t: &PgType, m: DecimalMode) -> Ty {
        use PgType as P;
        match t {
            P::Bool => Ty::Bool,
            P::Int2 => Ty::Int(16),
            P::Int4 => Ty::Int(32),
            P::Int8 => Ty::Int(64),
            P::Float4 => Ty::F32,
            P::Float8 => Ty::F64,
            P::Numeric(ps) => match (m, ps) {
                (DecimalMode::Precise, Some((p, s))) => Ty::Decimal(Some(*p), *s as i64),
                (DecimalMode::Precise, None) => Ty::VarDec,
                (DecimalMode::String, _) => Ty::NumStr,
                (DecimalMode::Double, _) => Ty::NumF64,
            },
            P::Text | P::Other(_) => Ty::Str(None),
            P::Enum(_) => Ty::Str(Some(ENUM)),
            P::Uuid => Ty::Str(Some(UUID)),
            P::Json | P::Jsonb => Ty::Str(Some(JSON)),
            P::Bytea => Ty::Bytes,
            P::Date => Ty::Date,
            P::Time => Ty::Time(1),
            P::TimeTz => Ty::Timetz,
            P::Timestamp => Ty::Ts(1),
            P::TimestampTz => Ty::Tstz,
            P::Interval => Ty::Duration,
            P::Array(e) => Ty::Array(Box::new(Ty::of(e, m))),
        }
    }

    /// The Connect schema type and the schema name.
    fn connect(&self) -> (&'static str, Option<&'static str>) {
        let named = |t, n| (t, Some(n));
        match self {
            Ty::Bool => ("boolean", None),
            Ty::Int(8) => ("int8", None),
            Ty::Int(16) => ("int16", None),
            Ty::Int(32) => ("int32", None),
            Ty::Int(_) => ("int64", None),
            Ty::F32 => ("float", None),
            Ty::F64 | Ty::NumF64 => ("double", None),
            Ty::Str(n) => ("string", *n),
            Ty::NumStr => ("string", None),
            Ty::Bytes => ("bytes", None),
            Ty::Decimal(..) => named("bytes", DECIMAL),
            Ty::VarDec => named("struct", "io.debezium.data.VariableScaleDecimal"),
            Ty::Date => named("int32", "io.debezium.time.Date"),
            Ty::Time(1000) => named("int32", "io.debezium.time.Time"),
            Ty::Time(1) => named("int64", "io.debezium.time.MicroTime"),
            Ty::Time(_) => named("int64", "io.debezium.time.NanoTime"),
            Ty::Ts(1000) => named("int64", "io.debezium.time.Timestamp"),
            Ty::Ts(1) => named("int64", "io.debezium.time.MicroTimestamp"),
            Ty::Ts(_) => named("int64", "io.debezium.time.NanoTimestamp"),
            Ty::Tstz => named("string", "io.debezium.time.ZonedTimestamp"),
            Ty::Timetz => named("string", "io.debezium.time.ZonedTime"),
            Ty::Duration => named("int64", "io.debezium.time.MicroDuration"),
            Ty::Array(_) => ("array", None),
            Ty::Any(t) => (*t, None),
            Ty::Infer(_) => ("any JSON", None),
        }
    }

    /// A field's type from its JsonConverter schema.
    fn parse(f: &Value) -> Result<Ty, DecodeError> {
        let schema_err = |s: &str| DecodeError::InvalidSchema(s.to_string());
        let t = f.get("type").and_then(Value::as_str);
        let t = t.ok_or_else(|| schema_err("a field without \"type\""))?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let named = [
            Ty::Date,
            Ty::Time(1000),
            Ty::Time(1),
            Ty::Time(0),
            Ty::Ts(1000),
            Ty::Ts(1),
        ];
        let named2 = [Ty::Ts(0), Ty::Tstz, Ty::Timetz, Ty::Duration, Ty::VarDec];
        let strings = [
            Ty::Str(Some(JSON)),
            Ty::Str(Some(UUID)),
            Ty::Str(Some(ENUM)),
        ];
        let all = named.into_iter().chain(named2).chain(strings);
        if let Some(ty) = all.into_iter().find(|ty| ty.connect() == (t, Some(name))) {
            return Ok(ty);
        }
        let param = |p| f.get("parameters")?.get(p)?.as_str();
        Ok(match (t, name) {
            ("int32", "org.apache.kafka.connect.data.Date") => Ty::Date,
            ("int32", "org.apache.kafka.connect.data.Time") => Ty::Time(1000),
            ("int64", "org.apache.kafka.connect.data.Timestamp") => Ty::Ts(1000),
            ("bytes", DECIMAL) => {
                let scale = param("scale").and_then(|s| s.parse().ok());
                let scale = scale.filter(|s: &i64| s.abs() <= 16383);
                let precision = param("connect.decimal.precision").and_then(|p| p.parse().ok());
                Ty::Decimal(
                    precision,
                    scale.ok_or_else(|| schema_err("Decimal without a scale"))?,
                )
            }
            ("boolean", _) => Ty::Bool,
            ("int8", _) => Ty::Int(8),
            ("int16", _) => Ty::Int(16),
            ("int32", _) => Ty::Int(32),
            ("int64", _) => Ty::Int(64),
            ("float", _) => Ty::F32,
            ("double", _) => Ty::F64,
            ("string", _) => Ty::Str(None),
            ("bytes", _) => Ty::Bytes,
            ("array", _) => {
                let items = f
                    .get("items")
                    .ok_or_else(|| schema_err("an array without items"))?;
                Ty::Array(Box::new(Ty::parse(items)?))
            }
            ("struct", _) => Ty::Any("struct"),
            ("map", _) => Ty::Any("map"),
            (other, _) => return Err(schema_err(&format!("unknown type {other:?}"))),
        })
    }

    /// The Postgres type whose text form this Debezium type round-trips.
    fn pg_type(&self) -> PgType {
        match self {
            Ty::Bool => PgType::Bool,
            Ty::Int(8 | 16) => PgType::Int2,
            Ty::Int(32) => PgType::Int4,
            Ty::Int(_) => PgType::Int8,
            Ty::F32 => PgType::Float4,
            Ty::F64 | Ty::NumF64 => PgType::Float8,
            Ty::Str(Some(JSON)) | Ty::Any(_) => PgType::Jsonb,
            Ty::Str(Some(UUID)) => PgType::Uuid,
            Ty::Str(_) | Ty::NumStr => PgType::Text,
            Ty::Bytes => PgType::Bytea,
            Ty::Decimal(Some(p), s) if *s >= 0 => PgType::Numeric(Some((*p, *s as u32))),
            Ty::Decimal(..) | Ty::VarDec => PgType::Numeric(None),
            Ty::Date => PgType::Date,
            Ty::Time(_) => PgType::Time,
            Ty::Ts(_) => PgType::Timestamp,
            Ty::Tstz => PgType::TimestampTz,
            Ty::Timetz => PgType::TimeTz,
            Ty::Duration => PgType::Interval,
            Ty::Array(e) => PgType::Array(Box::new(e.pg_type())),
            Ty::Infer(t) => t.clone(),
        }
    }

    /// What Debezium writes for NULL in a required field (its converters' fallback values).
    fn fallback(&self) -> &'static str {
        match self {
            Ty::Bool => "false",
            Ty::F32 | Ty::F64 | Ty::NumF64 => "0.0",
            Ty::Str(_) | Ty::NumStr | Ty::Bytes => "\"\"",
            Ty::Decimal(..) => "\"AA==\"",
            Ty::VarDec => "{\"scale\":0,\"value\":\"AA==\"}",
            Ty::Tstz => "\"1970-01-01T00:00:00Z\"",
            Ty::Timetz => "\"00:00:00Z\"",
            Ty::Array(_) => "[]",
            _ => "0",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding. JSON is written by hand: field order is part of the format (serde_json's map sorts).

/// Appends `s` as a JSON string.
fn jstr(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => w!(o, "\\u{:04X}", c as u32),
            c => o.push(c),
        }
    }
    o.push('"');
}

/// One field's schema, keys in JsonConverter's order (type, items/fields, optional, default,
/// name, version, doc, parameters, field). `default` is the Postgres text form of the column's
/// default, for a column added with one (Debezium writes column defaults as the Connect
/// schema's default value): consumers give it to rows written before the column existed.
fn write_schema(
    o: &mut String,
    ty: &Ty,
    optional: bool,
    default: Option<&str>,
    field: Option<&str>,
) {
    let (t, name) = ty.connect();
    w!(o, "{{\"type\":\"{t}\"");
    match ty {
        Ty::Array(e) => {
            o.push_str(",\"items\":");
            write_schema(o, e, true, None, None);
        }
        Ty::VarDec => o.push_str(concat!(
            r#","fields":[{"type":"int32","optional":false,"field":"scale"},"#,
            r#"{"type":"bytes","optional":false,"field":"value"}]"#
        )),
        _ => {}
    }
    w!(o, ",\"optional\":{optional}");
    if let Some(d) = default {
        let mut v = String::new();
        if write_value(&mut v, ty, d, &mut EncodeStats::default()) {
            w!(o, ",\"default\":{v}");
        }
    }
    if let Some(n) = name {
        w!(o, ",\"name\":\"{n}\",\"version\":1");
    }
    match ty {
        Ty::VarDec => o.push_str(",\"doc\":\"Variable scaled decimal\""),
        Ty::Decimal(p, s) => {
            w!(o, ",\"parameters\":{{\"scale\":\"{s}\"");
            if let Some(p) = p {
                w!(o, ",\"connect.decimal.precision\":\"{p}\"");
            }
            o.push('}');
        }
        _ => {}
    }
    if let Some(f) = field {
        o.push_str(",\"field\":");
        jstr(o, f);
    }
    o.push('}');
}

/// The struct schema of a row (`Value`) or a key (`Key`).
fn write_struct_schema(
    o: &mut String,
    cols: &[&Column],
    eo: &EncodeOptions,
    name: &str,
    field: Option<&str>,
) {
    o.push_str("{\"type\":\"struct\",\"fields\":[");
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        write_schema(
            o,
            &Ty::of(&c.pg_type, eo.decimal),
            c.nullable && !c.is_key,
            c.added_default.as_deref(),
            Some(&c.name),
        );
    }
    // Row structs are optional (before/after may be null), keys are not.
    w!(o, "],\"optional\":{},\"name\":", field.is_some());
    jstr(o, name);
    if let Some(f) = field {
        w!(o, ",\"field\":\"{f}\"");
    }
    o.push('}');
}

/// The envelope's fields after `before` and `after`: `source`, `transaction`, `op`, `ts_*`.
const ENVELOPE_TAIL_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},"#,
    r#"{"type":"string","optional":false,"field":"connector"},"#,
    r#"{"type":"string","optional":false,"field":"name"},"#,
    r#"{"type":"int64","optional":false,"field":"ts_ms"},"#,
    r#"{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"#,
    r#""parameters":{"allowed":"true,last,false,incremental"},"default":"false","field":"snapshot"},"#,
    r#"{"type":"string","optional":false,"field":"db"},"#,
    r#"{"type":"string","optional":true,"field":"sequence"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_us"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ns"},"#,
    r#"{"type":"string","optional":false,"field":"schema"},"#,
    r#"{"type":"string","optional":false,"field":"table"},"#,
    r#"{"type":"int64","optional":true,"field":"txId"},"#,
    r#"{"type":"int64","optional":true,"field":"lsn"},"#,
    r#"{"type":"int64","optional":true,"field":"xmin"}],"#,
    r#""optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"},"#,
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},"#,
    r#"{"type":"int64","optional":false,"field":"total_order"},"#,
    r#"{"type":"int64","optional":false,"field":"data_collection_order"}],"#,
    r#""optional":true,"name":"event.block","version":1,"field":"transaction"},"#,
    r#"{"type":"string","optional":false,"field":"op"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ms"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_us"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ns"}"#
);

fn schema_name(t: &TableSchema, o: &EncodeOptions, suffix: &str) -> String {
    format!("{}.{}.{}.{suffix}", o.prefix, t.schema, t.name)
}

fn wrap(payload: String, schema: Option<String>) -> Vec<u8> {
    match schema {
        Some(s) => format!("{{\"schema\":{s},\"payload\":{payload}}}").into_bytes(),
        None => payload.into_bytes(),
    }
}

/// Kafka message key: the key columns' values (`None` when the table has no key columns).
pub fn encode_key(
    t: &TableSchema,
    cells: &[Cell],
    o: &EncodeOptions,
    stats: &mut EncodeStats,
) -> Option<Vec<u8>> {
    let keys: Vec<(usize, &Column)> = t
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .collect();
    if keys.is_empty() {
        return None;
    }
    let mut p = String::from("{");
    for (n, (i, c)) in keys.iter().enumerate() {
        if n > 0 {
            p.push(',');
        }
        jstr(&mut p, &c.name);
        p.push(':');
        let cell = cells.get(*i).unwrap_or(&Cell::Null);
        write_cell(&mut p, &Ty::of(&c.pg_type, o.decimal), cell, true, stats);
    }
    p.push('}');
    let schema = o.schemas.then(|| {
        let mut s = String::new();
        let cols: Vec<&Column> = keys.iter().map(|(_, c)| *c).collect();
        write_struct_schema(&mut s, &cols, o, &schema_name(t, o, "Key"), None);
        s
    });
    Some(wrap(p, schema))
}

/// A change event's value. `before`/`after` are full rows in column order (deletes: `before`
/// holds the key columns and NULLs for others, as pgoutput gives them).
#[allow(clippy::too_many_arguments)]
pub fn encode_change(
    t: &TableSchema,
    op: Op,
    before: Option<&[Cell]>,
    after: Option<&[Cell]>,
    src: &SourceInfo,
    now_us: i64,
    o: &EncodeOptions,
    stats: &mut EncodeStats,
) -> Vec<u8> {
    let mut p = String::with_capacity(512);
    p.push_str("{\"before\":");
    write_row(&mut p, t, before, o, stats);
    p.push_str(",\"after\":");
    write_row(&mut p, t, after, o, stats);
    w!(
        p,
        ",\"source\":{{\"version\":\"{DEBEZIUM_VERSION}\",\"connector\":\"postgresql\",\"name\":"
    );
    jstr(&mut p, &o.prefix);
    let snapshot = match src.snapshot {
        SnapshotFlag::False => "false",
        SnapshotFlag::True => "true",
        SnapshotFlag::Last => "last",
    };
    let us = src.commit_us;
    w!(
        p,
        ",\"ts_ms\":{},\"snapshot\":\"{snapshot}\",\"db\":",
        us.div_euclid(1000)
    );
    jstr(&mut p, &o.database);
    // Debezium's sequence: [last commit LSN, this LSN] as a JSON string.
    let last = src
        .last_commit_lsn
        .map_or("null".into(), |l| format!("\"{l}\""));
    p.push_str(",\"sequence\":");
    jstr(&mut p, &format!("[{last},\"{}\"]", src.lsn));
    w!(
        p,
        ",\"ts_us\":{us},\"ts_ns\":{},\"schema\":",
        us.saturating_mul(1000)
    );
    jstr(&mut p, &t.schema);
    p.push_str(",\"table\":");
    jstr(&mut p, &t.name);
    let tx = src.tx_id.map_or("null".into(), |x| x.to_string());
    w!(
        p,
        ",\"txId\":{tx},\"lsn\":{},\"xmin\":null}},\"transaction\":null",
        src.lsn
    );
    w!(
        p,
        ",\"op\":\"{}\",\"ts_ms\":{},",
        op.code(),
        now_us.div_euclid(1000)
    );
    w!(
        p,
        "\"ts_us\":{now_us},\"ts_ns\":{}}}",
        now_us.saturating_mul(1000)
    );
    let schema = o.schemas.then(|| {
        let cols: Vec<&Column> = t.columns.iter().collect();
        let value = schema_name(t, o, "Value");
        let mut s = String::with_capacity(2048);
        s.push_str("{\"type\":\"struct\",\"fields\":[");
        write_struct_schema(&mut s, &cols, o, &value, Some("before"));
        s.push(',');
        write_struct_schema(&mut s, &cols, o, &value, Some("after"));
        w!(s, ",{ENVELOPE_TAIL_SCHEMA}],\"optional\":false,\"name\":");
        jstr(&mut s, &schema_name(t, o, "Envelope"));
        s.push_str(",\"version\":2}");
        s
    });
    wrap(p, schema)
}

/// A truncate event for one table (Debezium: key null, op "t", before/after null).
pub fn encode_truncate(
    t: &TableSchema,
    src: &SourceInfo,
    now_us: i64,
    o: &EncodeOptions,
) -> Vec<u8> {
    encode_change(
        t,
        Op::Truncate,
        None,
        None,
        src,
        now_us,
        o,
        &mut EncodeStats::default(),
    )
}

fn write_row(
    p: &mut String,
    t: &TableSchema,
    cells: Option<&[Cell]>,
    o: &EncodeOptions,
    stats: &mut EncodeStats,
) {
    let Some(cells) = cells else {
        return p.push_str("null");
    };
    p.push('{');
    for (i, c) in t.columns.iter().enumerate() {
        if i > 0 {
            p.push(',');
        }
        jstr(p, &c.name);
        p.push(':');
        let cell = cells.get(i).unwrap_or(&Cell::Null);
        write_cell(
            p,
            &Ty::of(&c.pg_type, o.decimal),
            cell,
            !c.nullable || c.is_key,
            stats,
        );
    }
    p.push('}');
}

fn write_cell(p: &mut String, ty: &Ty, cell: &Cell, required: bool, stats: &mut EncodeStats) {
    let mark = p.len();
    let written = match cell {
        Cell::Null => false,
        Cell::UnchangedToast => write_placeholder(p, ty),
        Cell::Text(b) => std::str::from_utf8(b).is_ok_and(|s| write_value(p, ty, s, stats)),
    };
    if !written {
        p.truncate(mark);
        if !matches!(cell, Cell::Null) {
            stats.unrepresentable += 1;
        }
        p.push_str(if required { ty.fallback() } else { "null" });
    }
}

/// Debezium's placeholder for an unchanged TOASTed value; false for types without one.
fn write_placeholder(p: &mut String, ty: &Ty) -> bool {
    match ty {
        Ty::Str(_) | Ty::NumStr => jstr(p, UNAVAILABLE),
        Ty::Bytes => b64_quoted(p, UNAVAILABLE.as_bytes()),
        Ty::Array(e) if matches!(**e, Ty::Str(_) | Ty::Bytes) => {
            p.push('[');
            write_placeholder(p, e);
            p.push(']');
        }
        // Integer arrays: the placeholder's bytes as numbers.
        Ty::Array(e) if matches!(**e, Ty::Int(_)) => {
            let bytes: Vec<String> = UNAVAILABLE.bytes().map(|b| b.to_string()).collect();
            w!(p, "[{}]", bytes.join(","));
        }
        _ => return false,
    }
    true
}

fn push<T: std::fmt::Display>(p: &mut String, v: Option<T>) -> bool {
    v.map(|v| w!(p, "{v}")).is_some()
}

fn is_json_number(s: &str) -> bool {
    s.trim() == s && serde_json::from_str::<serde_json::Number>(s).is_ok()
}

/// Writes one value from its Postgres text form; false when it does not parse or Debezium's
/// type cannot carry it.
fn write_value(p: &mut String, ty: &Ty, s: &str, stats: &mut EncodeStats) -> bool {
    let special = matches!(s, "NaN" | "Infinity" | "-Infinity");
    let infinity = matches!(s, "infinity" | "-infinity");
    match ty {
        Ty::Bool if s == "t" || s == "f" => p.push_str(if s == "t" { "true" } else { "false" }),
        Ty::Int(16) => return push(p, s.parse::<i16>().ok()),
        Ty::Int(32) => return push(p, s.parse::<i32>().ok()),
        Ty::Int(_) => return push(p, s.parse::<i64>().ok()),
        // Jackson quotes non-finite numbers.
        Ty::F32 | Ty::F64 | Ty::NumF64 if special => jstr(p, s),
        Ty::F32 | Ty::F64 if is_json_number(s) => p.push_str(s),
        Ty::NumF64 if is_json_number(s) => {
            return push(p, s.parse::<f64>().ok().map(|f| format!("{f:?}")))
        }
        Ty::Str(_) => jstr(p, s),
        Ty::NumStr if special => {
            let name = match s {
                "NaN" => "NAN",
                "Infinity" => "POSITIVE_INFINITY",
                _ => "NEGATIVE_INFINITY",
            };
            jstr(p, name)
        }
        Ty::NumStr if decimal_parts(s, None).is_some() => jstr(p, s),
        Ty::Bytes => match parse_bytea_hex(s.as_bytes()) {
            Some(raw) => b64_quoted(p, &raw),
            None => return false,
        },
        Ty::Decimal(_, scale) => match decimal_parts(s, Some(*scale as u32)) {
            Some((neg, digits, _)) => b64_quoted(p, &twos_complement(neg, &digits)),
            None => return false,
        },
        Ty::VarDec => match decimal_parts(s, None) {
            Some((neg, digits, scale)) => {
                w!(p, "{{\"scale\":{scale},\"value\":");
                b64_quoted(p, &twos_complement(neg, &digits));
                p.push('}');
            }
            None => return false,
        },
        Ty::Date if !infinity => {
            return push(p, parse_date_days(s).and_then(|d| i32::try_from(d).ok()))
        }
        Ty::Time(_) => return push(p, parse_clock(s).filter(|us| *us <= DAY_US)),
        Ty::Ts(_) => {
            let us = parse_timestamp_micros(s).map(|us| match us {
                i64::MAX => TS_POS_INF,
                i64::MIN => TS_NEG_INF,
                us => us,
            });
            return push(p, us);
        }
        Ty::Tstz if infinity => jstr(p, s),
        Ty::Tstz => match parse_timestamp_micros(s) {
            Some(us) => jstr(p, &iso_timestamp(us)),
            None => return false,
        },
        Ty::Timetz => match parse_time_with_offset(s) {
            Some(us) => jstr(p, &(clock_text(us) + "Z")),
            None => return false,
        },
        Ty::Duration => return push(p, parse_interval_micros(s)),
        Ty::Array(e) => {
            let Some(elems) = parse_array(s) else {
                return false;
            };
            p.push('[');
            for (i, el) in elems.iter().enumerate() {
                if i > 0 {
                    p.push(',');
                }
                let mark = p.len();
                match el {
                    ArrayElem::Value(v) if write_value(p, e, v, stats) => {}
                    ArrayElem::Value(_) => {
                        p.truncate(mark);
                        stats.unrepresentable += 1;
                        p.push_str("null");
                    }
                    ArrayElem::Null => p.push_str("null"),
                }
            }
            p.push(']');
        }
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Value conversions shared by both directions.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, quoted (what Jackson writes for `bytes`).
fn b64_quoted(o: &mut String, data: &[u8]) {
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
fn b64_decode(s: &str) -> Option<Vec<u8>> {
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
fn decimal_parts(s: &str, scale: Option<u32>) -> Option<(bool, Vec<u8>, u32)> {
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
fn twos_complement(neg: bool, digits: &[u8]) -> Vec<u8> {
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
fn decimal_text(bytes: &[u8], scale: i64) -> String {
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

/// `HH:MM[:SS[.fraction]]` as microseconds (digits past the sixth are dropped).
fn parse_clock(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, ':');
    let (h, m) = (num(it.next()?)?, num(it.next()?)?);
    let (sec, frac) = it
        .next()
        .map_or(("0", ""), |r| r.split_once('.').unwrap_or((r, "")));
    let sec = num(sec)?;
    if h > 24 || m > 59 || sec > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_us = frac
        .bytes()
        .chain([b'0'; 6])
        .take(6)
        .fold(0, |a, b| a * 10 + (b - b'0') as i64);
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + frac_us)
}

/// `Z`, `+HH`, `+HHMM` or `+HH:MM[:SS]` as seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let (sign, r) = match s.split_at_checked(1)? {
        ("+", r) => (1, r),
        ("-", r) => (-1, r),
        _ => return None,
    };
    let mut it = r.splitn(3, ':');
    let (h, m, sec) = match (it.next()?, it.next(), it.next()) {
        (hm, None, None) if hm.len() == 4 => (num(hm.get(..2)?)?, num(hm.get(2..)?)?, 0),
        (h, m, s) => (num(h)?, m.map_or(Some(0), num)?, s.map_or(Some(0), num)?),
    };
    (h <= 18 && m < 60 && sec < 60).then_some(sign * (h * 3600 + m * 60 + sec))
}

/// A time with an offset (`13:51:30.5+02`, `11:51:30Z`) as microseconds past midnight UTC.
fn parse_time_with_offset(s: &str) -> Option<i64> {
    let i = s.find(['Z', 'z', '+', '-'])?;
    let us = parse_clock(&s[..i])? - parse_offset(&s[i..])? * 1_000_000;
    Some(us.rem_euclid(DAY_US))
}

/// ISO-8601 with an offset (`+21016-11-04T06:51:30.123456Z`) as µs since the epoch.
fn parse_iso_timestamp(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let (neg, d) = match date.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, date.strip_prefix('+').unwrap_or(date)),
    };
    let mut it = d.splitn(3, '-');
    let (y, m, day) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    if y > 999_999 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, off) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], parse_offset(&rest[i..])?),
        None => (rest, 0),
    };
    let days = days_from_civil(if neg { -y } else { y }, m as u32, day as u32);
    days.checked_mul(DAY_US)?
        .checked_add(parse_clock(clock)?)?
        .checked_sub(off * 1_000_000)
}

/// Postgres-style interval output (`1 year 2 mons 3 days 04:05:06.5`) as Debezium's
/// MicroDuration: months of 365.25/12 days, computed in doubles in Debezium's order.
fn parse_interval_micros(s: &str) -> Option<i64> {
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
fn clock_text(us: i64) -> String {
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
fn iso_timestamp(us: i64) -> String {
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
fn pg_date(days: i64, tail: &str) -> String {
    let (y, m, d) = civil_from_days(days);
    let era = if y <= 0 { " BC" } else { "" };
    format!(
        "{:04}-{m:02}-{d:02}{tail}{era}",
        if y <= 0 { 1 - y } else { y }
    )
}

/// Postgres text of a timestamp (`+00` when `tz`), as DateStyle=ISO prints it.
fn pg_timestamp(us: i64, tz: bool) -> String {
    let time = format!(
        " {}{}",
        clock_text(us.rem_euclid(DAY_US)),
        if tz { "+00" } else { "" }
    );
    pg_date(us.div_euclid(DAY_US), &time)
}

/// Postgres-style interval text for a MicroDuration (days and a clock; months are gone).
fn pg_interval(us: i64) -> String {
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

// ---------------------------------------------------------------------------------------------
// Decoding.

#[derive(Debug, PartialEq)]
pub enum Decoded {
    Change(Change),
    Truncate {
        schema: String,
        table: String,
        lsn: u64,
        commit_us: i64,
    },
    /// A null-value message after a delete (nothing to do).
    Tombstone,
}

#[derive(Debug, PartialEq)]
pub struct Change {
    pub schema: String,
    pub table: String,
    pub op: Op,
    /// With schemas: every field of the row struct, typed by its Debezium type; nullable from
    /// `optional`. Without: inferred from the JSON values (integer → Int8, other number →
    /// Float8, bool → Bool, string → Text, object/array → Jsonb, null → Text), nullable unless
    /// a key, in the objects' field order, which is sorted by name (serde_json without
    /// `preserve_order`). `is_key` from the key's fields.
    pub columns: Vec<Column>,
    /// Rows as cells in `columns` order, in Postgres text format (as `chtypes::encode_field`
    /// reads it); the placeholder → `Cell::UnchangedToast`.
    pub before: Option<Vec<Cell>>,
    pub after: Option<Vec<Cell>>,
    /// source.lsn (0 when absent); source.ts_us, or ts_ms × 1000; whether source.snapshot
    /// marks a snapshot read.
    pub lsn: u64,
    pub commit_us: i64,
    pub snapshot: bool,
    /// For the create event of a key change: the old key's cells (others NULL), from the
    /// `__debezium.oldkey` header.
    pub moved_from: Option<Vec<Cell>>,
}

/// The header Debezium puts on the create event of a key change: the old key, as the key
/// converter writes keys.
pub const OLD_KEY_HEADER: &str = "__debezium.oldkey";

/// Why a message cannot be applied; the text goes into the dead-letter header.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("not a Debezium change event: {0}")]
    NotAnEnvelope(String),
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("a c/u/r event needs a key: a JSON object whose fields are all in the row")]
    MissingKey,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("neither the source block nor the topic name gives {0:?}")]
    MissingSource(String),
    #[error("op {op:?} needs a {field:?} row")]
    MissingRow { op: String, field: String },
    #[error("field {field:?}: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: String,
        found: String,
    },
    #[error("field {field:?}: {reason}")]
    InvalidValue { field: String, reason: String },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(field: &str, expected: &str, v: &Value) -> DecodeError {
    let (field, expected, found) = (
        field.to_string(),
        expected.to_string(),
        json_type(v).to_string(),
    );
    DecodeError::WrongType {
        field,
        expected,
        found,
    }
}

fn is_placeholder(ty: &Ty, v: &Value) -> bool {
    match (ty, v) {
        (Ty::Bytes, Value::String(s)) => b64_decode(s).is_some_and(|b| b == UNAVAILABLE.as_bytes()),
        (_, Value::String(s)) => s == UNAVAILABLE,
        (Ty::Array(e), Value::Array(a)) if a.len() == 1 => is_placeholder(e, &a[0]),
        (Ty::Infer(_), Value::Array(a)) => a.len() == 1 && a[0] == UNAVAILABLE,
        (Ty::Array(e), Value::Array(a)) if matches!(**e, Ty::Int(_)) => {
            let mut bytes = UNAVAILABLE.bytes().map(|b| Value::from(b as i64));
            a.len() == UNAVAILABLE.len() && a.iter().all(|x| Some(x) == bytes.next().as_ref())
        }
        _ => false,
    }
}

/// One JSON value as Postgres text (`v` is not null).
fn pg_text(ty: &Ty, v: &Value, field: &str) -> Result<String, DecodeError> {
    let wrong = || wrong_type(field, ty.connect().0, v);
    let bad = |reason: &str| DecodeError::InvalidValue {
        field: field.into(),
        reason: reason.into(),
    };
    let int = || v.as_i64().ok_or_else(wrong);
    let string = || v.as_str().ok_or_else(wrong);
    let decimal = |b64: &str| {
        let b = b64_decode(b64).ok_or_else(|| bad("invalid base64"))?;
        (b.len() <= MAX_DECIMAL_BYTES)
            .then_some(b)
            .ok_or_else(|| bad("decimal too long"))
    };
    Ok(match (ty, v) {
        (Ty::Bool | Ty::Infer(_), Value::Bool(b)) => (if *b { "t" } else { "f" }).to_string(),
        (Ty::F32 | Ty::F64 | Ty::Infer(_), Value::Number(n)) => n.to_string(),
        (Ty::F32 | Ty::F64, Value::String(s))
            if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") =>
        {
            s.clone()
        }
        (Ty::Str(_) | Ty::Infer(_), Value::String(s)) => s.clone(),
        (Ty::Infer(_), v) => v.to_string(),
        (Ty::Int(bits), _) => {
            let n = int()?;
            let fits = match bits {
                8 => i8::try_from(n).is_ok(),
                16 => i16::try_from(n).is_ok(),
                32 => i32::try_from(n).is_ok(),
                _ => true,
            };
            if !fits {
                return Err(bad("integer out of range"));
            }
            n.to_string()
        }
        (Ty::Tstz, Value::String(s)) if matches!(s.as_str(), "infinity" | "-infinity") => s.clone(),
        (Ty::Tstz, _) => {
            let us =
                parse_iso_timestamp(string()?).ok_or_else(|| bad("not an ISO-8601 timestamp"))?;
            pg_timestamp(us, true)
        }
        (Ty::Timetz, _) => {
            let us =
                parse_time_with_offset(string()?).ok_or_else(|| bad("not an ISO-8601 time"))?;
            clock_text(us) + "+00"
        }
        (Ty::Bytes, _) => {
            let raw = b64_decode(string()?).ok_or_else(|| bad("invalid base64"))?;
            raw.iter().fold("\\x".to_string(), |mut o, b| {
                w!(o, "{b:02x}");
                o
            })
        }
        (Ty::Decimal(_, scale), _) => decimal_text(&decimal(string()?)?, *scale),
        (Ty::VarDec, Value::Object(m)) => {
            match (m.get("scale").and_then(Value::as_i64), m.get("value")) {
                (Some(scale), Some(Value::String(b))) if scale.abs() <= 16383 => {
                    decimal_text(&decimal(b)?, scale)
                }
                _ => return Err(wrong()),
            }
        }
        (Ty::Date, _) => pg_date(
            i32::try_from(int()?)
                .map_err(|_| bad("date out of range"))?
                .into(),
            "",
        ),
        (Ty::Time(unit), _) => {
            let n = int()?;
            let us = if *unit == 0 {
                n / 1000
            } else {
                n.saturating_mul(*unit)
            };
            if !(0..=DAY_US).contains(&us) {
                return Err(bad("time of day out of range"));
            }
            clock_text(us)
        }
        (Ty::Ts(1), _) if v.as_i64() == Some(TS_POS_INF) => "infinity".to_string(),
        (Ty::Ts(1), _) if v.as_i64() == Some(TS_NEG_INF) => "-infinity".to_string(),
        (Ty::Ts(0), _) => pg_timestamp(int()?.div_euclid(1000), false),
        (Ty::Ts(unit), _) => pg_timestamp(
            int()?
                .checked_mul(*unit)
                .ok_or_else(|| bad("out of range"))?,
            false,
        ),
        (Ty::Duration, _) => pg_interval(int()?),
        (Ty::Array(e), Value::Array(items)) => {
            let mut o = String::from("{");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                match item {
                    Value::Null => o.push_str("NULL"),
                    item => quote_array_elem(&mut o, &pg_text(e, item, field)?),
                }
            }
            o + "}"
        }
        (Ty::Any(_), Value::Object(_)) | (Ty::Any("map"), Value::Array(_)) => v.to_string(),
        _ => return Err(wrong()),
    })
}

/// An element of a Postgres array literal, quoted as Postgres' array output does.
fn quote_array_elem(o: &mut String, s: &str) {
    let special = |c: char| matches!(c, '"' | '\\' | '{' | '}' | ',') || c.is_ascii_whitespace();
    if !s.is_empty() && !s.eq_ignore_ascii_case("NULL") && !s.contains(special) {
        return o.push_str(s);
    }
    o.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
}

/// `{"schema": .., "payload": ..}` → (schema, payload); anything else is a bare payload.
fn split_envelope(v: Value) -> (Option<Value>, Value) {
    match v {
        Value::Object(mut m)
            if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") =>
        {
            let schema = m.remove("schema").filter(|s| !s.is_null());
            (schema, m.remove("payload").unwrap_or(Value::Null))
        }
        v => (None, v),
    }
}

/// A row struct field: name, type, optional, and the Postgres text form of its default.
type Field = (String, Ty, bool, Option<String>);

/// The row struct's fields in an envelope schema.
fn schema_fields(schema: &Value) -> Result<Vec<Field>, DecodeError> {
    let err = |s: &str| DecodeError::InvalidSchema(s.to_string());
    let fields = schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| err("no \"fields\""))?;
    let row = ["after", "before"].iter().find_map(|name| {
        let f = fields
            .iter()
            .find(|f| f.get("field").and_then(Value::as_str) == Some(name));
        f?.get("fields")?.as_array()
    });
    let row = row.ok_or_else(|| err("no \"after\" or \"before\" struct"))?;
    row.iter()
        .map(|f| {
            let name = f
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| err("a field without a name"))?;
            let optional = f.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let ty = Ty::parse(f)?;
            // A default that does not read as the field's type is ignored (not an error: it
            // only fills rows written before the column existed).
            let default = f
                .get("default")
                .filter(|v| !v.is_null())
                .and_then(|v| pg_text(&ty, v, name).ok());
            Ok((name.to_string(), ty, optional, default))
        })
        .collect()
}

/// Columns inferred from the rows' values (the first non-null value decides the type).
fn inferred_fields(rows: &[&Map<String, Value>]) -> Vec<Field> {
    let mut out: Vec<(String, Option<PgType>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (k, v) in rows.iter().flat_map(|r| r.iter()) {
        let t = match v {
            Value::Null => None,
            Value::Bool(_) => Some(PgType::Bool),
            Value::Number(n) if n.is_i64() => Some(PgType::Int8),
            Value::Number(_) => Some(PgType::Float8),
            Value::String(_) => Some(PgType::Text),
            _ => Some(PgType::Jsonb),
        };
        let i = *index.entry(k).or_insert_with(|| {
            out.push((k.clone(), None));
            out.len() - 1
        });
        out[i].1 = out[i].1.take().or(t);
    }
    let infer =
        |(n, t): (String, Option<PgType>)| (n, Ty::Infer(t.unwrap_or(PgType::Text)), true, None);
    out.into_iter().map(infer).collect()
}

/// The key's field names (`None` for no key, a null key or an empty object).
fn key_fields(key: Option<&[u8]>) -> Result<Option<HashSet<String>>, DecodeError> {
    let Some(k) = key.filter(|k| !k.trim_ascii().is_empty()) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_slice(k).map_err(|e| DecodeError::InvalidKey(e.to_string()))?;
    match split_envelope(v).1 {
        Value::Null => Ok(None),
        Value::Object(m) => Ok((!m.is_empty()).then(|| m.keys().cloned().collect())),
        other => Err(DecodeError::InvalidKey(format!(
            "key is a JSON {}",
            json_type(&other)
        ))),
    }
}

/// Decodes one Kafka message of a Debezium topic. `topic` is used for schema/table when the
/// source block lacks them ("<prefix>.<schema>.<table>"). `value == None` → Tombstone. c/u/r
/// events need a key (a JSON object, with or without schema envelope) whose fields are all in
/// the row: else MissingKey. d needs `before`, c/r/u need `after`.
pub fn decode(
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    decode_moved(topic, key, value, None)
}

/// [`decode`], with the message's `__debezium.oldkey` header, if any: a create event then
/// carries the old key's cells in `moved_from`.
pub fn decode_moved(
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    old_key: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    // JsonConverter reads an empty value as null, like a missing one.
    let Some(value) = value.filter(|v| !v.trim_ascii().is_empty()) else {
        return Ok(Decoded::Tombstone);
    };
    let v: Value =
        serde_json::from_slice(value).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let (schema, payload) = match split_envelope(v) {
        (_, Value::Null) => return Ok(Decoded::Tombstone),
        (schema, Value::Object(m)) => (schema, m),
        (_, other) => {
            return Err(DecodeError::NotAnEnvelope(format!(
                "payload is a JSON {}",
                json_type(&other)
            )))
        }
    };
    let op = match payload.get("op") {
        Some(Value::String(s)) => {
            Op::from_code(s).ok_or_else(|| DecodeError::UnknownOp(s.clone()))?
        }
        Some(other) => return Err(wrong_type("op", "string", other)),
        None => return Err(DecodeError::NotAnEnvelope("no \"op\" field".into())),
    };
    let src = match payload.get("source") {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => return Err(DecodeError::MissingSource("source".into())),
        Some(other) => return Err(wrong_type("source", "object", other)),
    };
    let mut from_topic = topic.rsplitn(3, '.').filter(|s| !s.is_empty());
    let (topic_table, topic_schema) = (from_topic.next(), from_topic.next());
    let topic_ok = from_topic.next().is_some();
    let name = |field: &str, fallback: Option<&str>| match src.get(field).and_then(Value::as_str) {
        Some(s) => Ok(s.to_string()),
        None => fallback
            .filter(|_| topic_ok)
            .map(str::to_string)
            .ok_or_else(|| DecodeError::MissingSource(field.into())),
    };
    let (schema_name, table) = (name("schema", topic_schema)?, name("table", topic_table)?);
    let src_int = |field: &str| match src.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| wrong_type(&format!("source.{field}"), "int64", v)),
    };
    let lsn = src_int("lsn")?.map_or(0, |l| l as u64);
    let commit_us = match src_int("ts_us")? {
        Some(us) => us,
        None => src_int("ts_ms")?
            .ok_or_else(|| DecodeError::MissingSource("ts_ms".into()))?
            .saturating_mul(1000),
    };
    let snapshot = match src.get("snapshot") {
        Some(Value::String(s)) => {
            let marks = [
                "true",
                "last",
                "first",
                "first_in_data_collection",
                "last_in_data_collection",
                "incremental",
            ];
            marks.contains(&s.as_str())
        }
        Some(Value::Bool(b)) => *b,
        _ => false,
    };
    if op == Op::Truncate {
        return Ok(Decoded::Truncate {
            schema: schema_name,
            table,
            lsn,
            commit_us,
        });
    }
    let row = |field: &str| match payload.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(wrong_type(field, "object", other)),
    };
    let (before, after) = (row("before")?, row("after")?);
    let (needed, main) = if op == Op::Delete {
        ("before", before)
    } else {
        ("after", after)
    };
    let Some(main) = main else {
        return Err(DecodeError::MissingRow {
            op: op.code().into(),
            field: needed.into(),
        });
    };
    let fields = match &schema {
        Some(s) => schema_fields(s)?,
        None => inferred_fields(
            &[Some(main), before, after]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        ),
    };
    let keys = key_fields(key)?;
    let names: HashSet<&str> = fields.iter().map(|f| f.0.as_str()).collect();
    match &keys {
        None if op != Op::Delete => return Err(DecodeError::MissingKey),
        Some(ks) if !ks.iter().all(|k| names.contains(k.as_str())) => {
            return Err(DecodeError::MissingKey)
        }
        _ => {}
    }
    let is_key = |n: &str| keys.as_ref().is_some_and(|ks| ks.contains(n));
    let cells = |r: Option<&Map<String, Value>>| -> Result<Option<Vec<Cell>>, DecodeError> {
        let Some(r) = r else { return Ok(None) };
        let cell = |(n, ty, _, _): &Field| match r.get(n) {
            None | Some(Value::Null) => Ok(Cell::Null),
            Some(v) if is_placeholder(ty, v) => Ok(Cell::UnchangedToast),
            Some(v) => Ok(Cell::Text(Bytes::from(pg_text(ty, v, n)?))),
        };
        fields.iter().map(cell).collect::<Result<_, _>>().map(Some)
    };
    let (before, after) = (cells(before)?, cells(after)?);
    let moved_from = match old_key.filter(|k| op == Op::Create && !k.trim_ascii().is_empty()) {
        None => None,
        Some(k) => {
            let v: Value =
                serde_json::from_slice(k).map_err(|e| DecodeError::InvalidKey(e.to_string()))?;
            match split_envelope(v).1 {
                Value::Object(m)
                    if keys
                        .as_ref()
                        .is_some_and(|ks| ks.iter().all(|k| m.contains_key(k))) =>
                {
                    cells(Some(&m))?
                }
                _ => {
                    return Err(DecodeError::InvalidKey(format!(
                        "{OLD_KEY_HEADER} lacks the key's fields"
                    )))
                }
            }
        }
    };
    let column = |(n, ty, optional, default): &Field| Column {
        name: n.clone(),
        pg_type: ty.pg_type(),
        nullable: if schema.is_some() {
            *optional
        } else {
            !is_key(n)
        },
        is_key: is_key(n),
        added_default: default.clone(),
    };
    let columns = fields.iter().map(column).collect();
    Ok(Decoded::Change(Change {
        schema: schema_name,
        table,
        op,
        columns,
        before,
        after,
        lsn,
        commit_us,
        snapshot,
        moved_from,
    }))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::chtypes;
    use PgType::*;

    macro_rules! fx {
        ($name:literal) => {
            include_str!(concat!("../../../tests/fixtures/debezium/", $name))
        };
    }
    const TOPIC: &str = "PostgreSQL_server.public.customers";

    fn col(name: &str, pg_type: PgType, key: bool) -> Column {
        let (name, nullable) = (name.to_string(), !key);
        Column {
            name,
            pg_type,
            nullable,
            is_key: key,
            added_default: None,
        }
    }
    fn table(name: &str, columns: Vec<Column>) -> TableSchema {
        TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: name.into(),
            columns,
        }
    }
    fn customers() -> TableSchema {
        let c = |n| col(n, Text, false);
        table(
            "customers",
            vec![
                col("id", Int4, true),
                c("first_name"),
                c("last_name"),
                c("email"),
            ],
        )
    }
    fn opts(schemas: bool) -> EncodeOptions {
        let (prefix, database) = ("PostgreSQL_server".into(), "postgres".into());
        EncodeOptions {
            schemas,
            decimal: DecimalMode::Precise,
            prefix,
            database,
        }
    }
    fn src(lsn: u64, tx: u32, commit_us: i64, last: u64) -> SourceInfo {
        let snapshot = SnapshotFlag::False;
        SourceInfo {
            lsn,
            tx_id: Some(tx),
            commit_us,
            snapshot,
            last_commit_lsn: Some(last),
        }
    }
    fn t(s: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
    }
    fn change(d: Result<Decoded, DecodeError>) -> Change {
        match d {
            Ok(Decoded::Change(c)) => c,
            other => panic!("{other:?}"),
        }
    }
    /// The fixture without whitespace outside strings, `ts_ns` nanoseconds zeroed (we have µs).
    fn minified(s: &str, ns: &str) -> String {
        let (mut out, mut in_str, mut esc) = (String::new(), false, false);
        for c in s.chars() {
            match c {
                _ if esc => esc = false,
                '\\' if in_str => esc = true,
                '"' => in_str = !in_str,
                c if c.is_whitespace() && !in_str => continue,
                _ => {}
            }
            out.push(c);
        }
        out.replace(ns, &format!("{}000", &ns[..ns.len() - 3]))
    }

    /// Encodes one value of `ty` in a create event with schemas and decodes it back.
    fn round_trip(ty: &PgType, cell: Cell, mode: DecimalMode) -> (Column, Cell, u64) {
        let tb = table(
            "t",
            vec![col("id", Int4, true), col("v", ty.clone(), false)],
        );
        let o = EncodeOptions {
            decimal: mode,
            ..opts(true)
        };
        let mut st = EncodeStats::default();
        let (_, c) = create_and_decode(&tb, &[t("1"), cell], &o, &mut st);
        (
            c.columns[1].clone(),
            c.after.unwrap()[1].clone(),
            st.unrepresentable,
        )
    }

    /// A create event of `row` in table `t` as the Kafka sink writes it (the value), and what
    /// the Kafka source decodes from it.
    fn create_and_decode(
        tb: &TableSchema,
        row: &[Cell],
        o: &EncodeOptions,
        st: &mut EncodeStats,
    ) -> (String, Change) {
        let key = encode_key(tb, row, o, st).unwrap();
        let v = encode_change(tb, Op::Create, None, Some(row), &src(1, 1, 0, 0), 0, o, st);
        let c = change(decode("p.public.t", Some(&key), Some(&v)));
        (String::from_utf8(v).unwrap(), c)
    }

    /// A column added with a default carries it as the Connect schema's default value, and
    /// the Kafka source gives it back to the sink (rows written before the column existed
    /// read it in ClickHouse, as in Postgres).
    #[test]
    fn a_column_default_travels_in_the_schema() {
        let mut tier = col("tier", Int4, false);
        tier.added_default = Some("1".into());
        let mut label = col("label", Text, false);
        label.added_default = Some("it's".into());
        let mut flag = col("flag", Bool, false);
        flag.added_default = Some("t".into());
        let tb = table("t", vec![col("id", Int4, true), tier, label, flag]);
        let mut st = EncodeStats::default();
        let row = [t("1"), t("7"), t("x"), t("f")];
        let (text, c) = create_and_decode(&tb, &row, &opts(true), &mut st);
        assert!(
            text.contains(r#"{"type":"int32","optional":true,"default":1,"field":"tier"}"#),
            "{text}"
        );
        let defaults: Vec<Option<&str>> = c
            .columns
            .iter()
            .map(|c| c.added_default.as_deref())
            .collect();
        assert_eq!(defaults, [None, Some("1"), Some("it's"), Some("t")]);
        // Without schemas there is nothing to carry it.
        let (_, c) = create_and_decode(&tb, &row, &opts(false), &mut st);
        assert!(c.columns.iter().all(|c| c.added_default.is_none()));
    }

    /// The TSV field ClickHouse receives for `cell` in a column of Postgres type `ty`.
    fn ch(ty: &PgType, cell: &Cell) -> String {
        let caps = chtypes::ServerCaps::from_version("24.8");
        let json_as = crate::chtypes::JsonAs::String;
        let c = chtypes::map_column(&col("v", ty.clone(), false), &caps, json_as);
        let mut out = Vec::new();
        chtypes::encode_field(&mut out, &c, cell, &mut chtypes::EncodeStats::default());
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn every_type_round_trips_to_the_same_clickhouse_value() {
        let arr = |t: PgType| Array(Box::new(t));
        #[rustfmt::skip]
        let cases: Vec<(PgType, &str, PgType)> = vec![
            (Bool, "t", Bool),
            (Bool, "f", Bool),
            (Int2, "-32768", Int2),
            (Int4, "2147483647", Int4),
            (Int8, "-9223372036854775808", Int8),
            (Float4, "3.14", Float4),
            (Float8, "-1.5e-07", Float8),
            (Float8, "NaN", Float8),
            (Float8, "-Infinity", Float8),
            (Numeric(Some((5, 2))), "1.50", Numeric(Some((5, 2)))),
            (Numeric(Some((5, 2))), "-1.50", Numeric(Some((5, 2)))),
            (
                Numeric(Some((38, 10))),
                "-1234567890123456789012345678.0123456789",
                Numeric(Some((38, 10))),
            ),
            (Numeric(Some((3, 0))), "0", Numeric(Some((3, 0)))),
            (Numeric(None), "10.1111", Numeric(None)),
            (Numeric(None), "-0.5", Numeric(None)),
            (Text, "it's \"q\"\t\\ ü", Text),
            (Bytea, "\\x00ff0a", Bytea),
            (Date, "2024-01-02", Date),
            (Date, "0044-03-15 BC", Date),
            (Time, "03:04:05.5", Time),
            (Time, "24:00:00", Time),
            (TimeTz, "03:04:05.5+00", TimeTz),
            (Timestamp, "2024-01-02 03:04:05.123456", Timestamp),
            (Timestamp, "1969-12-31 23:59:59.999999", Timestamp),
            (Timestamp, "infinity", Timestamp),
            (TimestampTz, "2024-01-02 03:04:05.5+00", TimestampTz),
            (TimestampTz, "2024-01-02 08:34:05+05:30", TimestampTz),
            (TimestampTz, "21016-11-04 06:51:30+00", TimestampTz),
            (TimestampTz, "0044-03-15 12:00:00+00 BC", TimestampTz),
            (TimestampTz, "-infinity", TimestampTz),
            (Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", Uuid),
            (Json, "{\"a\": [1, 2]}", Jsonb),
            (Jsonb, "{\"a\": \"b\"}", Jsonb),
            (Enum("mood".into()), "happy", Text),
            (Other("inet".into()), "10.0.0.1/8", Text),
            (arr(Int4), "{1,NULL,3}", arr(Int4)),
            (
                arr(Text),
                r#"{"a b",c,NULL,"\"q\"","NULL","","x\\y"}"#,
                arr(Text),
            ),
            (arr(Bytea), r#"{"\\x00ff",NULL}"#, arr(Bytea)),
            (
                arr(TimestampTz),
                r#"{"2024-01-02 03:04:05+00",NULL}"#,
                arr(TimestampTz),
            ),
            (
                arr(Numeric(Some((5, 2)))),
                "{1.50,-2.00}",
                arr(Numeric(Some((5, 2)))),
            ),
            (arr(Date), "{2024-01-02}", arr(Date)),
            (arr(Bool), "{t,f,NULL}", arr(Bool)),
            (arr(Float8), "{1.5,NaN}", arr(Float8)),
        ];
        for (ty, text, back) in &cases {
            let (c, cell, unrepresentable) = round_trip(ty, t(text), DecimalMode::Precise);
            assert_eq!((&c.pg_type, unrepresentable), (back, 0), "{ty:?} {text}");
            let (got, want) = (ch(ty, &cell), ch(ty, &t(text)));
            match (got.parse::<f64>(), want.parse::<f64>()) {
                // Floats may come back spelled differently (`1e-7` for `1e-07`).
                (Ok(a), Ok(b)) if matches!(ty, Float4 | Float8) => {
                    assert!(a == b || a.is_nan() && b.is_nan())
                }
                _ => assert_eq!(got, want, "{ty:?} {text}"),
            }
            if matches!(
                ty,
                Numeric(Some(_)) | Bytea | Date | Time | Timestamp | Text
            ) {
                assert_eq!(cell, t(text), "exact text for {ty:?}");
            }
            let (_, null, _) = round_trip(ty, Cell::Null, DecimalMode::Precise);
            assert_eq!(null, Cell::Null, "{ty:?}");
        }
    }

    #[test]
    fn lossy_types_come_back_equivalent() {
        let back = |ty: PgType, s| round_trip(&ty, t(s), DecimalMode::Precise).1;
        // Debezium strips trailing zeros of unconstrained numerics (VariableScaleDecimal).
        assert_eq!(back(Numeric(None), "1.50"), t("1.5"));
        assert_eq!(back(TimeTz, "13:51:30.123789+02"), t("11:51:30.123789+00"));
        // MicroDuration: months are 365.25/12 days (Debezium's value for P1Y2M3DT4H5M6.78S).
        assert_eq!(
            parse_interval_micros("1 year 2 mons 3 days 04:05:06.78"),
            Some(37091106780000)
        );
        assert_eq!(
            back(Interval, "1 year 2 mons 3 days 04:05:06.78"),
            t("429 days 07:05:06.78")
        );
        assert_eq!(back(Interval, "-04:05:06"), t("-04:05:06"));
        assert_eq!(back(Interval, "1 day"), t("1 day"));
        assert_eq!(back(Interval, "1 year"), t("365 days 06:00:00"));
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

    #[test]
    fn numeric_nan_by_decimal_mode() {
        let ty = Numeric(Some((5, 2)));
        assert_eq!(
            round_trip(&ty, t("NaN"), DecimalMode::Precise).1,
            Cell::Null
        );
        assert_eq!(round_trip(&ty, t("NaN"), DecimalMode::Precise).2, 1);
        let (c, cell, n) = round_trip(&ty, t("NaN"), DecimalMode::String);
        assert_eq!((c.pg_type, cell, n), (Text, t("NAN"), 0));
        let (c, cell, _) = round_trip(&ty, t("-Infinity"), DecimalMode::Double);
        assert_eq!((c.pg_type, cell), (Float8, t("-Infinity")));
        assert_eq!(round_trip(&ty, t("1.50"), DecimalMode::Double).1, t("1.5"));
        assert_eq!(round_trip(&Date, t("infinity"), DecimalMode::Precise).2, 1);
        assert_eq!(
            round_trip(&Int4, t("x"), DecimalMode::Precise).1,
            Cell::Null
        );
    }

    #[test]
    fn unchanged_toast_uses_the_placeholder() {
        let cols = [
            ("s", Text),
            ("b", Bytea),
            ("i", Int4),
            ("a", Array(Box::new(Text))),
            ("ia", Array(Box::new(Int4))),
        ];
        let mut columns = vec![col("id", Int4, true)];
        columns.extend(cols.iter().map(|(n, ty)| col(n, ty.clone(), false)));
        let tb = table("t", columns);
        let mut row = vec![t("1")];
        row.extend(cols.iter().map(|_| Cell::UnchangedToast));
        let mut st = EncodeStats::default();
        let v = encode_change(
            &tb,
            Op::Update,
            None,
            Some(&row),
            &src(1, 1, 0, 0),
            0,
            &opts(false),
            &mut st,
        );
        let after = &serde_json::from_slice::<Value>(&v).unwrap()["after"];
        assert_eq!(after["s"], UNAVAILABLE);
        assert_eq!(after["b"], "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==");
        assert_eq!((&after["i"], st.unrepresentable), (&Value::Null, 1));
        assert_eq!(after["a"], serde_json::json!([UNAVAILABLE]));
        assert_eq!(
            after["ia"].as_array().map(Vec::len),
            Some(UNAVAILABLE.len())
        );
        for schemas in [true, false] {
            let o = opts(schemas);
            let v = encode_change(
                &tb,
                Op::Update,
                None,
                Some(&row),
                &src(1, 1, 0, 0),
                0,
                &o,
                &mut st,
            );
            let key = encode_key(&tb, &row, &o, &mut st).unwrap();
            let c = change(decode("p.public.t", Some(&key), Some(&v)));
            let after = c.after.unwrap();
            let get = |n: &str| &after[c.columns.iter().position(|c| c.name == n).unwrap()];
            assert_eq!(
                [get("s"), get("a"), get("i")],
                [&Cell::UnchangedToast, &Cell::UnchangedToast, &Cell::Null]
            );
            if schemas {
                assert_eq!(
                    [get("b"), get("ia")],
                    [&Cell::UnchangedToast, &Cell::UnchangedToast]
                );
            }
        }
    }

    #[test]
    fn encodes_the_documented_events_field_by_field() {
        let (tb, mut st) = (customers(), EncodeStats::default());
        let anne = [t("1"), t("Anne"), t("Kretchmar"), t("annek@noanswer.org")];
        let create_src = src(24023128, 555, 1559033904863123, 24023119);
        let now = 1559033904863841;
        let create = |o: &EncodeOptions, st: &mut EncodeStats| {
            encode_change(&tb, Op::Create, None, Some(&anne), &create_src, now, o, st)
        };
        let ns = "1559033904863841257";
        let got = String::from_utf8(create(&opts(true), &mut st)).unwrap();
        assert_eq!(got, minified(fx!("create.schema.json"), ns));
        let got = String::from_utf8(create(&opts(false), &mut st)).unwrap();
        assert_eq!(got, minified(fx!("create.json"), ns));
        let expected = concat!(
            r#"{"before":null,"after":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"},"#,
            r#""source":{"version":"2.7.4.Final","connector":"postgresql","name":"PostgreSQL_server","ts_ms":1559033904863,"#,
            r#""snapshot":"false","db":"postgres","sequence":"[\"24023119\",\"24023128\"]","ts_us":1559033904863123,"#,
            r#""ts_ns":1559033904863123000,"schema":"public","table":"customers","txId":555,"lsn":24023128,"xmin":null},"#,
            r#""transaction":null,"op":"c","ts_ms":1559033904863,"ts_us":1559033904863841,"ts_ns":1559033904863841000}"#
        );
        assert_eq!(got, expected);
        let key = |o| {
            String::from_utf8(encode_key(&tb, &anne, &o, &mut EncodeStats::default()).unwrap())
                .unwrap()
        };
        assert_eq!(key(opts(true)), minified(fx!("key.schema.json"), "0000"));
        assert_eq!(key(opts(false)), r#"{"id":1}"#);

        let old = [t("1"), Cell::Null, Cell::Null, Cell::Null];
        let del_src = src(46523128, 557, 1559033904863852, 24023160);
        let got = encode_change(
            &tb,
            Op::Delete,
            Some(&old),
            None,
            &del_src,
            1465581902461496,
            &opts(true),
            &mut st,
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            minified(fx!("delete.schema.json"), "1465581902461496187")
        );
        let tr_src = src(46523200, 558, 1559033904863112, 46523128);
        let got = encode_truncate(&tb, &tr_src, 1559033904961654, &opts(true));
        assert_eq!(
            String::from_utf8(got).unwrap(),
            minified(fx!("truncate.schema.json"), "1559033904961654789")
        );
        assert_eq!(st.unrepresentable, 0);
        // A required (NOT NULL) field never carries null: Debezium's fallback value instead.
        let strict = table(
            "s",
            vec![
                col("id", Int4, true),
                Column {
                    nullable: false,
                    ..col("n", Text, false)
                },
            ],
        );
        let v = encode_change(
            &strict,
            Op::Delete,
            Some(&[t("1"), Cell::Null]),
            None,
            &del_src,
            0,
            &opts(false),
            &mut st,
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&v).unwrap()["before"]["n"],
            ""
        );
    }

    #[test]
    fn a_create_with_the_old_key_header_carries_the_moved_from_cells() {
        let create = fx!("create.schema.json").as_bytes();
        let key = Some(fx!("key.schema.json").as_bytes());
        let old = br#"{"id": 7}"#;
        let c = change(decode_moved(TOPIC, key, Some(create), Some(old)));
        assert_eq!(
            c.moved_from,
            Some(vec![t("7"), Cell::Null, Cell::Null, Cell::Null])
        );
        assert_eq!(change(decode(TOPIC, key, Some(create))).moved_from, None);
        // An old key without the key's fields is refused, not guessed.
        assert!(matches!(
            decode_moved(TOPIC, key, Some(create), Some(br#"{"other": 1}"#)),
            Err(DecodeError::InvalidKey(_))
        ));
    }

    #[test]
    fn decodes_the_fixtures() {
        let (k_schema, k_plain) = (
            Some(fx!("key.schema.json").as_bytes()),
            Some(fx!("key.json").as_bytes()),
        );
        let text_cols = ["first_name", "last_name", "email"].map(|n| col(n, Text, false));
        let with_schema: Vec<Column> = [col("id", Int4, true)]
            .into_iter()
            .chain(text_cols)
            .collect();
        let anne = vec![t("1"), t("Anne"), t("Kretchmar"), t("annek@noanswer.org")];
        let c = change(decode(
            TOPIC,
            k_schema,
            Some(fx!("create.schema.json").as_bytes()),
        ));
        assert_eq!(
            (c.schema.as_str(), c.table.as_str(), c.op),
            ("public", "customers", Op::Create)
        );
        assert_eq!(
            (&c.columns, &c.before, &c.after),
            (&with_schema, &None, &Some(anne))
        );
        assert_eq!(
            (c.lsn, c.commit_us, c.snapshot),
            (24023128, 1559033904863123, false)
        );
        // Without schemas: inferred types, fields in name order.
        let c = change(decode(TOPIC, k_plain, Some(fx!("create.json").as_bytes())));
        let names: Vec<&str> = c.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["email", "first_name", "id", "last_name"]);
        assert_eq!(
            c.columns[2],
            Column {
                nullable: false,
                ..col("id", Int8, true)
            }
        );
        assert_eq!(c.after.unwrap()[0], t("annek@noanswer.org"));

        let c = change(decode(
            TOPIC,
            k_schema,
            Some(fx!("update.schema.json").as_bytes()),
        ));
        assert_eq!(
            (c.op, c.before, c.after.unwrap()[1].clone()),
            (Op::Update, None, t("Anne Marie"))
        );
        let c = change(decode(TOPIC, k_plain, Some(fx!("update.json").as_bytes())));
        assert_eq!(
            c.before,
            Some(vec![Cell::Null, Cell::Null, t("1"), Cell::Null])
        );

        let c = change(decode(
            TOPIC,
            k_schema,
            Some(fx!("delete.schema.json").as_bytes()),
        ));
        assert_eq!(
            (c.op, c.after, c.before),
            (
                Op::Delete,
                None,
                Some(vec![t("1"), Cell::Null, Cell::Null, Cell::Null])
            )
        );
        let c = change(decode(TOPIC, None, Some(fx!("delete.json").as_bytes())));
        assert_eq!(
            (c.columns.len(), c.before, c.lsn),
            (1, Some(vec![t("1")]), 46523128)
        );
        assert_eq!(decode(TOPIC, k_plain, None), Ok(Decoded::Tombstone));
        for v in [fx!("truncate.schema.json"), fx!("truncate.json")] {
            let (schema, table) = ("public".into(), "customers".into());
            let expected = Decoded::Truncate {
                schema,
                table,
                lsn: 46523200,
                commit_us: 1559033904863112,
            };
            assert_eq!(decode(TOPIC, None, Some(v.as_bytes())), Ok(expected));
        }
    }

    #[test]
    fn decodes_every_documented_type() {
        let c = change(decode(
            "PostgreSQL_server.public.all_types",
            Some(b"{\"id\":1}"),
            Some(fx!("types.schema.json").as_bytes()),
        ));
        let arr = |t: PgType| Array(Box::new(t));
        #[rustfmt::skip]
        let expected: Vec<(&str, PgType, Cell)> = vec![
            ("id", Int4, t("1")),
            ("b", Bool, t("t")),
            ("i2", Int2, t("1")),
            ("i8", Int8, t("1234567890123")),
            ("f4", Float4, t("3.14")),
            ("f8", Float8, t("1.5")),
            ("d", Numeric(Some((3, 2))), t("1.10")),
            ("n", Numeric(None), t("10.1111")),
            ("t", Text, t("some text")),
            ("ba", Bytea, t("\\x010203")),
            ("dt", Date, t("2016-11-04")),
            ("ti", Time, t("13:51:30")),
            ("ttz", TimeTz, t("11:51:30.123789+00")),
            ("ts", Timestamp, t("2018-06-20 15:13:16.945104")),
            ("tz", TimestampTz, t("2016-11-04 11:51:30.123456+00")),
            ("it", Interval, t("429 days 07:05:06.78")),
            ("u", Uuid, t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
            ("j", Jsonb, t("{\"bar\": \"baz\"}")),
            ("jb", Jsonb, t("{\"bar\": \"baz\"}")),
            ("e", Text, t("happy")),
            ("ia", arr(Int4), t("{1,NULL,3}")),
            ("ta", arr(Text), t("{\"a b\",c,NULL}")),
            ("toast", Text, Cell::UnchangedToast),
        ];
        let after = c.after.unwrap();
        assert_eq!(c.columns.len(), expected.len());
        for ((col, cell), (name, ty, value)) in c.columns.iter().zip(&after).zip(&expected) {
            assert_eq!((col.name.as_str(), &col.pg_type, cell), (*name, ty, value));
            assert_eq!((col.nullable, col.is_key), (*name != "id", *name == "id"));
        }
    }

    #[test]
    fn poisoned_messages_give_the_right_error() {
        let key = Some(&b"{\"id\":1}"[..]);
        let create = fx!("create.schema.json");
        let dec = |k: Option<&[u8]>, v: &str| decode(TOPIC, k, Some(v.as_bytes()));
        assert!(matches!(
            dec(key, "{not json"),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            dec(key, &"[".repeat(100_000)),
            Err(DecodeError::InvalidJson(_))
        ));
        assert_eq!(
            dec(key, &create.replace("\"op\": \"c\"", "\"op\": \"x\"")),
            Err(DecodeError::UnknownOp("x".into()))
        );
        assert_eq!(dec(None, create), Err(DecodeError::MissingKey));
        assert_eq!(dec(Some(b"null"), create), Err(DecodeError::MissingKey));
        assert_eq!(
            dec(Some(b"{\"nope\":1}"), create),
            Err(DecodeError::MissingKey)
        );
        assert!(matches!(
            dec(Some(b"[1]"), create),
            Err(DecodeError::InvalidKey(_))
        ));
        let wrong = DecodeError::WrongType {
            field: "id".into(),
            expected: "int32".into(),
            found: "string".into(),
        };
        assert_eq!(
            dec(key, &create.replace("\"id\": 1,", "\"id\": \"1\",")),
            Err(wrong)
        );
        assert!(matches!(
            dec(key, "[1,2]"),
            Err(DecodeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            dec(key, r#"{"schema":{},"payload":5}"#),
            Err(DecodeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            dec(key, r#"{"after":{"id":1},"source":{"ts_ms":1}}"#),
            Err(DecodeError::NotAnEnvelope(_))
        ));
        let no_before = fx!("delete.json").replace("\"before\": {", "\"was\": {");
        assert_eq!(
            dec(key, &no_before),
            Err(DecodeError::MissingRow {
                op: "d".into(),
                field: "before".into()
            })
        );
        assert_eq!(
            dec(key, r#"{"op":"c","after":{"id":1}}"#),
            Err(DecodeError::MissingSource("source".into()))
        );
        let bare = r#"{"op":"c","after":{"id":1},"source":{"ts_ms":5}}"#;
        assert_eq!(
            decode("x", key, Some(bare.as_bytes())),
            Err(DecodeError::MissingSource("schema".into()))
        );
        let c = change(decode("p.s.t", key, Some(bare.as_bytes())));
        assert_eq!(
            (c.schema.as_str(), c.table.as_str(), c.commit_us),
            ("s", "t", 5000)
        );
        let bad_b64 = fx!("types.schema.json").replace("\"AQID\"", "\"A!ID\"");
        assert!(matches!(
            dec(key, &bad_b64),
            Err(DecodeError::InvalidValue { .. })
        ));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        #[rustfmt::skip]
        let tokens = [
            "{", "}", "[", "]", ",", ":", "\"op\"", "\"c\"", "\"d\"", "\"t\"", "null", "1",
            "-1e999", "\"AA==\"", "\"schema\"", "\"payload\"", "\"source\"", "\"after\"",
            "\"before\"", "\"fields\"", "\"type\"", "\"int32\"", "\"array\"", "\"items\"",
            "\"struct\"", "\"field\"", "\"id\"", "\"scale\"", "\"99999999999\"", "\"name\"",
            "\"io.debezium.time.ZonedTimestamp\"", "\"org.apache.kafka.connect.data.Decimal\"",
            "\"+99999-99-99T99:99Z\"", "\"__debezium_unavailable_value\"",
        ];
        let fixtures = [
            fx!("create.schema.json"),
            fx!("types.schema.json"),
            fx!("update.json"),
            fx!("delete.schema.json"),
            fx!("truncate.json"),
        ];
        let keys: [Option<&[u8]>; 3] = [None, Some(b"{\"id\":1}"), Some(b"{\"i\":[")];
        for i in 0..20_000 {
            let mut v: Vec<u8> = if i % 2 == 0 {
                fixtures[rnd(fixtures.len())].as_bytes().to_vec()
            } else {
                (0..rnd(40))
                    .flat_map(|_| tokens[rnd(tokens.len())].bytes())
                    .collect()
            };
            for _ in 0..rnd(4) {
                let at = rnd(v.len());
                match rnd(3) {
                    0 => v.truncate(at),
                    1 => v
                        .splice(at..at, tokens[rnd(tokens.len())].bytes())
                        .for_each(drop),
                    _ => v.get_mut(at).into_iter().for_each(|b| *b = rnd(256) as u8),
                }
            }
            let _ = decode("a.b.c", keys[rnd(3)], Some(&v));
        }
    }

    #[test]
    fn wide_messages_decode_in_linear_time() {
        let fields: Vec<String> = (0..200_000).map(|i| format!("\"c{i}\":{i}")).collect();
        let row = fields.join(",");
        let v = format!(r#"{{"op":"c","after":{{{row}}},"source":{{"ts_ms":1}}}}"#);
        let c = change(decode(
            "p.s.t",
            Some(format!("{{{row}}}").as_bytes()),
            Some(v.as_bytes()),
        ));
        assert_eq!(c.columns.len(), 200_000);
    }

    #[test]
    fn topic_names_are_sanitized_like_debezium() {
        assert_eq!(
            topic_name("PostgreSQL_server", "public", "customers"),
            TOPIC
        );
        assert_eq!(topic_name("p", "My Schema", "t\u{e9}"), "p.My_Schema.t_");
        assert_eq!(topic_name("p", "s", &"x".repeat(300)).len(), 249);
        assert_eq!(Op::from_code("t"), Some(Op::Truncate));
        assert_eq!(Op::from_code("m"), None);
    }
}
