//! Chaos on purpose: every `interval`, kill one random running actor whose kind (the last
//! part of its path, without a trailing `-N`) is listed. Each kill is logged and counted
//! (`tributary_faults_injected_total{kind="chaos_kill"}`) and shows on the status page. The
//! interval counts from the recovery of the last actor killed (running again, or 60 s at
//! most), so that on a slow machine kills never come faster than restarts and the pipeline
//! always gets an interval of uptime to make progress in.
//!
//! Must never: run unless enabled in the config, or kill a supervisor that was not asked for.

use crate::config::ChaosConfig;
use crate::runtime::registry::{ActorState, Registry};
use crate::runtime::supervisor::{find_actor, SupervisorMsg};
use ractor::ActorRef;
use std::sync::Arc;

/// The kind of an actor path: `root/cdc/sink` → `sink`, `root/s/pool/worker-3` → `worker`.
pub fn kind_of(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    match last.rsplit_once('-') {
        Some((k, n)) if n.chars().all(|c| c.is_ascii_digit()) => k,
        _ => last,
    }
}

/// Runs until aborted.
pub async fn run(cfg: ChaosConfig, root: ActorRef<SupervisorMsg>, registry: Arc<Registry>) {
    let mut state = if cfg.seed != 0 {
        cfg.seed
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1
    };
    let mut tick = tokio::time::interval(cfg.interval.0);
    tick.tick().await; // the first tick is immediate: give the pipelines one interval to start
    loop {
        tick.tick().await;
        let candidates: Vec<String> = registry
            .actors()
            .into_iter()
            .filter(|(p, s)| {
                s.state == ActorState::Running && cfg.kinds.iter().any(|k| k == kind_of(p))
            })
            .map(|(p, _)| p)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        // xorshift64: reproducible with a seed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let path = &candidates[(state % candidates.len() as u64) as usize];
        if let Some(cell) = find_actor(&root, path).await {
            tracing::warn!(actor = %path, "chaos: killing");
            registry.fault_injected("chaos_kill");
            let before = registry.restarts(path);
            cell.kill();
            wait_recovered(&registry, path, before).await;
            tick.reset();
        }
    }
}

/// Waits until the actor at `path` runs again after the kill: seen not running and then
/// running, or running with its restart count past `before` (a restart too quick to be seen
/// down); 60 s at most (one that does not come back, say after its supervisor gave up,
/// holds up nothing).
async fn wait_recovered(registry: &Registry, path: &str, before: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen_down = false;
    while tokio::time::Instant::now() < deadline {
        let (running, restarts) = registry.actors().get(path).map_or((false, before), |s| {
            (s.state == ActorState::Running, s.restarts)
        });
        if running && (seen_down || restarts > before) {
            return;
        }
        seen_down |= !running;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds() {
        assert_eq!(super::kind_of("root/cdc/sink"), "sink");
        assert_eq!(super::kind_of("root/s/pool/worker-12"), "worker");
        assert_eq!(super::kind_of("root/my-pipe"), "my-pipe");
        assert_eq!(super::kind_of("root"), "root");
    }
}
