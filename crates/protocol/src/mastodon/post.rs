//! The [`Post`]: a status reduced to what the sentiment pipeline classifies and stores, keyed
//! by the instance host ([`instance_host`]) and the status id.
//!
//! Must never: give one author two names (a local `acct` gets the instance host appended),
//! or one reblogged original two keys (a reblog describes its original).

use serde::{Deserialize, Serialize};

use super::html::html_to_text;
use super::status::Status;

/// A status reduced to what the sentiment pipeline classifies and stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// The host we read the status from (`mastodon.social`), see [`instance_host`].
    pub instance: String,
    /// The status id on that instance.
    pub status_id: String,
    /// As the server sent it (RFC 3339, UTC).
    pub created_at: String,
    /// Always `user@domain`: Mastodon's `acct` is a bare `user` for local accounts, so the
    /// instance host is appended then. This keeps one author one name whichever instance
    /// the post was read from.
    pub username: String,
    pub bot: bool,
    pub language: Option<String>,
    /// Plain text: the content warning (if any), a blank line, then the body.
    pub text: String,
    /// The status page, falling back to its ActivityPub uri.
    pub url: Option<String>,
    pub edited_at: Option<String>,
    /// The status reached us as a reblog (boost).
    pub reblog: bool,
}

impl Post {
    /// The post of a status read from `instance` (a host or URL, normalised by
    /// [`instance_host`]).
    ///
    /// A reblog wrapper has no text of its own, so the post describes the reblogged
    /// (original) status — its id, author, time, text and url — with `reblog: true`. The
    /// same original reblogged many times thus keeps one `(instance, status_id)`, and a
    /// table deduplicating on that key classifies its text once. (Mastodon's public
    /// timelines do not carry reblogs; whether to skip them elsewhere is a config filter.)
    pub fn from_status(instance: &str, status: &Status) -> Post {
        let instance = instance_host(instance);
        let (s, reblog) = match &status.reblog {
            Some(inner) => (&**inner, true),
            None => (status, false),
        };
        let acct = s.account.acct.trim_start_matches('@');
        let username = if acct.contains('@') || instance.is_empty() {
            acct.to_owned()
        } else {
            format!("{acct}@{instance}")
        };
        let body = html_to_text(&s.content);
        let spoiler = s.spoiler_text.trim();
        let text = match (spoiler.is_empty(), body.is_empty()) {
            (true, _) => body,
            (false, true) => spoiler.to_owned(),
            (false, false) => format!("{spoiler}\n\n{body}"),
        };
        let url = s
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| (!s.uri.is_empty()).then(|| s.uri.clone()));
        Post {
            instance,
            status_id: s.id.clone(),
            created_at: s.created_at.clone(),
            username,
            bot: s.account.bot,
            language: s.language.clone().filter(|l| !l.is_empty()),
            text,
            url,
            edited_at: s.edited_at.clone(),
            reblog,
        }
    }
}

/// The lower-case host of an instance given as `mastodon.social`, `https://mastodon.social/`
/// or `https://user@mastodon.social:443/path` (port kept, userinfo and path dropped).
pub fn instance_host(instance: &str) -> String {
    let s = instance.trim();
    let s = s.split_once("://").map_or(s, |(_, r)| r);
    let s = s.split(['/', '?', '#']).next().unwrap_or("");
    let s = s.rsplit_once('@').map_or(s, |(_, h)| h);
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mastodon::tests::status;
    use crate::mastodon::Account;

    #[test]
    fn post_from_local_status() {
        let p = Post::from_status("https://Mastodon.Social/", &status());
        assert_eq!(p.instance, "mastodon.social");
        assert_eq!(p.username, "alice@mastodon.social");
        assert_eq!(p.text, "Hello & welcome!\n\nSecond\nline");
        assert_eq!(
            p.url.as_deref(),
            Some("https://mastodon.social/@alice/113500000000000001")
        );
        assert!(!p.reblog && !p.bot);
        assert_eq!(p.created_at, "2024-11-20T10:00:00.000Z");
    }

    #[test]
    fn post_remote_account_keeps_its_domain_and_spoiler_leads() {
        let mut s = status();
        s.account.acct = "bob@other.example".into();
        s.spoiler_text = "politics".into();
        s.url = None;
        let p = Post::from_status("mastodon.social", &s);
        assert_eq!(p.username, "bob@other.example");
        assert_eq!(p.text, "politics\n\nHello & welcome!\n\nSecond\nline");
        assert_eq!(p.url.as_deref(), Some(s.uri.as_str()));
    }

    #[test]
    fn post_of_a_reblog_describes_the_original() {
        let original = status();
        let wrapper = Status {
            id: "999".into(),
            created_at: "2024-11-21T00:00:00Z".into(),
            content: String::new(),
            account: Account {
                acct: "carol".into(),
                bot: true,
                ..Account::default()
            },
            reblog: Some(Box::new(original.clone())),
            ..Status::default()
        };
        let p = Post::from_status("mastodon.social", &wrapper);
        assert!(p.reblog);
        assert_eq!(p.status_id, original.id);
        assert_eq!(p.username, "alice@mastodon.social");
        assert!(!p.bot);
        assert_eq!(p.text, "Hello & welcome!\n\nSecond\nline");
    }

    #[test]
    fn instance_host_normalises() {
        assert_eq!(instance_host("mastodon.social"), "mastodon.social");
        assert_eq!(
            instance_host(" https://u@Fosstodon.org:8443/api?x#y "),
            "fosstodon.org:8443"
        );
        assert_eq!(instance_host(""), "");
    }
}
