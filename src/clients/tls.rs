//! TLS for the HTTP clients (Mastodon, LLM servers, OTLP): rustls with the ring provider,
//! installed once per process.

pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
