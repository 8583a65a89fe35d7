//! Type round trips through the real pipeline, on both ClickHouse generations: for every
//! mapped Postgres type (and the edge values of issue 5), the value ClickHouse holds after
//! FINAL equals what the mapping promises for that generation. Values are compared, never
//! counts.
//!
//! The main test is one table: each case below is a column (Postgres type, a literal, what
//! ClickHouse prints per generation). Row 1 comes through the snapshot, row 2 is all NULL
//! and row 3 is inserted as NULLs then updated to the literals while streaming. TOAST and a
//! 1 MB value have their own tests.

use crate::common::*;
use crate::matrix;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// What ClickHouse prints (TabSeparated output) for a case's value.
#[derive(Clone, Copy)]
enum Want {
    /// Exactly this TSV field.
    Tsv(&'static str),
    /// This TSV field; the value was out of the column's range, clamped and counted.
    Clamped(&'static str),
    /// NULL: the column cannot hold the value (counted).
    Unrepresentable,
    /// Computed by Postgres from the stored value: an expression over `{c}` (the column),
    /// whose text result, TSV-escaped, is the field.
    Pg(&'static str),
}
use Want::*;

/// Legacy (18.16) timestamps: Int64 microseconds since the epoch, UTC.
const MICROS: Want = Pg("((extract(epoch from {c}) * 1000000)::bigint)::text");
/// Current timestamps: DateTime64(6, 'UTC').
const DT64: Want = Pg("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')");
/// Legacy dates: Int32 days since 1970-01-01.
const DAYS: Want = Pg("({c} - date '1970-01-01')::text");
/// Postgres's own text form (Strings that keep it).
const PG_TEXT: Want = Pg("{c}::text");

struct Case {
    /// Column name, and the case's name in failure messages.
    name: &'static str,
    /// Postgres type; `{mood}` and `{posint}` are this test's enum and domain.
    pg: &'static str,
    /// The value as a Postgres literal or expression.
    lit: &'static str,
    ch18: Want,
    ch26: Want,
}

const fn case(
    name: &'static str,
    pg: &'static str,
    lit: &'static str,
    ch18: Want,
    ch26: Want,
) -> Case {
    Case {
        name,
        pg,
        lit,
        ch18,
        ch26,
    }
}
const fn same(name: &'static str, pg: &'static str, lit: &'static str, want: Want) -> Case {
    Case {
        name,
        pg,
        lit,
        ch18: want,
        ch26: want,
    }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    case("bool_t",        "bool",  "true",  Tsv("1"), Tsv("true")),
    case("bool_f",        "bool",  "false", Tsv("0"), Tsv("false")),
    same("int2_min",      "int2",  "-32768", Tsv("-32768")),
    same("int4_max",      "int4",  "2147483647", Tsv("2147483647")),
    same("int8_min",      "int8",  "-9223372036854775808", Tsv("-9223372036854775808")),
    same("float4",        "float4", "3.14", Tsv("3.14")),
    same("float4_ninf",   "float4", "'-Infinity'", Tsv("-inf")),
    same("float8",        "float8", "0.1", Tsv("0.1")),
    same("float8_neg",    "float8", "-1234.5678", Tsv("-1234.5678")),
    same("float8_nan",    "float8", "'NaN'", Tsv("nan")),
    same("float8_inf",    "float8", "'Infinity'", Tsv("inf")),
    same("float8_ninf",   "float8", "'-Infinity'", Tsv("-inf")),
    // Decimal(P, S): current servers print no trailing zeros.
    case("num_10_2",      "numeric(10,2)", "12345678.90", Tsv("12345678.90"), Tsv("12345678.9")),
    same("num_10_2_neg",  "numeric(10,2)", "-0.05", Tsv("-0.05")),
    same("num_10_2_nan",  "numeric(10,2)", "'NaN'", Unrepresentable),
    // Precision 60: Decimal256 on current servers, String (Postgres's text) on legacy ones.
    case("num_60_10",     "numeric(60,10)", "-12345678901234567890123456789012345678901234567890.0123456780",
         Tsv("-12345678901234567890123456789012345678901234567890.0123456780"),
         Tsv("-12345678901234567890123456789012345678901234567890.012345678")),
    // Unconstrained numeric: String on both, Postgres's digits written out in full.
    same("num_tiny",      "numeric", "1e-30", Tsv("0.000000000000000000000000000001")),
    same("num_huge",      "numeric", "1e30", Tsv("1000000000000000000000000000000")),
    same("num_nan",       "numeric", "'NaN'", Tsv("NaN")),
    same("text",          "text", "'plain text'", Tsv("plain text")),
    same("text_empty",    "text", "''", Tsv("")),
    same("text_unicode",  "text", "'😀 漢字 שלום עולם é'", Tsv("😀 漢字 שלום עולם é")),
    same("text_escapes",  "text", r"E'tab\there nl\nx cr\r back\\slash it''s'", Tsv(r"tab\there nl\nx cr\r back\\slash it\'s")),
    same("varchar",       "varchar(10)", "'abc'", Tsv("abc")),
    same("char",          "char(5)", "'ab'", Tsv("ab   ")),
    // Compared as hex(): raw bytes, including \t \n \0 ' \ and 0xff.
    same("bytea",         "bytea", r"'\x00090a0d5c27ff41'", Tsv("00090A0D5C27FF41")),
    same("bytea_empty",   "bytea", "''", Tsv("")),
    case("date",          "date", "'2024-02-29'", DAYS, Tsv("2024-02-29")),
    case("date_1969",     "date", "'1969-12-31'", Tsv("-1"), Tsv("1969-12-31")),
    case("date_0001",     "date", "'0001-01-01'", Tsv("-719162"), Clamped("1900-01-01")),
    case("date_2299",     "date", "'2299-12-31'", DAYS, Tsv("2299-12-31")),
    case("ts",            "timestamp", "'2024-01-02 03:04:05.123456'", MICROS, DT64),
    case("ts_1969",       "timestamp", "'1969-12-31 23:59:59.999999'", Tsv("-1"), DT64),
    case("ts_0001",       "timestamp", "'0001-01-01 00:00:00'", Tsv("-62135596800000000"), Clamped("1900-01-01 00:00:00.000000")),
    case("tstz",          "timestamptz", "'2024-06-01 12:00:00.000001+05:30'", MICROS, DT64),
    case("tstz_1900",     "timestamptz", "'1900-01-01 00:00:00+00'", MICROS, Tsv("1900-01-01 00:00:00.000000")),
    case("tstz_2200",     "timestamptz", "'2200-06-01 12:00:00.5+00'", Tsv("7271208000500000"), DT64),
    same("time",          "time", "'13:45:56.123456'", Tsv("13:45:56.123456")),
    same("timetz",        "timetz", "'13:45:56+05:30'", Tsv("13:45:56+05:30")),
    same("interval",      "interval", "'1 year 2 months 3 days 04:05:06.789'", Tsv("1 year 2 mons 3 days 04:05:06.789")),
    same("uuid",          "uuid", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", Tsv("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    same("json",          "json", r#"'{"b": [1, "x\"y"], "a": "\u00e9\\n"}'"#, PG_TEXT),
    same("jsonb",         "jsonb", r#"'{"k": {"emoji": "😀", "cjk": "漢字", "rtl": "שלום", "esc": "q\"t\\b\tn\n\u00e9''"}, "a": [null, 1.50]}'"#, PG_TEXT),
    same("jsonb_literal", "jsonb", r#"'{"q": "it''s"}'"#, Tsv(r#"{"q": "it\'s"}"#)),
    // Arrays cannot be Nullable in ClickHouse: a NULL array reads back as [] (row 2).
    same("int_arr",       "int4[]", "'{1,NULL,3}'", Tsv("[1,NULL,3]")),
    same("text_arr",      "text[]", r#"ARRAY['a', 'it''s', 'x,y', 'q"q', 'b\c', NULL, 'NULL', '', E'tab\there', '😀']"#,
         Tsv(r#"['a','it\'s','x,y','q"q','b\\c',NULL,'NULL','','tab\there','😀']"#)),
    same("text_arr_empty", "text[]", "'{}'", Tsv("[]")),
    case("bool_arr",      "bool[]", "'{t,f,NULL}'", Tsv("[1,0,NULL]"), Tsv("[true,false,NULL]")),
    same("float8_arr",    "float8[]", "'{1.5,NaN,Infinity,-Infinity,NULL}'", Tsv("[1.5,nan,inf,-inf,NULL]")),
    case("date_arr",      "date[]", "'{1970-01-02,NULL}'", Tsv("[1,NULL]"), Tsv("['1970-01-02',NULL]")),
    case("tstz_arr",      "timestamptz[]", "'{\"2024-01-02 03:04:05.5+00\"}'", Tsv("[1704164645500000]"), Tsv("['2024-01-02 03:04:05.500000']")),
    same("uuid_arr",      "uuid[]", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", Tsv("['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']")),
    // Multi-dimensional arrays have no mapping: String with the text form.
    same("int_arr_2d",    "int4[][]", "'{{1,2},{3,4}}'", Tsv("{{1,2},{3,4}}")),
    same("enum",          "{mood}", "'happy'", Tsv("happy")),
    same("point",         "point", "'(1.5,-2)'", Tsv("(1.5,-2)")),
    same("inet",          "inet", "'192.168.0.1/24'", Tsv("192.168.0.1/24")),
    same("domain_int",    "{posint}", "42", Tsv("42")),
];

impl Case {
    fn want(&self, target: Target) -> Want {
        match target {
            Target::Ch18 => self.ch18,
            Target::Ch26 => self.ch26,
        }
    }
    fn is_array(&self) -> bool {
        // Only one-dimensional arrays map to Array (and read back [] for NULL).
        self.pg.ends_with("[]") && !self.pg.ends_with("[][]")
    }
    /// The ClickHouse expression that prints this column.
    fn select(&self) -> String {
        if self.pg == "bytea" {
            format!("hex(`{}`)", self.name)
        } else {
            format!("`{}`", self.name)
        }
    }
}

/// Every case, through snapshot, streamed NULLs and a streamed update, on one target.
/// Which way the test table's copy goes (chosen by its columns).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Ordinary,
    Passthrough,
    Binary,
}

async fn round_trip(target: Target) {
    round_trip_of(target, Way::Ordinary).await
}
matrix!(every_type_round_trips, round_trip);

/// The same for the types a snapshot passes through (Postgres writes ClickHouse's form, see
/// `protocol::passthrough`): the table without bytea and arrays, which would keep its copy on
/// the ordinary path. Row 1 has values outside ClickHouse's range (read again the
/// ordinary way, clamped and counted), row 4 the same values with those NULL: it passes
/// through.
async fn passthrough_round_trip(target: Target) {
    round_trip_of(target, Way::Passthrough).await
}
matrix!(every_passthrough_type_round_trips, passthrough_round_trip);

/// The same for the types a snapshot copies in binary (Postgres's binary COPY written as
/// RowBinary, see `protocol::rowbinary`): the table without the types that have no binary
/// form there (arrays, UUID, types known by name, Decimal256). Row 1's values outside
/// ClickHouse's range are read again the ordinary way; row 4 is copied in binary.
async fn binary_round_trip(target: Target) {
    round_trip_of(target, Way::Binary).await
}
matrix!(every_binary_type_round_trips, binary_round_trip);

async fn round_trip_of(target: Target, way: Way) {
    let through = way != Way::Ordinary;
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|cs| match way {
            Way::Ordinary => true,
            // A uuid column keeps it off the binary way.
            Way::Passthrough => !(cs.is_array() || cs.pg == "bytea"),
            Way::Binary => {
                let no_binary = cs.is_array()
                    || ["uuid", "point", "inet", "int4[][]"].contains(&cs.pg)
                    || (target == Target::Ch26 && cs.name == "num_60_10");
                !no_binary
            }
        })
        .collect();
    // The values a fast copy reads again the ordinary way: those ClickHouse cannot hold,
    // and in a passthrough into 18.16 timestamps outside 1900–2040 (float8 would not carry
    // their microseconds exactly; the binary way carries them).
    let marked = |cs: &Case| {
        matches!(cs.want(target), Clamped(_) | Unrepresentable)
            || (way == Way::Passthrough
                && matches!(target, Target::Ch18)
                && ["ts_0001", "tstz_2200"].contains(&cs.name))
    };
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("types");
    let mood = unique("mood");
    let posint = unique("posint");
    let pg_type = |cs: &Case| cs.pg.replace("{mood}", &mood).replace("{posint}", &posint);
    let cols: Vec<String> = cases
        .iter()
        .map(|cs| format!("{} {}", cs.name, pg_type(cs)))
        .collect();
    let names: Vec<&str> = cases.iter().map(|cs| cs.name).collect();
    let lits: Vec<&str> = cases.iter().map(|cs| cs.lit).collect();
    let in_range: Vec<&str> = cases
        .iter()
        .map(|cs| if marked(cs) { "NULL" } else { cs.lit })
        .collect();
    let sets: Vec<String> = cases
        .iter()
        .map(|cs| format!("{} = {}", cs.name, cs.lit))
        .collect();
    c.batch_execute(&format!(
        "CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN {posint} AS int CHECK (VALUE > 0);
         CREATE TABLE {t} (id int PRIMARY KEY, {});
         INSERT INTO {t} (id, {}) VALUES (1, {});",
        cols.join(", "),
        names.join(", "),
        lits.join(", ")
    ))
    .await
    .unwrap();
    if through {
        c.batch_execute(&format!(
            "INSERT INTO {t} (id, {}) VALUES (4, {});",
            names.join(", "),
            in_range.join(", ")
        ))
        .await
        .unwrap();
    }

    let cfg = w.config(&[&format!("public.{t}")]);
    let run = Running::start(&cfg).await;
    c.batch_execute(&format!(
        "INSERT INTO {t} (id) VALUES (2);
         INSERT INTO {t} (id) VALUES (3);
         UPDATE {t} SET {} WHERE id = 3;",
        sets.join(", ")
    ))
    .await
    .unwrap();

    // What ClickHouse must print for each case: the value row (1 and 3) and the NULL row (2).
    let exprs: Vec<String> = cases
        .iter()
        .map(|cs| match cs.want(target) {
            Pg(e) => e.replace("{c}", cs.name),
            _ => "NULL".into(),
        })
        .collect();
    let computed = pg_rows(
        &c,
        &format!("SELECT {} FROM {t} WHERE id = 1", exprs.join(", ")),
    )
    .await;
    let computed: Vec<&str> = computed[0].split('\t').collect();
    let value_row: Vec<String> = cases
        .iter()
        .zip(&computed)
        .map(|(cs, pg)| match cs.want(target) {
            Tsv(s) | Clamped(s) => s.to_string(),
            Unrepresentable => "\\N".into(),
            Pg(_) => pg.to_string(),
        })
        .collect();
    let null_row: Vec<String> = cases
        .iter()
        .map(|cs| {
            if cs.is_array() {
                "[]".into()
            } else {
                "\\N".into()
            }
        })
        .collect();
    let in_range_row: Vec<String> = cases
        .iter()
        .zip(&value_row)
        .map(|(cs, v)| if marked(cs) { "\\N".into() } else { v.clone() })
        .collect();
    let mut want = vec![(1, &value_row), (2, &null_row), (3, &value_row)];
    if through {
        want.push((4, &in_range_row));
    }

    let select: Vec<String> = cases.iter().map(|cs| cs.select()).collect();
    eventually(T, "every type to round-trip", || async {
        let got = w
            .try_ch_live(&t, &format!("id, {}", select.join(", ")), "id")
            .await?;
        if got.len() != want.len() {
            return Err(format!("{} rows in ClickHouse: {got:?}", got.len()));
        }
        let mut wrong = Vec::new();
        for ((id, want), line) in want.iter().zip(&got) {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields[0] != id.to_string() {
                return Err(format!("row {id} missing: {line}"));
            }
            for ((cs, want), got) in cases.iter().zip(want.iter()).zip(&fields[1..]) {
                if want != got {
                    wrong.push(format!(
                        "row {id} {} ({}): want {want:?}, got {got:?}",
                        cs.name, cs.pg
                    ));
                }
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{} wrong:\n  {}", wrong.len(), wrong.join("\n  ")))
        }
    })
    .await;

    // Rows 1 and 3 hold the values; each out-of-range value is counted once per row.
    let per_row =
        |f: fn(Want) -> bool| 2 * cases.iter().filter(|cs| f(cs.want(target))).count() as u64;
    let clamped = per_row(|w| matches!(w, Clamped(_)));
    let unrepresentable = per_row(|w| matches!(w, Unrepresentable));
    let counters = run.counters();
    eventually(
        Duration::from_secs(10),
        "clamp and unrepresentable counters",
        || async {
            let got = (
                counters.values_clamped.load(Ordering::Relaxed),
                counters.values_unrepresentable.load(Ordering::Relaxed),
            );
            if got == (clamped, unrepresentable) {
                Ok(())
            } else {
                Err(format!(
                    "(clamped, unrepresentable) = {got:?}, want {:?}",
                    (clamped, unrepresentable)
                ))
            }
        },
    )
    .await;
    if through {
        // Row 4 passed through, row 1 (values to clamp or count) went the ordinary way; rows
        // 2 and 3 are in the copy too when it read after the test wrote them.
        let copied = counters.snapshot_rows.load(Ordering::Relaxed);
        let through = counters.snapshot_rows_passthrough.load(Ordering::Relaxed);
        let binary = counters.snapshot_rows_binary.load(Ordering::Relaxed);
        assert!(
            through >= 1 && copied > through,
            "{copied} rows copied, {through} of them passed through"
        );
        let want_binary = if way == Way::Binary { through } else { 0 };
        assert_eq!(binary, want_binary, "rows copied in binary");
    }
    run.stop().await;
    // `tributary verify`'s canonical forms, on every type (see verify.rs).
    let not_held: Vec<&str> = cases
        .iter()
        .filter(|cs| matches!(cs.want(target), Clamped(_) | Unrepresentable))
        .map(|cs| cs.name)
        .collect();
    crate::verify::canonical_forms_agree(&w, &cfg, &t, &not_held).await;
    w.teardown().await;
}

/// Compares two big renderings without printing them whole.
fn same_big(what: &str, want: &[String], got: &[String]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    let summary = |rows: &[String]| {
        rows.iter()
            .map(|r| {
                format!(
                    "{}…({} bytes)",
                    r.chars().take(40).collect::<String>(),
                    r.len()
                )
            })
            .collect::<Vec<_>>()
    };
    let at = want
        .iter()
        .zip(got)
        .find(|(a, b)| a != b)
        .map(|(a, b)| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count());
    Err(format!(
        "{what}: want {:?}, got {:?}; first difference at byte {at:?}",
        summary(want),
        summary(got)
    ))
}

/// A fast copy (binary, here) of a table whose every row has a value ClickHouse must clamp (dates of
/// 1800 into 26.9's Date32): each row is marked, read again by key the ordinary way (in
/// batches), clamped and counted once, and the table's copy goes on without passthrough. Into
/// 18.16 the same dates are days since 1970 (no clamp): every row passes through. The key is
/// named `timezone`, the name Postgres gives `x AT TIME ZONE …` (the copy's ORDER BY must not
/// find two).
async fn out_of_range_rows_take_the_ordinary_way(target: Target) {
    const ROWS: u64 = 2500;
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("marked");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (timezone int PRIMARY KEY, d date NOT NULL, at timestamptz);
         INSERT INTO {t} SELECT g, date '1800-01-01' + g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
             FROM generate_series(1, {ROWS}) g;"
    ))
    .await
    .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    let want_d = match target {
        Target::Ch26 => "'1900-01-01'",
        Target::Ch18 => "(d - date '1970-01-01')",
    };
    let want = pg_rows(
        &c,
        &format!("SELECT timezone, {want_d} FROM {t} ORDER BY timezone"),
    )
    .await;
    eventually(T, "every row, clamped where it must be", || async {
        same_big(
            "rows",
            &want,
            &w.try_ch_live(&t, "timezone, d", "timezone").await?,
        )
    })
    .await;
    let counters = run.counters();
    let got = (
        counters.snapshot_rows.load(Ordering::Relaxed),
        counters.snapshot_rows_passthrough.load(Ordering::Relaxed),
        counters.values_clamped.load(Ordering::Relaxed),
        counters.snapshot_rows_binary.load(Ordering::Relaxed),
    );
    // (The table's columns have a binary form: what passes through is binary.)
    let expected = match target {
        Target::Ch26 => (ROWS, 0, ROWS, 0),
        Target::Ch18 => (ROWS, ROWS, 0, ROWS),
    };
    assert_eq!(
        got, expected,
        "(rows copied, passed through, clamped, in binary)"
    );
    run.stop().await;
    w.teardown().await;
}
matrix!(
    out_of_range_rows_take_the_ordinary_way_in_a_passthrough_copy,
    out_of_range_rows_take_the_ordinary_way
);

/// Unchanged TOAST values (100 KB text, bytea and bytea[], stored out of line) survive an UPDATE of
/// another column: Postgres does not resend them, and the sink must not write NULL.
async fn toast_survives_update(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("toast");
    // md5 digests do not compress, so the values really are stored out of line.
    let big = r"E'tab\t quote'' back\\ 😀 漢字 ' || (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3200) g)";
    let bin = r"'\x00090a0d5c27ff'::bytea || (SELECT decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 6400) g)";
    let bins = format!(r"ARRAY[{bin}, NULL, '\xff'::bytea]");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, big text, bin bytea, bins bytea[], n int);
         ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL, ALTER COLUMN bin SET STORAGE EXTERNAL,
             ALTER COLUMN bins SET STORAGE EXTERNAL;
         INSERT INTO {t} VALUES (1, {big}, {bin}, {bins}, 0);"
    ))
    .await
    .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    let cols = "id, n, octet_length(big), big";
    let ch_cols = "id, n, length(big), big, hex(bin), arrayStringConcat(arrayMap(x -> ifNull(hex(x), 'NULL'), bins), ',')";
    let pg_cols = format!(
        "{cols}, upper(encode(bin, 'hex')), \
         array_to_string(ARRAY(SELECT coalesce(upper(encode(x, 'hex')), 'NULL') FROM unnest(bins) WITH ORDINALITY u(x, i) ORDER BY i), ',')"
    );
    // Row 1 (from the snapshot) is in ClickHouse before its update.
    eventually(T, "the snapshot row", || async {
        let want = pg_rows(&c, &format!("SELECT {pg_cols} FROM {t} ORDER BY id")).await;
        same_big("snapshot", &want, &w.try_ch_live(&t, ch_cols, "id").await?)
    })
    .await;
    c.batch_execute(&format!(
        "UPDATE {t} SET n = 1 WHERE id = 1;
         INSERT INTO {t} VALUES (2, {big} || 'two', {bin}, {bins}, 0);
         UPDATE {t} SET n = 2 WHERE id = 2;
         BEGIN; INSERT INTO {t} VALUES (3, 'three ' || {big}, {bin}, {bins}, 0); UPDATE {t} SET n = 3 WHERE id = 3; COMMIT;
         UPDATE {t} SET n = n + 10;
         UPDATE {t} SET id = 4 WHERE id = 3;
         BEGIN; UPDATE {t} SET id = 5, n = 14 WHERE id = 4; UPDATE {t} SET n = n + 1 WHERE id = 5; COMMIT;"
    ))
    .await
    .unwrap();
    let want = pg_rows(&c, &format!("SELECT {pg_cols} FROM {t} ORDER BY id")).await;
    assert_eq!(
        want.iter()
            .map(|r| r.split('\t').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        ["1 11", "2 12", "5 15"],
        "row 3 moved to key 4, then 5, its TOAST values untouched"
    );
    eventually(T, "TOAST values kept across updates", || async {
        same_big(
            "after updates",
            &want,
            &w.try_ch_live(&t, ch_cols, "id").await?,
        )
    })
    .await;
    // Most came from the sink's memory of what it wrote; the first update of the snapshot row
    // had to be looked up.
    let p = run.registry.pipeline(&run.pipeline);
    let hits = p
        .toast_cache_hits
        .load(std::sync::atomic::Ordering::Relaxed);
    let lookups = p.toast_lookups.load(std::sync::atomic::Ordering::Relaxed);
    assert!(hits >= 5 && lookups >= 1, "{hits} hits, {lookups} lookups");
    run.stop().await;
    w.teardown().await;
}
matrix!(toast_unchanged_survives_update, toast_survives_update);

/// A 1 MB text value through the snapshot, the stream and an update of another column.
async fn one_megabyte(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("onemb");
    let v = r"(SELECT string_agg(md5(g::text) || E'\t😀漢字''\\', '') FROM generate_series(1, 24000) g)";
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text, n int); INSERT INTO {t} VALUES (1, {v}, 0);"
    ))
    .await
    .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    c.batch_execute(&format!(
        "INSERT INTO {t} VALUES (2, 'streamed ' || {v}, 0); UPDATE {t} SET n = 1;"
    ))
    .await
    .unwrap();
    let want = pg_rows(
        &c,
        &format!("SELECT id, n, octet_length(v), v FROM {t} ORDER BY id"),
    )
    .await;
    assert!(
        want.iter().all(|r| r.len() > 1_000_000),
        "the values are over 1 MB"
    );
    eventually(T, "1 MB values", || async {
        same_big(
            "1 MB",
            &want,
            &w.try_ch_live(&t, "id, n, length(v), v", "id").await?,
        )
    })
    .await;
    run.stop().await;
    w.teardown().await;
}
matrix!(one_megabyte_text, one_megabyte);
