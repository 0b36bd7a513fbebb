//! The async Rust client and the wire types of the Tinker protocol.
//!
//! Start with [`ServiceClient`]; see `docs/architecture.md` for the life of one request.

pub mod api_future;
pub mod byte_budget;
pub mod chunking;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod polling;
pub mod progress;
pub mod proto;
pub mod queue_state;
pub mod rand;
pub mod requests;
pub mod rest;
pub mod retry;
pub mod sampling;
pub mod sanitize;
pub mod service;
pub mod session;
pub mod telemetry;
mod tls;
pub mod training;
pub mod transport;
pub mod types;

pub use api_future::ApiFuture;
pub use config::{
    Config, ConfigBuilder, ConfigInput, HeartbeatConfig, Limits, RetryPolicy, Timeouts,
};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, EventBus, SubscriptionId};
pub use requests::{
    CloseInput, ComputeLogprobsInput, CreateLoraTrainingClientInput, CreateSamplingClientInput,
    CreateTrainingClientFromStateInput, LoadStateInput, LossInput, OptimStepInput, SampleInput,
    SaveStateInput, SaveWeightsForSamplerInput,
};
pub use rest::RestClient;
pub use sampling::{SampleOptions, SamplingClient};
pub use service::{ClientStatus, LoraOptions, ServiceClient, TelemetryCounters};
pub use training::TrainingClient;

use std::sync::Arc;
use std::sync::RwLock;
use tokio::sync::Semaphore;

/// State shared by a ServiceClient and every client it creates.
pub struct ClientCore {
    /// Resolved configuration.
    pub(crate) config: Config,
    /// HTTP attempts.
    pub(crate) transport: transport::Transport,
    /// Where operations run.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Progress watchdog.
    pub(crate) progress: progress::ProgressTracker,
    /// Event subscribers.
    pub(crate) events: EventBus,
    /// Flags from `client/config` (defaults until fetched).
    pub(crate) server_config: RwLock<types::ClientConfig>,
    /// Flags from `client/dynamic_config`, refreshed periodically.
    pub(crate) dynamic_config: RwLock<types::DynamicConfig>,
    /// Lazily created session.
    pub(crate) session: tokio::sync::OnceCell<Arc<session::SessionState>>,
    /// Concurrent sample dispatches (PROTOCOL.md 12.4).
    pub(crate) sample_dispatch: Semaphore,
    /// Stops background loops on close.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Telemetry of the session (started with it).
    pub(crate) telemetry: std::sync::OnceLock<Arc<telemetry::Telemetry>>,
}

impl ClientCore {
    fn new(config: Config, runtime: tokio::runtime::Handle) -> Result<Arc<Self>> {
        let transport = transport::Transport::new(
            &config.base_url,
            config.api_key.clone(),
            &config.timeouts,
            &config.limits,
        )?;
        let progress = progress::ProgressTracker::new(config.retry.progress_timeout);
        Ok(Arc::new(ClientCore {
            config,
            transport,
            runtime,
            progress,
            events: EventBus::default(),
            server_config: RwLock::new(types::ClientConfig::default()),
            dynamic_config: RwLock::new(types::DynamicConfig::default()),
            session: tokio::sync::OnceCell::new(),
            sample_dispatch: Semaphore::new(400),
            shutdown: tokio::sync::watch::channel(false).0,
            telemetry: std::sync::OnceLock::new(),
        }))
    }

    /// Sends a request with the retry policy; a 2xx response counts as progress.
    pub async fn send(&self, req: &transport::Request) -> Result<transport::Response> {
        self.send_counted(req, None).await
    }

    /// [`send`](Self::send), counting attempts into `status`.
    pub async fn send_counted(
        &self,
        req: &transport::Request,
        status: Option<&progress::OpStatus>,
    ) -> Result<transport::Response> {
        self.send_with_policy(req, status, &self.config.retry).await
    }

    /// [`send_counted`](Self::send_counted) with a specific retry policy (per-call override).
    pub async fn send_with_policy(
        &self,
        req: &transport::Request,
        status: Option<&progress::OpStatus>,
        policy: &RetryPolicy,
    ) -> Result<transport::Response> {
        let attempts = status.map(|s| &s.attempts);
        let resp = retry::send_with_retry(
            &self.transport,
            policy,
            &self.progress,
            &self.events,
            req,
            attempts,
        )
        .await?;
        self.progress.record();
        Ok(resp)
    }

    /// Runs one whole operation under the progress guard, counting it in flight and recording
    /// its completion as progress.
    pub async fn operation<T>(
        &self,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = tokio::time::Instant::now();
        let _in_flight = self.progress.enter();
        let result = self.progress.guard(started, op).await;
        match &result {
            Ok(_) => self.progress.record_completion(),
            Err(e) => self.report_fatal_failure(e, "ServiceClient"),
        }
        result
    }

    /// Sends a failed operation to telemetry (user vs system error classified there).
    pub fn report_failure(&self, e: &Error, method: &str) {
        if let Some(t) = self.telemetry.get() {
            t.exception(e, method);
        }
    }

    /// [`report_failure`](Self::report_failure), then `SESSION_END`, as the official SDK's
    /// "fatal" wrappers of whole public calls do (PROTOCOL.md 16.3).
    pub fn report_fatal_failure(&self, e: &Error, method: &str) {
        if let Some(t) = self.telemetry.get() {
            t.fatal_exception(e, method);
        }
    }

    /// [`operation`](Self::operation) that also emits a progress event for `status`, and a
    /// client summary, every `progress_event_interval` while it is pending.
    pub async fn tracked_operation<T>(
        &self,
        status: &progress::OpStatus,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let interval = self.config.progress_event_interval;
        let ticker = async {
            loop {
                tokio::time::sleep(interval).await;
                self.events.emit(status.event(self.progress.remaining()));
                let snap = self.progress.snapshot();
                self.events.emit(Event::Summary {
                    waiting: snap.waiting,
                    in_flight: snap.in_flight,
                    completed: snap.completed,
                });
            }
        };
        let started = tokio::time::Instant::now();
        let _in_flight = self.progress.enter();
        let result = tokio::select! {
            r = self.progress.guard(started, op) => r,
            _ = ticker => unreachable!("the ticker never ends"),
        };
        match &result {
            Ok(_) => self.progress.record_completion(),
            Err(e) => self.report_failure(e, status.request_type),
        }
        result
    }
}
