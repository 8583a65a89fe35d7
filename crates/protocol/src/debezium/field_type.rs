//! The field types of both directions: `Ty`, a field's Debezium type (a Kafka Connect type
//! with its semantic name), from a Postgres column when encoding or from a JsonConverter
//! schema when decoding, and the Postgres type whose text form it round-trips.
//!
//! Must never: panic on a schema (decoding parses untrusted ones): a field type it cannot
//! read is a `DecodeError::InvalidSchema`.

use serde_json::Value;

use super::{DecimalMode, DecodeError, DECIMAL, ENUM, JSON, UUID};
use crate::schema::PgType;

/// A field's Debezium type: a Kafka Connect type with its semantic name.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ty {
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
    pub(super) fn of(t: &PgType, m: DecimalMode) -> Ty {
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
    pub(super) fn connect(&self) -> (&'static str, Option<&'static str>) {
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
    pub(super) fn parse(f: &Value) -> Result<Ty, DecodeError> {
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
    pub(super) fn pg_type(&self) -> PgType {
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
    pub(super) fn fallback(&self) -> &'static str {
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
