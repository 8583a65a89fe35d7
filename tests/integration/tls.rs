//! TLS against the real servers, with certificates made at test time by scripts/services.sh
//! (a CA, a server certificate for 127.0.0.1 and localhost, a client certificate for the
//! `tributary_cert` user, an unrelated CA): CDC with `verify-full` for a client-certificate
//! user and a SCRAM user (with channel binding), ClickHouse 18.16 over HTTPS with our CA for
//! the CDC and sentiment sinks, every refusal named and final, passwords never sent in the
//! clear, and the chaos proxies carrying TLS unchanged.

use crate::common::*;
use std::path::PathBuf;
use std::time::Duration;
use tributary::clients::clickhouse::ChClient;
use tributary::clients::postgres::replication::ReplicationConn;
use tributary::clients::postgres::{catalog, PgError, PgParams};
use tributary::config::{Config, SslMode};
use tributary::runtime::fault::ErrorClass;
use tributary_testkit::proxy;

const T: Duration = Duration::from_secs(60);

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(var("TRIBUTARY_TEST_TLS_DIR")).join(name)
}

/// A CDC config for `w` whose Postgres is reached as `user` with `sslmode`, trusting the
/// test CA, and whose ClickHouse is 18.16 over HTTPS with the test CA.
fn tls_config(w: &World, tables: &[&str], user: &str, sslmode: SslMode) -> Config {
    let mut cfg = w.config(tables);
    let p = &mut cfg.pipelines[0];
    let pg = p.postgres.as_mut().unwrap();
    pg.user = user.into();
    pg.sslmode = sslmode;
    pg.sslrootcert = Some(tls_file("ca.pem"));
    if user == "tributary_cert" {
        pg.password = Default::default();
        pg.sslcert = Some(tls_file("client.pem"));
        pg.sslkey = Some(tls_file("client.key"));
    }
    p.clickhouse.url = var("TRIBUTARY_TEST_CH18_HTTPS_URL");
    p.clickhouse.ca_cert = Some(tls_file("ca.pem"));
    cfg.validate_for_tests().expect("a valid TLS config");
    cfg
}

fn params(cfg: &Config) -> PgParams {
    PgParams::from_config(cfg.pipelines[0].postgres.as_ref().unwrap())
}

/// The TLS of the walsender serving `slot` (as the server sees it): (ssl, version).
async fn server_side_tls(c: &tokio_postgres::Client, slot: &str) -> (bool, String) {
    let r = c
        .query_one(
            "SELECT s.ssl, coalesce(s.version, '') FROM pg_stat_ssl s \
             JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Snapshot and stream over TLS on both sides: 200 rows copied, then inserts, updates and
/// deletes streamed; ClickHouse FINAL equals Postgres; the server saw TLS 1.3.
async fn replicate_over_tls(user: &str) {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("tls");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text, n numeric);
         INSERT INTO {t} SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, 200) g;"
    ))
    .await
    .unwrap();
    let cfg = tls_config(&w, &[&format!("public.{t}")], user, SslMode::VerifyFull);
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v, n", "id", T).await;
    wait_streaming(&c, &w.slot).await;
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, 'late' || g, g FROM generate_series(201, 300) g;
         UPDATE {t} SET v = 'upd' WHERE id % 7 = 0; DELETE FROM {t} WHERE id % 11 = 0;"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, v, n", "id", T).await;
    let (ssl, version) = server_side_tls(&c, &w.slot).await;
    assert!(ssl, "the walsender's connection is TLS");
    assert_eq!(version, "TLSv1.3");
    run.stop().await;
    w.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_over_verify_full_with_a_client_certificate() {
    replicate_over_tls("tributary_cert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_over_verify_full_with_scram() {
    replicate_over_tls("tributary_tls").await;
}

/// `tributary check` tells, per connection, the TLS version, the server's certificate and
/// its expiry, whether it was verified, and how we logged in (SCRAM with channel binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_describes_each_connection() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("tlscheck");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let cfg = tls_config(
        &w,
        &[&format!("public.{t}")],
        "tributary_tls",
        SslMode::VerifyFull,
    );
    let out = tributary::check::run(&cfg).await.expect("check passes");
    for needle in [
        "catalog connection: tls: TLS 1.3",
        "replication connection: tls: TLS 1.3",
        "certificate CN=localhost, expires 20",
        "verified: chain and host name",
        "authenticated by SCRAM-SHA-256-PLUS",
    ] {
        assert!(out.contains(needle), "`{needle}` in:\n{out}");
    }
    // The ClickHouse line says the same of HTTPS.
    let ch_line = out
        .lines()
        .skip_while(|l| !l.contains("clickhouse https://"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        ch_line.contains("tls: TLS 1.3") && ch_line.contains("verified: chain and host name"),
        "{out}"
    );
    // verify-ca: the chain only; require: nothing.
    let mut ca = cfg.clone();
    ca.pipelines[0].postgres.as_mut().unwrap().sslmode = SslMode::VerifyCa;
    let out = tributary::check::run(&ca).await.unwrap();
    assert!(out.contains("verified: chain (not the host name)"), "{out}");
    let mut req = cfg.clone();
    let pg = req.pipelines[0].postgres.as_mut().unwrap();
    pg.sslmode = SslMode::Require;
    pg.sslrootcert = None;
    let out = tributary::check::run(&req).await.unwrap();
    assert!(
        out.contains("tls: TLS 1.3") && out.contains("not verified"),
        "{out}"
    );
    w.teardown().await;
}

/// What the error of a connection attempt says, both kinds of connection (catalog first).
async fn both_refuse(p: &PgParams) -> (PgError, PgError) {
    let a = catalog::connect(p)
        .await
        .expect_err("the catalog connection is refused");
    let b = ReplicationConn::connect(p)
        .await
        .err()
        .expect("the replication connection is refused");
    (a, b)
}

/// A wrong CA, a wrong host name and `sslmode = disable` against a TLS-only user each fail
/// with an error that names the server and the cause, classed permanent (no restart loop);
/// a pipeline with a wrong CA stops at once with that one error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals_are_named_and_final() {
    let w = World::new(Target::Ch18).await;
    let t = unique("tlsbad");
    pg().await
        .batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let good = tls_config(
        &w,
        &[&format!("public.{t}")],
        "tributary_tls",
        SslMode::VerifyFull,
    );

    let mut wrong_ca = params(&good);
    wrong_ca.sslrootcert = Some(tls_file("other-ca.pem"));
    for e in <[PgError; 2]>::from(both_refuse(&wrong_ca).await) {
        let m = e.to_string();
        assert!(
            m.contains("127.0.0.1") && m.contains("unknown issuer"),
            "{m}"
        );
        assert_eq!(e.class(), ErrorClass::Permanent, "{m}");
    }

    // No sslrootcert: the system's roots, which do not hold the test CA.
    let mut system = params(&good);
    system.sslrootcert = None;
    for e in <[PgError; 2]>::from(both_refuse(&system).await) {
        let m = e.to_string();
        assert!(m.contains("unknown issuer"), "{m}");
    }

    let mut wrong_name = params(&good);
    wrong_name.host = "db.wrong.example".into();
    wrong_name.hostaddr = Some("127.0.0.1".into());
    for e in <[PgError; 2]>::from(both_refuse(&wrong_name).await) {
        let m = e.to_string();
        assert!(
            m.contains("db.wrong.example") && m.contains("name mismatch"),
            "{m}"
        );
        assert_eq!(e.class(), ErrorClass::Permanent, "{m}");
    }
    // verify-ca accepts the same certificate under another name.
    wrong_name.sslmode = SslMode::VerifyCa;
    catalog::connect(&wrong_name)
        .await
        .expect("verify-ca ignores the name");

    let mut plain = params(&good);
    plain.sslmode = SslMode::Disable;
    for e in <[PgError; 2]>::from(both_refuse(&plain).await) {
        let m = e.to_string();
        assert!(
            m.contains("no encryption") && m.contains("127.0.0.1"),
            "{m}"
        );
        assert_eq!(e.class(), ErrorClass::Permanent, "{m}");
    }

    // A wrong CA for ClickHouse: named, permanent.
    let mut ch = good.pipelines[0].clickhouse.clone();
    ch.ca_cert = Some(tls_file("other-ca.pem"));
    let e = ChClient::connect(&ch).await.err().expect("refused");
    let m = e.to_string();
    assert!(
        m.contains("127.0.0.1") && m.contains("unknown issuer"),
        "{m}"
    );
    assert_eq!(e.class(), ErrorClass::Permanent, "{m}");

    // The whole pipeline with a wrong Postgres CA: one error, no restart.
    let mut cfg = good.clone();
    cfg.pipelines[0].postgres.as_mut().unwrap().sslrootcert = Some(tls_file("other-ca.pem"));
    cfg.supervision.max_restarts = 50;
    let err = stops_at_once(&cfg).await;
    assert!(
        err.contains("a restart cannot cure") && err.contains("unknown issuer"),
        "{err}"
    );
    w.teardown().await;
}

/// A server that asks for a cleartext (or MD5) password over plain TCP does not get it, on
/// either kind of connection; it does over TLS, or when the config allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_not_sent_in_the_clear() {
    let w = World::new(Target::Ch18).await;
    let good = tls_config(&w, &[], "tributary_clear", SslMode::Require);
    for (user, method) in [("tributary_clear", "cleartext"), ("tributary_md5", "MD5")] {
        let mut p = params(&good);
        p.user = user.into();
        p.password = tributary::config::Secret::new("tributary");
        p.sslmode = SslMode::Disable;
        for e in <[PgError; 2]>::from(both_refuse(&p).await) {
            let m = e.to_string();
            assert!(
                matches!(e, PgError::InsecurePassword { .. })
                    && m.contains(method)
                    && m.contains("not sent"),
                "{m}"
            );
            assert_eq!(e.class(), ErrorClass::Permanent);
            assert!(!m.contains("tributary\""), "{m}");
        }
        // Over TLS the same server gets it.
        p.sslmode = SslMode::Require;
        catalog::connect(&p).await.expect("over TLS");
        let r = ReplicationConn::connect(&p).await.expect("over TLS");
        assert!(r.tls.is_some());
        r.close().await;
        // Without TLS, only when allowed.
        p.sslmode = SslMode::Disable;
        p.allow_insecure_password = true;
        catalog::connect(&p).await.expect("allowed");
        let r = ReplicationConn::connect(&p).await.expect("allowed");
        assert!(r.tls.is_none());
        r.close().await;
    }
    // SCRAM over plain TCP is fine: nothing a listener can use.
    let mut p = params(&good);
    p.user = var("TRIBUTARY_TEST_PG_USER");
    p.password = tributary::config::Secret::new(var("TRIBUTARY_TEST_PG_PASSWORD"));
    p.sslmode = SslMode::Disable;
    catalog::connect(&p).await.expect("scram without TLS");
    let _ = w;
}

/// The sentiment sink writes over HTTPS with the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentiment_sink_over_https() {
    let w = World::new(Target::Ch18).await;
    let llm = tributary_testkit::fake_llm::FakeLlm::start(Default::default()).await;
    let mut cfg = sentiment_config(&w, "http://127.0.0.1:9", &llm.url(), "openai", "fake");
    let fixture = repo().join("tests/fixtures/statuses.jsonl");
    let want: std::collections::BTreeSet<String> = std::fs::read_to_string(&fixture)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|s| s["reblog"].is_null())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    use_replay(&mut cfg, fixture);
    cfg.pipelines[0].clickhouse.url = var("TRIBUTARY_TEST_CH18_HTTPS_URL");
    cfg.pipelines[0].clickhouse.ca_cert = Some(tls_file("ca.pem"));
    let run = Running::start(&cfg).await;
    eventually(T, "every post over HTTPS", || async {
        let got: std::collections::BTreeSet<String> =
            sentiment_rows(&w).await?.into_iter().map(|r| r.0).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{} of {} rows", got.len(), want.len()))
        }
    })
    .await;
    run.stop().await;
}

/// The chaos proxies carry TLS unchanged: a pipeline through proxies on both sides with
/// verify-full converges, keeps converging after every connection is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_carry_tls() {
    let w = World::new(Target::Ch18).await;
    let pg_proxy =
        proxy::Proxy::start(&format!("127.0.0.1:{}", var("TRIBUTARY_TEST_PG_PORT"))).await;
    let ch_proxy =
        proxy::Proxy::start(var("TRIBUTARY_TEST_CH18_HTTPS_URL").trim_start_matches("https://"))
            .await;
    let c = pg().await;
    let t = unique("tlsproxy");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 100) g;"
    ))
    .await
    .unwrap();
    let mut cfg = tls_config(
        &w,
        &[&format!("public.{t}")],
        "tributary_cert",
        SslMode::VerifyFull,
    );
    cfg.pipelines[0].postgres.as_mut().unwrap().port = pg_proxy.port;
    cfg.pipelines[0].clickhouse.url = format!("https://{}", ch_proxy.addr());
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    wait_streaming(&c, &w.slot).await;
    pg_proxy.cut_all();
    ch_proxy.cut_all();
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, 'after' || g FROM generate_series(101, 200) g; UPDATE {t} SET v = 'u' WHERE id < 10"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    assert!(pg_proxy.accepted() >= 2 && ch_proxy.accepted() >= 1);
    run.stop().await;
    w.teardown().await;
}

/// `channel_binding = require`: a SCRAM login over TLS binds (both connections); a login
/// that cannot bind (a client certificate, SCRAM without TLS) is refused by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_required() {
    use tributary::config::ChannelBinding;
    let w = World::new(Target::Ch18).await;
    let good = tls_config(&w, &[], "tributary_tls", SslMode::VerifyFull);
    let mut p = params(&good);
    p.channel_binding = ChannelBinding::Require;
    catalog::connect(&p).await.expect("SCRAM-PLUS over TLS");
    let r = ReplicationConn::connect(&p)
        .await
        .expect("SCRAM-PLUS over TLS");
    assert_eq!(r.auth, "SCRAM-SHA-256-PLUS");
    r.close().await;

    let mut cert = params(&tls_config(&w, &[], "tributary_cert", SslMode::VerifyFull));
    cert.channel_binding = ChannelBinding::Require;
    let (a, b) = both_refuse(&cert).await;
    assert!(a.to_string().contains("channel binding"), "{a}");
    assert!(
        b.to_string().contains("channel binding") || b.to_string().contains("channel_binding"),
        "{b}"
    );

    let mut plain = params(&good);
    plain.user = var("TRIBUTARY_TEST_PG_USER");
    plain.sslmode = SslMode::Disable;
    plain.sslrootcert = None;
    plain.channel_binding = ChannelBinding::Require;
    let (a, b) = both_refuse(&plain).await;
    assert!(a.to_string().contains("channel binding"), "{a}");
    assert!(b.to_string().contains("needs TLS"), "{b}");
}

/// A console's connection string in `postgres.url` and the password in a file: loaded as
/// a file is (`Config::load` reads the secret file), then `check` logs in with them over
/// verify-full; a wrong password in the file is refused without showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_and_password_file() {
    let w = World::new(Target::Ch18).await;
    let t = unique("tlsurl");
    pg().await
        .batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let dir = repo().join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join(format!("{t}.password"));
    let config = dir.join(format!("{t}.toml"));
    let write = |password: &str| {
        std::fs::write(&secret, format!("{password}\n")).unwrap();
        std::fs::write(
            &config,
            format!(
                r#"[http]
listen = ""

[[pipeline]]
name = "{t}"

[pipeline.postgres]
url = "postgresql://tributary_tls@127.0.0.1:{port}/tributary?sslmode=verify-full&sslrootcert={ca}"
password_file = "{secret}"
publication = "{publication}"
slot = "{slot}"
tables = ["public.{t}"]

[pipeline.clickhouse]
url = "{https}"
ca_cert = "{ca}"
database = "{db}"
"#,
                port = var("TRIBUTARY_TEST_PG_PORT"),
                ca = tls_file("ca.pem").display(),
                secret = secret.display(),
                publication = w.publication,
                slot = w.slot,
                https = var("TRIBUTARY_TEST_CH18_HTTPS_URL"),
                db = w.database,
            ),
        )
        .unwrap();
        Config::load(&config).expect("the config loads")
    };
    let out = tributary::check::run(&write("tributary"))
        .await
        .expect("check passes");
    assert!(
        out.contains("authenticated by SCRAM-SHA-256-PLUS")
            && out.contains("verified: chain and host name"),
        "{out}"
    );
    let err = tributary::check::run(&write("wrong-Secret-42"))
        .await
        .expect_err("a wrong password is refused");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-Secret-42"), "{err}");
    let _ = std::fs::remove_file(&secret);
    let _ = std::fs::remove_file(&config);
}

/// SNI: the name in `host` goes out in the ClientHello (providers such as Neon route by it),
/// also when `hostaddr` says where to connect. A listener that speaks the start of the
/// PostgreSQL protocol (accepts the SSLRequest) reads what the real client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_name_is_sent_as_sni() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = [0u8; 8];
        s.read_exact(&mut req).await.unwrap();
        assert_eq!(
            req,
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            "an SSLRequest first"
        );
        s.write_all(b"S").await.unwrap();
        let mut hello = vec![0u8; 4096];
        let n = s.read(&mut hello).await.unwrap();
        hello.truncate(n);
        hello
    });
    let w = World::new(Target::Ch18).await;
    let mut p = params(&tls_config(&w, &[], "tributary_tls", SslMode::VerifyFull));
    p.host = "ep-cool-name-123.eu-central-1.aws.neon.tech".into();
    p.hostaddr = Some("127.0.0.1".into());
    p.port = port;
    p.connect_timeout = Duration::from_secs(2);
    let _ = ReplicationConn::connect(&p).await; // the listener never completes the handshake
    let hello = server.await.unwrap();
    assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
    assert!(
        hello.windows(p.host.len()).any(|x| x == p.host.as_bytes()),
        "the ClientHello names the host"
    );
}

/// A ClickHouse behind a TLS front that requires a client certificate of the test CA (as an
/// nginx or a load balancer would): with `client_cert`/`client_key` the sink writes through it;
/// without, the handshake is refused, and the error says so, permanently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_with_a_client_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    tributary::clients::tls::install_default_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls_file("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls_file("server.key")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls_file("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = Target::Ch18.url().trim_start_matches("http://").to_string();
    let front = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ch) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut ch).await;
            });
        }
    });
    let w = World::new(Target::Ch18).await;
    let mut ch = w.config(&[]).pipelines[0].clickhouse.clone();
    ch.url = format!("https://127.0.0.1:{port}");
    ch.ca_cert = Some(tls_file("ca.pem"));
    let e = ChClient::connect(&ch)
        .await
        .err()
        .expect("no client certificate: refused");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    // What makes that permanent whichever way the refusal reaches the HTTP client (as the
    // server's alert, or as a connection closed before the request): TLS asked alone.
    use tributary::clients::tls;
    let no_cert = |client_cert| {
        std::sync::Arc::new(
            tls::client_config(&tls::TlsSettings {
                verify: tls::Verify::Full,
                roots: Some(tls_file("ca.pem")),
                client_cert,
            })
            .unwrap(),
        )
    };
    let why = tls::refused("127.0.0.1", port, no_cert(None))
        .await
        .expect("refused without a client certificate");
    assert!(why.contains("127.0.0.1"), "{why}");
    let with_cert = Some((tls_file("client.pem"), tls_file("client.key")));
    assert_eq!(
        tls::refused("127.0.0.1", port, no_cert(with_cert)).await,
        None
    );
    ch.client_cert = Some(tls_file("client.pem"));
    ch.client_key = Some(tls_file("client.key"));
    let client = ChClient::connect(&ch)
        .await
        .expect("with the client certificate");
    assert_eq!(
        client.query_text("SELECT 40 + 2").await.unwrap().trim(),
        "42"
    );
    front.abort();
}
