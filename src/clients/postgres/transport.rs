//! The byte stream under every PostgreSQL connection: TCP to `hostaddr` or `host`, then TLS
//! as `sslmode` says (the SSLRequest exchange, then a rustls handshake that verifies what
//! the mode asks and sends SNI), for both the replication connection ([`open`]) and the
//! catalog connection (tokio-postgres does the SSLRequest there and calls [`PgTls`]). On a
//! connection without TLS, [`Guarded`] stops a cleartext or MD5 password request before the
//! client library answers it.
//!
//! Must never: fall back to a connection without TLS when `sslmode` is `require` or
//! stronger; send a password in cleartext or MD5 form without TLS unless
//! `allow_insecure_password` says so; read a byte after the server's answer to SSLRequest
//! before the handshake (a server or a man in the middle could inject it).

use super::{PgError, PgParams};
use crate::clients::tls::{self, TlsInfo, Verify};
use crate::config::SslMode;
use crate::protocol::pgauth::{PlainAsk, PlainAuthWatch};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to the server: plain, or TLS over TCP.
pub enum PgStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl PgStream {
    /// The TCP connection under the stream (under TLS too).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            PgStream::Plain(s) => s,
            PgStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, b),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TCP connection to the server (`hostaddr` when set, else `host`), no delay.
pub async fn tcp(p: &PgParams) -> Result<TcpStream, PgError> {
    let target = p.hostaddr.as_deref().unwrap_or(&p.host);
    let target = target.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::time::timeout(p.connect_timeout, TcpStream::connect((target, p.port)))
        .await
        .map_err(|_| PgError::ConnectTimeout {
            addr: p.addr(),
            after: p.connect_timeout,
        })?
        .map_err(|source| PgError::Connect {
            addr: p.addr(),
            source,
        })?;
    stream.set_nodelay(true).ok();
    // A half-open connection (a server or a NAT gone without a word) is noticed within about
    // a minute instead of the kernel's two hours: the replication stream waits for data for
    // as long as Postgres has nothing to send, so only the kernel can tell.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .ok();
    Ok(stream)
}

/// The client configuration and server name of `p`'s TLS, `None` for `sslmode = disable`.
fn tls_parts(
    p: &PgParams,
) -> Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>, Verify)>, PgError> {
    let Some(settings) = p.tls_settings() else {
        return Ok(None);
    };
    let config = tls::client_config(&settings).map_err(|e| PgError::Tls {
        addr: p.addr(),
        message: e.to_string(),
    })?;
    let name = tls::server_name(&p.host).map_err(|message| PgError::Tls {
        addr: p.addr(),
        message,
    })?;
    Ok(Some((Arc::new(config), name, settings.verify)))
}

/// A handshake error as a [`PgError`]: a refusal is permanent and says why; a connection
/// that broke during it is an outage.
pub fn handshake_error(p: &PgParams, e: io::Error) -> PgError {
    match tls::rustls_cause(&e) {
        Some(r) if tls::is_refusal(r) => PgError::Tls {
            addr: p.addr(),
            message: tls::explain(&p.host, r),
        },
        Some(r) => PgError::Protocol {
            addr: p.addr(),
            message: tls::explain(&p.host, r),
        },
        None => PgError::Io {
            addr: p.addr(),
            source: e,
        },
    }
}

/// Opens the stream of a replication connection: TCP, then TLS as `sslmode` says. Returns
/// what the handshake told, `None` without TLS.
pub async fn open(p: &PgParams) -> Result<(PgStream, Option<TlsInfo>), PgError> {
    let mut tcp = tcp(p).await?;
    let Some((config, name, verify)) = tls_parts(p)? else {
        return Ok((PgStream::Plain(tcp), None));
    };
    let io = |source| PgError::Io {
        addr: p.addr(),
        source,
    };
    tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
    // Exactly one byte: anything after it belongs to the handshake.
    let answer = tcp.read_u8().await.map_err(io)?;
    match answer {
        b'S' => {}
        b'N' if p.sslmode == SslMode::Prefer => return Ok((PgStream::Plain(tcp), None)),
        b'N' => {
            return Err(PgError::Tls {
                addr: p.addr(),
                message: format!(
                    "the server does not accept TLS, and sslmode = {} requires it",
                    p.sslmode
                ),
            })
        }
        b'E' => {
            return Err(PgError::Protocol {
                addr: p.addr(),
                message: "the server refused the TLS request with an error (a server older than 7.0, or not PostgreSQL)".into(),
            })
        }
        other => {
            return Err(PgError::Protocol {
                addr: p.addr(),
                message: format!("unexpected answer {other:#04x} to the TLS request"),
            })
        }
    }
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(p, e))?;
    let info = TlsInfo::of(stream.get_ref().1, verify);
    Ok((PgStream::Tls(Box::new(stream)), Some(info)))
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The TLS connector tokio-postgres calls for the catalog connection after its SSLRequest
/// was accepted. It records what the handshake told in `info`.
pub struct PgTls {
    config: Option<(Arc<rustls::ClientConfig>, ServerName<'static>, Verify)>,
    pub info: Arc<Mutex<Option<TlsInfo>>>,
}

impl PgTls {
    pub fn new(p: &PgParams) -> Result<PgTls, PgError> {
        Ok(PgTls {
            config: tls_parts(p)?,
            info: Arc::default(),
        })
    }
}

/// A TLS stream for tokio-postgres, with the channel binding data of its server certificate.
pub struct PgTlsStream<S> {
    inner: TlsStream<S>,
    end_point: Option<Vec<u8>>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some((config, name, verify)) = self.config else {
                return Err(io::Error::other("TLS is off (sslmode = disable)"));
            };
            let inner = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            let info = TlsInfo::of(inner.get_ref().1, verify);
            let end_point = info.server_end_point();
            if let Ok(mut slot) = self.info.lock() {
                *slot = Some(info);
            }
            Ok(PgTlsStream { inner, end_point })
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match &self.end_point {
            Some(h) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(h.clone()),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A TCP stream that watches the start of a connection and fails the read that carries a
/// cleartext or MD5 password request made without TLS (when not allowed), so that the
/// client library never answers it. The request found is left in `refused`.
pub struct Guarded {
    inner: TcpStream,
    watch: Option<PlainAuthWatch>,
    pub refused: Arc<Mutex<Option<PlainAsk>>>,
}

impl Guarded {
    pub fn new(inner: TcpStream, allow_insecure_password: bool) -> Guarded {
        Guarded {
            inner,
            watch: (!allow_insecure_password).then(PlainAuthWatch::new),
            refused: Arc::default(),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(w)) = (&r, this.watch.as_mut()) {
            if let Some(ask) = w.received(&buf.filled()[before..]) {
                buf.set_filled(before);
                if let Ok(mut slot) = this.refused.lock() {
                    *slot = Some(ask);
                }
                this.watch = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the server asks for a {} password without TLS", ask.name()),
                )));
            }
            if w.done() {
                this.watch = None;
            }
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, b);
        if let (Poll::Ready(Ok(n)), Some(w)) = (&r, this.watch.as_mut()) {
            w.sent(&b[..*n]);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
