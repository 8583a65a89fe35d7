//! The source-side table model shared by the Postgres source and every sink: tables, columns
//! and their resolved Postgres types. Sinks meet Postgres only through these types, never
//! through pgoutput.

use std::sync::Arc;

/// A Postgres type, resolved through the catalog (domains to their base type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p, s)`; `None` for unconstrained `numeric`.
    Numeric(Option<(u32, u32)>),
    Text,
    Bytea,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    /// A user-defined enum (labels are not needed: values arrive as text).
    Enum(String),
    /// A one-dimensional array; multi-dimensional columns resolve to [`PgType::Other`].
    Array(Box<PgType>),
    /// Anything else, by name: stored as its text form.
    Other(String),
}

impl PgType {
    /// Types known by OID without a catalog lookup. `type_mod` is the column's atttypmod.
    pub fn builtin(oid: u32, type_mod: i32) -> Option<PgType> {
        use PgType::*;
        let numeric = || {
            Numeric((type_mod >= 4).then(|| {
                let m = (type_mod - 4) as u32;
                ((m >> 16) & 0xffff, m & 0xffff)
            }))
        };
        Some(match oid {
            16 => Bool,
            17 => Bytea,
            18 | 19 | 25 | 142 | 1042 | 1043 => Text,
            20 => Int8,
            21 => Int2,
            23 => Int4,
            114 => Json,
            700 => Float4,
            701 => Float8,
            1082 => Date,
            1083 => Time,
            1114 => Timestamp,
            1184 => TimestampTz,
            1186 => Interval,
            1266 => TimeTz,
            1700 => numeric(),
            2950 => Uuid,
            3802 => Jsonb,
            1000 => Array(Box::new(Bool)),
            1001 => Array(Box::new(Bytea)),
            1005 => Array(Box::new(Int2)),
            1007 => Array(Box::new(Int4)),
            1009 | 1014 | 1015 => Array(Box::new(Text)),
            1016 => Array(Box::new(Int8)),
            1021 => Array(Box::new(Float4)),
            1022 => Array(Box::new(Float8)),
            1115 => Array(Box::new(Timestamp)),
            1182 => Array(Box::new(Date)),
            1183 => Array(Box::new(Time)),
            1185 => Array(Box::new(TimestampTz)),
            1187 => Array(Box::new(Interval)),
            1231 => Array(Box::new(numeric())),
            2951 => Array(Box::new(Uuid)),
            199 => Array(Box::new(Json)),
            3807 => Array(Box::new(Jsonb)),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub pg_type: PgType,
    /// Postgres allows NULL here (columns added while streaming are assumed nullable).
    pub nullable: bool,
    /// Part of the key: the primary key, or the replica identity index (the ClickHouse
    /// ORDER BY).
    pub is_key: bool,
    /// For a column added while streaming with a constant default: the value (text form) that
    /// the rows written before the ALTER now hold in Postgres (`pg_attribute.attmissingval`).
    pub added_default: Option<String>,
    /// For a column renamed while streaming: the name it had before (a hint for the sinks,
    /// which rename their column instead of adding one).
    pub renamed_from: Option<String>,
}

/// What Postgres sends of the old row of an update or delete (`REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Identity {
    /// The key columns (primary key, or the replica identity index): `DEFAULT` or `USING
    /// INDEX`, or not known (a table learned from Debezium events).
    #[default]
    Key,
    /// Every column (`REPLICA IDENTITY FULL`).
    Full,
    /// Nothing (`REPLICA IDENTITY NOTHING`, or `DEFAULT` without a primary key).
    Nothing,
}

/// A replicated table as the source knows it at one point of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSchema {
    /// pgoutput relation id (the table's OID).
    pub rel_id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub identity: Identity,
    /// The ClickHouse sort key, by column name, when a table mapping sets one (`order_by`);
    /// empty: the key columns. Rows are the same row downstream when these are equal.
    pub order_by: Vec<String>,
}

impl TableSchema {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub fn key_indexes(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect()
    }

    /// A table without key columns under REPLICA IDENTITY FULL: its rows are known only by
    /// their content (duplicates allowed), so ClickHouse keeps a count per content.
    pub fn keyless(&self) -> bool {
        self.identity == Identity::Full && !self.columns.iter().any(|c| c.is_key)
    }

    /// The sort key's columns, in sort order: `order_by` where set (names not among the
    /// columns are left out), else the key columns. Two versions of a row are the same row
    /// downstream when these are equal; an update that changes one moves the row.
    pub fn sort_indexes(&self) -> Vec<usize> {
        if self.order_by.is_empty() {
            return self.key_indexes();
        }
        self.order_by
            .iter()
            .filter_map(|n| self.columns.iter().position(|c| &c.name == n))
            .collect()
    }
}

pub type SharedSchema = Arc<TableSchema>;

/// `schema.table` → (schema, table); a bare `table` is in `public`. Quoted parts
/// (`"My Schema"."t.1"`) keep dots and case.
pub fn split_table_name(s: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if cur.is_empty() && !quoted_part => {
                quoted_part = true;
                loop {
                    match chars.next()? {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        '"' => break,
                        c => cur.push(c),
                    }
                }
            }
            '.' => {
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            c if quoted_part => {
                let _ = c;
                return None;
            }
            c => cur.push(c),
        }
    }
    parts.push(cur);
    match parts.as_slice() {
        [t] if !t.is_empty() => Some(("public".into(), t.clone())),
        [s, t] if !s.is_empty() && !t.is_empty() => Some((s.clone(), t.clone())),
        _ => None,
    }
}

/// Columns renamed between two states of one table, told apart from a drop and an add by the
/// attribute number (a rename keeps it, an added column gets a new one): (old, new) names.
/// `before` and `now` are (attnum, name) pairs.
pub fn renamed(before: &[(i16, String)], now: &[(i16, String)]) -> Vec<(String, String)> {
    now.iter()
        .filter_map(|(n, name)| {
            let (_, old) = before.iter().find(|(b, _)| b == n)?;
            (old != name).then(|| (old.clone(), name.clone()))
        })
        .collect()
}

/// Quotes a Postgres identifier (`"a ""b"""`), always.
pub fn pg_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a Postgres string literal (`'it''s'`), with standard_conforming_strings on.
pub fn pg_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names() {
        assert_eq!(split_table_name("t"), Some(("public".into(), "t".into())));
        assert_eq!(split_table_name("s.t"), Some(("s".into(), "t".into())));
        assert_eq!(
            split_table_name("\"My S\".\"we\"\"ird; t.x\""),
            Some(("My S".into(), "we\"ird; t.x".into()))
        );
        assert_eq!(split_table_name("a.b.c"), None);
        assert_eq!(split_table_name(""), None);
        assert_eq!(split_table_name("\"unterminated"), None);
    }

    #[test]
    fn numeric_typmod() {
        // numeric(10,2): typmod = ((10 << 16) | 2) + 4
        assert_eq!(
            PgType::builtin(1700, (10 << 16 | 2) + 4),
            Some(PgType::Numeric(Some((10, 2))))
        );
        assert_eq!(PgType::builtin(1700, -1), Some(PgType::Numeric(None)));
    }

    #[test]
    fn renames_are_told_by_attribute_number() {
        let cols = |v: &[(i16, &str)]| -> Vec<(i16, String)> {
            v.iter().map(|(n, s)| (*n, s.to_string())).collect()
        };
        let before = cols(&[(1, "id"), (2, "a"), (3, "b")]);
        // a renamed to x; b dropped and a new b added (attnum 4): no rename.
        let now = cols(&[(1, "id"), (2, "x"), (4, "b")]);
        assert_eq!(
            renamed(&before, &now),
            vec![("a".to_string(), "x".to_string())]
        );
        assert!(renamed(&before, &before).is_empty());
    }

    #[test]
    fn quoting() {
        assert_eq!(pg_ident("we\"ird; t"), "\"we\"\"ird; t\"");
        assert_eq!(pg_literal("it's"), "'it''s'");
    }
}
