//! `Link` header pagination (RFC 8288), URL query parameters and origins, as the REST API
//! pages with them; nothing in it is Mastodon-specific.
//!
//! Must never: panic on a malformed header or URL (bad parts are skipped or kept as written),
//! split a link at a comma inside `<…>` or quotes, or take two URLs for the same origin
//! unless both are plain enough that every URL parser reads the same host from them.

/// The links of a `Link` header as `(url, rel)` pairs, one per rel value (a link with
/// `rel="prev next"` gives two). Rel values are lower-cased. Links without `<url>` or rel
/// are skipped; commas inside `<…>` or quotes do not split.
pub fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let url = after[..close].trim();
        let params_start = &after[close + 1..];
        // Parameters run to the next comma outside quotes.
        let mut end = params_start.len();
        let mut in_quote = false;
        for (k, c) in params_start.char_indices() {
            match c {
                '"' => in_quote = !in_quote,
                ',' if !in_quote => {
                    end = k;
                    break;
                }
                _ => {}
            }
        }
        for param in params_start[..end].split(';') {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("rel") {
                for rel in v.trim().trim_matches('"').split_ascii_whitespace() {
                    out.push((url.to_owned(), rel.to_ascii_lowercase()));
                }
            }
        }
        rest = &params_start[end..];
    }
    out
}

/// The url of the first link with this rel (`"next"`: older statuses, `"prev"`: newer).
pub fn link_for_rel(header: &str, rel: &str) -> Option<String> {
    parse_link_header(header)
        .into_iter()
        .find(|(_, r)| r.eq_ignore_ascii_case(rel))
        .map(|(u, _)| u)
}

/// The origin of a URL (RFC 6454): scheme and host lower-cased, the port explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// The origin of an absolute `http` or `https` URL; `None` for anything else. Only plain
/// forms are read: a host of letters, digits, `.` and `-` (or an `[IPv6]` literal) and an
/// optional decimal port, ended by `/`, `?`, `#` or the end. Userinfo, backslashes,
/// percent-escapes, whitespace and non-ASCII hosts give `None`: a parser (reqwest's
/// included) may read another host from them than a simple split does.
pub fn origin(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok.then(|| format!("[{}]", h.to_ascii_lowercase()))?, after)
    } else {
        let (h, after) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        (ok.then(|| h.to_ascii_lowercase())?, after)
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default_port,
        None => return None,
        Some("") => default_port,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some(Origin { scheme, host, port })
}

/// Whether both URLs have the same origin (scheme, host, port): `https://A.example` and
/// `https://a.example:443/x` do; a URL [`origin`] cannot read never has.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// The value of a query parameter of a URL (`min_id` of a `prev` link), undecoded except
/// for `%XX` escapes and `+`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if let (Some(h), Some(l)) = (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_prev_next() {
        let h = r#"<https://x/api/v1/timelines/public?min_id=123>; rel="prev", <https://x/api/v1/timelines/public?max_id=100>; rel="next""#;
        assert_eq!(
            parse_link_header(h),
            vec![
                (
                    "https://x/api/v1/timelines/public?min_id=123".into(),
                    "prev".into()
                ),
                (
                    "https://x/api/v1/timelines/public?max_id=100".into(),
                    "next".into()
                ),
            ]
        );
        let next = link_for_rel(h, "next").unwrap();
        assert_eq!(query_param(&next, "max_id").as_deref(), Some("100"));
        let prev = link_for_rel(h, "PREV").unwrap();
        assert_eq!(query_param(&prev, "min_id").as_deref(), Some("123"));
        assert_eq!(query_param(&prev, "max_id"), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let base = "https://mastodon.example";
        for same in [
            "https://mastodon.example/api/v1/timelines/public?min_id=1",
            "HTTPS://Mastodon.EXAMPLE:443/x",
            "https://mastodon.example:/",
            "https://mastodon.example?x#y",
            "https://mastodon.example:00443",
        ] {
            assert!(same_origin(base, same), "{same}");
            assert!(same_origin(same, base), "{same}");
        }
        for other in [
            "http://mastodon.example/",
            "https://mastodon.example:8443/",
            "https://evil.example/",
            "https://mastodon.example.evil.example/",
            "https://mastodon.example./",
            "/api/v1/timelines/public?min_id=1",
            "//mastodon.example/",
            "ftp://mastodon.example/",
            " https://mastodon.example/",
            "https:mastodon.example/",
            "https://token@mastodon.example/",
            "https://mastodon.example@evil.example/",
            "https://evil.example\\@mastodon.example/",
            "https://evil.example\\.mastodon.example/",
            "https://mastodon%2Eexample/",
            "https://mast\todon.example/",
            "https://mastodon.example:99999/",
            "https://mastodon.example:44a3/",
            "https://mästodon.example/",
            "",
        ] {
            assert!(!same_origin(base, other), "{other:?}");
        }
        assert!(same_origin(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/api"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8081/api"
        ));
        assert!(same_origin("http://[::1]:80/", "HTTP://[::1]/x"));
        assert!(!same_origin("http://[::1]/", "http://[::2]/"));
        assert!(
            !same_origin("http://[::1/", "http://[::1/"),
            "unclosed literal"
        );
        assert!(!same_origin("http://[::1]x/", "http://[::1]x/"));
        assert_eq!(
            origin("HTTP://A.Example:8080/p"),
            Some(Origin {
                scheme: "http".into(),
                host: "a.example".into(),
                port: 8080
            })
        );
    }

    #[test]
    fn link_header_odd_forms() {
        assert_eq!(
            parse_link_header("<https://a/?x=1,2>; title=\"a, b\"; REL=next, <b>;rel=prev"),
            vec![
                ("https://a/?x=1,2".into(), "next".into()),
                ("b".into(), "prev".into())
            ]
        );
        assert_eq!(parse_link_header("<u>; rel=\"prev next\"").len(), 2);
        assert!(parse_link_header("").is_empty());
        assert!(parse_link_header("garbage, <unclosed; rel=next").is_empty());
        assert!(parse_link_header("<u>").is_empty());
        assert_eq!(
            query_param("https://x/?tag=caf%C3%A9+au+lait&a", "tag").as_deref(),
            Some("café au lait")
        );
        assert_eq!(
            query_param("https://x/?a=%zz%4", "a").as_deref(),
            Some("%zz%4")
        );
    }
}
