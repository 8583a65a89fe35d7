//! Partitions attached to a replicated partitioned table. Published through the root, a
//! partitioned table streams the changes of every partition, but `ATTACH PARTITION` brings
//! rows that were never changes: they must be copied. Which partitions a table's copy covers
//! is recorded in the pipeline state (`partitions:<schema>.<table>`, see
//! [`crate::cdc::backfill::partitions_entry`]); at start a partition not in that record is
//! copied, and while running the catalog is polled for new ones.
//!
//! A detached partition's rows leave the table in Postgres without a change event: they stay
//! in ClickHouse (logged; a resync of the table removes them).
//!
//! Must never: leave an attached partition's rows uncopied once it is seen, or copy a
//! partition as a table of its own.

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
                };
                backfill::register(c, p, shared, std::slice::from_ref(&job)).await?;
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
                tracing::warn!(table = %w.table.qualified(), partition_oid = oid, "partition detached (or dropped): its rows stay in ClickHouse; resync the table to remove them");
                w.seen.remove(&oid);
                if let Ok(mut all) = shared.partitions.lock() {
                    if let Some(set) = all.get_mut(&w.table.rel_id) {
                        set.remove(&oid);
                    }
                }
            }
        }
    }
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
