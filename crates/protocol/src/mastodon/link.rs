//! `Link` header pagination (RFC 8288) and URL query parameters, as the REST API pages with
//! them; nothing in it is Mastodon-specific.
//!
//! Must never: panic on a malformed header or URL (bad parts are skipped or kept as written),
//! or split a link at a comma inside `<…>` or quotes.

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
