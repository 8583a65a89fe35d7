//! Partitions attached to a replicated partitioned table. Published through the root, a
//! partitioned table streams the changes of every partition, but `ATTACH PARTITION` brings
//! rows that were never changes: they must be copied. Which partitions a table's copy covers
//! is recorded in the pipeline state (`partitions:<schema>.<table>`, see
//! [`crate::cdc::backfill::partitions_entry`]); at start a partition not in that record is
//! copied, and while running the catalog is polled for new ones.
//!
//! A detached partition's rows leave the table in Postgres without a change event either:
//! [`retire`] deletes them from ClickHouse, each key that the table does not hold again, with
//! a version between every change made before the detach and every change after it. A
//! partition dropped outright cannot be read any more: its rows stay (logged; dropping the
//! ClickHouse table makes the next start copy it anew).
//!
//! Must never: leave an attached partition's rows uncopied once it is seen, copy a partition
//! as a table of its own, delete a key the table holds again, or forget a detach before its
//! rows are deleted.

use crate::cdc::change::{ChangeItem, RowOp};
use crate::protocol::schema::pg_ident;

use crate::cdc::backfill::{self, CopyShared, Job, Partition};
use crate::cdc::table_state::TableCopy;
use crate::clients::postgres::{PgError, PgParams};
use crate::protocol::schema::SharedSchema;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::Client;

/// The partitioned tables among `rels`.
pub async fn partitioned(c: &Client, p: &PgParams, rels: &[u32]) -> Result<Vec<u32>, PgError> {
    Ok(c.query(
        "SELECT oid FROM pg_class WHERE oid = ANY($1) AND relkind = 'p' ORDER BY oid",
        &[&rels],
    )
    .await
    .map_err(|e| PgError::client(p.addr(), e))?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// The leaf partitions of partitioned table `parent` now (at any depth).
pub async fn leaves(c: &Client, p: &PgParams, parent: u32) -> Result<Vec<Partition>, PgError> {
    Ok(c.query(
        "SELECT cl.oid, n.nspname::text, cl.relname::text \
             FROM pg_partition_tree($1::oid::regclass) t \
             JOIN pg_class cl ON cl.oid = t.relid \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE t.isleaf AND t.relid <> $1::oid::regclass ORDER BY cl.oid",
        &[&parent],
    )
    .await
    .map_err(|e| PgError::client(p.addr(), e))?
    .iter()
    .map(|r| Partition {
        oid: r.get(0),
        schema: r.get(1),
        name: r.get(2),
    })
    .collect())
}

/// The copy jobs for the partitions of `table` that its recorded copy does not cover
/// (`recorded`, from the state; `None`: nothing recorded, the table's own copy covers what is
/// there now), each resuming from its own recorded progress (`progress`, by OID).
pub fn jobs_for(
    table: &SharedSchema,
    filter: Option<&String>,
    now: &[Partition],
    recorded: Option<&BTreeSet<u32>>,
    progress: &HashMap<u32, TableCopy>,
) -> Vec<Job> {
    let Some(recorded) = recorded else {
        return Vec::new();
    };
    now.iter()
        .filter(|p| !recorded.contains(&p.oid))
        .map(|p| Job {
            schema: table.clone(),
            filter: filter.cloned(),
            from: progress.get(&p.oid).cloned().unwrap_or(TableCopy::Pending),
            partition: Some(p.clone()),
            detached: false,
            purge_below: None,
            repair: None,
        })
        .collect()
}

/// A partitioned table the watch polls, and the partitions it has seen.
pub struct Watched {
    pub table: SharedSchema,
    pub filter: Option<String>,
    pub seen: BTreeSet<u32>,
}

/// Polls the catalog every `every` for partitions attached to the `watched` tables; each new
/// one is registered and sent to the copy as a job. Ends only with an error.
pub async fn watch(
    c: &Client,
    p: &PgParams,
    shared: &CopyShared,
    counters: &crate::runtime::registry::PipelineCounters,
    jobs: &UnboundedSender<Job>,
    mut watched: Vec<Watched>,
    every: Duration,
) -> Result<(), backfill::BackfillError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for w in watched.iter_mut() {
            let now = leaves(c, p, w.table.rel_id).await?;
            let new: Vec<&Partition> = now.iter().filter(|x| !w.seen.contains(&x.oid)).collect();
            for part in new {
                tracing::info!(table = %w.table.qualified(), partition = %format!("{}.{}", part.schema, part.name), "partition attached: its rows are copied");
                let job = Job {
                    schema: w.table.clone(),
                    filter: w.filter.clone(),
                    from: TableCopy::Pending,
                    partition: Some(part.clone()),
                    detached: false,
                    purge_below: None,
                    repair: None,
                };
                backfill::register(c, p, shared, counters, std::slice::from_ref(&job)).await?;
                if jobs.send(job).is_err() {
                    return Ok(());
                }
                w.seen.insert(part.oid);
            }
            let gone: Vec<u32> = w
                .seen
                .iter()
                .copied()
                .filter(|o| !now.iter().any(|x| x.oid == *o))
                .collect();
            for oid in gone {
                w.seen.remove(&oid);
                if jobs.send(retire_job(&w.table, oid)).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The job that retires partition `oid`, gone from `table`.
pub fn retire_job(table: &SharedSchema, oid: u32) -> Job {
    Job {
        schema: table.clone(),
        filter: None,
        from: TableCopy::Done,
        partition: Some(Partition {
            oid,
            schema: String::new(),
            name: String::new(),
        }),
        detached: true,
        purge_below: None,
        repair: None,
    }
}

/// Deletes from ClickHouse the rows of a partition gone from its table: every key the
/// detached partition holds that the table does not hold now, read at a
/// [`backfill::read_position`]: every change made in the partition before it was detached is
/// older, and a change of the same key made since either keeps the key out of the deletes
/// (committed by the read) or is newer and wins.
/// Recorded (the partition leaves the table's list) once the sink has written the deletes.
pub async fn retire(
    ctx: &backfill::Ctx<'_>,
    client: &Client,
    j: &Job,
) -> Result<(), backfill::BackfillError> {
    use futures_util::StreamExt;
    let s = &j.schema;
    let oid = j.partition.as_ref().map_or(0, |p| p.oid);
    let pg = |e: tokio_postgres::Error| PgError::client(ctx.params.addr(), e);
    let now = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(pg)?;
    let keys = s.key_indexes();
    let Some(now) = now.filter(|_| !keys.is_empty()) else {
        tracing::warn!(pipeline = %ctx.pipeline, table = %s.qualified(), partition_oid = oid,
            "a partition was dropped (or left a table without a key): its rows stay in ClickHouse. To remove them, drop the ClickHouse table and restart: it is copied anew");
        return record_retired(ctx, s, oid).await;
    };
    let (schema, name): (String, String) = (now.get(0), now.get(1));
    let version = backfill::read_position(client, ctx.params, ctx.pipeline, &s.qualified()).await?;
    let deleted = 'again: loop {
        // Whole rows, in the columns the sink expects now: a tombstone needs every column of
        // the sort and partition keys, which may reach beyond the key.
        let generation = ctx.shared.generation(s.rel_id);
        let now = ctx.shared.schema(s.rel_id).unwrap_or_else(|| s.clone());
        let keys = now.key_indexes();
        let cols: Vec<String> = now.columns.iter().map(|c| pg_ident(&c.name)).collect();
        let same: Vec<String> = keys
            .iter()
            .map(|&i| {
                let c = pg_ident(&now.columns[i].name);
                format!("t.{c} = d.{c}")
            })
            .collect();
        let sql = format!(
            "COPY (SELECT {} FROM ONLY {}.{} d WHERE NOT EXISTS (SELECT 1 FROM {}.{} t WHERE {})) TO STDOUT",
            cols.iter().map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", "),
            pg_ident(&schema),
            pg_ident(&name),
            pg_ident(&now.schema),
            pg_ident(&now.name),
            same.join(" AND ")
        );
        let stream = client.copy_out(sql.as_str()).await.map_err(pg)?;
        futures_util::pin_mut!(stream);
        let (mut batch, mut partial, mut deleted) = (Vec::new(), Vec::new(), 0u64);
        while let Some(buf) = stream.next().await {
            partial.extend_from_slice(&buf.map_err(pg)?);
            let mut start = 0;
            while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
                let mut cells = Vec::with_capacity(cols.len());
                crate::clients::postgres::catalog::parse_copy_line(
                    &partial[start..start + pos],
                    &mut cells,
                )
                .filter(|_| cells.len() == cols.len())
                .ok_or_else(|| PgError::Protocol {
                    addr: ctx.params.addr(),
                    message: format!("unreadable COPY line of {schema}.{name}"),
                })?;
                start += pos + 1;
                batch.push(ChangeItem::row(
                    now.rel_id,
                    RowOp::Delete,
                    version,
                    cells,
                    (0, 0),
                ));
                if batch.len() >= ctx.message_rows {
                    deleted += batch.len() as u64;
                    let sent = backfill::send(
                        ctx,
                        now.rel_id,
                        Some((generation, &now)),
                        std::mem::take(&mut batch),
                    )
                    .await?;
                    if sent != backfill::Sent::Yes {
                        // A schema change or TRUNCATE streamed meanwhile: read again (the
                        // deletes sent so far are sent again, the same at the same version).
                        continue 'again;
                    }
                }
            }
            partial.drain(..start);
        }
        if !batch.is_empty() {
            deleted += batch.len() as u64;
            if backfill::send(ctx, now.rel_id, Some((generation, &now)), batch).await?
                != backfill::Sent::Yes
            {
                continue 'again;
            }
        }
        break deleted;
    };
    record_retired(ctx, s, oid).await?;
    tracing::info!(pipeline = %ctx.pipeline, table = %s.qualified(), partition = %format!("{schema}.{name}"), rows = deleted,
        "a partition was detached: its rows are deleted from ClickHouse");
    Ok(())
}

/// Records, once the sink wrote everything sent before, that `oid` no longer belongs to `s`.
async fn record_retired(
    ctx: &backfill::Ctx<'_>,
    s: &SharedSchema,
    oid: u32,
) -> Result<(), backfill::BackfillError> {
    let entry = vec![ctx.shared.partition_covered(s, oid, false, ctx.incarnation)];
    ctx.edge
        .call(
            |r| crate::cdc::change::SinkMsg::WriteState(entry, r),
            Duration::from_secs(600),
        )
        .await?
        .map_err(backfill::BackfillError::Sink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::schema::TableSchema;
    use std::sync::Arc;

    #[test]
    fn jobs_for_the_partitions_the_copy_does_not_cover() {
        let t = Arc::new(TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: "p".into(),
            ..Default::default()
        });
        let part = |oid| Partition {
            oid,
            schema: "public".into(),
            name: format!("p{oid}"),
        };
        let now = vec![part(10), part(11), part(12)];
        let recorded: BTreeSet<u32> = [10].into_iter().collect();
        let progress: HashMap<u32, TableCopy> = [(
            12,
            TableCopy::Copying {
                after: vec!["5".into()],
            },
        )]
        .into_iter()
        .collect();
        let jobs = jobs_for(&t, None, &now, Some(&recorded), &progress);
        let got: Vec<(u32, TableCopy)> = jobs
            .iter()
            .map(|j| (j.partition.as_ref().unwrap().oid, j.from.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (11, TableCopy::Pending),
                (
                    12,
                    TableCopy::Copying {
                        after: vec!["5".into()]
                    }
                )
            ]
        );
        assert_eq!(jobs[0].state_key(), "table:public.p#11");
        // Nothing recorded: the table's own copy covers what is there.
        assert!(jobs_for(&t, None, &now, None, &progress).is_empty());
    }
}
