//! Debezium envelopes as a Kafka source reads them: key and value split at the first 0xFF
//! byte (no 0xFF: no key); an empty value is a tombstone. The key is also offered as the
//! `__debezium.oldkey` header of a key change.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tributary::protocol::debezium::decode_moved;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let value = (!value.is_empty()).then_some(value);
    let _ = decode_moved("prefix.public.table", key, value, None);
    let _ = decode_moved("prefix.public.table", key, value, key);
});
