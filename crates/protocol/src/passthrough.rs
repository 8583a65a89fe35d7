//! The copy's passthrough: the select list of a snapshot chunk's `COPY (SELECT …) TO STDOUT`
//! that has Postgres write every row already in ClickHouse's TabSeparated form for the sink's
//! columns, `_version` and `_is_deleted` included, so that the copy hands the lines to the
//! sink as Postgres sent them: no parse into values, no encode (the same idea as a
//! `COPY (SELECT created_at AT TIME ZONE 'UTC' …) | clickhouse-client INSERT` by hand).
//!
//! Each column's SQL gives the value [`crate::chtypes::encode_field`] would write for it.
//! A row with a value the encoder would clamp or count (a date or timestamp outside
//! ClickHouse's range, a numeric NaN or infinity) is marked instead: its `_is_deleted` is 1,
//! and the copy reads that row again by key through the ordinary path, where the encoder
//! handles and counts it. A table with a column only tributary can encode (bytea, arrays)
//! or a key column whose text would change has no passthrough.
//!
//! Postgres's COPY text escapes backslash, `\b`, `\f`, `\n`, `\r`, `\t` and `\v`;
//! ClickHouse's TabSeparated reads each of them back to the same byte, so text goes through
//! as it is.
//!
//! Must never: give a value a ClickHouse value different from the one `encode_field`
//! writes for it, let a value the encoder would clamp or count through unmarked, or change
//! the text of a key column (the copy reads its next chunk's start from it).

use crate::chtypes::{ChColumn, Codec};
use crate::schema::{pg_ident, pg_literal, Column, PgType};

/// ClickHouse's DateTime64 range, as Postgres literals (see `chtypes`' `DT64_MIN`/`MAX`).
const DT64_LO: &str = "1900-01-01 00:00:00";
const DT64_HI: &str = "2299-12-31 23:59:59.999999";
/// Where float8 carries a timestamp's microseconds since the epoch exactly (with room).
const MICROS_LO: &str = "1900-01-01 00:00:00";
const MICROS_HI: &str = "2040-01-01 00:00:00";
/// Date32's range.
const D32_LO: &str = "1900-01-01";
const D32_HI: &str = "2299-12-31";

/// The select list (`expr, …, version, mark`) of a passthrough copy of a table with Postgres
/// columns `pg` and ClickHouse columns `ch` (one each, in order), its rows at `version`;
/// `None` when some column cannot pass through.
pub fn select_list(pg: &[Column], ch: &[ChColumn], version: u64) -> Option<String> {
    if pg.len() != ch.len() || pg.is_empty() {
        return None;
    }
    let mut exprs = Vec::with_capacity(pg.len() + 2);
    let mut marks = Vec::new();
    for (p, c) in pg.iter().zip(ch) {
        let ident = pg_ident(&p.name);
        let (value, mark) = column_sql(&ident, &p.pg_type, &c.codec)?;
        if p.is_key && value != ident {
            return None;
        }
        // Output names that cannot stand for a key in ORDER BY (an expression's own name
        // could be `timezone` or `case`, as a key column might be): each column's own.
        exprs.push(if value == ident {
            value
        } else {
            format!("{value} AS {ident}")
        });
        marks.extend(mark);
        // A NULL the ClickHouse column cannot hold: its default, written the ordinary way.
        if p.nullable && !c.nullable {
            marks.push(format!("{ident} IS NULL"));
        }
    }
    exprs.push(format!("{version} AS \"_version\""));
    exprs.push(if marks.is_empty() {
        "0 AS \"_is_deleted\"".to_string()
    } else {
        format!(
            "CASE WHEN {} THEN 1 ELSE 0 END AS \"_is_deleted\"",
            marks.join(" OR ")
        )
    });
    Some(exprs.join(", "))
}

/// Why a table with these columns is copied the ordinary way, for the log: the first column
/// that keeps it there; `None` when its copy passes through.
pub fn ordinary_because(pg: &[Column], ch: &[ChColumn]) -> Option<String> {
    if pg.len() != ch.len() {
        return Some("the sink's columns are not the table's".into());
    }
    pg.iter().zip(ch).find_map(|(p, c)| {
        let ident = pg_ident(&p.name);
        match column_sql(&ident, &p.pg_type, &c.codec) {
            None => Some(format!(
                "column `{}` ({}) is written by tributary's encoder",
                p.name, c.ch_type
            )),
            Some((value, _)) if p.is_key && value != ident => Some(format!(
                "key column `{}` ({}) would change its text",
                p.name, c.ch_type
            )),
            Some(_) => None,
        }
    })
}

/// One column's value in ClickHouse's text form and, when some values must take the
/// ordinary path, the condition that marks them (NULL counts as false).
fn column_sql(ident: &str, pg: &PgType, codec: &Codec) -> Option<(String, Option<String>)> {
    use PgType as P;
    let outside = |lo: &str, hi: &str, ty: &str| {
        Some(format!(
            "NOT ({ident} BETWEEN {}::{ty} AND {}::{ty})",
            pg_literal(lo),
            pg_literal(hi)
        ))
    };
    let tz = |t: &str| format!("{t}+00");
    Some(match (codec, pg) {
        // Postgres's text is the value's text: escaped alike (see the module's header).
        (Codec::Text, P::Array(_) | P::Bytea) => return None,
        (Codec::Text, _) => (ident.to_string(), None),
        (Codec::Number, P::Int2 | P::Int4 | P::Int8) => (ident.to_string(), None),
        (Codec::Float, P::Float4 | P::Float8) => (
            format!(
                "CASE WHEN {ident} = 'NaN' THEN 'nan' WHEN {ident} = 'Infinity' THEN 'inf' \
                 WHEN {ident} = '-Infinity' THEN '-inf' ELSE {ident}::text END"
            ),
            None,
        ),
        // NaN sorts above every number and the infinities (Postgres 14) beyond them: a
        // numeric(p, s) outside ±10^(p-s) is one of them. (Comparisons with constants: no
        // arithmetic per row.)
        (Codec::Decimal, P::Numeric(Some((p, sc)))) if p >= sc => {
            let bound = format!("1e{}", p - sc);
            (
                ident.to_string(),
                Some(format!("NOT ({ident} > -{bound} AND {ident} < {bound})")),
            )
        }
        (Codec::Bool { words }, P::Bool) => {
            let (t, f) = if *words { ("true", "false") } else { ("1", "0") };
            (format!("CASE {ident} WHEN true THEN '{t}' WHEN false THEN '{f}' END"), None)
        }
        (Codec::Date32, P::Date) => (ident.to_string(), outside(D32_LO, D32_HI, "date")),
        (Codec::DateDays, P::Date) => (
            format!(
                "CASE WHEN {ident} BETWEEN '0001-01-01'::date AND '9999-12-31'::date THEN {ident} - '1970-01-01'::date END"
            ),
            outside("0001-01-01", "9999-12-31", "date"),
        ),
        (Codec::DateTime64, P::TimestampTz) => (
            format!("{ident} AT TIME ZONE 'UTC'"),
            outside(&tz(DT64_LO), &tz(DT64_HI), "timestamptz"),
        ),
        (Codec::DateTime64, P::Timestamp) => {
            (ident.to_string(), outside(DT64_LO, DT64_HI, "timestamp"))
        }
        // Microseconds since the epoch through float8 (`date_part`; `extract` would be numeric
        // arithmetic per row, more of the source's CPU than it saves): exact while the
        // microseconds stay below 2^51 in magnitude (the epoch's seconds are m / 10^6 rounded
        // once, times 10^6 rounded once: under half a microsecond off), so only from 1900 to
        // 2040; the rest is marked. (The CASE keeps infinity from the int8 cast.)
        (Codec::TimestampMicros, P::TimestampTz | P::Timestamp) => {
            let (ty, lo, hi) = if *pg == P::TimestampTz {
                ("timestamptz", tz(MICROS_LO), tz(MICROS_HI))
            } else {
                ("timestamp", MICROS_LO.to_string(), MICROS_HI.to_string())
            };
            let inside = format!(
                "{ident} >= {}::{ty} AND {ident} < {}::{ty}",
                pg_literal(&lo),
                pg_literal(&hi)
            );
            (
                format!(
                    "CASE WHEN {inside} THEN round(date_part('epoch', {ident}) * 1000000)::int8 END"
                ),
                Some(format!("NOT ({inside})")),
            )
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chtypes::{map_table, JsonAs, ServerCaps};
    use crate::schema::TableSchema;

    fn col(name: &str, t: PgType, key: bool, nullable: bool) -> Column {
        crate::testing::column(name, t, nullable, key)
    }

    use crate::testing::table;

    fn list(s: &TableSchema, caps: &ServerCaps) -> Option<String> {
        let ch = map_table(s, caps, JsonAs::String);
        select_list(&s.columns, &ch, 42)
    }

    #[test]
    fn the_bench_table_passes_through_on_both_generations() {
        let s = table(vec![
            col("id", PgType::Int8, true, false),
            col("payload", PgType::Text, false, true),
            col("amount", PgType::Numeric(Some((12, 2))), false, true),
            col("created_at", PgType::TimestampTz, false, true),
        ]);
        let new = list(&s, &ServerCaps::from_version("26.9.1.1")).expect("passes through");
        assert!(new.starts_with("\"id\", \"payload\", \"amount\", \"created_at\" AT TIME ZONE 'UTC' AS \"created_at\", 42 AS \"_version\", CASE WHEN "), "{new}");
        assert!(
            new.contains("NOT (\"amount\" > -1e10 AND \"amount\" < 1e10)"),
            "{new}"
        );
        assert!(new.contains("NOT (\"created_at\" BETWEEN '1900-01-01 00:00:00+00'::timestamptz AND '2299-12-31 23:59:59.999999+00'::timestamptz)"), "{new}");
        // Legacy servers' Int64 microseconds, from 1900 to 2040.
        let old = list(&s, &ServerCaps::from_version("18.16.1")).expect("passes through");
        assert!(old.contains("CASE WHEN \"created_at\" >= '1900-01-01 00:00:00+00'::timestamptz AND \"created_at\" < '2040-01-01 00:00:00+00'::timestamptz THEN round(date_part('epoch', \"created_at\") * 1000000)::int8 END"), "{old}");
        let s = table(vec![
            col("id", PgType::Int8, true, false),
            col("day", PgType::Date, false, true),
        ]);
        let old = list(&s, &ServerCaps::from_version("18.16.1")).expect("passes through");
        assert!(
            old.contains("THEN \"day\" - '1970-01-01'::date END"),
            "{old}"
        );
        assert!(
            old.ends_with("THEN 1 ELSE 0 END AS \"_is_deleted\""),
            "{old}"
        );
    }

    #[test]
    fn every_output_is_named_after_its_column() {
        // Unnamed, `x AT TIME ZONE 'UTC'` is called `timezone` and a CASE `case`: a key
        // column of that name would be ambiguous in the copy's ORDER BY.
        let s = table(vec![
            col("timezone", PgType::Text, true, false),
            col("case", PgType::Int4, true, false),
            col("at", PgType::TimestampTz, false, true),
            col("ok", PgType::Bool, false, true),
        ]);
        let l = list(&s, &ServerCaps::from_version("26.9.1.1")).unwrap();
        assert!(l.starts_with("\"timezone\", \"case\", \"at\" AT TIME ZONE 'UTC' AS \"at\", CASE \"ok\" WHEN true THEN 'true' WHEN false THEN 'false' END AS \"ok\", 42 AS \"_version\", CASE WHEN "), "{l}");
    }

    #[test]
    fn no_marks_no_condition() {
        let s = table(vec![
            col("id", PgType::Int4, true, false),
            col("name", PgType::Text, false, true),
            col("ok", PgType::Bool, false, true),
        ]);
        let l = list(&s, &ServerCaps::from_version("26.9.1.1")).unwrap();
        assert_eq!(
            l,
            "\"id\", \"name\", CASE \"ok\" WHEN true THEN 'true' WHEN false THEN 'false' END AS \"ok\", 42 AS \"_version\", 0 AS \"_is_deleted\""
        );
        let l = list(&s, &ServerCaps::from_version("18.16.1")).unwrap();
        assert!(l.contains("WHEN true THEN '1' WHEN false THEN '0'"), "{l}");
    }

    #[test]
    fn bytea_arrays_and_converted_keys_stay_on_the_ordinary_path() {
        for extra in [
            col("b", PgType::Bytea, false, true),
            col("a", PgType::Array(Box::new(PgType::Int4)), false, true),
        ] {
            let s = table(vec![col("id", PgType::Int8, true, false), extra]);
            assert_eq!(list(&s, &ServerCaps::from_version("26.9.1.1")), None);
        }
        // A timestamp key's text changes on the way: the copy could not read its next start.
        let s = table(vec![col("at", PgType::TimestampTz, true, false)]);
        assert_eq!(list(&s, &ServerCaps::from_version("26.9.1.1")), None);
        let ch = map_table(&s, &ServerCaps::from_version("26.9.1.1"), JsonAs::String);
        assert_eq!(
            ordinary_because(&s.columns, &ch).as_deref(),
            Some("key column `at` (DateTime64(6, 'UTC')) would change its text")
        );
        let s = table(vec![
            col("id", PgType::Int8, true, false),
            col("b", PgType::Bytea, false, true),
        ]);
        let ch = map_table(&s, &ServerCaps::from_version("26.9.1.1"), JsonAs::String);
        assert_eq!(
            ordinary_because(&s.columns, &ch).as_deref(),
            Some("column `b` (Nullable(String)) is written by tributary's encoder")
        );
        let s = table(vec![col("id", PgType::Int8, true, false)]);
        let ch = map_table(&s, &ServerCaps::from_version("26.9.1.1"), JsonAs::String);
        assert_eq!(ordinary_because(&s.columns, &ch), None);
        // Column counts that disagree: nothing.
        let s = table(vec![col("id", PgType::Int8, true, false)]);
        assert_eq!(select_list(&s.columns, &[], 1), None);
    }

    #[test]
    fn a_null_in_a_column_that_cannot_hold_one_is_marked() {
        let s = table(vec![col("id", PgType::Int8, true, false)]);
        let mut ch = map_table(
            &s,
            &ServerCaps::from_version("26.9.1.1"),
            crate::chtypes::JsonAs::String,
        );
        let pg = vec![
            col("id", PgType::Int8, true, false),
            col("d", PgType::Date, false, true),
        ];
        let mut d = ch[0].clone();
        d.name = "d".into();
        d.codec = Codec::Date32;
        d.nullable = false;
        d.is_key = false;
        ch.push(d);
        let l = select_list(&pg, &ch, 7).unwrap();
        // Marked: the ordinary way writes the default.
        assert!(l.contains(" OR \"d\" IS NULL THEN 1 ELSE 0 END"), "{l}");
    }

    #[test]
    fn identifiers_are_quoted() {
        let s = table(vec![col("we\"ird", PgType::Int8, true, false)]);
        assert_eq!(
            list(&s, &ServerCaps::from_version("26.9.1.1")).unwrap(),
            "\"we\"\"ird\", 42 AS \"_version\", 0 AS \"_is_deleted\""
        );
    }
}
