//! The canonical forms of `tributary verify` (issue #18; `crate::protocol::verify`) against
//! the real servers: on the types test's table (every mapped type, both ClickHouse
//! generations), each column's canonical text is the same in Postgres and in ClickHouse FINAL
//! unless ClickHouse could not hold the value (clamped or unrepresentable: then it differs);
//! a table's digest (count, sum of row hashes) is the same on both sides, over the whole key
//! range and over the parts Postgres splits it into; and rows deleted, changed and added on
//! purpose in ClickHouse are found by key.

use crate::common::*;
use std::time::Duration;
use tributary::clients::postgres::{catalog, PgParams};
use tributary::protocol::chtypes::{map_table, JsonAs};
use tributary::protocol::verify::{self, Difference, Digest, KeyRange, RowHash};

/// Checks the table `public.<t>` of `w` (replicated by `cfg`, every row in ClickHouse),
/// whose columns named in `differ` hold values ClickHouse cannot hold in rows 1 and 3 (and
/// NULL in the others).
pub async fn canonical_forms_agree(
    w: &World,
    cfg: &tributary::config::Config,
    t: &str,
    differ: &[&str],
) {
    let pg_cfg = cfg.pipelines[0].postgres.as_ref().expect("a CDC config");
    let p = PgParams::from_config(pg_cfg);
    let c = catalog::connect(&p).await.unwrap();
    c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'")
        .await
        .unwrap();
    let oid: u32 = c
        .query_one(&format!("SELECT 'public.{t}'::regclass::oid"), &[])
        .await
        .unwrap()
        .get(0);
    let schema = catalog::load_table(&c, &p, &mut catalog::TypeResolver::default(), oid)
        .await
        .unwrap();
    let cols = map_table(&schema, &w.ch.caps, JsonAs::String);
    let compared = verify::compared(&cols);
    let db = &w.database;
    let sides = verify::Sides {
        pg_schema: "public",
        pg_table: t,
        pg_filter: None,
        ch_db: db,
        ch_table: t,
        live: verify::Live::Replacing,
    };

    // Each column, row by row.
    let mut wrong = Vec::new();
    for col in &compared {
        let pg = first_column(
            &c,
            &format!(
                "SELECT id::text || '\t' || encode(convert_to({}, 'UTF8'), 'hex') FROM public.{t} ORDER BY id",
                verify::pg_field(col)
            ),
        )
        .await;
        let ch = w
            .ch_rows(&format!(
                "SELECT toString(id), lower(hex({})) FROM `{db}`.`{t}` FINAL WHERE _is_deleted = 0 ORDER BY id",
                verify::ch_field(col)
            ))
            .await;
        let differs = differ.contains(&col.name.as_str());
        for (i, (a, b)) in pg.iter().zip(&ch).enumerate() {
            let held = !(differs && (i == 0 || i == 2));
            if (a == b) != held {
                let (a, b) = (unhex(a), unhex(b));
                wrong.push(format!(
                    "{} ({}), row {}: Postgres {a:?}, ClickHouse {b:?}{}",
                    col.name,
                    col.ch_type,
                    i + 1,
                    if held {
                        ""
                    } else {
                        " (should differ: not held)"
                    }
                ));
            }
        }
        if pg.len() != ch.len() {
            wrong.push(format!("{}: {} rows vs {}", col.name, pg.len(), ch.len()));
        }
    }
    assert!(
        wrong.is_empty(),
        "canonical forms:\n  {}",
        wrong.join("\n  ")
    );

    // Digests over the columns ClickHouse holds: whole range, and the parts of a split.
    let held: Vec<_> = compared
        .iter()
        .copied()
        .filter(|c| !differ.contains(&c.name.as_str()))
        .collect();
    let keys: Vec<_> = held.iter().copied().filter(|c| c.is_key).collect();
    let key = keys[0];
    let digest = |r: KeyRange| {
        let (held, c, sides) = (&held, &c, &sides);
        async move {
            let row = c
                .query_one(
                    &verify::pg_digest_sql(sides, held, Some((key, "int4")), &r),
                    &[],
                )
                .await
                .unwrap();
            let pg = Digest::from_pg(row.get(0), row.get(1)).unwrap();
            let line = w
                .ch_rows(&verify::ch_digest_sql(sides, held, Some(key), &r))
                .await;
            let (n, s) = line[0].split_once('\t').unwrap();
            (pg, Digest::from_ch(n, s).unwrap())
        }
    };
    let count = first_column(&c, &format!("SELECT count(*)::text FROM public.{t}")).await;
    let count: u64 = count[0].parse().unwrap();
    let (pg, ch) = digest(KeyRange::all()).await;
    assert_eq!(pg.rows, count);
    assert_eq!(pg, ch, "the whole table");
    let bounds = first_column(
        &c,
        &verify::pg_split_sql(&sides, key, "int4", &KeyRange::all(), 2, None),
    )
    .await;
    let parts = verify::split(&KeyRange::all(), &bounds);
    assert_eq!(parts.len(), 2, "{bounds:?}");
    let mut rows = 0;
    for r in parts {
        let (pg, ch) = digest(r.clone()).await;
        assert_eq!(pg, ch, "{r:?}");
        rows += pg.rows;
    }
    assert_eq!(rows, count);

    // Damage ClickHouse: row 1 deleted, row 2 changed, row 99 added (newer versions win).
    let text_col = held
        .iter()
        .find(|c| c.name == "text")
        .expect("a text column");
    w.ch.execute(&format!(
        "INSERT INTO `{db}`.`{t}` (id, `_version`, `_is_deleted`) VALUES (1, 18000000000000000000, 1)"
    ))
    .await
    .unwrap();
    w.ch.execute(&format!(
        "INSERT INTO `{db}`.`{t}` (id, {}, `_version`, `_is_deleted`) VALUES (2, 'damaged', 18000000000000000000, 0), (99, 'extra', 18000000000000000000, 0)",
        tributary::protocol::chtypes::ch_ident(&text_col.name)
    ))
    .await
    .unwrap();
    let (pg, ch) = digest(KeyRange::all()).await;
    assert_ne!(pg, ch);
    let pg_rows: Vec<RowHash> = c
        .query(
            &verify::pg_rows_sql(&sides, &held, &keys, "int4", &KeyRange::all()),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| RowHash::new(r.get(0), r.get(1), r.get(2)))
        .collect();
    let ch_rows: Vec<RowHash> = w
        .ch_rows(&verify::ch_rows_sql(&sides, &held, &keys, &KeyRange::all()))
        .await
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            RowHash::new(f[0], f[1], f[2])
        })
        .collect();
    let text_at = held.iter().position(|c| c.name == "text").unwrap();
    assert_eq!(
        verify::diff_rows(&pg_rows, &ch_rows),
        vec![
            Difference::Missing("1:1".into()),
            Difference::Changed("1:2".into(), vec![text_at]),
            Difference::Extra("2:99".into()),
        ]
    );
}

/// `<id>\t<hex>` as `<id>\t<text>`, for a message.
fn unhex(line: &str) -> String {
    let (id, hex) = line.split_once('\t').unwrap_or((line, ""));
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    format!("{id}\t{}", String::from_utf8_lossy(&bytes))
}

/// The first column of every row of `sql`, as text.
async fn first_column(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// `tributary verify` on a live pipeline: an equal table is equal in one range; rows
/// deleted, changed and added on purpose in ClickHouse are found by bisection, each with its
/// key (and the changed column), and a load running meanwhile adds no false difference;
/// `--repair` has the pipeline fix exactly those keys, and the table is then equal.
async fn finds_the_keys_that_differ(target: Target) {
    use tributary::cdc::verify::{run, Options};
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("verified");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v text, n numeric(10,2), at timestamptz);
         INSERT INTO {t} SELECT g, 'v' || g, g / 100.0, timestamptz '2026-01-01' + g * interval '1 second'
           FROM generate_series(1, 6000) g"
    ))
    .await
    .unwrap();
    let cfg = w.config(&[&format!("public.{t}")]);
    let run_ = Running::start(&cfg).await;
    let db = w.database.clone();
    eventually(
        Duration::from_secs(90),
        "the snapshot in ClickHouse",
        || async {
            let n = w
                .try_ch_rows(&format!("SELECT count() FROM `{db}`.`{t}` FINAL"))
                .await?;
            (n == ["6000"]).then_some(()).ok_or(format!("{n:?} rows"))
        },
    )
    .await;
    let o = Options {
        tables: vec![format!("public.{t}")],
        limit: 100,
        repair: false,
        pipelines: Vec::new(),
    };
    let r = run(&cfg, &o).await.unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].equal, "{r:?}");
    assert_eq!(
        (r[0].postgres_rows, r[0].clickhouse_rows, r[0].ranges),
        (6000, 6000, 1)
    );
    assert!(r[0].note.is_none(), "{:?}", r[0].note);

    // Damage: 10 deleted, 3000 changed, 99999 added, at a version above every row's (as a
    // lost change or a stray write would leave) and below what the stream writes next.
    let version = above_every_version(&w, &t).await;
    w.ch.execute(&format!(
        "INSERT INTO `{db}`.`{t}` (id, v, `_version`, `_is_deleted`) VALUES (10, '', {version}, 1), (99999, 'extra', {version}, 0)"
    ))
    .await
    .unwrap();
    w.ch.execute(&format!(
        "INSERT INTO `{db}`.`{t}` (id, v, n, at, `_version`, `_is_deleted`) SELECT id, 'wrong', n, at, {version}, 0 FROM `{db}`.`{t}` FINAL WHERE id = 3000"
    ))
    .await
    .unwrap();
    // A load meanwhile: each of these rows is changed once, and new rows come in.
    let load = tokio::spawn({
        let t = t.clone();
        async move {
            let c = pg().await;
            for i in 0..60i64 {
                c.batch_execute(&format!(
                    "UPDATE {t} SET v = v || '+' WHERE id BETWEEN {a} AND {b}; INSERT INTO {t} VALUES ({n}, 'new', 1, now())",
                    a = 100 + i * 20,
                    b = 119 + i * 20,
                    n = 7000 + i
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let r = run(&cfg, &o).await.unwrap();
    load.await.unwrap();
    let got: Vec<(String, String, Vec<String>)> = r[0]
        .differences
        .iter()
        .map(|d| (d.kind.to_string(), d.key.clone(), d.columns.clone()))
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        vec![
            (s("missing"), s("10"), vec![]),
            (s("changed"), s("3000"), vec![s("v")]),
            (s("extra"), s("99999"), vec![]),
        ],
        "{r:?}"
    );
    assert!(!r[0].equal && r[0].ranges > 1, "{r:?}");
    let text = tributary::cdc::verify::render(&r);
    assert!(
        text.contains("3 difference(s)") && text.contains("changed  3000  (v)"),
        "{text}"
    );

    // --repair: the running pipeline (through its admin API) copies those keys again and
    // deletes the extra one; compared again, the table is equal.
    let (with_admin, server) = admin_api(&run_, &cfg).await;
    let repair = Options { repair: true, ..o };
    let r = run(&with_admin, &repair).await.unwrap();
    let done = r[0].repaired.as_ref().expect("a repair");
    assert_eq!(done.keys.len(), 3, "{r:?}");
    assert!(
        done.answer
            .contains("2 row(s) copied from Postgres, 1 deleted from ClickHouse"),
        "{}",
        done.answer
    );
    assert!(r[0].equal && r[0].differences.is_empty(), "{r:?}");
    assert_eq!(r[0].postgres_rows, r[0].clickhouse_rows);
    let text = tributary::cdc::verify::render(&r);
    assert!(
        text.contains("repaired 3 key(s)") && text.contains("was extra    99999"),
        "{text}"
    );
    // What FINAL reads, column by column, equals Postgres.
    converge(&w, &c, &t, &t, "id, v", "id", Duration::from_secs(30)).await;
    // Nothing to repair: no request.
    let r = run(&with_admin, &repair).await.unwrap();
    assert!(r[0].equal && r[0].repaired.is_none(), "{r:?}");
    server.abort();
    run_.stop().await;
    w.teardown().await;
}
crate::matrix!(
    verify_finds_the_keys_that_differ,
    finds_the_keys_that_differ
);

/// A version above every row's of ClickHouse table `t` (what a lost change or a stray write
/// would leave) and below what the stream writes next.
async fn above_every_version(w: &World, t: &str) -> String {
    w.ch_rows(&format!(
        "SELECT toString(max(`_version`) + 1) FROM `{}`.`{t}`",
        w.database
    ))
    .await
    .remove(0)
}

/// The admin API of `run` served on a free port, and `cfg` pointing at it (what
/// `--repair` needs).
async fn admin_api(
    run: &Running,
    cfg: &tributary::config::Config,
) -> (tributary::config::Config, tokio::task::JoinHandle<()>) {
    let token = "verify-repair-token";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, server) = tributary::ops::http::serve(
        listener,
        tributary::ops::metrics::Observed {
            registry: run.registry.clone(),
            pipelines: vec![(run.pipeline.clone(), run.handles[0].clone())],
            started: std::time::Instant::now(),
            admin: Some(tributary::ops::metrics::Admin {
                root: run.root.clone(),
                token: tributary::config::Secret::new(token),
            }),
        },
    )
    .unwrap();
    let mut with_admin = cfg.clone();
    with_admin.admin.enabled = true;
    with_admin.admin.token = tributary::config::Secret::new(token);
    with_admin.http.listen = addr.to_string();
    (with_admin, server)
}

/// Tables replicated under `[[pipeline.table]]` mappings (one under another target name, with
/// a column left out, a row filter and every version kept; one sorted by two columns under
/// REPLICA IDENTITY FULL) and a keyless table (rows counted by content, with duplicates): all
/// verify equal as replicated (the rows the filter leaves out, the column left out and the
/// append table's older versions are not differences); rows damaged in ClickHouse are found
/// (the keyless one by content); `--repair` fixes the mapped tables by their Postgres key.
async fn follows_mappings_and_keyless_tables(target: Target) {
    use tributary::cdc::verify::{run, Options, TableReport};
    use tributary::config::{TableEngine, TableMapping};
    let w = World::new(target).await;
    let c = pg().await;
    let (m, s, k) = (unique("mapped"), unique("sorted"), unique("keyless"));
    let target_name = format!("{m}_target");
    c.batch_execute(&format!(
        "CREATE TABLE {m} (id int PRIMARY KEY, tenant int NOT NULL, v text, secret text);
         INSERT INTO {m} SELECT g, g % 3, 'v' || g, 's' || g FROM generate_series(1, 1000) g;
         CREATE TABLE {s} (id int PRIMARY KEY, tenant int NOT NULL, v text);
         ALTER TABLE {s} REPLICA IDENTITY FULL;
         INSERT INTO {s} SELECT g, g % 3, 'v' || g FROM generate_series(1, 500) g;
         CREATE TABLE {k} (a int, b text); ALTER TABLE {k} REPLICA IDENTITY FULL;
         INSERT INTO {k} SELECT g % 100, 'b' || (g % 100) FROM generate_series(1, 300) g;"
    ))
    .await
    .unwrap();
    // The mapped tables are named by their mappings alone.
    let mut cfg = w.config(&[&format!("public.{k}")]);
    cfg.pipelines[0].tables.push(TableMapping {
        name: format!("public.{m}"),
        target: Some(target_name.clone()),
        exclude_columns: vec!["secret".into()],
        filter: Some("id % 2 = 0".into()),
        engine: TableEngine::Append,
        ..Default::default()
    });
    cfg.pipelines[0].tables.push(TableMapping {
        name: format!("public.{s}"),
        order_by: vec!["tenant".into(), "id".into()],
        ..Default::default()
    });
    let run_ = Running::start(&cfg).await;
    let db = w.database.clone();
    eventually(Duration::from_secs(90), "every table copied", || async {
        let mut got = Vec::new();
        for t in [&target_name, &s, &k] {
            got.extend(
                w.try_ch_rows(&format!("SELECT count() FROM `{db}`.`{t}`"))
                    .await?,
            );
        }
        (got == ["500", "500", "300"])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    // Two versions of row 4 in the append table; a keyless row deleted (one of three copies).
    c.batch_execute(&format!(
        "UPDATE {m} SET v = 'v4 again' WHERE id = 4;
         DELETE FROM {k} WHERE ctid = (SELECT min(ctid) FROM {k} WHERE a = 7)"
    ))
    .await
    .unwrap();
    let o = Options {
        tables: vec![],
        limit: 100,
        repair: false,
        pipelines: Vec::new(),
    };
    let by_table = |r: &[TableReport], t: &str| -> TableReport {
        r.iter()
            .find(|x| x.table == format!("public.{t}"))
            .unwrap_or_else(|| panic!("{t} not in {r:?}"))
            .clone()
    };
    let r = run(&cfg, &o).await.unwrap();
    let (rm, rs, rk) = (by_table(&r, &m), by_table(&r, &s), by_table(&r, &k));
    assert!(rm.equal && rm.postgres_rows == 500, "{rm:?}");
    assert_eq!(rm.clickhouse, format!("{db}.{target_name}"));
    assert!(rm.skipped_columns.is_empty(), "{rm:?}");
    assert!(rs.equal && rs.postgres_rows == 500, "{rs:?}");
    assert!(rk.equal && rk.postgres_rows == 299, "{rk:?}");

    // Damage: in each mapped table row 10 changed and row 2000 added, at versions above what
    // they have; in the keyless one a fourth copy of a row.
    for t in [&target_name, &s] {
        let version = above_every_version(&w, t).await;
        w.ch.execute(&format!(
            "INSERT INTO `{db}`.`{t}` (id, tenant, v, `_version`, `_is_deleted`) VALUES (10, 1, 'wrong', {version}, 0), (2000, 2, 'extra', {version}, 0)"
        ))
        .await
        .unwrap();
    }
    w.ch.execute(&format!(
        "INSERT INTO `{db}`.`{k}` (a, b, `_version`, `_is_deleted`, `_seq`) VALUES (1, 'b1', 5, 0, 999999)"
    ))
    .await
    .unwrap();
    let r = run(&cfg, &o).await.unwrap();
    let found = |x: &TableReport| -> Vec<String> {
        x.differences
            .iter()
            .map(|d| format!("{} {} {}", d.kind, d.key, d.columns.join(",")))
            .collect()
    };
    // Rows by their sort key (its columns in the table's order): id; id and tenant.
    assert_eq!(
        found(&by_table(&r, &m)),
        ["changed 10 v", "extra 2000 "],
        "{r:?}"
    );
    assert_eq!(
        found(&by_table(&r, &s)),
        ["changed 10, 1 v", "extra 2000, 2 "],
        "{r:?}"
    );
    assert_eq!(found(&by_table(&r, &k)), ["extra 1, b1 "], "{r:?}");

    // Repaired by the Postgres key (id), compared by the sort key. The damage's versions are
    // above every row's; the repair reads at the WAL position now, which must be beyond them
    // (as it is beyond any change the stream could have lost): the WAL moves once.
    move_wal(&c).await;
    let (with_admin, server) = admin_api(&run_, &cfg).await;
    let repair = Options {
        tables: vec![format!("public.{m}"), format!("public.{s}")],
        repair: true,
        ..o
    };
    let r = run(&with_admin, &repair).await.unwrap();
    for t in [&m, &s] {
        let x = by_table(&r, t);
        assert!(x.equal, "{x:?}");
        assert!(
            x.repaired.as_ref().is_some_and(|d| d
                .answer
                .contains("1 row(s) copied from Postgres, 1 deleted")),
            "{x:?}"
        );
    }
    server.abort();
    run_.stop().await;
    w.teardown().await;
}
crate::matrix!(
    verify_follows_mappings_and_keyless_tables,
    follows_mappings_and_keyless_tables
);

/// `[verify] interval` inside the service: the schedule compares the live pipeline's table
/// every second and keeps the result where `/status`, the status page and `/metrics` read
/// it: equal first; a row added on purpose in ClickHouse is then named, and counted by
/// `tributary_verify_differences`; repaired, the next run is equal again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_verify_shows_its_result_on_status_and_metrics() {
    use tributary::ops::metrics::{render_metrics, Observed};
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("scheduled");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 300) g"
    ))
    .await
    .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    cfg.verify.interval = tributary::config::HumanDuration(Duration::from_secs(1));
    let run_ = Running::start(&cfg).await;
    let schedule = tokio::spawn(tributary::cdc::verify_schedule::run(
        cfg.clone(),
        run_.registry.clone(),
    ));
    let observed = Observed {
        registry: run_.registry.clone(),
        pipelines: vec![(run_.pipeline.clone(), run_.handles[0].clone())],
        started: std::time::Instant::now(),
        admin: None,
    };
    let table = format!("public.{t}");
    let last = |want: &'static str| {
        let (reg, table) = (run_.registry.clone(), table.clone());
        async move {
            let v = reg.verify().ok_or("no verify state")?;
            let t = v
                .tables
                .iter()
                .find(|x| x.table == table)
                .ok_or(format!("{table} not verified yet: {v:?}"))?;
            let got = if t.equal {
                "equal".to_string()
            } else {
                t.keys.join(", ")
            };
            (got == want && t.postgres_rows == 300)
                .then(|| v.clone())
                .ok_or(format!("{got:?} ({} rows)", t.postgres_rows))
        }
    };
    let v = eventually(Duration::from_secs(60), "an equal verify", || last("equal")).await;
    assert!(
        v.interval_s == 1.0 && v.last_run > 0.0 && v.error.is_none(),
        "{v:?}"
    );

    w.ch.execute(&format!(
        "INSERT INTO `{}`.`{t}` (id, v, _version, _is_deleted) VALUES (9000, 'ghost', 5, 0)",
        w.database
    ))
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "the ghost named", || {
        last("extra 9000")
    })
    .await;
    let metrics = render_metrics(&observed);
    let labels = format!("{{pipeline=\"{}\",table=\"{table}\"}}", run_.pipeline);
    assert!(
        metrics.contains(&format!("tributary_verify_differences{labels} 1")),
        "{metrics}"
    );
    let runs = |result: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "tributary_verify_runs_total{{result=\"{result}\"}} "
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        runs("equal") >= 1.0 && runs("differences") >= 1.0,
        "{metrics}"
    );
    let checked: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("tributary_verify_rows_checked_total{labels} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(checked >= 600.0, "{metrics}");
    assert!(
        metrics.contains("tributary_verify_interval_seconds 1.0"),
        "{metrics}"
    );
    let status = serde_json::to_value(observed.status()).unwrap();
    assert_eq!(
        status["verify"]["tables"][0]["keys"][0], "extra 9000",
        "{status}"
    );

    // Gone again (a tombstone above the ghost's version): the next run is equal.
    w.ch.execute(&format!(
        "INSERT INTO `{}`.`{t}` (id, v, _version, _is_deleted) VALUES (9000, '', 6, 1)",
        w.database
    ))
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "equal again", || last("equal")).await;
    assert!(render_metrics(&observed).contains(&format!("tributary_verify_differences{labels} 0")));
    schedule.abort();
    run_.stop().await;
    w.teardown().await;
}
