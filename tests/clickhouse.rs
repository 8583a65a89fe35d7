//! The ClickHouse client against both generations: errors carry the server's message (code
//! and text) for queries and for inserts, with LZ4 on (the default).

mod common;

use common::*;

async fn insert_errors_carry_the_message(target: Target) {
    let w = World::new(target).await;
    let t = unique("bad_insert");
    w.ch.execute(&format!(
        "CREATE TABLE `{}`.`{t}` (id Int32) ENGINE = MergeTree ORDER BY id",
        w.database
    ))
    .await
    .unwrap();
    let sql = format!(
        "INSERT INTO `{}`.`{t}` (id) FORMAT TabSeparated",
        w.database
    );
    let err =
        w.ch.insert_tsv(&sql, bytes::Bytes::from_static(b"not a number\n"))
            .await
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("Code: ") && err.contains(&w.ch.addr().to_string()),
        "{err}"
    );
    let err =
        w.ch.query_text("SELECT * FROM no_such_table_here")
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("Code: 60"), "{err}");
}
matrix!(server_errors_are_reported, insert_errors_carry_the_message);
