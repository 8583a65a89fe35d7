//! The scheduled verify (`[verify] interval`): runs `tributary verify` (see
//! [`crate::cdc::verify`]) inside the service every interval, on the CDC pipelines this
//! process streams, and keeps the last result in the registry for `/status`, the status page
//! and `/metrics` (`tributary_verify_*`, alerted on in docker/prometheus/alerts.yml).
//!
//! A pipeline copying a table is left alone that time (the rows not copied yet would show as
//! missing), and so is one this process is the standby of (the active process verifies it).
//!
//! Must never: write to Postgres or ClickHouse, or stop the service on a failed run (the
//! error is shown and counted, and the next run comes at the next interval).

use crate::cdc::verify::{self, Options, TableReport};
use crate::config::{Config, PipelineKind};
use crate::runtime::registry::{CopyState, Registry, VerifiedTable, ROLE_ACTIVE};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first run comes this long after the start at most (sooner with a shorter interval).
const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);
/// Differing keys kept per table for the status page.
const KEYS_SHOWN: usize = 10;

/// Runs the schedule until the task is dropped. Off (returns at once) when the interval is
/// zero.
pub async fn run(cfg: Config, registry: Arc<Registry>) {
    let interval = cfg.verify.interval.0;
    if interval.is_zero() {
        return;
    }
    registry.update_verify(|v| {
        v.interval_s = interval.as_secs_f64();
        v.last_success = unix_now();
    });
    tokio::time::sleep(interval.min(FIRST_RUN_AFTER)).await;
    loop {
        let started = Instant::now();
        once(&cfg, &registry).await;
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// One run: compares what can be compared now and records the result.
pub async fn once(cfg: &Config, registry: &Registry) {
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut names = Vec::new();
    for p in &cfg.pipelines {
        if p.kind != PipelineKind::Cdc || p.postgres.is_none() || p.kafka_sink.is_some() {
            continue;
        }
        let c = registry.pipeline(&p.name);
        if c.role.load(Ordering::Relaxed) != ROLE_ACTIVE {
            skipped.push(format!(
                "{}: not streaming here (starting, or the standby)",
                p.name
            ));
            continue;
        }
        let copying = c
            .copies
            .lock()
            .map(|m| m.values().any(|p| p.state != CopyState::Done))
            .unwrap_or(false);
        if copying {
            skipped.push(format!("{}: a table is being copied", p.name));
            continue;
        }
        names.push(p.name.clone());
    }
    let o = Options {
        tables: cfg.verify.tables.clone(),
        limit: cfg.verify.limit,
        repair: false,
        pipelines: names.clone(),
    };
    let result = if names.is_empty() {
        Ok(Vec::new())
    } else {
        verify::run(cfg, &o).await
    };
    let took = started.elapsed();
    match &result {
        Ok(reports) => {
            let differing: Vec<&TableReport> = reports
                .iter()
                .filter(|r| !r.equal && r.ranges > 0)
                .collect();
            if differing.is_empty() {
                tracing::info!(
                    tables = reports.len(),
                    skipped = skipped.len(),
                    took_s = took.as_secs_f64(),
                    "verify: ClickHouse equals Postgres"
                );
            }
            for r in differing {
                tracing::warn!(pipeline = %r.pipeline, table = %r.table, differences = r.differences.len(), truncated = r.truncated,
                    "verify: ClickHouse differs from Postgres (the keys are on /status; `tributary verify --repair` fixes them)");
            }
        }
        Err(e) => tracing::warn!(error = %e, "verify: the run failed"),
    }
    record(registry, result, skipped, took);
}

/// Records a run's outcome in the registry.
fn record(
    registry: &Registry,
    result: Result<Vec<TableReport>, String>,
    skipped: Vec<String>,
    took: Duration,
) {
    let now = unix_now();
    registry.update_verify(|v| {
        v.last_run = now;
        v.duration_s = took.as_secs_f64();
        v.skipped = skipped;
        let outcome = match result {
            Err(e) => {
                v.error = Some(e);
                "error"
            }
            Ok(reports) => {
                v.error = None;
                v.last_success = now;
                for r in reports.iter().filter(|r| r.ranges > 0) {
                    *v.rows_checked
                        .entry((r.pipeline.clone(), r.table.clone()))
                        .or_default() += r.postgres_rows;
                }
                v.tables = reports.iter().map(shown).collect();
                if reports.iter().all(|r| r.ranges == 0) {
                    "skipped"
                } else if reports.iter().any(|r| !r.equal && r.ranges > 0) {
                    "differences"
                } else {
                    "equal"
                }
            }
        };
        *v.runs.entry(outcome.to_string()).or_default() += 1;
    });
}

/// A table's report as the status page shows it.
fn shown(r: &TableReport) -> VerifiedTable {
    VerifiedTable {
        pipeline: r.pipeline.clone(),
        table: r.table.clone(),
        postgres_rows: r.postgres_rows,
        clickhouse_rows: r.clickhouse_rows,
        equal: r.equal,
        differences: r.differences.len() as u64,
        truncated: r.truncated,
        keys: r
            .differences
            .iter()
            .take(KEYS_SHOWN)
            .map(|d| {
                if d.columns.is_empty() {
                    format!("{} {}", d.kind, d.key)
                } else {
                    format!("{} {} ({})", d.kind, d.key, d.columns.join(", "))
                }
            })
            .collect(),
        note: r.note.clone(),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::verify::Found;

    fn report(table: &str, equal: bool, found: usize, ranges: u64) -> TableReport {
        TableReport {
            pipeline: "cdc".into(),
            table: table.into(),
            clickhouse: format!("db.{table}"),
            postgres_rows: 10,
            clickhouse_rows: 10,
            equal,
            differences: (0..found)
                .map(|i| Found {
                    kind: "changed",
                    key: i.to_string(),
                    columns: vec!["v".into()],
                    raw: String::new(),
                })
                .collect(),
            truncated: false,
            skipped_columns: Vec::new(),
            note: None,
            ranges,
            repaired: None,
        }
    }

    #[test]
    fn runs_are_counted_by_result_and_rows_add_up() {
        let r = Registry::new();
        let t = Duration::from_secs(1);
        record(&r, Ok(vec![report("a", true, 0, 1)]), vec![], t);
        record(&r, Ok(vec![report("a", false, 12, 9)]), vec![], t);
        record(&r, Err("Postgres: gone".into()), vec![], t);
        record(&r, Ok(vec![report("a", false, 0, 0)]), vec!["x".into()], t);
        let v = r.verify().expect("recorded");
        let runs: Vec<(&str, u64)> = v.runs.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            runs,
            [
                ("differences", 1),
                ("equal", 1),
                ("error", 1),
                ("skipped", 1)
            ]
        );
        // The error run kept the tables of the run before; the last one replaced them.
        assert_eq!(v.rows_checked[&("cdc".to_string(), "a".to_string())], 20);
        assert!(v.error.is_none() && v.skipped == ["x"]);
        let mut r2 = report("b", false, 12, 9);
        r2.truncated = true;
        let s = shown(&r2);
        assert_eq!((s.differences, s.keys.len()), (12, KEYS_SHOWN));
        assert_eq!(s.keys[0], "changed 0 (v)");
    }
}
