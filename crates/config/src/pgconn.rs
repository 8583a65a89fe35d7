//! libpq connection strings, read without I/O as libpq reads them: the URI form
//! (`postgresql://user:password@host:port/dbname?param=value&...`, `postgres://` too, with
//! percent-decoding and `[::1]` IPv6 hosts) and the keyword/value form
//! (`host=h port=5432 password='p w'`, with single quotes and backslash escapes). The result
//! is the parameters `[pipeline.postgres]` takes; `sources.rs` merges them with the keys.
//!
//! Must never: put a value of the string in an error (in a malformed string the password can
//! end up anywhere, so errors name parameters and parts, never what they hold), or accept a
//! parameter tributary would silently ignore (only `application_name` is), several hosts, or
//! a Unix socket.

use crate::value::Secret;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a connection string sets; `None` where it says nothing (an empty value, as in libpq,
/// also says nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnParams {
    /// A host name or IP address, IPv6 without brackets.
    pub host: Option<String>,
    /// An IP address (checked), IPv6 without brackets.
    pub hostaddr: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
    /// A path, or `system` as written.
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub channel_binding: Option<ChannelBinding>,
    /// libpq's seconds, with its minimum of 2.
    pub connect_timeout: Option<Duration>,
}

/// Why a connection string was refused. The message holds no value of the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnError(String);

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnError {}

fn err(message: impl Into<String>) -> ConnError {
    ConnError(message.into())
}

const TAKEN: &str = "host, hostaddr, port, user, password, dbname, sslmode, sslrootcert, \
                     sslcert, sslkey, channel_binding, connect_timeout and application_name";

/// Reads a URI (`postgresql://` or `postgres://`) or a keyword/value string.
pub fn parse(s: &str) -> Result<ConnParams, ConnError> {
    let s = s.trim();
    if let Some(rest) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        parse_uri(rest)
    } else if s.contains("://") {
        Err(err(
            "must start with postgresql:// or postgres://, or be libpq's key=value pairs",
        ))
    } else {
        parse_keywords(s)
    }
}

/// A host as the `host` parameter or key may give it: one name or address, for TCP.
/// Brackets around an IPv6 address are dropped; `None` for an empty one.
pub fn check_host(host: &str) -> Result<Option<String>, ConnError> {
    if host.contains(',') {
        return Err(err(
            "several hosts are not supported: give one host (tributary follows one primary)",
        ));
    }
    if host.starts_with('/') || host.starts_with('@') {
        return Err(err(
            "a Unix-domain socket is not supported: give a host name or IP address (TCP only)",
        ));
    }
    Ok(nonempty(unbracket(host).to_string()))
}

/// A `hostaddr`: one IP address (brackets around IPv6 dropped); `None` for an empty one.
pub fn check_hostaddr(addr: &str) -> Result<Option<String>, ConnError> {
    if addr.contains(',') {
        return Err(err("several host addresses are not supported: give one"));
    }
    let addr = unbracket(addr);
    if addr.is_empty() {
        return Ok(None);
    }
    addr.parse::<std::net::IpAddr>().map_err(|_| {
        err("`hostaddr` must be an IP address (it is where to connect; `host` is the name the certificate is checked against)")
    })?;
    Ok(Some(addr.to_string()))
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A parameter name as an error may show it: only when it looks like one (lower-case letters,
/// digits, `_`), since in a malformed string a "name" can be a piece of a password.
fn shown(name: &str) -> String {
    let looks_like_a_name = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if looks_like_a_name {
        format!("`{name}`")
    } else {
        "a parameter whose name is not a libpq keyword".to_string()
    }
}

impl ConnParams {
    /// Sets one parameter as libpq would (the last one given wins).
    fn set(&mut self, name: &str, value: String) -> Result<(), ConnError> {
        match name {
            "host" => self.host = check_host(&value)?,
            "hostaddr" => self.hostaddr = check_hostaddr(&value)?,
            "port" => self.port = parse_port(&value)?,
            "user" => self.user = nonempty(value),
            "password" => self.password = nonempty(value).map(Secret::new),
            "dbname" => self.dbname = nonempty(value),
            "sslmode" if value.is_empty() => self.sslmode = None,
            "sslmode" => {
                self.sslmode = Some(value.parse().map_err(|e| err(format!("`sslmode`: {e}")))?)
            }
            "sslrootcert" => self.sslrootcert = nonempty(value),
            "sslcert" => self.sslcert = nonempty(value),
            "sslkey" => self.sslkey = nonempty(value),
            "channel_binding" if value.is_empty() => self.channel_binding = None,
            "channel_binding" => {
                self.channel_binding = Some(
                    value
                        .parse()
                        .map_err(|e| err(format!("`channel_binding`: {e}")))?,
                )
            }
            "connect_timeout" => self.connect_timeout = parse_connect_timeout(&value)?,
            // Only a label in pg_stat_activity; tributary sets its own.
            "application_name" => {}
            other => {
                return Err(err(format!(
                    "{} is not supported: tributary takes {TAKEN}",
                    shown(other)
                )))
            }
        }
        Ok(())
    }
}

fn parse_port(value: &str) -> Result<Option<u16>, ConnError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.contains(',') {
        return Err(err(
            "several ports are not supported: give one host and port",
        ));
    }
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(err("the port must be a number from 1 to 65535")),
    }
}

fn parse_connect_timeout(value: &str) -> Result<Option<Duration>, ConnError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let secs: i64 = value
        .parse()
        .map_err(|_| err("`connect_timeout` must be a whole number of seconds"))?;
    if secs <= 0 {
        return Err(err(
            "`connect_timeout` of 0 or less means \"wait forever\" in libpq, which tributary does not do: give seconds (2 or more)",
        ));
    }
    // libpq's minimum: 1 is taken as 2.
    Ok(Some(Duration::from_secs(secs.max(2) as u64)))
}

/// `%XX` decoding as libpq does it: `+` stays `+`, `%00` is refused, the result must be UTF-8.
/// `what` names the part in errors.
fn decode(s: &str, what: &str) -> Result<String, ConnError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => (hi, lo),
                _ => {
                    return Err(err(format!(
                        "{what} has an invalid percent-encoding (`%` must be followed by two hex digits; write a `%` itself as %25)"
                    )))
                }
            };
            let byte = (hi * 16 + lo) as u8;
            if byte == 0 {
                return Err(err(format!("{what} contains %00, which libpq refuses")));
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err(format!("{what} is not UTF-8 once percent-decoded")))
}

/// After the scheme: `[user[:password]@][host][:port][/dbname][?param=value&...]`.
fn parse_uri(rest: &str) -> Result<ConnParams, ConnError> {
    let mut p = ConnParams::default();
    // As libpq: user info is what precedes the first `@` that comes before any `/`.
    let until_slash = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..until_slash].find('@') {
        Some(at) => {
            let (user, password) = match rest[..at].split_once(':') {
                Some((u, pw)) => (u, Some(pw)),
                None => (&rest[..at], None),
            };
            p.user = nonempty(decode(user, "the user name")?);
            if let Some(pw) = password {
                p.password = nonempty(decode(pw, "the password")?).map(Secret::new);
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let netloc_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (netloc, rest) = rest.split_at(netloc_end);
    if netloc.contains(',') {
        return Err(err(
            "several hosts are not supported: give one host (tributary follows one primary)",
        ));
    }
    if netloc.contains('@') {
        return Err(err(
            "the host part contains `@`: an `@`, `:`, `/` or `?` in the user name or password must be percent-encoded (`@` is %40)",
        ));
    }
    let (host, port) = if let Some(v6) = netloc.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| err("an IPv6 host misses its closing `]`"))?;
        if close == 0 {
            return Err(err("the IPv6 host between `[` and `]` is empty"));
        }
        let port = match &v6[close + 1..] {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or_else(|| {
                err("after an IPv6 host's `]` comes `:port`, `/dbname`, `?params` or nothing")
            })?),
        };
        (&v6[..close], port)
    } else {
        match netloc.split_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (netloc, None),
        }
    };
    p.host = check_host(&decode(host, "the host")?)?;
    if let Some(port) = port {
        p.port = parse_port(&decode(port, "the port")?).map_err(|e| {
            err(format!(
                "{e} (a `/`, `:` or `@` in the password must be percent-encoded, as %2F, %3A, %40)"
            ))
        })?;
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if let Some(db) = path.strip_prefix('/') {
        p.dbname = nonempty(decode(db, "the database name")?);
    }
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| err("a query parameter has no `=` (write name=value)"))?;
        if value.contains('=') {
            return Err(err(
                "a query parameter's value contains `=`: write it as %3D",
            ));
        }
        let name = decode(name, "a query parameter's name")?;
        let value = decode(value, &format!("the value of {}", shown(&name)))?;
        if name == "ssl" && value == "true" {
            // libpq's JDBC compatibility: `ssl=true` means `sslmode=require`.
            p.set("sslmode", "require".into())?;
        } else {
            p.set(&name, value)?;
        }
    }
    Ok(p)
}

/// `name = value` pairs separated by white space; a value is a run of non-space characters
/// or a single-quoted string, and `\` escapes the next character in either.
fn parse_keywords(s: &str) -> Result<ConnParams, ConnError> {
    let mut p = ConnParams::default();
    let c: Vec<char> = s.chars().collect();
    let space = |c: char| c.is_ascii_whitespace() || c == '\x0b';
    let mut i = 0;
    loop {
        while i < c.len() && space(c[i]) {
            i += 1;
        }
        // Past the end after a trailing `\`.
        if i >= c.len() {
            return Ok(p);
        }
        let start = i;
        while i < c.len() && c[i] != '=' && !space(c[i]) {
            i += 1;
        }
        let name: String = c[start..i].iter().collect();
        while i < c.len() && space(c[i]) {
            i += 1;
        }
        if c.get(i) != Some(&'=') {
            // The word may be a piece of an unquoted value with a space, so it is not shown.
            return Err(err(
                "a word without `=` (write key=value pairs; quote a value that has spaces: password='a b')",
            ));
        }
        i += 1;
        while i < c.len() && space(c[i]) {
            i += 1;
        }
        let mut value = String::new();
        if c.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match c.get(i) {
                    None => {
                        return Err(err(format!(
                            "the quoted value of {} has no closing `'`",
                            shown(&name)
                        )))
                    }
                    Some('\\') => {
                        if let Some(&e) = c.get(i + 1) {
                            value.push(e);
                        }
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        value.push(ch);
                        i += 1;
                    }
                }
            }
        } else {
            while i < c.len() && !space(c[i]) {
                if c[i] == '\\' {
                    if let Some(&e) = c.get(i + 1) {
                        value.push(e);
                    }
                    i += 2;
                } else {
                    value.push(c[i]);
                    i += 1;
                }
            }
        }
        p.set(&name, value)?;
    }
}

/// libpq's `sslmode` (`allow` excepted): how the connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// As written in the file (kebab-case, as libpq).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error does not repeat the text (it may come from a connection string).
impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err("`allow` (TLS only if a plain connection is refused) is not supported: use `prefer` (TLS whenever the server offers it) or stronger".into())
            }
            _ => {
                return Err(
                    "must be disable, prefer, require, verify-ca or verify-full".into(),
                )
            }
        })
    }
}

/// libpq's `channel_binding`: whether SCRAM authentication binds to the TLS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    Prefer,
    Require,
}

impl ChannelBinding {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl fmt::Display for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error does not repeat the text (it may come from a connection string).
impl FromStr for ChannelBinding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            _ => return Err("must be disable, prefer or require".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "hunter2-SECRET";

    fn ok(s: &str) -> ConnParams {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The error of `s`, checked to hold no piece of the password.
    fn bad(s: &str) -> String {
        let e = parse(s).expect_err(s).to_string();
        for piece in ["hunter2", "SECRET"] {
            assert!(!e.contains(piece), "{s}: the error shows the password: {e}");
        }
        e
    }

    #[test]
    fn rds_uri() {
        let p = ok("postgresql://postgres:pw@db.abc.eu-west-1.rds.amazonaws.com:5432/postgres?sslmode=verify-full&sslrootcert=/etc/ssl/rds.pem");
        assert_eq!(
            p.host.as_deref(),
            Some("db.abc.eu-west-1.rds.amazonaws.com")
        );
        assert_eq!(p.port, Some(5432));
        assert_eq!(p.user.as_deref(), Some("postgres"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(p.dbname.as_deref(), Some("postgres"));
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ssl/rds.pem"));
    }

    #[test]
    fn neon_uri() {
        let p = ok("postgresql://u:p@ep-x-123.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require");
        assert_eq!(
            p.host.as_deref(),
            Some("ep-x-123.eu-central-1.aws.neon.tech")
        );
        assert_eq!(p.port, None, "no port in the URI: the default applies");
        assert_eq!(p.dbname.as_deref(), Some("neondb"));
        assert_eq!(p.sslmode, Some(SslMode::Require));
        assert_eq!(p.channel_binding, Some(ChannelBinding::Require));
    }

    #[test]
    fn supabase_uris() {
        // Session pooler: the user carries the project ref.
        let p = ok("postgresql://postgres.abcdefghijklmnop:pa%24%24w%40rd@aws-0-eu-central-1.pooler.supabase.com:5432/postgres");
        assert_eq!(p.user.as_deref(), Some("postgres.abcdefghijklmnop"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("pa$$w@rd"));
        assert_eq!(
            p.host.as_deref(),
            Some("aws-0-eu-central-1.pooler.supabase.com")
        );
        // Direct connection.
        let p = ok("postgresql://postgres:pw@db.abcdefghijklmnop.supabase.co:5432/postgres?sslmode=verify-full&sslrootcert=/run/secrets/prod-ca-2021.crt");
        assert_eq!(p.host.as_deref(), Some("db.abcdefghijklmnop.supabase.co"));
        assert_eq!(
            p.sslrootcert.as_deref(),
            Some("/run/secrets/prod-ca-2021.crt")
        );
        // The transaction pooler's Prisma flag is not a libpq parameter, and libpq refuses it.
        let e = bad("postgres://postgres.ref:hunter2-SECRET@aws-0-eu-central-1.pooler.supabase.com:6543/postgres?pgbouncer=true");
        assert!(
            e.contains("`pgbouncer`") && e.contains("not supported"),
            "{e}"
        );
    }

    #[test]
    fn uri_details() {
        let p = ok("postgres://[::1]:6543/d%20b?application_name=x&connect_timeout=7&hostaddr=10.0.0.1&sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(p.host.as_deref(), Some("::1"));
        assert_eq!(p.port, Some(6543));
        assert_eq!(p.dbname.as_deref(), Some("d b"));
        assert_eq!(p.user, None);
        assert_eq!(p.password, None);
        assert_eq!(p.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(p.hostaddr.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            (p.sslcert.as_deref(), p.sslkey.as_deref()),
            (Some("/c.pem"), Some("/k.pem"))
        );
        assert_eq!(
            ok("postgresql://[2001:db8::1]").host.as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(ok("postgresql://").host, None);
        assert_eq!(
            ok("postgresql://h?connect_timeout=1").connect_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            ok("postgresql://h?ssl=true").sslmode,
            Some(SslMode::Require)
        );
        // Query parameters override the parts before them; `+` is not a space.
        let p = ok("postgresql://a@h/d?user=b&password=x+y&dbname=&host=g");
        assert_eq!(p.user.as_deref(), Some("b"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("x+y"));
        assert_eq!(p.dbname, None, "an empty value says nothing");
        assert_eq!(p.host.as_deref(), Some("g"));
        // The password may hold `:`; the user name is up to the first one.
        let p = ok("postgresql://u:a:b@h");
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("a:b"));
        // A password made of `?` and `&` stays whole: user info ends at the first `@`.
        let p = ok("postgresql://u:a?b&c@h/d");
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("a?b&c"));
        assert_eq!(p.host.as_deref(), Some("h"));
    }

    #[test]
    fn keyword_strings() {
        let p = ok("host=h port=5433 user=u password='p w' dbname=d sslmode=verify-full");
        assert_eq!(p.host.as_deref(), Some("h"));
        assert_eq!(p.port, Some(5433));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p w"));
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        let p = ok(r"  password = 'it\'s \\ x'  user=a\ b dbname='' sslrootcert=system");
        assert_eq!(p.password.as_ref().map(Secret::expose), Some(r"it's \ x"));
        assert_eq!(p.user.as_deref(), Some("a b"));
        assert_eq!(p.dbname, None);
        assert_eq!(p.sslrootcert.as_deref(), Some("system"));
        // No space is needed after a quoted value; the last of a parameter wins.
        let p = ok("host='a'port=1 host=b");
        assert_eq!((p.host.as_deref(), p.port), (Some("b"), Some(1)));
        assert_eq!(ok("").host, None);
        assert_eq!(
            ok("host=[::1] hostaddr=::1").hostaddr.as_deref(),
            Some("::1")
        );
        // A trailing backslash escapes nothing.
        assert_eq!(ok(r"user=u\").user.as_deref(), Some("u"));
        assert!(parse(r"user='u\").is_err());
    }

    #[test]
    fn refused_parameters_are_named() {
        for s in [
            "host=h target_session_attrs=read-write",
            "postgresql://h/d?options=-c%20x%3Dy",
            "postgresql://h/d?gssencmode=disable",
        ] {
            let e = bad(s);
            assert!(
                e.contains("not supported") && e.contains("tributary takes"),
                "{e}"
            );
        }
        assert!(bad("host=h sslpassword=x").contains("`sslpassword`"));
        // A "name" that cannot be one is not shown.
        let e = bad("password=hunter2 SECRET=x");
        assert!(e.contains("not a libpq keyword"), "{e}");
    }

    #[test]
    fn several_hosts_and_sockets_are_refused() {
        for s in [
            "postgresql://h1,h2/d",
            "postgresql://u:hunter2-SECRET@h1:5432,h2:5433/d",
            "host=a,b",
            "postgresql:///d?host=a,b",
        ] {
            assert!(bad(s).contains("one host"), "{s}");
        }
        for s in [
            "host=/var/run/postgresql",
            "postgresql:///d?host=/tmp",
            "postgresql://%2Fvar%2Frun%2Fpostgresql/d",
            "host=@abstract",
        ] {
            assert!(bad(s).contains("TCP only"), "{s}");
        }
    }

    #[test]
    fn bad_values() {
        assert!(bad("sslmode=allow").contains("prefer"));
        assert!(bad("sslmode=verify_full").contains("verify-full"));
        assert!(bad("channel_binding=yes").contains("require"));
        assert!(bad("port=0").contains("1 to 65535"));
        assert!(bad("port=5432,5433").contains("one host"));
        assert!(bad("connect_timeout=0").contains("forever"));
        assert!(bad("connect_timeout=1.5").contains("whole number"));
        assert!(bad("hostaddr=db.example.com").contains("IP address"));
        assert!(bad("mysql://u:hunter2-SECRET@h/d").contains("postgresql://"));
    }

    /// Every way a string can be malformed around a password; `bad` checks no error shows it.
    #[test]
    fn errors_never_show_the_password() {
        for s in [
            // A `/` in the password: libpq then reads `u` as the host and the rest as a port.
            "postgresql://u:hunter2/SECRET@h/d",
            "postgresql://u:hunter2-SECRET@h:54x32/d",
            "postgresql://u:hunter2%ZZSECRET@h/d",
            "postgresql://u:hunter2%00SECRET@h/d",
            "postgresql://u:hunter2%FFSECRET@h/d",
            "postgresql://u:hunter2-SECRET@[::1/d",
            "postgresql://u:hunter2-SECRET@[]/d",
            "postgresql://u:hunter2-SECRET@[::1]x/d",
            "postgresql://u:hunter2@SECRET@h/d",
            "postgresql://u:hunter2-SECRET@h/d?sslmode=hunter2-SECRET",
            "postgresql://u:hunter2-SECRET@h/d?hunter2-SECRET",
            "postgresql://u:hunter2-SECRET@h/d?a=b=c",
            "postgresql://u@h/d?password=hunter2%SECRET",
            "host=h password=hunter2 SECRET",
            "host=h password='hunter2-SECRET",
            "host=h password=hunter2-SECRET port=hunter2-SECRET",
            "host=h password=hunter2-SECRET sslmode=hunter2-SECRET",
            "host=h password=hunter2-SECRET hostaddr=hunter2-SECRET",
            "host=h password=hunter2-SECRET connect_timeout=hunter2-SECRET",
            "https://u:hunter2-SECRET@h/d",
        ] {
            bad(s);
        }
        // And a parsed password is redacted in Debug.
        let p = ok(&format!("postgresql://u:{PW}@h/d"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some(PW));
        assert!(!format!("{p:?}").contains(PW));
    }
}
