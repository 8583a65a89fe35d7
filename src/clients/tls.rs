//! TLS for every client: rustls with the ring provider (installed once per process), the
//! client configurations of the PostgreSQL and ClickHouse connections (trusted roots from a
//! file or the system, how much of the server's certificate is verified, an optional client
//! certificate), what a finished handshake tells (`tributary check` prints it), and plain
//! words for a failed verification.
//!
//! Must never: accept a certificate that fails verification in a mode that verifies (only
//! the host name is waived, and only in [`Verify::Chain`]), skip the handshake signature
//! checks in any mode, or put a private key's bytes in an error.

use crate::protocol::x509::{self, CertSummary};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_default_provider();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, but any certificate is accepted (libpq's `prefer` and `require`).
    Nothing,
    /// The chain must lead to a trusted root; any host name (libpq's `verify-ca`).
    Chain,
    /// The chain and the host name (libpq's `verify-full`; every HTTPS client).
    Full,
}

impl Verify {
    pub fn describe(self) -> &'static str {
        match self {
            Verify::Nothing => "not verified",
            Verify::Chain => "verified: chain (not the host name)",
            Verify::Full => "verified: chain and host name",
        }
    }
}

/// What a TLS client trusts and shows.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub verify: Verify,
    /// PEM file of the trusted roots; `None`: the system's.
    pub roots: Option<PathBuf>,
    /// PEM files of a client certificate (chain) and its private key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A TLS setting that cannot be used: a file that cannot be read or holds no certificate.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {message}")]
pub struct TlsSetupError {
    what: &'static str,
    path: String,
    message: String,
}

fn setup_error(what: &'static str, path: &Path, message: impl ToString) -> TlsSetupError {
    TlsSetupError {
        what,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The rustls client configuration for `s` (no ALPN: callers that speak HTTP add theirs).
pub fn client_config(s: &TlsSettings) -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_error("TLS", Path::new("provider"), e))?;
    let builder = match s.verify {
        Verify::Full => builder.with_root_certificates(Arc::new(root_store(s.roots.as_deref())?)),
        Verify::Chain => {
            let roots = Arc::new(root_store(s.roots.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| {
                    let path = s.roots.as_deref().unwrap_or(Path::new("(system)"));
                    setup_error("trusted roots", path, e)
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    webpki: Some(webpki),
                    provider,
                }))
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient {
                webpki: None,
                provider,
            })),
    };
    match &s.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = read_certs(cert, "client certificate")?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                setup_error(
                    "client key",
                    key,
                    format!("no readable PEM private key ({})", pem_reason(&e)),
                )
            })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| setup_error("client certificate", cert, e))
        }
    }
}

/// A PEM error without any of the file's bytes.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "none found".into(),
        _ => "malformed PEM".into(),
    }
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| setup_error(what, path, pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup_error(what, path, pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(setup_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn root_store(file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            for c in read_certs(path, "trusted roots")? {
                store
                    .add(c)
                    .map_err(|e| setup_error("trusted roots", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(setup_error(
                    "trusted roots",
                    Path::new("(system)"),
                    "the system has no trusted root certificates (install ca-certificates, or name a file)",
                ));
            }
        }
    }
    Ok(store)
}

/// Verification for `verify-ca` (the chain, any name) and for `prefer`/`require` (nothing):
/// the handshake's signatures are still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Lenient {
    /// `None`: no certificate check at all.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the chain before the name: a name error means the chain is good.
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The name a client verifies and sends as SNI: a DNS name, or an IP address (no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|_| format!("`{host}` is neither a DNS name nor an IP address"))
}

/// What a finished handshake tells.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub verify: Verify,
    /// The server's own certificate, read; `None` when it sent none or it did not parse.
    pub peer: Option<CertSummary>,
    /// The server's own certificate (DER), for channel binding.
    pub peer_der: Option<Vec<u8>>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ClientConnection, verify: Verify) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_string(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let peer_der = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let peer = peer_der.as_deref().and_then(|d| x509::summarize(d).ok());
        TlsInfo {
            version,
            cipher,
            verify,
            peer,
            peer_der,
        }
    }

    /// `TLS 1.3 (TLS13_AES_256_GCM_SHA384); certificate CN=localhost, expires 2036-12-03
    /// 10:00:00 UTC; verified: chain and host name`.
    pub fn describe(&self) -> String {
        let cert = match &self.peer {
            Some(c) => format!(
                "certificate {}, expires {}",
                if c.subject.is_empty() {
                    "(empty subject)"
                } else {
                    &c.subject
                },
                x509::format_utc(c.not_after)
            ),
            None => "certificate unreadable".to_string(),
        };
        format!(
            "{} ({}); {}; {}",
            self.version,
            self.cipher,
            cert,
            self.verify.describe()
        )
    }

    /// RFC 5929 `tls-server-end-point`: the hash of the server's certificate with the hash of
    /// its signature (SHA-256 for MD5 and SHA-1). `None` when the algorithm has no hash
    /// (Ed25519) or is unknown: then there is no channel binding, as with libpq.
    pub fn server_end_point(&self) -> Option<Vec<u8>> {
        use ring::digest;
        let der = self.peer_der.as_deref()?;
        let alg = match self.peer.as_ref()?.end_point_hash? {
            x509::EndPointHash::Sha256 => &digest::SHA256,
            x509::EndPointHash::Sha384 => &digest::SHA384,
            x509::EndPointHash::Sha512 => &digest::SHA512,
        };
        Some(digest::digest(alg, der).as_ref().to_vec())
    }
}

/// A handshake of its own with `host:port` (for `tributary check` on an HTTPS server: the
/// HTTP client does not show its connections): what it told, or why it failed.
pub async fn probe(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
    verify: Verify,
) -> Result<TlsInfo, String> {
    let name = server_name(host)?;
    let target = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((target, port)),
    )
    .await
    .map_err(|_| format!("TLS to {host}: no connection within 10 s"))?
    .map_err(|e| format!("TLS to {host}: {e}"))?;
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS to {host}: no handshake within 10 s"))?
    .map_err(|e| match rustls_cause(&e) {
        Some(r) => explain(host, r),
        None => format!("TLS to {host}: {e}"),
    })?;
    Ok(TlsInfo::of(stream.get_ref().1, verify))
}

/// Why the server at `host:port` refuses TLS with `config`, if it does: in the handshake, or
/// (TLS 1.3) with an alert just after it, when it rejects the client certificate. A client
/// that sent its request at once may see only a closed connection; this asks TLS alone. `None`
/// when the server takes the connection (or cannot be reached: that is an outage, not this).
pub async fn refused(host: &str, port: u16, config: Arc<ClientConfig>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let name = server_name(host).ok()?;
    let target = host.trim_start_matches('[').trim_end_matches(']');
    let wait = std::time::Duration::from_secs(5);
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect((target, port)))
        .await
        .ok()?
        .ok()?;
    let mut stream = match tokio::time::timeout(
        wait,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .ok()?
    {
        Ok(s) => s,
        Err(e) => return rustls_cause(&e).map(|r| explain(host, r)),
    };
    // An HTTP server says nothing until asked: a quiet second means it took the connection.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut byte)).await {
        Ok(Err(e)) => rustls_cause(&e).map(|r| explain(host, r)),
        _ => None,
    }
}

/// The rustls error under `err`, if a TLS failure caused it.
pub fn rustls_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An io::Error's `source()` skips the error it wraps: look into it instead (they nest:
        // hyper-rustls wraps tokio-rustls's io::Error in another).
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// A failed handshake in plain words, naming the host: why the certificate was refused
/// (unknown CA, name mismatch, expired), or what the server said.
pub fn explain(host: &str, e: &rustls::Error) -> String {
    use CertificateError as C;
    let why = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "its certificate is not signed by a trusted CA (unknown issuer): \
                                 name the server's CA file (sslrootcert / ca_cert)"
                .to_string(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "its certificate is not valid for the name `{host}` (name mismatch): \
                 connect by a name the certificate lists"
            ),
            C::Expired | C::ExpiredContext { .. } => "its certificate has expired".to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "its certificate is not valid yet (check the clocks)".to_string()
            }
            C::Revoked => "its certificate is revoked".to_string(),
            C::BadSignature => "its certificate's signature is wrong".to_string(),
            other => format!("its certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!(
            "the server ended the handshake ({a:?}): it may require a client certificate or refuse ours"
        ),
        other => other.to_string(),
    };
    format!("TLS to {host} failed: {why}")
}

/// Whether a TLS failure is permanent: the certificate or the handshake was refused (the
/// same refusal would come again), as opposed to a connection that broke during it.
pub fn is_refusal(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::AlertReceived(_)
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_host_and_the_cause() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let m = explain("db.example.com", &unknown);
        assert!(
            m.contains("db.example.com") && m.contains("unknown issuer"),
            "{m}"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(explain("h", &name).contains("name mismatch"));
        let exp = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(explain("h", &exp).contains("expired"));
        assert!(is_refusal(&unknown));
        assert!(!is_refusal(&rustls::Error::General("x".into())));
        // As hyper-rustls hands it on: tokio-rustls's io::Error inside another.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let boxed: Box<dyn std::error::Error + 'static> = Box::new(std::io::Error::other(io));
        assert!(matches!(
            rustls_cause(boxed.as_ref()),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
    }

    #[test]
    fn server_names_take_dns_names_and_addresses() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("db.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn a_missing_roots_file_is_named() {
        let e = client_config(&TlsSettings {
            verify: Verify::Full,
            roots: Some("/nonexistent/ca.pem".into()),
            client_cert: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
