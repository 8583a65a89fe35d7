//! `${VAR}` and `${VAR:-default}` in the raw text, before TOML parsing.
//!
//! Must never: put a variable's value in an error message (it may be a secret).

use crate::ConfigError;

/// Replaces `${VAR}` and `${VAR:-default}` in the raw text. Values are escaped for TOML basic
/// strings, so interpolation belongs inside `"..."`; a missing variable without a default is
/// an error that names it and its line.
pub(crate) fn interpolate(
    raw: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(raw.len());
    for (n, line) in raw.split_inclusive('\n').enumerate() {
        let mut rest = line;
        // Comments are left alone, so an example in a comment need not be set.
        let code_end = comment_start(line).unwrap_or(line.len());
        let mut consumed = 0;
        while let Some(start) = rest.find("${") {
            if consumed + start >= code_end {
                break;
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(ConfigError::BadInterpolation {
                file: file.to_string(),
                line: n + 1,
            })?;
            let expr = &after[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            let value = match (env(var), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(ConfigError::MissingEnv {
                        file: file.to_string(),
                        line: n + 1,
                        var: var.to_string(),
                    })
                }
            };
            escape_basic(&mut out, &value);
            consumed += start + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Appends `value` escaped for a TOML basic string: quotes, backslashes and every control
/// character (TOML refuses them raw, and the parse error would point into a secret).
fn escape_basic(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Byte offset of a `#` that starts a comment (outside a string), if any.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_str = false;
    let mut prev = '\0';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '#' if !in_str => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_values_stay_inside_the_string() {
        let value = "a\"b\\c\nd\te\rf\u{1}g\u{7f}h\u{1b}[0m";
        let text = interpolate("k = \"${S}\"\n", "f", &|_| Some(value.to_string())).unwrap();
        #[derive(serde::Deserialize)]
        struct K {
            k: String,
        }
        let parsed: K = toml::from_str(&text).expect("parses");
        assert_eq!(parsed.k, value);
    }
}
