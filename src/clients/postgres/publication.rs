//! The publication a CDC pipeline streams from: created for the configured tables when it
//! does not exist, completed with tables it lacks, each with the column list and row filter
//! of its table mapping (Postgres 15), and read back: which tables it publishes, with which
//! columns and rows, so that the snapshot copies exactly what the stream will send.
//!
//! A row filter is checked inside the transaction that adds it, before COMMIT: Postgres only
//! refuses a filter on columns outside the replica identity when the *user's* next UPDATE or
//! DELETE runs, so a bad one is rolled back here instead.
//!
//! Must never: build SQL from names without quoting them, change the column list or filter of
//! a table the publication already has (that changes what other readers get, and what is in
//! ClickHouse would no longer match), or leave a filter that makes the user's writes fail.

use super::{PgError, PgParams};
use crate::protocol::mapping::{check_filter_columns, filter_attnums};
use crate::protocol::schema::{pg_ident, TableSchema};
use tokio_postgres::Client;

/// A table the pipeline wants published, with what of it.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    /// The table as Postgres has it now (every column, its identity).
    pub table: TableSchema,
    /// The column list; `None`: every column.
    pub columns: Option<Vec<String>>,
    /// The row filter, as the mapping writes it.
    pub filter: Option<String>,
}

impl PublishSpec {
    /// `"s"."t" ("a", "b") WHERE (…)` for CREATE / ALTER PUBLICATION.
    fn sql(&self) -> String {
        let mut s = format!(
            "{}.{}",
            pg_ident(&self.table.schema),
            pg_ident(&self.table.name)
        );
        if let Some(cols) = &self.columns {
            let cols: Vec<String> = cols.iter().map(|c| pg_ident(c)).collect();
            s.push_str(&format!(" ({})", cols.join(", ")));
        }
        if let Some(f) = &self.filter {
            s.push_str(&format!(" WHERE ({f})"));
        }
        s
    }

    fn same_table(&self, t: &PublishedTable) -> bool {
        self.table.schema == t.schema && self.table.name == t.name
    }
}

/// A published table: schema, name and OID, and (Postgres 15) its column list and row filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTable {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// The published columns; `None` before Postgres 15 (every column).
    pub columns: Option<Vec<String>>,
    /// The row filter as Postgres prints it; `None`: every row.
    pub filter: Option<String>,
}

impl PublishedTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

fn classify(p: &PgParams, e: tokio_postgres::Error) -> PgError {
    PgError::client(p.addr(), e)
}

/// Postgres's version as a number (150004 for 15.4).
pub async fn server_version(c: &Client, p: &PgParams) -> Result<u32, PgError> {
    let v: String = c
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| classify(p, e))?
        .get(0);
    Ok(v.trim().parse().unwrap_or(0))
}

/// Whether [`ensure_publication`] keeps what it did (a run) or rolls it back after checking
/// it (`tributary check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Commit,
    DryRun,
}

/// Creates the publication for `specs` when it does not exist, adds the tables it lacks, and
/// returns what it publishes of the wanted tables (everything it publishes when `specs` is
/// empty). A wanted table it already has must have the column list and filter asked for.
/// With [`Apply::DryRun`] the changes are made, checked and read back in a transaction that
/// is rolled back.
pub async fn ensure_publication(
    c: &Client,
    p: &PgParams,
    publication: &str,
    specs: &[PublishSpec],
    apply: Apply,
) -> Result<Vec<PublishedTable>, PgError> {
    let version = server_version(c, p).await?;
    if version < 150000
        && specs
            .iter()
            .any(|s| s.columns.is_some() || s.filter.is_some())
    {
        return Err(PgError::Setup(format!(
            "column lists and row filters (columns, exclude_columns, filter of [[pipeline.table]]) need Postgres 15 or later; this server is {}",
            version / 10000
        )));
    }
    // Some(publish_via_partition_root) when the publication exists.
    let via_root: Option<bool> = c
        .query_opt(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| classify(p, e))?
        .map(|r| r.get(0));
    let exists = via_root.is_some();
    // A partitioned table is replicated as one table: its changes must come under its own
    // name (publish_via_partition_root), not under each partition's.
    let oids: Vec<u32> = specs.iter().map(|s| s.table.rel_id).collect();
    let partitioned: Vec<String> = c
        .query(
            "SELECT n.nspname::text || '.' || cl.relname::text FROM pg_class cl \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE cl.relkind = 'p' AND cl.oid = ANY($1)",
            &[&oids],
        )
        .await
        .map_err(|e| classify(p, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if via_root == Some(false) && !partitioned.is_empty() {
        return Err(PgError::Setup(format!(
            "publication `{publication}` publishes the partitions of {} under their own names: run ALTER PUBLICATION {} SET (publish_via_partition_root = true) so that each is replicated as one table",
            partitioned.join(", "),
            pg_ident(publication)
        )));
    }
    let list =
        |specs: &[&PublishSpec]| specs.iter().map(|s| s.sql()).collect::<Vec<_>>().join(", ");
    let mut published = if exists {
        published_tables(c, p, publication).await?
    } else {
        Vec::new()
    };
    let missing: Vec<&PublishSpec> = specs
        .iter()
        .filter(|s| !published.iter().any(|t| s.same_table(t)))
        .collect();
    for s in specs {
        if let Some(have) = published.iter().find(|t| s.same_table(t)) {
            check_unchanged(publication, s, have)?;
        }
    }
    if !exists && specs.is_empty() {
        return Err(PgError::Setup(format!(
            "publication `{publication}` does not exist and postgres.tables is empty: list the tables to replicate"
        )));
    }
    if !missing.is_empty() {
        let sql = if exists {
            format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                pg_ident(publication),
                list(&missing)
            )
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}{}",
                pg_ident(publication),
                list(&missing),
                if partitioned.is_empty() {
                    ""
                } else {
                    " WITH (publish_via_partition_root = true)"
                }
            )
        };
        // One transaction: a filter Postgres would only refuse at the user's next UPDATE is
        // rolled back before anyone sees it.
        c.batch_execute("BEGIN").await.map_err(|e| classify(p, e))?;
        let applied = async {
            c.batch_execute(&sql).await.map_err(|e| classify(p, e))?;
            for s in missing.iter().filter(|s| s.filter.is_some()) {
                let read = filter_columns(c, p, publication, s.table.rel_id).await?;
                check_filter_columns(&s.table, &read).map_err(PgError::Setup)?;
            }
            published_tables(c, p, publication).await
        }
        .await;
        match (applied, apply) {
            (Ok(now), Apply::Commit) => {
                c.batch_execute("COMMIT")
                    .await
                    .map_err(|e| classify(p, e))?;
                published = now;
                tracing::info!(
                    publication,
                    tables = missing.len(),
                    "{}",
                    if exists {
                        "added tables to publication"
                    } else {
                        "created publication"
                    }
                );
            }
            (Ok(now), Apply::DryRun) => {
                c.batch_execute("ROLLBACK")
                    .await
                    .map_err(|e| classify(p, e))?;
                published = now;
            }
            (Err(e), _) => {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    if !specs.is_empty() {
        published.retain(|t| specs.iter().any(|s| s.same_table(t)));
    }
    Ok(published)
}

/// A table the publication has already: where the mapping asks for a column list or a
/// filter, the publication must have that one. What the mapping leaves open is taken as the
/// publication has it (a list or filter someone set there is followed by the copy too; and
/// Postgres lists every column but generated ones when there is no list). Filters compare in
/// a loose normal form (Postgres prints them back with parentheses and casts).
fn check_unchanged(
    publication: &str,
    want: &PublishSpec,
    have: &PublishedTable,
) -> Result<(), PgError> {
    let all: Vec<String> = want.table.columns.iter().map(|c| c.name.clone()).collect();
    let want_cols = want.columns.as_ref().unwrap_or(&all);
    let cols_differ = want.columns.is_some() && have.columns.as_ref() != Some(want_cols);
    let filters_differ = match (&want.filter, &have.filter) {
        (Some(w), Some(h)) => loose_sql(w) != loose_sql(h),
        (Some(_), None) => true,
        _ => false,
    };
    if !cols_differ && !filters_differ {
        return Ok(());
    }
    let describe = |cols: Option<&Vec<String>>, filter: Option<&String>| {
        format!(
            "columns ({}){}",
            cols.map(|c| c.join(", ")).unwrap_or_else(|| "all".into()),
            filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
        )
    };
    Err(PgError::Setup(format!(
        "publication `{publication}` publishes {} with {}, the table mapping asks for {}: what is in ClickHouse follows the publication, so it is not changed under it. Either make the mapping match, or re-add the table (ALTER PUBLICATION {} DROP TABLE …, then drop its ClickHouse table and start a new snapshot with a new slot)",
        have.qualified(),
        describe(have.columns.as_ref(), have.filter.as_ref()),
        describe(Some(want_cols), want.filter.as_ref()),
        pg_ident(publication),
    )))
}

/// SQL in a loose normal form for comparing a filter with Postgres's print of it: lower
/// case, without spaces, parentheses and `::type` casts.
fn loose_sql(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            while chars
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == ' ' || *c == '"')
            {
                chars.next();
            }
            continue;
        }
        if c.is_whitespace() || c == '(' || c == ')' {
            continue;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The columns a table's row filter in `publication` reads (`None`: the whole row).
async fn filter_columns(
    c: &Client,
    p: &PgParams,
    publication: &str,
    rel_id: u32,
) -> Result<Vec<Option<String>>, PgError> {
    let tree: Option<String> = c
        .query_opt(
            "SELECT pr.prqual::text FROM pg_publication_rel pr \
             JOIN pg_publication pb ON pb.oid = pr.prpubid \
             WHERE pb.pubname = $1 AND pr.prrelid = $2",
            &[&publication, &rel_id],
        )
        .await
        .map_err(|e| classify(p, e))?
        .and_then(|r| r.get(0));
    let mut out = Vec::new();
    for n in filter_attnums(tree.as_deref().unwrap_or("")) {
        if n <= 0 {
            out.push(None);
            continue;
        }
        let name: Option<String> = c
            .query_opt(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
                &[&rel_id, &(n as i16)],
            )
            .await
            .map_err(|e| classify(p, e))?
            .map(|r| r.get(0));
        out.push(name);
    }
    Ok(out)
}

/// Every table `publication` publishes, with its column list and row filter (Postgres 15).
pub async fn published_tables(
    c: &Client,
    p: &PgParams,
    publication: &str,
) -> Result<Vec<PublishedTable>, PgError> {
    let pg15 = server_version(c, p).await? >= 150000;
    let extra = if pg15 {
        "pt.attnames::text[], pt.rowfilter"
    } else {
        "NULL::text[], NULL::text"
    };
    let rows = c
        .query(
            &format!(
                "SELECT pt.schemaname::text, pt.tablename::text, cl.oid, {extra} \
                 FROM pg_publication_tables pt \
                 JOIN pg_namespace n ON n.nspname = pt.schemaname \
                 JOIN pg_class cl ON cl.relnamespace = n.oid AND cl.relname = pt.tablename \
                 WHERE pt.pubname = $1 ORDER BY 1, 2"
            ),
            &[&publication],
        )
        .await
        .map_err(|e| classify(p, e))?;
    Ok(rows
        .iter()
        .map(|r| PublishedTable {
            schema: r.get(0),
            name: r.get(1),
            oid: r.get::<_, u32>(2),
            columns: r.get(3),
            filter: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compare_loosely_with_postgres_print() {
        assert_eq!(loose_sql("id > 10"), loose_sql("(id > 10)"));
        assert_eq!(
            loose_sql("status = 'open' AND id > 3"),
            loose_sql("((status = 'open'::text) AND (id > 3))")
        );
        assert_ne!(loose_sql("id > 10"), loose_sql("(id > 11)"));
    }

    #[test]
    fn a_mapping_constrains_only_what_it_sets() {
        use crate::protocol::schema::{Column, PgType};
        let col = |n: &str| Column {
            name: n.into(),
            pg_type: PgType::Int4,
            nullable: false,
            is_key: n == "id",
            added_default: None,
            renamed_from: None,
        };
        let table = TableSchema {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![col("id"), col("v"), col("generated")],
            ..Default::default()
        };
        let have = |columns: &[&str], filter: Option<&str>| PublishedTable {
            schema: "public".into(),
            name: "t".into(),
            oid: 1,
            columns: Some(columns.iter().map(|c| c.to_string()).collect()),
            filter: filter.map(String::from),
        };
        let want = |columns: Option<&[&str]>, filter: Option<&str>| PublishSpec {
            table: table.clone(),
            columns: columns.map(|c| c.iter().map(|x| x.to_string()).collect()),
            filter: filter.map(String::from),
        };
        // No mapping: whatever the publication has (no generated column, someone's filter).
        assert!(check_unchanged(
            "p",
            &want(None, None),
            &have(&["id", "v"], Some("(id > 1)"))
        )
        .is_ok());
        assert!(check_unchanged(
            "p",
            &want(None, Some("id > 1")),
            &have(&["id", "v"], Some("(id > 1)"))
        )
        .is_ok());
        let e = check_unchanged(
            "p",
            &want(None, Some("id > 2")),
            &have(&["id", "v"], Some("(id > 1)")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("WHERE (id > 1)") && e.contains("WHERE id > 2"),
            "{e}"
        );
        assert!(
            check_unchanged("p", &want(None, Some("id > 2")), &have(&["id", "v"], None)).is_err()
        );
        assert!(check_unchanged("p", &want(Some(&["id"]), None), &have(&["id"], None)).is_ok());
        assert!(
            check_unchanged("p", &want(Some(&["id"]), None), &have(&["id", "v"], None)).is_err()
        );
    }

    #[test]
    fn specs_quote_names_and_wrap_the_filter() {
        let s = PublishSpec {
            table: TableSchema {
                schema: "my s".into(),
                name: "t\"x".into(),
                ..Default::default()
            },
            columns: Some(vec!["a b".into(), "id".into()]),
            filter: Some("id > 1 OR id < 0".into()),
        };
        assert_eq!(
            s.sql(),
            "\"my s\".\"t\"\"x\" (\"a b\", \"id\") WHERE (id > 1 OR id < 0)"
        );
    }
}
