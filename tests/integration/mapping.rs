//! Table mappings (`[[pipeline.table]]`, #20) against PostgreSQL 15 and both ClickHouse
//! generations: a target name, an excluded column, row filters with rows moving in and out,
//! a custom sort key and partitions, the append engine; and the mappings that must be
//! refused before they can harm (a column list without the key, a filter Postgres would
//! only refuse at the user's next UPDATE, a sort key a delete cannot find, an existing table
//! sorted otherwise). After every run ClickHouse equals Postgres under the mapping.

use crate::common::*;
use crate::matrix;
use std::time::Duration;
use tributary::config::{TableEngine, TableMapping};

const T: Duration = Duration::from_secs(60);

fn mapping(name: &str) -> TableMapping {
    TableMapping {
        name: format!("public.{name}"),
        ..Default::default()
    }
}

async fn publication_exists(c: &tokio_postgres::Client, name: &str) -> bool {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn mapped_tables(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let a = unique("orders");
    let b = unique("events");
    c.batch_execute(&format!(
        "CREATE TABLE {a} (id int PRIMARY KEY, tenant int NOT NULL, secret text, v text);
         INSERT INTO {a} SELECT g, g % 3, 'pw' || g, 'v' || g FROM generate_series(1, 40) g;
         INSERT INTO {a} VALUES (1500, 1, 'pw', 'outside');
         CREATE TABLE {b} (id int PRIMARY KEY, tenant int NOT NULL, v text);
         ALTER TABLE {b} REPLICA IDENTITY FULL;
         INSERT INTO {b} SELECT g, g % 4, 'e' || g FROM generate_series(1, 40) g;"
    ))
    .await
    .unwrap();
    let target_a = format!("{a}_mapped");
    let mut cfg = w.config(&[]);
    cfg.pipelines[0].tables = vec![
        TableMapping {
            target: Some(target_a.clone()),
            exclude_columns: names(&["secret"]),
            filter: Some("id < 1000".into()),
            partition_by: Some("intDiv(id, 100)".into()),
            ..mapping(&a)
        },
        TableMapping {
            filter: Some("tenant <> 0".into()),
            order_by: names(&["tenant", "id"]),
            engine: TableEngine::Append,
            ..mapping(&b)
        },
    ];
    let out = tributary::check::run(&cfg).await.expect("check passes");
    assert!(out.contains("columns (id, tenant, v)"), "{out}");
    assert!(out.contains("rows WHERE (id < 1000)"), "{out}");
    assert!(
        out.contains(&format!("-> {}.{target_a}", w.database)),
        "{out}"
    );
    assert!(
        out.contains("PARTITION BY intDiv(id, 100) ORDER BY (`id`)"),
        "{out}"
    );
    assert!(
        out.contains("ORDER BY (`tenant`, `id`, `_version`)"),
        "{out}"
    );
    // check changed nothing.
    assert!(
        !publication_exists(&c, &w.publication).await,
        "check must not create the publication"
    );

    let run = Running::start(&cfg).await;
    let pg_a = format!("SELECT id, tenant, v FROM {a} WHERE id < 1000 ORDER BY id");
    let ch_a = format!(
        "SELECT id, tenant, v FROM `{}`.`{target_a}` FINAL WHERE _is_deleted = 0 ORDER BY id",
        w.database
    );
    let pg_b = format!("SELECT tenant, id, v FROM {b} WHERE tenant <> 0 ORDER BY tenant, id");
    let ch_b = format!(
        "SELECT tenant, id, v FROM `{}`.`{b}_live` ORDER BY tenant, id",
        w.database
    );
    converge_sql(&w, &c, &pg_a, &ch_a, T).await;
    converge_sql(&w, &c, &pg_b, &ch_b, T).await;
    wait_streaming(&c, &w.slot).await;
    c.batch_execute(&format!(
        "UPDATE {a} SET v = 'upd', secret = 'new' WHERE id <= 5;
         UPDATE {a} SET id = 2000 WHERE id = 6;      -- moves out of the filter
         UPDATE {a} SET id = 7000 WHERE id = 1500;   -- stays out
         UPDATE {a} SET id = 900 WHERE id = 7000;    -- moves in
         DELETE FROM {a} WHERE id IN (7, 8);
         INSERT INTO {a} VALUES (50, 2, 'pw', 'in'), (5000, 2, 'pw', 'out');
         UPDATE {b} SET v = 'twice' WHERE id = 1;
         UPDATE {b} SET v = 'thrice' WHERE id = 1;
         UPDATE {b} SET tenant = 0 WHERE id = 2;     -- moves out
         UPDATE {b} SET tenant = 3 WHERE id = 4;     -- moves in (tenant was 0)
         UPDATE {b} SET tenant = 2 WHERE id = 5;     -- sort key change inside the filter
         DELETE FROM {b} WHERE id = 6;
         INSERT INTO {b} VALUES (100, 1, 'new'), (101, 0, 'filtered');"
    ))
    .await
    .unwrap();
    converge_sql(&w, &c, &pg_a, &ch_a, T).await;
    converge_sql(&w, &c, &pg_b, &ch_b, T).await;
    let cols = w
        .ch_rows(&format!(
            "SELECT name FROM system.columns WHERE database = '{}' AND table = '{target_a}'",
            w.database
        ))
        .await;
    assert_eq!(cols, vec!["id", "tenant", "v", "_version", "_is_deleted"]);
    assert!(w
        .ch_rows(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' AND name = '{a}'",
            w.database
        ))
        .await
        .is_empty());
    let keys = w
        .ch_rows(&format!(
            "SELECT partition_key, sorting_key FROM system.tables WHERE database = '{}' AND name = '{target_a}'",
            w.database
        ))
        .await;
    // 26.9 prints the key in parentheses.
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].replace("(id)", "id"), "intDiv(id, 100)\tid");
    // The append table keeps every version of row 1: the snapshot's and two updates.
    let versions = w
        .ch_rows(&format!(
            "SELECT v FROM `{}`.`{b}` FINAL WHERE id = 1 ORDER BY _version",
            w.database
        ))
        .await;
    assert_eq!(versions, vec!["e1", "twice", "thrice"]);
    run.stop().await;

    // A restart finds the publication and tables as the mapping wants them.
    let run = Running::start(&cfg).await;
    c.batch_execute(&format!(
        "UPDATE {a} SET v = 'again' WHERE id = 9; UPDATE {b} SET v = 'again' WHERE id = 9"
    ))
    .await
    .unwrap();
    converge_sql(&w, &c, &pg_a, &ch_a, T).await;
    converge_sql(&w, &c, &pg_b, &ch_b, T).await;
    run.stop().await;
    w.teardown().await;
}
matrix!(mapped_columns_rows_sort_key_and_engine, mapped_tables);

/// Mappings that would break the user's writes or lose deletes stop the pipeline at once,
/// with the reason, and leave the publication as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harmful_mappings_are_refused_at_once() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("refused");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, tenant int NOT NULL, v text);
         INSERT INTO {t} VALUES (1, 1, 'a')"
    ))
    .await
    .unwrap();
    let with = |m: TableMapping| {
        let mut cfg = w.config(&[]);
        cfg.supervision.max_restarts = 50;
        cfg.pipelines[0].tables = vec![m];
        cfg
    };
    let err = stops_at_once(&with(TableMapping {
        exclude_columns: names(&["id"]),
        ..mapping(&t)
    }))
    .await;
    assert!(err.contains("key column `id`"), "{err}");

    // A filter on a column outside the replica identity: Postgres accepts it, then refuses
    // every UPDATE of the table. It is rolled back before COMMIT.
    let err = stops_at_once(&with(TableMapping {
        filter: Some("tenant > 0".into()),
        ..mapping(&t)
    }))
    .await;
    assert!(
        err.contains("`tenant`") && err.contains("outside its replica identity"),
        "{err}"
    );
    assert!(
        !publication_exists(&c, &w.publication).await,
        "the refused publication was rolled back"
    );
    c.batch_execute(&format!("UPDATE {t} SET v = 'b' WHERE id = 1"))
        .await
        .expect("the user's UPDATE still works");

    let err = stops_at_once(&with(TableMapping {
        order_by: names(&["tenant", "id"]),
        ..mapping(&t)
    }))
    .await;
    assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");

    // An existing ClickHouse table sorted otherwise is not re-sorted or replaced.
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    converge(&w, &c, &t, &t, "id, tenant, v", "id", T).await;
    run.stop().await;
    c.batch_execute(&format!("ALTER TABLE {t} REPLICA IDENTITY FULL"))
        .await
        .unwrap();
    let err = stops_at_once(&with(TableMapping {
        order_by: names(&["tenant", "id"]),
        ..mapping(&t)
    }))
    .await;
    assert!(
        err.contains("is sorted by id, tributary would sort it by (`tenant`, `id`)"),
        "{err}"
    );
    assert_eq!(w.ch_live(&t, "id, tenant, v", "id").await, vec!["1\t1\tb"]);
    w.teardown().await;
}

/// `purge_deleted_after` (#20): on 26.9 ClickHouse's cleanup merge drops deleted rows and the
/// versions they replaced once the table's parts are all that old, and FINAL still equals
/// Postgres; 18.16 has no cleanup merges, so the mapping is refused at start, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_rows_are_purged_where_the_server_can() {
    let c = pg().await;
    let t = unique("purged");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20) g;"
    ))
    .await
    .unwrap();
    let purge = || TableMapping {
        purge_deleted_after: Some(tributary::config::HumanDuration(Duration::from_secs(60))),
        ..mapping(&t)
    };

    let old = World::new(Target::Ch18).await;
    let mut cfg = old.config(&[]);
    cfg.supervision.max_restarts = 50;
    cfg.pipelines[0].tables = vec![purge()];
    let err = stops_at_once(&cfg).await;
    assert!(
        err.contains("purge_deleted_after needs ClickHouse 24.1"),
        "{err}"
    );
    old.teardown().await;

    let w = World::new(Target::Ch26).await;
    let mut cfg = w.config(&[]);
    cfg.pipelines[0].tables = vec![purge()];
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    wait_streaming(&c, &w.slot).await;
    c.batch_execute(&format!(
        "DELETE FROM {t} WHERE id <= 5; UPDATE {t} SET v = 'upd' WHERE id > 17"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // Without FINAL: only the live rows' latest versions are left.
    let stored = eventually(Duration::from_secs(150), "the cleanup merge", || async {
        let r = w
            .try_ch_rows(&format!(
                "SELECT count(), countIf(_is_deleted = 1) FROM `{}`.`{t}`",
                w.database
            ))
            .await?;
        if r == ["15\t0"] {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(stored, ["15\t0"]);
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    run.stop().await;
    w.teardown().await;
}
