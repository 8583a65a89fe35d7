//! Encoding: a Postgres change (rows of cells in their text form) → a Debezium change event,
//! its Kafka key and value, with the Connect schema (`schemas.enable=true`) or without. JSON
//! is written by hand: field order is part of the format (serde_json's map sorts).
//!
//! Must never: read a clock (the caller passes `now_us`), or silently change a value: what
//! Debezium's types cannot carry becomes `null` (the type's fallback when the field is
//! required) and is counted in `EncodeStats::unrepresentable`.

use std::fmt::Write as _;

use super::conversion::{b64_quoted, clock_text, decimal_parts, iso_timestamp};
use super::conversion::{parse_interval_micros, parse_time_with_offset, twos_complement};
use super::field_type::Ty;
use super::{EncodeOptions, EncodeStats, Op, SnapshotFlag, SourceInfo};
use super::{DAY_US, DEBEZIUM_VERSION, TS_NEG_INF, TS_POS_INF, UNAVAILABLE};
use crate::pgoutput::Cell;
use crate::pgtext::ArrayElem;
use crate::pgtext::{parse_array, parse_bytea_hex, parse_date_days, parse_timestamp_micros};
use crate::schema::{Column, TableSchema};
use crate::time::parse_clock;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium::tests::{col, opts, src, t, table};
    use crate::schema::PgType::*;
    use serde_json::Value;

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
}
