//! `cargo bench --bench cdc -- --verify [--rows 10000000] [--target ch18|ch26]`:
//! `tributary verify` on one table, next to reading both sides of it in full, in the same run.
//!
//! 1. One table of `--rows` rows (the snapshot bench's: bigint key, 64-character text,
//!    numeric(12,2), timestamptz), loaded and vacuumed; tributary (the release binary) copies it
//!    into ClickHouse and keeps streaming.
//! 2. verify, tables equal: `tributary::cdc::verify::run` in this process, beside the running
//!    pipeline: seconds, ranges compared, and the bytes that crossed the loopback interface
//!    meanwhile (`/proc/net/dev`, `lo`: every byte either database sent or received).
//! 3. The baseline: both sides read in full, at once: Postgres `COPY (SELECT * …) TO STDOUT`
//!    and ClickHouse `SELECT * FROM … FINAL WHERE _is_deleted = 0` as TabSeparated, counted and
//!    dropped as they arrive. This is the least a comparison in the client must do (it would
//!    also have to match the rows up); its time is a floor for that.
//! 4. verify again after 10 rows spread over the table were changed in ClickHouse (at a version
//!    above theirs): seconds, ranges compared, and whether exactly those 10 keys were named.
//! 5. A report (times, baseline / verify, bytes each way) and the same as one JSON line.
//!
//! The time ratio depends on the link: here it is loopback, where bytes cost little; the bytes
//! moved are what a real network would carry.
//!
//! Must never: time the load, or leave its table, slot, publication or database behind (the
//! caller's cleanup drops them).

use super::snapshot::{configure, create_sql, load_tables, Setup};
use super::{unique, Args, Cleanup, Pg, Res};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tributary::cdc::verify::{run as verify, Options, TableReport};

/// Bytes received on the loopback interface so far.
fn loopback_bytes() -> Res<u64> {
    let text = std::fs::read_to_string("/proc/net/dev").map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no `lo` line in /proc/net/dev".to_string())
}

/// Runs `f`, and says how long it took and how many bytes crossed loopback meanwhile.
async fn measured<T>(f: impl std::future::Future<Output = Res<T>>) -> Res<(T, f64, u64)> {
    let before = loopback_bytes()?;
    let started = Instant::now();
    let out = f.await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((out, secs, loopback_bytes()?.saturating_sub(before)))
}

/// Both sides of table `t` read in full at once; the bytes of each.
async fn read_both(pg: &Pg, setup: &Setup, t: &str) -> Res<(u64, u64)> {
    use futures_util::StreamExt;
    let c = pg.connect().await?;
    let pg_side = async {
        let stream = c
            .copy_out(format!("COPY (SELECT * FROM {t}) TO STDOUT").as_str())
            .await
            .map_err(|e| e.to_string())?;
        futures_util::pin_mut!(stream);
        let mut n = 0u64;
        while let Some(b) = stream.next().await {
            n += b.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok::<u64, String>(n)
    };
    let ch_cfg = &setup.cfg.pipelines[0].clickhouse;
    let ch_side = async {
        let mut r = reqwest::Client::new()
            .post(format!("{}/", ch_cfg.url.trim_end_matches('/')))
            .header("X-ClickHouse-User", &ch_cfg.user)
            .header("X-ClickHouse-Key", ch_cfg.password.expose())
            .body(format!(
                "SELECT * FROM `{}`.`{t}` FINAL WHERE _is_deleted = 0 FORMAT TabSeparated",
                setup.db
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?;
        let mut n = 0u64;
        while let Some(b) = r.chunk().await.map_err(|e| e.to_string())? {
            n += b.len() as u64;
        }
        Ok::<u64, String>(n)
    };
    let (a, b) = tokio::join!(pg_side, ch_side);
    Ok((a?, b?))
}

fn one(reports: Vec<TableReport>) -> Res<TableReport> {
    reports
        .into_iter()
        .next()
        .ok_or_else(|| "verify compared no table".to_string())
}

pub async fn run(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    vars: &HashMap<String, String>,
) -> Res<bool> {
    tributary::clients::tls::install_default_provider();
    let c = pg.connect().await?;
    let rows = args.rows;
    let t = unique("bench_verify");
    clean.tables.push(t.clone());
    c.batch_execute(&create_sql(&t))
        .await
        .map_err(|e| format!("create {t}: {e}"))?;
    eprintln!("bench: verify: loading {rows} rows ...");
    load_tables(&c, std::slice::from_ref(&t), rows).await?;
    let mut setup = configure(args, clean, pg, vars, std::slice::from_ref(&t), &t).await?;
    eprintln!("bench: verify: tributary copies the table ...");
    setup.trib.start()?;
    let started = Instant::now();
    loop {
        setup.trib.check_alive("during the copy")?;
        let n: u64 = setup
            .ch
            .query_text(&format!(
                "SELECT count() FROM `{}`.`{t}` FINAL WHERE _is_deleted = 0",
                setup.db
            ))
            .await
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if n == rows {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(format!("the copy did not end within 30 minutes ({n} rows)"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "bench: verify: copied in {:.1} s; verify, equal ...",
        started.elapsed().as_secs_f64()
    );
    let o = Options {
        tables: vec![format!("public.{t}")],
        limit: 100,
        repair: false,
        pipelines: Vec::new(),
    };
    let (equal, equal_secs, equal_bytes) =
        measured(async { verify(&setup.cfg, &o).await.map(one)? }).await?;
    eprintln!("bench: verify: {equal_secs:.2} s; both sides read in full ...");
    let ((pg_bytes, ch_bytes), full_secs, full_bytes) = measured(read_both(pg, &setup, &t)).await?;
    eprintln!("bench: verify: {full_secs:.2} s; 10 rows changed in ClickHouse, verify ...");
    let damaged: Vec<u64> = (1..=10).map(|i| i * rows / 11).collect();
    let list: Vec<String> = damaged.iter().map(|k| k.to_string()).collect();
    setup
        .ch
        .execute(&format!(
            "INSERT INTO `{db}`.`{t}` (id, payload, amount, created_at, `_version`, `_is_deleted`) \
             SELECT id, 'damaged', amount, created_at, `_version` + 1, 0 FROM `{db}`.`{t}` FINAL WHERE id IN ({})",
            list.join(", "),
            db = setup.db
        ))
        .await
        .map_err(|e| format!("damage: {e}"))?;
    let (found, found_secs, found_bytes) =
        measured(async { verify(&setup.cfg, &o).await.map(one)? }).await?;
    let named: Vec<String> = found.differences.iter().map(|d| d.key.clone()).collect();
    let exact = equal.equal
        && equal.postgres_rows == rows
        && named == list
        && found.differences.iter().all(|d| d.kind == "changed");
    let (_, exit_ok) = setup.trib.stop().await;
    let ratio = full_secs / equal_secs;
    let bytes_ratio = full_bytes as f64 / equal_bytes.max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "verify bench: {rows} rows, Postgres → ClickHouse {} ({})",
        setup.ch_version, args.target
    );
    println!(
        "  verify, equal:             {equal_secs:>8.2} s  {} range(s)  {:>10.3} MiB over loopback",
        equal.ranges,
        mib(equal_bytes)
    );
    println!(
        "  both sides read in full:   {full_secs:>8.2} s              {:>10.3} MiB over loopback (Postgres {:.1} MiB, ClickHouse {:.1} MiB of rows)",
        mib(full_bytes),
        mib(pg_bytes),
        mib(ch_bytes)
    );
    println!("  verify is {ratio:.2}× faster and moves {bytes_ratio:.0}× fewer bytes");
    println!(
        "  verify, 10 rows changed:   {found_secs:>8.2} s  {} range(s)  {:>10.3} MiB; the 10 keys named exactly: {}",
        found.ranges,
        mib(found_bytes),
        named == list
    );
    println!(
        "{{\"bench\":\"cdc_verify\",\"target\":\"{}\",\"clickhouse\":\"{}\",\"rows\":{rows},\"verify_secs\":{equal_secs:.3},\"verify_bytes\":{equal_bytes},\"full_read_secs\":{full_secs:.3},\"full_read_bytes\":{full_bytes},\"ratio\":{ratio:.3},\"bytes_ratio\":{bytes_ratio:.1},\"damaged_verify_secs\":{found_secs:.3},\"damaged_ranges\":{},\"damaged_bytes\":{found_bytes},\"exact\":{exact},\"exit_ok\":{exit_ok}}}",
        args.target, setup.ch_version, found.ranges
    );
    if std::env::var("TRIBUTARY_BENCH_LOG").is_err() {
        clean.files.push(setup.log_path);
    }
    if !exact {
        eprintln!(
            "bench: verify: expected equal, then exactly {list:?} changed; got {equal:?} and {named:?}"
        );
    }
    Ok(exact && exit_ok)
}
