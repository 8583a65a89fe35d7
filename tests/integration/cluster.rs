//! A replicated ClickHouse cluster (#22): two ClickHouse 18.16 replicas with ZooKeeper
//! (scripts/services.sh `chcluster`). With `clickhouse.cluster`, every table (and the
//! pipeline's state) is created `ReplicatedReplacingMergeTree` by `ON CLUSTER` DDL, schema
//! changes reach both replicas (one made while a replica is stopped is queued for it), and
//! with `clickhouse.replicas` the sink moves on to the other replica while one is stopped:
//! after it is started again, both equal Postgres; with `clickhouse.distributed`, so does
//! the Distributed table `<table>_all` over the live views, read on either node.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

struct Cluster {
    urls: [String; 2],
    name: String,
}

fn cluster() -> Cluster {
    let vars = tributary_testkit::services::services(
        &[
            "TRIBUTARY_TEST_CHC_URL1",
            "TRIBUTARY_TEST_CHC_URL2",
            "TRIBUTARY_TEST_CHC_CLUSTER",
        ],
        tributary_testkit::services::Lookup::Environment,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Cluster {
        urls: [
            vars["TRIBUTARY_TEST_CHC_URL1"].clone(),
            vars["TRIBUTARY_TEST_CHC_URL2"].clone(),
        ],
        name: vars["TRIBUTARY_TEST_CHC_CLUSTER"].clone(),
    }
}

fn replica(n: usize, action: &str) {
    let out = std::process::Command::new(repo().join("scripts/services.sh"))
        .args(["chreplica", &n.to_string(), action])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chreplica {n} {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TSV rows of `sql` on one replica.
async fn rows_at(url: &str, sql: &str) -> Result<Vec<String>, String> {
    tributary::clients::tls::install_default_provider();
    let r = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !ok {
        return Err(text);
    }
    Ok(text.lines().map(str::to_string).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_equal_postgres_after_one_is_stopped_and_restarted() {
    let cl = cluster();
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("clustered");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 3000) g"))
        .await
        .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    {
        let ch = &mut cfg.pipelines[0].clickhouse;
        ch.url = cl.urls[0].clone();
        ch.replicas = vec![cl.urls[1].clone()];
        ch.cluster = cl.name.clone();
        ch.distributed = true;
    }
    let db = w.database.clone();
    let pg_sql = format!("SELECT id, v FROM {t} ORDER BY id");
    let equal_at = |url: String, cols: &'static str| {
        let (c, pg_sql, db, t) = (&c, pg_sql.replace("id, v", cols), db.clone(), t.clone());
        async move {
            let want = pg_rows(c, &pg_sql).await;
            let got = rows_at(
                &url,
                &format!(
                    "SELECT {cols} FROM `{db}`.`{t}` FINAL WHERE _is_deleted = 0 ORDER BY id FORMAT TabSeparated"
                ),
            )
            .await?;
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "{url}: {} rows, Postgres {}",
                    got.len(),
                    want.len()
                ))
            }
        }
    };
    let run = Running::start(&cfg).await;
    for url in &cl.urls {
        eventually(T, "the snapshot on both replicas", || {
            equal_at(url.clone(), "id, v")
        })
        .await;
    }
    // Replicated, the pipeline's state too.
    for url in &cl.urls {
        let engines = rows_at(
            url,
            &format!("SELECT name, engine FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree' ORDER BY name FORMAT TabSeparated"),
        )
        .await
        .unwrap();
        assert_eq!(
            engines,
            vec![
                "_tributary_state\tReplicatedReplacingMergeTree".to_string(),
                format!("{t}\tReplicatedReplacingMergeTree"),
            ],
            "{url}"
        );
    }
    // A schema change reaches both.
    c.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN w int; UPDATE {t} SET w = id % 7 WHERE id <= 100"
    ))
    .await
    .unwrap();
    for url in &cl.urls {
        eventually(T, "the new column on both replicas", || {
            equal_at(url.clone(), "id, v, w")
        })
        .await;
    }

    // The replica in use goes away while changes stream; the sink goes on with the other.
    replica(1, "stop");
    let load = tokio::spawn({
        let t = t.clone();
        async move {
            let c = pg().await;
            for i in 0..30i64 {
                c.batch_execute(&format!(
                    "INSERT INTO {t} SELECT g, 'n' || g, 1 FROM generate_series({a}, {b}) g; UPDATE {t} SET v = v || '+' WHERE id % 30 = {i}; DELETE FROM {t} WHERE id = {d}",
                    a = 10_000 + i * 100,
                    b = 10_099 + i * 100,
                    d = i * 11 + 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    load.await.unwrap();
    eventually(T, "the changes on the replica left", || {
        equal_at(cl.urls[1].clone(), "id, v, w")
    })
    .await;
    replica(1, "start");
    for url in &cl.urls {
        eventually(T, "both replicas equal after the restart", || {
            equal_at(url.clone(), "id, v, w")
        })
        .await;
    }
    // A schema change while a replica is away: done on the one that answers (after
    // DDL_WAIT, not ClickHouse's 180 s), queued for the other, which runs it when it is back.
    replica(2, "stop");
    c.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN x text; UPDATE {t} SET x = 'x' || id WHERE id % 10 = 0"
    ))
    .await
    .unwrap();
    eventually(T, "the new column on the replica left", || {
        equal_at(cl.urls[0].clone(), "id, v, w, x")
    })
    .await;
    replica(2, "start");
    for url in &cl.urls {
        eventually(T, "both replicas equal after the change", || {
            equal_at(url.clone(), "id, v, w, x")
        })
        .await;
    }
    // A TRUNCATE (one replica runs it; the table's replication log brings it to the other),
    // then new rows: both equal.
    c.batch_execute(&format!(
        "TRUNCATE {t}; INSERT INTO {t} SELECT g, 'after' || g, 2, 'y' FROM generate_series(1, 50) g"
    ))
    .await
    .unwrap();
    for url in &cl.urls {
        eventually(T, "both replicas equal after a TRUNCATE", || {
            equal_at(url.clone(), "id, v, w, x")
        })
        .await;
    }
    // `clickhouse.distributed`: `<t>_all` over the cluster's live views, on every node, with
    // the columns added since (made again with the view), reads what Postgres holds.
    let want = pg_rows(&c, &format!("SELECT id, v, w, x FROM {t} ORDER BY id")).await;
    for url in &cl.urls {
        let engine = rows_at(
            url,
            &format!("SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{t}_all' FORMAT TabSeparated"),
        )
        .await
        .unwrap();
        assert_eq!(engine, vec!["Distributed".to_string()], "{url}");
        let got = rows_at(
            url,
            &format!("SELECT id, v, w, x FROM `{db}`.`{t}_all` ORDER BY id FORMAT TabSeparated"),
        )
        .await
        .unwrap();
        assert!(
            got == want,
            "{url}: {t}_all has {} rows, Postgres {}",
            got.len(),
            want.len()
        );
    }
    run.stop().await;
    let _ = rows_at(
        &cl.urls[1],
        &format!("DROP DATABASE IF EXISTS `{db}` ON CLUSTER `{}`", cl.name),
    )
    .await;
    w.teardown().await;
}
