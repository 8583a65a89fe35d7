//! Serde models of the Mastodon entities the pipeline reads: [`Status`], with its [`Account`]
//! and [`Tag`]s. They accept what other servers speaking the Mastodon API send: absent or
//! `null` fields, numeric ids.
//!
//! Must never: reject a status over a field the pipeline does not read (unknown fields are
//! ignored, absent and `null` ones take their default; only the id is required).

use serde::{Deserialize, Deserializer, Serialize};

/// A status as the REST and streaming APIs send it. Only the fields the pipeline reads;
/// unknown fields are ignored, and absent or `null` fields take their default so that
/// other ActivityPub servers speaking the Mastodon API (Pleroma, GoToSocial…) still parse.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct Status {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub created_at: String,
    #[serde(default)]
    pub edited_at: Option<String>,
    /// HTML; see [`html_to_text`](super::html_to_text).
    #[serde(default, deserialize_with = "null_default")]
    pub content: String,
    /// The content warning, plain text (empty when there is none).
    #[serde(default, deserialize_with = "null_default")]
    pub spoiler_text: String,
    #[serde(default)]
    pub language: Option<String>,
    /// The HTML page of the status; `null` for reblog wrappers.
    #[serde(default)]
    pub url: Option<String>,
    /// The ActivityPub id.
    #[serde(default, deserialize_with = "null_default")]
    pub uri: String,
    /// `public`, `unlisted`, `private` or `direct` (kept as text: servers add their own).
    #[serde(default, deserialize_with = "null_default")]
    pub visibility: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sensitive: bool,
    #[serde(default)]
    pub in_reply_to_id: Option<String>,
    /// The status this one reblogs (its own `content` is then empty).
    #[serde(default)]
    pub reblog: Option<Box<Status>>,
    #[serde(default, deserialize_with = "null_default")]
    pub account: Account,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Account {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub username: String,
    /// `user` for accounts of the instance we read from, `user@domain` for remote ones.
    #[serde(default, deserialize_with = "null_default")]
    pub acct: String,
    #[serde(default, deserialize_with = "null_default")]
    pub display_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub bot: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Tag {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Ids are strings in Mastodon, but some servers send numbers; both become a string.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        U(u64),
        I(i64),
    }
    Ok(match Option::<Id>::deserialize(d)? {
        Some(Id::S(s)) => s,
        Some(Id::U(n)) => n.to_string(),
        Some(Id::I(n)) => n.to_string(),
        None => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mastodon::tests::status;

    #[test]
    fn status_parses_and_ignores_unknown_fields() {
        let s = status();
        assert_eq!(s.id, "113500000000000001");
        assert_eq!(s.account.acct, "alice");
        assert_eq!(s.language.as_deref(), Some("en"));
        assert_eq!(s.tags[0].name, "rust");
        assert!(s.reblog.is_none());
    }

    #[test]
    fn status_tolerates_nulls_missing_fields_and_numeric_ids() {
        let s: Status = serde_json::from_str(
            r#"{"id": 42, "spoiler_text": null, "content": null, "account": {"id": 7, "bot": null}}"#,
        )
        .expect("tolerant parse");
        assert_eq!(s.id, "42");
        assert_eq!(s.account.id, "7");
        assert_eq!(s.content, "");
        assert!(!s.account.bot);
        assert!(
            serde_json::from_str::<Status>(r#"{"content": "x"}"#).is_err(),
            "id is required"
        );
    }
}
