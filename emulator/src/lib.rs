//! # tinkex-emulator
//!
//! A local server that speaks the Tinker HTTP protocol (see `shared/spec/PROTOCOL.md`) and
//! trains a real tiny model on the CPU, so losses really fall. It is the test bed of the
//! libtinkex client and of every binding, and the official Python SDK runs against it.
//!
//! Start it in-process with [`Emulator::start`], or run the `tinkex-emulator` binary.

#![warn(missing_docs)]

pub mod auth;
pub mod billing;
pub mod checkpoints;
pub mod config;
pub mod encode;
pub mod faults;
pub mod flags;
pub mod futures;
pub mod model;
pub mod persist;
mod routes;
pub mod sampling;
pub mod sessions;
pub mod signed_urls;
pub mod state;
pub mod training;
pub mod util;
pub mod weights_export;

pub use config::EmulatorConfig;

use state::AppState;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Entry point for starting emulators.
pub struct Emulator;

/// A running emulator. Dropping it stops the server.
pub struct RunningEmulator {
    base_url: String,
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<io::Result<()>>,
}

impl Emulator {
    /// Binds the configured address, opens the state dir and starts serving on the current
    /// tokio runtime. Returns once the socket is listening.
    ///
    /// Fails with `InvalidInput` when a `control_token` is set but empty or not printable
    /// ASCII (it could not be sent in a header, or would match an empty one).
    pub async fn start(config: EmulatorConfig) -> io::Result<RunningEmulator> {
        if let Some(token) = &config.control_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the control token must be non-empty printable ASCII without spaces",
                ));
            }
        }
        let checkpoints = checkpoints::CheckpointStore::open(&config.state_dir)?;
        let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState::new(config, checkpoints, shutdown_rx));
        persist::restore(&state);
        let router = routes::router(state.clone());
        let listener = faults::OutageListener {
            inner: listener,
            outage: state.clone(),
        };
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(RunningEmulator {
            base_url: format!("http://{addr}"),
            addr,
            state,
            shutdown,
            server,
        })
    }
}

impl RunningEmulator {
    /// The base URL to give clients, e.g. `http://127.0.0.1:43127`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server state, for tests that inspect it.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Calls a `/_emulator` control route in-process, e.g.
    /// `control("GET", "models/<id>", None)` or `control("POST", "outage", Some(&body))`:
    /// the same handlers as over HTTP, but without the listener, the fault middleware or the
    /// control token, so no outage, partition or fault rule (which all act on the socket or
    /// on `/api/v1` requests) can delay or break it. Test helpers use it so they never share
    /// the fate of the faults they inject. Returns the status code and the JSON answer
    /// (`null` when the body is empty or not JSON).
    pub async fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt;
        let body = match body {
            Some(v) => axum::body::Body::from(serde_json::to_vec(v).unwrap_or_default()),
            None => axum::body::Body::empty(),
        };
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!("/{}", path.trim_start_matches('/')))
            .header("content-type", "application/json")
            .body(body);
        let request = match request {
            Ok(r) => r,
            Err(e) => return (400, serde_json::json!({ "detail": e.to_string() })),
        };
        let router = routes::control_router(self.state.clone());
        let response = match router.oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    }

    /// Stops serving at once: open connections (including long polls) are dropped, as if
    /// the process had stopped. Checkpoints already on disk stay.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
        let _ = (&mut { self }.server).await;
    }

    /// Serves until the server task ends (it does not end on its own).
    pub async fn serve_forever(mut self) -> io::Result<()> {
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}
