//! Sampling sessions and `asample` execution (PROTOCOL.md 7.1, 12).

use crate::config::EmulatorConfig;
use crate::futures::{Outcome, SampleOutcome};
use crate::model::{SampleParams, SampledSequence, TinyModel};
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinkex::core::types::{SampleRequest, StopCondition, TensorData, TensorValues};

/// One sampling session: fixed weights plus the dedup table of its requests.
pub struct SamplerSlot {
    /// Sampling session id.
    pub id: String,
    /// Owning session (the part of the id before `:sample:`).
    pub session_id: String,
    /// Base model name.
    pub base_model: String,
    /// Weights path, when not the base model.
    pub model_path: Option<String>,
    model: Arc<TinyModel>,
    /// For an inflight sampler (6.6): the training model's shared target, read per sample.
    inflight: Option<InflightTarget>,
    submitted: Mutex<HashMap<i64, (String, Vec<String>)>>,
    /// The next `client_counter` of `join_sampling_session` (5.9): the original client is 0.
    next_client: std::sync::atomic::AtomicI64,
}

/// The inflight weights target of one training model (PROTOCOL.md 6.6): every inflight
/// sampler of the model reads it per sample; each later inflight save replaces it.
pub type InflightTarget = Arc<std::sync::RwLock<Arc<TinyModel>>>;

/// Per prompt row, the cells of a `target_prompt_logprobs` tensor: `(index into the
/// tensor's values, token id or -1)`.
type TargetCells = Vec<Vec<(usize, i64)>>;

/// The parsed, validated parts of a sample request.
pub struct SampleJob {
    prompt: Vec<i64>,
    params: SampleParams,
    num_samples: usize,
    prompt_logprobs: bool,
    prompt_logprobs_last_n: Option<usize>,
    topk_prompt: usize,
    topk_sample: usize,
    /// `target_prompt_logprobs`: the request tensor and its cells per prompt row.
    target: Option<(TensorData, TargetCells)>,
    /// `prompt_alt_tokens_k`.
    alt_k: usize,
}

impl SamplerSlot {
    /// A session serving `model`.
    pub fn new(
        id: String,
        base_model: String,
        model_path: Option<String>,
        model: Arc<TinyModel>,
    ) -> Self {
        let session_id = id
            .rsplit_once(":sample:")
            .map(|(s, _)| s.to_string())
            .unwrap_or_default();
        SamplerSlot {
            id,
            session_id,
            base_model,
            model_path,
            model,
            inflight: None,
            submitted: Mutex::new(HashMap::new()),
            next_client: std::sync::atomic::AtomicI64::new(1),
        }
    }

    /// An inflight sampler: samples run on `target`'s weights at sampling time.
    pub fn new_inflight(id: String, base_model: String, target: InflightTarget) -> Self {
        let model = target.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut slot = SamplerSlot::new(id, base_model, None, model);
        slot.inflight = Some(target);
        slot
    }

    /// The weights a sample runs on now.
    fn current_model(&self) -> Arc<TinyModel> {
        match &self.inflight {
            Some(t) => t.read().unwrap_or_else(|e| e.into_inner()).clone(),
            None => self.model.clone(),
        }
    }

    /// Allocates a client id for a client joining this sampling session (5.9): unique
    /// among its clients, from 1 (the original client is 0).
    pub fn join(&self) -> i64 {
        self.next_client
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a request with this `seq_id` was already submitted (a resend of it is the same
    /// request and takes no new capacity).
    pub fn is_submitted(&self, seq_id: Option<i64>) -> bool {
        seq_id.is_some_and(|s| self.submitted.lock().unwrap().contains_key(&s))
    }

    /// Submits a sample; returns `(request_id, sample_sequence_ids)`. A repeated `seq_id` is the
    /// same request and returns the same ids without sampling again. `slot` is the capacity
    /// slot the sample holds until its result is stored (see [`SamplingCapacity`]).
    pub fn submit(
        self: &Arc<Self>,
        app: &Arc<AppState>,
        req: &SampleRequest,
        slot: Option<CapacitySlot>,
    ) -> (String, Vec<String>) {
        let context = app.config.context_length(&self.base_model);
        let mut submitted = self.submitted.lock().unwrap();
        let seq = req.seq_id.unwrap_or_else(|| -(submitted.len() as i64) - 1);
        if let Some(existing) = submitted.get(&seq) {
            return existing.clone();
        }
        let request_id = format!("{}:{seq}", self.id);
        // Bounded here too, for callers that skip `check_limits`; parse_job then fails the job.
        let n = (req.num_samples.max(0) as usize).min(app.config.max_num_samples);
        let sequence_ids: Vec<String> = (0..n).map(|i| format!("{request_id}:{i}")).collect();
        submitted.insert(seq, (request_id.clone(), sequence_ids.clone()));
        drop(submitted);
        app.futures.register(&request_id, "Sample");
        crate::billing::on_sample_request(
            app,
            &self.session_id,
            &self.id,
            &self.base_model,
            &request_id,
            req,
        );
        match check_limits(req, &app.config).and_then(|()| parse_job(req, context)) {
            Err(msg) => app.futures.complete(&request_id, Outcome::user_error(msg)),
            Ok(job) => {
                let (app, sampler, id) = (app.clone(), self.clone(), request_id.clone());
                let zero = app.config.zero_compute;
                tokio::spawn(async move {
                    let slot = slot;
                    if let Some(hold) = slot.as_ref().map(|s| s.hold).filter(|h| !h.is_zero()) {
                        tokio::time::sleep(hold).await;
                    }
                    // Server-side duration of a sample (`/_emulator/delays` `{"Sample": ms}`).
                    let delay = app.op_delays.lock().unwrap().get("Sample").copied();
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    if app.futures.is_cancelled(&id) {
                        return; // cancel_future: the work stops (and frees its capacity slot)
                    }
                    let outcome = tokio::task::spawn_blocking(move || sampler.run(job, zero))
                        .await
                        .unwrap_or_else(|e| {
                            Outcome::user_error(format!("internal emulator error: {e}"))
                        });
                    crate::billing::on_sample_done(&app, &id, &outcome);
                    app.futures.complete(&id, outcome);
                    drop(slot);
                });
            }
        }
        (request_id, sequence_ids)
    }

    fn run(&self, job: SampleJob, zero_compute: bool) -> Outcome {
        let model = self.current_model();
        let sequences = if zero_compute {
            let token = *job.prompt.last().expect("prompts are non-empty");
            let n = job.params.max_tokens;
            (0..job.num_samples)
                .map(|_| SampledSequence {
                    tokens: vec![token; n],
                    logprobs: vec![0.0; n],
                    stopped: false,
                })
                .collect()
        } else {
            model.sample(&job.prompt, &job.params, job.num_samples)
        };
        let topk_sampled = (job.topk_sample > 0).then(|| {
            sequences
                .iter()
                .map(|s| {
                    let mut full = job.prompt.clone();
                    full.extend_from_slice(&s.tokens);
                    let rows = model.topk_prompt_logprobs(&full, job.topk_sample);
                    rows[job.prompt.len()..].to_vec()
                })
                .collect()
        });
        let target_prompt_logprobs = job.target.as_ref().map(|(t, rows)| {
            let mut values = vec![0f32; t.data.len()];
            model.scan_prompt(&job.prompt, |row, z, lse| {
                for &(i, id) in &rows[row] {
                    if id >= 0 {
                        values[i] = TinyModel::token_logprob(z, lse, id);
                    }
                }
            });
            TensorData {
                data: TensorValues::Float32(values),
                dtype: tinkex::core::types::TensorDtype::Float32,
                shape: t.shape.clone(),
                sparse_crow_indices: t.sparse_crow_indices.clone(),
                sparse_col_indices: t.sparse_col_indices.clone(),
            }
        });
        let prompt_alt_tokens = (job.alt_k > 0).then(|| {
            let seed = job.params.seed.unwrap_or_else(|| {
                std::time::UNIX_EPOCH
                    .elapsed()
                    .map_or(7, |d| d.as_nanos() as u64)
            });
            let (tokens, logprobs) =
                model.prompt_alt_tokens(&job.prompt, job.alt_k, job.params.temperature, seed);
            (job.alt_k, tokens, logprobs)
        });
        Outcome::Sample(SampleOutcome {
            sequences,
            target_prompt_logprobs,
            prompt_alt_tokens,
            topk_sampled,
            prompt_logprobs: job.prompt_logprobs.then(|| {
                let mut lp = model.prompt_logprobs(&job.prompt);
                if let Some(n) = job.prompt_logprobs_last_n {
                    let cut = lp.len() - n;
                    lp[..cut].iter_mut().for_each(|x| *x = None);
                }
                lp
            }),
            topk_prompt: (job.topk_prompt > 0).then(|| {
                (
                    job.topk_prompt,
                    model.topk_prompt_logprobs(&job.prompt, job.topk_prompt),
                )
            }),
            topk_sample_k: job.topk_sample,
        })
    }
}

/// Checks the counts of a sample request that drive allocation and work (`num_samples`,
/// the top-k counts, the prompt length and the size of the result) against the configured
/// limits, before anything is allocated. The error names the field.
pub fn check_limits(req: &SampleRequest, config: &EmulatorConfig) -> Result<(), String> {
    let at_most = |field: &str, value: i64, max: usize, flag: &str| {
        if value > max as i64 {
            Err(format!(
                "{field} must be at most {max} in tinkex-emulator ({flag}), got {value}"
            ))
        } else {
            Ok(())
        }
    };
    at_most(
        "num_samples",
        req.num_samples,
        config.max_num_samples,
        "--max-num-samples",
    )?;
    at_most(
        "topk_prompt_logprobs",
        req.topk_prompt_logprobs,
        config.max_topk_logprobs,
        "--max-topk-logprobs",
    )?;
    at_most(
        "topk_sample_logprobs",
        req.topk_sample_logprobs,
        config.max_topk_logprobs,
        "--max-topk-logprobs",
    )?;
    let prompt = crate::encode::model_input_len_json(&req.prompt);
    if prompt > crate::encode::MAX_MODEL_INPUT_TOKENS {
        return Err(format!(
            "prompt has {prompt} tokens, more than tinkex-emulator's limit of {}",
            crate::encode::MAX_MODEL_INPUT_TOKENS
        ));
    }
    let n = req.num_samples.max(0) as u128;
    let max_tokens = req
        .sampling_params
        .max_tokens
        .unwrap_or(16)
        .clamp(0, 65_536) as u128;
    let topk_sample = req.topk_sample_logprobs.max(0) as u128;
    let per_prompt =
        u128::from(req.prompt_logprobs.unwrap_or(false)) + req.topk_prompt_logprobs.max(0) as u128;
    let target = req
        .target_prompt_logprobs
        .as_ref()
        .map_or(0, |t| t.data.len() as u128);
    let alt = u128::from(prompt) * 2 * req.prompt_alt_tokens_k.max(0) as u128;
    let entries =
        n * max_tokens * (2 + topk_sample) + u128::from(prompt) * per_prompt + target + alt;
    if entries > u128::from(config.max_sample_result_entries) {
        return Err(format!(
            "the result would hold {entries} values (num_samples × max_tokens × \
             (2 + topk_sample_logprobs) + prompt length × (prompt_logprobs + \
             topk_prompt_logprobs + 2 × prompt_alt_tokens_k) + target ids), more than \
             tinkex-emulator's limit of {} \
             (--max-sample-result-entries)",
            config.max_sample_result_entries
        ));
    }
    Ok(())
}

/// Validates a request into a job, or says what the emulator cannot do.
fn parse_job(req: &SampleRequest, context: Option<i64>) -> Result<SampleJob, String> {
    if req.num_samples < 1 {
        return Err(format!(
            "num_samples must be at least 1, got {}",
            req.num_samples
        ));
    }
    let prompt = crate::encode::model_input_tokens_json(&req.prompt)?;
    if prompt.is_empty() {
        return Err("prompt must contain at least one token".into());
    }
    if req.prompt_alt_tokens_k < 0 {
        return Err(format!(
            "prompt_alt_tokens_k must be 0 or greater, got {}",
            req.prompt_alt_tokens_k
        ));
    }
    let target = match &req.target_prompt_logprobs {
        Some(t) => Some((t.clone(), target_cells(t, prompt.len())?)),
        None => None,
    };
    let sp = &req.sampling_params;
    let (stop_tokens, stop_strings) = match &sp.stop {
        None => (Vec::new(), Vec::new()),
        Some(StopCondition::String(s)) => (Vec::new(), vec![s.clone()]),
        Some(StopCondition::Strings(v)) => (Vec::new(), v.clone()),
        Some(StopCondition::Tokens(v)) => (v.clone(), Vec::new()),
    };
    if !(sp.temperature >= 0.0) || !(sp.top_p > 0.0 && sp.top_p <= 1.0) {
        return Err(format!(
            "temperature must be >= 0 and top_p in (0, 1]; got temperature {} top_p {}",
            sp.temperature, sp.top_p
        ));
    }
    let max_tokens = sp.max_tokens.unwrap_or(16);
    if !(0..=65_536).contains(&max_tokens) {
        return Err(format!("max_tokens must be in 0..=65536, got {max_tokens}"));
    }
    if let Some(limit) = context {
        if prompt.len() as i64 + max_tokens > limit {
            return Err(format!(
                "prompt length {} plus max_tokens {max_tokens} exceeds the model's max context length {limit}",
                prompt.len()
            ));
        }
    }
    let prompt_logprobs = req.prompt_logprobs.unwrap_or(false);
    if let Some(n) = req.prompt_logprobs_last_n {
        if !prompt_logprobs {
            return Err("prompt_logprobs_last_n requires prompt_logprobs".into());
        }
        if n < 1 || n as usize >= prompt.len() {
            return Err(format!(
                "prompt_logprobs_last_n must be in 1..{}",
                prompt.len()
            ));
        }
    }
    Ok(SampleJob {
        params: SampleParams {
            max_tokens: max_tokens as usize,
            temperature: sp.temperature as f32,
            top_k: sp.top_k as i32,
            top_p: sp.top_p as f32,
            seed: sp.seed.map(|s| s as u64),
            stop_tokens,
            stop_strings,
        },
        num_samples: req.num_samples as usize,
        prompt_logprobs,
        prompt_logprobs_last_n: req.prompt_logprobs_last_n.map(|n| n as usize),
        topk_prompt: req.topk_prompt_logprobs.max(0) as usize,
        topk_sample: req.topk_sample_logprobs.max(0) as usize,
        target,
        alt_k: req.prompt_alt_tokens_k.max(0) as usize,
        prompt,
    })
}

/// Checks a `target_prompt_logprobs` tensor against 7.1 (int64, 2-D `[len(prompt) - 1, K]`,
/// dense or CSR with consistent indices, ids ≥ -1, at least one id) and lists its cells
/// per prompt row: `(index into the values, token id)`.
fn target_cells(t: &TensorData, prompt_len: usize) -> Result<TargetCells, String> {
    let bad = |why: &str| Err(format!("target_prompt_logprobs: {why}"));
    let TensorValues::Int64(ids) = &t.data else {
        return bad("must be an int64 tensor of token ids");
    };
    let rows = prompt_len.saturating_sub(1);
    let shape = match &t.shape {
        Some(s) if s.len() == 2 && s[0] >= 0 && s[1] >= 0 => s,
        _ => return bad("must be 2-D, [len(prompt) - 1, K]"),
    };
    if shape[0] as usize != rows {
        return Err(format!(
            "target_prompt_logprobs must have len(prompt) - 1 = {rows} rows, got {}",
            shape[0]
        ));
    }
    let k = shape[1] as usize;
    let mut cells = vec![Vec::new(); rows];
    match (&t.sparse_crow_indices, &t.sparse_col_indices) {
        (None, None) => {
            if rows.checked_mul(k) != Some(ids.len()) {
                return bad("shape does not hold the values");
            }
            for (i, &id) in ids.iter().enumerate() {
                cells[i / k.max(1)].push((i, id));
            }
        }
        (Some(crow), Some(col)) => {
            if crow.len() != rows + 1 || col.len() != ids.len() {
                return bad("CSR index lengths do not match the shape and values");
            }
            if crow[0] != 0
                || crow[rows] != ids.len() as i64
                || crow.windows(2).any(|w| w[0] > w[1])
            {
                return bad("CSR row pointers must rise from 0 to the number of values");
            }
            if col.iter().any(|&c| c < 0 || c as usize >= k) {
                return bad("CSR column index out of range");
            }
            for r in 0..rows {
                for i in crow[r] as usize..crow[r + 1] as usize {
                    cells[r].push((i, ids[i]));
                }
            }
        }
        _ => return bad("sparse_crow_indices and sparse_col_indices must come together"),
    }
    if ids.iter().any(|&id| id < -1) {
        return bad("token ids must be -1 (nothing) or non-negative");
    }
    if !ids.iter().any(|&id| id >= 0) {
        return bad("must name at least one token id");
    }
    Ok(cells)
}

// ------------------------------------------------------------------------------------------
// Sampling capacity per API key (back-pressure, PROTOCOL.md 12.5)
// ------------------------------------------------------------------------------------------

/// Settings of the sampling capacity (`POST /_emulator/sampling_capacity`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySettings {
    /// Samples of one API key that may run at once; a new `asample` over it is answered 429
    /// with `Retry-After`. `None`: unlimited.
    #[serde(default)]
    pub per_key: Option<u64>,
    /// The `Retry-After` of those 429s, seconds (default 1; 0 sends no header).
    #[serde(default)]
    pub retry_after_secs: Option<f64>,
    /// How long each accepted sample holds its slot before it runs, ms (default 0).
    #[serde(default)]
    pub sample_hold_ms: u64,
    /// How long the `asample` handler takes to answer, ms (default 0): makes the number of
    /// concurrent `asample` requests of a client observable.
    #[serde(default)]
    pub asample_latency_ms: u64,
    /// Behave as a server that predates `prompt_logprobs_last_n`: ignore it and score the
    /// whole prompt (the client must reject the result, PROTOCOL.md 7.1).
    #[serde(default)]
    pub ignore_prompt_logprobs_last_n: bool,
    /// Answer `asample` without `sample_sequence_ids` (the client must reject it, 12.7).
    #[serde(default)]
    pub omit_sample_sequence_ids: bool,
}

/// One `asample` request that reached the handler.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Arrival {
    /// Milliseconds since the emulator started.
    pub at_ms: f64,
    /// The API key's fingerprint.
    pub key: String,
    /// The sampling session.
    pub sampling_session_id: Option<String>,
    /// The request's `seq_id`.
    pub seq_id: Option<i64>,
    /// The request's `record_stability_info` (absent when not sent).
    #[serde(default)]
    pub record_stability_info: Option<bool>,
    /// The answer's status.
    pub status: u16,
}

/// What the emulator saw of one API key's samples.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeyStats {
    /// Samples running (accepted, result not stored yet).
    pub in_flight: u64,
    /// The most samples running at once.
    pub max_in_flight: u64,
    /// `asample` requests inside the handler now.
    pub asample_in_handler: u64,
    /// The most `asample` requests inside the handler at once.
    pub max_asample_in_handler: u64,
    /// Samples accepted.
    pub accepted: u64,
    /// `asample` requests answered 429 for capacity.
    pub rejected: u64,
}

/// Per-API-key sampling capacity and statistics. Keys are never stored or shown: they are
/// identified by [`key_fingerprint`].
pub struct SamplingCapacity {
    settings: Mutex<CapacitySettings>,
    keys: Arc<Mutex<HashMap<String, KeyStats>>>,
    arrivals: Mutex<Vec<Arrival>>,
    started: std::time::Instant,
}

impl Default for SamplingCapacity {
    fn default() -> Self {
        SamplingCapacity {
            settings: Mutex::default(),
            keys: Arc::default(),
            arrivals: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// Most arrivals kept (the oldest are dropped).
const MAX_ARRIVALS: usize = 10_000;

/// A sample's hold on its key's capacity; released on drop.
pub struct CapacitySlot {
    keys: Arc<Mutex<HashMap<String, KeyStats>>>,
    key: String,
    hold: std::time::Duration,
}

impl Drop for CapacitySlot {
    fn drop(&mut self) {
        if let Some(k) = self.keys.lock().unwrap().get_mut(&self.key) {
            k.in_flight = k.in_flight.saturating_sub(1);
        }
    }
}

/// A short, stable, non-reversible name of an API key (FNV-1a 64, hex): what the capacity
/// statistics are keyed by.
pub fn key_fingerprint(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Marks an `asample` request as inside the handler; counted out on drop.
pub struct HandlerGuard {
    keys: Arc<Mutex<HashMap<String, KeyStats>>>,
    key: String,
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        if let Some(k) = self.keys.lock().unwrap().get_mut(&self.key) {
            k.asample_in_handler = k.asample_in_handler.saturating_sub(1);
        }
    }
}

/// The answer to an `asample` over capacity.
pub enum Admission {
    /// Run it, holding this slot.
    Accepted(CapacitySlot),
    /// Answer 429 with this `Retry-After` (seconds; `None`: no header).
    Rejected(Option<f64>),
}

impl SamplingCapacity {
    /// Replaces the settings.
    pub fn configure(&self, s: CapacitySettings) {
        *self.settings.lock().unwrap() = s;
    }

    /// The settings.
    pub fn settings(&self) -> CapacitySettings {
        self.settings.lock().unwrap().clone()
    }

    /// The statistics by key fingerprint.
    pub fn stats(&self) -> HashMap<String, KeyStats> {
        self.keys.lock().unwrap().clone()
    }

    /// Records an `asample` request and its answer's status.
    pub fn record(&self, key: &str, req: &SampleRequest, status: u16) {
        let mut a = self.arrivals.lock().unwrap();
        if a.len() >= MAX_ARRIVALS {
            a.remove(0);
        }
        a.push(Arrival {
            at_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            key: key_fingerprint(key),
            sampling_session_id: req.sampling_session_id.clone(),
            seq_id: req.seq_id,
            record_stability_info: req.record_stability_info,
            status,
        });
    }

    /// The `asample` requests seen, oldest first.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Forgets the statistics and arrivals (keeps running samples' counts).
    pub fn reset_stats(&self) {
        self.arrivals.lock().unwrap().clear();
        let mut keys = self.keys.lock().unwrap();
        for k in keys.values_mut() {
            *k = KeyStats {
                in_flight: k.in_flight,
                max_in_flight: k.in_flight,
                asample_in_handler: k.asample_in_handler,
                max_asample_in_handler: k.asample_in_handler,
                ..KeyStats::default()
            };
        }
    }

    /// Counts an `asample` request of `key` into the handler, waiting the configured latency.
    pub async fn enter(&self, key: &str) -> HandlerGuard {
        let fp = key_fingerprint(key);
        {
            let mut keys = self.keys.lock().unwrap();
            let k = keys.entry(fp.clone()).or_default();
            k.asample_in_handler += 1;
            k.max_asample_in_handler = k.max_asample_in_handler.max(k.asample_in_handler);
        }
        let guard = HandlerGuard {
            keys: self.keys.clone(),
            key: fp,
        };
        let latency = self.settings.lock().unwrap().asample_latency_ms;
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        guard
    }

    /// Admits a new sample of `key`, or rejects it when the key is at capacity.
    pub fn admit(&self, key: &str) -> Admission {
        let s = self.settings.lock().unwrap().clone();
        let fp = key_fingerprint(key);
        let mut keys = self.keys.lock().unwrap();
        let k = keys.entry(fp.clone()).or_default();
        if s.per_key.is_some_and(|cap| k.in_flight >= cap) {
            k.rejected += 1;
            let ra = s.retry_after_secs.unwrap_or(1.0);
            return Admission::Rejected((ra > 0.0).then_some(ra));
        }
        k.in_flight += 1;
        k.max_in_flight = k.max_in_flight.max(k.in_flight);
        k.accepted += 1;
        Admission::Accepted(CapacitySlot {
            keys: self.keys.clone(),
            key: fp,
            hold: std::time::Duration::from_millis(s.sample_hold_ms),
        })
    }
}
