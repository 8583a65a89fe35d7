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
//!
//! The files: `field_type` (a field's Debezium type, both directions), `encoding` (a Postgres
//! change → Debezium JSON with its Connect schema), `conversion` (Postgres text values ↔
//! Debezium's encodings of them) and `decoding` (Debezium JSON → a change).

use super::pgoutput::Cell;
use super::schema::Column;

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

/// A fixture of `tests/fixtures/debezium/`, for the tests of every file.
#[cfg(test)]
macro_rules! fx {
    ($name:literal) => {
        include_str!(concat!("../../../../tests/fixtures/debezium/", $name))
    };
}

mod conversion;
mod decoding;
mod encoding;
mod field_type;

pub use decoding::{decode, decode_moved};
pub use encoding::{encode_change, encode_key, encode_truncate};

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

#[cfg(test)]
mod tests {
    //! The helpers shared by the tests of every file, and the tests that cross files: a value
    //! encoded and decoded back.

    use bytes::Bytes;
    use serde_json::Value;

    use super::conversion::parse_interval_micros;
    use super::*;
    use crate::chtypes;
    use crate::schema::{PgType, TableSchema};
    use PgType::*;

    pub(super) const TOPIC: &str = "PostgreSQL_server.public.customers";

    pub(super) fn col(name: &str, pg_type: PgType, key: bool) -> Column {
        let (name, nullable) = (name.to_string(), !key);
        Column {
            name,
            pg_type,
            nullable,
            is_key: key,
            added_default: None,
            renamed_from: None,
        }
    }
    pub(super) fn table(name: &str, columns: Vec<Column>) -> TableSchema {
        TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: name.into(),
            columns,
            ..Default::default()
        }
    }
    pub(super) fn opts(schemas: bool) -> EncodeOptions {
        let (prefix, database) = ("PostgreSQL_server".into(), "postgres".into());
        EncodeOptions {
            schemas,
            decimal: DecimalMode::Precise,
            prefix,
            database,
        }
    }
    pub(super) fn src(lsn: u64, tx: u32, commit_us: i64, last: u64) -> SourceInfo {
        let snapshot = SnapshotFlag::False;
        SourceInfo {
            lsn,
            tx_id: Some(tx),
            commit_us,
            snapshot,
            last_commit_lsn: Some(last),
        }
    }
    pub(super) fn t(s: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
    }
    pub(super) fn change(d: Result<Decoded, DecodeError>) -> Change {
        match d {
            Ok(Decoded::Change(c)) => c,
            other => panic!("{other:?}"),
        }
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

    /// The TSV field ClickHouse receives for `cell` in a column of Postgres type `ty`.
    fn ch(ty: &PgType, cell: &Cell) -> String {
        let caps = chtypes::ServerCaps::from_version("24.8");
        let json_as = crate::chtypes::JsonAs::String;
        let c = chtypes::map_column(&col("v", ty.clone(), false), &caps, json_as);
        let mut out = Vec::new();
        chtypes::encode_field(&mut out, &c, cell, &mut chtypes::EncodeStats::default());
        String::from_utf8_lossy(&out).into_owned()
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
