//! A TCP fault proxy between tributary and a real server: forwards bytes, and on demand
//! adds latency, throttles bandwidth, cuts every open connection, refuses new ones, or accepts
//! and never answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct State {
    upstream: String,
    delay_ms: AtomicU64,
    /// Bytes per second each direction of each connection may pass (0 = unlimited).
    rate: AtomicU64,
    refuse: AtomicBool,
    hang: AtomicBool,
    /// A network partition: nothing passes either way, not even a close, until it heals.
    partitioned: AtomicBool,
    cut: watch::Sender<u64>,
    accepted: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            delay_ms: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            partitioned: AtomicBool::new(false),
            cut: watch::channel(0).0,
            accepted: AtomicU64::new(0),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                st.accepted.fetch_add(1, Ordering::Relaxed);
                if st.refuse.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(async move {
                    let mut cut = st.cut.subscribe();
                    if st.hang.load(Ordering::Relaxed) || st.partitioned.load(Ordering::Relaxed) {
                        let _ = cut.changed().await;
                        drop(client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&st.upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = pump(cr, sw, st.clone());
                    let b = pump(sr, cw, st.clone());
                    tokio::select! {
                        _ = async { tokio::join!(a, b) } => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Latency added before each forwarded read, both directions.
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// Limits each direction of every connection to `bytes_per_s` (0: no limit).
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.state.rate.store(bytes_per_s, Ordering::Relaxed);
    }
    /// Closes every open connection now.
    pub fn cut_all(&self) {
        self.state.cut.send_modify(|g| *g += 1);
    }
    pub fn set_refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::Relaxed);
    }
    /// New connections are accepted and never answered.
    pub fn set_hang(&self, on: bool) {
        self.state.hang.store(on, Ordering::Relaxed);
    }
    /// A network partition (a machine or its network gone): open connections pass nothing,
    /// not even a close, and new ones are never answered, until it heals.
    pub fn set_partitioned(&self, on: bool) {
        self.state.partitioned.store(on, Ordering::Relaxed);
    }
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<State>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                healed(&st).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let d = st.delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        // Throttle: pass at most rate/10 bytes per 100 ms.
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let rate = st.rate.load(Ordering::Relaxed);
            let take = if rate == 0 {
                rest.len()
            } else {
                rest.len().min((rate / 10).max(1) as usize)
            };
            healed(&st).await;
            if to.write_all(&rest[..take]).await.is_err() {
                return;
            }
            rest = &rest[take..];
            if rate > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Returns once no partition holds the bytes back.
async fn healed(st: &State) {
    while st.partitioned.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
