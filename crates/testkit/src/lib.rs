//! What tributary's integration tests (tests/) and benches (benches/) share, in one place
//! instead of benches including test files by path: the test servers' addresses (started or
//! reused through scripts/services.sh), unique names, /proc readings, the benches' CPU layout, bench flags, the fake
//! LLM and Mastodon servers (for what cannot run here: Ollama's API, Mastodon) and the TCP
//! fault proxy.
//!
//! Must never: talk to anything but 127.0.0.1, or skip a check because a server is missing
//! (a server that cannot start is an error).

pub mod cores;
pub mod fake_llm;
pub mod fake_mastodon;
pub mod flags;
pub mod procfs;
pub mod proxy;
pub mod services;

pub use services::{repo, unique};

/// Errors of the kit's fallible helpers, as text.
pub type Res<T> = Result<T, String>;
