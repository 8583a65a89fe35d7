//! `[[pipeline.table]]`: how one Postgres table of a CDC pipeline is replicated. Its target
//! name, which columns and rows (a Postgres 15 publication column list and row filter, so
//! the snapshot and the stream see the same), and its ClickHouse layout (sort key,
//! partitions, engine). A table listed here is replicated as if `postgres.tables` listed it.
//!
//! Must never: let a mapping reach a table it does not name (the names are matched exactly,
//! after the same `schema.table` parsing as `postgres.tables`).

use crate::value::HumanDuration;
use serde::Deserialize;
use tributary_protocol::chtypes::{TableEngine, TableLayout};
use tributary_protocol::schema::split_table_name;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// The Postgres table, `schema.table` (a bare name is in `public`).
    pub name: String,
    /// The ClickHouse table; default: `clickhouse.table_template`.
    #[serde(default)]
    pub target: Option<String>,
    /// Replicate only these columns (they must include the key).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Replicate every column but these.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Replicate only rows for which this SQL condition over the row's columns holds
    /// (a publication row filter: on key columns only, unless REPLICA IDENTITY FULL).
    #[serde(default)]
    pub filter: Option<String>,
    /// The ClickHouse sort key; it must hold every key column. Default: the key.
    #[serde(default)]
    pub order_by: Vec<String>,
    /// A ClickHouse `PARTITION BY` expression.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// `replacing` (the latest version of each row) or `append` (every change kept).
    #[serde(default)]
    pub engine: TableEngine,
    /// Purge deleted rows (ClickHouse 24.1 and later) once their partition has had no new
    /// data for this long; default: deleted rows stay (as tombstones).
    #[serde(default)]
    pub purge_deleted_after: Option<HumanDuration>,
}

impl TableMapping {
    /// (schema, table) of [`TableMapping::name`], if it parses.
    pub fn source(&self) -> Option<(String, String)> {
        split_table_name(&self.name)
    }

    /// The ClickHouse layout it asks for.
    pub fn layout(&self) -> TableLayout {
        TableLayout {
            order_by: self.order_by.clone(),
            partition_by: self.partition_by.clone(),
            engine: self.engine,
            keyless: false,
            purge_after_secs: self.purge_deleted_after.map(|d| d.0.as_secs()),
        }
    }

    /// Whether it selects columns or rows (which only a publication can do).
    pub fn selects(&self) -> bool {
        !self.columns.is_empty() || !self.exclude_columns.is_empty() || self.filter.is_some()
    }

    /// What is wrong with it on its own, as (key, message).
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        if self.source().is_none() {
            return Some((
                "name",
                format!("`{}` is not `table` or `schema.table`", self.name),
            ));
        }
        if !self.columns.is_empty() && !self.exclude_columns.is_empty() {
            return Some((
                "columns",
                "give `columns` or `exclude_columns`, not both".into(),
            ));
        }
        let blank = |v: &[String]| v.iter().any(|c| c.is_empty());
        if blank(&self.columns) || blank(&self.exclude_columns) || blank(&self.order_by) {
            return Some(("columns", "a column name is empty".into()));
        }
        if self.target.as_deref() == Some("") {
            return Some(("target", "must not be empty".into()));
        }
        if let Some(d) = self.purge_deleted_after {
            if self.engine != TableEngine::Replacing {
                return Some((
                    "purge_deleted_after",
                    "an append table keeps every change; purging needs engine = \"replacing\""
                        .into(),
                ));
            }
            if d.0 < std::time::Duration::from_secs(60) {
                return Some((
                    "purge_deleted_after",
                    "must be at least 60s (a deleted row must outlive any replay)".into(),
                ));
            }
        }
        for (key, v) in [
            ("filter", &self.filter),
            ("partition_by", &self.partition_by),
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Some((key, "must not be empty".into()));
            }
        }
        None
    }
}

/// The mapping of Postgres table `schema`.`name`, if one names it.
pub fn mapping_for<'a>(
    tables: &'a [TableMapping],
    schema: &str,
    name: &str,
) -> Option<&'a TableMapping> {
    tables
        .iter()
        .find(|m| m.source().is_some_and(|(s, t)| s == schema && t == name))
}
