//! A bounded edge between two actors. ractor mailboxes are unbounded, so the receiver owns a
//! semaphore of `capacity` permits; a sender waits for a permit before it casts, and the
//! permit travels inside the message until the receiver has taken the message in. The
//! receiver's address may change across restarts: it re-attaches itself in `pre_start`, and
//! senders wait while it is away.
//!
//! Each attach starts a new epoch. A sender made with [`Edge::for_sender`] belongs to the
//! epoch it was made in: once the receiver restarted, its sends fail. A source that outlived
//! its sink's restart (it is stopped a moment later) must not deliver the rest of its stream to
//! the new sink, which expects the stream again from the last acknowledged position: a chunk
//! from the middle would be applied before the ones the new sink never got (an unchanged TOAST
//! value looked up too early) and acknowledged past them.
//!
//! Must never: let a sender enqueue without a permit, drop a message silently (a send that
//! cannot be delivered is an error the sender sees), or deliver to a receiver that attached
//! after the sender was made.

use ractor::{ActorRef, Message, RpcReplyPort};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EdgeError {
    #[error("edge `{0}`: the receiver is gone")]
    Closed(String),
    #[error("edge `{0}`: no reply within {1:?}")]
    Timeout(String, Duration),
    #[error("edge `{0}`: the receiver restarted after this sender was made")]
    Stale(String),
}

/// Held by a message in flight on an edge; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    pub enqueued_at: Instant,
}

/// A reserved place on an edge (see [`Edge::reserve`]).
pub struct Slot(OwnedSemaphorePermit);

struct Inner<M: Message> {
    name: String,
    capacity: usize,
    permits: Arc<Semaphore>,
    /// The receiver and its epoch (incremented by every attach).
    target: RwLock<(Option<ActorRef<M>>, u64)>,
    attached: tokio::sync::Notify,
}

pub struct Edge<M: Message> {
    inner: Arc<Inner<M>>,
    /// The epoch a sender was made in (`None`: not bound to one).
    epoch: Option<u64>,
}

impl<M: Message> Clone for Edge<M> {
    fn clone(&self) -> Self {
        Edge {
            inner: self.inner.clone(),
            epoch: self.epoch,
        }
    }
}

impl<M: Message> Edge<M> {
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        Edge {
            inner: Arc::new(Inner {
                name: name.into(),
                capacity,
                permits: Arc::new(Semaphore::new(capacity)),
                target: RwLock::new((None, 0)),
                attached: tokio::sync::Notify::new(),
            }),
            epoch: None,
        }
    }

    /// A sender bound to the receiver attached now: its sends fail once the receiver restarts.
    pub fn for_sender(&self) -> Edge<M> {
        Edge {
            inner: self.inner.clone(),
            epoch: Some(
                self.inner
                    .target
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .1,
            ),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Called by the receiver when it starts (again).
    pub fn attach(&self, target: ActorRef<M>) {
        {
            let mut t = self.inner.target.write().unwrap_or_else(|e| e.into_inner());
            t.0 = Some(target);
            t.1 += 1;
        }
        self.inner.attached.notify_waiters();
    }

    /// The receiver, unless it restarted since this sender was made.
    fn current(&self) -> Result<Option<ActorRef<M>>, EdgeError> {
        let t = self.inner.target.read().unwrap_or_else(|e| e.into_inner());
        match self.epoch {
            Some(e) if e != t.1 => Err(EdgeError::Stale(self.inner.name.clone())),
            _ => Ok(t.0.clone()),
        }
    }

    async fn wait_target(&self) -> Result<ActorRef<M>, EdgeError> {
        loop {
            let notified = self.inner.attached.notified();
            if let Some(t) = self
                .current()?
                .filter(|t| t.get_status() <= ractor::ActorStatus::Running)
            {
                return Ok(t);
            }
            // Re-check periodically too: a receiver that died without a replacement yet.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Messages queued or being taken in now.
    pub fn depth(&self) -> usize {
        self.inner.capacity - self.inner.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Waits for a slot (backpressure), then delivers `make(permit)`.
    pub async fn send(&self, make: impl FnOnce(Permit) -> M) -> Result<(), EdgeError> {
        let slot = self.reserve().await?;
        self.send_reserved(slot, make).await
    }

    /// Waits for a slot and holds it (a sender that must do something else while the edge
    /// is full, such as pausing a Kafka consumer, reserves first).
    pub async fn reserve(&self) -> Result<Slot, EdgeError> {
        self.inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map(Slot)
            .map_err(|_| EdgeError::Closed(self.inner.name.clone()))
    }

    /// A slot if one is free now.
    pub fn try_reserve(&self) -> Option<Slot> {
        self.inner
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Slot)
    }

    /// Delivers `make(permit)` in a slot reserved before.
    pub async fn send_reserved(
        &self,
        slot: Slot,
        make: impl FnOnce(Permit) -> M,
    ) -> Result<(), EdgeError> {
        let permit = slot.0;
        let target = self.wait_target().await?;
        target
            .cast(make(Permit {
                _permit: permit,
                enqueued_at: Instant::now(),
            }))
            .map_err(|_| EdgeError::Closed(self.inner.name.clone()))
    }

    /// Asks the running receiver and waits for its answer (control messages; they take no
    /// permit, and are answered after everything queued before them).
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, EdgeError> {
        // Control calls do not wait for a receiver that is away (restarting): the caller
        // decides what a missing answer means.
        let target = self
            .current()?
            .filter(|t| t.get_status() == ractor::ActorStatus::Running)
            .ok_or_else(|| EdgeError::Closed(self.inner.name.clone()))?;
        let (tx, rx) = ractor::concurrency::oneshot();
        target
            .cast(make(tx.into()))
            .map_err(|_| EdgeError::Closed(self.inner.name.clone()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(EdgeError::Closed(self.inner.name.clone())),
            Err(_) => Err(EdgeError::Timeout(self.inner.name.clone(), timeout)),
        }
    }
}

/// A bounded queue that a pool of workers pulls from (the edge in front of a worker pool).
/// Senders wait when it is full; each worker takes the next item when it is free.
pub struct WorkQueue<T> {
    tx: tokio::sync::mpsc::Sender<T>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>,
    capacity: usize,
    name: String,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            capacity: self.capacity,
            name: self.name.clone(),
        }
    }
}

impl<T: Send + 'static> WorkQueue<T> {
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        WorkQueue {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            capacity,
            name: name.into(),
        }
    }

    /// Waits for room, then enqueues.
    pub async fn send(&self, item: T) -> Result<(), EdgeError> {
        self.tx
            .send(item)
            .await
            .map_err(|_| EdgeError::Closed(self.name.clone()))
    }

    /// Waits for room and holds it (cancel-safe: dropping the future loses nothing).
    pub async fn reserve(&self) -> Result<tokio::sync::mpsc::Permit<'_, T>, EdgeError> {
        self.tx
            .reserve()
            .await
            .map_err(|_| EdgeError::Closed(self.name.clone()))
    }

    /// Enqueues if there is room now; gives the item back when the queue is full.
    pub fn try_send(&self, item: T) -> Result<(), (T, Option<EdgeError>)> {
        use tokio::sync::mpsc::error::TrySendError;
        self.tx.try_send(item).map_err(|e| match e {
            TrySendError::Full(item) => (item, None),
            TrySendError::Closed(item) => (item, Some(EdgeError::Closed(self.name.clone()))),
        })
    }

    /// The next item, or `None` when nothing arrived within `wait`.
    pub async fn recv_timeout(&self, wait: Duration) -> Option<T> {
        let mut rx = tokio::time::timeout(wait, self.rx.lock()).await.ok()?;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
