//! Everything that talks to PostgreSQL: the byte stream under every connection (TCP, then
//! TLS as `sslmode` says: `transport.rs`), the replication-protocol connection (walsender),
//! the catalog and snapshot queries (tokio-postgres), and their errors. Sinks never see any
//! of it: they receive [`crate::protocol::schema`] types and rows.

pub mod catalog;
pub mod publication;
pub mod replication;
pub mod transport;

use crate::clients::tls::{TlsSettings, Verify};
use crate::config::{ChannelBinding, PostgresConfig, Secret, SslMode};
use crate::runtime::fault::ErrorClass;
use std::time::Duration;

/// Why talking to Postgres failed. Messages name the server (`host:port`), never the password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL at {addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("PostgreSQL at {addr}: connection timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("PostgreSQL at {addr}: {message}")]
    Server { addr: String, message: String },
    #[error("PostgreSQL at {addr}: authentication: {message}")]
    Auth { addr: String, message: String },
    #[error("PostgreSQL at {addr}: connection lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("PostgreSQL at {addr}: protocol: {message}")]
    Protocol { addr: String, message: String },
    #[error("PostgreSQL at {addr}: {message}")]
    Client { addr: String, message: String },
    /// The config or the schema cannot be replicated as it is (a table without a key, an
    /// empty publication): permanent, the same would be found again.
    #[error("PostgreSQL: {0}")]
    Setup(String),
    /// The client library could not reach the server or lost the connection.
    #[error("PostgreSQL at {addr}: {message}")]
    Unavailable { addr: String, message: String },
    /// TLS could not be set up or was refused: a certificate file, the server's certificate,
    /// a server without TLS where `sslmode` requires it. The same would happen again.
    #[error("PostgreSQL at {addr}: {message}")]
    Tls { addr: String, message: String },
    /// The server asked for a password in a form a listener could use, over a connection
    /// without TLS; it was not sent.
    #[error("PostgreSQL at {addr}: the server asks for the password in {method} form over a connection without TLS; it was not sent (anyone on the path could read it): set sslmode = \"require\" or stronger (or allow_insecure_password = true on a trusted network)")]
    InsecurePassword { addr: String, method: &'static str },
}

impl PgError {
    /// A tokio-postgres error with its cause: the server's message and SQLSTATE, or the I/O
    /// error under it (tokio-postgres's own text is often just "db error").
    pub fn client(addr: String, e: tokio_postgres::Error) -> PgError {
        let message = match e.as_db_error() {
            Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
            None => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    src = s.source();
                }
                m
            }
        };
        if e.as_db_error().is_none() && (e.is_closed() || has_io_source(&e)) {
            PgError::Unavailable { addr, message }
        } else {
            PgError::Client { addr, message }
        }
    }

    /// The server is away for now: unreachable, the connection lost, shutting down or
    /// starting up (SQLSTATE class 08 and 57P), out of connections (53300), or the slot
    /// still held by the walsender of a connection that was cut (55006). Not: refused
    /// credentials, a missing object, a protocol error.
    pub fn is_outage(&self) -> bool {
        match self {
            PgError::Connect { .. }
            | PgError::ConnectTimeout { .. }
            | PgError::Io { .. }
            | PgError::Unavailable { .. } => true,
            PgError::Server { message, .. } | PgError::Client { message, .. } => sqlstate(message)
                .is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "55006"
                }),
            _ => false,
        }
    }

    /// Outage when the server is away (see [`PgError::is_outage`]); permanent when it
    /// refused our credentials (authentication, SQLSTATE class 28, TLS) or the config or
    /// schema cannot work ([`PgError::Setup`]); transient otherwise.
    pub fn class(&self) -> ErrorClass {
        match self {
            _ if self.is_outage() => ErrorClass::Outage,
            // Refused credentials or TLS, a config or schema the pipeline cannot run with
            // (a table without a key, an empty publication): a restart would meet them again.
            PgError::Auth { .. }
            | PgError::Tls { .. }
            | PgError::InsecurePassword { .. }
            | PgError::Setup(_) => ErrorClass::Permanent,
            PgError::Server { message, .. } | PgError::Client { message, .. }
                if sqlstate(message).is_some_and(|c| c.starts_with("28")) =>
            {
                ErrorClass::Permanent
            }
            _ => ErrorClass::Transient,
        }
    }
}

/// The class of an error of an actor that talks to Postgres: a [`PgError`] by its
/// [`PgError::class`], anything else by [`crate::runtime::fault::classify`].
pub fn classify(err: &(dyn std::error::Error + 'static)) -> ErrorClass {
    match err.downcast_ref::<PgError>() {
        Some(e) => e.class(),
        None => crate::runtime::fault::classify(err),
    }
}

/// The SQLSTATE of a message written as `SEVERITY CODE: text`.
fn sqlstate(message: &str) -> Option<&str> {
    let code = message.split_whitespace().nth(1)?.strip_suffix(':')?;
    (code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        src = s.source();
    }
    false
}

/// Connection parameters shared by both kinds of connection.
#[derive(Clone)]
pub struct PgParams {
    /// The server's name: verified in its certificate and sent as SNI.
    pub host: String,
    /// Where to connect instead of resolving `host` (libpq's `hostaddr`).
    pub hostaddr: Option<String>,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    pub connect_timeout: Duration,
    pub sslmode: SslMode,
    pub sslrootcert: Option<std::path::PathBuf>,
    pub sslcert: Option<std::path::PathBuf>,
    pub sslkey: Option<std::path::PathBuf>,
    pub channel_binding: ChannelBinding,
    pub allow_insecure_password: bool,
}

impl PgParams {
    pub fn from_config(c: &PostgresConfig) -> Self {
        PgParams {
            host: c.host.clone(),
            hostaddr: c.hostaddr.clone(),
            port: c.port,
            user: c.user.clone(),
            password: c.password.clone(),
            database: c.database.clone(),
            connect_timeout: c.status_interval.0.max(c.connect_timeout.0),
            sslmode: c.sslmode,
            sslrootcert: c.sslrootcert.clone(),
            sslcert: c.sslcert.clone(),
            sslkey: c.sslkey.clone(),
            channel_binding: c.channel_binding,
            allow_insecure_password: c.allow_insecure_password,
        }
    }

    /// `host:port` (and the address connected to, when `hostaddr` is set): names the server
    /// in every message, never with credentials.
    pub fn addr(&self) -> String {
        match &self.hostaddr {
            Some(a) => format!("{}:{} ({a})", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// What TLS checks, by libpq's rules: `prefer` and `require` encrypt without verifying,
    /// except that `require` with a root certificate file verifies the chain (as libpq does);
    /// `verify-ca` the chain; `verify-full` the chain and the host name. `None`: no TLS.
    pub fn tls_settings(&self) -> Option<TlsSettings> {
        let verify = match self.sslmode {
            SslMode::Disable => return None,
            SslMode::Prefer => Verify::Nothing,
            SslMode::Require if self.sslrootcert.is_some() => Verify::Chain,
            SslMode::Require => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::Full,
        };
        Some(TlsSettings {
            verify,
            roots: self.sslrootcert.clone(),
            client_cert: self.sslcert.clone().zip(self.sslkey.clone()),
        })
    }
}

/// Session settings that fix the text format of every value we read (pgoutput and COPY
/// both use the session's output functions).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("application_name", "tributary"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_from_failures() {
        let addr = || "127.0.0.1:1".to_string();
        let server = |m: &str| PgError::Server {
            addr: addr(),
            message: m.into(),
        };
        for m in [
            "FATAL 57P01: terminating connection due to administrator command",
            "FATAL 57P03: the database system is starting up",
            "FATAL 53300: sorry, too many clients already",
            "ERROR 55006: replication slot \"s\" is active for PID 42",
            "FATAL 08006: connection failure",
        ] {
            assert!(server(m).is_outage(), "{m}");
            let boxed: Box<dyn std::error::Error> = Box::new(server(m));
            assert_eq!(classify(boxed.as_ref()), ErrorClass::Outage, "{m}");
        }
        for m in ["ERROR 42P01: relation \"t\" does not exist", "no code here"] {
            assert!(!server(m).is_outage(), "{m}");
            assert_eq!(server(m).class(), ErrorClass::Transient, "{m}");
        }
        let refused = "FATAL 28P01: password authentication failed for user \"u\"";
        assert!(!server(refused).is_outage());
        assert_eq!(server(refused).class(), ErrorClass::Permanent);
        assert!(PgError::Io {
            addr: addr(),
            source: std::io::Error::other("reset")
        }
        .is_outage());
        let auth = PgError::Auth {
            addr: addr(),
            message: "no".into(),
        };
        assert!(!auth.is_outage());
        assert_eq!(auth.class(), ErrorClass::Permanent);
        assert!(!PgError::Protocol {
            addr: addr(),
            message: "bad".into()
        }
        .is_outage());
    }
}
