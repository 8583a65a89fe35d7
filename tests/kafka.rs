//! CDC through Kafka against real servers: PostgreSQL 15 → tansu (a Kafka-protocol broker,
//! durable storage) → ClickHouse in both generations. The Kafka path must give the same
//! ClickHouse tables as the direct path, and FINAL must equal Postgres.

#![recursion_limit = "256"]
mod common;

use common::kafka::*;
use common::*;
use rdkafka::message::Message;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// The seed's demo tables and a mixed workload through Kafka: snapshot rows, inserts,
/// updates (also of the key and around an unchanged TOAST value), deletes with tombstones,
/// a truncate, an ADD COLUMN and one with a DEFAULT; every type of the direct path. ClickHouse FINAL equals
/// Postgres, and equals what the direct path writes for the same tables, column by column.
async fn pg_kafka_clickhouse(target: Target) {
    let w = World::new(target).await;
    let direct = World::new(target).await;
    let n = KafkaNames::new();
    let c = pg().await;
    let t1 = unique("demo_table1");
    let t2 = unique("demo_table2");
    let m = unique("mixed");
    c.batch_execute(&format!(
        "CREATE TABLE {t1} (id int PRIMARY KEY, value text);
         CREATE TABLE {t2} (id int PRIMARY KEY, value text);
         INSERT INTO {t1} VALUES (1, 'one'), (2, 'two'), (3, 'three');
         INSERT INTO {t2} VALUES (1, 'original'), (2, 'kept');
         CREATE TABLE {m} (id bigint PRIMARY KEY, small smallint, n int, f4 real, f8 double precision,
            amount numeric(12,2), big numeric, ok boolean, born date, seen timestamp(6),
            at timestamptz, t time, u uuid, doc jsonb, j json, raw bytea, tags text[], nums int[],
            long text, note varchar(20));
         ALTER TABLE {m} ALTER COLUMN long SET STORAGE EXTERNAL;
         INSERT INTO {m} SELECT g, g % 100, g * 7, g / 3.0, g / 7.0, g * 1.25, g * 1000000000.123456789,
            g % 2 = 0, date '2024-01-01' + g, timestamp '2024-01-01 00:00:00.123456' + g * interval '1 hour',
            timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', time '12:34:56.5',
            md5(g::text)::uuid, jsonb_build_object('g', g, 's', 'x\"y'), '{{\"a\": [1, 2]}}',
            decode('00ff' || lpad(to_hex(g), 4, '0'), 'hex'), ARRAY['a b', NULL, 'c\"d'], ARRAY[g, NULL, -g],
            repeat('toast-' || g, 2000), 'note ' || g
            FROM generate_series(1, 200) g;"
    ))
    .await
    .unwrap();
    let tables = [
        format!("public.{t1}"),
        format!("public.{t2}"),
        format!("public.{m}"),
    ];
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let cfg = kafka_config(&w, &n, &tables);
    let run = Running::start(&cfg).await;
    let direct_run = Running::start(&direct.config(&tables)).await;
    converge(&w, &c, &t1, &t1, "id, value", "id", T).await;
    converge(&w, &c, &m, &m, "id, n, note", "id", T).await;
    c.batch_execute(&format!(
        "INSERT INTO {t1} VALUES (4, 'sample');
         UPDATE {t2} SET value = 'updated' WHERE id = 1;
         DELETE FROM {t1} WHERE id = 2;
         BEGIN; INSERT INTO {t2} VALUES (3, 'in a txn'); UPDATE {t2} SET value = NULL WHERE id = 2; COMMIT;
         UPDATE {m} SET n = -1 WHERE id <= 10;
         UPDATE {m} SET id = id + 1000 WHERE id BETWEEN 11 AND 15;
         DELETE FROM {m} WHERE id BETWEEN 16 AND 30;
         INSERT INTO {m} (id, n, note, amount, big, tags) VALUES (5000, 1, NULL, -0.01, 'NaN', '{{}}'), (5001, NULL, 'x', 99999.99, -1.5, NULL);
         ALTER TABLE {m} ADD COLUMN extra text;
         ALTER TABLE {m} ADD COLUMN tier int DEFAULT 7;
         UPDATE {m} SET tier = 8 WHERE id = 1;
         UPDATE {m} SET extra = 'added ' || id WHERE id % 10 = 0;
         INSERT INTO {m} (id, extra) VALUES (6000, 'after alter');
         TRUNCATE {t2};
         INSERT INTO {t2} VALUES (10, 'after truncate');"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t1, &t1, "id, value", "id", T).await;
    converge(&w, &c, &t2, &t2, "id, value", "id", T).await;
    // `tier` was added with a default: rows written before it read 7 in Postgres, and so in
    // ClickHouse on both paths (through Kafka the default travels in the Connect schema).
    converge(&w, &c, &m, &m, "id, n, note, extra, tier", "id", T).await;
    converge(&direct, &c, &m, &m, "id, n, note, extra, tier", "id", T).await;
    converge(&direct, &c, &t2, &t2, "id, value", "id", T).await;
    // Every column, every type: the Kafka path writes what the direct path writes.
    let cols = describe(&w, &m).await;
    let direct_cols = describe(&direct, &m).await;
    assert_eq!(cols, direct_cols, "the same ClickHouse columns and types");
    let names: Vec<String> = cols
        .iter()
        .filter_map(|l| l.split('\t').next())
        .filter(|c| *c != "_version")
        .map(|c| format!("`{c}`"))
        .collect();
    let all = names.join(", ");
    let via_kafka = w.ch_live(&m, &all, "id").await;
    let via_direct = direct.ch_live(&m, &all, "id").await;
    assert_eq!(via_kafka.len(), 188);
    let short = |v: &str| v.chars().take(60).collect::<String>();
    let mut diffs = Vec::new();
    for (a, b) in via_kafka.iter().zip(&via_direct) {
        for ((name, x), y) in names.iter().zip(a.split('\t')).zip(b.split('\t')) {
            // Unconstrained numerics travel as Debezium's VariableScaleDecimal, which drops
            // trailing zeros (1.50 arrives as 1.5): the same number.
            let trim = |v: &str| {
                if name == "`big`" && v.contains('.') {
                    v.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    v.to_string()
                }
            };
            // NaN has no Decimal encoding: precise mode sends NULL and counts it (below).
            let nan_as_null = name == "`big`" && x == "\\N" && y == "NaN";
            if trim(x) != trim(y) && !nan_as_null && diffs.len() < 10 {
                diffs.push(format!(
                    "{name}: kafka {:?} direct {:?}",
                    short(x),
                    short(y)
                ));
            }
        }
    }
    assert_eq!(via_kafka.len(), via_direct.len());
    assert!(diffs.is_empty(), "Kafka path vs direct path: {diffs:#?}");
    let produced = run.registry.pipeline(&cfg.pipelines[0].name);
    assert_eq!(
        produced
            .values_unrepresentable
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the NaN row, counted when inserted and when updated"
    );
    let counters = run.registry.pipeline(&cfg.pipelines[1].name);
    assert!(
        counters
            .kafka_tombstones
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 16
    );
    assert_eq!(
        counters
            .kafka_dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    direct_run.stop().await;
    run.stop().await;
    w.teardown().await;
    direct.teardown().await;
}
matrix!(through_kafka, pg_kafka_clickhouse);

/// A ClickHouse table's columns as `name\ttype` lines, in order.
async fn describe(w: &World, table: &str) -> Vec<String> {
    w.ch_rows(&format!("DESCRIBE TABLE `{}`.`{table}`", w.database))
        .await
        .iter()
        .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join("\t"))
        .collect()
}

/// Poisoned messages (invalid JSON, an unknown op, no key, wrong types, not an envelope) go
/// to the dead-letter topic with the reason in headers, counted; every good message around
/// them is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_messages_go_to_the_dead_letter_topic() {
    let w = World::new(Target::Ch18).await;
    let n = KafkaNames::new();
    let topic = n.topic("public", "poison");
    let mut cfg = kafka_config(&w, &n, &[]);
    cfg.pipelines.remove(0);
    cfg.pipelines[0].kafka_source.as_mut().unwrap().topics = vec![topic.clone()];
    create_topic(&topic).await;
    let p = producer();
    let good = |id: i64, v: &str| create_event("poison", id, v, 1000 + id);
    let poison: Vec<(Option<String>, Option<String>)> = vec![
        (Some(r#"{"id":100}"#.into()), Some("{not json".into())),
        (
            Some(r#"{"id":101}"#.into()),
            Some(good(101, "x").1.replace(r#""op":"c""#, r#""op":"x""#)),
        ),
        (None, Some(good(102, "no key").1)),
        (
            Some(r#"{"id":103}"#.into()),
            Some(r#"{"schema":{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":true,"name":"v.Value","field":"after"},{"type":"string","optional":false,"field":"op"}],"optional":false,"name":"v.Envelope"},"payload":{"after":{"id":"abc"},"op":"c"}}"#.into()),
        ),
        (Some(r#"{"id":104}"#.into()), Some("[1,2,3]".into())),
    ];
    let mut sent = 0;
    for i in 0..5i64 {
        let (k, v) = good(i, &format!("good {i}"));
        produce(&p, &topic, Some(k.as_bytes()), Some(v.as_bytes())).await;
        let (pk, pv) = &poison[i as usize];
        produce(
            &p,
            &topic,
            pk.as_ref().map(|s| s.as_bytes()),
            pv.as_ref().map(|s| s.as_bytes()),
        )
        .await;
        sent += 2;
    }
    let (k, v) = good(5, "last");
    produce(&p, &topic, Some(k.as_bytes()), Some(v.as_bytes())).await;
    sent += 1;
    let run = Running::start(&cfg).await;
    let rows = eventually(T, "the good rows in ClickHouse", || async {
        let r = w.try_ch_live("poison", "id, v", "id").await?;
        if r.len() == 6 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(
        rows,
        vec![
            "0\tgood 0",
            "1\tgood 1",
            "2\tgood 2",
            "3\tgood 3",
            "4\tgood 4",
            "5\tlast"
        ]
    );
    let dead = await_messages(&n.dlq, 5, T).await;
    assert_eq!(dead.len(), 5, "exactly the poisoned messages");
    let mut offsets = Vec::new();
    for (m, (pk, pv)) in dead.iter().zip(&poison) {
        assert_eq!(
            header(m, "__connect.errors.topic").as_deref(),
            Some(topic.as_str())
        );
        let reason = header(m, "__connect.errors.exception.message").unwrap_or_default();
        assert!(!reason.is_empty(), "a reason in the headers");
        offsets.push(header(m, "__connect.errors.offset").unwrap());
        assert_eq!(
            m.key(),
            pk.as_ref().map(|s| s.as_bytes()),
            "original key kept"
        );
        assert_eq!(
            m.payload(),
            pv.as_ref().map(|s| s.as_bytes()),
            "original value kept"
        );
    }
    assert_eq!(offsets, vec!["1", "3", "5", "7", "9"]);
    let counters = run.counters();
    assert_eq!(
        counters
            .kafka_dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    assert_eq!(
        counters
            .kafka_consumed
            .load(std::sync::atomic::Ordering::Relaxed),
        sent
    );
    run.stop().await;
}

/// A change larger than the producer's `message.max.bytes` (librdkafka's 1,000,000 by
/// default) cannot be sent by retrying: a letter naming it (its key, sizes and reason, no row
/// data) goes to the dead-letter topic, counted, and the pipeline streams on. The row is
/// missing downstream until it changes again, and then arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_large_for_the_broker_goes_to_the_dead_letter_topic() {
    let w = World::new(Target::Ch18).await;
    let n = KafkaNames::new();
    let c = pg().await;
    let t = unique("oversize");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, body text);
         INSERT INTO {t} VALUES (1, 'before');"
    ))
    .await
    .unwrap();
    let table = format!("public.{t}");
    let cfg = kafka_config(&w, &n, &[&table]);
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, body", "id", T).await;
    // 1.5 MB of text that TOAST compresses in Postgres but not in the change event.
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 47000) g;
         INSERT INTO {t} VALUES (3, 'after');"
    ))
    .await
    .unwrap();
    let rows = eventually(T, "the rows around the oversized one", || async {
        let r = w.try_ch_live(&t, "id, body", "id").await?;
        if r.len() == 2 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(rows, vec!["1\tbefore", "3\tafter"]);
    let dead = await_messages(&n.dlq, 1, T).await;
    assert_eq!(dead.len(), 1, "one letter: {dead:?}");
    let m = &dead[0];
    let topic = format!("{}.public.{t}", n.prefix);
    assert_eq!(
        header(m, "__connect.errors.topic").as_deref(),
        Some(topic.as_str())
    );
    assert_eq!(
        header(m, "__connect.errors.stage").as_deref(),
        Some("KAFKA_PRODUCE")
    );
    let key: serde_json::Value = serde_json::from_slice(m.key().expect("the row's key")).unwrap();
    assert_eq!(key["payload"]["id"], 2, "the key names the row: {key}");
    let summary: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(summary["topic"], topic.as_str());
    let bytes = summary["value_bytes"].as_u64().unwrap();
    assert!(
        bytes > 1_500_000,
        "the size of the refused change: {summary}"
    );
    assert!(
        m.payload().unwrap().len() < 1000,
        "a summary, not the row: {} bytes",
        m.payload().unwrap().len()
    );
    let counters = run.registry.pipeline(&cfg.pipelines[0].name);
    assert_eq!(
        counters
            .kafka_dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Once the row fits again it arrives, and ClickHouse FINAL equals Postgres.
    c.batch_execute(&format!("UPDATE {t} SET body = 'small again' WHERE id = 2"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, body", "id", T).await;
    run.stop().await;
    w.teardown().await;
}

/// The sentiment pipeline split in two over a topic, as the old stack ran it: a replay of
/// statuses is published to the statuses topic (key `instance/status id`), a second
/// pipeline consumes it, classifies every post and writes it to ClickHouse; its group's
/// offsets reach the end of the topic only once the rows are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentiment_over_kafka_classifies_every_post_once() {
    use common::fake_llm::{FakeLlm, LlmConfig};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let w = World::new(Target::Ch26).await;
    let n = KafkaNames::new();
    let topic = format!("{}_statuses", n.prefix);
    let llm = FakeLlm::start(LlmConfig::default()).await;
    // Publisher: replay → topic.
    let mut publish = sentiment_config(&w, "http://127.0.0.1:9", &llm.url(), "openai", "m");
    use_replay(&mut publish, repo().join("tests/fixtures/statuses.jsonl"));
    publish.kafka = Some(kafka_cluster());
    let mut consume = publish.clone();
    let sink: tributary::config::KafkaSinkConfig =
        toml::from_str(&format!("topic = \"{topic}\"")).unwrap();
    let p = &mut publish.pipelines[0];
    p.llm = None;
    p.kafka_sink = Some(sink);
    // Consumer: topic → LLM → ClickHouse.
    let c = &mut consume.pipelines[0];
    c.name = unique("sentiment_consumer");
    c.replay = None;
    c.kafka_source = Some(
        toml::from_str(&format!(
            "group = \"{}\"\ntopics = [\"{topic}\"]\ndead_letter_topic = \"{}\"",
            n.group, n.dlq
        ))
        .unwrap(),
    );
    publish
        .validate_for_tests()
        .expect("publishing config is valid");
    consume
        .validate_for_tests()
        .expect("consuming config is valid");
    let publisher = Running::start(&publish).await;
    let consumer = Running::start(&consume).await;
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/statuses.jsonl")).unwrap();
    let ids: std::collections::BTreeSet<String> = fixture
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|s| s["reblog"].is_null())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let rows = eventually(T, "every post classified", || async {
        let rows = sentiment_rows(&w).await?;
        if rows.len() >= ids.len() {
            Ok(rows)
        } else {
            Err(format!("{} of {} rows", rows.len(), ids.len()))
        }
    })
    .await;
    let got: std::collections::BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(got, ids, "every post once");
    assert!(
        rows.iter().all(|r| !r.1.is_empty()),
        "every post has a label"
    );
    let published = read_topic(&topic);
    // One message per status of the replay (its two reblogs carry posts seen before).
    assert_eq!(
        published.len(),
        fixture.lines().filter(|l| !l.trim().is_empty()).count()
    );
    for m in &published {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert!(key.starts_with("replay.example/"), "{key}");
    }
    // The group's committed offset reaches the end once every row is in.
    let end = published.len() as i64;
    let group = n.group.clone();
    let t2 = topic.clone();
    eventually(T, "the group's offset at the end of the topic", move || {
        let (group, topic) = (group.clone(), t2.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let c: BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", brokers())
                    .set("group.id", &group)
                    .create()
                    .unwrap();
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition(&topic, 0);
                let got = c
                    .committed_offsets(tpl, Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let off = got
                    .find_partition(&topic, 0)
                    .and_then(|p| p.offset().to_raw())
                    .unwrap_or(-1);
                if off == end {
                    Ok(())
                } else {
                    Err(format!("committed {off}, end {end}"))
                }
            })
            .await
            .unwrap()
        }
    })
    .await;
    consumer.stop().await;
    publisher.stop().await;
}

/// The JSON of a fixture file, with the documentation's names replaced by this test's.
fn fixture(name: &str, prefix: &str, schema: &str, db: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/debezium").join(name)).unwrap();
    let text = text
        .replace("PostgreSQL_server.public.", &format!("{prefix}.{schema}."))
        .replace("\"PostgreSQL_server\"", &format!("\"{prefix}\""))
        .replace(
            "\"schema\": \"public\"",
            &format!("\"schema\": \"{schema}\""),
        )
        .replace("\"db\": \"postgres\"", &format!("\"db\": \"{db}\""));
    serde_json::from_str(&text).unwrap()
}

/// `ours` has `fix`'s shape: the same fields (all of them when `exact`, else at least the
/// fixture's), each of the same JSON type; values must match at the paths in `values`.
fn same_shape(
    ours: &serde_json::Value,
    fix: &serde_json::Value,
    path: &str,
    exact: bool,
    values: &[&str],
) -> Vec<String> {
    use serde_json::Value::*;
    let mut out = Vec::new();
    if values
        .iter()
        .any(|v| path == *v || path.ends_with(&format!("/{v}")))
        && ours != fix
    {
        out.push(format!("{path}: {ours} != {fix}"));
        return out;
    }
    match (ours, fix) {
        (Object(a), Object(b)) => {
            for k in b.keys() {
                match a.get(k) {
                    Some(v) => {
                        out.extend(same_shape(v, &b[k], &format!("{path}/{k}"), exact, values))
                    }
                    None => out.push(format!("{path}/{k}: missing")),
                }
            }
            if exact {
                for k in a.keys().filter(|k| !b.contains_key(*k)) {
                    out.push(format!("{path}/{k}: not in the fixture"));
                }
            }
        }
        (Array(a), Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                out.extend(same_shape(x, y, &format!("{path}/{i}"), exact, values));
            }
        }
        (Null, Null) | (Bool(_), Bool(_)) | (Number(_), Number(_)) | (String(_), String(_)) => {}
        (a, b) => out.push(format!("{path}: {a} vs {b} (another JSON type)")),
    }
    out
}

/// tributary's Kafka sink writes what Debezium writes: for a create, an update, a delete
/// (with its tombstone) and a truncate of the documentation's `customers` table, the key and
/// value of every message match the fixtures (from Debezium's documentation) field for
/// field: schemas exactly, payload fields, their JSON types, the op codes and the source
/// block; row values exactly. Both with and without `schemas.enable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_messages_match_the_debezium_fixtures() {
    let c = pg().await;
    let schema = unique("s");
    c.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.customers (id integer PRIMARY KEY, first_name text, last_name text, email text);"
    ))
    .await
    .unwrap();
    let db = var("TRIBUTARY_TEST_PG_DATABASE");
    for with_schemas in [true, false] {
        let w = World::new(Target::Ch18).await;
        let n = KafkaNames::new();
        let mut cfg = kafka_config(&w, &n, &[&format!("{schema}.customers")]);
        cfg.pipelines.truncate(1);
        cfg.pipelines[0].kafka_sink.as_mut().unwrap().schemas = with_schemas;
        let topic = n.topic(&schema, "customers");
        let run = Running::start(&cfg).await;
        wait_streaming(&c, &w.slot).await;
        c.batch_execute(&format!(
            "INSERT INTO {schema}.customers VALUES (1, 'Anne', 'Kretchmar', 'annek@noanswer.org');
             UPDATE {schema}.customers SET first_name = 'Anne Marie' WHERE id = 1;
             DELETE FROM {schema}.customers WHERE id = 1;
             TRUNCATE {schema}.customers;"
        ))
        .await
        .unwrap();
        let msgs = await_messages(&topic, 5, T).await;
        run.stop().await;
        w.teardown().await;
        assert_eq!(msgs.len(), 5, "create, update, delete, tombstone, truncate");
        let json =
            |b: Option<&[u8]>| b.map(|b| serde_json::from_slice::<serde_json::Value>(b).unwrap());
        let suffix = if with_schemas {
            ".schema.json"
        } else {
            ".json"
        };
        let fx = |name: &str| fixture(&format!("{name}{suffix}"), &n.prefix, &schema, &db);
        let key = fx("key");
        let row_values = [
            "after",
            "before",
            "op",
            "version",
            "connector",
            "name",
            "snapshot",
            "db",
            "schema",
            "table",
            "transaction",
        ];
        for (i, name) in ["create", "update", "delete"].iter().enumerate() {
            let m = &msgs[i];
            let mut errs = same_shape(
                &json(m.key()).unwrap(),
                &key,
                "key",
                true,
                &["payload", "schema"],
            );
            let value = json(m.payload()).unwrap();
            let fix = fx(name);
            if with_schemas {
                errs.extend(same_shape(
                    &value["schema"],
                    &fix["schema"],
                    "schema",
                    true,
                    &["schema"],
                ));
                errs.extend(same_shape(
                    &value["payload"],
                    &fix["payload"],
                    "payload",
                    true,
                    &row_values,
                ));
            } else if *name == "delete" {
                // The documentation prints only the key in `before`; JsonConverter writes every
                // field of the row struct (null when not sent).
                errs.extend(same_shape(
                    &value,
                    &fix,
                    "payload",
                    false,
                    &["op", "source/name", "source/db"],
                ));
                assert_eq!(value["before"]["id"], 1);
            } else {
                let (mut value, mut fix) = (value, fix);
                if *name == "update" {
                    // The documentation's example update carries the old key in `before`
                    // (REPLICA IDENTITY other than DEFAULT); pgoutput with DEFAULT sends none.
                    assert_eq!(value["before"], serde_json::Value::Null);
                    value["before"] = serde_json::Value::Null;
                    fix["before"] = serde_json::Value::Null;
                }
                errs.extend(same_shape(&value, &fix, "payload", true, &row_values));
            }
            assert!(errs.is_empty(), "{name} ({suffix}): {errs:#?}");
        }
        assert_eq!(
            msgs[3].key(),
            msgs[2].key(),
            "the tombstone has the delete's key"
        );
        assert_eq!(msgs[3].payload(), None, "a tombstone has no value");
        assert_eq!(msgs[4].key(), None, "truncate events have no key");
        let value = json(msgs[4].payload()).unwrap();
        let fix = fx("truncate");
        let errs = if with_schemas {
            let mut e = same_shape(
                &value["schema"],
                &fix["schema"],
                "schema",
                true,
                &["schema"],
            );
            e.extend(same_shape(
                &value["payload"],
                &fix["payload"],
                "payload",
                true,
                &row_values,
            ));
            e
        } else {
            // The documentation's truncate payload leaves out before/after/transaction.
            same_shape(&value, &fix, "payload", false, &row_values)
        };
        assert!(errs.is_empty(), "truncate ({suffix}): {errs:#?}");
    }
}

/// Messages as a real Debezium writes them (the fixtures, with and without schemas: create,
/// update, delete + tombstone, truncate, every type) load into ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_fixtures_load_into_clickhouse() {
    let w = World::new(Target::Ch26).await;
    let n = KafkaNames::new();
    let p = producer();
    let key =
        |name: &str| serde_json::to_vec(&fixture(name, &n.prefix, "public", "postgres")).unwrap();
    // customers, with schemas: create, update; then a second row created and deleted.
    let t_schema = n.topic("public", "customers");
    let t_plain = n.topic("public", "customers_plain");
    let t_types = n.topic("public", "all_types");
    for t in [&t_schema, &t_plain, &t_types] {
        create_topic(t).await;
    }
    let value = |name: &str| key(name);
    produce(
        &p,
        &t_schema,
        Some(&key("key.schema.json")),
        Some(&value("create.schema.json")),
    )
    .await;
    produce(
        &p,
        &t_schema,
        Some(&key("key.schema.json")),
        Some(&value("update.schema.json")),
    )
    .await;
    // Without schemas, to its own table: created, then deleted (and its tombstone).
    let plain = |name: &str| {
        String::from_utf8(value(name))
            .unwrap()
            .replace("\"customers\"", "\"customers_plain\"")
            .into_bytes()
    };
    produce(
        &p,
        &t_plain,
        Some(&key("key.json")),
        Some(&plain("create.json")),
    )
    .await;
    let two = String::from_utf8(plain("create.json"))
        .unwrap()
        .replace("\"id\":1", "\"id\":2");
    produce(&p, &t_plain, Some(br#"{"id":2}"#), Some(two.as_bytes())).await;
    produce(
        &p,
        &t_plain,
        Some(&key("key.json")),
        Some(&plain("delete.json")),
    )
    .await;
    produce(&p, &t_plain, Some(&key("key.json")), None).await;
    produce(
        &p,
        &t_types,
        Some(br#"{"id":1}"#),
        Some(&value("types.schema.json")),
    )
    .await;
    let mut cfg = kafka_config(&w, &n, &[]);
    cfg.pipelines.remove(0);
    cfg.pipelines[0].kafka_source.as_mut().unwrap().topics =
        vec![t_schema.clone(), t_plain.clone(), t_types.clone()];
    let run = Running::start(&cfg).await;
    let rows = eventually(T, "the customers row", || async {
        let r = w
            .try_ch_live("customers", "id, first_name, last_name, email", "id")
            .await?;
        (r.len() == 1).then_some(r).ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(rows, vec!["1\tAnne Marie\tKretchmar\tannek@noanswer.org"]);
    let plain_rows = eventually(T, "the plain table", || async {
        let r = w.try_ch_live("customers_plain", "id", "id").await?;
        (r == vec!["2".to_string()])
            .then_some(r)
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(plain_rows, vec!["2"], "row 1 deleted, row 2 kept");
    let types = eventually(T, "the all_types row", || async {
        let r = w
            .try_ch_rows(&format!(
                "SELECT count() FROM `{}`.all_types FINAL",
                w.database
            ))
            .await?;
        (r == vec!["1".to_string()])
            .then_some(r)
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(types, vec!["1"]);
    // A truncate empties the table it names.
    produce(&p, &t_schema, None, Some(&value("truncate.schema.json"))).await;
    eventually(T, "customers truncated", || async {
        let r = w.try_ch_live("customers", "id", "id").await?;
        r.is_empty().then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    let counters = run.counters();
    assert_eq!(
        counters
            .kafka_dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        counters
            .kafka_tombstones
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    run.stop().await;
}

/// A slow ClickHouse (every packet delayed through the fault proxy) behind a small edge:
/// the consumer pauses its partitions while the sink is behind and resumes them, staying in
/// the group: every message is read exactly once (no rebalance replays any), all rows land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_edge_pauses_the_consumer_which_stays_in_the_group() {
    use std::sync::atomic::Ordering;
    let w = World::new(Target::Ch18).await;
    let n = KafkaNames::new();
    let topic = n.topic("public", "paced");
    create_topic(&topic).await;
    let p = producer();
    const N: usize = 20_000;
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        let (key, value) = create_event("paced", i as i64, &format!("row {i}"), i as i64);
        loop {
            let r = rdkafka::producer::FutureRecord::to(&topic)
                .key(key.as_bytes())
                .payload(value.as_bytes())
                .partition(0);
            match p.send_result(r) {
                Ok(f) => break pending.push(f),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let ch = common::proxy::Proxy::start(w.target.url().trim_start_matches("http://")).await;
    ch.set_delay(Duration::from_millis(100));
    let mut cfg = kafka_config(&w, &n, &[]);
    cfg.pipelines.remove(0);
    let pc = &mut cfg.pipelines[0];
    pc.clickhouse.url = ch.url();
    pc.batch.edge_capacity = 2;
    pc.batch.max_rows = 500;
    let ks = pc.kafka_source.as_mut().unwrap();
    ks.topics = vec![topic.clone()];
    ks.chunk_messages = 250;
    let run = Running::start(&cfg).await;
    eventually(
        Duration::from_secs(180),
        "every row in ClickHouse",
        || async {
            let r = w
                .try_ch_rows(&format!("SELECT count() FROM `{}`.paced FINAL", w.database))
                .await?;
            (r == vec![N.to_string()])
                .then_some(())
                .ok_or(format!("{r:?}"))
        },
    )
    .await;
    let c = run.counters();
    assert!(
        c.kafka_pauses.load(Ordering::Relaxed) > 0,
        "the consumer paused"
    );
    assert_eq!(
        c.kafka_consumed.load(Ordering::Relaxed),
        N as u64,
        "each message read once: no rebalance replayed any"
    );
    run.stop().await;
}

/// A rebalance mid-stream: a second member joins the group while the first is loading a
/// two-partition topic (ClickHouse slowed down, so the first is mid-way); the partitions are
/// split, every row lands exactly once in FINAL, and the group's committed offsets reach the
/// end of both partitions, no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_stream_loses_nothing() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let w = World::new(Target::Ch18).await;
    let n = KafkaNames::new();
    let topic = n.topic("public", "rebalanced");
    tributary::clients::kafka::ensure_topics(&kafka_cluster(), std::slice::from_ref(&topic), 2, 1)
        .await
        .unwrap();
    let p = producer();
    const N: i64 = 4000;
    for i in 0..N {
        let (key, value) = create_event("rebalanced", i, &format!("row {i}"), i);
        let r = rdkafka::producer::FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .partition((i % 2) as i32);
        p.send(r, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let ch = common::proxy::Proxy::start(w.target.url().trim_start_matches("http://")).await;
    ch.set_delay(Duration::from_millis(30));
    let mut cfg = kafka_config(&w, &n, &[]);
    cfg.pipelines.remove(0);
    let pc = &mut cfg.pipelines[0];
    pc.clickhouse.url = ch.url();
    pc.batch.edge_capacity = 2;
    let ks = pc.kafka_source.as_mut().unwrap();
    ks.topics = vec![topic.clone()];
    ks.chunk_messages = 100;
    ks.instance_id = format!("{}-a", n.group);
    let mut second = cfg.clone();
    second.pipelines[0].name = format!("{}_b", cfg.pipelines[0].name);
    second.pipelines[0]
        .kafka_source
        .as_mut()
        .unwrap()
        .instance_id = format!("{}-b", n.group);
    let a = Running::start(&cfg).await;
    let count = || async {
        w.try_ch_rows(&format!(
            "SELECT count(), uniqExact(id) FROM `{}`.rebalanced FINAL",
            w.database
        ))
        .await
    };
    eventually(T, "the first member to be mid-way", || async {
        let r = count().await.unwrap_or_default();
        let c: i64 = r
            .first()
            .and_then(|l| l.split('\t').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        (c > 0).then_some(()).ok_or(format!("{r:?}"))
    })
    .await;
    let b = Running::start(&second).await;
    eventually(Duration::from_secs(180), "every row once", || async {
        let r = count().await?;
        (r == vec![format!("{N}\t{N}")])
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let end = N / 2;
    let group = n.group.clone();
    let t2 = topic.clone();
    eventually(
        T,
        "the group's offsets at the end of both partitions",
        move || {
            let (group, topic) = (group.clone(), t2.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let c: BaseConsumer = rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", brokers())
                        .set("group.id", &group)
                        .create()
                        .unwrap();
                    let mut tpl = rdkafka::TopicPartitionList::new();
                    tpl.add_partition(&topic, 0);
                    tpl.add_partition(&topic, 1);
                    let got = c
                        .committed_offsets(tpl, Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    let offs: Vec<i64> = (0..2)
                        .map(|p| {
                            got.find_partition(&topic, p)
                                .and_then(|e| e.offset().to_raw())
                                .unwrap_or(-1)
                        })
                        .collect();
                    if offs == vec![end, end] {
                        Ok(())
                    } else {
                        Err(format!("committed {offs:?}, end {end} each"))
                    }
                })
                .await
                .unwrap()
            }
        },
    )
    .await;
    let (ca, cb) = (a.counters(), b.counters());
    let got_b = cb.kafka_consumed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(got_b > 0, "the second member took over a partition");
    assert!(
        ca.kafka_consumed.load(std::sync::atomic::Ordering::Relaxed) + got_b >= N as u64,
        "every message was read"
    );
    b.stop().await;
    a.stop().await;
}

/// The state topic (snapshot markers) is created compacted (#20): with the broker's default
/// `delete` policy a marker would expire after `retention.ms` and the next start would
/// snapshot again, its snapshot events losing to what was streamed before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_topic_is_compacted() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let k = kafka_cluster();
    let topic = unique("state");
    let producer =
        tributary::clients::kafka::producer(&k, Duration::from_secs(30)).expect("a producer");
    tributary::clients::kafka::write_state(&k, &producer, &topic, 1, "p/snapshot", "s@0/1")
        .await
        .expect("the marker is written");
    assert_eq!(
        tributary::clients::kafka::read_state(&k, &topic, 1, &["p/snapshot".to_string()])
            .await
            .unwrap(),
        vec![Some("s@0/1".to_string())]
    );
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let configs = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(15))),
        )
        .await
        .expect("describe configs");
    let resource = configs
        .into_iter()
        .next()
        .unwrap()
        .expect("the topic's config");
    let policy = resource.get("cleanup.policy").and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "{:?}", resource.entries);
}
