//! The async Rust client and the wire types of the Tinker protocol.
//!
//! Start with [`ServiceClient`]; see `docs/architecture.md` for the life of one request.

pub mod api_future;
pub mod auth;
pub mod billing;
pub mod byte_budget;
pub mod cancel;
pub mod chunking;
pub mod codec;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod fb_encode;
pub mod futures_poller;
pub mod introspect;
pub mod polling;
pub mod progress;
pub mod proto;
pub mod queue_state;
pub mod rand;
pub mod requests;
pub mod rest;
pub mod retry;
pub mod retry_handler;
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
pub use rest::{AdminClient, RestClient};
pub use sampling::{SampleOptions, SamplingClient};
pub use service::{ClientStatus, LoraOptions, ServiceClient, TelemetryCounters};
pub use training::TrainingClient;

use std::sync::Arc;
use std::sync::RwLock;

/// State shared by a ServiceClient and every client it creates.
pub struct ClientCore {
    /// Resolved configuration.
    pub(crate) config: Config,
    /// `config.retry`, shared: the policy of every operation that has no override (one
    /// allocation per client, not one per operation).
    pub(crate) retry_policy: Arc<RetryPolicy>,
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
    /// Sampling dispatch gates and back-off state, shared by every sampling client of this
    /// holder (PROTOCOL.md 12.4, 12.5).
    pub(crate) sample_dispatch: Arc<dispatch::SampleDispatch>,
    /// Sampling retry handlers by sampling session id and configuration (12.6, 13.5).
    pub(crate) retry_handlers: retry_handler::Registry,
    /// Stops background loops on close.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Telemetry of the session (started with it).
    pub(crate) telemetry: std::sync::OnceLock<Arc<telemetry::Telemetry>>,
    /// The billing pause shared by every layer that waits out HTTP 402 (PROTOCOL.md 13.7).
    pub billing: billing::Billing,
    /// forward_backward dispatch byte budget (`fwdbwd_dispatch_bytes_semaphore_size`).
    pub(crate) fwdbwd_budget: byte_budget::ByteBudget,
    /// Credentials, auth mode and the JWT cache (PROTOCOL.md 2); shared with the transport.
    pub(crate) auth: Arc<auth::Auth>,
    /// In-flight response byte budget (`inflight_response_bytes_semaphore_size`, 8.1.3).
    pub(crate) inflight_response: byte_budget::ByteBudget,
    /// Poll backoff shared by every future of this host (8.1.3, no spinning).
    pub(crate) poll_backoff: polling::PollBackoff,
    /// `retrieve_futures` pollers by (sampling session, clone id) (8.2).
    pub(crate) futures_pollers: std::sync::Mutex<
        std::collections::HashMap<(String, i64), Arc<futures_poller::FuturesPoller>>,
    >,
    /// Abandoned sampling requests to cancel (8.3).
    pub(crate) cancels: cancel::CancelQueue,
    /// A session-less holder (PROTOCOL.md 3.3: RestClient, AdminClient): never creates a
    /// session; telemetry under a synthetic `sessionless-{uuid}` id without SESSION_START/END.
    pub(crate) sessionless: bool,
    /// Startup steps 1-4 of a session-less holder, run once ([`rest`]).
    pub(crate) sessionless_ready: tokio::sync::OnceCell<()>,
    /// Server-side custom losses of this session and their counter (5.10, 11.6).
    pub(crate) custom_losses: training::custom_loss::CustomLossRegistry,
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        if self.sessionless {
            rest::forget_dead_holders();
        }
    }
}

impl ClientCore {
    pub(crate) fn new(config: Config, runtime: tokio::runtime::Handle) -> Result<Arc<Self>> {
        Self::build(config, runtime, false)
    }

    /// A holder that never creates a session (PROTOCOL.md 3.3).
    pub(crate) fn new_sessionless(
        config: Config,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Self>> {
        Self::build(config, runtime, true)
    }

    fn build(
        config: Config,
        runtime: tokio::runtime::Handle,
        sessionless: bool,
    ) -> Result<Arc<Self>> {
        let auth = Arc::new(auth::Auth::new(
            config.credentials.clone(),
            config.retry.clone(),
        )?);
        let transport = transport::Transport::new(
            &config.base_url,
            auth.clone(),
            &config.timeouts,
            &config.limits,
            &config.default_headers_overrides,
        )?;
        let progress = progress::ProgressTracker::new(config.retry.progress_timeout);
        let sample_dispatch = dispatch::SampleDispatch::new(
            config.sampling.clone(),
            types::ClientConfig::default().sample_dispatch_bytes_semaphore_size,
        );
        let billing = billing::Billing::new(&config.retry);
        let fwdbwd_budget = byte_budget::ByteBudget::new(
            types::ClientConfig::default().fwdbwd_dispatch_bytes_semaphore_size,
        );
        let core = Arc::new(ClientCore {
            billing,
            fwdbwd_budget,
            retry_policy: Arc::new(config.retry.clone()),
            config,
            transport,
            runtime,
            progress,
            events: EventBus::default(),
            server_config: RwLock::new(types::ClientConfig::default()),
            dynamic_config: RwLock::new(types::DynamicConfig::default()),
            session: tokio::sync::OnceCell::new(),
            sample_dispatch,
            retry_handlers: retry_handler::Registry::default(),
            shutdown: tokio::sync::watch::channel(false).0,
            telemetry: std::sync::OnceLock::new(),
            inflight_response: byte_budget::ByteBudget::new(
                types::ClientConfig::default().inflight_response_bytes_semaphore_size,
            ),
            poll_backoff: polling::PollBackoff::default(),
            futures_pollers: Default::default(),
            cancels: Default::default(),
            sessionless,
            sessionless_ready: tokio::sync::OnceCell::new(),
            custom_losses: Default::default(),
            auth,
        });
        core.auth.attach(Arc::downgrade(&core));
        Ok(core)
    }

    /// Sends a request through the retry layers of its endpoint ([`retry`]); a 2xx response
    /// counts as progress.
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
        self.send_refreshing(req, status, policy, None).await
    }

    /// [`send_with_policy`](Self::send_with_policy) whose holder-loop re-issues are rebuilt
    /// by `refresh` (the ephemeral save_weights_for_sampler, PROTOCOL.md 6.6).
    pub async fn send_refreshing(
        &self,
        req: &transport::Request,
        status: Option<&progress::OpStatus>,
        policy: &RetryPolicy,
        refresh: Option<retry::Refresh<'_>>,
    ) -> Result<transport::Response> {
        // Every request waits for client/config, which chooses the auth mode (2.5).
        if req.path != auth::CLIENT_CONFIG_PATH {
            self.ensure_client_config().await?;
        }
        let ctx = retry::SendContext {
            transport: &self.transport,
            policy,
            progress: &self.progress,
            events: &self.events,
            billing: &self.billing,
            attempts: status.map(|s| &s.attempts),
            telemetry: self.telemetry.get().map(|t| &**t),
        };
        let resp = retry::send_with_retry(&ctx, req, refresh).await?;
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
            // A session-less holder never emits SESSION_END (3.3).
            if self.sessionless {
                t.exception(e, method);
            } else {
                t.fatal_exception(e, method);
            }
        }
    }

    /// [`operation`](Self::operation) that also emits a progress event for `status`, and a
    /// client summary, every `progress_event_interval` while it is pending.
    ///
    /// `op` is boxed at the call, before the returned future exists: the returned future
    /// holds a pointer to it, not a copy of it next to its own state (an async fn keeps its
    /// arguments for its whole life, so `op` passed by value and then moved into the
    /// `select!` below would take its size twice).
    pub fn tracked_operation<'a, T: 'a>(
        &'a self,
        status: &'a progress::OpStatus,
        op: impl std::future::Future<Output = Result<T>> + 'a,
    ) -> impl std::future::Future<Output = Result<T>> + 'a {
        let op = Box::pin(op);
        self.tracked_operation_boxed(status, op)
    }

    async fn tracked_operation_boxed<T>(
        &self,
        status: &progress::OpStatus,
        op: std::pin::Pin<Box<impl std::future::Future<Output = Result<T>>>>,
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
