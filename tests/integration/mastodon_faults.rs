//! The Mastodon source against an instance that misbehaves on purpose (the fake's switches),
//! through the real client: requests that are never answered time out, a response too large
//! is refused while it streams in, 429s that say nothing about how long to wait back off, and
//! a `Link` to another origin is not followed (the token stays with its instance). Each test
//! failed before its fix; the ClickHouse generation does not matter here, so they run on one.

use crate::common::fake_llm::{FakeLlm, LlmConfig};
use crate::common::fake_mastodon::{make_status, FakeMastodon, MastodonConfig};
use crate::common::*;
use crate::sentiment::handles;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tributary::config::{Config, MastodonConfig as Source};

/// Long enough for a few reconnects; a source that hangs fails the test after it.
const D: Duration = Duration::from_secs(30);

async fn fake(token: Option<&str>) -> FakeMastodon {
    FakeMastodon::start_with(MastodonConfig {
        heartbeat: Duration::from_millis(200),
        token: token.map(str::to_string),
        ..Default::default()
    })
    .await
}

/// The example config pointed at `masto` and `llm`, its `[pipeline.mastodon]` adjusted.
fn config(
    w: &World,
    masto: &FakeMastodon,
    llm: &FakeLlm,
    tweak: impl FnOnce(&mut Source),
) -> Config {
    let mut cfg = sentiment_config(w, &masto.url(), &llm.url(), "ollama", "llama3.2:1b");
    tweak(cfg.pipelines[0].mastodon.as_mut().unwrap());
    cfg
}

async fn connected(masto: &FakeMastodon, n: u64, what: &str) {
    eventually(D, what, || async {
        match masto.stream_connections() {
            c if c >= n => Ok(()),
            c => Err(format!("{c} stream connections")),
        }
    })
    .await
}

/// Waits until the live rows are exactly `ids`.
async fn landed(w: &World, ids: &BTreeSet<String>) {
    eventually(D, "the posts in ClickHouse", || async {
        let got: BTreeSet<String> = sentiment_rows(w).await?.into_iter().map(|r| r.0).collect();
        if &got == ids {
            Ok(())
        } else {
            Err(format!("{} rows, want {}", got.len(), ids.len()))
        }
    })
    .await
}

/// Requests that are never answered time out after `request_timeout` and the source
/// reconnects: the start point, the stream's opening (its headers never come) and a backfill
/// page. Before the timeout, each of them waited for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out_and_the_source_reconnects() {
    let w = World::new(Target::Ch26).await;
    let llm = FakeLlm::start(LlmConfig::default()).await;
    let masto = fake(None).await;
    masto.stall_rest_next(1); // the start point of the first run
    let cfg = config(&w, &masto, &llm, |m| {
        m.request_timeout.0 = Duration::from_secs(1)
    });
    let run = Running::start(&cfg).await;
    connected(&masto, 1, "the stream, after the start point timed out").await;
    assert_eq!(masto.stalled(), 1);

    masto.stall_streams_next(1);
    masto.drop_streams();
    connected(&masto, 2, "the stream, after its opening timed out").await;
    assert_eq!(masto.stalled(), 2);

    masto.stall_rest_next(1); // the backfill after the next reconnect
    let id = masto.publish_silently(make_status(810_000_000_000_000_001, "while cut, happy"));
    masto.drop_streams();
    landed(&w, &BTreeSet::from([id])).await;
    assert_eq!(masto.stalled(), 3);
    assert!(handles(&run).reconnects.load(Ordering::Relaxed) >= 3);
    run.stop().await;
}

/// A REST response larger than `max_response_bytes` (valid JSON, only too big) is refused
/// while it streams in: the client reads no more than the limit (the fake counts what it
/// handed over: the limit plus what the socket buffers took), and reconnects. Before the
/// limit, the whole 64 MiB was read into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_refused_while_it_streams_in() {
    const HUGE: usize = 64 << 20;
    let w = World::new(Target::Ch26).await;
    let llm = FakeLlm::start(LlmConfig::default()).await;
    let masto = fake(None).await;
    masto.huge_body_next(1, HUGE); // the start point
    let cfg = config(&w, &masto, &llm, |m| m.max_response_bytes = 256 << 10);
    let run = Running::start(&cfg).await;
    connected(&masto, 1, "the stream, after the start point was refused").await;
    let sent = masto.huge_bytes_sent();
    assert!(
        sent < 16 << 20,
        "{sent} bytes of the huge start point were read"
    );

    masto.huge_body_next(1, HUGE); // the backfill after the next reconnect
    let id = masto.publish_silently(make_status(820_000_000_000_000_001, "while cut, happy"));
    masto.drop_streams();
    landed(&w, &BTreeSet::from([id])).await;
    let sent = masto.huge_bytes_sent() - sent;
    assert!(sent > 0, "the backfill met the huge body");
    assert!(
        sent < 16 << 20,
        "{sent} bytes of the huge backfill page were read"
    );
    assert!(handles(&run).reconnects.load(Ordering::Relaxed) >= 2);
    run.stop().await;
}

/// 429s without `Retry-After` or `X-RateLimit-*` are retried after 1 s, 2 s, 4 s… instead of
/// at once (before, the backfill asked again in a hot loop: thousands of requests a second);
/// after a success the backoff starts again at 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_429s_back_off_instead_of_hammering() {
    let w = World::new(Target::Ch26).await;
    let llm = FakeLlm::start(LlmConfig::default()).await;
    let masto = fake(None).await;
    let cfg = config(&w, &masto, &llm, |_| {});
    let run = Running::start(&cfg).await;
    connected(&masto, 1, "the stream").await;

    masto.rate_limit_bare_next(u64::MAX);
    let a = masto.publish_silently(make_status(830_000_000_000_000_001, "first gap, happy"));
    masto.drop_streams();
    eventually(D, "the first 429", || async {
        match masto.rate_limited() {
            0 => Err("none yet".into()),
            _ => Ok(()),
        }
    })
    .await;
    let first = Instant::now();
    eventually(D, "the third 429", || async {
        match masto.rate_limited() {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} so far")),
        }
    })
    .await;
    let (took, seen) = (first.elapsed(), masto.rate_limited());
    assert!(
        took >= Duration::from_millis(2500) && seen <= 4,
        "{seen} 429s in {took:?}: a burst, not 1 s then 2 s apart"
    );

    masto.rate_limit_bare_next(0);
    landed(&w, &BTreeSet::from([a.clone()])).await;
    // A success reset the backoff: two more 429s cost 1 s + 2 s, not 8 s + 16 s.
    let before = masto.rate_limited();
    masto.rate_limit_bare_next(2);
    let b = masto.publish_silently(make_status(830_000_000_000_000_002, "second gap, happy"));
    let cut = Instant::now();
    masto.drop_streams();
    landed(&w, &BTreeSet::from([a, b])).await;
    assert_eq!(masto.rate_limited() - before, 2);
    let took = cut.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "the second gap took {took:?}"
    );
    run.stop().await;
}

/// The backfill follows a `Link` only to the instance's own origin. An instance whose
/// `Link`s point elsewhere gets its pages asked for by `min_id` instead, and the other origin
/// never sees a request (before, it got the next page's request, bearer token and all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_never_sends_the_token_to_another_origin() {
    const TOKEN: &str = "token-of-this-instance-only";
    let w = World::new(Target::Ch26).await;
    let llm = FakeLlm::start(LlmConfig::default()).await;
    let masto = fake(Some(TOKEN)).await;
    let other = FakeMastodon::start().await;
    masto.set_link_base(Some(&other.url()));
    let cfg = config(&w, &masto, &llm, |m| {
        m.instances[0].token = tributary::config::Secret::new(TOKEN)
    });
    let run = Running::start(&cfg).await;
    connected(&masto, 1, "the stream").await;

    masto.set_stream_down(true);
    masto.drop_streams();
    // More than a page (40): the backfill needs a next page.
    let ids: BTreeSet<String> = (1..=45u64)
        .map(|i| {
            masto.publish_silently(make_status(
                840_000_000_000_000_000 + i,
                &format!("gap {i}, happy"),
            ))
        })
        .collect();
    masto.set_stream_down(false);
    eventually(D, "the backfill, or a request elsewhere", || async {
        let rows = sentiment_rows(&w).await?.len();
        if rows == ids.len() || !other.requests().is_empty() {
            Ok(())
        } else {
            Err(format!("{rows} rows"))
        }
    })
    .await;
    let elsewhere: Vec<(String, bool)> = other
        .requests()
        .iter()
        .map(|r| (r.uri.clone(), r.authorization.is_some()))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the other origin got (uri, with a token): {elsewhere:?}"
    );
    landed(&w, &ids).await;
    let bearer = format!("Bearer {TOKEN}");
    assert!(masto
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(bearer.as_str())));
    run.stop().await;
}
