//! An LLM server's reply: the HTTP body of each API, then the label parser (`<think>` blocks,
//! JSON, prose) on the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tributary::protocol::llm::{extract_reply, parse_label, Api, Labels};

fuzz_target!(|data: &[u8]| {
    let labels = Labels::default();
    for api in [Api::OllamaGenerate, Api::OllamaChat, Api::OpenAiChat] {
        if let Ok(reply) = extract_reply(api, data) {
            let _ = parse_label(&reply, &labels);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_label(text, &labels);
    }
});
