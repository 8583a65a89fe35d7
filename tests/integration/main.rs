//! The in-process integration tests against the real servers, in one test binary (one link
//! instead of seven): CDC scenarios, the ClickHouse sink driven directly, every type, faults and
//! supervision, the fakes themselves, the fuzz regressions, the sentiment pipeline and its
//! Mastodon source against a misbehaving instance. Tests that need a process of their own
//! (global telemetry, a broker restart, long measurements) stay binaries of their own:
//! tracing.rs, kafka_faults.rs, checker.rs, outage.rs.
#![recursion_limit = "256"]

#[path = "../common/mod.rs"]
mod common;

mod backfill;
mod cdc;
mod clickhouse;
mod cluster;
mod fakes;
mod faults;
mod fuzz_regressions;
mod mapping;
mod mastodon_faults;
mod sentiment;
mod tls;
mod types;
mod verify;
