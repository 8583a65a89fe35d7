//! `tributary verify`: compares each replicated table's live rows in ClickHouse (FINAL,
//! without deleted rows) with Postgres, and names the keys that differ. The work is done in
//! the databases (see [`crate::protocol::verify`]): a key range's count and sum of row
//! hashes on each side; a range that differs is split (by Postgres, into parts of about
//! equal rows) until its rows can be listed by key hash. It reads at a known position: it
//! waits until the pipeline's slot has confirmed the WAL position current at its start, and
//! every difference is looked at a second time (after the slot confirmed a new position)
//! before it is reported, so that rows changed while it ran are not reported.
//!
//! A table is compared as it is replicated: the publication's columns and row filter, its
//! mapping's target, sort key (rows are named by it) and engine (an append table's latest
//! version of each row); a keyless table by its rows' contents and counts.
//!
//! With `--repair` the running pipeline (its admin API) copies the keys found different
//! again, as snapshot rows in its stream's order, and the table is compared again.
//!
//! Must never: write to either database itself (a repair is the pipeline's), or report a key
//! it saw differ only once.

use crate::cdc::clickhouse_sink::{layout_of, target_table};
use crate::clients::clickhouse::ChClient;
use crate::clients::postgres::{catalog, PgParams};
use crate::config::{mapping_for, TableEngine};
use crate::config::{Config, PipelineConfig, PipelineKind};
use crate::protocol::chtypes::{map_table, ChColumn};
use crate::protocol::pgtext::unescape_tsv;
use crate::protocol::schema::{pg_ident, pg_literal};
use crate::protocol::verify::{self as core, Difference, Digest, KeyRange, Live, RowHash, Sides};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A range of at most this many rows (on the larger side) is listed by key.
const LEAF_ROWS: u64 = 2000;
/// A keyless table that differs is listed by content up to this many rows (on the larger
/// side): it has no key to split it by.
const KEYLESS_LISTED: u64 = 100_000;
/// A range of more rows than this is split by a sample of about this many of them.
const SAMPLED_SPLIT_ROWS: u64 = 20_000;
/// A range that differs is split into this many parts.
const PARTS: u32 = 16;
/// How long to wait for the slot to confirm a position.
const POSITION_WAIT: Duration = Duration::from_secs(60);

pub struct Options {
    /// Only these tables (`schema.table`, or a table of `public`); empty: every table.
    pub tables: Vec<String>,
    /// Differences listed per table at most.
    pub limit: usize,
    /// Have the running pipeline copy the keys found different again (through its admin
    /// API), then compare again.
    pub repair: bool,
    /// Only the pipelines of these names; empty: every one.
    pub pipelines: Vec<String>,
}

/// What was found for one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableReport {
    pub pipeline: String,
    pub table: String,
    pub clickhouse: String,
    pub postgres_rows: u64,
    pub clickhouse_rows: u64,
    pub equal: bool,
    pub differences: Vec<Found>,
    /// More differences than `limit`: the list is cut.
    pub truncated: bool,
    /// Columns left out of the comparison, and why.
    pub skipped_columns: Vec<(String, String)>,
    /// Why the table was not compared, or how (a pipeline not streaming).
    pub note: Option<String>,
    /// Key ranges compared (a measure of the work: 1 when the table is equal).
    pub ranges: u64,
    /// With `--repair`, when there was something to repair: what was, and the pipeline's
    /// answer; the rest of the report is the comparison after it.
    pub repaired: Option<Repaired>,
}

/// A repair done by `--repair`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Repaired {
    /// The differences found first (all of them were repaired).
    pub keys: Vec<Found>,
    /// What the pipeline did.
    pub answer: String,
}

/// One key that differs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// `missing` (in ClickHouse), `extra` (in ClickHouse only) or `changed`.
    pub kind: &'static str,
    pub key: String,
    /// For `changed`: the columns whose values differ.
    pub columns: Vec<String>,
    /// The key's canonical text (what a repair names it by).
    #[serde(skip)]
    pub raw: String,
}

/// Verifies every CDC pipeline of `cfg` that writes ClickHouse from Postgres.
pub async fn run(cfg: &Config, o: &Options) -> Result<Vec<TableReport>, String> {
    let mut out = Vec::new();
    let mut any = false;
    for p in &cfg.pipelines {
        let Some(pg) = p.postgres.as_ref() else {
            continue;
        };
        if p.kind != PipelineKind::Cdc || p.kafka_sink.is_some() {
            continue;
        }
        any = true;
        if !o.pipelines.is_empty() && !o.pipelines.contains(&p.name) {
            continue;
        }
        let params = PgParams::from_config(pg);
        let c = catalog::connect(&params)
            .await
            .map_err(|e| format!("pipeline {}: Postgres: {e}", p.name))?;
        let version = crate::clients::postgres::publication::server_version(&c, &params)
            .await
            .map_err(|e| format!("pipeline {}: Postgres: {e}", p.name))?;
        if version < 130000 {
            return Err(format!(
                "pipeline {}: verify needs Postgres 13 or later (trim_scale); this server is {version}",
                p.name
            ));
        }
        // The forms values were streamed in (see the canonical forms).
        c.batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(|e| format!("pipeline {}: Postgres: {e}", p.name))?;
        let ch = ChClient::connect(&p.clickhouse)
            .await
            .map_err(|e| format!("pipeline {}: ClickHouse: {e}", p.name))?;
        let tables: Vec<(String, String)> = c
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
                &[&pg.publication],
            )
            .await
            .map_err(|e| format!("pipeline {}: publication {}: {e}", p.name, pg.publication))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let position = Position::new(&c, &pg.slot);
        for (schema, table) in tables {
            let q = format!("{schema}.{table}");
            let wanted = o.tables.is_empty()
                || o.tables
                    .iter()
                    .any(|t| *t == q || (schema == "public" && *t == table));
            if wanted {
                let at = Where {
                    cfg,
                    p,
                    publication: &pg.publication,
                    params: &params,
                    c: &c,
                    ch: &ch,
                    position: &position,
                };
                out.push(verify_table(&at, &schema, &table, o).await?);
            }
        }
    }
    if !any {
        return Err(
            "no pipeline of the config writes ClickHouse from Postgres: nothing to verify".into(),
        );
    }
    for t in o.tables.iter().filter(|_| o.pipelines.is_empty()) {
        let found = out
            .iter()
            .any(|r| r.table == *t || r.table == format!("public.{t}"));
        if !found {
            return Err(format!(
                "table {t} is not in the publication of any CDC pipeline of the config"
            ));
        }
    }
    Ok(out)
}

/// The columns (`None`: all) and the row filter the publication replicates of a table
/// (Postgres 15 and later have both; before, neither).
async fn published(
    c: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<(Option<Vec<String>>, Option<String>), String> {
    let version: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| format!("Postgres: {e}"))?
        .get(0);
    if version < 150000 {
        return Ok((None, None));
    }
    let row = c
        .query_opt(
            "SELECT attnames::text[], rowfilter FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&publication, &schema, &table],
        )
        .await
        .map_err(|e| format!("Postgres: {e}"))?;
    Ok(row.map_or((None, None), |r| (r.get(0), r.get(1))))
}

/// The slot's confirmed position, waited for.
struct Position<'a> {
    c: &'a Client,
    slot: &'a str,
}

impl<'a> Position<'a> {
    fn new(c: &'a Client, slot: &'a str) -> Self {
        Position { c, slot }
    }

    /// Waits until the slot has confirmed the WAL position current now; `Some(why)` when it
    /// cannot be waited for (no slot, not streaming, or behind after the wait).
    async fn reached(&self) -> Result<Option<String>, String> {
        let now: String = self
            .c
            // The insert position: with synchronous_commit = off a commit is visible before
            // its WAL is written, so the write position can be behind what a query sees.
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let deadline = Instant::now() + POSITION_WAIT;
        loop {
            let row = self
                .c
                .query_opt(
                    "SELECT active, coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.slot, &now],
                )
                .await
                .map_err(|e| e.to_string())?;
            let Some(row) = row else {
                return Ok(Some(format!(
                    "slot {} does not exist: compared as the tables are now",
                    self.slot
                )));
            };
            let (active, done): (bool, bool) = (row.get(0), row.get(1));
            if done {
                return Ok(None);
            }
            if !active {
                return Ok(Some(format!(
                    "the pipeline is not streaming (slot {} inactive): compared as the tables are now",
                    self.slot
                )));
            }
            if Instant::now() > deadline {
                return Ok(Some(format!(
                    "the pipeline did not confirm WAL position {now} within {}s: rows it has not written yet may show as differences",
                    POSITION_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One table's mapping, as the sink wrote it.
struct Target<'a> {
    schema: &'a str,
    table: &'a str,
    /// The publication's row filter.
    filter: Option<String>,
    db: &'a str,
    ch_table: String,
    live: Live,
    cols: Vec<&'a ChColumn>,
    /// The sort key's columns (empty: a keyless table).
    keys: Vec<&'a ChColumn>,
    key_type: String,
    /// The Postgres key's columns (what a repair names rows by).
    pg_keys: Vec<String>,
}

impl Target<'_> {
    fn sides(&self) -> Sides<'_> {
        Sides {
            pg_schema: self.schema,
            pg_table: self.table,
            pg_filter: self.filter.as_deref(),
            ch_db: self.db,
            ch_table: &self.ch_table,
            live: self.live.clone(),
        }
    }

    async fn digests(
        &self,
        c: &Client,
        ch: &ChClient,
        r: &KeyRange,
    ) -> Result<(Digest, Digest), String> {
        let s = self.sides();
        let key = self.keys.first().copied();
        let pg_sql =
            core::pg_digest_sql(&s, &self.cols, key.map(|k| (k, self.key_type.as_str())), r);
        let ch_sql = core::ch_digest_sql(&s, &self.cols, key, r);
        // Both sides at once.
        let (row, text) = tokio::join!(c.query_one(&pg_sql, &[]), ch.query_text(&ch_sql));
        let row = row.map_err(|e| format!("Postgres: {e}"))?;
        let pg = Digest::from_pg(row.get(0), row.get(1)).ok_or("Postgres: an unreadable digest")?;
        let text = text.map_err(|e| format!("ClickHouse: {e}"))?;
        let (n, sum) = text.trim().split_once('\t').unwrap_or(("", ""));
        let chd = Digest::from_ch(n, sum).ok_or("ClickHouse: an unreadable digest")?;
        Ok((pg, chd))
    }

    async fn rows(
        &self,
        c: &Client,
        ch: &ChClient,
        r: &KeyRange,
    ) -> Result<Vec<Difference>, String> {
        let s = self.sides();
        let pg_sql = core::pg_rows_sql(&s, &self.cols, &self.keys, &self.key_type, r);
        let ch_sql = core::ch_rows_sql(&s, &self.cols, &self.keys, r);
        let (rows, text) = tokio::join!(c.query(&pg_sql, &[]), ch.query_text(&ch_sql));
        let pg: Vec<RowHash> = rows
            .map_err(|e| format!("Postgres: {e}"))?
            .iter()
            .map(|row| RowHash::new(row.get(0), row.get(1), row.get(2)))
            .collect();
        let text = text.map_err(|e| format!("ClickHouse: {e}"))?;
        let chr: Vec<RowHash> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 3).then(|| RowHash::new(&unescape_tsv(f[0]), f[1], f[2]))
            })
            .collect();
        Ok(core::diff_rows(&pg, &chr))
    }

    /// A keyless table's rows that differ, by content (at most `limit`).
    async fn contents(
        &self,
        c: &Client,
        ch: &ChClient,
        limit: usize,
    ) -> Result<Vec<Difference>, String> {
        let s = self.sides();
        let pg: Vec<(String, u64)> = c
            .query(&core::pg_contents_sql(&s, &self.cols), &[])
            .await
            .map_err(|e| format!("Postgres: {e}"))?
            .iter()
            .map(|row| {
                let n: String = row.get(1);
                (row.get(0), n.parse().unwrap_or(0))
            })
            .collect();
        let text = ch
            .query_text(&core::ch_contents_sql(&s, &self.cols))
            .await
            .map_err(|e| format!("ClickHouse: {e}"))?;
        let chc: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let (x, n) = l.rsplit_once('\t')?;
                Some((unescape_tsv(x), n.parse().ok()?))
            })
            .collect();
        Ok(core::diff_contents(&pg, &chc, limit))
    }

    /// The digests of `parts` (a split range, in order) on both sides, one pass each.
    async fn parts_digests(
        &self,
        c: &Client,
        ch: &ChClient,
        parts: &[KeyRange],
    ) -> Result<Vec<(Digest, Digest)>, String> {
        let s = self.sides();
        let key = self.keys[0];
        let pg_sql = core::pg_parts_digest_sql(&s, &self.cols, key, &self.key_type, parts);
        let ch_sql = core::ch_parts_digest_sql(&s, &self.cols, key, parts);
        let (rows, text) = tokio::join!(c.query(&pg_sql, &[]), ch.query_text(&ch_sql));
        let rows = rows.map_err(|e| format!("Postgres: {e}"))?;
        let pg: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let pg = core::parts_digests(
            parts.len(),
            pg.iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
            true,
        )
        .ok_or("Postgres: unreadable part digests")?;
        let text = text.map_err(|e| format!("ClickHouse: {e}"))?;
        let chd = core::parts_digests(
            parts.len(),
            text.lines().filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?, f.next()?, f.next()?))
            }),
            false,
        )
        .ok_or("ClickHouse: unreadable part digests")?;
        Ok(pg.into_iter().zip(chd).collect())
    }

    /// Range `r` (of about `rows` rows) split into about equal parts; a large range by a
    /// sample of its pages.
    async fn split(&self, c: &Client, r: &KeyRange, rows: u64) -> Result<Vec<KeyRange>, String> {
        let sample =
            (rows > SAMPLED_SPLIT_ROWS).then(|| 100.0 * SAMPLED_SPLIT_ROWS as f64 / rows as f64);
        let bounds: Vec<String> = c
            .query(
                &core::pg_split_sql(
                    &self.sides(),
                    self.keys[0],
                    &self.key_type,
                    r,
                    PARTS,
                    sample,
                ),
                &[],
            )
            .await
            .map_err(|e| format!("Postgres: {e}"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(core::split(r, &bounds))
    }
}

/// A pipeline being verified, and the connections to its two sides.
struct Where<'a> {
    cfg: &'a Config,
    p: &'a PipelineConfig,
    publication: &'a str,
    params: &'a PgParams,
    c: &'a Client,
    ch: &'a ChClient,
    position: &'a Position<'a>,
}

async fn verify_table(
    at_: &Where<'_>,
    schema: &str,
    table: &str,
    o: &Options,
) -> Result<TableReport, String> {
    let (p, params, c, ch) = (at_.p, at_.params, at_.c, at_.ch);
    let qualified = format!("{schema}.{table}");
    let at = |e: String| format!("{qualified}: {e}");
    let mut report = TableReport {
        pipeline: p.name.clone(),
        table: qualified.clone(),
        clickhouse: String::new(),
        postgres_rows: 0,
        clickhouse_rows: 0,
        equal: false,
        differences: Vec::new(),
        truncated: false,
        skipped_columns: Vec::new(),
        note: None,
        ranges: 0,
        repaired: None,
    };
    let oid: u32 = c
        .query_one(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| at(e.to_string()))?
        .get(0);
    let ts = catalog::load_table(c, params, &mut catalog::TypeResolver::default(), oid)
        .await
        .map_err(|e| at(e.to_string()))?;
    // As the pipeline replicates it: the publication's columns and rows, the mapping's sort
    // key, target and engine.
    let (published, filter) = published(c, at_.publication, schema, table)
        .await
        .map_err(at)?;
    let mapping = mapping_for(&p.tables, schema, table);
    let order_by = mapping.map(|m| m.order_by.as_slice()).unwrap_or(&[]);
    let ts = crate::protocol::mapping::shape(ts, published.as_deref(), order_by).map_err(at)?;
    let layout = layout_of(mapping, &ts);
    let all = map_table(&ts, &ch.caps, p.clickhouse.json_as);
    let ch_table = target_table(mapping, &p.clickhouse.table_template, &ts);
    report.clickhouse = format!("{}.{ch_table}", ch.database);
    let Some(ch_cols) = ch
        .table_columns(&ch_table)
        .await
        .map_err(|e| at(e.to_string()))?
    else {
        report.note = Some(format!("no ClickHouse table {}", report.clickhouse));
        return Ok(report);
    };
    let mut cols = Vec::new();
    for col in &all {
        if let Some(why) = core::not_comparable(col) {
            report.skipped_columns.push((col.name.clone(), why.into()));
        } else if !ch_cols.iter().any(|(n, _)| *n == col.name) {
            report
                .skipped_columns
                .push((col.name.clone(), "not in ClickHouse".into()));
        } else {
            cols.push(col);
        }
    }
    let keys: Vec<&ChColumn> = if layout.keyless {
        Vec::new()
    } else {
        cols.iter().copied().filter(|c| c.is_key).collect()
    };
    if keys.is_empty() && !layout.keyless {
        report.note = Some("no key column in ClickHouse: not verified".into());
        return Ok(report);
    }
    let live = if layout.keyless {
        Live::Keyless
    } else if layout.engine == TableEngine::Append {
        Live::Append(
            ts.sort_indexes()
                .iter()
                .map(|&i| ts.columns[i].name.clone())
                .collect(),
        )
    } else {
        Live::Replacing
    };
    let key_type: String = match keys.first() {
        None => String::new(),
        Some(k) => c
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1 AND attname = $2",
                &[&oid, &k.name],
            )
            .await
            .map_err(|e| at(e.to_string()))?
            .get(0),
    };
    let target = Target {
        schema,
        table,
        filter,
        db: &ch.database,
        ch_table,
        live,
        cols,
        keys,
        key_type,
        pg_keys: ts
            .key_indexes()
            .iter()
            .map(|&i| ts.columns[i].name.clone())
            .collect(),
    };
    report.note = at_.position.reached().await.map_err(at)?;
    compare(&target, at_, o, &mut report).await.map_err(at)?;
    if o.repair && !report.differences.is_empty() && target.keys.is_empty() {
        report.note.get_or_insert_with(|| {
            "a keyless table is counted by content: its rows cannot be repaired one by one (drop the slot for a new snapshot)".into()
        });
    } else if o.repair && !report.differences.is_empty() {
        let answer = repair(&target, at_, &report.differences)
            .await
            .map_err(|e| at(format!("repair: {e}")))?;
        report.repaired = Some(Repaired {
            keys: std::mem::take(&mut report.differences),
            answer: answer.trim_end().to_string(),
        });
        report.truncated = false;
        report.ranges = 0;
        compare(&target, at_, o, &mut report).await.map_err(at)?;
    }
    Ok(report)
}

/// Compares the table's two sides into `report` (rows, differences, ranges, equal).
async fn compare(
    target: &Target<'_>,
    at: &Where<'_>,
    o: &Options,
    report: &mut TableReport,
) -> Result<(), String> {
    let (c, ch) = (at.c, at.ch);
    if target.keys.is_empty() {
        return compare_contents(target, at, o, report).await;
    }
    // Bisect: ranges that differ are split until they are small enough to list; the parts'
    // digests come in one pass per side.
    let mut todo: Vec<(KeyRange, Option<(Digest, Digest)>)> = vec![(KeyRange::all(), None)];
    let mut first = true;
    // The ranges listed that differed, with what differed at the first look.
    let mut leaves: Vec<(KeyRange, Vec<Difference>)> = Vec::new();
    let mut seen = 0;
    while let Some((r, known)) = todo.pop() {
        report.ranges += 1;
        let (pg, chd) = match known {
            Some(d) => d,
            None => target.digests(c, ch, &r).await?,
        };
        if first {
            report.postgres_rows = pg.rows;
            report.clickhouse_rows = chd.rows;
            first = false;
        }
        if pg == chd {
            continue;
        }
        let parts = if pg.rows.max(chd.rows) > LEAF_ROWS {
            target.split(c, &r, pg.rows).await?
        } else {
            Vec::new()
        };
        if parts.len() > 1 {
            let digests = target.parts_digests(c, ch, &parts).await?;
            todo.extend(
                parts
                    .into_iter()
                    .zip(digests)
                    .map(|(p, d)| (p, Some(d)))
                    .rev(),
            );
            continue;
        }
        let before = target.rows(c, ch, &r).await?;
        if before.is_empty() {
            continue;
        }
        seen += before.len();
        leaves.push((r, before));
        // Looked at again in batches (one position wait each); more than the limit
        // confirmed ends the search.
        if seen > o.limit {
            second_look(target, at, &mut leaves, report).await?;
            seen = 0;
            if report.differences.len() > o.limit {
                break;
            }
        }
    }
    second_look(target, at, &mut leaves, report).await?;
    if report.differences.len() > o.limit {
        report.differences.truncate(o.limit);
        report.truncated = true;
    }
    report.equal = report.differences.is_empty() && !report.truncated;
    Ok(())
}

/// The second look at the `leaves` that differed (taken from it), once the pipeline
/// confirmed a newer position: only what differs both times is reported (rows changed
/// meanwhile were in flight).
async fn second_look(
    target: &Target<'_>,
    at: &Where<'_>,
    leaves: &mut Vec<(KeyRange, Vec<Difference>)>,
    report: &mut TableReport,
) -> Result<(), String> {
    if leaves.is_empty() {
        return Ok(());
    }
    if let Some(why) = at.position.reached().await? {
        report.note.get_or_insert(why);
    }
    for (r, before) in leaves.drain(..) {
        for d in target.rows(at.c, at.ch, &r).await? {
            if before.iter().any(|b| b.key() == d.key()) {
                report.differences.push(found_of(&d, &target.cols));
            }
        }
    }
    Ok(())
}

/// Compares a keyless table (counted by content): its digest, and where it differs and is
/// small enough, its rows by content, twice.
async fn compare_contents(
    target: &Target<'_>,
    at: &Where<'_>,
    o: &Options,
    report: &mut TableReport,
) -> Result<(), String> {
    report.ranges += 1;
    let (pg, chd) = target.digests(at.c, at.ch, &KeyRange::all()).await?;
    report.postgres_rows = pg.rows;
    report.clickhouse_rows = chd.rows;
    if pg != chd {
        if pg.rows.max(chd.rows) > KEYLESS_LISTED {
            report.note = Some(format!(
                "a keyless table of more than {KEYLESS_LISTED} rows differs: its rows are not listed"
            ));
            report.truncated = true;
        } else {
            let before = target.contents(at.c, at.ch, o.limit + 1).await?;
            if !before.is_empty() {
                if let Some(why) = at.position.reached().await? {
                    report.note.get_or_insert(why);
                }
                let after = target.contents(at.c, at.ch, o.limit + 1).await?;
                // Differing both times, as many times as both looks agree.
                let mut left = before;
                for d in after {
                    if let Some(i) = left.iter().position(|b| *b == d) {
                        left.swap_remove(i);
                        report.differences.push(found_of(&d, &target.cols));
                    }
                }
            }
        }
    }
    if report.differences.len() > o.limit {
        report.differences.truncate(o.limit);
        report.truncated = true;
    }
    report.equal = report.differences.is_empty() && !report.truncated;
    Ok(())
}

/// Has the pipeline streaming the table copy the rows of `found` again (see
/// `cdc::backfill::Repair`): the key values of those Postgres has, and every key's
/// canonical text for the rows to delete. What it did.
async fn repair(target: &Target<'_>, at: &Where<'_>, found: &[Found]) -> Result<String, String> {
    let texts: Vec<String> = found.iter().map(|f| pg_literal(&f.raw)).collect();
    // The rows by their Postgres key (the sort key a mapping sets may hold more columns).
    let values: Vec<String> = target
        .pg_keys
        .iter()
        .map(|k| format!("format('%s', {})", pg_ident(k)))
        .collect();
    let sql = format!(
        "SELECT ARRAY[{}] FROM {}.{} WHERE {} IN ({})",
        values.join(", "),
        pg_ident(target.schema),
        pg_ident(target.table),
        core::pg_key_text(&target.keys),
        texts.join(", ")
    );
    let keys: Vec<Vec<String>> =
        at.c.query(&sql, &[])
            .await
            .map_err(|e| format!("Postgres: {e}"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let purge: Vec<String> = found.iter().map(|f| f.raw.clone()).collect();
    let body = serde_json::json!({ "keys": keys, "purge": purge }).to_string();
    let table = format!("{}.{}", target.schema, target.table);
    crate::clients::admin::post(
        at.cfg,
        "/admin/repair",
        &[("table", &table), ("pipeline", &at.p.name)],
        Some(body),
    )
    .await
}

fn found_of(d: &Difference, cols: &[&ChColumn]) -> Found {
    let (kind, key, columns) = match d {
        Difference::Missing(k) => ("missing", k, Vec::new()),
        Difference::Extra(k) => ("extra", k, Vec::new()),
        Difference::Changed(k, idx) => (
            "changed",
            k,
            idx.iter()
                .filter_map(|i| cols.get(*i).map(|c| c.name.clone()))
                .collect(),
        ),
    };
    Found {
        kind,
        key: core::show_key(key),
        columns,
        raw: key.clone(),
    }
}

/// The report as people read it.
pub fn render(reports: &[TableReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let head = format!("{} ({} → {})", r.table, r.pipeline, r.clickhouse);
        if r.clickhouse.is_empty() || (r.ranges == 0 && r.note.is_some()) {
            s.push_str(&format!(
                "{head}: not compared: {}\n",
                r.note.as_deref().unwrap_or("")
            ));
            continue;
        }
        let verdict = if r.equal {
            "equal".to_string()
        } else {
            format!(
                "{}{} difference(s)",
                r.differences.len(),
                if r.truncated { "+" } else { "" }
            )
        };
        s.push_str(&format!(
            "{head}: {} rows in Postgres, {} in ClickHouse: {verdict} ({} range(s) compared)\n",
            r.postgres_rows, r.clickhouse_rows, r.ranges
        ));
        if let Some(n) = &r.note {
            s.push_str(&format!("  note: {n}\n"));
        }
        if let Some(rep) = &r.repaired {
            s.push_str(&format!(
                "  repaired {} key(s) ({})\n",
                rep.keys.len(),
                rep.answer
            ));
            for d in &rep.keys {
                s.push_str(&format!("    was {:<8} {}\n", d.kind, d.key));
            }
        }
        for (c, why) in &r.skipped_columns {
            s.push_str(&format!("  column {c} not compared: {why}\n"));
        }
        for d in &r.differences {
            match d.kind {
                "changed" => s.push_str(&format!(
                    "  changed  {}  ({})\n",
                    d.key,
                    d.columns.join(", ")
                )),
                k => s.push_str(&format!("  {k:<8} {}\n", d.key)),
            }
        }
    }
    s
}
