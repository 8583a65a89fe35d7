//! Decoding: one Kafka message of a Debezium topic (key, value and the old-key header) → a
//! `Decoded` change whose cells are Postgres text, typed by the envelope's schema or, without
//! one, inferred from the JSON values.
//!
//! Must never: panic on any input (it is fuzzed), or guess: a message it cannot apply is a
//! `DecodeError`, whose text goes into the dead-letter header.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::conversion::{b64_decode, clock_text, decimal_text};
use super::conversion::{parse_time_with_offset, pg_date, pg_interval, pg_timestamp};
use super::field_type::Ty;
use super::{Change, DecodeError, Decoded, Op, OLD_KEY_HEADER};
use super::{DAY_US, MAX_DECIMAL_BYTES, TS_NEG_INF, TS_POS_INF, UNAVAILABLE};
use crate::pgoutput::Cell;
use crate::schema::{Column, PgType};
use crate::time::parse_rfc3339_micros;

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
                parse_rfc3339_micros(string()?).ok_or_else(|| bad("not an ISO-8601 timestamp"))?;
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
/// source block lacks them (`"<prefix>.<schema>.<table>"`). `value == None` → Tombstone. c/u/r
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
        renamed_from: None,
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
    use crate::debezium::tests::{change, col, t, TOPIC};
    use PgType::*;

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
}
