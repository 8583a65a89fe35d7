//! Which Postgres tables a CDC pipeline replicates, and how: the configured tables
//! (`postgres.tables` and every `[[pipeline.table]]`) as Postgres has them now, the
//! publication spec of each (its mapping's column list and row filter), and, once the
//! publication is settled, each table's replicated shape (the published columns, the
//! mapping's sort key). Shared by the Postgres source and `tributary check`.
//!
//! Must never: replicate a table under another table's mapping, or a column the publication
//! does not send.

use crate::clients::postgres::catalog::{self, TypeResolver};
use crate::clients::postgres::publication::{PublishSpec, PublishedTable};
use crate::clients::postgres::{PgError, PgParams};
use crate::config::{mapping_for, PostgresConfig, TableMapping};
use crate::protocol::mapping::{published_columns, shape};
use crate::protocol::schema::{split_table_name, TableSchema};
use tokio_postgres::Client;

/// `postgres.tables` and the mapped tables, each once, in that order.
pub fn wanted(pg: &PostgresConfig, mappings: &[TableMapping]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in pg
        .tables
        .iter()
        .filter_map(|t| split_table_name(t))
        .chain(mappings.iter().filter_map(|m| m.source()))
    {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The publication spec of every wanted table.
pub async fn specs(
    c: &Client,
    p: &PgParams,
    types: &mut TypeResolver,
    wanted: &[(String, String)],
    mappings: &[TableMapping],
) -> Result<Vec<PublishSpec>, PgError> {
    let mut out = Vec::new();
    for (s, t) in wanted {
        let oid = catalog::table_oid(c, p, s, t).await?.ok_or_else(|| {
            PgError::Setup(format!(
                "table {s}.{t} (postgres.tables or [[pipeline.table]]) does not exist in Postgres"
            ))
        })?;
        let table = catalog::load_table(c, p, types, oid).await?;
        let m = mapping_for(mappings, s, t);
        let columns = match m {
            Some(m) => {
                published_columns(&table, &m.columns, &m.exclude_columns).map_err(PgError::Setup)?
            }
            None => None,
        };
        out.push(PublishSpec {
            table,
            columns,
            filter: m.and_then(|m| m.filter.clone()),
        });
    }
    Ok(out)
}

/// The replicated shape of a published table: its published columns, its mapping's sort key.
/// The table as [`specs`] loaded it is taken from `specs` (no second catalog read).
pub async fn replicated(
    c: &Client,
    p: &PgParams,
    types: &mut TypeResolver,
    t: &PublishedTable,
    specs: &[PublishSpec],
    mappings: &[TableMapping],
) -> Result<TableSchema, PgError> {
    let full = match specs.iter().find(|s| s.table.rel_id == t.oid) {
        Some(s) => s.table.clone(),
        None => catalog::load_table(c, p, types, t.oid).await?,
    };
    let order_by = mapping_for(mappings, &full.schema, &full.name)
        .map(|m| m.order_by.as_slice())
        .unwrap_or(&[]);
    shape(full, t.columns.as_deref(), order_by).map_err(PgError::Setup)
}
