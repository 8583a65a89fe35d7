//! ClickHouse side of the CDC mapping: which features a server version has, the column
//! type chosen for each Postgres type on that server, the DDL we generate, and the encoding
//! of Postgres text values into TabSeparated rows.
//!
//! Must never: emit an unquoted identifier, or silently change a value. A value a column
//! cannot hold is clamped or replaced and *counted* in [`EncodeStats`]; the README documents
//! each case.

use super::pgoutput::Cell;
use super::pgtext::*;
use super::schema::{Column, PgType, TableSchema};
use serde::Deserialize;

/// What a ClickHouse server supports, from `SELECT version()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCaps {
    pub version: String,
    pub datetime64: bool,
    pub date32: bool,
    pub bool_type: bool,
    pub low_cardinality: bool,
    /// `ReplacingMergeTree(ver, is_deleted)`.
    pub is_deleted_engine: bool,
    /// `ALTER TABLE … RENAME COLUMN`.
    pub rename_column: bool,
    /// ReplacingMergeTree drops deleted rows in merges of a whole partition whose parts are
    /// all older than `min_age_to_force_merge_seconds` (`enable_replacing_merge_with_cleanup_for_min_age_to_force_merge`).
    pub cleanup_merges: bool,
    pub json_type: bool,
    /// Largest Decimal precision (0 = no Decimal).
    pub decimal_max_precision: u32,
}

impl ServerCaps {
    pub fn from_version(version: &str) -> ServerCaps {
        let mut it = version
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let v = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let at_least = |maj: u32, min: u32| v >= (maj, min);
        ServerCaps {
            version: version.trim().to_string(),
            datetime64: at_least(20, 1),
            date32: at_least(21, 9),
            bool_type: at_least(22, 1),
            low_cardinality: at_least(19, 0),
            is_deleted_engine: at_least(23, 2),
            rename_column: at_least(20, 4),
            cleanup_merges: at_least(24, 1),
            json_type: at_least(25, 3),
            decimal_max_precision: if at_least(20, 8) { 76 } else { 38 },
        }
    }

    /// Servers before these features get the documented fallbacks (see README).
    pub fn generation(&self) -> &'static str {
        if self.datetime64 {
            "current"
        } else {
            "legacy"
        }
    }
}

/// How a Postgres text value becomes a ClickHouse TSV field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Text copied with TSV escaping (String, UUID, Int*, enums, JSON as string).
    Text,
    /// Numbers copied as they are (`Int*`); quoted forms are bare.
    Number,
    Float,
    /// Decimal(P, S): NaN and infinities cannot be held.
    Decimal,
    /// `t`/`f` → `1`/`0` (UInt8) or `true`/`false` (Bool).
    Bool {
        words: bool,
    },
    /// Date32 text, clamped to 1900-01-01..2299-12-31.
    Date32,
    /// Days since 1970-01-01 as Int32 (legacy servers: lossless).
    DateDays,
    /// DateTime64(6, 'UTC') text, clamped to ClickHouse's range.
    DateTime64,
    /// Microseconds since the epoch, UTC, as Int64 (legacy servers: lossless).
    TimestampMicros,
    /// `\x..` hex decoded to raw bytes in a String.
    Bytea,
    Array(Box<Codec>),
}

impl Codec {
    fn quoted_in_array(&self) -> bool {
        matches!(
            self,
            Codec::Text | Codec::Date32 | Codec::DateTime64 | Codec::Bytea
        )
    }
}

/// A ClickHouse column for a Postgres column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChColumn {
    pub name: String,
    pub ch_type: String,
    pub codec: Codec,
    pub nullable: bool,
    pub is_key: bool,
    /// Set when the mapping fell back (unknown type, unsupported precision...).
    pub note: Option<String>,
    /// `DEFAULT` expression for an added column whose earlier rows hold a value in Postgres.
    pub default_expr: Option<String>,
    /// The column's previous name, when it was renamed while streaming.
    pub renamed_from: Option<String>,
}

/// Bounds of DateTime64 and Date32, in microseconds / days since the epoch.
pub(crate) const DT64_MIN: i64 = -2_208_988_800_000_000; // 1900-01-01 00:00:00
pub(crate) const DT64_MAX: i64 = 10_413_791_999_999_999; // 2299-12-31 23:59:59.999999
pub(crate) const D32_MIN: i64 = -25_567; // 1900-01-01
pub(crate) const D32_MAX: i64 = 120_529; // 2299-12-31

/// How json/jsonb columns are stored: as `String` (every server) or as the `JSON` type
/// (ClickHouse ≥ 24.8; String on older servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonAs {
    String,
    Json,
}

pub fn map_column(col: &Column, caps: &ServerCaps, json_as: JsonAs) -> ChColumn {
    let (base, codec, note) = map_type(&col.pg_type, caps, json_as);
    // Arrays cannot be Nullable in ClickHouse: a NULL array is stored as [].
    let nullable = col.nullable && !col.is_key && !matches!(codec, Codec::Array(_));
    let ch_type = if nullable {
        match base.strip_prefix("LowCardinality(") {
            Some(inner) => format!("LowCardinality(Nullable({})", inner),
            None => format!("Nullable({base})"),
        }
    } else {
        base
    };
    let mut c = ChColumn {
        name: col.name.clone(),
        ch_type,
        codec,
        nullable,
        is_key: col.is_key,
        note,
        default_expr: None,
        renamed_from: col.renamed_from.clone(),
    };
    if let Some(v) = &col.added_default {
        // The value in ClickHouse's text form, cast to the column type: ClickHouse computes a
        // DEFAULT for parts written before the column existed.
        let mut tsv = Vec::new();
        encode_field(
            &mut tsv,
            &c,
            &Cell::Text(bytes::Bytes::copy_from_slice(v.as_bytes())),
            &mut EncodeStats::default(),
        );
        let text = unescape_tsv(&String::from_utf8_lossy(&tsv));
        c.default_expr = Some(format!("CAST({} AS {})", ch_literal(&text), c.ch_type));
    }
    c
}

fn map_type(t: &PgType, caps: &ServerCaps, json_as: JsonAs) -> (String, Codec, Option<String>) {
    use PgType::*;
    let s = |t: &str, c: Codec| (t.to_string(), c, None);
    match t {
        Bool if caps.bool_type => s("Bool", Codec::Bool { words: true }),
        Bool => s("UInt8", Codec::Bool { words: false }),
        Int2 => s("Int16", Codec::Number),
        Int4 => s("Int32", Codec::Number),
        Int8 => s("Int64", Codec::Number),
        Float4 => s("Float32", Codec::Float),
        Float8 => s("Float64", Codec::Float),
        Numeric(Some((p, sc))) if *p >= 1 && *p <= caps.decimal_max_precision && sc <= p => {
            (format!("Decimal({p}, {sc})"), Codec::Decimal, None)
        }
        Numeric(Some((p, sc))) => (
            "String".into(),
            Codec::Text,
            Some(format!(
                "numeric({p},{sc}) exceeds Decimal precision {}: stored as String",
                caps.decimal_max_precision
            )),
        ),
        Numeric(None) => s("String", Codec::Text),
        Text | Interval | Time | TimeTz => s("String", Codec::Text),
        Bytea => s("String", Codec::Bytea),
        Date if caps.date32 => s("Date32", Codec::Date32),
        Date => s("Int32", Codec::DateDays),
        Timestamp | TimestampTz if caps.datetime64 => s("DateTime64(6, 'UTC')", Codec::DateTime64),
        Timestamp | TimestampTz => s("Int64", Codec::TimestampMicros),
        Uuid => s("UUID", Codec::Text),
        Json | Jsonb if json_as == JsonAs::Json && caps.json_type => s("JSON", Codec::Text),
        Json | Jsonb => s("String", Codec::Text),
        Enum(_) if caps.low_cardinality => s("LowCardinality(String)", Codec::Text),
        Enum(_) => s("String", Codec::Text),
        Array(inner) => {
            let (it, ic, note) = map_type(inner, caps, JsonAs::String);
            // Inside arrays: plain element types only (no LowCardinality, no nested arrays).
            let (it, ic) = match ic {
                Codec::Array(_) => ("String".to_string(), Codec::Text),
                _ if it.starts_with("LowCardinality") => ("String".to_string(), Codec::Text),
                _ => (it, ic),
            };
            (
                format!("Array(Nullable({it}))"),
                Codec::Array(Box::new(ic)),
                note,
            )
        }
        Other(name) => (
            "String".into(),
            Codec::Text,
            Some(format!(
                "type `{name}` has no mapping: stored as its text form in String"
            )),
        ),
    }
}

/// Quotes a ClickHouse identifier, always.
pub fn ch_ident(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('`');
    for c in s.chars() {
        match c {
            '`' => o.push_str("\\`"),
            '\\' => o.push_str("\\\\"),
            c => o.push(c),
        }
    }
    o.push('`');
    o
}

/// Quotes a ClickHouse string literal.
pub fn ch_literal(s: &str) -> String {
    let mut o = Vec::with_capacity(s.len() + 2);
    quoted_escape(&mut o, s.as_bytes());
    String::from_utf8(o).unwrap_or_default()
}

/// The ClickHouse table name for a Postgres table under `template` (`{schema}`, `{table}`).
pub fn table_name(template: &str, schema: &TableSchema) -> String {
    template
        .replace("{schema}", &schema.schema)
        .replace("{table}", &schema.name)
}

pub const VERSION_COL: &str = "_version";
pub const DELETED_COL: &str = "_is_deleted";
/// A keyless table's event number within its `_version` (see [`TableLayout::keyless`]).
pub const SEQ_COL: &str = "_seq";
/// The live view of a keyless table: how many rows of Postgres have that content.
pub const COUNT_COL: &str = "_count";
/// Suffix of the view that shows the live rows (FINAL, deleted rows filtered out).
pub const LIVE_VIEW_SUFFIX: &str = "_live";

/// Why the ClickHouse names of two replicated tables cannot both be used: the same table,
/// or one is the other's live view. `None` when they can.
pub fn name_clash(a: &str, b: &str) -> Option<&'static str> {
    if a == b {
        Some("both map to the same ClickHouse table")
    } else if a.strip_suffix(LIVE_VIEW_SUFFIX) == Some(b)
        || b.strip_suffix(LIVE_VIEW_SUFFIX) == Some(a)
    {
        Some("one's ClickHouse table is the other's live view (`<table>_live`)")
    } else {
        None
    }
}

/// What a ClickHouse column of type `old` needs when its Postgres column now maps to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeChange {
    /// Nothing: the same type (`varchar(10)` → `text` are both String), or one that holds
    /// every value of the new type already.
    Same,
    /// `ALTER TABLE … MODIFY COLUMN` to this type keeps every stored value exactly:
    /// a wider integer, Float32 → Float64, a Decimal with no fewer integer or fraction digits.
    Widen(String),
    /// Values of the new type may not fit, or would read differently.
    Incompatible,
}

/// Decides [`TypeChange`] between two ClickHouse types as tributary writes them (or as the
/// server prints them: spaces do not matter). Nullability follows the old column (a column
/// that took NULLs keeps taking them).
pub fn type_change(old: &str, new: &str) -> TypeChange {
    let norm = |t: &str| t.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let (old, new) = (norm(old), norm(new));
    if old == new {
        return TypeChange::Same;
    }
    // The type under its Nullable and LowCardinality wrappers, and whether it was Nullable.
    let unwrap = |t: &str| -> (bool, String) {
        let (mut t, mut nullable) = (t, false);
        loop {
            if let Some(inner) = t
                .strip_prefix("Nullable(")
                .and_then(|r| r.strip_suffix(')'))
            {
                (t, nullable) = (inner, true);
            } else if let Some(inner) = t
                .strip_prefix("LowCardinality(")
                .and_then(|r| r.strip_suffix(')'))
            {
                t = inner;
            } else {
                return (nullable, t.to_string());
            }
        }
    };
    let ((old_null, old_base), (new_null, new_base)) = (unwrap(&old), unwrap(&new));
    let wrap = |base: &str| {
        if old_null {
            format!("Nullable({base})")
        } else {
            base.to_string()
        }
    };
    if old_base == new_base {
        // A column that now takes NULLs (DROP NOT NULL, seen at a restart) must hold them:
        // a NULL in a column that is not Nullable would be written as its default.
        return if new_null && !old_null {
            TypeChange::Widen(new)
        } else {
            TypeChange::Same
        };
    }
    let int_rank = |t: &str| ["Int16", "Int32", "Int64"].iter().position(|x| *x == t);
    let decimal = |t: &str| -> Option<(i64, i64)> {
        let (p, s) = t
            .strip_prefix("Decimal(")?
            .strip_suffix(')')?
            .split_once(',')?;
        Some((p.parse().ok()?, s.parse().ok()?))
    };
    match (old_base.as_str(), new_base.as_str()) {
        (o, n) if int_rank(o).zip(int_rank(n)).is_some_and(|(a, b)| b > a) => {
            TypeChange::Widen(wrap(n))
        }
        (o, n) if int_rank(o).zip(int_rank(n)).is_some() => TypeChange::Same,
        ("Float32", "Float64") => TypeChange::Widen(wrap("Float64")),
        ("Float64", "Float32") => TypeChange::Same,
        (o, n) => match (decimal(o), decimal(n)) {
            (Some((p1, s1)), Some((p2, s2))) if s2 >= s1 && p2 - s2 >= p1 - s1 => {
                TypeChange::Widen(wrap(&format!("Decimal({p2}, {s2})")))
            }
            _ => TypeChange::Incompatible,
        },
    }
}

/// What renames column `old` of a ClickHouse table to `col.name`: `RENAME COLUMN` where the
/// server has it; before 20.4 (18.16) the new column is added with `DEFAULT old`, so rows
/// written before read their value under the new name (and merges store it), while `old`
/// stays with the history and takes NULL/default in new rows.
pub fn rename_column_sql(
    db: &str,
    table: &str,
    old: &str,
    col: &ChColumn,
    old_type: &str,
    caps: &ServerCaps,
) -> String {
    if caps.rename_column {
        return format!(
            "ALTER TABLE {}.{} RENAME COLUMN {} TO {}",
            ch_ident(db),
            ch_ident(table),
            ch_ident(old),
            ch_ident(&col.name)
        );
    }
    let default = if old_type.replace(' ', "") == col.ch_type.replace(' ', "") {
        ch_ident(old)
    } else {
        format!("CAST({} AS {})", ch_ident(old), col.ch_type)
    };
    add_column_sql(
        db,
        table,
        &ChColumn {
            default_expr: Some(default),
            ..col.clone()
        },
    )
}

/// `ALTER TABLE db.table MODIFY COLUMN col type`.
pub fn modify_column_sql(db: &str, table: &str, col: &str, ch_type: &str) -> String {
    format!(
        "ALTER TABLE {}.{} MODIFY COLUMN {} {}",
        ch_ident(db),
        ch_ident(table),
        ch_ident(col),
        ch_type
    )
}

/// A column whose name is one of tributary's own (`_version`, `_is_deleted`, and `_seq` in a
/// keyless table).
pub fn reserved_column(schema: &TableSchema) -> Option<&str> {
    schema
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| *n == VERSION_COL || *n == DELETED_COL || (schema.keyless() && *n == SEQ_COL))
}

/// How a replicated table is laid out in ClickHouse (a table mapping's `order_by`,
/// `partition_by` and `engine`; the default is the key, no partitions, `replacing`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableLayout {
    /// ORDER BY columns, in order; empty: the key columns.
    pub order_by: Vec<String>,
    /// A ClickHouse `PARTITION BY` expression, as the user wrote it.
    pub partition_by: Option<String>,
    pub engine: TableEngine,
    /// A table without a key (REPLICA IDENTITY FULL): every change is a row of its own,
    /// `_is_deleted = 1` for a delete of that content, unique by (`_version`, `_seq`) so that
    /// replays collapse; the live rows are the contents whose inserts outnumber their deletes.
    pub keyless: bool,
    /// Deleted rows are purged (with the versions they replaced) once their partition has
    /// had no new part for this many seconds (see [`purge_settings`]).
    pub purge_after_secs: Option<u64>,
}

/// The table settings that purge deleted rows of a replacing table: a merge of a whole
/// partition whose parts are all older than `secs` drops each row whose latest version is
/// deleted. Safe against replays: a replay reaches back only to the last confirmed position,
/// long after a tombstone that old was written. `None` where the server cannot (before 24.1).
pub fn purge_settings(secs: u64, caps: &ServerCaps) -> Option<String> {
    caps.cleanup_merges.then(|| {
        format!(
            "allow_experimental_replacing_merge_with_cleanup = 1, \
             enable_replacing_merge_with_cleanup_for_min_age_to_force_merge = 1, \
             min_age_to_force_merge_seconds = {secs}, min_age_to_force_merge_on_partition_only = 1"
        )
    })
}

/// What a replicated table keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableEngine {
    /// The latest version of each row (ReplacingMergeTree on `_version`; FINAL equals
    /// Postgres).
    #[default]
    Replacing,
    /// Every change: each version of a row stays, deletes as rows with `_is_deleted = 1`
    /// (ReplacingMergeTree ordered by the key and `_version`, so replays still collapse).
    Append,
}

/// The ClickHouse columns of a table: every column mapped, `is_key` set on the sort key's
/// columns ([`TableSchema::sort_indexes`]: the key, or a mapping's `order_by`).
pub fn map_table(s: &TableSchema, caps: &ServerCaps, json_as: JsonAs) -> Vec<ChColumn> {
    let sort = s.sort_indexes();
    s.columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let in_sort = sort.contains(&i);
            if in_sort == c.is_key {
                map_column(c, caps, json_as)
            } else {
                let c = Column {
                    is_key: in_sort,
                    ..c.clone()
                };
                map_column(&c, caps, json_as)
            }
        })
        .collect()
}

/// The ORDER BY of a table: the sort key's columns (in `layout.order_by`'s order where it
/// names them), then `_version` for an append table.
fn sort_key_sql(cols: &[ChColumn], layout: &TableLayout) -> Vec<String> {
    let mut keys: Vec<&str> = layout
        .order_by
        .iter()
        .filter(|n| cols.iter().any(|c| c.is_key && &&c.name == n))
        .map(String::as_str)
        .collect();
    for c in cols.iter().filter(|c| c.is_key) {
        if !keys.contains(&c.name.as_str()) {
            keys.push(&c.name);
        }
    }
    let mut out: Vec<String> = keys.into_iter().map(ch_ident).collect();
    if layout.engine == TableEngine::Append || layout.keyless {
        out.push(ch_ident(VERSION_COL));
    }
    if layout.keyless {
        out.push(ch_ident(SEQ_COL));
    }
    out
}

pub fn create_table_sql(
    db: &str,
    table: &str,
    cols: &[ChColumn],
    caps: &ServerCaps,
    layout: &TableLayout,
) -> String {
    let mut defs: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", ch_ident(&c.name), c.ch_type))
        .collect();
    defs.push(format!("{} UInt64", ch_ident(VERSION_COL)));
    defs.push(format!("{} UInt8", ch_ident(DELETED_COL)));
    if layout.keyless {
        defs.push(format!("{} UInt64", ch_ident(SEQ_COL)));
    }
    // Append and keyless tables keep deleted versions: FINAL must not drop them.
    let engine =
        if caps.is_deleted_engine && layout.engine == TableEngine::Replacing && !layout.keyless {
            format!(
                "ReplacingMergeTree({}, {})",
                ch_ident(VERSION_COL),
                ch_ident(DELETED_COL)
            )
        } else {
            format!("ReplacingMergeTree({})", ch_ident(VERSION_COL))
        };
    let partition = layout
        .partition_by
        .as_ref()
        .map(|p| format!(" PARTITION BY {p}"))
        .unwrap_or_default();
    let settings = layout
        .purge_after_secs
        .and_then(|secs| purge_settings(secs, caps))
        .map(|s| format!(" SETTINGS {s}"))
        .unwrap_or_default();
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} ({}) ENGINE = {}{} ORDER BY ({}){}",
        ch_ident(db),
        ch_ident(table),
        defs.join(", "),
        engine,
        partition,
        sort_key_sql(cols, layout).join(", "),
        settings
    )
}

/// The view `<table>_live` of a table's live rows: FINAL without deleted rows, and for an
/// append table the latest version of each row.
pub fn live_view_sql(
    db: &str,
    table: &str,
    cols: &[ChColumn],
    layout: &TableLayout,
) -> (String, String) {
    let view = format!("{table}{LIVE_VIEW_SUFFIX}");
    let from = format!("{}.{}", ch_ident(db), ch_ident(table));
    let body = match layout.engine {
        _ if layout.keyless => {
            let names: Vec<String> = cols.iter().map(|c| ch_ident(&c.name)).collect();
            let names = names.join(", ");
            format!(
                "SELECT {names}, sum(if({} = 1, -1, 1)) AS {} FROM {from} FINAL GROUP BY {names} HAVING {} > 0",
                ch_ident(DELETED_COL),
                ch_ident(COUNT_COL),
                ch_ident(COUNT_COL)
            )
        }
        TableEngine::Replacing => format!(
            "SELECT * FROM {from} FINAL WHERE {} = 0",
            ch_ident(DELETED_COL)
        ),
        TableEngine::Append => {
            let mut keys = sort_key_sql(cols, layout);
            keys.pop();
            format!(
                "SELECT * FROM (SELECT * FROM {from} FINAL ORDER BY {} DESC LIMIT 1 BY {}) WHERE {} = 0",
                ch_ident(VERSION_COL),
                keys.join(", "),
                ch_ident(DELETED_COL)
            )
        }
    };
    (
        format!("DROP TABLE IF EXISTS {}.{}", ch_ident(db), ch_ident(&view)),
        format!("CREATE VIEW {}.{} AS {body}", ch_ident(db), ch_ident(&view)),
    )
}

/// Why an existing ClickHouse table does not have the layout a mapping asks for (its
/// `system.tables` sorting and partition keys), or `None` when it has it. Keys compare
/// without spaces and quotes.
pub fn layout_mismatch(
    cols: &[ChColumn],
    layout: &TableLayout,
    sorting_key: &str,
    partition_key: &str,
) -> Option<String> {
    // Servers print `(id)` or `id`, `tenant, id` or `(tenant, id)`.
    let norm = |s: &str| {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '`' && *c != '"')
            .collect();
        match s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            Some(inner) if !inner.contains(['(', ')']) => inner.to_string(),
            _ => s,
        }
    };
    let want_sort = norm(&sort_key_sql(cols, layout).join(","));
    let want_part = norm(layout.partition_by.as_deref().unwrap_or(""));
    if norm(sorting_key) != want_sort {
        return Some(format!(
            "is sorted by {sorting_key}, tributary would sort it by ({})",
            sort_key_sql(cols, layout).join(", ")
        ));
    }
    if norm(partition_key) != want_part {
        return Some(format!(
            "is partitioned by `{partition_key}`, tributary would partition it by `{}`",
            layout.partition_by.as_deref().unwrap_or("")
        ));
    }
    None
}

pub fn add_column_sql(db: &str, table: &str, col: &ChColumn) -> String {
    let default = col
        .default_expr
        .as_ref()
        .map(|d| format!(" DEFAULT {d}"))
        .unwrap_or_default();
    format!(
        "ALTER TABLE {}.{} ADD COLUMN {} {}{}",
        ch_ident(db),
        ch_ident(table),
        ch_ident(&col.name),
        col.ch_type,
        default
    )
}

/// The form of an insert's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowForm {
    /// What the encoder writes (and a passthrough copy).
    TabSeparated,
    /// A binary copy's rows (see `rowbinary`).
    RowBinary,
}

impl RowForm {
    pub fn name(self) -> &'static str {
        match self {
            RowForm::TabSeparated => "TabSeparated",
            RowForm::RowBinary => "RowBinary",
        }
    }
}

/// `INSERT INTO db.table (cols…, _version, _is_deleted[, _seq]) FORMAT TabSeparated`,
/// `_seq` for a keyless table.
pub fn insert_sql<'a>(
    db: &str,
    table: &str,
    cols: impl Iterator<Item = &'a str>,
    keyless: bool,
) -> String {
    insert_sql_as(db, table, cols, keyless, RowForm::TabSeparated)
}

/// [`insert_sql`] with rows in `form`.
pub fn insert_sql_as<'a>(
    db: &str,
    table: &str,
    cols: impl Iterator<Item = &'a str>,
    keyless: bool,
    form: RowForm,
) -> String {
    let mut names: Vec<String> = cols.map(ch_ident).collect();
    names.push(ch_ident(VERSION_COL));
    names.push(ch_ident(DELETED_COL));
    if keyless {
        names.push(ch_ident(SEQ_COL));
    }
    format!(
        "INSERT INTO {}.{} ({}) FORMAT {}",
        ch_ident(db),
        ch_ident(table),
        names.join(", "),
        form.name()
    )
}

/// Values that a column could not hold as they were.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EncodeStats {
    /// Dates and timestamps outside ClickHouse's range, stored at the nearest bound.
    pub clamped: u64,
    /// Values the column type cannot hold (NaN in a Decimal, an unparsable value): stored as
    /// NULL (or the type's default when the column is not nullable).
    pub unrepresentable: u64,
}

/// Appends one TSV row: the given cells under `cols`, then `_version` and `_is_deleted`.
/// `Cell::UnchangedToast` must have been resolved by the caller.
pub fn encode_row<'c>(
    out: &mut Vec<u8>,
    cols: impl Iterator<Item = (&'c ChColumn, &'c Cell)>,
    version: u64,
    deleted: bool,
    stats: &mut EncodeStats,
) {
    for (col, cell) in cols {
        encode_field(out, col, cell, stats);
        out.push(b'\t');
    }
    end_row(out, version, deleted);
}

/// Appends one field (no separator).
pub fn encode_field(out: &mut Vec<u8>, col: &ChColumn, cell: &Cell, stats: &mut EncodeStats) {
    match cell {
        Cell::Text(v) => encode_value(out, col, v, stats),
        Cell::Null | Cell::UnchangedToast => write_null(out, col),
    }
}

/// Appends `_version`, `_is_deleted` and the newline.
pub fn end_row(out: &mut Vec<u8>, version: u64, deleted: bool) {
    let mut b = itoa_u64(version);
    out.extend_from_slice(b.as_bytes_mut());
    out.extend_from_slice(if deleted { b"\t1\n" } else { b"\t0\n" });
}

/// [`end_row`] for a keyless table: `_seq` after `_is_deleted`.
pub fn end_row_seq(out: &mut Vec<u8>, version: u64, deleted: bool, seq: u64) {
    end_row(out, version, deleted);
    out.pop();
    out.push(b'\t');
    let mut b = itoa_u64(seq);
    out.extend_from_slice(b.as_bytes_mut());
    out.push(b'\n');
}

struct Digits([u8; 20], usize);
impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.0[self.1..]
    }
}
fn itoa_u64(mut v: u64) -> Digits {
    let mut d = Digits([0; 20], 20);
    loop {
        d.1 -= 1;
        d.0[d.1] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return d;
        }
    }
}

fn write_null(out: &mut Vec<u8>, col: &ChColumn) {
    if col.nullable {
        out.extend_from_slice(b"\\N");
    } else {
        write_default(out, &col.codec);
    }
}

fn write_default(out: &mut Vec<u8>, codec: &Codec) {
    out.extend_from_slice(default_text(codec));
}

/// What a column of `codec` that cannot hold NULL gets for one: its type's zero value.
fn default_text(codec: &Codec) -> &'static [u8] {
    match codec {
        Codec::Text | Codec::Bytea => b"",
        Codec::Array(_) => b"[]",
        Codec::Bool { words: true } => b"false",
        Codec::Date32 => b"1970-01-01",
        Codec::DateTime64 => b"1970-01-01 00:00:00",
        _ => b"0",
    }
}

fn encode_value(out: &mut Vec<u8>, col: &ChColumn, v: &[u8], stats: &mut EncodeStats) {
    let mark = out.len();
    if !encode_scalar(out, &col.codec, v, false, stats) {
        out.truncate(mark);
        stats.unrepresentable += 1;
        write_null(out, col);
    }
}

/// Postgres's text of an integer: an optional minus sign and digits.
fn is_integer_text(v: &[u8]) -> bool {
    let d = v.strip_prefix(b"-").unwrap_or(v);
    !d.is_empty() && d.iter().all(u8::is_ascii_digit)
}

/// Postgres's text of a finite numeric: an optional minus sign, digits, and optionally a
/// point and digits.
fn is_decimal_text(v: &[u8]) -> bool {
    let d = v.strip_prefix(b"-").unwrap_or(v);
    match d.iter().position(|&b| b == b'.') {
        None => is_integer_text(d) && !d.starts_with(b"-"),
        Some(i) => {
            let (int, frac) = (&d[..i], &d[i + 1..]);
            !int.is_empty()
                && !frac.is_empty()
                && int.iter().all(u8::is_ascii_digit)
                && frac.iter().all(u8::is_ascii_digit)
        }
    }
}

/// Writes one value; `quoted` is the form inside an array. Returns false when the value
/// cannot be represented (the caller writes NULL or the default instead).
fn encode_scalar(
    out: &mut Vec<u8>,
    codec: &Codec,
    v: &[u8],
    quoted: bool,
    stats: &mut EncodeStats,
) -> bool {
    let text = || std::str::from_utf8(v).ok();
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        if quoted {
            quoted_escape(out, bytes)
        } else {
            tsv_escape(out, bytes)
        }
    };
    match codec {
        Codec::Text => put(out, v),
        // Written as they come only when they are what the column's type prints: after a
        // type change (an int column now text) anything may arrive, and a tab or newline in
        // it would split the row and forge columns of the next ones.
        Codec::Number if is_integer_text(v) => out.extend_from_slice(v),
        Codec::Number => return false,
        Codec::Float => match text() {
            Some(t) => out.extend_from_slice(float_text(t).as_bytes()),
            None => return false,
        },
        Codec::Decimal => {
            if !is_decimal_text(v) {
                return false; // NaN, ±Infinity (no Decimal has them), or not a number at all
            }
            out.extend_from_slice(v)
        }
        Codec::Bool { words } => {
            let t = match v {
                b"t" => true,
                b"f" => false,
                _ => return false,
            };
            out.extend_from_slice(match (words, t) {
                (true, true) => b"true",
                (true, false) => b"false",
                (false, true) => b"1",
                (false, false) => b"0",
            });
        }
        Codec::Date32 => {
            let Some(mut d) = text().and_then(parse_date_days) else {
                return false;
            };
            if !(D32_MIN..=D32_MAX).contains(&d) {
                stats.clamped += 1;
                d = d.clamp(D32_MIN, D32_MAX);
            }
            let mut tmp = Vec::with_capacity(12);
            write_date_days(&mut tmp, d);
            put(out, &tmp);
        }
        Codec::DateDays => {
            let Some(d) = text().and_then(parse_date_days) else {
                return false;
            };
            // Written in place: no string per value.
            write_i64(out, d);
        }
        Codec::DateTime64 => {
            let Some(mut us) = parse_timestamp_micros_bytes(v) else {
                return false;
            };
            if !(DT64_MIN..=DT64_MAX).contains(&us) {
                stats.clamped += 1;
                us = us.clamp(DT64_MIN, DT64_MAX);
            }
            // Digits, '-', ' ', ':' and '.': nothing to escape, only quotes inside arrays.
            if quoted {
                out.push(b'\'');
            }
            write_datetime_micros(out, us);
            if quoted {
                out.push(b'\'');
            }
        }
        Codec::TimestampMicros => {
            let Some(us) = parse_timestamp_micros_bytes(v) else {
                return false;
            };
            write_i64(out, us);
        }
        Codec::Bytea => {
            let Some(raw) = parse_bytea_hex(v) else {
                return false;
            };
            put(out, &raw);
        }
        Codec::Array(inner) => {
            if quoted {
                return false; // nested arrays map to String, never here
            }
            let Some(elems) = text().and_then(parse_array) else {
                return false;
            };
            let mut arr = Vec::with_capacity(v.len() + 8);
            arr.push(b'[');
            for (i, e) in elems.iter().enumerate() {
                if i > 0 {
                    arr.push(b',');
                }
                match e {
                    ArrayElem::Null => arr.extend_from_slice(b"NULL"),
                    // 18.16 reads a bare `nan` in Array(Nullable(Float*)) as the start of
                    // NULL and fails the insert; `-nan` is NaN on every version.
                    ArrayElem::Value(s) if **inner == Codec::Float && s == "NaN" => {
                        arr.extend_from_slice(b"-nan")
                    }
                    ArrayElem::Value(s) => {
                        let mark = arr.len();
                        if !encode_scalar(
                            &mut arr,
                            inner,
                            s.as_bytes(),
                            inner.quoted_in_array(),
                            stats,
                        ) {
                            arr.truncate(mark);
                            stats.unrepresentable += 1;
                            arr.extend_from_slice(b"NULL");
                        }
                    }
                }
            }
            arr.push(b']');
            // ClickHouse reads an array in TSV straight from the line (single-level escaping):
            // quoted_escape already escaped tabs, newlines and backslashes.
            out.extend_from_slice(&arr);
        }
    }
    true
}

/// `col = value` for a lookup by key, `value` being the key's text as ClickHouse reads it.
/// The literal is cast to the column type: 18.16 has no implicit String comparison
/// (`Int32 = String` is an error there).
pub fn key_equals_sql(col: &ChColumn, value: &str) -> String {
    format!(
        "{} = CAST({} AS {})",
        ch_ident(&col.name),
        ch_literal(value),
        col.ch_type
    )
}

/// The expression that reads a stored column back for a TOAST lookup. Bytes columns are
/// read as hex: the reply is read as UTF-8 text, which would mangle arbitrary bytes.
pub fn stored_select_expr(col: &ChColumn) -> String {
    let ident = ch_ident(&col.name);
    match &col.codec {
        Codec::Bytea => format!("hex({ident})"),
        Codec::Array(inner) if **inner == Codec::Bytea => format!("arrayMap(x -> hex(x), {ident})"),
        _ => ident,
    }
}

/// A field read with [`stored_select_expr`] (TabSeparated output) as the TSV field to insert
/// again; `None` when it is not what that expression prints.
pub fn stored_field_tsv(col: &ChColumn, field: &str) -> Option<Vec<u8>> {
    let unhex = |h: &str| parse_bytea_hex(format!("\\x{h}").as_bytes());
    let mut out = Vec::with_capacity(field.len());
    match &col.codec {
        _ if field == "\\N" => out.extend_from_slice(field.as_bytes()),
        Codec::Bytea => tsv_escape(&mut out, &unhex(field)?),
        Codec::Array(inner) if **inner == Codec::Bytea => {
            let body = field.strip_prefix('[')?.strip_suffix(']')?;
            out.push(b'[');
            for (i, e) in body.split(',').filter(|e| !e.is_empty()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match e {
                    "NULL" => out.extend_from_slice(b"NULL"),
                    e => {
                        quoted_escape(&mut out, &unhex(e.strip_prefix('\'')?.strip_suffix('\'')?)?)
                    }
                }
            }
            out.push(b']');
        }
        _ => out.extend_from_slice(field.as_bytes()),
    }
    Some(out)
}

/// `Code: 60. DB::Exception` (current) or `Code: 60, e.displayText()` (18.16): the error code
/// in a ClickHouse server's error text.
pub fn parse_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A ClickHouse error text without the row data it quotes (a parse error shows the input
/// after the failing point and a per-column diagnosis of the row): fit for `/status`, which
/// anyone who can reach the listener reads. The rest (code, reason, column names and types,
/// the error code's name) stays.
pub fn hide_row_data(text: &str) -> String {
    const HIDDEN: &str = "<row data hidden>";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // `… before: <input>: (at row N)`: the input up to the position, or to the end.
    while let Some(i) = rest.find("before: ") {
        out.push_str(&rest[..i + "before: ".len()]);
        out.push_str(HIDDEN);
        rest = &rest[i + "before: ".len()..];
        rest = rest.find(": (at row").map_or("", |e| &rest[e..]);
    }
    out.push_str(rest);
    // The diagnosis: `Row 1:` then a `Column …` line per column, quoting each value.
    out.lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("Column ") || (l.starts_with("Row ") && l.ends_with(':')))
        })
        .map(|l| match l.find("text \"") {
            Some(i) => format!("{}text {HIDDEN}", &l[..i]),
            None => l.to_string(),
        })
        .filter(|l| !l.trim().is_empty() && l.trim() != ":")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_errors_lose_their_row_data() {
        // As the servers answer (captured from each).
        let ch18 = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: secret42\\tpassword-value\\n: (at row 1)\n\nRow 1:\nColumn 0,   name: id, type: Int64,  ERROR: text \"secret42<TAB>p\" is not like Int64\n\n, e.what() = DB::Exception";
        let ch26 = "Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: 'secret42\\tpassword-value\\n': (at row 1)\n: \nRow 1:\nColumn 0,   name: id, type: Int64,  ERROR: text \"secret42<TAB>p\" is not like Int64\n\n: While executing ParallelParsingBlockInputFormat: While executing File. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1 (chdb))";
        for text in [ch18, ch26] {
            let shown = super::hide_row_data(text);
            assert!(
                !shown.contains("secret42") && !shown.contains("password"),
                "{shown}"
            );
            assert!(
                shown.contains("Code: 27")
                    && shown.contains("Cannot parse input")
                    && shown.contains("(at row 1)"),
                "{shown}"
            );
        }
        assert!(super::hide_row_data(ch26).contains("(CANNOT_PARSE_INPUT_ASSERTION_FAILED)"));
        // Without row data: as it was (on one line).
        let plain = "Code: 60. DB::Exception: Table db.t does not exist. (UNKNOWN_TABLE)";
        assert_eq!(super::hide_row_data(plain), plain);
        // Input to the end of the text, and a stray `text "…"` elsewhere.
        assert_eq!(
            super::hide_row_data("x before: abc"),
            "x before: <row data hidden>"
        );
        assert_eq!(
            super::hide_row_data("bad: text \"v\" here"),
            "bad: text <row data hidden>"
        );
    }

    #[test]
    fn codes() {
        assert_eq!(
            parse_code("Code: 60. DB::Exception: x (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(
            parse_code("Code: 60, e.displayText() = DB::Exception"),
            Some(60)
        );
        assert_eq!(parse_code("nothing"), None);
    }

    use super::*;
    use bytes::Bytes;

    use crate::testing::column as col;

    #[test]
    fn caps_by_version() {
        let old = ServerCaps::from_version("18.16.1");
        assert!(!old.datetime64 && !old.is_deleted_engine && old.decimal_max_precision == 38);
        let new = ServerCaps::from_version("26.9.1.1");
        assert!(
            new.datetime64 && new.date32 && new.is_deleted_engine && new.json_type && new.bool_type
        );
    }

    #[test]
    fn mapping_per_generation() {
        let old = ServerCaps::from_version("18.16.1");
        let new = ServerCaps::from_version("26.9.1");
        let ts = col("ts", PgType::TimestampTz, true, false);
        assert_eq!(
            map_column(&ts, &new, JsonAs::String).ch_type,
            "Nullable(DateTime64(6, 'UTC'))"
        );
        assert_eq!(
            map_column(&ts, &old, JsonAs::String).ch_type,
            "Nullable(Int64)"
        );
        let e = col("mood", PgType::Enum("mood".into()), true, false);
        assert_eq!(
            map_column(&e, &new, JsonAs::String).ch_type,
            "LowCardinality(Nullable(String))"
        );
        let n = col("n", PgType::Numeric(Some((60, 10))), false, false);
        assert_eq!(
            map_column(&n, &new, JsonAs::String).ch_type,
            "Decimal(60, 10)"
        );
        let m = map_column(&n, &old, JsonAs::String);
        assert_eq!(m.ch_type, "String");
        assert!(m.note.is_some());
        let a = col("a", PgType::Array(Box::new(PgType::Int4)), true, false);
        assert_eq!(
            map_column(&a, &new, JsonAs::String).ch_type,
            "Array(Nullable(Int32))"
        );
        let j = col("j", PgType::Jsonb, false, false);
        assert_eq!(map_column(&j, &new, JsonAs::Json).ch_type, "JSON");
        assert_eq!(map_column(&j, &old, JsonAs::Json).ch_type, "String");
        let o = col("o", PgType::Other("point".into()), false, false);
        assert!(map_column(&o, &new, JsonAs::String)
            .note
            .unwrap()
            .contains("point"));
    }

    #[test]
    fn ddl_quotes_everything() {
        let new = ServerCaps::from_version("26.9.1");
        let cols = vec![
            map_column(&col("i`d", PgType::Int8, false, true), &new, JsonAs::String),
            map_column(
                &col("we\"ird; c", PgType::Text, true, false),
                &new,
                JsonAs::String,
            ),
        ];
        let sql = create_table_sql("db", "t; DROP", &cols, &new, &TableLayout::default());
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `db`.`t; DROP` (`i\\`d` Int64, `we\"ird; c` Nullable(String), `_version` UInt64, `_is_deleted` UInt8) ENGINE = ReplacingMergeTree(`_version`, `_is_deleted`) ORDER BY (`i\\`d`)"
        );
        let old = ServerCaps::from_version("18.16.1");
        assert!(
            create_table_sql("db", "t", &cols, &old, &TableLayout::default())
                .contains("ReplacingMergeTree(`_version`) ORDER BY")
        );
    }

    #[test]
    fn keyless_tables_keep_every_change_and_count_contents() {
        let new = ServerCaps::from_version("26.9.1");
        let c = |name: &str| Column {
            name: name.into(),
            pg_type: PgType::Int4,
            nullable: true,
            is_key: false,
            added_default: None,
            renamed_from: None,
        };
        let t = TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: "k".into(),
            columns: vec![c("a"), c("b")],
            identity: crate::schema::Identity::Full,
            order_by: vec![],
        };
        assert!(t.keyless());
        let cols = map_table(&t, &new, JsonAs::String);
        let layout = TableLayout {
            keyless: true,
            ..TableLayout::default()
        };
        let sql = create_table_sql("db", "k", &cols, &new, &layout);
        assert!(
            sql.ends_with("`_is_deleted` UInt8, `_seq` UInt64) ENGINE = ReplacingMergeTree(`_version`) ORDER BY (`_version`, `_seq`)"),
            "{sql}"
        );
        let (_, view) = live_view_sql("db", "k", &cols, &layout);
        assert_eq!(view, "CREATE VIEW `db`.`k_live` AS SELECT `a`, `b`, sum(if(`_is_deleted` = 1, -1, 1)) AS `_count` FROM `db`.`k` FINAL GROUP BY `a`, `b` HAVING `_count` > 0");
        assert!(insert_sql("db", "k", ["a"].into_iter(), true).contains("`_is_deleted`, `_seq`)"));
        let mut out = Vec::new();
        end_row_seq(&mut out, 42, true, 7);
        assert_eq!(out, b"42\t1\t7\n");
    }

    #[test]
    fn renames_use_rename_column_or_a_default_on_old_servers() {
        let c = ChColumn {
            name: "new".into(),
            ch_type: "Nullable(String)".into(),
            codec: Codec::Text,
            nullable: true,
            is_key: false,
            note: None,
            default_expr: None,
            renamed_from: Some("old".into()),
        };
        let new = ServerCaps::from_version("26.9.1");
        let old = ServerCaps::from_version("18.16.1");
        assert_eq!(
            rename_column_sql("d", "t", "old", &c, "Nullable(String)", &new),
            "ALTER TABLE `d`.`t` RENAME COLUMN `old` TO `new`"
        );
        assert_eq!(
            rename_column_sql("d", "t", "old", &c, "Nullable(String)", &old),
            "ALTER TABLE `d`.`t` ADD COLUMN `new` Nullable(String) DEFAULT `old`"
        );
        assert_eq!(
            rename_column_sql("d", "t", "old", &c, "Nullable(Int32)", &old),
            "ALTER TABLE `d`.`t` ADD COLUMN `new` Nullable(String) DEFAULT CAST(`old` AS Nullable(String))"
        );
    }

    #[test]
    fn layouts_set_the_sort_key_partitions_and_engine() {
        let new = ServerCaps::from_version("26.9.1");
        let c = |name: &str, is_key: bool, nullable: bool| Column {
            name: name.into(),
            pg_type: PgType::Int4,
            nullable,
            is_key,
            added_default: None,
            renamed_from: None,
        };
        let t = TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                c("id", true, false),
                c("tenant", false, false),
                c("v", false, true),
            ],
            identity: crate::schema::Identity::Full,
            order_by: vec!["tenant".into(), "id".into()],
        };
        let cols = map_table(&t, &new, JsonAs::String);
        // The sort key's columns are the ChColumns' keys, and not Nullable.
        assert_eq!(
            cols.iter()
                .map(|c| (c.is_key, c.ch_type.as_str()))
                .collect::<Vec<_>>(),
            vec![(true, "Int32"), (true, "Int32"), (false, "Nullable(Int32)")]
        );
        let layout = TableLayout {
            order_by: t.order_by.clone(),
            partition_by: Some("intDiv(`tenant`, 10)".into()),
            engine: TableEngine::Replacing,
            keyless: false,
            purge_after_secs: Some(3600),
        };
        let sql = create_table_sql("db", "t", &cols, &new, &layout);
        assert!(
            sql.ends_with("ENGINE = ReplacingMergeTree(`_version`, `_is_deleted`) PARTITION BY intDiv(`tenant`, 10) ORDER BY (`tenant`, `id`) SETTINGS allow_experimental_replacing_merge_with_cleanup = 1, enable_replacing_merge_with_cleanup_for_min_age_to_force_merge = 1, min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1"),
            "{sql}"
        );
        assert!(purge_settings(60, &ServerCaps::from_version("18.16.1")).is_none());
        assert_eq!(
            layout_mismatch(&cols, &layout, "tenant, id", "intDiv(tenant, 10)"),
            None
        );
        assert_eq!(
            layout_mismatch(&cols, &layout, "(tenant, id)", "intDiv(tenant, 10)"),
            None
        );
        assert!(layout_mismatch(&cols, &layout, "id", "intDiv(tenant, 10)").is_some());
        assert!(layout_mismatch(&cols, &layout, "tenant, id", "").is_some());
        let append = TableLayout {
            engine: TableEngine::Append,
            ..TableLayout::default()
        };
        let t = TableSchema {
            order_by: vec![],
            ..t
        };
        let cols = map_table(&t, &new, JsonAs::String);
        let sql = create_table_sql("db", "t", &cols, &new, &append);
        // Every version stays: no is_deleted engine parameter, `_version` in the sort key.
        assert!(
            sql.ends_with("ENGINE = ReplacingMergeTree(`_version`) ORDER BY (`id`, `_version`)"),
            "{sql}"
        );
        let (_, view) = live_view_sql("db", "t", &cols, &append);
        assert_eq!(
            view,
            "CREATE VIEW `db`.`t_live` AS SELECT * FROM (SELECT * FROM `db`.`t` FINAL ORDER BY `_version` DESC LIMIT 1 BY `id`) WHERE `_is_deleted` = 0"
        );
        assert_eq!(layout_mismatch(&cols, &append, "id, _version", ""), None);
    }

    fn enc(codec: Codec, nullable: bool, v: Option<&str>) -> (String, EncodeStats) {
        let c = ChColumn {
            name: "c".into(),
            ch_type: String::new(),
            codec,
            nullable,
            is_key: false,
            note: None,
            default_expr: None,
            renamed_from: None,
        };
        let cell = match v {
            Some(v) => Cell::Text(Bytes::copy_from_slice(v.as_bytes())),
            None => Cell::Null,
        };
        let mut out = Vec::new();
        let mut st = EncodeStats::default();
        encode_row(&mut out, std::iter::once((&c, &cell)), 7, false, &mut st);
        (String::from_utf8(out).unwrap(), st)
    }

    #[test]
    fn type_changes_widen_or_refuse() {
        use TypeChange::*;
        assert_eq!(type_change("Int32", "Int64"), Widen("Int64".into()));
        assert_eq!(
            type_change("Nullable(Int16)", "Nullable(Int64)"),
            Widen("Nullable(Int64)".into())
        );
        // A column that took NULLs keeps taking them.
        assert_eq!(
            type_change("Nullable(Int16)", "Int32"),
            Widen("Nullable(Int32)".into())
        );
        assert_eq!(
            type_change("Int64", "Int32"),
            Same,
            "a narrower type fits the wider column"
        );
        assert_eq!(type_change("String", "String"), Same);
        // SET NOT NULL needs nothing; DROP NOT NULL makes the column Nullable, also under
        // LowCardinality (enums).
        assert_eq!(
            type_change("LowCardinality(Nullable(String))", "LowCardinality(String)"),
            Same
        );
        assert_eq!(
            type_change("LowCardinality(String)", "LowCardinality(Nullable(String))"),
            Widen("LowCardinality(Nullable(String))".into())
        );
        assert_eq!(
            type_change("Int32", "Nullable(Int32)"),
            Widen("Nullable(Int32)".into())
        );
        assert_eq!(type_change("Decimal(10, 2)", "Decimal(10,2)"), Same);
        assert_eq!(
            type_change("Nullable(Decimal(5, 2))", "Nullable(Decimal(12, 4))"),
            Widen("Nullable(Decimal(12, 4))".into())
        );
        assert_eq!(
            type_change("Decimal(10, 2)", "Decimal(10, 4)"),
            Incompatible
        );
        assert_eq!(
            type_change("Decimal(10, 4)", "Decimal(12, 2)"),
            Incompatible
        );
        assert_eq!(type_change("Float32", "Float64"), Widen("Float64".into()));
        assert_eq!(type_change("Decimal(5, 9)", "Decimal(1, 20)"), Incompatible);
        assert_eq!(
            type_change("Nullable(Int32)", "Nullable(String)"),
            Incompatible
        );
        assert_eq!(type_change("String", "Int32"), Incompatible);
        assert_eq!(type_change("Int64", "DateTime64(6, 'UTC')"), Incompatible);
        assert_eq!(
            type_change("DateTime64(6, 'UTC')", "DateTime64(6,'UTC')"),
            Same
        );
        assert_eq!(
            modify_column_sql("d", "t", "n", "Int64"),
            "ALTER TABLE `d`.`t` MODIFY COLUMN `n` Int64"
        );
    }

    #[test]
    fn clashing_names_are_told() {
        assert!(name_clash("t", "t").is_some());
        assert!(name_clash("t", "t_live").is_some());
        assert!(name_clash("t_live", "t").is_some());
        assert!(name_clash("t", "t_live_live").is_none());
        assert!(name_clash("users", "users2").is_none());
    }

    #[test]
    fn encodes_values() {
        assert_eq!(enc(Codec::Text, true, Some("a\tb")).0, "a\\tb\t7\t0\n");
        assert_eq!(enc(Codec::Text, true, None).0, "\\N\t7\t0\n");
        assert_eq!(enc(Codec::Text, false, None).0, "\t7\t0\n");
        assert_eq!(enc(Codec::Float, true, Some("-Infinity")).0, "-inf\t7\t0\n");
        assert_eq!(
            enc(Codec::Bool { words: false }, true, Some("t")).0,
            "1\t7\t0\n"
        );
        assert_eq!(
            enc(Codec::DateTime64, true, Some("2024-01-02 03:04:05.5+00")).0,
            "2024-01-02 03:04:05.500000\t7\t0\n"
        );
        let (s, st) = enc(Codec::Date32, true, Some("0001-01-01"));
        assert_eq!((s.as_str(), st.clamped), ("1900-01-01\t7\t0\n", 1));
        assert_eq!(
            enc(Codec::DateDays, true, Some("0001-01-01")).0,
            "-719162\t7\t0\n"
        );
        assert_eq!(
            enc(Codec::TimestampMicros, true, Some("1970-01-01 00:00:01+00")).0,
            "1000000\t7\t0\n"
        );
        let (s, st) = enc(Codec::Decimal, true, Some("NaN"));
        assert_eq!((s.as_str(), st.unrepresentable), ("\\N\t7\t0\n", 1));
        assert_eq!(
            enc(Codec::Decimal, true, Some("-12.50")).0,
            "-12.50\t7\t0\n"
        );
        assert_eq!(enc(Codec::Number, true, Some("-42")).0, "-42\t7\t0\n");
        // After a type change anything may come for a number column: a value that would
        // split the row (and forge another row's columns) is not written, it is counted.
        for forged in [
            "5\t9999999999999\t0\n2\t77",
            "N/A",
            "",
            "-",
            "1e5",
            "1.",
            ".5",
            "--1",
        ] {
            let (s, st) = enc(Codec::Number, true, Some(forged));
            assert_eq!(
                (s.as_str(), st.unrepresentable),
                ("\\N\t7\t0\n", 1),
                "{forged:?}"
            );
            let (s, st) = enc(Codec::Decimal, false, Some(forged));
            assert_eq!(
                (s.as_str(), st.unrepresentable),
                ("0\t7\t0\n", 1),
                "{forged:?}"
            );
        }
        assert_eq!(enc(Codec::Bytea, true, Some("\\x0941")).0, "\\tA\t7\t0\n");
        assert_eq!(
            enc(
                Codec::Array(Box::new(Codec::Text)),
                false,
                Some(r#"{a,NULL,"it's\\"}"#)
            )
            .0,
            "['a',NULL,'it\\'s\\\\']\t7\t0\n"
        );
        assert_eq!(
            enc(
                Codec::Array(Box::new(Codec::Number)),
                false,
                Some("{1,NULL}")
            )
            .0,
            "[1,NULL]\t7\t0\n"
        );
        assert_eq!(
            enc(
                Codec::Array(Box::new(Codec::Float)),
                false,
                Some("{1.5,NaN,-Infinity,NULL}")
            )
            .0,
            "[1.5,-nan,-inf,NULL]\t7\t0\n"
        );
        let (s, st) = enc(Codec::DateTime64, false, Some("not a time"));
        assert_eq!(
            (s.as_str(), st.unrepresentable),
            ("1970-01-01 00:00:00\t7\t0\n", 1)
        );
    }

    #[test]
    fn key_lookup_casts_the_literal() {
        let c = |t: PgType, caps: &str| {
            map_column(
                &col("k", t, false, true),
                &ServerCaps::from_version(caps),
                JsonAs::String,
            )
        };
        assert_eq!(
            key_equals_sql(&c(PgType::Int4, "18.16.1"), "1"),
            "`k` = CAST('1' AS Int32)"
        );
        assert_eq!(
            key_equals_sql(
                &c(PgType::TimestampTz, "26.9.1"),
                "2024-01-02 03:04:05.000000"
            ),
            "`k` = CAST('2024-01-02 03:04:05.000000' AS DateTime64(6, 'UTC'))"
        );
        assert_eq!(
            key_equals_sql(&c(PgType::Text, "18.16.1"), "it's"),
            "`k` = CAST('it\\'s' AS String)"
        );
    }

    #[test]
    fn stored_bytes_read_back_as_hex() {
        let c = |codec: Codec| ChColumn {
            name: "b".into(),
            ch_type: String::new(),
            codec,
            nullable: true,
            is_key: false,
            note: None,
            default_expr: None,
            renamed_from: None,
        };
        let b = c(Codec::Bytea);
        assert_eq!(stored_select_expr(&b), "hex(`b`)");
        assert_eq!(
            stored_field_tsv(&b, "00FF095C27").unwrap(),
            b"\\0\xff\\t\\\\'"
        );
        assert_eq!(stored_field_tsv(&b, "\\N").unwrap(), b"\\N");
        assert_eq!(stored_field_tsv(&b, "0"), None);
        let a = c(Codec::Array(Box::new(Codec::Bytea)));
        assert_eq!(stored_select_expr(&a), "arrayMap(x -> hex(x), `b`)");
        assert_eq!(
            stored_field_tsv(&a, "['FF27',NULL,'']").unwrap(),
            b"['\xff\\'',NULL,'']"
        );
        assert_eq!(stored_field_tsv(&a, "[]").unwrap(), b"[]");
        let t = c(Codec::Text);
        assert_eq!(stored_select_expr(&t), "`b`");
        assert_eq!(stored_field_tsv(&t, "it\\'s").unwrap(), b"it\\'s");
    }
}
