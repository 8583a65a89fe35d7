//! Readings of a process from /proc: memory and CPU time, for outage tests and benches.
//!
//! Must never: fail a caller for a process that is gone (it reads `None`).

/// A `/proc/<pid>/status` value as written (`pid` may be `self`), e.g. `Cpus_allowed_list:`.
pub fn proc_status_value(pid: &str, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        s.lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .to_string(),
    )
}

/// A `/proc/<pid>/status` value in KiB (`pid` may be `self`), e.g. `VmHWM:`.
pub fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    proc_status_value(pid, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fields of `/proc/<pid>/stat` after the command name: 0 is the state, 1 the parent.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The parent of a process (`pid` may be `self`).
pub fn proc_parent(pid: &str) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(&pid.to_string(), "VmRSS:")
}

/// utime + stime of a process in seconds (`pid` may be `self`).
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let f = stat_fields(pid)?;
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// How long ago a process started, in seconds (from `/proc/<pid>/stat`'s start time and
/// `/proc/uptime`; 10 ms resolution).
pub fn proc_age_secs(pid: &str) -> Option<f64> {
    let started: f64 = stat_fields(pid)?.get(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((uptime - started / 100.0).max(0.0)) // USER_HZ is 100 on Linux
}

/// A single-threaded process's time on a core and time waiting for one (runnable, in the run
/// queue), in seconds since it started, from `/proc/<pid>/schedstat` (nanoseconds). What is
/// left of its lifetime it slept: blocked on a socket, a lock or a timer.
pub fn proc_schedstat(pid: &str) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (run, wait) = (f.next()??, f.next()??);
    Some((run as f64 / 1e9, wait as f64 / 1e9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(proc_cpu_secs("self").is_some());
        assert!(proc_age_secs("self").is_some_and(|a| (0.0..3600.0).contains(&a)));
        // Work on this thread shows as time on a core (however busy the machine: it spins
        // until 20 ms more show, for 10 s at most).
        let (run, _) = proc_schedstat("thread-self").expect("schedstat");
        let t = std::time::Instant::now();
        let mut now = run;
        while now - run < 0.02 && t.elapsed() < std::time::Duration::from_secs(10) {
            std::hint::black_box(0u64);
            now = proc_schedstat("thread-self").expect("schedstat").0;
        }
        assert!(now - run >= 0.02, "{run} -> {now}");
        assert_eq!(proc_schedstat(&u32::MAX.to_string()), None);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
