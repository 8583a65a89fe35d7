//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs): each feeds arbitrary bytes to a
//! protocol parser the way tributary reads it (the config file's target is `config::fuzz`). They live here so that the fuzz
//! targets and tests/integration/fuzz_regressions.rs, which replays the seeds and every crash input kept in
//! fuzz/regressions/ on each `cargo test`, run the same code. Must never: do I/O.

use crate::debezium::decode_moved;
use crate::llm::{extract_reply, parse_label, Api, Labels};
use crate::mastodon::{html_to_text, parse_event, parse_websocket_message, SseParser};
use crate::pgframe::frame_len;
use crate::pgoutput::{decode_logical, decode_replication};
use crate::x509::{format_utc, summarize};

/// A snapshot chunk's binary COPY as the copy reads it: the stream in pieces (their size from
/// the data itself), each tuple written as RowBinary for a table of every column kind the
/// binary way has (on both server generations), and its key taken.
pub fn copy_binary(data: &[u8]) {
    use crate::chtypes::{map_table, JsonAs, ServerCaps};
    use crate::schema::{Column, Identity, PgType, TableSchema};
    let col = |name: &str, pg_type: PgType, key: bool| Column {
        name: name.into(),
        pg_type,
        nullable: !key,
        is_key: key,
        added_default: None,
        renamed_from: None,
    };
    let s = TableSchema {
        rel_id: 1,
        schema: "public".into(),
        name: "t".into(),
        columns: vec![
            col("id", PgType::Int8, true),
            col("name", PgType::Text, true),
            col("small", PgType::Int2, false),
            col("flag", PgType::Bool, false),
            col("f4", PgType::Float4, false),
            col("f8", PgType::Float8, false),
            col("amount", PgType::Numeric(Some((12, 2))), false),
            col("wide", PgType::Numeric(Some((30, 5))), false),
            col("day", PgType::Date, false),
            col("at", PgType::TimestampTz, false),
            col("raw", PgType::Bytea, false),
            col("doc", PgType::Jsonb, false),
        ],
        identity: Identity::default(),
        order_by: Vec::new(),
    };
    let step = data.first().map_or(1, |b| (*b as usize % 23) + 1);
    for version in ["26.9.1.1", "18.16.1"] {
        let ch = map_table(&s, &ServerCaps::from_version(version), JsonAs::String);
        let Some(plan) = crate::rowbinary::plan(&s.columns, &ch) else {
            panic!("the fuzz table has no binary copy into {version}");
        };
        let mut reader = crate::rowbinary::CopyReader::default();
        let (mut fields, mut out) = (Vec::new(), Vec::new());
        'stream: for piece in data.chunks(step) {
            reader.push(piece);
            loop {
                match reader.next_tuple(&mut fields) {
                    Ok(Some(tuple)) => {
                        let _ = plan.write_row(tuple, &fields, 7, &mut out);
                        let _ = plan.key_of(tuple, &fields);
                    }
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
        }
    }
}

/// The walsender's CopyData payloads and pgoutput messages.
pub fn pgoutput(data: &[u8]) {
    let _ = decode_replication(bytes::Bytes::copy_from_slice(data));
    let _ = decode_logical(bytes::Bytes::copy_from_slice(data));
}

/// The replication connection's byte stream as its reader splits it: frames off the front
/// while complete (a length no server sends ends it), each CopyData body decoded.
pub fn pgframe(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(len)) = frame_len(&buf) {
        assert!((5..=buf.len()).contains(&len), "a frame of {len} bytes");
        let frame = buf.split_to(len).freeze();
        if frame[0] == b'd' {
            let _ = decode_replication(frame.slice(5..));
        }
    }
}

/// Debezium envelopes as a Kafka source reads them: key and value split at the first 0xFF
/// byte (no 0xFF: no key); an empty value is a tombstone. The key is also offered as the
/// `__debezium.oldkey` header of a key change.
pub fn debezium(data: &[u8]) {
    let (key, value) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let value = (!value.is_empty()).then_some(value);
    let _ = decode_moved("prefix.public.table", key, value, None);
    let _ = decode_moved("prefix.public.table", key, value, key);
}

/// The Mastodon streaming API as it reaches us: SSE bytes in arbitrary chunks, each event
/// parsed (statuses, deletes, edits), every status's HTML turned into text; the same bytes
/// as a WebSocket message.
pub fn mastodon(data: &[u8]) {
    let mut sse = SseParser::with_max_event_bytes(64 * 1024);
    // Chunk boundaries come from the data itself, so the fuzzer explores them too.
    let step = data.first().map_or(1, |b| (*b as usize % 17) + 1);
    for chunk in data.chunks(step) {
        for frame in sse.push(chunk) {
            let _ = parse_event(&frame);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_websocket_message(text);
        let _ = html_to_text(text);
    }
}

/// An LLM server's reply: the HTTP body of each API, then the label parser (`<think>` blocks,
/// JSON, prose) on the text.
pub fn llm_reply(data: &[u8]) {
    let labels = Labels::default();
    for api in [Api::OllamaGenerate, Api::OllamaChat, Api::OpenAiChat] {
        if let Ok(reply) = extract_reply(api, data) {
            let _ = parse_label(&reply, &labels);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_label(text, &labels);
    }
}

/// A TLS server's certificate as the client reads it (DER), its validity formatted; the first
/// eight bytes also as a time to format.
pub fn x509(data: &[u8]) {
    if let Ok(summary) = summarize(data) {
        let _ = format_utc(summary.not_before);
        let _ = format_utc(summary.not_after);
    }
    if let Some(secs) = data.first_chunk::<8>() {
        let _ = format_utc(i64::from_le_bytes(*secs));
    }
}
