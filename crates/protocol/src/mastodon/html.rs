//! The plain text of status HTML: tags stripped (Mastodon's link spans kept, so a shortened
//! link reads as its full URL), block elements turned into line breaks, entities decoded.
//!
//! Must never: panic or drop text on malformed markup (a `<` that starts no tag and an
//! unknown entity stay as written), or keep the content of `script`, `style` or comments.

/// The plain text of status HTML. Tags are removed and their text kept — including
/// Mastodon's `invisible` and `ellipsis` spans inside links, so a shortened link reads as
/// its full URL. `<br>` becomes a line break, paragraphs (`<p>`, and the block elements
/// remote servers may send: `div`, `blockquote`, headings, `pre`…) are separated by a
/// blank line, list items by a line break. Runs of whitespace collapse to one space as a browser shows them (except
/// inside `<pre>`); `script`/`style` content and comments are dropped. Entities are
/// decoded (named: the common set in [`named_entity`]; numeric: decimal and hex); an
/// unknown or invalid entity stays as written. A `<` that does not start a tag is text.
/// The result is trimmed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    let mut pre = 0usize;
    let bytes = html.as_bytes();
    while i < html.len() {
        let rest = &html[i..];
        match bytes[i] {
            b'<' => {
                if let Some(skip) = rest.strip_prefix("<!--") {
                    i += 4 + skip.find("-->").map_or(skip.len(), |e| e + 3);
                    continue;
                }
                let Some((tag, len)) = parse_tag(rest) else {
                    push_text_char(&mut out, '<', pre > 0);
                    i += 1;
                    continue;
                };
                i += len;
                match (tag.name.as_str(), tag.closing) {
                    ("br", _) => {
                        trim_trailing_spaces(&mut out);
                        out.push('\n');
                    }
                    ("script" | "style", false) => {
                        let close = format!("</{}", tag.name);
                        let lower = html[i..].to_ascii_lowercase();
                        i += match lower.find(&close) {
                            Some(p) => {
                                p + html[i + p..]
                                    .find('>')
                                    .map_or(html.len() - i - p, |g| g + 1)
                            }
                            None => html.len() - i,
                        };
                    }
                    (name, closing) if is_block(name) => {
                        if name == "pre" {
                            pre = if closing {
                                pre.saturating_sub(1)
                            } else {
                                pre + 1
                            };
                        }
                        if name == "li" {
                            ensure_newlines(&mut out, 1);
                        } else {
                            ensure_newlines(&mut out, 2);
                        }
                    }
                    _ => {}
                }
            }
            b'&' => {
                let (c, len) = decode_entity(rest);
                match c {
                    Some(c) => out.push(c),
                    None => out.push_str(&rest[..len]),
                }
                i += len;
            }
            _ => {
                let c = rest.chars().next().unwrap_or('\u{FFFD}');
                push_text_char(&mut out, c, pre > 0);
                i += c.len_utf8();
            }
        }
    }
    out.trim().to_owned()
}

struct Tag0 {
    name: String,
    closing: bool,
}

/// Parses the tag at the start of `s` (which begins with `<`): its lower-cased name, whether
/// it closes, and its length including `>` (quoted attribute values may hold `>`).
fn parse_tag(s: &str) -> Option<(Tag0, usize)> {
    let b = s.as_bytes();
    let mut j = 1;
    let closing = b.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    let bang = !closing && b.get(j) == Some(&b'!');
    if !bang && !b.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let start = j;
    while b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'!' || *c == b'-')
    {
        j += 1;
    }
    let name = s[start..j].to_ascii_lowercase();
    let mut quote = None;
    let mut k = j;
    while k < b.len() {
        match (quote, b[k]) {
            (None, b'>') => return Some((Tag0 { name, closing }, k + 1)),
            (None, q @ (b'"' | b'\'')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        k += 1;
    }
    // An unterminated quote: fall back to the first `>`; no `>` at all: not a tag.
    let end = s[j..].find('>')? + j;
    Some((Tag0 { name, closing }, end + 1))
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "li"
            | "ul"
            | "ol"
            | "blockquote"
            | "pre"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "hr"
            | "table"
            | "tr"
    )
}

fn push_text_char(out: &mut String, c: char, pre: bool) {
    if pre || !c.is_ascii_whitespace() {
        out.push(c);
    } else if !(out.is_empty() || out.ends_with([' ', '\n'])) {
        out.push(' ');
    }
}

fn trim_trailing_spaces(out: &mut String) {
    let n = out.trim_end_matches(' ').len();
    out.truncate(n);
}

/// Makes `out` end with `n` line breaks (none at the very start).
fn ensure_newlines(out: &mut String, n: usize) {
    trim_trailing_spaces(out);
    if out.is_empty() {
        return;
    }
    let have = out.len() - out.trim_end_matches('\n').len();
    for _ in have..n {
        out.push('\n');
    }
}

/// Decodes the entity at the start of `s` (which begins with `&`). Returns the character,
/// or `None` when it is not a valid entity, and how many bytes to consume (just the `&`
/// when invalid, so the rest is read again as text).
fn decode_entity(s: &str) -> (Option<char>, usize) {
    let body = &s[1..];
    let Some(semi) = body.bytes().take(33).position(|b| b == b';') else {
        return (None, 1);
    };
    let name = &body[..semi];
    let c = match name.strip_prefix('#') {
        Some(num) => {
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()
                }
                None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => {
                    num.parse().ok()
                }
                _ => None,
            };
            n.filter(|&n| n != 0).and_then(char::from_u32)
        }
        None => named_entity(name),
    };
    match c {
        Some(c) => (Some(c), semi + 2),
        None => (None, 1),
    }
}

/// The named entities decoded by [`html_to_text`]: the XML five, `nbsp`, and the
/// typographic and Latin-1 ones that appear in posts. Others stay as written.
pub fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "times" => '×',
        "divide" => '÷',
        "plusmn" => '±',
        "iexcl" => '¡',
        "iquest" => '¿',
        "shy" => '\u{ad}',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        "agrave" => 'à',
        "aacute" => 'á',
        "acirc" => 'â',
        "auml" => 'ä',
        "ccedil" => 'ç',
        "egrave" => 'è',
        "eacute" => 'é',
        "ecirc" => 'ê',
        "euml" => 'ë',
        "iuml" => 'ï',
        "ntilde" => 'ñ',
        "ouml" => 'ö',
        "oacute" => 'ó',
        "uuml" => 'ü',
        "uacute" => 'ú',
        "szlig" => 'ß',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "Eacute" => 'É',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_paragraphs_and_breaks() {
        assert_eq!(html_to_text("<p>Hello</p><p>World</p>"), "Hello\n\nWorld");
        assert_eq!(html_to_text("<p>a<br>b<br/>c<br />d</p>"), "a\nb\nc\nd");
        assert_eq!(html_to_text("<p>  spaced \n  out  </p>"), "spaced out");
        assert_eq!(
            html_to_text("<ul><li>one</li><li>two</li></ul>"),
            "one\ntwo"
        );
    }

    #[test]
    fn html_mastodon_links_keep_full_url() {
        let html = r#"<p>see <a href="https://example.com/long" rel="nofollow noopener" target="_blank"><span class="invisible">https://</span><span class="ellipsis">example.com/lo</span><span class="invisible">ng</span></a> now</p>"#;
        assert_eq!(html_to_text(html), "see https://example.com/long now");
        let mention = r#"<p><span class="h-card"><a href="https://x.y/@bob" class="u-url mention">@<span>bob</span></a></span> hi <a href="https://x.y/tags/rust" class="mention hashtag" rel="tag">#<span>rust</span></a></p>"#;
        assert_eq!(html_to_text(mention), "@bob hi #rust");
    }

    #[test]
    fn html_entities() {
        assert_eq!(
            html_to_text("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39; &apos;f&apos;"),
            "a & b <c> \"d\" 'e' 'f'"
        );
        assert_eq!(
            html_to_text("it&#8217;s &#x1F600; &#X1f600;"),
            "it\u{2019}s \u{1f600} \u{1f600}"
        );
        assert_eq!(
            html_to_text("x&nbsp;y &hellip; &mdash; &eacute;"),
            "x\u{a0}y … — é"
        );
        // Invalid or unknown entities stay as written.
        for s in [
            "&bogus;",
            "&amp",
            "& b",
            "&#;",
            "&#x;",
            "&#xZZ;",
            "&#0;",
            "&#xD800;",
            "&#99999999999;",
            "&;",
            "&#-1;",
        ] {
            assert_eq!(html_to_text(s), s, "{s}");
        }
        assert_eq!(html_to_text("&&amp;"), "&&");
    }

    #[test]
    fn html_broken_and_odd_markup() {
        assert_eq!(html_to_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(html_to_text("<p>unclosed <b>bold"), "unclosed bold");
        assert_eq!(html_to_text("trailing <a href=\"x"), "trailing <a href=\"x");
        assert_eq!(html_to_text("<a title=\"1 > 0\">yes</a>"), "yes");
        assert_eq!(html_to_text("x<!-- hidden -->y<!-- open"), "xy");
        assert_eq!(
            html_to_text("<script>alert(1)</script>ok<style>p{}</style>"),
            "ok"
        );
        assert_eq!(html_to_text("<SCRIPT>x</Script>ok"), "ok");
        assert_eq!(html_to_text("<script>never closed"), "");
        assert_eq!(html_to_text("<pre>  keep\n  this</pre>"), "keep\n  this");
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<p></p><br>"), "");
        assert_eq!(html_to_text("日本語 <b>テキスト</b>"), "日本語 テキスト");
    }

    #[test]
    fn escaped_markers_stay_text() {
        // Entities are decoded after tags are stripped: escaped markers are text, not tags.
        assert_eq!(
            html_to_text("<p>&lt;&lt;&lt;POST hi &lt;/post&gt; POST&gt;&gt;&gt;</p>"),
            "<<<POST hi </post> POST>>>"
        );
    }
}
