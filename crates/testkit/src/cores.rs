//! Where a bench's processes run: the CDC bench's "split" layout puts the Postgres server (the
//! postmaster and every process it has or forks later: backends, walsenders) on a core of its
//! own and everything else it measures (the bench, what it starts, ClickHouse, the broker) on
//! the other cores, as the source database would run on a server of its own; then a walsender
//! that is not busy is waiting on its client, not on a core that its client holds.
//!
//! Must never: leave a server pinned after the bench (every affinity it changes is put back
//! when the [`Split`] is dropped: after an error too, and the CDC bench drops its run on
//! Ctrl-C; after a SIGKILL, the next `scripts/services.sh start` puts them back), or pin
//! anything when the machine has fewer than two CPUs to split.

use crate::procfs::{proc_parent, proc_status_value};
use crate::Res;

/// `0-2,5` → `[0, 1, 2, 5]` (the form of `Cpus_allowed_list` and `taskset -c`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// `[0, 1, 2, 5]` → `0,1,2,5` (what `taskset -c` takes).
pub fn format_cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The source's CPU and the client's (the rest), or `None` with fewer than two.
pub fn split_cpus(allowed: &[u32]) -> Option<(Vec<u32>, Vec<u32>)> {
    match allowed {
        [first, rest @ ..] if !rest.is_empty() => Some((vec![*first], rest.to_vec())),
        _ => None,
    }
}

/// The CPUs a process may run on (`pid` may be `self`).
pub fn allowed_cpus(pid: &str) -> Option<Vec<u32>> {
    parse_cpu_list(&proc_status_value(pid, "Cpus_allowed_list:")?)
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| proc_parent(&child.to_string()) == Some(pid))
        .collect()
}

/// Every thread of `pid` on `cpus` (`taskset -a`, util-linux).
fn pin(pid: u32, cpus: &[u32]) -> Res<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &format_cpu_list(cpus), &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset for pid {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The split layout while it lives; dropping it puts every affinity back.
pub struct Split {
    /// The Postgres server's CPU and the others'.
    pub source: Vec<u32>,
    pub client: Vec<u32>,
    postmaster: u32,
    /// The postmaster's CPUs before (its children get the same back).
    postmaster_before: Vec<u32>,
    /// The client side's processes with their CPUs before.
    clients_before: Vec<(u32, Vec<u32>)>,
}

impl Split {
    /// Puts the Postgres server (`postmaster` and its children, and so what it forks later) on
    /// the first CPU this process may use and `clients` (this process among them, so what it
    /// starts later) on the others. `Ok(None)` with fewer than two CPUs.
    pub fn apply(postmaster: u32, clients: &[u32]) -> Res<Option<Split>> {
        let own = allowed_cpus("self").ok_or("cannot read this process's CPUs")?;
        let Some((source, client)) = split_cpus(&own) else {
            return Ok(None);
        };
        let postmaster_before = allowed_cpus(&postmaster.to_string())
            .ok_or(format!("no Postgres server with pid {postmaster}"))?;
        let mut split = Split {
            source,
            client,
            postmaster,
            postmaster_before,
            clients_before: Vec::new(),
        };
        for &pid in clients {
            if let Some(before) = allowed_cpus(&pid.to_string()) {
                split.clients_before.push((pid, before));
                pin(pid, &split.client)?;
            }
        }
        pin(postmaster, &split.source)?;
        for child in children_of(postmaster) {
            // A backend may end meanwhile: what is gone needs no CPU.
            let _ = pin(child, &split.source);
        }
        Ok(Some(split))
    }

    /// `Postgres on CPU 0; the rest on 1` (for reports).
    pub fn text(&self) -> String {
        format!(
            "the Postgres server on CPU {}, the bench, tributary and ClickHouse on CPU {}",
            format_cpu_list(&self.source),
            format_cpu_list(&self.client)
        )
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        let mut failed = Vec::new();
        for pid in std::iter::once(self.postmaster).chain(children_of(self.postmaster)) {
            if let Err(e) = pin(pid, &self.postmaster_before) {
                if pid == self.postmaster {
                    failed.push(e);
                }
            }
        }
        for (pid, before) in &self.clients_before {
            if let Err(e) = pin(*pid, before) {
                failed.push(e);
            }
        }
        for e in failed {
            eprintln!("cores: could not put an affinity back: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_and_print_as_the_kernel_and_taskset_write_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(format_cpu_list(&[0, 1, 5]), "0,1,5");
    }

    #[test]
    fn the_source_gets_the_first_cpu_and_the_client_the_rest() {
        assert_eq!(split_cpus(&[0, 1]), Some((vec![0], vec![1])));
        assert_eq!(split_cpus(&[2, 3, 4]), Some((vec![2], vec![3, 4])));
        assert_eq!(split_cpus(&[0]), None);
        assert_eq!(split_cpus(&[]), None);
    }

    #[test]
    fn this_process_has_cpus_and_a_parent_that_lists_it_as_a_child() {
        let own = allowed_cpus("self").expect("Cpus_allowed_list");
        assert!(!own.is_empty());
        let parent = proc_parent("self").expect("a parent");
        assert!(children_of(parent).contains(&std::process::id()));
    }
}
