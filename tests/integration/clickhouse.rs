//! The ClickHouse client against both generations: errors carry the server's message (code
//! and text) for queries and for inserts, with LZ4 on (the default).

use crate::common::*;
use crate::matrix;

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

/// Sends a CDC sink one chunk (the table's schema first, then `items`, completing a
/// transaction at `commit`) and waits until the sink has flushed it.
async fn send_flushed(
    edge: &tributary::flow::edge::Edge<tributary::cdc::change::SinkMsg>,
    sink: &ractor::ActorRef<tributary::cdc::change::SinkMsg>,
    schema: &tributary::protocol::schema::SharedSchema,
    items: Vec<tributary::cdc::change::ChangeItem>,
    commit: u64,
) {
    use tributary::cdc::change::*;
    let mut all = vec![ChangeItem::Schema(schema.clone())];
    all.extend(items);
    let chunk = ChangeChunk {
        items: all,
        commit: Some(commit),
        commit_times: Vec::new(),
        caught_up: false,
        trace: tracing::Span::none(),
        queue_span: tracing::Span::none(),
    };
    edge.send(move |permit| SinkMsg::Changes(chunk, permit))
        .await
        .unwrap();
    // Control calls go to a running receiver only.
    while sink.get_status() != ractor::ActorStatus::Running {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    edge.call(SinkMsg::Drain, std::time::Duration::from_secs(60))
        .await
        .unwrap();
}

/// The CDC sink driven directly, as a replay after a restart drives it: the slot resumes from
/// the last position Postgres confirmed, which may lie before a TRUNCATE the sink applied.
/// A replay must never take the table back: the rows the TRUNCATE removed must not come back
/// when the replay stops before reaching the TRUNCATE again (Postgres may have confirmed past
/// it meanwhile), and the replayed TRUNCATE must not remove rows written after it.
async fn replays_never_take_a_table_back(target: Target) {
    use std::sync::Arc;
    use tributary::cdc::change::*;
    use tributary::cdc::clickhouse_sink::*;
    use tributary::flow::edge::Edge;
    use tributary::protocol::pgoutput::Cell;
    use tributary::protocol::schema::{Column, PgType, TableSchema};

    let w = World::new(target).await;
    let table = unique("fenced");
    let cfg = w.config(&[]);
    let p = &cfg.pipelines[0];
    let schema = Arc::new(TableSchema {
        rel_id: 4242,
        schema: "public".into(),
        name: table.clone(),
        columns: vec![
            Column {
                name: "k".into(),
                pg_type: PgType::Text,
                nullable: false,
                is_key: true,
                added_default: None,
                renamed_from: None,
            },
            Column {
                name: "v".into(),
                pg_type: PgType::Int4,
                nullable: true,
                is_key: false,
                added_default: None,
                renamed_from: None,
            },
        ],
        ..Default::default()
    });
    let row = |op: RowOp, version: u64, k: &str, v: Option<i32>| ChangeItem::Row {
        rel_id: 4242,
        change: RowChange {
            op,
            version,
            cells: vec![
                Cell::Text(bytes::Bytes::from(k.to_string())),
                v.map_or(Cell::Null, |v| {
                    Cell::Text(bytes::Bytes::from(v.to_string()))
                }),
            ],
            xid: 1,
            commit_us: 0,
            moved_from: None,
        },
    };
    let truncate = |lsn: u64| ChangeItem::Truncate {
        rels: vec![4242],
        lsn,
        xid: 1,
        commit_us: 0,
    };
    let counters = Arc::new(tributary::runtime::registry::PipelineCounters::default());
    let acks = Arc::new(tokio::sync::watch::channel(0u64).0);
    let edge: Edge<SinkMsg> = Edge::new("replay-test", 4);
    // One sink instance: takes the chunks (each completing a transaction at `commit`),
    // flushes, and stops, as a sink that is killed after its last flush.
    let run = |chunks: Vec<(Vec<ChangeItem>, u64)>| {
        let (edge, acks, counters) = (edge.clone(), acks.clone(), counters.clone());
        let schema = schema.clone();
        let args = SinkArgs {
            pipeline: p.name.clone(),
            clickhouse: p.clickhouse.clone(),
            batch: p.batch,
            tables: Vec::new(),
            edge: edge.clone(),
            acks,
            counters,
        };
        async move {
            let (sink, handle) = ractor::Actor::spawn(None, ClickHouseSink, args)
                .await
                .unwrap();
            for (items, commit) in chunks {
                send_flushed(&edge, &sink, &schema, items, commit).await;
            }
            sink.kill();
            handle.await.unwrap();
        }
    };
    let live = || async {
        w.ch_rows(&format!(
            "SELECT k, v FROM `{}`.`{table}` FINAL WHERE _is_deleted = 0 ORDER BY k",
            w.database
        ))
        .await
    };
    use RowOp::*;
    // The stream: a1 a2 (committed at 150); a3, TRUNCATE, b1 b2, b1 deleted (at 400).
    run(vec![
        (
            vec![
                row(Insert, 100, "a1", Some(1)),
                row(Insert, 110, "a2", Some(2)),
            ],
            150,
        ),
        (
            vec![
                row(Insert, 200, "a3", Some(3)),
                truncate(300),
                row(Insert, 310, "b1", Some(10)),
                row(Insert, 320, "b2", Some(20)),
                row(Delete, 330, "b1", None),
            ],
            400,
        ),
    ])
    .await;
    assert_eq!(live().await, ["b2\t20"]);
    assert_eq!(*acks.borrow(), 400);

    // A replay from 150 that stops before the TRUNCATE: a3 stays removed.
    run(vec![(vec![row(Insert, 200, "a3", Some(3))], 150)]).await;
    assert_eq!(
        live().await,
        ["b2\t20"],
        "a replayed row that the TRUNCATE removed came back"
    );
    assert_eq!(
        counters
            .truncate_fenced
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A replay that stops just after the TRUNCATE: b2, written after it, stays.
    run(vec![(
        vec![row(Insert, 200, "a3", Some(3)), truncate(300)],
        150,
    )])
    .await;
    assert_eq!(
        live().await,
        ["b2\t20"],
        "a replayed TRUNCATE removed rows written after it"
    );

    // The whole replay, and the stream goes on.
    run(vec![(
        vec![
            row(Insert, 200, "a3", Some(3)),
            truncate(300),
            row(Insert, 310, "b1", Some(10)),
            row(Insert, 320, "b2", Some(20)),
            row(Delete, 330, "b1", None),
            row(Update, 410, "b2", Some(21)),
            truncate(500),
            row(Insert, 510, "c1", Some(30)),
        ],
        600,
    )])
    .await;
    assert_eq!(live().await, ["c1\t30"]);

    // A new snapshot (a new slot, maybe a new cluster whose positions start lower) clears the
    // fence: its rows, and changes at positions below the old TRUNCATE, are written.
    run(vec![(
        vec![
            ChangeItem::SnapshotBegin(vec![4242]),
            row(Snapshot, 0, "s1", Some(40)),
            row(Insert, 50, "s2", Some(50)),
        ],
        60,
    )])
    .await;
    assert_eq!(live().await, ["s1\t40", "s2\t50"]);
    w.teardown().await;
}
matrix!(
    replay_never_takes_a_table_back,
    replays_never_take_a_table_back
);

/// Two sinks of one pipeline at once, as after a takeover while the old active was cut off
/// (#22): the new active applied a TRUNCATE and wrote after it; the old one, still holding
/// the TRUNCATE in what it had taken in, must not apply it again over the newer rows (it reads
/// the recorded fence before a TRUNCATE, not the one it read at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_sink_never_truncates_over_its_successor() {
    use std::sync::Arc;
    use tributary::cdc::change::*;
    use tributary::cdc::clickhouse_sink::*;
    use tributary::flow::edge::Edge;
    use tributary::protocol::pgoutput::Cell;
    use tributary::protocol::schema::{Column, PgType, TableSchema};

    let w = World::new(Target::Ch18).await;
    let table = unique("cutoff");
    let cfg = w.config(&[]);
    let p = &cfg.pipelines[0];
    let col = |name: &str, pg_type: PgType, is_key: bool| Column {
        name: name.into(),
        pg_type,
        nullable: !is_key,
        is_key,
        added_default: None,
        renamed_from: None,
    };
    let schema = Arc::new(TableSchema {
        rel_id: 4343,
        schema: "public".into(),
        name: table.clone(),
        columns: vec![col("k", PgType::Text, true), col("v", PgType::Int4, false)],
        ..Default::default()
    });
    let row = |version: u64, k: &str, v: i32| ChangeItem::Row {
        rel_id: 4343,
        change: RowChange {
            op: RowOp::Insert,
            version,
            cells: vec![
                Cell::Text(bytes::Bytes::from(k.to_string())),
                Cell::Text(bytes::Bytes::from(v.to_string())),
            ],
            xid: 1,
            commit_us: 0,
            moved_from: None,
        },
    };
    let truncate = || ChangeItem::Truncate {
        rels: vec![4343],
        lsn: 300,
        xid: 1,
        commit_us: 0,
    };
    let sink = |name: &str| {
        let edge: Edge<SinkMsg> = Edge::new(name, 4);
        let args = SinkArgs {
            pipeline: p.name.clone(),
            clickhouse: p.clickhouse.clone(),
            batch: p.batch,
            tables: Vec::new(),
            edge: edge.clone(),
            acks: Arc::new(tokio::sync::watch::channel(0u64).0),
            counters: Arc::new(tributary::runtime::registry::PipelineCounters::default()),
        };
        async move {
            let (sink, handle) = ractor::Actor::spawn(None, ClickHouseSink, args)
                .await
                .unwrap();
            (edge, sink, handle)
        }
    };
    let live = || async {
        w.ch_rows(&format!(
            "SELECT k, v FROM `{}`.`{table}` FINAL WHERE _is_deleted = 0 ORDER BY k",
            w.database
        ))
        .await
    };
    // The old active's sink has the table (and its fence, none yet) from before the cut.
    let (old_edge, old, old_handle) = sink("old-active").await;
    send_flushed(&old_edge, &old, &schema, vec![row(100, "a1", 1)], 150).await;
    // The new active replays from the confirmed position: the TRUNCATE, then newer rows.
    let (new_edge, new, new_handle) = sink("new-active").await;
    send_flushed(
        &new_edge,
        &new,
        &schema,
        vec![row(200, "a2", 2), truncate(), row(320, "b1", 10)],
        400,
    )
    .await;
    assert_eq!(live().await, ["b1\t10"]);
    // What the old one still held arrives late: it finds the TRUNCATE applied by another
    // sink since it started, and stops without writing (the row before the TRUNCATE would
    // come back; the TRUNCATE would remove b1).
    let chunk = ChangeChunk {
        items: vec![
            ChangeItem::Schema(schema.clone()),
            row(200, "a2", 2),
            truncate(),
            row(320, "b1", 10),
        ],
        commit: Some(400),
        commit_times: Vec::new(),
        caught_up: false,
        trace: tracing::Span::none(),
        queue_span: tracing::Span::none(),
    };
    old_edge
        .send(move |permit| SinkMsg::Changes(chunk, permit))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), old_handle)
        .await
        .expect("the superseded sink stops")
        .unwrap();
    assert_eq!(
        live().await,
        ["b1\t10"],
        "the cut-off sink wrote over what its successor wrote after the TRUNCATE"
    );
    new.kill();
    new_handle.await.unwrap();
    drop(old);
    w.teardown().await;
}

/// A key change through Kafka arrives as the old key's delete and, maybe in a later chunk,
/// the row under its new key whose unchanged TOAST value is the old row's. When the sink does
/// not remember that value, it reads the old row before it writes the tombstone: a merge right
/// after the tombstone (forced here) drops the old row, and a later lookup would find nothing
/// and store NULL.
async fn a_moved_row_keeps_its_toast_value_across_a_merge(target: Target) {
    use std::sync::Arc;
    use tributary::cdc::change::*;
    use tributary::cdc::clickhouse_sink::*;
    use tributary::flow::edge::Edge;
    use tributary::protocol::pgoutput::Cell;
    use tributary::protocol::schema::{Column, PgType, TableSchema};

    let w = World::new(target).await;
    let table = unique("moved");
    let cfg = w.config(&[]);
    let p = &cfg.pipelines[0];
    let col = |name: &str, pg_type: PgType, is_key: bool| Column {
        name: name.into(),
        pg_type,
        nullable: !is_key,
        is_key,
        added_default: None,
        renamed_from: None,
    };
    let schema = Arc::new(TableSchema {
        rel_id: 77,
        schema: "public".into(),
        name: table.clone(),
        columns: vec![
            col("k", PgType::Text, true),
            col("n", PgType::Int4, false),
            col("note", PgType::Text, false),
        ],
        ..Default::default()
    });
    let text = |s: &str| Cell::Text(bytes::Bytes::from(s.to_string()));
    let row = |op: RowOp, version: u64, cells: Vec<Cell>, moved_from: Option<Vec<Cell>>| {
        ChangeItem::Row {
            rel_id: 77,
            change: RowChange {
                op,
                version,
                cells,
                xid: 1,
                commit_us: 0,
                moved_from,
            },
        }
    };
    let big = "t".repeat(5000);
    let counters = Arc::new(tributary::runtime::registry::PipelineCounters::default());
    let acks = Arc::new(tokio::sync::watch::channel(0u64).0);
    let edge: Edge<SinkMsg> = Edge::new("moved-test", 4);
    let args = SinkArgs {
        pipeline: p.name.clone(),
        clickhouse: p.clickhouse.clone(),
        batch: p.batch,
        tables: Vec::new(),
        edge: edge.clone(),
        acks: acks.clone(),
        counters: counters.clone(),
    };
    let (sink, handle) = ractor::Actor::spawn(None, ClickHouseSink, args)
        .await
        .unwrap();
    let send = |items: Vec<ChangeItem>, commit: u64| {
        let (edge, schema, sink) = (edge.clone(), schema.clone(), sink.clone());
        async move { send_flushed(&edge, &sink, &schema, items, commit).await }
    };
    use RowOp::*;
    send(
        vec![
            row(Insert, 100, vec![text("a"), text("1"), text(&big)], None),
            row(Insert, 110, vec![text("z"), text("1"), text("small")], None),
        ],
        150,
    )
    .await;
    // The sink learns that `note` comes unchanged (an update of another row), but does not
    // remember a's value: it was written by an earlier instance (here: before the cache saw
    // the column).
    send(
        vec![row(
            Update,
            200,
            vec![text("z"), text("2"), Cell::UnchangedToast],
            None,
        )],
        250,
    )
    .await;
    // The old key's delete ends a chunk: flushed, the tombstone written.
    send(
        vec![row(
            Delete,
            300,
            vec![text("a"), Cell::Null, Cell::Null],
            None,
        )],
        350,
    )
    .await;
    // A merge drops the old row behind its tombstone.
    w.ch.execute(&format!("OPTIMIZE TABLE `{}`.`{table}` FINAL", w.database))
        .await
        .unwrap();
    let versions = w
        .ch_rows(&format!(
            "SELECT _is_deleted FROM `{}`.`{table}` WHERE k = 'a'",
            w.database
        ))
        .await;
    assert_eq!(versions, ["1"], "only the tombstone is left of the old row");
    // The row under its new key, its TOAST value unchanged.
    send(
        vec![row(
            Insert,
            300,
            vec![text("b"), text("1"), Cell::UnchangedToast],
            Some(vec![text("a"), Cell::Null, Cell::Null]),
        )],
        400,
    )
    .await;
    let live = w
        .ch_rows(&format!(
            "SELECT k, n, length(note), note = '{big}' FROM `{}`.`{table}` FINAL WHERE _is_deleted = 0 ORDER BY k",
            w.database
        ))
        .await;
    assert_eq!(live, ["b\t1\t5000\t1", "z\t2\t5\t0"]);
    sink.kill();
    handle.await.unwrap();
    w.teardown().await;
}
matrix!(
    a_moved_row_keeps_its_toast_value,
    a_moved_row_keeps_its_toast_value_across_a_merge
);

/// A keyless table's changes replayed by a restarted sink (#20): every change is a row of
/// its own, so a replay must collapse with the first write of it, or the counts in `_live`
/// would grow. An update is its old content's delete and new content's insert at one WAL
/// position, told apart by `_seq`.
async fn a_replayed_keyless_batch_counts_once(target: Target) {
    use std::sync::Arc;
    use tributary::cdc::change::*;
    use tributary::cdc::clickhouse_sink::*;
    use tributary::flow::edge::Edge;
    use tributary::protocol::pgoutput::Cell;
    use tributary::protocol::schema::{Column, Identity, PgType, TableSchema};

    let w = World::new(target).await;
    let table = unique("keyless_replay");
    let cfg = w.config(&[]);
    let p = &cfg.pipelines[0];
    let col = |name: &str| Column {
        name: name.into(),
        pg_type: PgType::Text,
        nullable: true,
        is_key: false,
        added_default: None,
        renamed_from: None,
    };
    let schema = Arc::new(TableSchema {
        rel_id: 78,
        schema: "public".into(),
        name: table.clone(),
        columns: vec![col("a"), col("b")],
        identity: Identity::Full,
        ..Default::default()
    });
    let text = |s: &str| Cell::Text(bytes::Bytes::from(s.to_string()));
    let row = |op: RowOp, version: u64, a: &str, b: &str| ChangeItem::Row {
        rel_id: 78,
        change: RowChange {
            op,
            version,
            cells: vec![text(a), text(b)],
            xid: 1,
            commit_us: 0,
            moved_from: None,
        },
    };
    use RowOp::*;
    let batch = || {
        vec![
            row(Snapshot, 10, "x", "1"),
            row(Snapshot, 10, "x", "1"),
            row(Snapshot, 10, "y", "1"),
            row(Insert, 20, "x", "1"),
            // An update of one x: at one WAL position, its delete and its insert.
            row(Delete, 30, "x", "1"),
            row(Insert, 30, "x", "2"),
            row(Delete, 40, "y", "1"),
        ]
    };
    for _ in 0..2 {
        // A new sink instance each time, as after a restart: the second run is a replay.
        let acks = Arc::new(tokio::sync::watch::channel(0u64).0);
        let edge: Edge<SinkMsg> = Edge::new("keyless-test", 4);
        let args = SinkArgs {
            pipeline: p.name.clone(),
            clickhouse: p.clickhouse.clone(),
            batch: p.batch,
            tables: Vec::new(),
            edge: edge.clone(),
            acks,
            counters: Arc::new(tributary::runtime::registry::PipelineCounters::default()),
        };
        let (sink, handle) = ractor::Actor::spawn(None, ClickHouseSink, args)
            .await
            .unwrap();
        send_flushed(&edge, &sink, &schema, batch(), 50).await;
        let live = w
            .ch_rows(&format!(
                "SELECT a, b, _count FROM `{}`.`{table}_live` ORDER BY a, b",
                w.database
            ))
            .await;
        assert_eq!(live, ["x\t1\t2", "x\t2\t1"]);
        sink.kill();
        handle.await.unwrap();
    }
    let stored = w
        .ch_rows(&format!(
            "SELECT count() FROM `{}`.`{table}` FINAL",
            w.database
        ))
        .await;
    assert_eq!(stored, ["7"], "the replay collapsed with the first write");
    w.teardown().await;
}
matrix!(
    a_replayed_keyless_batch_counts_once,
    a_replayed_keyless_batch_counts_once
);
