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
    for f in ["config/cdc.toml", "config/sentiment.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        Config::from_str_named(&text, f, &env).unwrap_or_else(|e| panic!("{e}"));
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
fn durations() {
    assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("5 weeks").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn comment_interpolation_is_ignored() {
    let text = MIN.to_string() + "# e.g. ${NOT_SET}\n";
    Config::from_str_named(&text, "x.toml", &env).unwrap();
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
