//! The replay source: statuses from a JSON Lines file (one status per line, as the Mastodon
//! API returns them), at full speed or at a fixed rate, into the LLM pool's queue. Its
//! resume point is the line number: a restart skips the lines already written.
//!
//! Must never: stop on a bad line (it is counted and skipped), or read ahead of the queue.

use crate::clients::clickhouse::ChClient;
use crate::config::{ClickHouseConfig, ReplayConfig};
use crate::flow::ack::AckTracker;
use crate::flow::edge::WorkQueue;
use crate::protocol::mastodon::{Post, Status};
use crate::sentiment::job::Job;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

pub struct ReplayArgs {
    pub pipeline: String,
    pub replay: ReplayConfig,
    pub clickhouse: ClickHouseConfig,
    pub queue: WorkQueue<Job>,
    pub tracker: Arc<AckTracker>,
    pub skipped: Arc<std::sync::atomic::AtomicU64>,
}

pub enum ReplayMsg {
    Failed(String),
    Finished(u64),
}

pub struct ReplayState {
    task: crate::runtime::task::TaskGuard,
}

pub struct ReplaySource;

/// Whether a post passes the configured filter.
pub fn accept(filter: &crate::config::PostFilter, post: &Post, is_reblog: bool) -> bool {
    !(filter.skip_bots && post.bot
        || filter.skip_reblogs && is_reblog
        || !filter.languages.is_empty()
            && !post
                .language
                .as_deref()
                .is_some_and(|l| filter.languages.iter().any(|x| x == l)))
}

impl Actor for ReplaySource {
    type Msg = ReplayMsg;
    type State = ReplayState;
    type Arguments = ReplayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplayMsg>,
        args: ReplayArgs,
    ) -> Result<ReplayState, ActorProcessingErr> {
        args.tracker.reset();
        let (me, me2) = (myself.clone(), myself.clone());
        let task = crate::runtime::task::TaskGuard::spawn_watched(
            async move {
                match run(&args).await {
                    Ok(n) => {
                        let _ = me.cast(ReplayMsg::Finished(n));
                    }
                    Err(e) => {
                        let _ = me.cast(ReplayMsg::Failed(e));
                    }
                }
            },
            move |why| {
                let _ = me2.cast(ReplayMsg::Failed(why));
            },
        );
        Ok(ReplayState { task })
    }

    async fn handle(
        &self,
        _me: ActorRef<ReplayMsg>,
        msg: ReplayMsg,
        _st: &mut ReplayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplayMsg::Failed(e) => Err(e.into()),
            ReplayMsg::Finished(n) => {
                tracing::info!(posts = n, "replay file finished");
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ReplayMsg>,
        st: &mut ReplayState,
    ) -> Result<(), ActorProcessingErr> {
        st.task.0.abort();
        Ok(())
    }
}

pub fn resume_key(file: &std::path::Path) -> String {
    format!("replay:{}", file.display())
}

async fn run(a: &ReplayArgs) -> Result<u64, String> {
    let key = resume_key(&a.replay.file);
    let ch = ChClient::connect(&a.clickhouse)
        .await
        .map_err(|e| e.to_string())?;
    ch.ensure_state_table().await.map_err(|e| e.to_string())?;
    let done: u64 = ch
        .read_state(&a.pipeline, &key)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let file = tokio::fs::File::open(&a.replay.file)
        .await
        .map_err(|e| format!("replay file {}: {e}", a.replay.file.display()))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let interval = (a.replay.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / a.replay.rate));
    let mut tick = interval.map(tokio::time::interval);
    let mut n = 0u64;
    let mut sent = 0u64;
    if done > 0 {
        tracing::info!(file = %a.replay.file.display(), resume_after_line = done, "replay resumes");
    }
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("replay file {}: {e}", a.replay.file.display()))?
    {
        n += 1;
        if n <= done || line.trim().is_empty() {
            continue;
        }
        let status: Status = match serde_json::from_str(&line) {
            Ok(s) => s,
            Err(e) => {
                a.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(line = n, error = %e, "replay: not a status; skipped");
                continue;
            }
        };
        let post = Post::from_status(&a.replay.instance, &status);
        if !accept(&a.replay.filter, &post, status.reblog.is_some()) {
            a.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let ticket = a.tracker.register(&key, &n.to_string());
        a.queue
            .send(Job::classify(post, ticket, &a.pipeline))
            .await
            .map_err(|e| e.to_string())?;
        sent += 1;
    }
    Ok(sent)
}
