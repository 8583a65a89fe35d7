//! A walsender connection (`replication=database`) spoken directly on the wire with
//! postgres-protocol, over the stream of `transport.rs` (TCP or TLS): startup and
//! authentication (cleartext and MD5 only over TLS unless allowed; SCRAM-SHA-256, and
//! SCRAM-SHA-256-PLUS with channel binding to the server's certificate over TLS), simple
//! queries (CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT, IDENTIFY_SYSTEM), then
//! START_REPLICATION and the CopyBoth stream.
//!
//! Reads are buffered in large chunks and a whole buffer of CopyData frames is handed over
//! at once ([`ReplicationReader::next_batch`]), so the stream costs no channel hand-off per
//! pgoutput message. The write half is shared so that status updates go out while the
//! reader is held back by backpressure. A caller that will wait for more anyway can let
//! the socket gather bytes before the read wakes ([`ReplicationReader::wake_at`]).
//!
//! Must never: log or return the password, send it in cleartext or MD5 form without TLS
//! unless `allow_insecure_password` says so, accept a login without channel binding when
//! `channel_binding = require`, or report a flush position it was not given.

use super::transport::{self, PgStream};
use super::{PgError, PgParams, SESSION_SETTINGS};
use crate::clients::tls::TlsInfo;
use crate::config::ChannelBinding as Binding;
use crate::protocol::pgframe::frame_len;
use crate::protocol::pgoutput::{encode_standby_status, fmt_lsn, Lsn};
use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

const READ_CHUNK: usize = 256 * 1024;

pub struct ReplicationConn {
    addr: String,
    stream: PgStream,
    buf: BytesMut,
    /// What the TLS handshake told; `None` without TLS.
    pub tls: Option<TlsInfo>,
    /// How the server authenticated us (`SCRAM-SHA-256-PLUS`, `trust`, ...).
    pub auth: &'static str,
}

/// Result rows of a simple query, as text.
pub type TextRows = Vec<Vec<Option<String>>>;

impl ReplicationConn {
    pub async fn connect(p: &PgParams) -> Result<Self, PgError> {
        let addr = p.addr();
        let (stream, tls) = tokio::time::timeout(p.connect_timeout, transport::open(p))
            .await
            .map_err(|_| PgError::ConnectTimeout {
                addr: addr.clone(),
                after: p.connect_timeout,
            })??;
        let mut conn = ReplicationConn {
            addr,
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            tls,
            auth: "trust",
        };
        tokio::time::timeout(p.connect_timeout, conn.startup(p))
            .await
            .map_err(|_| PgError::ConnectTimeout {
                addr: conn.addr.clone(),
                after: p.connect_timeout,
            })??;
        Ok(conn)
    }

    async fn startup(&mut self, p: &PgParams) -> Result<(), PgError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &p.user),
            ("database", &p.database),
            ("replication", "database"),
        ];
        params.extend_from_slice(SESSION_SETTINGS);
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out)
            .map_err(|e| self.proto(e.to_string()))?;
        self.write(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        let addr = self.addr.clone();
        let insecure = |method| PgError::InsecurePassword {
            addr: addr.clone(),
            method,
        };
        // Channel binding to the server's certificate, when TLS is on and it has a hash.
        let end_point = match p.channel_binding {
            Binding::Disable => None,
            _ => self.tls.as_ref().and_then(|t| t.server_end_point()),
        };
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => {
                    if p.channel_binding == Binding::Require && self.auth != "SCRAM-SHA-256-PLUS" {
                        return Err(PgError::Auth {
                            addr: self.addr.clone(),
                            message: format!(
                                "channel_binding = require, but the server authenticated us by {} (no channel binding)",
                                self.auth
                            ),
                        });
                    }
                }
                Message::AuthenticationCleartextPassword => {
                    if self.tls.is_none() && !p.allow_insecure_password {
                        return Err(insecure("cleartext"));
                    }
                    self.auth = "password";
                    let mut out = BytesMut::new();
                    frontend::password_message(p.password.expose().as_bytes(), &mut out)
                        .map_err(|e| self.proto(e.to_string()))?;
                    self.write(&out).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    if self.tls.is_none() && !p.allow_insecure_password {
                        return Err(insecure("MD5"));
                    }
                    self.auth = "md5";
                    let hash = postgres_protocol::authentication::md5_hash(
                        p.user.as_bytes(),
                        p.password.expose().as_bytes(),
                        body.salt(),
                    );
                    let mut out = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| self.proto(e.to_string()))?;
                    self.write(&out).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let (mut has_scram, mut has_plus) = (false, false);
                    while let Ok(Some(m)) = fallible_next(&mut mechs) {
                        has_scram |= m == "SCRAM-SHA-256";
                        has_plus |= m == "SCRAM-SHA-256-PLUS";
                    }
                    let (mechanism, binding) = match (&end_point, has_plus) {
                        (Some(h), true) => (
                            "SCRAM-SHA-256-PLUS",
                            ChannelBinding::tls_server_end_point(h.clone()),
                        ),
                        _ if p.channel_binding == Binding::Require => {
                            return Err(PgError::Auth {
                                addr: self.addr.clone(),
                                message: if self.tls.is_none() {
                                    "channel_binding = require needs TLS".into()
                                } else if !has_plus {
                                    "channel_binding = require, but the server does not offer SCRAM-SHA-256-PLUS".into()
                                } else {
                                    "channel_binding = require, but the server's certificate has no usable hash (Ed25519?)".into()
                                },
                            })
                        }
                        // "y": we could bind but the server (or the certificate) cannot; "n":
                        // no TLS. SCRAM then detects a server that hid the PLUS mechanism.
                        _ if has_scram && self.tls.is_some() && end_point.is_some() => {
                            ("SCRAM-SHA-256", ChannelBinding::unrequested())
                        }
                        _ if has_scram => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                        _ => {
                            return Err(PgError::Auth {
                                addr: self.addr.clone(),
                                message:
                                    "server offers no SASL mechanism we support (SCRAM-SHA-256)"
                                        .into(),
                            })
                        }
                    };
                    self.auth = mechanism;
                    let s = ScramSha256::new(p.password.expose().as_bytes(), binding);
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response(mechanism, s.message(), &mut out)
                        .map_err(|e| self.proto(e.to_string()))?;
                    self.write(&out).await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.proto("SASL continue without start".into()))?;
                    s.update(body.data()).map_err(|e| PgError::Auth {
                        addr: self.addr.clone(),
                        message: e.to_string(),
                    })?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(s.message(), &mut out)
                        .map_err(|e| self.proto(e.to_string()))?;
                    self.write(&out).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| self.proto("SASL final without start".into()))?;
                    s.finish(body.data()).map_err(|e| PgError::Auth {
                        addr: self.addr.clone(),
                        message: e.to_string(),
                    })?;
                }
                Message::ErrorResponse(body) => {
                    let message = error_text(body.fields());
                    return Err(
                        if message.contains("password") || message.contains("authentication") {
                            PgError::Auth {
                                addr: self.addr.clone(),
                                message,
                            }
                        } else {
                            PgError::Server {
                                addr: self.addr.clone(),
                                message,
                            }
                        },
                    );
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                _ => return Err(self.proto("unexpected message during startup".into())),
            }
        }
    }

    /// Ends the session politely (Terminate), for connections that never stream.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }

    /// Runs one statement with the simple query protocol and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, PgError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| self.proto(e.to_string()))?;
        self.write(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Ok(Some(r)) = fallible_next(&mut ranges) {
                        row.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(error_text(body.fields())),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(message) => Err(PgError::Server {
                addr: self.addr.clone(),
                message,
            }),
            None => Ok(rows),
        }
    }

    /// Enters the CopyBoth stream of a logical slot. `start` 0 resumes from the slot's
    /// confirmed position.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<(ReplicationReader, ReplicationWriter), PgError> {
        // Slot names are validated as [a-z0-9_]; the publication name is a quoted literal.
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            slot,
            fmt_lsn(start),
            crate::protocol::schema::pg_literal(&crate::protocol::schema::pg_ident(publication))
        );
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out).map_err(|e| self.proto(e.to_string()))?;
        self.write(&out).await?;
        loop {
            // CopyBothResponse ('W') is not in postgres-protocol's message enum: frame it here.
            match frame_len(&self.buf).map_err(|m| self.proto(m))? {
                None => {
                    self.fill().await?;
                    continue;
                }
                Some(len) if self.buf[0] == b'W' => {
                    let _ = self.buf.split_to(len);
                    break;
                }
                Some(_) => {}
            }
            match self.read_message().await? {
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server {
                        addr: self.addr.clone(),
                        message: error_text(body.fields()),
                    })
                }
                Message::NoticeResponse(_) => {}
                _ => return Err(self.proto("unexpected reply to START_REPLICATION".into())),
            }
        }
        Ok(split(self.addr, self.stream, self.buf))
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), PgError> {
        self.stream
            .write_all(b)
            .await
            .map_err(|source| PgError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    async fn read_message(&mut self) -> Result<Message, PgError> {
        loop {
            if frame_len(&self.buf).map_err(|m| self.proto(m))?.is_some() && self.buf[0] == b'W' {
                return Err(self.proto("unexpected CopyBothResponse".into()));
            }
            if let Some(m) = Message::parse(&mut self.buf).map_err(|e| self.proto(e.to_string()))? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), PgError> {
        read_more(
            &mut self.stream,
            &mut self.buf,
            &self.addr,
            "server closed the connection",
        )
        .await
    }

    fn proto(&self, message: String) -> PgError {
        PgError::Protocol {
            addr: self.addr.clone(),
            message,
        }
    }
}

/// The two halves of a connection in its CopyBoth stream; `buf` holds what was read of it.
fn split(addr: String, stream: PgStream, buf: BytesMut) -> (ReplicationReader, ReplicationWriter) {
    // A second handle on the socket, to set its wake-up threshold; without one (the
    // descriptor could not be duplicated) the reader wakes on every byte, as before.
    let socket = socket2::SockRef::from(stream.tcp()).try_clone().ok();
    let (rd, wr) = tokio::io::split(stream);
    (
        ReplicationReader {
            addr: addr.clone(),
            rd,
            buf,
            socket,
            wake_at: 1,
        },
        ReplicationWriter {
            addr,
            wr: Arc::new(Mutex::new(wr)),
        },
    )
}

/// Reads what the socket has into `buf`; the end of the stream is an error.
async fn read_more<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    addr: &str,
    eof: &str,
) -> Result<(), PgError> {
    let n = r.read_buf(buf).await.map_err(|source| PgError::Io {
        addr: addr.to_string(),
        source,
    })?;
    if n == 0 {
        return Err(PgError::Io {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, eof.to_string()),
        });
    }
    Ok(())
}

/// The read half of a replication stream.
pub struct ReplicationReader {
    addr: String,
    rd: ReadHalf<PgStream>,
    buf: BytesMut,
    socket: Option<socket2::Socket>,
    /// The socket's SO_RCVLOWAT: how many bytes must wait before a read wakes.
    wake_at: usize,
}

impl ReplicationReader {
    /// Lets the next reads wake only once `bytes` wait in the socket (SO_RCVLOWAT), or 1:
    /// on every byte. While the stream keeps up, the walsender sends a message per change
    /// as it decodes it, and a reader woken on every byte takes a few rows per wake-up (a
    /// system call, an ACK and a context switch each); a caller that will wait anyway lets
    /// them gather. Lowering the threshold wakes a waiting read at once if bytes wait (the
    /// kernel checks when it is set). The kernel also wakes the read before the threshold
    /// if the receive window or memory runs short, so a high threshold never stalls the
    /// sender; a read woken for another reason still returns what is there. If the socket
    /// refuses a raised threshold, reads keep waking on every byte; if it refuses to lower
    /// one it took, the connection can no longer be read promptly and that is an error (the
    /// source connects again).
    pub fn wake_at(&mut self, bytes: usize) -> Result<(), PgError> {
        let bytes = bytes.max(1);
        if bytes == self.wake_at {
            return Ok(());
        }
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        match set_rcvlowat(socket, bytes) {
            Ok(()) => self.wake_at = bytes,
            Err(source) if self.wake_at > 1 => {
                return Err(PgError::Io {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Err(e) => {
                tracing::warn!(addr = %self.addr, error = %e, "SO_RCVLOWAT refused: the replication stream is read as it arrives");
                self.socket = None;
            }
        }
        Ok(())
    }

    /// Waits until at least one frame is complete, then moves every complete CopyData
    /// payload of the buffer into `out`. Returns false when the server ended the stream.
    pub async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> Result<bool, PgError> {
        loop {
            while let Some(len) = frame_len(&self.buf).map_err(|message| PgError::Protocol {
                addr: self.addr.clone(),
                message,
            })? {
                let tag = self.buf[0];
                let frame = self.buf.split_to(len).freeze();
                match tag {
                    b'd' => out.push(frame.slice(5..)),
                    b'c' => return Ok(false),
                    b'N' => {}
                    b'E' => {
                        let mut m = BytesMut::from(&frame[..]);
                        let message = match Message::parse(&mut m) {
                            Ok(Some(Message::ErrorResponse(body))) => error_text(body.fields()),
                            _ => "unreadable error".into(),
                        };
                        return Err(PgError::Server {
                            addr: self.addr.clone(),
                            message,
                        });
                    }
                    t => {
                        return Err(PgError::Protocol {
                            addr: self.addr.clone(),
                            message: format!(
                                "unexpected message {:?} in the replication stream",
                                t as char
                            ),
                        })
                    }
                }
            }
            if !out.is_empty() {
                return Ok(true);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            read_more(
                &mut self.rd,
                &mut self.buf,
                &self.addr,
                "server closed the replication stream",
            )
            .await?;
        }
    }
}

/// Sets SO_RCVLOWAT: the bytes that must be queued before the socket reads as ready.
fn set_rcvlowat(socket: &socket2::Socket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for as long as `socket` lives, and the option's value
    // is a c_int passed with its own size, as setsockopt(2) asks for SO_RCVLOWAT.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The write half of a replication stream; clones share the socket.
#[derive(Clone)]
pub struct ReplicationWriter {
    addr: String,
    wr: Arc<Mutex<WriteHalf<PgStream>>>,
}

impl ReplicationWriter {
    /// Reports everything up to `flushed` as durably written downstream.
    pub async fn send_status(&self, flushed: Lsn, reply: bool) -> Result<(), PgError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let payload = encode_standby_status(flushed, now, reply);
        let mut out = BytesMut::with_capacity(40);
        frontend::CopyData::new(&payload[..])
            .map_err(|e| PgError::Protocol {
                addr: self.addr.clone(),
                message: e.to_string(),
            })?
            .write(&mut out);
        let mut wr = self.wr.lock().await;
        wr.write_all(&out).await.map_err(|source| PgError::Io {
            addr: self.addr.clone(),
            source,
        })?;
        wr.flush().await.map_err(|source| PgError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Ends the stream politely (CopyDone, Terminate).
    pub async fn close(&self) {
        let mut out = BytesMut::new();
        frontend::copy_done(&mut out);
        frontend::terminate(&mut out);
        let mut wr = self.wr.lock().await;
        let _ = wr.write_all(&out).await;
        let _ = wr.shutdown().await;
    }
}

fn fallible_next<I: fallible_iterator::FallibleIterator>(
    it: &mut I,
) -> Result<Option<I::Item>, I::Error> {
    it.next()
}

fn error_text(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> String {
    let (mut severity, mut code, mut message) = (String::new(), String::new(), String::new());
    while let Ok(Some(f)) = fallible_next(&mut fields) {
        match f.type_() {
            b'S' => severity = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    format!("{severity} {code}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    /// A CopyData frame of `len` payload bytes.
    fn copy_data(len: usize) -> Vec<u8> {
        let mut f = vec![b'd'];
        f.extend_from_slice(&((len + 4) as u32).to_be_bytes());
        f.resize(5 + len, b'x');
        f
    }

    async fn pair() -> (ReplicationReader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (reader, _writer) = split(
            addr.to_string(),
            PgStream::Plain(client.unwrap()),
            BytesMut::new(),
        );
        (reader, server.unwrap().0)
    }

    async fn read(reader: &mut ReplicationReader, within: Duration) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        match tokio::time::timeout(within, reader.next_batch(&mut out)).await {
            Ok(r) => {
                assert!(r.unwrap(), "the stream ended");
                Some(out)
            }
            Err(_) => None,
        }
    }

    /// On a real loopback socket: a raised threshold keeps a read asleep while fewer bytes
    /// wait, lowering it wakes the read at once, and enough bytes wake it too. Without the
    /// threshold the first read returns at once, and a threshold lowered without the
    /// kernel's wake-up would leave the second read asleep.
    #[tokio::test]
    async fn a_raised_threshold_lets_bytes_gather_and_lowering_it_wakes_the_read() {
        let (mut reader, mut server) = pair().await;
        server.write_all(&copy_data(100)).await.unwrap();
        reader.wake_at(64 * 1024).unwrap();
        assert_eq!(reader.wake_at, 64 * 1024, "SO_RCVLOWAT was refused");
        assert!(
            read(&mut reader, Duration::from_millis(300))
                .await
                .is_none(),
            "a read woke for 105 bytes with the threshold at 64 KiB"
        );
        // The timed-out read took nothing: lowering the threshold wakes the next one.
        reader.wake_at(1).unwrap();
        let got = read(&mut reader, Duration::from_secs(5))
            .await
            .expect("lowering the threshold did not wake the read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 100);

        // Enough bytes wake a read under a raised threshold; frames come whole.
        reader.wake_at(16 * 1024).unwrap();
        let mut burst = Vec::new();
        for _ in 0..200 {
            burst.extend_from_slice(&copy_data(95));
        }
        server.write_all(&burst).await.unwrap();
        let mut frames = 0;
        while frames < 200 {
            let got = read(&mut reader, Duration::from_secs(5))
                .await
                .expect("20,000 bytes did not wake a read waiting for 16 KiB");
            assert!(got.iter().all(|f| f.len() == 95));
            frames += got.len();
            reader.wake_at(1).unwrap();
        }
        assert_eq!(frames, 200);
    }
}
