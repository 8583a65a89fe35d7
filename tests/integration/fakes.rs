//! The fake servers themselves, driven by a plain reqwest client: Mastodon's SSE framing,
//! heartbeats, auth, stream cuts and outages, timeline pagination and its Link headers, 429s,
//! the misbehaviours on demand (stalls, bare 429s, huge bodies, foreign Links);
//! the LLM's Ollama and OpenAI reply shapes, styles, formats, and its faults (latency,
//! concurrency limit, error rates, hangs, down).

use crate::common::fake_llm::{extract_post, rule_label, FakeLlm, LlmConfig, Reply, Style};
use crate::common::fake_mastodon::{load_fixture, make_status, FakeMastodon, MastodonConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// An open SSE response and everything read from it so far.
struct Sse {
    resp: reqwest::Response,
    text: String,
}

impl Sse {
    async fn open(c: &reqwest::Client, url: &str, token: Option<&str>) -> Sse {
        let mut rb = c.get(url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.expect("stream request");
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["transfer-encoding"], "chunked");
        Sse {
            resp,
            text: String::new(),
        }
    }

    /// Reads until `pred(text)`; panics after 5 s or at the end of the body.
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !pred(&self.text) {
            let left = end.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; read so far:\n{}", self.text)
                })
                .expect("stream body");
            let chunk = chunk.unwrap_or_else(|| panic!("stream ended waiting for {what}"));
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Dispatched events so far (an SSE parser per the spec: comments skipped, `event:` and
    /// `data:` fields, a blank line dispatches).
    fn events(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let (mut event, mut data): (Option<String>, Option<String>) = (None, None);
        let complete = &self.text[..self.text.rfind("\n\n").map_or(0, |i| i + 2)];
        for line in complete.split('\n') {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    out.push((event.take().unwrap_or_else(|| "message".into()), d));
                }
                event = None;
            } else if line.starts_with(':') {
            } else {
                let (f, v) = line
                    .split_once(':')
                    .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                match f {
                    "event" => event = Some(v.to_string()),
                    "data" => data = Some(data.map_or(v.to_string(), |d| d + "\n" + v)),
                    _ => {}
                }
            }
        }
        out
    }
}

fn remote(id: u64, text: &str) -> Value {
    let mut s = make_status(id, text);
    s["account"]["acct"] = json!("someone@elsewhere.example");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastodon_stream_framing() {
    let m = FakeMastodon::start_with(MastodonConfig {
        heartbeat: Duration::from_millis(50),
        token: Some("sekret".into()),
        ..Default::default()
    })
    .await;
    let c = client();

    // Auth: 401 without the token, or with a wrong one.
    let r = c
        .get(format!("{}/api/v1/streaming/public/local", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Missing access token"})
    );
    let r = c
        .get(format!("{}/api/v1/streaming/public/local", m.url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(m.stream_refused(), 2);
    assert_eq!(m.stream_connections(), 0);

    let mut local = Sse::open(
        &c,
        &format!("{}/api/v1/streaming/public/local", m.url()),
        Some("sekret"),
    )
    .await;
    assert!(m.wait_streams(1, Duration::from_secs(2)).await);
    local
        .until("hello and heartbeat", |t| {
            t.starts_with(":)\n") && t.contains(":thump\n")
        })
        .await;

    // update: only local statuses on public:local, exactly `event: update\ndata: <json>\n\n`.
    m.publish(remote(900, "far away"));
    let s = make_status(1001, "hello & <world>\nsecond line");
    m.publish(s.clone());
    local.until("update", |t| t.contains("\n\n")).await;
    let frame = format!(
        "event: update\ndata: {}\n\n",
        serde_json::to_string(&s).unwrap()
    );
    assert!(local.text.contains(&frame), "{}", local.text);
    assert_eq!(
        s["content"],
        "<p>hello &amp; &lt;world&gt;<br>second line</p>"
    );

    let mut e = s.clone();
    e["content"] = json!("<p>hello, edited</p>");
    m.edit(e);
    m.delete("1001");
    m.inject_raw(Some("update"), "{not json");
    m.inject_raw(None, "orphan data");
    m.inject_raw(Some("announcement.reaction"), "{}");
    local
        .until("six events", |t| t.matches("\n\n").count() >= 6)
        .await;
    let ev = local.events();
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "update",
            "status.update",
            "delete",
            "update",
            "message",
            "announcement.reaction"
        ]
    );
    assert_eq!(ev[0].1, serde_json::to_string(&s).unwrap());
    let edited: Value = serde_json::from_str(&ev[1].1).unwrap();
    assert_eq!(edited["id"], "1001");
    assert!(edited["edited_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ev[2].1, "1001");
    assert_eq!(ev[3].1, "{not json");
    assert_eq!(
        m.statuses().len(),
        1,
        "the remote one is left; 1001 was deleted"
    );
    assert_eq!(m.deleted(), ["1001"]);

    // The query form with access_token, a hashtag stream (case-insensitive tag).
    let mut tag = Sse::open(
        &c,
        &format!(
            "{}/api/v1/streaming?stream=hashtag&tag=Rust&access_token=sekret",
            m.url()
        ),
        None,
    )
    .await;
    assert!(m.wait_streams(2, Duration::from_secs(2)).await);
    m.publish(make_status(1002, "no tag"));
    let mut t = make_status(1003, "tagged");
    t["tags"] = json!([{"name": "rust", "url": "https://mastodon.example/tags/rust"}]);
    m.publish(t);
    tag.until("tagged update", |t| t.contains("\n\n")).await;
    let ev = tag.events();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].1.contains("\"id\":\"1003\""));

    // Cut: both bodies fail (not a clean end).
    m.drop_streams();
    for s in [&mut local, &mut tag] {
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.resp.chunk().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(r.is_err(), "a cut stream must fail, got {r:?}");
    }

    // Down: new stream connections are closed unanswered; REST still works.
    m.set_stream_down(true);
    let r = c
        .get(format!("{}/api/v1/streaming/public", m.url()))
        .bearer_auth("sekret")
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(m.rest_requests(), 0);
    let r = c
        .get(format!("{}/api/v1/timelines/public", m.url()))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    m.set_stream_down(false);
    let mut again = Sse::open(
        &c,
        &format!("{}/api/v1/streaming/public", m.url()),
        Some("sekret"),
    )
    .await;
    again.until("hello", |t| t.starts_with(":)\n")).await;
    assert_eq!(m.stream_connections(), 3);
    assert_eq!(m.stream_refused(), 3);
    m.close_streams();
    assert!(tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match again.resp.chunk().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap()
    .unwrap()
    .is_none());
    let log = m.requests();
    assert!(log
        .iter()
        .any(|r| r.stream && r.uri.contains("stream=hashtag") && r.authorization.is_none()));
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The `rel` URLs of a Link header.
fn links(h: &str) -> Vec<(String, String)> {
    h.split(", ")
        .map(|p| {
            let (url, rel) = p.split_once("; ").unwrap();
            (
                rel.trim_start_matches("rel=\"")
                    .trim_end_matches('"')
                    .to_string(),
                url.trim_matches(['<', '>']).to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastodon_timeline_pagination() {
    let m = FakeMastodon::start().await;
    let c = client();
    let fixture = load_fixture();
    assert!(fixture.len() >= 60);
    m.seed(&fixture);
    let is_local = |s: &Value| !s["account"]["acct"].as_str().unwrap().contains('@');
    let public: Vec<String> = fixture
        .iter()
        .filter(|s| s["reblog"].is_null())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let local: Vec<String> = fixture
        .iter()
        .filter(|s| s["reblog"].is_null() && is_local(s))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(local.len() >= 20 && local.len() < public.len());
    let desc: Vec<String> = local.iter().rev().cloned().collect();

    // Walk `next` from the newest page to the end.
    let mut url = format!("{}/api/v1/timelines/public?local=true&limit=7", m.url());
    let mut seen = Vec::new();
    let mut first = true;
    loop {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        let link = r
            .headers()
            .get("link")
            .map(|h| h.to_str().unwrap().to_string());
        let page: Value = r.json().await.unwrap();
        let page_ids = ids(&page);
        if page_ids.is_empty() {
            assert!(link.is_none(), "no Link on an empty page");
            break;
        }
        assert!(page_ids.len() <= 7);
        let link = link.expect("Link header");
        if first {
            assert_eq!(
                link,
                format!(
                    "<{u}/api/v1/timelines/public?limit=7&local=true&max_id={}>; rel=\"next\", <{u}/api/v1/timelines/public?limit=7&local=true&min_id={}>; rel=\"prev\"",
                    page_ids.last().unwrap(),
                    page_ids[0],
                    u = m.url()
                )
            );
            first = false;
        }
        seen.extend(page_ids);
        url = links(&link)
            .into_iter()
            .find(|(rel, _)| rel == "next")
            .unwrap()
            .1;
    }
    assert_eq!(
        seen, desc,
        "newest first, every local public non-reblog status once"
    );

    // min_id: the statuses immediately newer, still newest first; since_id: the newest ones.
    let get = |q: String| {
        let c = c.clone();
        let u = m.url();
        async move {
            c.get(format!("{u}/api/v1/timelines/public?{q}"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let asc = &local;
    let page = get(format!("local=true&min_id={}&limit=5", asc[3])).await;
    assert_eq!(
        ids(&page),
        asc[4..9].iter().rev().cloned().collect::<Vec<_>>()
    );
    let page = get(format!("local=true&since_id={}&limit=5", asc[3])).await;
    assert_eq!(ids(&page), desc[..5].to_vec());
    let page = get(format!(
        "local=true&min_id={}&max_id={}&limit=40",
        asc[3], asc[6]
    ))
    .await;
    assert_eq!(ids(&page), [asc[5].clone(), asc[4].clone()]);
    assert_eq!(ids(&get("".into()).await).len(), 20, "default limit");
    assert_eq!(
        ids(&get("limit=100".into()).await),
        public.iter().rev().take(40).cloned().collect::<Vec<_>>(),
        "max 40, remote included"
    );
    assert!(ids(&get(format!("since_id={}", public.last().unwrap())).await).is_empty());

    // Hashtag timeline; a single status; deleted ones leave both.
    let r = c
        .get(format!("{}/api/v1/timelines/tag/Weather?limit=2", m.url()))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!(
            "<{}/api/v1/timelines/tag/Weather?limit=2&max_id=",
            m.url()
        )),
        "{link}"
    );
    let page: Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert!(page
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["account"]["username"] == "weatherbot"));
    let id = &desc[0];
    let r = c
        .get(format!("{}/api/v1/statuses/{id}", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["id"], json!(id));
    m.delete(id);
    let r = c
        .get(format!("{}/api/v1/statuses/{id}", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Record not found"})
    );
    assert_eq!(
        ids(&get("local=true&limit=1".into()).await),
        [desc[1].clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastodon_rate_limit() {
    let m = FakeMastodon::start().await;
    let c = client();
    m.publish_silently(make_status(5, "x"));
    m.rate_limit_next(2, 7);
    for _ in 0..2 {
        let r = c
            .get(format!("{}/api/v1/timelines/public", m.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["x-ratelimit-limit"], "300");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let reset = h["x-ratelimit-reset"].to_str().unwrap().to_string();
        assert_eq!(reset.len(), "2024-11-21T09:00:00.000000Z".len(), "{reset}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error": "Too many requests"})
        );
    }
    let r = c
        .get(format!("{}/api/v1/timelines/public", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ids(&r.json().await.unwrap()), ["5"]);
    assert_eq!((m.rate_limited(), m.rest_requests()), (2, 3));
}

/// The misbehaviours on demand: bare 429s, stalled requests, a huge body, foreign Links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastodon_misbehaviour() {
    let m = FakeMastodon::start().await;
    let c = client();
    let timeline = format!("{}/api/v1/timelines/public", m.url());
    m.publish_silently(make_status(5, "x"));
    m.rate_limit_bare_next(1);
    let r = c.get(&timeline).send().await.unwrap();
    assert_eq!(r.status(), 429);
    for h in [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(!r.headers().contains_key(h), "{h}");
    }
    assert_eq!(m.rate_limited(), 1);

    m.stall_rest_next(1);
    let stalled = c
        .get(&timeline)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(stalled.is_timeout(), "{stalled}");
    assert_eq!(c.get(&timeline).send().await.unwrap().status(), 200);
    m.stall_streams_next(1);
    let stream = format!("{}/api/v1/streaming/public", m.url());
    let stalled = c
        .get(&stream)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(stalled.is_timeout(), "{stalled}");
    assert_eq!((m.stalled(), m.stream_connections()), (2, 0));
    Sse::open(&c, &stream, None).await;

    m.huge_body_next(1, 3 << 20);
    let r = c.get(&timeline).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.content_length(),
        None,
        "chunked: the size is not announced"
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 3 << 20);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!([]));
    assert_eq!(m.huge_bytes_sent(), 3 << 20);
    let r = c.get(&timeline).send().await.unwrap();
    assert_eq!(
        ids(&r.json().await.unwrap()),
        ["5"],
        "only the next request"
    );

    m.set_link_base(Some("https://elsewhere.example:8443/"));
    let r = c.get(format!("{timeline}?limit=1")).send().await.unwrap();
    let l = links(r.headers()["link"].to_str().unwrap());
    assert_eq!(
        l[1],
        (
            "prev".to_string(),
            "https://elsewhere.example:8443/api/v1/timelines/public?limit=1&min_id=5".to_string()
        )
    );
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_ollama_shapes() {
    let llm = FakeLlm::start(LlmConfig::default()).await;
    let c = client();
    let u = llm.url();
    let tags: Value = c
        .get(format!("{u}/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"].as_array().unwrap().len(), 3);
    assert_eq!(tags["models"][0]["name"], "llama3.2:1b");
    assert_eq!(
        c.get(&u).send().await.unwrap().text().await.unwrap(),
        "Ollama is running"
    );

    let prompt = |text: &str| {
        format!("Classify the sentiment of the post between the tags as positive, negative or neutral.\n<post>\n{text}\n</post>\nAnswer with one word.")
    };
    let (s, v) = post(&c, format!("{u}/api/generate"), json!({"model": "llama3.2:1b", "prompt": prompt("I love this ❤️"), "stream": false, "options": {"temperature": 0}})).await;
    assert_eq!(s, 200);
    assert_eq!(v["response"], "positive");
    assert_eq!(
        (
            v["done"].clone(),
            v["done_reason"].clone(),
            v["model"].clone()
        ),
        (json!(true), json!("stop"), json!("llama3.2:1b"))
    );
    for k in [
        "created_at",
        "total_duration",
        "eval_count",
        "prompt_eval_count",
        "context",
    ] {
        assert!(!v[k].is_null(), "{k} in {v}");
    }
    let (_, v) = post(
        &c,
        format!("{u}/api/chat"),
        json!({"model": "qwen2.5:0.5b", "stream": false, "options": {"temperature": 0.0},
               "messages": [{"role": "system", "content": "You classify sentiment. I love my job."}, {"role": "user", "content": prompt("I hate Mondays")}]}),
    )
    .await;
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "negative"})
    );
    assert_eq!(v["done"], true);

    // Ollama streams by default: NDJSON, the content split over lines, the last one done.
    let r = c.post(format!("{u}/api/chat")).json(&json!({"model": "m", "messages": [{"role": "user", "content": "the weather is mild"}]})).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["message"]["content"].as_str().unwrap())
            .collect::<String>(),
        "neutral"
    );
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));

    // Formats: "json" and a schema (its required key).
    let (_, v) = post(
        &c,
        format!("{u}/api/generate"),
        json!({"model": "m", "prompt": prompt("great stuff"), "stream": false, "format": "json"}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(v["response"].as_str().unwrap()).unwrap(),
        json!({"sentiment": "positive"})
    );
    let schema = json!({"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}}, "required": ["label"]});
    let (_, v) = post(
        &c,
        format!("{u}/api/generate"),
        json!({"model": "m", "prompt": prompt("awful"), "stream": false, "format": schema}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(v["response"].as_str().unwrap()).unwrap(),
        json!({"label": "negative"})
    );

    // Styles.
    llm.set_style(Style::Think);
    let (_, v) = post(
        &c,
        format!("{u}/api/generate"),
        json!({"model": "deepseek-r1:1.5b", "prompt": prompt("so happy"), "stream": false}),
    )
    .await;
    let r = v["response"].as_str().unwrap();
    assert!(
        r.starts_with("<think>\n") && r.ends_with("</think>\n\nPositive"),
        "{r}"
    );
    let (_, v) = post(&c, format!("{u}/api/chat"), json!({"model": "deepseek-r1:1.5b", "think": true, "stream": false, "messages": [{"role": "user", "content": "so happy"}]})).await;
    assert_eq!(v["message"]["content"], "Positive");
    assert!(v["message"]["thinking"]
        .as_str()
        .unwrap()
        .contains("positive"));
    for (style, want) in [
        (Style::Json, "{\"sentiment\":\"neutral\"}"),
        (Style::Sentence, "The sentiment of this post is neutral."),
        (Style::Garbage, "I cannot help with that."),
        (Style::Empty, ""),
    ] {
        llm.set_style(style);
        let (_, v) = post(
            &c,
            format!("{u}/api/generate"),
            json!({"model": "m", "prompt": prompt("a table"), "stream": false}),
        )
        .await;
        assert_eq!(v["response"], want, "{style:?}");
    }
    llm.set_style(Style::Word);
    llm.set_override("poison", Reply::Garbage);
    llm.set_fixed(Some(Reply::Label("neutral".into())));
    let (_, v) = post(
        &c,
        format!("{u}/api/generate"),
        json!({"model": "m", "prompt": prompt("poison: I love it"), "stream": false}),
    )
    .await;
    assert_eq!(v["response"], "I cannot help with that.");
    let (_, v) = post(
        &c,
        format!("{u}/api/generate"),
        json!({"model": "m", "prompt": prompt("I love it"), "stream": false}),
    )
    .await;
    assert_eq!(v["response"], "neutral");

    let rec = llm.received();
    assert_eq!(rec[0].temperature, Some(0.0));
    assert_eq!(rec[0].post, "I love this ❤️");
    assert_eq!(
        rec[1].post, "I hate Mondays",
        "the last user message, not the system one"
    );
    assert_eq!(rec[2].stream, None);
    assert_eq!(rec[3].format, Some(json!("json")));
    assert_eq!(llm.requests("/api/generate"), 10);
    assert_eq!(llm.requests("/api/chat"), 3);
    assert_eq!(llm.requests("/api/tags"), 1);

    // The rule on the fixture: the injection attempt is negative, some of each label.
    let fixture = load_fixture();
    let inj = fixture
        .iter()
        .find(|s| {
            s["content"]
                .as_str()
                .unwrap()
                .contains("Ignore previous instructions")
        })
        .unwrap();
    assert_eq!(rule_label(inj["content"].as_str().unwrap()), "negative");
    for l in ["positive", "negative", "neutral"] {
        assert!(
            fixture
                .iter()
                .filter(|s| rule_label(s["content"].as_str().unwrap()) == l)
                .count()
                >= 10,
            "{l}"
        );
    }
    assert_eq!(rule_label("whatever, a glove"), "neutral");
    assert_eq!(extract_post("a <<<b>>> c"), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_openai_shapes() {
    let llm = FakeLlm::start(LlmConfig {
        api_key: Some("sk-test".into()),
        ..Default::default()
    })
    .await;
    let c = client();
    let u = llm.url();
    let body = json!({"model": "llama3.2:1b", "temperature": 0, "messages": [
        {"role": "system", "content": "Reply with positive, negative or neutral."},
        {"role": "user", "content": [{"type": "text", "text": "Post:\n\"\"\"\nwhat a wonderful day 😀\n\"\"\""}]}]});
    let r = c
        .post(format!("{u}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    let v: Value = c
        .post(format!("{u}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].is_u64());
    assert_eq!(
        v["choices"][0],
        json!({"index": 0, "message": {"role": "assistant", "content": "positive"}, "finish_reason": "stop"})
    );
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(llm.received()[0].post, "what a wonderful day 😀");
    assert_eq!(llm.received()[0].temperature, Some(0.0));

    let mut b = body.clone();
    b["response_format"] = json!({"type": "json_object"});
    let v: Value = c
        .post(format!("{u}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&b)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "{\"sentiment\":\"positive\"}"
    );

    b["stream"] = json!(true);
    b["response_format"] = json!({"type": "text"});
    let r = c
        .post(format!("{u}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        chunks
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect::<String>(),
        "positive"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));

    let models: Value = c
        .get(format!("{u}/v1/models"))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][2]["id"], "deepseek-r1:1.5b");
    assert_eq!(llm.requests("/v1/chat/completions"), 4);
}

async fn gen(c: &reqwest::Client, u: &str, text: &str) -> Result<(u16, Value), reqwest::Error> {
    let r = c
        .post(format!("{u}/api/generate"))
        .json(&json!({"model": "m", "prompt": text, "stream": false}))
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_faults() {
    let llm = FakeLlm::start(LlmConfig {
        concurrency: 1,
        latency: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let c = client();
    let u = llm.url();

    // A serial server: four at once take four latencies, one at a time.
    let t = Instant::now();
    let rs = futures_util::future::join_all(
        (0..4).map(|i| gen(&c, &u, if i % 2 == 0 { "love" } else { "hate" })),
    )
    .await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(rs.iter().all(|r| r.as_ref().unwrap().0 == 200));
    assert_eq!((llm.max_active(), llm.max_concurrent()), (1, 4));
    llm.set_concurrency(0);
    let t = Instant::now();
    futures_util::future::join_all((0..4).map(|_| gen(&c, &u, "x"))).await;
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    assert!(llm.max_active() >= 2);
    llm.set_latency(Duration::ZERO);

    // Every 3rd generation request fails (counted from the start: 8 so far).
    llm.set_error_every(3);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (s, v) = gen(&c, &u, "x").await.unwrap();
        if s == 500 {
            assert!(v["error"].as_str().unwrap().contains("llama runner"), "{v}");
        }
        codes.push(s);
    }
    assert_eq!(codes, [500, 200, 200, 500]);
    assert_eq!(llm.errors(), 2);
    llm.set_error_every(0);

    // A seeded error rate: the same seed, the same pattern.
    let mut runs = Vec::new();
    for _ in 0..2 {
        llm.set_error_rate(0.5, 7);
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(gen(&c, &u, "x").await.unwrap().0);
        }
        runs.push(v);
    }
    assert_eq!(runs[0], runs[1]);
    let fails = runs[0].iter().filter(|s| **s == 500).count();
    assert!((3..=17).contains(&fails), "{fails}");
    llm.set_error_rate(0.0, 0);

    // fail_next, a per-text error, a hang (then released).
    llm.fail_next(1);
    assert_eq!(gen(&c, &u, "x").await.unwrap().0, 500);
    llm.set_override("overloaded", Reply::Error(503, "server busy".into()));
    assert_eq!(
        gen(&c, &u, "overloaded").await.unwrap(),
        (503, json!({"error": "server busy"}))
    );
    llm.hang_next(1);
    let r = tokio::time::timeout(Duration::from_millis(300), gen(&c, &u, "x")).await;
    assert!(r.is_err(), "hung");
    assert_eq!(llm.hangs(), 1);
    assert_eq!(gen(&c, &u, "x").await.unwrap().0, 200);
    let h = llm.handle();
    llm.hang_next(1);
    let hung = tokio::spawn({
        let (c, u) = (c.clone(), u.clone());
        async move { gen(&c, &u, "x").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.release_hangs();
    assert!(
        hung.await.unwrap().is_err(),
        "a released hang closes its connection"
    );

    // Down: connections closed, then refused; up again on the same port.
    llm.set_down(true);
    assert!(gen(&c, &u, "x").await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = gen(&c, &u, "x").await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    llm.set_down(false);
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        match gen(&c, &u, "love").await {
            Ok((200, v)) => {
                assert_eq!(v["response"], "positive");
                break;
            }
            r => assert!(Instant::now() < end, "not back up: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
