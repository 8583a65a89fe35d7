//! Everything that talks to PostgreSQL: the replication-protocol connection (walsender),
//! the catalog and snapshot queries (tokio-postgres), and their errors. Sinks never see any
//! of it: they receive [`crate::protocol::schema`] types and rows.

pub mod catalog;
pub mod replication;

use crate::config::{PostgresConfig, Secret};
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
    #[error("PostgreSQL: {0}")]
    Setup(String),
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
        PgError::Client { addr, message }
    }
}

/// Connection parameters shared by both kinds of connection.
#[derive(Clone)]
pub struct PgParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    pub connect_timeout: Duration,
}

impl PgParams {
    pub fn from_config(c: &PostgresConfig) -> Self {
        PgParams {
            host: c.host.clone(),
            port: c.port,
            user: c.user.clone(),
            password: c.password.clone(),
            database: c.database.clone(),
            connect_timeout: c.status_interval.0.max(c.connect_timeout.0),
        }
    }
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
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
