//! The CDC pipeline against real servers: PostgreSQL 15 and ClickHouse in both generations
//! (18.16 server, 26.9 engine behind our front). Every test compares ClickHouse's live rows
//! (FINAL, deleted rows filtered) with Postgres's.

use crate::common::*;
use crate::matrix;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The seed scenario: the two demo tables, the seed's insert and update, plus deletes.
async fn seed_scenario(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t1 = unique("demo_table1");
    let t2 = unique("demo_table2");
    c.batch_execute(&format!(
        "CREATE TABLE {t1} (id int PRIMARY KEY, value text); CREATE TABLE {t2} (id int PRIMARY KEY, value text);
         INSERT INTO {t1} VALUES (1, 'one'), (2, 'two'), (3, 'three');
         INSERT INTO {t2} VALUES (1, 'original'), (2, 'kept');"
    ))
    .await
    .unwrap();
    let cfg = w.config(&[&format!("public.{t1}"), &format!("public.{t2}")]);
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t1, &t1, "id, value", "id", T).await;
    c.batch_execute(&format!(
        "INSERT INTO {t1} VALUES (4, 'sample');
         UPDATE {t2} SET value = 'updated' WHERE id = 1;
         DELETE FROM {t1} WHERE id = 2;
         BEGIN; INSERT INTO {t2} VALUES (3, 'in a txn'); UPDATE {t2} SET value = NULL WHERE id = 2; COMMIT;"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t1, &t1, "id, value", "id", T).await;
    converge(&w, &c, &t2, &t2, "id, value", "id", T).await;
    assert_eq!(
        w.ch_live(&t1, "id, value", "id").await,
        vec!["1\tone", "3\tthree", "4\tsample"]
    );
    // The live view hides deleted rows on every generation.
    let view = w
        .ch_rows(&format!(
            "SELECT id FROM `{}`.`{t1}_live` ORDER BY id",
            w.database
        ))
        .await;
    assert_eq!(view, vec!["1", "3", "4"]);
    run.stop().await;
    w.teardown().await;
}
matrix!(seed, seed_scenario);

/// Table and column names with quotes, spaces and a semicolon.
async fn weird_names(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = format!("we\"ird; t {}", unique("x"));
    let qt = format!("\"{}\"", t.replace('"', "\"\""));
    c.batch_execute(&format!(
        "CREATE TABLE public.{qt} (\"i d\" int PRIMARY KEY, \"va\"\"l; ue\" text, \"select\" int);
         INSERT INTO public.{qt} VALUES (1, 'a', 10), (2, 'b''s', 20);"
    ))
    .await
    .unwrap();
    let cfg = w.config(&[&format!("public.{qt}")]);
    let run = Running::start(&cfg).await;
    c.batch_execute(&format!("INSERT INTO public.{qt} VALUES (3, 'c;\"d', 30); UPDATE public.{qt} SET \"select\" = 21 WHERE \"i d\" = 2; DELETE FROM public.{qt} WHERE \"i d\" = 1;"))
        .await
        .unwrap();
    let cols = "\"i d\", \"va\"\"l; ue\", \"select\"";
    eventually(T, "weird table to converge", || async {
        let want = pg_rows(&c, &format!("SELECT {cols} FROM public.{qt} ORDER BY 1")).await;
        let got = w
            .try_ch_rows(&format!(
                "SELECT `i d`, `va\"l; ue`, `select` FROM `{}`.`{}` FINAL WHERE _is_deleted = 0 ORDER BY 1",
                w.database,
                t.replace('`', "\\`")
            ))
            .await?;
        if want == got { Ok(()) } else { Err(format!("{want:?} vs {got:?}")) }
    })
    .await;
    run.stop().await;
    w.teardown().await;
}
matrix!(weird_names_replicate, weird_names);

/// A 100k-row snapshot taken while writes continue: ClickHouse equals Postgres afterwards.
async fn snapshot_while_writing(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("snap");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text, n numeric(12,2));
         INSERT INTO {t} SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 100000) g;"
    ))
    .await
    .unwrap();
    let cfg = w.config(&[&format!("public.{t}")]);
    let run = Running::start(&cfg).await;
    // Writes while the snapshot runs: updates of snapshotted rows, new rows, deletes.
    for i in 0..20 {
        c.batch_execute(&format!(
            "UPDATE {t} SET payload = 'upd{i}' WHERE id % 997 = {i};
             INSERT INTO {t} SELECT g, 'new', 1.5 FROM generate_series(100001 + {i} * 100, 100000 + ({i} + 1) * 100) g;
             DELETE FROM {t} WHERE id % 1009 = {i};"
        ))
        .await
        .unwrap();
    }
    converge(
        &w,
        &c,
        &t,
        &t,
        "id, payload",
        "id",
        Duration::from_secs(120),
    )
    .await;
    let counters = run.counters();
    let snap = counters
        .snapshot_rows
        .load(std::sync::atomic::Ordering::Relaxed);
    // The snapshot sees the table as of the slot's creation: a few early deletes may precede it.
    assert!(snap > 99_000, "snapshot copied {snap} rows");
    run.stop().await;
    w.teardown().await;
}
matrix!(snapshot_100k_while_writing, snapshot_while_writing);

/// ADD COLUMN reaches ClickHouse before the first row that carries it; DROP COLUMN keeps the
/// ClickHouse column (history stays); TRUNCATE empties the ClickHouse table too.
async fn schema_changes(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("evolve");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, a text, gone text); INSERT INTO {t} VALUES (1, 'one', 'g1')"))
        .await
        .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    converge(&w, &c, &t, &t, "id, a, gone", "id", T).await;
    c.batch_execute(&format!(
        "ALTER TABLE {t} ADD COLUMN b int; INSERT INTO {t} VALUES (2, 'two', 'g2', 22); UPDATE {t} SET b = 11 WHERE id = 1;
         ALTER TABLE {t} DROP COLUMN gone; INSERT INTO {t} VALUES (3, 'three', 33);"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, a, b", "id", T).await;
    // The dropped column keeps what it had; rows written after the drop have NULL there.
    assert_eq!(
        w.ch_live(&t, "id, gone", "id").await,
        vec!["1\tg1", "2\tg2", "3\t\\N"]
    );
    // The live view follows the new column.
    let view = w
        .ch_rows(&format!(
            "SELECT id, b FROM `{}`.`{t}_live` ORDER BY id",
            w.database
        ))
        .await;
    assert_eq!(view, vec!["1\t11", "2\t22", "3\t33"]);
    // A column added with a constant default: rows written before hold it in Postgres
    // without any change event; ClickHouse gets it as the column's DEFAULT.
    c.batch_execute(&format!("ALTER TABLE {t} ADD COLUMN d text NOT NULL DEFAULT 'dflt'; INSERT INTO {t} VALUES (4, 'four', 44, 'own')"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, a, b, d", "id", T).await;
    c.batch_execute(&format!(
        "TRUNCATE {t}; INSERT INTO {t} VALUES (9, 'after', 99)"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, a, b", "id", T).await;
    let all = w
        .ch_rows(&format!("SELECT count() FROM `{}`.`{t}`", w.database))
        .await;
    assert_eq!(
        all,
        vec!["1"],
        "TRUNCATE removed the old rows from ClickHouse"
    );
    run.stop().await;
    w.teardown().await;
}
matrix!(add_drop_column_and_truncate, schema_changes);

/// An existing publication with more tables than the config lists: only the listed ones
/// reach ClickHouse.
async fn unlisted_tables(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let (a, b) = (unique("listed"), unique("unlisted"));
    c.batch_execute(&format!(
        "CREATE TABLE {a} (id int PRIMARY KEY); CREATE TABLE {b} (id int PRIMARY KEY);
         CREATE PUBLICATION \"{p}\" FOR TABLE {a}, {b};",
        p = w.publication
    ))
    .await
    .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{a}")])).await;
    converge(&w, &c, &a, &a, "id", "id", T).await;
    c.batch_execute(&format!("INSERT INTO {b} VALUES (1); INSERT INTO {a} VALUES (1); TRUNCATE {b}; INSERT INTO {a} VALUES (2)")).await.unwrap();
    converge(&w, &c, &a, &a, "id", "id", T).await;
    let tables = w
        .ch_rows(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' AND name LIKE 'unlisted%'",
            w.database
        ))
        .await;
    assert!(tables.is_empty(), "{tables:?}");
    run.stop().await;
    w.teardown().await;
}
matrix!(unlisted_published_tables_are_skipped, unlisted_tables);
