//! Session lifecycle: startup (client config, dynamic config, create_session), the heartbeat
//! loop, and finish on close (PROTOCOL.md 3.2, 3.5, 5.3-5.7).

use crate::core::error::{Error, ErrorKind, Result};
use crate::core::events::Event;
use crate::core::telemetry::{SendFuture, Telemetry, TelemetryBatch, TelemetrySink};
use crate::core::transport::{Pool, Request};
use crate::core::types::{
    CreateSessionRequest, CreateSessionResponse, DynamicConfig, FinishReason, FinishReasonKind,
    FinishSessionRequest, SdkVersionRequest, SessionHeartbeatRequest, SDK_VERSION,
};
use crate::core::ClientCore;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use tokio::time::Instant;

/// A created session and its counters.
pub struct SessionState {
    /// The server's session id.
    pub session_id: String,
    model_seq: AtomicI64,
    sampling_seq: AtomicI64,
    expired: AtomicBool,
    finished: AtomicBool,
    /// A shadow holder's view of another process's session (PROTOCOL.md 3.4): it has no
    /// session counters, so it cannot create training clients or sampling sessions.
    shadow: bool,
}

impl SessionState {
    fn new(session_id: String, shadow: bool) -> Self {
        SessionState {
            session_id,
            model_seq: AtomicI64::new(0),
            sampling_seq: AtomicI64::new(0),
            expired: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            shadow,
        }
    }

    /// Whether this is a shadow holder's session (3.4).
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Fails (user error) when this is a shadow holder's session: `what` (e.g. "training
    /// clients") needs the session counters only the process that created the session has.
    pub fn check_can_create(&self, what: &str) -> Result<()> {
        if self.shadow {
            return Err(Error::user(format!(
                "this client was rebuilt from a sampler handle and shares session {} with the \
                 process that created it (a shadow holder, PROTOCOL.md 3.4): it cannot create \
                 {what}; use that process's ServiceClient",
                self.session_id
            )));
        }
        Ok(())
    }

    /// The next `model_seq_id` (training clients), from 0.
    pub fn next_model_seq(&self) -> i64 {
        self.model_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// The next `sampling_session_seq_id`, from 0.
    pub fn next_sampling_seq(&self) -> i64 {
        self.sampling_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether the server ended the session.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// Fails fast when the session expired or was finished.
    pub fn check_usable(&self) -> Result<()> {
        if self.is_expired() {
            return Err(Error::new(
                ErrorKind::SessionExpired,
                format!(
                    "session {} expired (the server answered 410 to a heartbeat)",
                    self.session_id
                ),
            ));
        }
        if self.finished.load(Ordering::SeqCst) {
            return Err(Error::user(format!(
                "session {} was closed",
                self.session_id
            )));
        }
        Ok(())
    }
}

impl ClientCore {
    /// The session, created on first use.
    pub async fn session(self: &Arc<Self>) -> Result<Arc<SessionState>> {
        if self.sessionless {
            return Err(Error::user(
                "this is a session-less holder (RestClient/AdminClient): it has no session",
            ));
        }
        let s = self
            .session
            .get_or_try_init(|| async { self.start_session().await.map(Arc::new) })
            .await?
            .clone();
        s.check_usable()?;
        Ok(s)
    }

    /// The session if it was created.
    pub fn session_if_started(&self) -> Option<Arc<SessionState>> {
        self.session.get().cloned()
    }

    pub(crate) async fn fetch_config<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &str,
        pool: Pool,
        what: &str,
    ) -> Result<T> {
        let req = Request::post_json(
            path,
            &SdkVersionRequest {
                sdk_version: SDK_VERSION.into(),
            },
            pool,
            self.config.timeouts.dynamic_config,
        );
        match self.send(&req).await {
            Ok(resp) => resp.json(what),
            // A server without the endpoint: use the official defaults (the SDK would fail).
            Err(e) if e.http_status == Some(404) => Ok(T::default()),
            Err(e) => Err(e),
        }
    }

    async fn start_session(self: &Arc<Self>) -> Result<SessionState> {
        self.operation(async {
            // Raw credential; chooses the auth mode and stores the flags (PROTOCOL.md 2.5, 3.2).
            self.ensure_client_config().await?;
            let dynamic: DynamicConfig = self
                .fetch_config(
                    "/api/v1/client/dynamic_config",
                    Pool::Session,
                    "client/dynamic_config",
                )
                .await?;
            *self.dynamic_config.write().unwrap() = dynamic;
            let body = CreateSessionRequest {
                tags: self.config.tags.clone(),
                user_metadata: self
                    .config
                    .user_metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
                sdk_version: SDK_VERSION.into(),
                project_id: self.config.project_id.clone(),
                display_name: self.config.display_name.clone(),
                kind: "create_session".into(),
            };
            let req = Request::post_json(
                "/api/v1/create_session",
                &body,
                Pool::Session,
                self.config.timeouts.request,
            );
            let resp: CreateSessionResponse = self.send(&req).await?.json("create_session")?;
            crate::core::sanitize::check_server_id(&resp.session_id, "session id")?;
            use crate::core::sanitize::server_text;
            if let Some(m) = &resp.info_message {
                tracing::info!("{}", server_text(m));
            }
            if let Some(m) = &resp.warning_message {
                tracing::warn!("{}", server_text(m));
            }
            if let Some(m) = &resp.error_message {
                tracing::error!("{}", server_text(m));
            }
            Ok(resp.session_id)
        })
        .await
        .map(|session_id| {
            self.start_session_loops(&session_id);
            SessionState::new(session_id, false)
        })
    }

    /// Step 6 of 3.2: telemetry (queuing `SESSION_START`), the heartbeat, the
    /// dynamic-config refresh and the cancel drain of `session_id`.
    fn start_session_loops(self: &Arc<Self>, session_id: &str) {
        self.start_telemetry(session_id);
        self.runtime
            .spawn(heartbeat_loop(Arc::downgrade(self), session_id.to_string()));
        self.runtime
            .spawn(dynamic_config_loop(Arc::downgrade(self)));
        self.runtime
            .spawn(crate::core::cancel::drain_loop(Arc::downgrade(self)));
    }

    /// Makes this (new, unused) core a shadow holder of another process's session
    /// (PROTOCOL.md 3.4): adopts the snapshot's `client/config` and dynamic config (nothing
    /// is fetched, no session is created), reuses `session_id`, and starts its own
    /// heartbeat, dynamic-config refresh, cancel drain and telemetry (`SESSION_START` under
    /// that id). The JWT, if the flags ask for one, is exchanged lazily by the first request.
    pub(crate) fn become_shadow(
        self: &Arc<Self>,
        session_id: String,
        client_config: crate::core::types::ClientConfig,
        dynamic: DynamicConfig,
    ) -> Result<()> {
        self.adopt_client_config(client_config)?;
        *self.dynamic_config.write().unwrap() = dynamic;
        self.session
            .set(Arc::new(SessionState::new(session_id.clone(), true)))
            .map_err(|_| Error::fatal("a shadow holder must be a new client"))?;
        self.start_session_loops(&session_id);
        Ok(())
    }

    fn start_telemetry(self: &Arc<Self>, session_id: &str) {
        self.start_telemetry_as(session_id, true);
    }

    /// Starts telemetry under `session_id`; `session_start` queues `SESSION_START` (not for
    /// a session-less holder, 3.3).
    pub(crate) fn start_telemetry_as(self: &Arc<Self>, session_id: &str, session_start: bool) {
        let sink = Arc::new(HttpTelemetrySink {
            core: Arc::downgrade(self),
        });
        let core = Arc::downgrade(self);
        let on_overflow = Box::new(move |dropped: u64| {
            if let Some(c) = core.upgrade() {
                c.events.emit(Event::TelemetryOverflow { dropped });
            }
        });
        let _guard = self.runtime.enter();
        let t = Telemetry::start(
            self.config.telemetry_settings.clone(),
            sink,
            session_id.to_string(),
            on_overflow,
        );
        if session_start {
            t.session_start();
        }
        let _ = self.telemetry.set(t);
    }

    /// Finishes the session (first reason wins on the server) and stops background loops.
    pub async fn finish_session(
        self: &Arc<Self>,
        reason: FinishReasonKind,
        detail: Option<String>,
    ) -> Result<()> {
        self.shutdown.send_replace(true);
        let Some(session) = self.session_if_started() else {
            return Ok(());
        };
        if session.finished.swap(true, Ordering::SeqCst) || session.is_expired() {
            return Ok(());
        }
        let body = FinishSessionRequest {
            reason: FinishReason { kind: reason },
            detail,
        };
        let req = Request::post_json(
            format!("/api/v1/sessions/{}/finish", session.session_id),
            &body,
            Pool::Train,
            self.config.timeouts.request,
        );
        let finished = self.operation(self.send(&req)).await.map(|_| ());
        if let Some(t) = self.telemetry.get() {
            t.drain(self.config.telemetry_settings.drain_timeout).await;
        }
        finished
    }
}

/// Shortest refresh period of the dynamic config, whatever the server asks for.
const MIN_DYNAMIC_CONFIG_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Refreshes `client/dynamic_config` every `max(refresh_interval_sec, 10 s)`: one attempt per
/// refresh; on failure the previous values stay (PROTOCOL.md 5.4). Stops on close or when the
/// client is gone.
async fn dynamic_config_loop(core: Weak<ClientCore>) {
    let mut shutdown = match core.upgrade() {
        Some(c) => c.shutdown.subscribe(),
        None => return,
    };
    loop {
        let interval = match core.upgrade() {
            Some(c) => {
                let secs = c.dynamic_config.read().unwrap().refresh_interval_sec;
                std::time::Duration::from_secs(secs).max(MIN_DYNAMIC_CONFIG_REFRESH)
            }
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(core) = core.upgrade() else { return };
        let req = Request::post_json(
            "/api/v1/client/dynamic_config",
            &SdkVersionRequest {
                sdk_version: SDK_VERSION.into(),
            },
            Pool::Session,
            core.config.timeouts.dynamic_config,
        );
        match core.transport.send(&req, 0).await {
            Ok(resp) if resp.is_success() => {
                match resp.json::<DynamicConfig>("client/dynamic_config") {
                    Ok(fresh) => *core.dynamic_config.write().unwrap() = fresh,
                    Err(e) => tracing::debug!("keeping the previous dynamic config: {e}"),
                }
            }
            Ok(resp) => {
                tracing::debug!("keeping the previous dynamic config: HTTP {}", resp.status)
            }
            Err(e) => tracing::debug!("keeping the previous dynamic config: {e}"),
        }
    }
}

/// Sends telemetry batches over the client's transport (one attempt within the timeout; the
/// telemetry module drops a batch that fails). Works after close. Never adds the API key to
/// the body; the key travels only in the `X-API-Key` header, as on every request.
struct HttpTelemetrySink {
    core: Weak<ClientCore>,
}

impl TelemetrySink for HttpTelemetrySink {
    fn send(&self, batch: TelemetryBatch, timeout: std::time::Duration) -> SendFuture {
        let core = self.core.clone();
        Box::pin(async move {
            let core = core
                .upgrade()
                .ok_or_else(|| Error::fatal("client dropped"))?;
            let req = Request::post_json("/api/v1/telemetry", &batch, Pool::Telemetry, timeout);
            let resp = core.transport.send(&req, 0).await?;
            if !resp.is_success() {
                return Err(resp.to_error());
            }
            crate::core::telemetry::check_accepted(&resp.body)
        })
    }
}

/// Beats every interval with one attempt each (PROTOCOL.md 5.6). After `warn_after` of
/// continuous failure every failed beat emits a `HeartbeatWarning` event, and a WARNING with
/// the elapsed time is logged at most once per `warn_log_interval`; never drops the session
/// for transient failures; stops on 410 (session expired: INFO), on close, or when the
/// client is gone.
async fn heartbeat_loop(core: Weak<ClientCore>, session_id: String) {
    let (interval, warn_after, warn_log_interval, mut shutdown) = match core.upgrade() {
        Some(c) => (
            c.config.heartbeat.interval,
            c.config.heartbeat.warn_after,
            c.config.heartbeat.warn_log_interval,
            c.shutdown.subscribe(),
        ),
        None => return,
    };
    let mut last_ok = Instant::now();
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(core) = core.upgrade() else { return };
        let body = SessionHeartbeatRequest {
            session_id: session_id.clone(),
            kind: Some("session_heartbeat".into()),
        };
        let req = Request::post_json(
            "/api/v1/session_heartbeat",
            &body,
            Pool::Session,
            core.config.timeouts.heartbeat,
        );
        let error = match core.transport.send(&req, 0).await {
            Ok(resp) if resp.is_success() => {
                last_ok = Instant::now();
                last_warning = None;
                continue;
            }
            Ok(resp) if resp.status == 410 => {
                tracing::info!("session {session_id} has ended (heartbeat answered 410)");
                if let Some(s) = core.session_if_started() {
                    s.expired.store(true, Ordering::SeqCst);
                }
                core.events.emit(Event::SessionExpired {
                    session_id: session_id.clone(),
                });
                return;
            }
            Ok(resp) => resp.to_error(),
            Err(e) => e,
        };
        let failing = last_ok.elapsed();
        if failing > warn_after {
            if last_warning.is_none_or(|t| t.elapsed() >= warn_log_interval) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                "Session heartbeat failed for {:.0} seconds for session {session_id}. Your connection may be \
                 unreliable or Tinker is down. If this persists, the session will be terminated. Last error: {error}",
                    failing.as_secs_f64()
                );
            }
            core.events.emit(Event::HeartbeatWarning {
                session_id: session_id.clone(),
                failing_for_secs: failing.as_secs_f64(),
                error: error.to_string(),
            });
        }
    }
}
