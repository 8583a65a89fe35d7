//! The HTTP listener: `/health` (the process answers), `/ready` (every pipeline's actors
//! run), `/status` (JSON: the actor tree, counters, queues, lag), `/metrics` (OpenMetrics
//! text for Prometheus) and `/` (a status page that renders `/status` and refreshes itself).
//!
//! Connections are capped ([`MAX_CONNECTIONS`]; more are closed at once) and a client gets
//! [`HEADER_TIMEOUT`] to send a request's headers, so idle or slow clients cannot take the
//! file descriptors the pipelines' connections need; an accept error (out of descriptors)
//! backs off instead of spinning.
//!
//! Must never: block on a pipeline (every answer reads shared state only), serve on an
//! address the config did not name, or compare the admin token in time that depends on it.

use crate::ops::metrics::{render_metrics, Observed};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers (an idle keep-alive connection included).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `listen` (done before any pipeline starts, so a taken port fails the start).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen `{listen}`: {e}"))
}

/// Serves on `listener` until the task is aborted. Returns the bound address (useful with
/// port 0).
pub fn serve(
    listener: tokio::net::TcpListener,
    observed: Observed,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut refused_logged = false;
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // EMFILE and the like: retrying at once would spin a core.
                    tracing::warn!(error = %e, "http listener: accept failed; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if !refused_logged {
                    refused_logged = true;
                    tracing::warn!(
                        max = MAX_CONNECTIONS,
                        "http listener: too many connections; closing new ones"
                    );
                }
                drop(sock);
                continue;
            };
            let o = observed.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req| {
                    let o = o.clone();
                    async move {
                        let r = if req.uri().path().starts_with("/admin/") {
                            admin(&o, req).await
                        } else {
                            route(&o, req)
                        };
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(o: &Observed, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/ready" => {
            let s = o.status();
            if s.ready && s.standby {
                reply(StatusCode::OK, "text/plain", "ready (standby)\n")
            } else if s.ready {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/status" => match serde_json::to_vec_pretty(&o.status()) {
            Ok(b) => reply(StatusCode::OK, "application/json", b),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_metrics(o),
        ),
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `/admin/actors` (GET: the tree), `/admin/kill?actor=PATH` and `/admin/stop?actor=PATH`
/// (POST), `/admin/resync?table=SCHEMA.TABLE[&pipeline=NAME]` (POST: copy the table over what
/// ClickHouse has while it streams, then delete the rows Postgres no longer has),
/// `/admin/repair?table=…[&pipeline=…]` (POST, a JSON body of keys: the same for those keys
/// alone, answered once done; what `tributary verify --repair` sends): off unless
/// `[admin]` is enabled, and always behind its bearer token.
async fn admin(o: &Observed, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(a) = &o.admin else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    };
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if a.token.is_empty() || !token.is_some_and(|t| same_secret(t, a.token.expose())) {
        return reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "a valid bearer token is required\n",
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let query = query.as_str();
    let actor = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("actor="))
        .map(percent_decode);
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    match (method.as_str(), path.as_str()) {
        ("GET", "/admin/actors") => match serde_json::to_vec_pretty(&o.registry.actors()) {
            Ok(b) => reply(StatusCode::OK, "application/json", b),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        ("POST", path @ ("/admin/kill" | "/admin/stop")) => {
            let Some(actor) = actor else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "actor=PATH is required\n",
                );
            };
            let Some(cell) = crate::runtime::supervisor::find_actor(&a.root, &actor).await else {
                return reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no running actor `{actor}`\n"),
                );
            };
            let kind = if path == "/admin/kill" {
                "kill"
            } else {
                "stop"
            };
            tracing::warn!(actor = %actor, kind, "fault injected through the admin API");
            o.registry.fault_injected(kind);
            if kind == "kill" {
                cell.kill();
            } else {
                cell.stop(Some("admin".into()));
            }
            reply(StatusCode::OK, "text/plain", format!("{kind} {actor}\n"))
        }
        ("POST", path @ ("/admin/resync" | "/admin/repair")) => {
            let repair = if path == "/admin/repair" {
                match repair_body(req).await {
                    Ok(r) => Some(r),
                    Err(e) => return reply(StatusCode::BAD_REQUEST, "text/plain", e),
                }
            } else {
                None
            };
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(percent_decode)
            };
            let Some(table) = param("table") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "table=SCHEMA.TABLE is required\n",
                );
            };
            let pipeline = param("pipeline");
            let mut why = Vec::new();
            for (name, h) in &o.pipelines {
                let crate::pipelines::PipelineHandles::Cdc(h) = h else {
                    continue;
                };
                if pipeline.as_ref().is_some_and(|p| p != name) {
                    continue;
                }
                let asked = match &repair {
                    Some(r) => {
                        crate::cdc::backfill::request_repair(
                            &h.resync,
                            &table,
                            r.keys.clone(),
                            r.purge.clone(),
                        )
                        .await
                    }
                    None => crate::cdc::backfill::request_resync(&h.resync, &table).await,
                };
                match asked {
                    Ok(done) => {
                        let what = if repair.is_some() { "repair" } else { "resync" };
                        tracing::info!(pipeline = %name, table = %table, what, "requested through the admin API");
                        return reply(
                            if repair.is_some() {
                                StatusCode::OK
                            } else {
                                StatusCode::ACCEPTED
                            },
                            "text/plain",
                            format!("{name}: {done}\n"),
                        );
                    }
                    Err(e) => why.push(format!("{name}: {e}")),
                }
            }
            if why.is_empty() {
                why.push("no cdc pipeline with a Postgres source matches".into());
            }
            reply(
                StatusCode::CONFLICT,
                "text/plain",
                format!("{}\n", why.join("\n")),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// What `/admin/repair` takes: `{"keys": [[key values…]…], "purge": ["canonical key text"…]}`
/// (see `cdc::backfill::Repair`).
#[derive(serde::Deserialize)]
struct RepairBody {
    keys: Vec<Vec<String>>,
    purge: Vec<String>,
}

/// A repair's body, at most `REPAIR_BODY_MAX` bytes.
async fn repair_body(req: Request<Incoming>) -> Result<RepairBody, String> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(req.into_body(), REPAIR_BODY_MAX)
        .collect()
        .await
        .map_err(|e| format!("the body could not be read: {e}\n"))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| format!("the body must be {{\"keys\": [[…]], \"purge\": […]}}: {e}\n"))
}

/// The largest repair body taken.
const REPAIR_BODY_MAX: usize = 16 << 20;

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status page: renders `/status` every two seconds (no external assets).
const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tributary</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.running{color:#080}.restarting,.starting{color:#b60}.failed,.stopped{color:#c00}
#ready.yes{color:#080}#ready.no{color:#c00}small{color:#666}
</style></head><body>
<h1>tributary <small id="version"></small></h1>
<p>Ready: <b id="ready">…</b> · uptime <span id="uptime"></span> s · <small>refreshes every 2 s · <a href="/metrics">/metrics</a> · <a href="/status">/status</a></small></p>
<div id="pipelines"></div>
<h2>Actors</h2>
<table id="actors"><thead><tr><th>actor</th><th>state</th><th>restarts</th><th>last error</th></tr></thead><tbody></tbody></table>
<script>
function esc(s){return String(s==null?"":s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
async function refresh(){
  try{
    const s=await (await fetch("/status")).json();
    document.getElementById("version").textContent="v"+s.version;
    const r=document.getElementById("ready");r.textContent=s.ready?"yes":"no";r.className=s.ready?"yes":"no";
    document.getElementById("uptime").textContent=s.uptime_s;
    let h="";
    for(const p of s.pipelines){
      h+=`<h2>Pipeline ${esc(p.name)} <small>(${esc(p.kind)}, <span class="role">${esc(p.role)}</span>)</small></h2><table><tr><th>rows read</th><th>rows written</th><th>batches</th><th>insert retries</th><th>snapshot rows</th><th>lag p50 / p99 (ms)</th><th>confirmed LSN</th></tr>`+
         `<tr class="counters"><td>${p.rows_read}</td><td class="written">${p.rows_written}</td><td>${p.batches_written}</td><td>${p.insert_retries}</td><td>${p.snapshot_rows}</td><td>${p.lag_p50_ms??"–"} / ${p.lag_p99_ms??"–"}</td><td>${esc(p.confirmed_lsn??"–")}</td></tr></table>`;
      h+=`<table><tr><th>queue</th><th>depth</th><th>capacity</th></tr>`+p.queues.map(q=>`<tr><td>${esc(q.name)}</td><td>${q.depth}</td><td>${q.capacity}</td></tr>`).join("")+`</table>`;
      if(p.copies&&p.copies.length){const left=p.copies.filter(c=>c.state!=="done");h+=`<table class="copies"><tr><th>copy</th><th>state</th><th>progress</th><th>rows</th><th>rows/s</th><th>ETA (s)</th></tr>`+left.map(c=>{const pct=c.rows_estimated?Math.min(100,Math.round(100*c.rows_copied/c.rows_estimated)):0;return `<tr><td>${esc(c.table)}${c.resumed?" (resumed)":""}</td><td>${esc(c.state)}</td><td><progress max="100" value="${pct}"></progress> ${c.rows_estimated?pct+" %":""}</td><td>${c.rows_copied} / ~${c.rows_estimated||"?"}</td><td>${c.rows_per_s}</td><td>${c.eta_s??"–"}</td></tr>`}).join("")+`<tr><td colspan="6">${p.copies.length-left.length} of ${p.copies.length} copied</td></tr></table>`;}
      if(p.stopped_tables&&p.stopped_tables.length){h+=`<table class="stopped"><tr><th>stopped table</th><th>why</th><th>changes skipped</th></tr>`+p.stopped_tables.map(t=>`<tr><td class="failed">${esc(t.table)}</td><td>${esc(t.reason)}</td><td>${t.rows_skipped}</td></tr>`).join("")+`</table>`;}
      if(p.llm){const l=p.llm;h+=`<table><tr><th>LLM requests</th><th>errors</th><th>unknown</th><th>circuit</th><th>limit</th><th>in flight</th></tr><tr><td>${l.requests}</td><td>${l.errors}</td><td>${l.unknown}</td><td>${l.circuit_open?"open":"closed"}</td><td>${l.concurrency_limit}</td><td>${l.in_flight}</td></tr></table>`;}
    }
    const v=s.verify;
    if(v){const ago=v.last_run?Math.round(Date.now()/1000-v.last_run)+" s ago":"not yet";
      h+=`<h2 id="verify">Verify <small>(every ${v.interval_s} s · last ${ago}${v.last_run?", took "+v.duration_s.toFixed(1)+" s":""})</small></h2>`;
      if(v.error)h+=`<p class="failed">last run failed: ${esc(v.error)}</p>`;
      for(const k of v.skipped)h+=`<p><small>left alone: ${esc(k)}</small></p>`;
      if(v.tables.length)h+=`<table class="verified"><tr><th>table</th><th>pipeline</th><th>Postgres rows</th><th>ClickHouse rows</th><th>result</th><th>keys that differ</th></tr>`+v.tables.map(t=>`<tr><td>${esc(t.table)}</td><td>${esc(t.pipeline)}</td><td>${t.postgres_rows}</td><td>${t.clickhouse_rows}</td><td class="${t.equal?"running":"failed"}">${t.equal?"equal":(t.note&&!t.differences?"not compared":t.differences+(t.truncated?"+":"")+" differ")}</td><td>${esc(t.keys.join(", "))}${t.note?" <small>"+esc(t.note)+"</small>":""}</td></tr>`).join("")+`</table>`;}
    document.getElementById("pipelines").innerHTML=h;
    document.querySelector("#actors tbody").innerHTML=Object.entries(s.actors).map(([a,x])=>
      `<tr data-actor="${esc(a)}"><td>${esc(a)}</td><td class="${esc(x.state)}">${esc(x.state)}</td><td class="restarts">${x.restarts}</td><td>${esc(x.last_error??"")}</td></tr>`).join("");
  }catch(e){document.getElementById("ready").textContent="unreachable";}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"##;

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("a-long-admin-token", "a-long-admin-token"));
        assert!(!same_secret("a-long-admin-token", "a-long-admin-tokeN"));
        assert!(!same_secret("short", "a-long-admin-token"));
        assert!(!same_secret("", "x"));
    }
}
