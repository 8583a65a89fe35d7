//! The copy workers: take copy jobs (the first snapshot's tables, tables added, partitions
//! attached, resyncs) and partitions to retire from one queue, `postgres.snapshot_workers` at a
//! time, each over a Postgres connection of its own (see [`backfill`] and [`partitions`] for
//! what one job does).
//!
//! Must never: run two workers on one connection, or leave a finished table registered as
//! being copied (its streamed unchanged TOAST values would keep being looked up).

use crate::cdc::backfill::{self, BackfillError, Ctx, Job};
use crate::cdc::partitions;
use crate::clients::postgres::catalog;

/// Copies `jobs`, then each job that comes in on `more` (all registered with [`backfill::register`]),
/// `workers` at a time, each over a connection of its own.
pub async fn run(
    ctx: Ctx<'_>,
    jobs: Vec<Job>,
    more: tokio::sync::mpsc::UnboundedReceiver<Job>,
    workers: usize,
) -> Result<(), BackfillError> {
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(jobs));
    let more = tokio::sync::Mutex::new(more);
    let worker = || async {
        let mut client = None;
        loop {
            let next = queue.lock().expect("not poisoned").pop_front();
            let j = match next {
                Some(j) => j,
                None => match more.lock().await.recv().await {
                    Some(j) => j,
                    None => return Ok::<(), BackfillError>(()),
                },
            };
            if client.is_none() {
                client = Some(catalog::connect(ctx.params).await?);
            }
            let c = client.as_ref().expect("connected above");
            if j.detached {
                partitions::retire(&ctx, c, &j).await?;
                continue;
            }
            backfill::copy_table(&ctx, c, &j).await?;
            let mut tables = ctx.shared.tables.lock().expect("not poisoned");
            if let Some(c) = tables.get_mut(&j.schema.rel_id) {
                c.jobs = c.jobs.saturating_sub(1);
                if c.jobs == 0 {
                    tables.remove(&j.schema.rel_id);
                }
            }
        }
    };
    futures_util::future::try_join_all((0..workers.max(1)).map(|_| worker())).await?;
    Ok(())
}
