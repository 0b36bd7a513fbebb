//! `tinkex_service_client` (Arc-owned): the entry point; creates training, sampling and REST
//! clients.

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::future::{json_output, submit_on, tinkex_future, Output};
use super::rest::tinkex_rest_client;
use super::runtime::tinkex_runtime;
use super::sampling::tinkex_sampling_client;
use super::status::tinkex_status;
use super::training::tinkex_training_client;
use super::{boundary, input_json, out_ptr, tinkex_done_fn, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::config::{HeartbeatConfig, Limits, RetryPolicy, Timeouts};
use crate::core::telemetry::TelemetryConfig;
use crate::core::types::{FinishReasonKind, LoraConfig};
use crate::core::{ApiFuture, Config, LoraOptions, ServiceClient};
use serde::Deserialize;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

/// A service client: owns the session, its heartbeat and the progress watchdog shared by
/// the clients it creates.
///
/// Arc-owned; holds its runtime. Clients it creates hold it in turn. Any thread may use it
/// concurrently.
pub struct tinkex_service_client {
    pub(crate) rt: Arc<tinkex_runtime>,
    pub(crate) client: ServiceClient,
}

impl super::future::ClientHandle for tinkex_service_client {
    type Client = ServiceClient;
    const ARG: &'static str = "svc";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &ServiceClient {
        &self.client
    }
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

/// `tinkex_service_client_new` configuration (every field optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    api_key: Option<String>,
    base_url: Option<String>,
    tags: Option<Vec<String>>,
    project_id: Option<String>,
    display_name: Option<String>,
    telemetry: Option<bool>,
    telemetry_settings: Option<TelemetryJson>,
    allow_insecure_http: Option<bool>,
    timeouts: Option<TimeoutsJson>,
    retry: Option<RetryJson>,
    heartbeat: Option<HeartbeatJson>,
    progress_event_interval_ms: Option<u64>,
    limits: Option<LimitsJson>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsJson {
    max_response_bytes: Option<u64>,
    max_announced_response_bytes: Option<u64>,
    max_redirects: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimeoutsJson {
    connect_ms: Option<u64>,
    request_ms: Option<u64>,
    retrieve_future_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    dynamic_config_ms: Option<u64>,
    telemetry_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryJson {
    progress_timeout_ms: Option<u64>,
    base_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
    jitter: Option<f64>,
    max_attempts: Option<u32>,
    max_retry_after_ms: Option<u64>,
    billing_pause_step_ms: Option<u64>,
    billing_max_pause_ms: Option<u64>,
    min_poll_duration_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TelemetryJson {
    max_batch: Option<usize>,
    flush_interval_ms: Option<u64>,
    max_queue: Option<usize>,
    http_timeout_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HeartbeatJson {
    interval_ms: Option<u64>,
    warn_after_ms: Option<u64>,
}

impl ConfigJson {
    fn build(self) -> Result<Config, Failure> {
        let mut b = Config::builder();
        if let Some(v) = self.api_key {
            b = b.api_key(v);
        }
        if let Some(v) = self.base_url {
            b = b.base_url(v);
        }
        if let Some(v) = self.tags {
            b = b.tags(v);
        }
        if let Some(v) = self.project_id {
            b = b.project_id(v);
        }
        if let Some(v) = self.display_name {
            b = b.display_name(v);
        }
        if let Some(v) = self.telemetry {
            b = b.telemetry(v);
        }
        if let Some(t) = self.telemetry_settings {
            let d = TelemetryConfig::default();
            b = b.telemetry_settings(TelemetryConfig {
                max_batch: t.max_batch.unwrap_or(d.max_batch),
                flush_interval: ms(t.flush_interval_ms, d.flush_interval),
                max_queue: t.max_queue.unwrap_or(d.max_queue),
                http_timeout: ms(t.http_timeout_ms, d.http_timeout),
                drain_timeout: ms(t.drain_timeout_ms, d.drain_timeout),
                ..d
            });
        }
        if let Some(v) = self.allow_insecure_http {
            b = b.allow_insecure_http(v);
        }
        if let Some(t) = self.timeouts {
            let d = Timeouts::default();
            b = b.timeouts(Timeouts {
                connect: ms(t.connect_ms, d.connect),
                request: ms(t.request_ms, d.request),
                retrieve_future: ms(t.retrieve_future_ms, d.retrieve_future),
                heartbeat: ms(t.heartbeat_ms, d.heartbeat),
                dynamic_config: ms(t.dynamic_config_ms, d.dynamic_config),
                telemetry: ms(t.telemetry_ms, d.telemetry),
            });
        }
        if let Some(r) = self.retry {
            let d = RetryPolicy::default();
            let jitter = r.jitter.unwrap_or(d.jitter);
            if !(0.0..=1.0).contains(&jitter) {
                return Err(Failure::invalid_arg(format!(
                    "retry.jitter {jitter} is outside [0, 1]"
                )));
            }
            b = b.retry(RetryPolicy {
                progress_timeout: ms(r.progress_timeout_ms, d.progress_timeout),
                base_delay: ms(r.base_delay_ms, d.base_delay),
                max_delay: ms(r.max_delay_ms, d.max_delay),
                jitter,
                max_attempts: r.max_attempts.or(d.max_attempts),
                max_retry_after: ms(r.max_retry_after_ms, d.max_retry_after),
                billing_pause_step: ms(r.billing_pause_step_ms, d.billing_pause_step),
                billing_max_pause: ms(r.billing_max_pause_ms, d.billing_max_pause),
                min_poll_duration: ms(r.min_poll_duration_ms, d.min_poll_duration),
            });
        }
        if let Some(h) = self.heartbeat {
            let d = HeartbeatConfig::default();
            b = b.heartbeat(HeartbeatConfig {
                interval: ms(h.interval_ms, d.interval),
                warn_after: ms(h.warn_after_ms, d.warn_after),
            });
        }
        if let Some(v) = self.progress_event_interval_ms {
            b = b.progress_event_interval(Duration::from_millis(v));
        }
        if let Some(l) = self.limits {
            let d = Limits::default();
            b = b.limits(Limits {
                max_response_bytes: l.max_response_bytes.unwrap_or(d.max_response_bytes),
                max_announced_response_bytes: l
                    .max_announced_response_bytes
                    .unwrap_or(d.max_announced_response_bytes),
                max_redirects: l.max_redirects.unwrap_or(d.max_redirects),
            });
        }
        Ok(b.build()?)
    }
}

/// Creates a service client on `rt`. Performs no I/O (the session starts with the first
/// operation).
///
/// `config_json` (UTF-8 JSON object; every field optional, unknown fields are
/// `INVALID_JSON`; unset fields fall back to the `TINKER_*` environment variables, then to
/// defaults):
/// ```json
/// {"api_key": "tml-...", "base_url": "https://...", "tags": ["a"], "project_id": "p",
///  "display_name": "run 1", "telemetry": false, "allow_insecure_http": false,
///  "telemetry_settings": {"max_batch": 100, "flush_interval_ms": 10000, "max_queue": 10000,
///                         "http_timeout_ms": 5000, "drain_timeout_ms": 30000},
///  "timeouts": {"connect_ms": 5000, "request_ms": 60000, "retrieve_future_ms": 45000,
///               "heartbeat_ms": 10000, "dynamic_config_ms": 10000, "telemetry_ms": 5000},
///  "retry": {"progress_timeout_ms": 7200000, "base_delay_ms": 500, "max_delay_ms": 10000,
///            "jitter": 0.25, "max_attempts": null, "max_retry_after_ms": 60000,
///            "billing_pause_step_ms": 5000, "billing_max_pause_ms": 3600000,
///            "min_poll_duration_ms": 1000},
///  "heartbeat": {"interval_ms": 10000, "warn_after_ms": 120000},
///  "progress_event_interval_ms": 10000,
///  "limits": {"max_response_bytes": 67108864, "max_announced_response_bytes": 2147483648,
///             "max_redirects": 10}}
/// ```
/// Every interval and timeout must be above zero (else `TINKEX_STATUS_USER`:
/// zero never means "off"). Error messages never repeat a rejected value.
/// A missing or malformed key gives `TINKEX_STATUS_AUTH` / `TINKEX_STATUS_USER`; a bad URL
/// `TINKEX_STATUS_USER`; a shut-down runtime `TINKEX_STATUS_SHUT_DOWN`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_service_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_new(
    rt: *const tinkex_runtime,
    config_json: *const u8,
    config_json_len: usize,
    out: *mut *mut tinkex_service_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live runtime handle (caller contract).
        let rt = unsafe { ArcHandle::clone_from_ptr(rt, "rt") }?;
        out_ptr(out, "out")?;
        // SAFETY: `(config_json, config_json_len)` is a readable input (caller contract).
        let cfg: ConfigJson = unsafe { input_json(config_json, config_json_len, "config_json") }?;
        let config = cfg.build()?;
        rt.check_open()?;
        let client = ServiceClient::with_runtime(config, rt.handle().clone())?;
        let svc = Arc::new(tinkex_service_client { rt, client });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(svc)) };
        Ok(tinkex_status::Ok)
    })
}

/// A new reference to the same client; NULL when `svc` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_service_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_clone(
    svc: *const tinkex_service_client,
) -> *mut tinkex_service_client {
    // SAFETY: a non-NULL `svc` is a live handle (caller contract).
    unsafe { super::clone_export(svc) }
}

/// Drops one reference. NULL does nothing. Never cancels: pending operations, created
/// clients and subscriptions keep the client alive. Does not finish the session (use
/// `tinkex_service_client_close`).
///
/// Consumes: `svc`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_free(svc: *mut tinkex_service_client) {
    // SAFETY: a non-NULL `svc` came from this library; the host gives up this reference.
    unsafe { super::free_export(svc) }
}

/// The session id as UTF-8 bytes, once the session exists (after the first operation);
/// `TINKEX_STATUS_WRONG_STATE` before.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_session_id(
    svc: *const tinkex_service_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::from_ptr(svc, "svc") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let id = svc
            .client
            .session_id()
            .ok_or_else(|| Failure::wrong_state("the session has not started yet"))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(id.into_bytes()))) };
        Ok(tinkex_status::Ok)
    })
}

/// The models the server supports. Result: `ServerCapabilities` JSON
/// (`{"supported_models": [{"model_name": ...}, ...]}`).
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_get_server_capabilities(
    svc: *const tinkex_service_client,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.get_server_capabilities()),
            |_| |v| json_output(&v),
        ) }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateModelJson {
    base_model: String,
    #[serde(default)]
    lora_config: Option<LoraConfig>,
}

fn training_output(
    parent: Arc<tinkex_service_client>,
) -> impl FnOnce(crate::core::TrainingClient) -> Result<Output, Failure> + Send + 'static {
    move |client| {
        let rt = parent.rt.clone();
        Ok(Output::Training(Arc::new(tinkex_training_client::new(
            rt, parent, client,
        ))))
    }
}

/// Creates a LoRA training client. `json` is the `create_model` body without the
/// client-owned fields: `{"base_model": "Qwen/Qwen3-8B", "lora_config": {"rank": 32,
/// "seed": null, "train_unembed": true, "train_mlp": true, "train_attn": true}}`
/// (`lora_config` optional). Result: a training client (take it with
/// `tinkex_future_take_training_client`).
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_lora_training_client(
    svc: *const tinkex_service_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateModelJson = unsafe { input_json(json, json_len, "json") }?;
        let lora = input.lora_config.unwrap_or_default();
        let options = LoraOptions {
            rank: lora.rank,
            seed: lora.seed,
            train_unembed: lora.train_unembed,
            train_mlp: lora.train_mlp,
            train_attn: lora.train_attn,
        };
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.create_lora_training_client(&input.base_model, options)),
            training_output,
        ) }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromStateJson {
    path: String,
    #[serde(default)]
    optimizer: bool,
}

/// Creates a training client from a training checkpoint. `json`:
/// `{"path": "tinker://.../weights/name", "optimizer": false}` (`optimizer: true` also
/// restores the optimizer state). Result: a training client.
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_training_client_from_state(
    svc: *const tinkex_service_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: FromStateJson = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| {
                Ok(if input.optimizer {
                    c.create_training_client_from_state_with_optimizer(&input.path)
                } else {
                    c.create_training_client_from_state(&input.path)
                })
            },
            training_output,
        ) }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSamplingJson {
    #[serde(default)]
    model_path: Option<String>,
    #[serde(default)]
    base_model: Option<String>,
}

/// Creates a sampling client. `json` names exactly one of `{"model_path": "tinker://..."}`
/// (sampler weights) or `{"base_model": "Qwen/Qwen3-8B"}`; both or neither is
/// `TINKEX_STATUS_INVALID_ARG`. Result: a sampling client (take it with
/// `tinkex_future_take_sampling_client`).
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_sampling_client(
    svc: *const tinkex_service_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateSamplingJson = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| match (&input.model_path, &input.base_model) {
                (Some(p), None) => Ok(c.create_sampling_client(p)),
                (None, Some(b)) => Ok(c.create_sampling_client_for_base_model(b)),
                _ => Err(Failure::invalid_arg(
                    "give exactly one of model_path and base_model",
                )),
            },
            |parent| {
                move |client| {
                    let rt = parent.rt.clone();
                    Ok(Output::Sampling(Arc::new(tinkex_sampling_client::new(
                        rt, parent, client,
                    ))))
                }
            },
        ) }
    })
}

/// Creates a REST client (training runs, checkpoints) sharing this client's transport.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with `tinkex_rest_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_rest_client(
    svc: *const tinkex_service_client,
    out: *mut *mut tinkex_rest_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::clone_from_ptr(svc, "svc") }?;
        out_ptr(out, "out")?;
        let client = svc.client.create_rest_client();
        let rest = Arc::new(tinkex_rest_client::new(svc.rt.clone(), svc, client));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(rest)) };
        Ok(tinkex_status::Ok)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseJson {
    #[serde(default = "success")]
    reason: FinishReasonJson,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishReasonJson {
    #[serde(rename = "type")]
    kind: FinishReasonKind,
}

fn success() -> FinishReasonJson {
    FinishReasonJson {
        kind: FinishReasonKind::Success,
    }
}

/// Finishes the session and stops background work (heartbeats). Idempotent. `json` is the
/// `sessions/{id}/finish` body: `{"reason": {"type": "success" | "errored" |
/// "interrupted"}, "detail": "..."}`; empty input means success. Result: `{}`.
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_close(
    svc: *const tinkex_service_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CloseJson = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| {
                let c = c.clone();
                let handle = c.core().runtime.clone();
                Ok(ApiFuture::spawn(&handle, move |_| async move {
                    c.close(input.reason.kind, input.detail).await
                }))
            },
            |_| |()| json_output(&serde_json::json!({})),
        ) }
    })
}
