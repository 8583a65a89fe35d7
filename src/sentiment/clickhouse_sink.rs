//! The ClickHouse sink of a sentiment pipeline: one row per post in `mastodon_sentiment`
//! (ReplacingMergeTree on `_version`, ordered by instance and post id), batched by rows and
//! age. After each successful insert it completes the posts' tickets and records the resume
//! points that moved, so a restarted source continues after what is durably written.
//!
//! Must never: complete a ticket before ClickHouse answered success.

use crate::clients::clickhouse::ChClient;
use crate::config::{BatchConfig, ClickHouseConfig};
use crate::flow::ack::{AckTracker, Ticket};
use crate::flow::age::AgeTimer;
use crate::flow::edge::{Edge, Permit};
use crate::protocol::chtypes::{ch_ident, ServerCaps};
use crate::protocol::mastodon::Post;
use crate::protocol::pgtext::{tsv_escape, write_datetime_micros};
use crate::protocol::time::parse_rfc3339_micros;
use crate::runtime::registry::PipelineCounters;
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Instant;
use tracing::Span;

/// A classified post.
#[derive(Debug, Clone)]
pub struct Classified {
    pub post: Post,
    pub label: String,
    pub model: String,
    /// Short hash of the prompt template, to compare prompts later.
    pub prompt_id: String,
    pub latency_ms: u32,
    pub attempts: u32,
    /// Score mode: the label's probability among the labels.
    pub confidence: Option<f32>,
    /// Why the label is `unknown` (the server refused the post, or named no label).
    pub llm_error: Option<String>,
}

#[derive(Debug)]
pub enum SentimentItem {
    Classified(Box<Classified>),
    /// The post was deleted on its instance.
    Deleted {
        instance: String,
        status_id: String,
    },
}

pub enum SentimentSinkMsg {
    Item {
        item: SentimentItem,
        ticket: Option<Ticket>,
        trace: Span,
        permit: Permit,
    },
    /// The batch's age timer.
    Tick,
    /// Flush now; reply when done.
    Drain(RpcReplyPort<()>),
}

pub struct SentimentSinkArgs {
    pub pipeline: String,
    pub clickhouse: ClickHouseConfig,
    pub batch: BatchConfig,
    pub edge: Edge<SentimentSinkMsg>,
    pub tracker: Arc<AckTracker>,
    pub counters: Arc<PipelineCounters>,
}

pub struct SentimentSinkState {
    pipeline: String,
    ch: ChClient,
    table: String,
    batch: BatchConfig,
    buf: Vec<u8>,
    rows: usize,
    tickets: Vec<Ticket>,
    traces: Vec<Span>,
    oldest: Option<Instant>,
    tracker: Arc<AckTracker>,
    counters: Arc<PipelineCounters>,
    /// Rings when the batch comes of age (an idle sink is not woken to find nothing to do).
    age_timer: AgeTimer,
    /// This sink, for its age timer to send `Tick` to.
    wake: ActorRef<SentimentSinkMsg>,
}

pub const COLUMNS: &[&str] = &[
    "m_id",
    "created_at",
    "username",
    "bot",
    "mastodon_text",
    "sentiment",
    "instance",
    "language",
    "url",
    "edited_at",
    "model",
    "prompt_id",
    "llm_latency_ms",
    "llm_attempts",
    "classified_at",
    "confidence",
    "llm_error",
    "_version",
    "_is_deleted",
];

/// Columns added after the first release, with their types: added to an existing table.
pub const ADDED_COLUMNS: &[(&str, &str)] =
    &[("confidence", "Nullable(Float32)"), ("llm_error", "String")];

/// `ALTER TABLE … ADD COLUMN` for each added column `existing` lacks (in order, after
/// `classified_at`, so the table's columns read as a fresh one's).
pub fn missing_columns_sql(db: &str, table: &str, existing: &[(String, String)]) -> Vec<String> {
    let mut after = "classified_at";
    let mut out = Vec::new();
    for (name, ty) in ADDED_COLUMNS {
        if !existing.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "ALTER TABLE {}.{} ADD COLUMN {} {ty} AFTER {}",
                ch_ident(db),
                ch_ident(table),
                ch_ident(name),
                ch_ident(after)
            ));
        }
        after = name;
    }
    out
}

/// DDL of the sentiment table for a server generation. Timestamps: DateTime64(3, 'UTC') on
/// current servers, Int64 milliseconds since the epoch on legacy ones.
pub fn create_table_sql(db: &str, table: &str, caps: &ServerCaps) -> String {
    let (ts, nts, bool_t, lc) = if caps.datetime64 {
        (
            "DateTime64(3, 'UTC')",
            "Nullable(DateTime64(3, 'UTC'))",
            if caps.bool_type { "Bool" } else { "UInt8" },
            "LowCardinality(String)",
        )
    } else {
        ("Int64", "Nullable(Int64)", "UInt8", "String")
    };
    let engine = if caps.is_deleted_engine {
        "ReplacingMergeTree(`_version`, `_is_deleted`)"
    } else {
        "ReplacingMergeTree(`_version`)"
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (`m_id` String, `created_at` {ts}, `username` String, `bot` {bool_t}, \
         `mastodon_text` String, `sentiment` {lc}, `instance` {lc}, `language` {lc}, `url` String, `edited_at` {nts}, \
         `model` {lc}, `prompt_id` String, `llm_latency_ms` UInt32, `llm_attempts` UInt16, `classified_at` {ts}, \
         `confidence` Nullable(Float32), `llm_error` String, `_version` UInt64, `_is_deleted` UInt8) ENGINE = {engine} ORDER BY (`instance`, `m_id`)",
        ch_ident(db),
        ch_ident(table)
    )
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Appends one row. The version orders what happened to a post: its creation or last edit
/// time for a classified post (so a replay writes the same version), the deletion time for a
/// delete.
pub fn encode_row(out: &mut Vec<u8>, item: &SentimentItem, caps: &ServerCaps) {
    let ts = |out: &mut Vec<u8>, micros: i64| {
        if caps.datetime64 {
            write_datetime_micros(out, micros)
        } else {
            out.extend_from_slice((micros.div_euclid(1000)).to_string().as_bytes())
        }
    };
    let field = |out: &mut Vec<u8>, v: &str| {
        tsv_escape(out, v.as_bytes());
        out.push(b'\t');
    };
    match item {
        SentimentItem::Classified(c) => {
            let p = &c.post;
            let created = parse_rfc3339_micros(&p.created_at).unwrap_or(0);
            let edited = p.edited_at.as_deref().and_then(parse_rfc3339_micros);
            field(out, &p.status_id);
            ts(out, created);
            out.push(b'\t');
            field(out, &p.username);
            field(out, if p.bot { "1" } else { "0" });
            field(out, &p.text);
            field(out, &c.label);
            field(out, &p.instance);
            field(out, p.language.as_deref().unwrap_or(""));
            field(out, p.url.as_deref().unwrap_or(""));
            match edited {
                Some(e) => ts(out, e),
                None => out.extend_from_slice(b"\\N"),
            }
            out.push(b'\t');
            field(out, &c.model);
            field(out, &c.prompt_id);
            field(out, &c.latency_ms.to_string());
            field(out, &c.attempts.min(u16::MAX as u32).to_string());
            ts(out, now_micros());
            out.push(b'\t');
            match c.confidence.filter(|c| c.is_finite()) {
                Some(x) => field(out, &format!("{x:.4}")),
                None => out.extend_from_slice(b"\\N\t"),
            }
            field(out, c.llm_error.as_deref().unwrap_or(""));
            let version = edited.unwrap_or(created).max(0) as u64;
            out.extend_from_slice(format!("{version}\t0\n").as_bytes());
        }
        SentimentItem::Deleted {
            instance,
            status_id,
        } => {
            field(out, status_id);
            ts(out, 0);
            out.push(b'\t');
            field(out, "");
            field(out, "0");
            field(out, "");
            field(out, "");
            field(out, instance);
            field(out, "");
            field(out, "");
            out.extend_from_slice(b"\\N\t");
            field(out, "");
            field(out, "");
            field(out, "0");
            field(out, "0");
            ts(out, now_micros());
            out.push(b'\t');
            out.extend_from_slice(b"\\N\t");
            field(out, "");
            out.extend_from_slice(format!("{}\t1\n", now_micros().max(0)).as_bytes());
        }
    }
}

pub struct SentimentSink;

impl Actor for SentimentSink {
    type Msg = SentimentSinkMsg;
    type State = SentimentSinkState;
    type Arguments = SentimentSinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SentimentSinkMsg>,
        args: SentimentSinkArgs,
    ) -> Result<SentimentSinkState, ActorProcessingErr> {
        let ch = ChClient::connect(&args.clickhouse).await?;
        ch.ensure_state_table().await?;
        let table = args.clickhouse.sentiment_table.clone();
        ch.execute(&create_table_sql(&ch.database, &table, &ch.caps))
            .await?;
        // A table made by an earlier release gains the columns added since.
        let existing = ch.table_columns(&table).await?.unwrap_or_default();
        let added = missing_columns_sql(&ch.database, &table, &existing);
        for sql in &added {
            ch.execute(sql).await?;
        }
        let (drop, create) = crate::protocol::chtypes::live_view_sql(
            &ch.database,
            &table,
            &[],
            &crate::protocol::chtypes::TableLayout::default(),
        );
        // The view lists the table's columns: made again when they changed.
        if !added.is_empty()
            || ch
                .table_columns(&format!(
                    "{table}{}",
                    crate::protocol::chtypes::LIVE_VIEW_SUFFIX
                ))
                .await?
                .is_none()
        {
            ch.execute(&drop).await?;
            ch.execute(&create).await?;
            ch.distribute_view(&table).await?;
        } else {
            ch.ensure_distributed(&table).await?;
        }
        tracing::info!(pipeline = %args.pipeline, server = %ch.addr(), version = %ch.caps.version, table = %table, "sentiment sink connected");
        args.edge.attach(myself.clone());
        Ok(SentimentSinkState {
            pipeline: args.pipeline,
            ch: ch.wait_out_outages(args.counters.clone()),
            table,
            batch: args.batch,
            buf: Vec::new(),
            rows: 0,
            tickets: Vec::new(),
            traces: Vec::new(),
            oldest: None,
            tracker: args.tracker,
            counters: args.counters,
            age_timer: AgeTimer::default(),
            wake: myself,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<SentimentSinkMsg>,
        msg: SentimentSinkMsg,
        st: &mut SentimentSinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SentimentSinkMsg::Item {
                item,
                ticket,
                trace,
                permit,
            } => {
                drop(permit);
                encode_row(&mut st.buf, &item, &st.ch.caps);
                st.rows += 1;
                st.tickets.extend(ticket);
                st.traces.push(trace);
                st.oldest.get_or_insert_with(Instant::now);
                if st.rows >= st.batch.max_rows || st.buf.len() >= st.batch.max_bytes {
                    st.flush().await?;
                }
                st.arm_age();
            }
            SentimentSinkMsg::Tick => {
                st.age_timer.rang(Instant::now());
                if st.oldest.is_some_and(|t| t.elapsed() >= st.batch.max_age.0) {
                    st.flush().await?;
                }
                st.arm_age();
            }
            SentimentSinkMsg::Drain(reply) => {
                st.flush().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<SentimentSinkMsg>,
        st: &mut SentimentSinkState,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = st.flush().await {
            tracing::warn!(pipeline = %st.pipeline, error = %e, "final flush failed; the posts will be replayed");
        }
        Ok(())
    }
}

impl SentimentSinkState {
    /// Asks for a `Tick` when the batch taken in comes of age.
    fn arm_age(&mut self) {
        let max_age = self.batch.max_age.0;
        self.age_timer
            .arm(self.oldest, max_age, &self.wake, || SentimentSinkMsg::Tick);
    }

    async fn flush(&mut self) -> Result<(), crate::clients::clickhouse::ChError> {
        if self.rows == 0 {
            return Ok(());
        }
        let spans: Vec<Span> = self
            .traces
            .iter()
            .map(|t| tracing::info_span!(parent: t, "clickhouse.insert", rows = self.rows))
            .collect();
        let cols: Vec<String> = COLUMNS.iter().map(|c| ch_ident(c)).collect();
        let sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT TabSeparated",
            ch_ident(&self.ch.database),
            ch_ident(&self.table),
            cols.join(", ")
        );
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let started = Instant::now();
        if let Err(e) = self
            .ch
            .insert_tsv_retrying(&sql, body.clone(), 5, &self.counters, &self.table)
            .await
        {
            self.buf = body.to_vec();
            return Err(e);
        }
        drop(spans);
        self.counters.insert_duration.record(started.elapsed());
        PipelineCounters::add(&self.counters.rows_written, self.rows as u64);
        PipelineCounters::add(&self.counters.bytes_written, body.len() as u64);
        PipelineCounters::add(&self.counters.batches_written, 1);
        for t in self.tickets.drain(..) {
            self.tracker.complete(&t);
        }
        let moved = self.tracker.take_moved();
        if let Err(e) = self.ch.write_state(&self.pipeline, &moved).await {
            // The rows are in; only the resume point is behind: a restart replays a little more.
            tracing::warn!(pipeline = %self.pipeline, error = %e, "could not record resume points");
        }
        self.rows = 0;
        self.traces.clear();
        self.oldest = None;
        Ok(())
    }
}
