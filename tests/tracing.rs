//! Trace context end to end: the spans of one change chunk (source decode, edge queue, sink
//! encode, ClickHouse insert) share the chunk's trace and hang off its root span, and they
//! really leave the process over OTLP/HTTP: an in-process receiver decodes the protobuf.

#![recursion_limit = "256"]
mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A minimal OTLP/HTTP receiver: POST /v1/traces with a protobuf body.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let out = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let out = out.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).await.unwrap();
                    let req = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        for ss in rs.scope_spans {
                            out.lock().unwrap().extend(ss.spans);
                        }
                    }
                    r.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_change_and_of_a_post_share_one_trace_and_reach_the_collector() {
    let (url, spans) = receiver().await;
    let cfg_t = tributary::config::TelemetryConfig {
        otlp_endpoint: url,
        log_level: "warn".into(),
        ..Default::default()
    };
    let telemetry = tributary::ops::telemetry::init(&cfg_t).expect("telemetry");
    let w = World::new(Target::Ch26).await;
    let c = pg().await;
    let t = unique("traced");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"))
        .await
        .unwrap();
    let run = Running::start(&w.config(&[&format!("public.{t}")])).await;
    converge(&w, &c, &t, &t, "id, v", "id", Duration::from_secs(60)).await;
    // The row must be streamed (its chunk carries an LSN), not copied by the snapshot: the
    // sink creates the table before the slot and its snapshot exist.
    wait_streaming(&c, &w.slot).await;
    run.copies_done().await;
    c.batch_execute(&format!("INSERT INTO {t} VALUES (1, 'traced')"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", Duration::from_secs(60)).await;
    run.stop().await;
    w.teardown().await;

    // A sentiment post: receive (root), queue wait, LLM call with model and attempt, insert.
    let llm = common::fake_llm::FakeLlm::start(Default::default()).await;
    let w2 = World::new(Target::Ch26).await;
    let mut cfg = sentiment_config(
        &w2,
        "http://127.0.0.1:9",
        &llm.url(),
        "ollama",
        "llama3.2:1b",
    );
    use_replay(&mut cfg, repo().join("tests/fixtures/statuses.jsonl"));
    let run = Running::start(&cfg).await;
    eventually(Duration::from_secs(60), "posts in ClickHouse", || async {
        let n = sentiment_rows(&w2).await?.len();
        if n > 10 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
    run.stop().await;

    // A change through Kafka: Postgres source → Kafka sink → broker → Kafka source →
    // ClickHouse insert, one trace (the producer's span context travels in the headers).
    let w3 = World::new(Target::Ch26).await;
    let n = common::kafka::KafkaNames::new();
    let k = unique("via_kafka");
    c.batch_execute(&format!("CREATE TABLE {k} (id int PRIMARY KEY, v text)"))
        .await
        .unwrap();
    let run = Running::start(&common::kafka::kafka_config(
        &w3,
        &n,
        &[&format!("public.{k}")],
    ))
    .await;
    // Through Kafka a table reaches ClickHouse with its first row (Debezium topics carry no
    // schema-only events): wait until the stream runs, then write.
    wait_streaming(&c, &w3.slot).await;
    run.copies_done().await;
    c.batch_execute(&format!("INSERT INTO {k} VALUES (1, 'through the broker')"))
        .await
        .unwrap();
    converge(&w3, &c, &k, &k, "id, v", "id", Duration::from_secs(60)).await;
    run.stop().await;
    w3.teardown().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    let spans = spans.lock().unwrap().clone();
    let post = spans
        .iter()
        .find(|s| s.name == "sentiment.post" && s.parent_span_id.is_empty())
        .expect("a post's root span");
    let kids: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == post.trace_id && s.parent_span_id == post.span_id)
        .collect();
    let names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    for name in ["edge.queue", "llm.call", "clickhouse.insert"] {
        assert!(
            names.contains(&name),
            "`{name}` missing under the post; children: {names:?}"
        );
    }
    let call = kids.iter().find(|s| s.name == "llm.call").unwrap();
    for attr in ["model", "attempt", "outcome"] {
        assert!(
            call.attributes.iter().any(|a| a.key == attr),
            "llm.call lacks `{attr}`: {:?}",
            call.attributes
        );
    }
    check_cdc_spans(&spans, &t);
    check_kafka_spans(&spans, &k);
}

fn check_kafka_spans(spans: &[Span], table: &str) {
    let root = spans
        .iter()
        .find(|s| {
            s.name == "cdc.chunk"
                && s.parent_span_id.is_empty()
                && s.attributes
                    .iter()
                    .any(|a| a.key == "tables" && format!("{:?}", a.value).contains(table))
        })
        .expect("the Postgres source's root span of the change");
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let produce = in_trace
        .iter()
        .find(|s| s.name == "kafka.produce" && s.parent_span_id == root.span_id)
        .unwrap_or_else(|| {
            panic!(
                "no kafka.produce under the root: {:?}",
                in_trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    let consumed = in_trace
        .iter()
        .find(|s| s.name == "kafka.chunk" && s.parent_span_id == produce.span_id)
        .unwrap_or_else(|| {
            panic!(
                "the consumer did not continue the trace: {:?}",
                in_trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == "clickhouse.insert" && s.parent_span_id == consumed.span_id),
        "the ClickHouse insert is in the producer's trace"
    );
}

fn check_cdc_spans(spans: &[Span], t: &str) {
    // The chunk that carried the insert: a root span with its table, LSN and one row.
    let root = spans
        .iter()
        .find(|s| {
            s.name == "cdc.chunk"
                && s.parent_span_id.is_empty()
                && s.attributes
                    .iter()
                    .any(|a| a.key == "rows" && format!("{:?}", a.value).contains("IntValue(1)"))
                && s.attributes.iter().any(|a| a.key == "lsn")
                && s.attributes
                    .iter()
                    .any(|a| a.key == "tables" && format!("{:?}", a.value).contains(t))
        })
        .unwrap_or_else(|| {
            panic!(
                "no root span for the inserted row among {:?}",
                spans
                    .iter()
                    .filter(|s| s.name == "cdc.chunk")
                    .map(|s| (&s.name, &s.attributes))
                    .collect::<Vec<_>>()
            )
        });
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id && s.parent_span_id == root.span_id)
        .collect();
    for name in [
        "source.decode",
        "edge.queue",
        "sink.encode",
        "clickhouse.insert",
    ] {
        assert!(
            children.iter().any(|s| s.name == name),
            "`{name}` missing under the root; children: {:?}",
            children.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    // Every span of the trace chains up to the root.
    assert!(spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .all(|s| s.span_id == root.span_id || s.parent_span_id == root.span_id));
    // Separate chunks are separate traces, not one endless trace.
    let traces: std::collections::HashSet<_> = spans
        .iter()
        .filter(|s| s.name == "cdc.chunk")
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(traces.len() >= 2, "chunks share a trace");
}
