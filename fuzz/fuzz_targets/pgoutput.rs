//! The walsender's CopyData payloads and pgoutput messages: never a panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tributary::protocol::pgoutput::{decode_logical, decode_replication};

fuzz_target!(|data: &[u8]| {
    let _ = decode_replication(bytes::Bytes::copy_from_slice(data));
    let _ = decode_logical(bytes::Bytes::copy_from_slice(data));
});
