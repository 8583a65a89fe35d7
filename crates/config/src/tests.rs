//! Loading and validation of whole files, the example configs among them.

use crate::*;
use std::time::Duration;

const MIN: &str = r#"
[[pipeline]]
name = "cdc"
[pipeline.postgres]
user = "u"
password = "${PGPASS}"
database = "d"
publication = "p"
slot = "s"
tables = ["public.t"]
[pipeline.clickhouse]
url = "http://127.0.0.1:8123"
"#;

fn env(k: &str) -> Option<String> {
    (k == "PGPASS").then(|| "se\"cret".to_string())
}

#[test]
fn loads_with_defaults_and_interpolation() {
    let c = Config::from_str_named(MIN, "x.toml", &env).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(p.postgres.as_ref().unwrap().password.expose(), "se\"cret");
    assert_eq!(p.batch.max_age.0, Duration::from_millis(200));
    assert!(
        !format!("{c:?}").contains("cret"),
        "secret leaked into Debug"
    );
}

#[test]
fn unknown_key_is_named() {
    let bad = MIN.replace("slot = \"s\"", "slot = \"s\"\nslott = 1");
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml") && e.contains("slott"), "{e}");
}

#[test]
fn missing_env_is_named() {
    let e = Config::from_str_named(MIN, "x.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("PGPASS") && e.contains("line 6"), "{e}");
}

#[test]
fn invalid_values_name_the_key() {
    let bad = MIN.replace("slot = \"s\"", "slot = \"Bad-Slot\"");
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pipeline[0].postgres.slot"), "{e}");
    let bad = MIN.replace("http://127.0.0.1:8123", "127.0.0.1:8123");
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pipeline[0].clickhouse.url"), "{e}");
    let bad = MIN.to_string() + "[pipeline.batch]\nmax_age = \"10 parsecs\"\n";
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_age"), "{e}");
}

#[test]
fn example_configs_load() {
    let env = |k: &str| match k {
        "PGPASSWORD" => Some("x".to_string()),
        _ => None,
    };
    for f in [
        "config/cdc.toml",
        "config/sentiment.toml",
        "config/sentiment-demo.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        Config::from_str_named(&text, f, &env).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_missing_filter_table_skips_reblogs_as_an_empty_one_does() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join("config/sentiment.toml"),
    )
    .unwrap();
    let start = base.find("[pipeline.mastodon.filter]").unwrap();
    let end = start + base[start..].find("\n\n").unwrap();
    for text in [
        base.clone(),
        base.replace(&base[start..end], ""),
        base.replace(&base[start..end], "[pipeline.mastodon.filter]"),
    ] {
        let c =
            Config::from_str_named(&text, "s.toml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let m = c.pipelines[0].mastodon.as_ref().unwrap();
        assert!(m.filter.skip_reblogs && !m.filter.skip_bots);
    }
}

#[test]
fn sentiment_needs_one_source_and_an_llm() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join("config/sentiment.toml"),
    )
    .unwrap();
    let no_llm = base.replace("[pipeline.llm]", "[pipeline.llm_x]");
    let e = Config::from_str_named(&no_llm, "s.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("llm"), "{e}");
    let two = base.replace("# [pipeline.replay]\n# file", "[pipeline.replay]\nfile");
    let e = Config::from_str_named(&two, "s.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly one of"), "{e}");
    let bad_stream = base.replace("${MASTODON_STREAM:-public:local}", "federated");
    let e = Config::from_str_named(&bad_stream, "s.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pipeline[0].mastodon.streams[0]"), "{e}");
}

#[test]
fn mastodon_requests_are_bounded_by_default() {
    let c = Config::from_str_named(SENTIMENT, "s.toml", &env).unwrap();
    let m = c.pipelines[0].mastodon.as_ref().unwrap();
    assert_eq!(m.request_timeout.0, Duration::from_secs(30));
    assert_eq!(m.max_response_bytes, 16 << 20);
    for (key, value) in [("request_timeout", "\"0s\""), ("max_response_bytes", "0")] {
        let text = SENTIMENT.replace(
            "[pipeline.mastodon]\n",
            &format!("[pipeline.mastodon]\n{key} = {value}\n"),
        );
        let e = Config::from_str_named(&text, "s.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("pipeline[0].mastodon.{key}")), "{e}");
    }
    for url in [
        "https://user:pw@a.example",
        "https://mästodon.example",
        "https://",
    ] {
        let text = SENTIMENT.replace("https://a.example", url);
        let e = Config::from_str_named(&text, "s.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline[0].mastodon.instance[0].url"), "{e}");
        assert!(!e.contains("pw"), "{e}");
    }
}

#[test]
fn admin_needs_a_token() {
    let text = MIN.to_string() + "[admin]\nenabled = true\ntoken = \"short\"\n";
    let e = Config::from_str_named(&text, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.token"), "{e}");
    let ok = MIN.to_string() + "[admin]\nenabled = true\ntoken = \"0123456789abcdef\"\n";
    assert!(
        !format!("{:?}", Config::from_str_named(&ok, "x.toml", &env).unwrap())
            .contains("0123456789abcdef")
    );
}

#[test]
fn a_scheduled_verify_is_checked() {
    let off = Config::from_str_named(MIN, "x.toml", &env).unwrap();
    assert!(off.verify.interval.0.is_zero() && off.verify.limit == 100);
    let on = MIN.to_string() + "[verify]\ninterval = \"6h\"\ntables = [\"public.t\"]\n";
    let c = Config::from_str_named(&on, "x.toml", &env).unwrap();
    assert_eq!(c.verify.interval.0, Duration::from_secs(6 * 3600));
    assert_eq!(c.verify.tables, ["public.t"]);
    for bad in ["interval = \"10ms\"", "interval = \"1h\"\nlimit = 0"] {
        let text = MIN.to_string() + "[verify]\n" + bad + "\n";
        let e = Config::from_str_named(&text, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("verify"), "{e}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("5 weeks").is_err());
    assert!(parse_duration("").is_err());
    // Too large for a Duration: an error, not a panic (found by the config fuzz target).
    let e = parse_duration(&format!("2{}ms", "4".repeat(80))).unwrap_err();
    assert!(e.contains("too long a duration"), "{e}");
}

#[test]
fn comment_interpolation_is_ignored() {
    let text = MIN.to_string() + "# e.g. ${NOT_SET}\n";
    Config::from_str_named(&text, "x.toml", &env).unwrap();
}

// ---- [pipeline.postgres]: `url`, the keys, TLS -------------------------------------------

const PW: &str = "hunter2-SECRET";

/// MIN with `[pipeline.postgres]` made of `keys` (plus publication and slot).
fn pg_config(keys: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"cdc\"\n[pipeline.postgres]\n{keys}\npublication = \"p\"\nslot = \"s\"\n\
         [pipeline.clickhouse]\nurl = \"http://127.0.0.1:8123\"\n"
    )
}

fn pg(keys: &str) -> PostgresConfig {
    let c = Config::from_str_named(&pg_config(keys), "x.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{keys}: {e}"));
    c.pipelines[0].postgres.clone().unwrap()
}

/// The error of `[pipeline.postgres]` made of `keys`, checked to hold no piece of [`PW`].
fn pg_err(keys: &str) -> String {
    let e = Config::from_str_named(&pg_config(keys), "x.toml", &|_| None)
        .expect_err(keys)
        .to_string();
    for piece in [PW, "hunter2", "SECRET"] {
        assert!(!e.contains(piece), "the error shows the password: {e}");
    }
    e
}

#[test]
fn postgres_keys_alone_work_as_before() {
    let p = pg("user = \"u\"\ndatabase = \"d\"");
    assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 5432));
    assert_eq!((p.user.as_str(), p.database.as_str()), ("u", "d"));
    assert!(p.password.is_empty());
    assert_eq!(p.sslmode, SslMode::Prefer);
    assert_eq!(p.channel_binding, ChannelBinding::Prefer);
    assert_eq!(p.sslrootcert, None);
    assert_eq!(
        (p.sslcert.clone(), p.sslkey.clone(), p.hostaddr.clone()),
        (None, None, None)
    );
    assert!(!p.allow_insecure_password);
    assert_eq!(p.password_file, None);
    assert_eq!(p.connect_timeout.0, Duration::from_secs(10));
    let p = pg("host = \"db\"\nport = 6543\nuser = \"u\"\npassword = \"pw\"\ndatabase = \"d\"\nconnect_timeout = \"3s\"");
    assert_eq!(
        (p.host.as_str(), p.port, p.password.expose()),
        ("db", 6543, "pw")
    );
    assert_eq!(p.connect_timeout.0, Duration::from_secs(3));
}

#[test]
fn postgres_url_gives_the_connection() {
    let p = pg("url = \"postgresql://postgres:pw@db.abc.eu-west-1.rds.amazonaws.com:5432/postgres?sslmode=verify-full&sslrootcert=/etc/ssl/rds.pem&connect_timeout=5\"");
    assert_eq!(p.host, "db.abc.eu-west-1.rds.amazonaws.com");
    assert_eq!(
        (p.user.as_str(), p.password.expose(), p.database.as_str()),
        ("postgres", "pw", "postgres")
    );
    assert_eq!(p.sslmode, SslMode::VerifyFull);
    assert_eq!(
        p.sslrootcert.as_deref(),
        Some(std::path::Path::new("/etc/ssl/rds.pem"))
    );
    assert_eq!(p.connect_timeout.0, Duration::from_secs(5));
    // No port in the url: the default.
    let p = pg("url = \"postgresql://u:p@ep-x-123.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require\"");
    assert_eq!(p.port, 5432);
    assert_eq!(p.channel_binding, ChannelBinding::Require);
    // The keyword form, with libpq's quoting.
    let p = pg(r#"url = "host=h port=5433 user=u password='p w\\'x' dbname=d sslmode=disable""#);
    assert_eq!(
        (p.host.as_str(), p.port, p.password.expose()),
        ("h", 5433, "p w'x")
    );
    assert_eq!(p.sslmode, SslMode::Disable);
    // Neither host nor port: the defaults.
    let p = pg("url = \"postgresql:///d?user=u\"");
    assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 5432));
}

#[test]
fn postgres_keys_override_the_url() {
    let p = pg("url = \"postgresql://a:pa@h1:1111/d1?sslmode=require&connect_timeout=5&channel_binding=disable\"\n\
                host = \"h2\"\nport = 2222\nuser = \"b\"\npassword = \"pb\"\ndatabase = \"d2\"\n\
                sslmode = \"verify-ca\"\nconnect_timeout = \"7s\"\nchannel_binding = \"require\"");
    assert_eq!((p.host.as_str(), p.port), ("h2", 2222));
    assert_eq!(
        (p.user.as_str(), p.password.expose(), p.database.as_str()),
        ("b", "pb", "d2")
    );
    assert_eq!(p.sslmode, SslMode::VerifyCa);
    assert_eq!(p.connect_timeout.0, Duration::from_secs(7));
    assert_eq!(p.channel_binding, ChannelBinding::Require);
    // An empty key (an unset `${VAR:-}`) counts as not given: the url's value stays.
    let p = pg("url = \"postgresql://a:pa@h1/d1\"\nhost = \"\"\nuser = \"\"\npassword = \"\"\ndatabase = \"\"");
    assert_eq!(
        (
            p.host.as_str(),
            p.user.as_str(),
            p.password.expose(),
            p.database.as_str()
        ),
        ("h1", "a", "pa", "d1")
    );
    // Part from each.
    let p = pg("url = \"postgresql://h1:1111\"\nuser = \"u\"\ndatabase = \"d\"");
    assert_eq!(
        (p.host.as_str(), p.port, p.user.as_str()),
        ("h1", 1111, "u")
    );
}

#[test]
fn postgres_user_and_database_are_required() {
    let e = pg_err("url = \"postgresql://h/d\"");
    assert!(
        e.contains("pipeline[0].postgres.user") && e.contains("missing"),
        "{e}"
    );
    let e = pg_err("url = \"postgresql://u@h\"");
    assert!(
        e.contains("pipeline[0].postgres.database") && e.contains("missing"),
        "{e}"
    );
    let e = pg_err("user = \"u\"");
    assert!(e.contains("pipeline[0].postgres.database"), "{e}");
}

#[test]
fn postgres_url_errors_name_the_key_and_hide_the_password() {
    for (url, needle) in [
        ("postgresql://u:hunter2-SECRET@h1,h2/d", "one host"),
        (
            "postgresql://u:hunter2-SECRET@h/d?host=/var/run/postgresql",
            "TCP only",
        ),
        ("postgresql://u:hunter2-SECRET@h/d?sslmode=allow", "prefer"),
        (
            "postgresql://u:hunter2-SECRET@h/d?pgbouncer=true",
            "`pgbouncer`",
        ),
        ("postgresql://u:hunter2/SECRET@h/d", "port"),
        ("postgresql://u:hunter2%GGSECRET@h/d", "percent"),
        ("postgresql://u:hunter2-SECRET@[::1/d", "]"),
        ("host=h password='hunter2-SECRET", "closing"),
        ("host=h password=hunter2 SECRET", "without `=`"),
        ("mysql://u:hunter2-SECRET@h/d", "postgresql://"),
    ] {
        let e = pg_err(&format!("url = \"{url}\""));
        assert!(
            e.contains("pipeline[0].postgres.url") && e.contains(needle),
            "{url}: {e}"
        );
    }
    // Keys take the same checks.
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nhost = \"a,b\"");
    assert!(
        e.contains("pipeline[0].postgres.host") && e.contains("one host"),
        "{e}"
    );
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nhost = \"/tmp\"");
    assert!(e.contains("TCP only"), "{e}");
}

#[test]
fn postgres_sslmode() {
    for (word, mode) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        let p = pg(&format!(
            "user = \"u\"\ndatabase = \"d\"\nsslmode = \"{word}\""
        ));
        assert_eq!(p.sslmode, mode);
        assert_eq!(mode.to_string(), word);
    }
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nsslmode = \"allow\"");
    assert!(
        e.contains("pipeline[0].postgres.sslmode") && e.contains("`prefer`"),
        "{e}"
    );
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nsslmode = \"verify_full\"");
    assert!(
        e.contains("`verify_full`") && e.contains("verify-full"),
        "{e}"
    );
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nchannel_binding = \"on\"");
    assert!(e.contains("pipeline[0].postgres.channel_binding"), "{e}");
}

#[test]
fn postgres_sslrootcert() {
    let base = "user = \"u\"\ndatabase = \"d\"\n";
    let p = pg(&format!(
        "{base}sslmode = \"verify-ca\"\nsslrootcert = \"/etc/ca.pem\""
    ));
    assert_eq!(
        p.sslrootcert.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    // `system`: the system's roots (None), and verify-full (libpq's rule).
    let p = pg(&format!("{base}sslrootcert = \"system\""));
    assert_eq!(
        (p.sslrootcert.clone(), p.sslmode),
        (None, SslMode::VerifyFull)
    );
    let p = pg("url = \"postgresql://u@h/d?sslrootcert=system&sslmode=verify-full\"");
    assert_eq!(
        (p.sslrootcert.clone(), p.sslmode),
        (None, SslMode::VerifyFull)
    );
    let e = pg_err(&format!(
        "{base}sslrootcert = \"system\"\nsslmode = \"require\""
    ));
    assert!(
        e.contains("pipeline[0].postgres.sslrootcert") && e.contains("verify-full"),
        "{e}"
    );
    // The key `system` overrides the url's path.
    let p = pg("url = \"postgresql://u@h/d?sslrootcert=/a.pem\"\nsslrootcert = \"system\"");
    assert_eq!(p.sslrootcert, None);
    // Certificates without TLS would be ignored.
    let e = pg_err(&format!(
        "{base}sslmode = \"disable\"\nsslrootcert = \"/ca.pem\""
    ));
    assert!(e.contains("pipeline[0].postgres.sslmode"), "{e}");
}

#[test]
fn postgres_client_certificate_comes_in_pairs() {
    let base = "user = \"u\"\ndatabase = \"d\"\n";
    let p = pg(&format!("{base}sslcert = \"/c.pem\"\nsslkey = \"/k.pem\""));
    assert_eq!(p.sslcert.as_deref(), Some(std::path::Path::new("/c.pem")));
    assert_eq!(p.sslkey.as_deref(), Some(std::path::Path::new("/k.pem")));
    let e = pg_err(&format!("{base}sslcert = \"/c.pem\""));
    assert!(
        e.contains("pipeline[0].postgres.sslcert") && e.contains("sslkey"),
        "{e}"
    );
    let e = pg_err("url = \"postgresql://u@h/d?sslkey=/k.pem\"");
    assert!(
        e.contains("pipeline[0].postgres.sslkey") && e.contains("sslcert"),
        "{e}"
    );
    // One from the url, the other from a key.
    let p = pg("url = \"postgresql://u@h/d?sslkey=/k.pem\"\nsslcert = \"/c.pem\"");
    assert!(p.sslcert.is_some() && p.sslkey.is_some());
}

#[test]
fn postgres_hostaddr_and_channel_binding() {
    let base = "user = \"u\"\ndatabase = \"d\"\n";
    let p = pg(&format!(
        "{base}host = \"db.example.com\"\nhostaddr = \"10.1.2.3\""
    ));
    assert_eq!(
        (p.host.as_str(), p.hostaddr.as_deref()),
        ("db.example.com", Some("10.1.2.3"))
    );
    // Without a host, the address is the host.
    let p = pg(&format!("{base}hostaddr = \"[2001:db8::7]\""));
    assert_eq!(
        (p.host.as_str(), p.hostaddr.as_deref()),
        ("2001:db8::7", Some("2001:db8::7"))
    );
    let e = pg_err(&format!("{base}hostaddr = \"db.example.com\""));
    assert!(
        e.contains("pipeline[0].postgres.hostaddr") && e.contains("IP address"),
        "{e}"
    );
    let e = pg_err(&format!(
        "{base}sslmode = \"disable\"\nchannel_binding = \"require\""
    ));
    assert!(e.contains("pipeline[0].postgres.channel_binding"), "{e}");
    let p = pg(&format!(
        "{base}allow_insecure_password = true\nchannel_binding = \"disable\""
    ));
    assert!(p.allow_insecure_password);
    assert_eq!(p.channel_binding, ChannelBinding::Disable);
}

#[test]
fn postgres_unknown_keys_are_still_refused() {
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\nsslmod = \"require\"");
    assert!(e.contains("unknown field `sslmod`"), "{e}");
}

// ---- [pipeline.clickhouse]: TLS ------------------------------------------------------------

fn ch_config(keys: &str) -> String {
    MIN.replace("url = \"http://127.0.0.1:8123\"\n", &format!("{keys}\n"))
}

#[test]
fn clickhouse_tls() {
    let c = Config::from_str_named(
        &ch_config("url = \"https://ch.example.com:8443\"\nca_cert = \"/ca.pem\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\""),
        "x.toml",
        &env,
    )
    .unwrap();
    let ch = &c.pipelines[0].clickhouse;
    assert_eq!(ch.ca_cert.as_deref(), Some(std::path::Path::new("/ca.pem")));
    assert!(ch.client_cert.is_some() && ch.client_key.is_some());
    // Empty paths (an unset `${VAR:-}`) count as not given, on plain http too.
    let c = Config::from_str_named(
        &ch_config(
            "url = \"http://h:8123\"\nca_cert = \"\"\nclient_cert = \"\"\nclient_key = \"\"",
        ),
        "x.toml",
        &env,
    )
    .unwrap();
    assert_eq!(c.pipelines[0].clickhouse.ca_cert, None);
    for (keys, key, needle) in [
        (
            "url = \"http://h:8123\"\nca_cert = \"/ca.pem\"",
            "clickhouse.ca_cert",
            "https://",
        ),
        (
            "url = \"http://h:8123\"\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"",
            "clickhouse.client_cert",
            "https://",
        ),
        (
            "url = \"https://h\"\nclient_cert = \"/c.pem\"",
            "clickhouse.client_cert",
            "client_key",
        ),
        (
            "url = \"https://h\"\nclient_key = \"/k.pem\"",
            "clickhouse.client_key",
            "client_cert",
        ),
    ] {
        let e = Config::from_str_named(&ch_config(keys), "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("pipeline[0].{key}")) && e.contains(needle),
            "{keys}: {e}"
        );
    }
}

// ---- secrets from files ------------------------------------------------------------------

/// A reader over a few fixed files: `/s/<name>` holds what the table says.
fn fake_read(path: &std::path::Path) -> std::io::Result<String> {
    let text = match path.to_str().unwrap_or("") {
        "/s/pg" => "pg-from-file\n",
        "/s/ch" => "ch-from-file\r\n",
        "/s/two-newlines" => "kept\n\n",
        "/s/admin" => "0123456789abcdef-admin\n",
        "/s/short" => "short\n",
        "/s/kafka" => "kafka-from-file",
        "/s/secret" => "hunter2-SECRET\n",
        "/s/empty" => "",
        "/s/newline-only" => "\n",
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the reader's own text: hunter2-SECRET",
            ))
        }
    };
    Ok(text.to_string())
}

const SENTIMENT: &str = r#"
[[pipeline]]
name = "s"
kind = "sentiment"
[pipeline.mastodon]
[[pipeline.mastodon.instance]]
url = "https://a.example"
token_file = "/s/secret"
[[pipeline.mastodon.instance]]
url = "https://b.example"
token = "plain-token"
[pipeline.llm]
backend = "openai"
url = "http://127.0.0.1:8000"
model = "m"
api_key_file = "/s/kafka"
"#;

fn with_files(text: &str) -> Result<Config, ConfigError> {
    let mut c = Config::from_str_named(text, "x.toml", &env)?;
    c.read_secret_files("x.toml", &fake_read)?;
    Ok(c)
}

#[test]
fn secrets_are_read_from_files() {
    let text = MIN
        .replace("password = \"${PGPASS}\"", "password_file = \"/s/pg\"")
        .replace(
            "url = \"http://127.0.0.1:8123\"",
            "url = \"http://127.0.0.1:8123\"\npassword_file = \"/s/ch\"",
        )
        + "[admin]\nenabled = true\ntoken_file = \"/s/admin\"\n\
           [kafka]\nbrokers = \"b:9092\"\n[kafka.properties]\n\"sasl.username\" = \"u\"\n\
           [kafka.secret_files]\n\"sasl.password\" = \"/s/kafka\"\n";
    // Unread, the secrets are empty (and the admin token's length is not checked yet).
    let c = Config::from_str_named(&text, "x.toml", &env).unwrap();
    assert!(c.pipelines[0]
        .postgres
        .as_ref()
        .unwrap()
        .password
        .is_empty());
    let c = with_files(&text).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(
        p.postgres.as_ref().unwrap().password.expose(),
        "pg-from-file"
    );
    assert_eq!(p.clickhouse.password.expose(), "ch-from-file");
    assert_eq!(c.admin.token.expose(), "0123456789abcdef-admin");
    let k = c.kafka.as_ref().unwrap();
    assert_eq!(k.properties["sasl.password"].expose(), "kafka-from-file");
    assert_eq!(k.properties["sasl.username"].expose(), "u");
    assert_eq!(
        p.postgres.as_ref().unwrap().password_file.as_deref(),
        Some(std::path::Path::new("/s/pg"))
    );
    // Only one newline is dropped.
    let c = with_files(&MIN.replace(
        "password = \"${PGPASS}\"",
        "password_file = \"/s/two-newlines\"",
    ))
    .unwrap();
    assert_eq!(
        c.pipelines[0].postgres.as_ref().unwrap().password.expose(),
        "kept\n"
    );

    let c = with_files(SENTIMENT).unwrap();
    let p = &c.pipelines[0];
    let m = p.mastodon.as_ref().unwrap();
    assert_eq!(m.instances[0].token.expose(), PW);
    assert_eq!(m.instances[1].token.expose(), "plain-token");
    assert_eq!(p.llm.as_ref().unwrap().api_key.expose(), "kafka-from-file");
    assert!(
        !format!("{c:?}").contains(PW),
        "a secret from a file leaked into Debug"
    );
}

#[test]
fn a_secret_given_twice_is_refused() {
    let pg_url = MIN.replace(
        "password = \"${PGPASS}\"",
        "url = \"postgresql://u:hunter2-SECRET@h/d\"\npassword_file = \"/s/pg\"",
    );
    let pg_key = MIN.replace(
        "password = \"${PGPASS}\"",
        "password = \"x\"\npassword_file = \"/s/pg\"",
    );
    let ch = MIN.replace(
        "url = \"http://127.0.0.1:8123\"",
        "url = \"http://127.0.0.1:8123\"\npassword = \"x\"\npassword_file = \"/s/ch\"",
    );
    let admin =
        MIN.to_string() + "[admin]\ntoken = \"0123456789abcdef\"\ntoken_file = \"/s/admin\"\n";
    let kafka = MIN.to_string()
        + "[kafka]\nbrokers = \"b:9092\"\n[kafka.properties]\n\"sasl.password\" = \"x\"\n\
           [kafka.secret_files]\n\"sasl.password\" = \"/s/kafka\"\n";
    let masto = SENTIMENT.replace(
        "token = \"plain-token\"",
        "token = \"t\"\ntoken_file = \"/s/admin\"",
    );
    let llm = SENTIMENT.replace("api_key_file", "api_key = \"k\"\napi_key_file");
    for (text, key, other) in [
        (pg_url, "pipeline[0].postgres.password_file", "`url`"),
        (pg_key, "pipeline[0].postgres.password_file", "`password`"),
        (
            ch,
            "pipeline[0].clickhouse.password_file",
            "pipeline[0].clickhouse.password`",
        ),
        (admin, "admin.token_file", "`admin.token`"),
        (
            kafka,
            "kafka.secret_files.\"sasl.password\"",
            "kafka.properties.\"sasl.password\"",
        ),
        (
            masto,
            "pipeline[0].mastodon.instance[1].token_file",
            "mastodon.instance[1].token`",
        ),
        (
            llm,
            "pipeline[0].llm.api_key_file",
            "pipeline[0].llm.api_key`",
        ),
    ] {
        // Refused before any file is read: by the IO-free parse, and by the reading step.
        let e = Config::from_str_named(&text, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(other), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    // An empty value (an unset `${VAR:-}`) is not a second one.
    let c = with_files(&MIN.replace(
        "password = \"${PGPASS}\"",
        "password = \"\"\npassword_file = \"/s/pg\"",
    ))
    .unwrap();
    assert_eq!(
        c.pipelines[0].postgres.as_ref().unwrap().password.expose(),
        "pg-from-file"
    );
}

#[test]
fn unreadable_or_empty_secret_files_are_named() {
    for (path, needle) in [
        ("/s/missing", "cannot read `/s/missing`"),
        ("/s/empty", "`/s/empty` is empty"),
        ("/s/newline-only", "`/s/newline-only` is empty"),
    ] {
        let text = MIN.replace(
            "password = \"${PGPASS}\"",
            &format!("password_file = \"{path}\""),
        );
        let e = with_files(&text).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("pipeline[0].postgres.password_file") && e.contains(needle),
            "{e}"
        );
        assert!(
            !e.contains("hunter2"),
            "the reader's text reached the error: {e}"
        );
    }
}

#[test]
fn the_admin_token_from_a_file_is_checked() {
    let text = MIN.to_string() + "[admin]\nenabled = true\ntoken_file = \"/s/short\"\n";
    Config::from_str_named(&text, "x.toml", &env).expect("unread: not checked yet");
    let e = with_files(&text).unwrap_err().to_string();
    assert!(
        e.contains("admin.token_file") && e.contains("16 characters"),
        "{e}"
    );
}

#[test]
fn load_reads_the_secret_files() {
    let dir = std::env::temp_dir().join(format!("tributary-config-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("pg-password");
    std::fs::write(&secret, format!("{PW}\n")).unwrap();
    let cfg = dir.join("cdc.toml");
    let text = MIN.replace(
        "password = \"${PGPASS}\"",
        &format!("password_file = \"{}\"", secret.display()),
    );
    std::fs::write(&cfg, &text).unwrap();
    let loaded = Config::load(&cfg);
    std::fs::write(&cfg, text.replace("pg-password", "absent")).unwrap();
    let missing = Config::load(&cfg).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    let c = loaded.unwrap();
    assert_eq!(
        c.pipelines[0].postgres.as_ref().unwrap().password.expose(),
        PW
    );
    assert!(
        missing.contains("password_file") && missing.contains("absent"),
        "{missing}"
    );
}

// ---- no secret in any error or Debug -----------------------------------------------------

#[test]
fn passwords_never_reach_errors_or_debug() {
    // Given in a url, in a keyword string, in the key: redacted in Debug.
    for keys in [
        format!("url = \"postgresql://u:{PW}@h/d\""),
        format!("url = \"host=h user=u password='{PW}' dbname=d\""),
        format!("user = \"u\"\ndatabase = \"d\"\npassword = \"{PW}\""),
    ] {
        let p = pg(&keys);
        assert_eq!(p.password.expose(), PW);
        let c = Config::from_str_named(&pg_config(&keys), "x.toml", &|_| None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{keys}");
    }
    // A TOML error on a line holding a password shows where, not the line.
    for text in [
        pg_config("url = \"postgresql://u:hunter2-SECRET@h/d"),
        pg_config("url = \"postgresql://u:hunter2-SECRET@h/d\" junk"),
        pg_config("password = \"hunter2-SECRET\", port = 1"),
        // Inline: toml would quote the whole table.
        "[[pipeline]]\nname = \"cdc\"\npostgres = { url = \"postgresql://u:hunter2-SECRET@h/d\", sslmode = 1, publication = \"p\", slot = \"s\" }\n".into(),
        "[[pipeline]]\nname = \"cdc\"\npostgres = { url = \"postgresql://u:hunter2-SECRET@h/d\", publication = \"p\" }\n".into(),
        "[[pipeline]]\nname = \"cdc\"\npostgres = { url = \"postgresql://u:hunter2-SECRET@h/d\", sslmode = \"allow\", publication = \"p\", slot = \"s\" }\n".into(),
    ] {
        let e = Config::from_str_named(&text, "x.toml", &|_| None).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.contains("line ") || e.contains("pipeline[0].postgres.sslmode"),
            "{e}"
        );
    }
}

#[test]
fn toml_errors_say_where() {
    let bad = MIN.replace("slot = \"s\"", "slot = \"s\"\nchunk_rows = \"many\"");
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.toml: line 10, column 14 (`chunk_rows`): invalid type"),
        "{e}"
    );
    let bad = MIN.replace("url = \"http://127.0.0.1:8123\"", "url = 1");
    let e = Config::from_str_named(&bad, "x.toml", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 12, column 7 (`url`)"), "{e}");
    let e = Config::from_str_named(
        "[[pipeline]]\nname = \"x\"\n[pipeline.postgres]\nuser = \"u\"\ndatabase = \"d\"\n",
        "x.toml",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("(`[pipeline.postgres]`)") && e.contains("publication"),
        "{e}"
    );
}

#[test]
fn table_mappings_load_and_their_errors_name_the_key() {
    let with = |extra: &str| format!("{MIN}{extra}");
    let ok = with(
        r#"
[[pipeline.table]]
name = "public.orders"
target = "orders_v2"
exclude_columns = ["secret"]
filter = "id > 10"
order_by = ["tenant", "id"]
partition_by = "intDiv(tenant, 100)"
engine = "append"

[[pipeline.table]]
name = "events"
"#,
    );
    let c = Config::from_str_named(&ok, "x.toml", &env).unwrap();
    let t = &c.pipelines[0].tables;
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].target.as_deref(), Some("orders_v2"));
    assert_eq!(t[0].engine, TableEngine::Append);
    assert_eq!(t[0].layout().order_by, vec!["tenant", "id"]);
    assert!(t[0].selects() && !t[1].selects());
    assert_eq!(
        mapping_for(t, "public", "events").map(|m| m.name.as_str()),
        Some("events")
    );
    assert!(mapping_for(t, "other", "events").is_none());
    let err = |extra: &str| {
        Config::from_str_named(&with(extra), "x.toml", &env)
            .unwrap_err()
            .to_string()
    };
    let e = err("[[pipeline.table]]\nname = \"t\"\ncolumns = [\"a\"]\nexclude_columns = [\"b\"]\n");
    assert!(
        e.contains("pipeline[0].table[0].columns") && e.contains("not both"),
        "{e}"
    );
    let e = err("[[pipeline.table]]\nname = \"a.b.c\"\n");
    assert!(e.contains("pipeline[0].table[0].name"), "{e}");
    let e = err("[[pipeline.table]]\nname = \"t\"\n[[pipeline.table]]\nname = \"public.t\"\n");
    assert!(
        e.contains("table[1].name") && e.contains("two mappings"),
        "{e}"
    );
    let e = err("[[pipeline.table]]\nname = \"t\"\nengine = \"summing\"\n");
    assert!(e.contains("summing"), "{e}");
    let e = err("[[pipeline.table]]\nname = \"t\"\nfilter = \" \"\n");
    assert!(e.contains("table[0].filter"), "{e}");
    let e = err("[[pipeline.table]]\nname = \"t\"\ntarget = \"\"\n");
    assert!(e.contains("table[0].target"), "{e}");
    let e = err(
        "[[pipeline.table]]\nname = \"t\"\nengine = \"append\"\npurge_deleted_after = \"1h\"\n",
    );
    assert!(e.contains("table[0].purge_deleted_after"), "{e}");
    let e = err("[[pipeline.table]]\nname = \"t\"\npurge_deleted_after = \"5s\"\n");
    assert!(e.contains("at least 60s"), "{e}");
}

#[test]
fn compression_auto_is_none_to_this_machine_only() {
    for host in [
        "localhost",
        "127.0.0.1",
        "127.8.9.1",
        "::1",
        "[::1]",
        "LocalHost",
    ] {
        assert_eq!(
            Compression::Auto.for_host(host),
            Compression::None,
            "{host}"
        );
    }
    for host in ["clickhouse", "10.0.0.5", "abc.clickhouse.cloud", "::2", ""] {
        assert_eq!(Compression::Auto.for_host(host), Compression::Lz4, "{host}");
    }
    assert_eq!(Compression::Lz4.for_host("localhost"), Compression::Lz4);
    assert_eq!(Compression::None.for_host("remote"), Compression::None);
    assert_eq!(defaults::compression(), Compression::Auto);
}

#[test]
fn takeover_after_defaults_to_3s_and_refuses_below_1s() {
    assert_eq!(
        pg("user = \"u\"\ndatabase = \"d\"").takeover_after.0,
        Duration::from_secs(3)
    );
    assert_eq!(
        pg("user = \"u\"\ndatabase = \"d\"\ntakeover_after = \"0s\"")
            .takeover_after
            .0,
        Duration::ZERO
    );
    assert_eq!(
        pg("user = \"u\"\ndatabase = \"d\"\ntakeover_after = \"10s\"")
            .takeover_after
            .0,
        Duration::from_secs(10)
    );
    let e = pg_err("user = \"u\"\ndatabase = \"d\"\ntakeover_after = \"200ms\"");
    assert!(
        e.contains("takeover_after") && e.contains("below 1s"),
        "{e}"
    );
}

#[test]
fn cluster_keys_are_checked() {
    let cfg = |ch: &str| {
        format!(
            "[[pipeline]]\nname = \"cdc\"\n[pipeline.postgres]\nuser = \"u\"\ndatabase = \"d\"\npublication = \"p\"\nslot = \"s\"\n\
             [pipeline.clickhouse]\nurl = \"http://127.0.0.1:8123\"\n{ch}\n"
        )
    };
    let ok = Config::from_str_named(
        &cfg("replicas = [\"http://10.0.0.2:8123\"]\ncluster = \"c\""),
        "x.toml",
        &|_| None,
    )
    .unwrap();
    let ch = &ok.pipelines[0].clickhouse;
    assert_eq!(ch.replicas, vec!["http://10.0.0.2:8123".to_string()]);
    assert_eq!(
        ch.replication_path,
        "/clickhouse/tables/{shard}/{database}/{table}"
    );
    let err = |ch: &str| {
        Config::from_str_named(&cfg(ch), "x.toml", &|_| None)
            .expect_err(ch)
            .to_string()
    };
    let e = err("replicas = [\"https://10.0.0.2:8443\"]");
    assert!(
        e.contains("replicas[0]") && e.contains("same scheme"),
        "{e}"
    );
    let e = err("replicas = [\"10.0.0.2:8123\"]");
    assert!(e.contains("replicas[0]") && e.contains("http://"), "{e}");
    let e = err("cluster = \"c\"\nreplication_path = \"/ch/{table}\"");
    assert!(
        e.contains("replication_path") && e.contains("{database}"),
        "{e}"
    );
    let e = err("distributed = true");
    assert!(
        e.contains("clickhouse.distributed") && e.contains("needs `cluster`"),
        "{e}"
    );
    let ok = Config::from_str_named(
        &cfg("cluster = \"c\"\ndistributed = true"),
        "x.toml",
        &|_| None,
    )
    .unwrap();
    assert!(ok.pipelines[0].clickhouse.distributed);
    // Without a cluster the path is not used.
    Config::from_str_named(&cfg("replication_path = \"/x\""), "x.toml", &|_| None).unwrap();
}
