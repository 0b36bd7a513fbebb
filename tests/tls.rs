//! TLS trust: a certificate the client does not trust fails at once with a typed,
//! non-retried error (not two hours of "connection failed"); naming its CA in
//! `SSL_CERT_FILE` makes it trusted, as the system store would. The test server uses the
//! throw-away certificates of `tests/data`.
//!
//! One test per binary run order matters: `SSL_CERT_FILE` is process-wide, so the two cases
//! run in one test, untrusted first.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinkex::core::error::TransportCause;
use tinkex::core::{Config, ErrorKind, RetryPolicy, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUNS: &str =
    r#"{"training_runs": [], "cursor": {"offset": 0, "limit": 10, "total_count": 0}}"#;

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// An HTTPS server on 127.0.0.1 answering every request with a training-runs page.
async fn https_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("localhost.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("localhost.key")).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 16384];
                let _ = tls.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{RUNS}",
                    RUNS.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), handshakes)
}

fn client(url: &str) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-tls-test")
        .base_url(url)
        .telemetry(false)
        .retry(RetryPolicy {
            progress_timeout: Duration::from_secs(30),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_once_and_ssl_cert_file_makes_it_trusted() {
    std::env::remove_var("SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_DIR");
    let (url, handshakes) = https_server().await;

    let started = Instant::now();
    let err = client(&url)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert_eq!(err.transport, Some(TransportCause::Tls), "{err}");
    assert!(err.message.contains("certificate was rejected"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not retried until the progress timeout"
    );
    assert_eq!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a rejected certificate is not retried"
    );

    // With the CA named in SSL_CERT_FILE (a new client reads the trust store), it works.
    std::env::set_var("SSL_CERT_FILE", data("test-ca.crt"));
    let runs = client(&url)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .expect("trusted through SSL_CERT_FILE");
    assert!(runs.training_runs.is_empty());
}
