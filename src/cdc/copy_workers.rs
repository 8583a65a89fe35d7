//! The copy workers: take copy jobs (the first snapshot's tables, tables added, partitions
//! attached, resyncs), the key ranges of tables split for several workers, and partitions to
//! retire from one queue, `postgres.snapshot_workers` at a time, each over a Postgres
//! connection of its own (see [`backfill`] and [`partitions`] for what one job does).
//!
//! Must never: run two workers on one connection, leave a finished table registered as being
//! copied (its streamed unchanged TOAST values would keep being looked up), or unregister a
//! table while a range of it is still copied.

use crate::cdc::backfill::{self, BackfillError, Copied, Ctx, Job, TableRun};
use crate::cdc::partitions;
use crate::clients::postgres::catalog;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A piece of work for one worker.
enum Unit {
    Job(Job),
    /// Range `.1` of a table split into key ranges.
    Range(Arc<TableRun>, usize),
}

/// Copies `jobs`, then each job that comes in on `more` (all registered with [`backfill::register`]),
/// `workers` at a time, each over a connection of its own.
pub async fn run(
    ctx: Ctx<'_>,
    jobs: Vec<Job>,
    mut more: tokio::sync::mpsc::UnboundedReceiver<Job>,
    workers: usize,
) -> Result<(), BackfillError> {
    let queue = std::sync::Mutex::new(jobs.into_iter().map(Unit::Job).collect::<VecDeque<_>>());
    let wake = tokio::sync::Notify::new();
    let closed = AtomicBool::new(false);
    let intake = async {
        while let Some(j) = more.recv().await {
            queue.lock().expect("not poisoned").push_back(Unit::Job(j));
            wake.notify_one();
        }
        closed.store(true, Ordering::Release);
        wake.notify_waiters();
        Ok::<(), BackfillError>(())
    };
    let worker = || async {
        let mut client = None;
        loop {
            let woken = wake.notified();
            tokio::pin!(woken);
            // Registered before the queue is looked at: a unit queued after the look wakes it.
            woken.as_mut().enable();
            let next = queue.lock().expect("not poisoned").pop_front();
            let Some(unit) = next else {
                if closed.load(Ordering::Acquire) {
                    return Ok::<(), BackfillError>(());
                }
                woken.await;
                continue;
            };
            if client.is_none() {
                client = Some(catalog::connect(ctx.params).await?);
            }
            let c = client.as_ref().expect("connected above");
            match unit {
                Unit::Job(j) if j.detached => partitions::retire(&ctx, c, &j).await?,
                Unit::Job(j) => {
                    let rel = j.schema.rel_id;
                    match backfill::copy_table(&ctx, c, j).await? {
                        Copied::Done => finished(&ctx, rel),
                        Copied::Split(run, open) => {
                            // First in the queue: every worker free helps with this table.
                            let mut q = queue.lock().expect("not poisoned");
                            for i in open.into_iter().rev() {
                                q.push_front(Unit::Range(run.clone(), i));
                            }
                            drop(q);
                            wake.notify_waiters();
                        }
                    }
                }
                Unit::Range(run, i) => {
                    if backfill::copy_range(&ctx, c, &run, i).await? {
                        finished(&ctx, run.job.schema.rel_id);
                    }
                }
            }
        }
    };
    let workers = futures_util::future::try_join_all((0..workers.max(1)).map(|_| worker()));
    futures_util::future::try_join(intake, workers).await?;
    Ok(())
}

/// One job of table `rel` is over: the table is no longer being copied once none is left.
fn finished(ctx: &Ctx<'_>, rel: u32) {
    let mut tables = ctx.shared.tables.lock().expect("not poisoned");
    if let Some(c) = tables.get_mut(&rel) {
        c.jobs = c.jobs.saturating_sub(1);
        if c.jobs == 0 {
            tables.remove(&rel);
        }
    }
}
