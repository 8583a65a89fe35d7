//! Pure protocol cores: bytes in, values out. No sockets, no clocks, no actors.
//! Each is unit-tested here and fuzzed without a server.

pub mod chcluster;
pub mod chtypes;
pub mod debezium;
#[doc(hidden)]
pub mod fuzz;
pub mod llm;
pub mod llm_score;
pub mod mapping;
pub mod mastodon;
pub mod passthrough;
pub mod pgauth;
pub mod pgframe;
pub mod pgoutput;
pub mod pgtext;
pub mod rowbinary;
pub mod schema;
#[cfg(test)]
mod testing;
pub mod time;
pub mod verify;
pub mod x509;
