//! Ordinary SQL against Postgres through tokio-postgres: the schema of each replicated table
//! (types resolved through pg_type, its replica identity), slot state, and the snapshot COPY
//! lines. The publication is in `publication.rs`.
//!
//! A table's key is what pgoutput identifies its rows by: the replica identity index under
//! REPLICA IDENTITY USING INDEX, else the primary key.
//!
//! Must never: build SQL from names without quoting them, or accept a table whose updates
//! and deletes could not be applied downstream (no key).

use super::transport::{self, Guarded, PgTls};
use super::{PgError, PgParams, SESSION_SETTINGS};
use crate::clients::tls::TlsInfo;
use crate::config::{ChannelBinding, SslMode};
use crate::protocol::pgoutput::{parse_lsn, Cell, Lsn};
use crate::protocol::schema::{Column, Identity, PgType, TableSchema};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use tokio_postgres::Client;

/// Opens an ordinary SQL connection with the session settings that fix value formats.
pub async fn connect(p: &PgParams) -> Result<Client, PgError> {
    Ok(connect_described(p).await?.0)
}

/// As [`connect`], with what the TLS handshake told (`None` without TLS).
pub async fn connect_described(p: &PgParams) -> Result<(Client, Option<TlsInfo>), PgError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&p.host)
        .port(p.port)
        .user(&p.user)
        .password(p.password.expose())
        .dbname(&p.database)
        .connect_timeout(p.connect_timeout)
        .application_name("tributary")
        .ssl_mode(match p.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        })
        .channel_binding(match p.channel_binding {
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        });
    let options: Vec<String> = SESSION_SETTINGS
        .iter()
        .filter(|(k, _)| *k != "application_name" && *k != "client_encoding")
        .map(|(k, v)| format!("-c {}={}", k, v.replace(' ', "\\ ")))
        .collect();
    cfg.options(options.join(" "));
    let tls = PgTls::new(p)?;
    let info = tls.info.clone();
    let opened = async {
        let stream = Guarded::new(transport::tcp(p).await?, p.allow_insecure_password);
        let refused = stream.refused.clone();
        cfg.connect_raw(stream, tls).await.map_err(|e| {
            if let Some(ask) = refused.lock().ok().and_then(|r| *r) {
                return PgError::InsecurePassword {
                    addr: p.addr(),
                    method: ask.name(),
                };
            }
            if let Some(r) = crate::clients::tls::rustls_cause(&e) {
                if crate::clients::tls::is_refusal(r) {
                    return PgError::Tls {
                        addr: p.addr(),
                        message: crate::clients::tls::explain(&p.host, r),
                    };
                }
            }
            // tokio-postgres's words when the server answers `N` and TLS is required.
            if e.to_string().contains("does not support TLS") {
                return PgError::Tls {
                    addr: p.addr(),
                    message: format!(
                        "the server does not accept TLS, and sslmode = {} requires it",
                        p.sslmode
                    ),
                };
            }
            classify(p, e)
        })
    };
    let (client, conn) = tokio::time::timeout(p.connect_timeout, opened)
        .await
        .map_err(|_| PgError::ConnectTimeout {
            addr: p.addr(),
            after: p.connect_timeout,
        })??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    let info = info.lock().ok().and_then(|mut i| i.take());
    Ok((client, info))
}

fn classify(p: &PgParams, e: tokio_postgres::Error) -> PgError {
    // tokio-postgres errors do not contain the password; keep the server address.
    PgError::client(p.addr(), e)
}

/// The OID of table `schema`.`name`, if it exists.
pub async fn table_oid(
    c: &Client,
    p: &PgParams,
    schema: &str,
    name: &str,
) -> Result<Option<u32>, PgError> {
    Ok(c.query_opt(
        "SELECT cl.oid FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace \
             WHERE n.nspname = $1 AND cl.relname = $2 AND cl.relkind IN ('r', 'p')",
        &[&schema, &name],
    )
    .await
    .map_err(|e| classify(p, e))?
    .map(|r| r.get(0)))
}

/// Resolves Postgres types by OID, caching what it learned.
#[derive(Default)]
pub struct TypeResolver {
    cache: HashMap<(u32, i32), PgType>,
}

impl TypeResolver {
    pub async fn resolve(
        &mut self,
        c: &Client,
        p: &PgParams,
        oid: u32,
        typmod: i32,
        ndims: i32,
    ) -> Result<PgType, PgError> {
        let t = self.resolve_inner(c, p, oid, typmod, 0).await?;
        Ok(match t {
            PgType::Array(inner) if ndims > 1 => {
                PgType::Other(format!("{}[] ({} dimensions)", type_label(&inner), ndims))
            }
            t => t,
        })
    }

    async fn resolve_inner(
        &mut self,
        c: &Client,
        p: &PgParams,
        oid: u32,
        typmod: i32,
        depth: u8,
    ) -> Result<PgType, PgError> {
        if let Some(t) = PgType::builtin(oid, typmod) {
            return Ok(t);
        }
        if let Some(t) = self.cache.get(&(oid, typmod)) {
            return Ok(t.clone());
        }
        let row = c
            .query_opt(
                "SELECT typname::text, typtype::text, typelem, typbasetype, typcategory::text, typtypmod FROM pg_type WHERE oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| classify(p, e))?;
        let t = match row {
            None => PgType::Other(format!("oid {oid}")),
            Some(r) => {
                let (name, typtype, elem, base, cat, base_mod): (
                    String,
                    String,
                    u32,
                    u32,
                    String,
                    i32,
                ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
                if depth > 8 {
                    PgType::Other(name)
                } else if typtype == "e" {
                    PgType::Enum(name)
                } else if typtype == "d" {
                    Box::pin(self.resolve_inner(
                        c,
                        p,
                        base,
                        if typmod >= 0 { typmod } else { base_mod },
                        depth + 1,
                    ))
                    .await?
                } else if cat == "A" && elem != 0 {
                    PgType::Array(Box::new(
                        Box::pin(self.resolve_inner(c, p, elem, typmod, depth + 1)).await?,
                    ))
                } else if name == "citext" {
                    PgType::Text
                } else {
                    PgType::Other(name)
                }
            }
        };
        self.cache.insert((oid, typmod), t.clone());
        Ok(t)
    }
}

fn type_label(t: &PgType) -> String {
    match t {
        PgType::Other(n) | PgType::Enum(n) => n.clone(),
        t => format!("{t:?}").to_lowercase(),
    }
}

/// The schema of table `oid` now: every column in attnum order, key = primary key (or the
/// replica identity index), and its replica identity.
pub async fn load_table(
    c: &Client,
    p: &PgParams,
    types: &mut TypeResolver,
    oid: u32,
) -> Result<TableSchema, PgError> {
    let head = c
        .query_opt(
            "SELECT n.nspname::text, cl.relname::text, cl.relreplident::\"char\", \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = cl.oid AND i.indisprimary) \
             FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| classify(p, e))?
        .ok_or_else(|| PgError::Setup(format!("table with OID {oid} is gone")))?;
    let (schema, name, ident, has_pk): (String, String, i8, bool) =
        (head.get(0), head.get(1), head.get(2), head.get(3));
    let rows = c
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, a.attndims, \
                    COALESCE(a.attnum = ANY(i.indkey), false), \
                    CASE WHEN a.atthasmissing THEN a.attmissingval::text END \
             FROM pg_attribute a \
             JOIN pg_class cl ON cl.oid = a.attrelid \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid \
               AND CASE WHEN cl.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| classify(p, e))?;
    let mut columns = Vec::with_capacity(rows.len());
    for r in &rows {
        let (name, oid, typmod, notnull, ndims, is_key): (String, u32, i32, bool, i32, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        let pg_type = types.resolve(c, p, oid, typmod, ndims).await?;
        // A column added with a constant default (also while tributary was away: a restart
        // must not add it to ClickHouse without the value the older rows hold).
        let missing: Option<String> = r.get(6);
        columns.push(Column {
            name,
            pg_type,
            nullable: !notnull,
            is_key,
            added_default: missing.as_deref().and_then(missing_value),
            renamed_from: None,
        });
    }
    Ok(TableSchema {
        rel_id: oid,
        schema,
        name,
        columns,
        identity: identity_of(ident as u8, has_pk),
        ..Default::default()
    })
}

/// The [`Identity`] of `pg_class.relreplident` (also pgoutput's Relation byte).
pub fn identity_of(relreplident: u8, has_pk: bool) -> Identity {
    match relreplident {
        b'f' => Identity::Full,
        b'n' => Identity::Nothing,
        b'd' if !has_pk => Identity::Nothing,
        _ => Identity::Key,
    }
}

/// (name, type as `format_type` prints it) of every column of table `oid` now.
pub async fn column_types(
    c: &Client,
    p: &PgParams,
    oid: u32,
) -> Result<Vec<(String, String)>, PgError> {
    Ok(c.query(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
        &[&oid],
    )
    .await
    .map_err(|e| classify(p, e))?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

/// (attnum, name) of every column of table `oid` now, in attnum order.
pub async fn attnums(c: &Client, p: &PgParams, oid: u32) -> Result<Vec<(i16, String)>, PgError> {
    Ok(c.query(
        "SELECT attnum, attname::text FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&oid],
    )
    .await
    .map_err(|e| classify(p, e))?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

/// The value that rows written before `ADD COLUMN ... DEFAULT <constant>` hold for `column`
/// (Postgres keeps it in `attmissingval` instead of rewriting the table).
pub async fn added_default(
    c: &Client,
    p: &PgParams,
    rel_id: u32,
    column: &str,
) -> Result<Option<String>, PgError> {
    let row = c
        .query_opt(
            "SELECT attmissingval::text FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND atthasmissing",
            &[&rel_id, &column],
        )
        .await
        .map_err(|e| PgError::client(p.addr(), e))?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .as_deref()
        .and_then(missing_value))
}

/// `attmissingval` is a one-element array in text form: `{5}`, `{"a b"}`.
fn missing_value(text: &str) -> Option<String> {
    crate::protocol::pgtext::parse_array(text)?
        .into_iter()
        .next()
        .and_then(|e| match e {
            crate::protocol::pgtext::ArrayElem::Value(v) => Some(v),
            crate::protocol::pgtext::ArrayElem::Null => None,
        })
}

/// Refuses tables whose changes cannot be keyed downstream, naming all of them: no key and
/// not REPLICA IDENTITY FULL (a keyless FULL table is replicated by content).
pub fn check_keys(tables: &[TableSchema]) -> Result<(), PgError> {
    let bad: Vec<String> = tables
        .iter()
        .filter(|t| !t.keyless() && !t.columns.iter().any(|c| c.is_key))
        .map(|t| t.qualified())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(PgError::Setup(format!(
            "tables without a primary key cannot be replicated as they are (Postgres sends nothing that identifies the row of an update or delete): {}; add a primary key, or set REPLICA IDENTITY USING INDEX on a unique index of NOT NULL columns, or REPLICA IDENTITY FULL (rows are then known by their content, duplicates counted), or remove them from the publication",
            bad.join(", ")
        )))
    }
}

/// The slot's state, if it exists.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: String,
    pub database: String,
    pub confirmed_flush: Option<Lsn>,
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` (about to be lost) or `lost` (Postgres 13 and
    /// later; `None` before).
    pub wal_status: Option<String>,
}

pub async fn slot_state(
    c: &Client,
    p: &PgParams,
    slot: &str,
) -> Result<Option<SlotState>, PgError> {
    let row = c
        .query_opt(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text, active, to_jsonb(s) ->> 'wal_status' \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| classify(p, e))?;
    Ok(row.map(|r| SlotState {
        plugin: r.get::<_, Option<String>>(0).unwrap_or_default(),
        database: r.get::<_, Option<String>>(1).unwrap_or_default(),
        confirmed_flush: r.get::<_, Option<String>>(2).and_then(|s| parse_lsn(&s)),
        active: r.get(3),
        wal_status: r.get(4),
    }))
}

/// Splits a COPY text-format line (without its newline) into cells.
pub fn parse_copy_line(line: &[u8], out: &mut Vec<Cell>) -> Option<()> {
    parse_copy_fields(line, out, Bytes::copy_from_slice)
}

/// [`parse_copy_line`] of a line held in `Bytes`: a field without escapes is a slice of it
/// (no copy, no allocation).
pub fn parse_copy_line_shared(line: &Bytes, out: &mut Vec<Cell>) -> Option<()> {
    parse_copy_fields(line, out, |f| line.slice_ref(f))
}

fn parse_copy_fields(
    line: &[u8],
    out: &mut Vec<Cell>,
    plain: impl Fn(&[u8]) -> Bytes,
) -> Option<()> {
    for field in memchr::memchr_iter(b'\t', line)
        .chain(std::iter::once(line.len()))
        .scan(0, |start, end| {
            let f = &line[*start..end];
            *start = end + 1;
            Some(f)
        })
    {
        if field == b"\\N" {
            out.push(Cell::Null);
            continue;
        }
        if memchr::memchr(b'\\', field).is_none() {
            out.push(Cell::Text(plain(field)));
            continue;
        }
        let mut v = BytesMut::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            if field[i] != b'\\' {
                v.extend_from_slice(&[field[i]]);
                i += 1;
                continue;
            }
            let c = *field.get(i + 1)?;
            i += 2;
            let b = match c {
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 11,
                b'0'..=b'7' => {
                    let mut n = (c - b'0') as u32;
                    for _ in 0..2 {
                        match field.get(i) {
                            Some(d @ b'0'..=b'7') => {
                                n = n * 8 + (d - b'0') as u32;
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    n as u8
                }
                b'x' => {
                    let mut n = 0u32;
                    let mut digits = 0;
                    while digits < 2 {
                        match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                n = n * 16 + d;
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    n as u8
                }
                other => other,
            };
            v.extend_from_slice(&[b]);
        }
        out.push(Cell::Text(v.freeze()));
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines() {
        let mut out = Vec::new();
        parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\n\t\\101", &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Cell::Text(Bytes::from_static(b"1")),
                Cell::Null,
                Cell::Text(Bytes::from_static(b"a\tb\\c\n")),
                Cell::Text(Bytes::from_static(b"A")),
            ]
        );
        let mut out = Vec::new();
        assert!(parse_copy_line(b"bad\\", &mut out).is_none());
        // The same cells from a shared line, its plain fields slices of it.
        let line = Bytes::from_static(b"1\t\\N\ta\\tb\\\\c\\n\t\\101");
        let (mut owned, mut shared) = (Vec::new(), Vec::new());
        parse_copy_line(&line, &mut owned).unwrap();
        parse_copy_line_shared(&line, &mut shared).unwrap();
        assert_eq!(owned, shared);
        match &shared[0] {
            Cell::Text(b) => assert_eq!(b.as_ptr(), line.as_ptr()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_keyless_tables() {
        let t = TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: "nokey".into(),
            columns: vec![],
            ..Default::default()
        };
        let e = check_keys(&[t]).unwrap_err().to_string();
        assert!(e.contains("public.nokey"), "{e}");
    }
}
