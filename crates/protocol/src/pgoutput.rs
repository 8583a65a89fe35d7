//! Decoder for the streaming replication protocol (`XLogData`, primary keepalive) and for
//! the pgoutput logical decoding plugin (protocol version 1), plus the encoder of the
//! standby status update.
//!
//! Must never: panic on input (every read is bounds-checked and returns [`DecodeError`]),
//! copy tuple values (they stay [`Bytes`] slices of the received frame).

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub type Lsn = u64;

/// Formats an LSN the way Postgres prints it (`16/B374D848`).
pub fn fmt_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown {what} tag {tag:#04x}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("string is not valid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("negative column count {0}")]
    BadCount(i16),
}

/// A CopyData payload of a replication stream.
#[derive(Debug, PartialEq)]
pub enum ReplicationMessage {
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        /// The server's clock when it sent the message (µs since 2000-01-01).
        send_ts: i64,
        data: Bytes,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
}

pub fn decode_replication(mut b: Bytes) -> Result<ReplicationMessage, DecodeError> {
    let tag = get_u8(&mut b, "replication tag")?;
    match tag {
        b'w' => {
            let wal_start = get_u64(&mut b, "XLogData")?;
            let wal_end = get_u64(&mut b, "XLogData")?;
            let send_ts = get_u64(&mut b, "XLogData")? as i64;
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_ts,
                data: b,
            })
        }
        b'k' => {
            let wal_end = get_u64(&mut b, "keepalive")?;
            let _ts = get_u64(&mut b, "keepalive")?;
            let reply = get_u8(&mut b, "keepalive")?;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: reply == 1,
            })
        }
        tag => Err(DecodeError::UnknownTag {
            what: "replication message",
            tag,
        }),
    }
}

/// Microseconds since 2000-01-01, the Postgres epoch, for a unix time in microseconds.
pub fn pg_epoch_micros(unix_micros: i64) -> i64 {
    unix_micros - 946_684_800_000_000
}

/// The CopyData payload of a standby status update: everything up to `flushed` is durable
/// downstream and may be released by the server.
pub fn encode_standby_status(flushed: Lsn, now_unix_micros: i64, reply: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(flushed); // written
    b.put_u64(flushed); // flushed
    b.put_u64(flushed); // applied
    b.put_i64(pg_epoch_micros(now_unix_micros));
    b.put_u8(reply as u8);
    b.freeze()
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_mod: i32,
}

/// A value of a tuple as pgoutput sends it (text format).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    /// An unchanged TOASTed value that the server did not send: keep what is stored.
    UnchangedToast,
    Text(Bytes),
}

#[derive(Debug, PartialEq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: Lsn,
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    Origin,
    Relation {
        rel_id: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel_id: u32,
        new: Vec<Cell>,
    },
    /// `old` is the key (`K`) or the whole old row (`O`, REPLICA IDENTITY FULL) when sent.
    Update {
        rel_id: u32,
        old: Option<Vec<Cell>>,
        new: Vec<Cell>,
    },
    Delete {
        rel_id: u32,
        old: Vec<Cell>,
    },
    Truncate {
        rel_ids: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        prefix: String,
    },
}

pub fn decode_logical(mut b: Bytes) -> Result<LogicalMessage, DecodeError> {
    let tag = get_u8(&mut b, "pgoutput tag")?;
    Ok(match tag {
        b'B' => LogicalMessage::Begin {
            final_lsn: get_u64(&mut b, "Begin")?,
            commit_ts: get_u64(&mut b, "Begin")? as i64,
            xid: get_u32(&mut b, "Begin")?,
        },
        b'C' => {
            let _flags = get_u8(&mut b, "Commit")?;
            LogicalMessage::Commit {
                commit_lsn: get_u64(&mut b, "Commit")?,
                end_lsn: get_u64(&mut b, "Commit")?,
                commit_ts: get_u64(&mut b, "Commit")? as i64,
            }
        }
        b'O' => LogicalMessage::Origin,
        b'R' => {
            let rel_id = get_u32(&mut b, "Relation")?;
            let namespace = get_cstr(&mut b, "Relation namespace")?;
            let name = get_cstr(&mut b, "Relation name")?;
            let replica_identity = get_u8(&mut b, "Relation")?;
            let n = get_i16(&mut b, "Relation")?;
            if n < 0 {
                return Err(DecodeError::BadCount(n));
            }
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = get_u8(&mut b, "Relation column")?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: get_cstr(&mut b, "Relation column name")?,
                    type_oid: get_u32(&mut b, "Relation column")?,
                    type_mod: get_u32(&mut b, "Relation column")? as i32,
                });
            }
            LogicalMessage::Relation {
                rel_id,
                namespace,
                name,
                replica_identity,
                columns,
            }
        }
        b'Y' => LogicalMessage::Type {
            oid: get_u32(&mut b, "Type")?,
            namespace: get_cstr(&mut b, "Type namespace")?,
            name: get_cstr(&mut b, "Type name")?,
        },
        b'I' => {
            let rel_id = get_u32(&mut b, "Insert")?;
            expect(&mut b, b'N', "Insert")?;
            LogicalMessage::Insert {
                rel_id,
                new: tuple(&mut b)?,
            }
        }
        b'U' => {
            let rel_id = get_u32(&mut b, "Update")?;
            let mut kind = get_u8(&mut b, "Update")?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some(tuple(&mut b)?);
                kind = get_u8(&mut b, "Update")?;
            }
            if kind != b'N' {
                return Err(DecodeError::UnknownTag {
                    what: "Update tuple",
                    tag: kind,
                });
            }
            LogicalMessage::Update {
                rel_id,
                old,
                new: tuple(&mut b)?,
            }
        }
        b'D' => {
            let rel_id = get_u32(&mut b, "Delete")?;
            let kind = get_u8(&mut b, "Delete")?;
            if kind != b'K' && kind != b'O' {
                return Err(DecodeError::UnknownTag {
                    what: "Delete tuple",
                    tag: kind,
                });
            }
            LogicalMessage::Delete {
                rel_id,
                old: tuple(&mut b)?,
            }
        }
        b'T' => {
            let n = get_u32(&mut b, "Truncate")?;
            let options = get_u8(&mut b, "Truncate")?;
            if (n as usize).saturating_mul(4) > b.remaining() {
                return Err(DecodeError::Truncated("Truncate relations"));
            }
            let rel_ids = (0..n).map(|_| b.get_u32()).collect();
            LogicalMessage::Truncate {
                rel_ids,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => {
            let _flags = get_u8(&mut b, "Message")?;
            let _lsn = get_u64(&mut b, "Message")?;
            LogicalMessage::Message {
                prefix: get_cstr(&mut b, "Message prefix")?,
            }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag,
            })
        }
    })
}

fn tuple(b: &mut Bytes) -> Result<Vec<Cell>, DecodeError> {
    let n = get_i16(b, "TupleData")?;
    if n < 0 {
        return Err(DecodeError::BadCount(n));
    }
    let mut cells = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let kind = get_u8(b, "TupleData column")?;
        cells.push(match kind {
            b'n' => Cell::Null,
            b'u' => Cell::UnchangedToast,
            b't' | b'b' => {
                let len = get_u32(b, "TupleData value length")? as usize;
                if len > b.remaining() {
                    return Err(DecodeError::Truncated("TupleData value"));
                }
                Cell::Text(b.split_to(len))
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "TupleData column",
                    tag,
                })
            }
        });
    }
    Ok(cells)
}

fn expect(b: &mut Bytes, want: u8, what: &'static str) -> Result<(), DecodeError> {
    let got = get_u8(b, what)?;
    if got != want {
        return Err(DecodeError::UnknownTag { what, tag: got });
    }
    Ok(())
}

fn get_u8(b: &mut Bytes, what: &'static str) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(DecodeError::Truncated(what));
    }
    Ok(b.get_u8())
}
fn get_i16(b: &mut Bytes, what: &'static str) -> Result<i16, DecodeError> {
    if b.remaining() < 2 {
        return Err(DecodeError::Truncated(what));
    }
    Ok(b.get_i16())
}
fn get_u32(b: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(DecodeError::Truncated(what));
    }
    Ok(b.get_u32())
}
fn get_u64(b: &mut Bytes, what: &'static str) -> Result<u64, DecodeError> {
    if b.remaining() < 8 {
        return Err(DecodeError::Truncated(what));
    }
    Ok(b.get_u64())
}
fn get_cstr(b: &mut Bytes, what: &'static str) -> Result<String, DecodeError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(DecodeError::Truncated(what))?;
    let s = std::str::from_utf8(&b[..end])
        .map_err(|_| DecodeError::Utf8(what))?
        .to_string();
    b.advance(end + 1);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(out: &mut BytesMut, cells: &[Option<&[u8]>]) {
        out.put_i16(cells.len() as i16);
        for c in cells {
            match c {
                None => out.put_u8(b'n'),
                Some(b"\0toast") => out.put_u8(b'u'),
                Some(v) => {
                    out.put_u8(b't');
                    out.put_u32(v.len() as u32);
                    out.put_slice(v);
                }
            }
        }
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(fmt_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn decodes_relation_and_changes() {
        let mut m = BytesMut::new();
        m.put_u8(b'R');
        m.put_u32(42);
        m.put_slice(b"public\0we\"ird; t\0");
        m.put_u8(b'd');
        m.put_i16(2);
        m.put_u8(1);
        m.put_slice(b"id\0");
        m.put_u32(20);
        m.put_i32(-1);
        m.put_u8(0);
        m.put_slice(b"body\0");
        m.put_u32(25);
        m.put_i32(-1);
        match decode_logical(m.freeze()).unwrap() {
            LogicalMessage::Relation {
                rel_id,
                name,
                columns,
                ..
            } => {
                assert_eq!(rel_id, 42);
                assert_eq!(name, "we\"ird; t");
                assert!(columns[0].is_key && !columns[1].is_key);
                assert_eq!(columns[1].type_oid, 25);
            }
            other => panic!("{other:?}"),
        }

        let mut m = BytesMut::new();
        m.put_u8(b'U');
        m.put_u32(42);
        m.put_u8(b'K');
        tuple_bytes(&mut m, &[Some(b"1"), None]);
        m.put_u8(b'N');
        tuple_bytes(&mut m, &[Some(b"2"), Some(b"\0toast")]);
        assert_eq!(
            decode_logical(m.freeze()).unwrap(),
            LogicalMessage::Update {
                rel_id: 42,
                old: Some(vec![Cell::Text(Bytes::from_static(b"1")), Cell::Null]),
                new: vec![Cell::Text(Bytes::from_static(b"2")), Cell::UnchangedToast],
            }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut m = BytesMut::new();
        m.put_u8(b'I');
        m.put_u32(1);
        m.put_u8(b'N');
        tuple_bytes(&mut m, &[Some(b"hello")]);
        let full = m.freeze();
        for cut in 0..full.len() {
            assert!(decode_logical(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(decode_logical(full).is_ok());
        assert!(decode_logical(Bytes::from_static(b"T\xff\xff\xff\xff\0")).is_err());
        assert!(decode_replication(Bytes::from_static(b"w\0\0")).is_err());
    }

    #[test]
    fn standby_status_layout() {
        let b = encode_standby_status(0x0102, 946_684_800_000_001, false);
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &0x0102u64.to_be_bytes());
        assert_eq!(&b[25..33], &1i64.to_be_bytes());
    }
}
