//! An LLM server's reply: the HTTP body of each API, then the label parser (`<think>` blocks,
//! JSON, prose) on the text.
//! The body is `tributary_protocol::fuzz::llm_reply`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/llm_reply/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::llm_reply(data));
