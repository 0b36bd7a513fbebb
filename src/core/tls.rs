//! The TLS configuration of every HTTP client: rustls with the bundled Mozilla roots and the
//! operating system's trust store (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), like
//! the official SDK, so TLS-intercepting proxies and VPNs keep working.
//!
//! Loading the system store reads and parses every certificate it holds (tens of
//! milliseconds), so the root store is loaded once and shared; it is reloaded only when
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` change. Each transport gets its own configuration
//! built from it (cheap), so its session cache is freed with it. The transport builds its HTTP clients on the
//! first request, on a runtime thread — never inside a caller's (an Elixir NIF's) call.

use crate::core::error::{Error, Result};
use std::sync::{Arc, Mutex};

type Key = (Option<std::ffi::OsString>, Option<std::ffi::OsString>);

static CACHE: Mutex<Option<(Key, Arc<rustls::RootCertStore>)>> = Mutex::new(None);

/// A client configuration over the shared roots (ALPN `h2`, `http/1.1`).
pub(crate) fn client_config() -> Result<rustls::ClientConfig> {
    let key: Key = (
        std::env::var_os("SSL_CERT_FILE"),
        std::env::var_os("SSL_CERT_DIR"),
    );
    let roots = {
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        match &*cache {
            Some((k, roots)) if *k == key => roots.clone(),
            _ => {
                let roots = Arc::new(load_roots());
                *cache = Some((key, roots.clone()));
                roots
            }
        }
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::fatal(format!("cannot configure TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn load_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // Stores often hold a few certificates rustls cannot parse; they are skipped, as
        // reqwest does.
        let _ = roots.add(cert);
    }
    if !native.errors.is_empty() {
        tracing::debug!(
            "some system trust store entries could not be read: {}",
            native.errors.len()
        );
    }
    roots
}
