//! The sentiment pipeline's unit of work: a post to classify, or a deletion to record, with
//! its acknowledgement ticket and its trace. Every source makes jobs; the workers (or the
//! Kafka publisher) take them from the pool's queue.
//!
//! Must never: lose its ticket (the post's resume point is recorded only when it completes).

use crate::flow::ack::Ticket;
use crate::protocol::mastodon::Post;
use tracing::Span;

/// Work for the pool.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: JobKind,
    pub ticket: Option<Ticket>,
    /// Root span of this post's trace (created by the source).
    pub trace: Span,
    /// Open while the job waits in the queue; the worker that takes it closes it.
    pub queued: Option<Span>,
}

#[derive(Debug, Clone)]
pub enum JobKind {
    Classify(Post),
    Delete { instance: String, status_id: String },
}

impl Job {
    /// A post to classify as it enters the pipeline: the root span of its trace
    /// (`sentiment.post`) and the span of its wait in the queue start now.
    pub fn classify(post: Post, ticket: Ticket, pipeline: &str) -> Job {
        let trace = tracing::info_span!(parent: None, "sentiment.post", pipeline = %pipeline, instance = %post.instance, status = %post.status_id);
        let queued = Some(tracing::info_span!(parent: &trace, "edge.queue", stage = "llm"));
        Job {
            kind: JobKind::Classify(post),
            ticket: Some(ticket),
            trace,
            queued,
        }
    }
}
