//! Supervision: a generic OTP-style supervisor on ractor ([`supervisor`]), and the trees
//! built from it: the root over pipelines and one tree per pipeline ([`pipeline`] for CDC,
//! [`sentiment`] for Mastodon → LLM → ClickHouse).

pub mod pipeline;
pub mod sentiment;
pub mod supervisor;
