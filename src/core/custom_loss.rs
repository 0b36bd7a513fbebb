//! `forward_backward_custom`: a loss computed by the caller between a forward and a
//! backward, in one reserved turn of the training client (the official SDK's
//! `TrainingClient.forward_backward_custom`, PROTOCOL.md 10.10).
//!
//! 1. [`TrainingClient::forward_backward_custom_start`] reserves `2 × chunks` request ids at
//!    once (so later submissions of the client queue behind both phases), and runs a
//!    `cross_entropy` forward over the datums' `target_tokens` (and `weights`, zeros when
//!    absent): its result carries the per-datum `logprobs`.
//! 2. The caller computes its loss `C(logprobs)` and the gradients `dC/dlogprobs`.
//! 3. [`CustomLossPass::backward`] sends a `cross_entropy` forward_backward with
//!    `weights = -dC/dlogprobs` (the backend's loss is `sum(-logprobs * weights)`) in the
//!    second half of the reserved ids, with the forward's chunk boundaries (re-chunking
//!    would leave gaps in the reserved ids), then the turn passes on.
//!
//! A failure of either phase, [`CustomLossPass::abort`], or dropping a pass that neither
//! sent its backward nor aborted **poisons** the client, as the SDK does: queued and later
//! training requests fail with a `User` error naming the cause (the skipped ids can never
//! be sent, so nothing after them could run in order anyway).

use crate::core::error::{Error, Result};
use crate::core::training::{TrainingClient, TurnGuard};
use crate::core::types::{Datum, ForwardBackwardOutput, TensorData, TensorDtype, TensorValues};
use crate::core::ApiFuture;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// The loss function the backend runs for both phases.
const SURROGATE_LOSS: &str = "cross_entropy";

/// What the caller's loss produced (input of [`CustomLossPass::backward`]).
#[derive(Clone, Debug, Default)]
pub struct CustomLossOutput {
    /// One tensor per datum: `dC/dlogprobs`, the shape of that datum's `logprobs`.
    pub grads: Vec<TensorData>,
    /// The custom loss's sum; reported as the result's `loss:sum` (the surrogate's sum is
    /// kept as `surrogate_loss:sum`). `None` keeps the server's `loss:sum`.
    pub loss_sum: Option<f64>,
    /// Extra metrics merged into the result's metrics.
    pub metrics: BTreeMap<String, f64>,
}

struct Open {
    backward: TurnGuard,
    /// The forward datums (model input, `target_tokens`, `weights`).
    data: Vec<Datum>,
    ranges: Vec<Range<usize>>,
}

/// The state shared by a pass and its forward operation.
struct Shared {
    client: TrainingClient,
    open: Mutex<Option<Open>>,
}

impl Shared {
    /// Releases the reserved backward turn (if still held) and poisons the client.
    fn fail(&self, cause: String) {
        self.client.inner.poison(cause);
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The guard passes the turn on when dropped; outside tokio it needs the runtime
        // entered to wait for its turn in a task.
        let _entered = self.client.inner.core.runtime.enter();
        drop(open);
    }
}

/// One custom-loss pass between its forward and its backward. Send + Sync; dropping it
/// without [`backward`](Self::backward) or [`abort`](Self::abort) aborts it.
pub struct CustomLossPass {
    shared: Arc<Shared>,
}

impl TrainingClient {
    /// Phase 1 of a custom-loss step: reserves both phases' turn and sends the forward.
    /// Returns the pass (for [`CustomLossPass::backward`]) and the forward's future, whose
    /// `loss_fn_outputs[i]["logprobs"]` feed the caller's loss.
    ///
    /// Errors at once (nothing reserved) when `data` is empty, a datum has no
    /// `target_tokens`, or the client is poisoned.
    pub fn forward_backward_custom_start(
        &self,
        data: Vec<Datum>,
    ) -> Result<(CustomLossPass, ApiFuture<ForwardBackwardOutput>)> {
        self.inner.check_poisoned()?;
        if data.is_empty() {
            return Err(Error::user("No data provided"));
        }
        let forward_data = data
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let target = d
                    .loss_fn_inputs
                    .get("target_tokens")
                    .cloned()
                    .ok_or_else(|| {
                        Error::user(format!(
                            "datum {i}: target_tokens must be provided for forward_backward_custom"
                        ))
                    })?;
                let weights =
                    d.loss_fn_inputs
                        .get("weights")
                        .cloned()
                        .unwrap_or_else(|| TensorData {
                            data: TensorValues::Float32(vec![0.0; target.data.len()]),
                            dtype: TensorDtype::Float32,
                            shape: target.shape.clone(),
                            sparse_crow_indices: None,
                            sparse_col_indices: None,
                        });
                let mut inputs = BTreeMap::new();
                inputs.insert("target_tokens".to_string(), target);
                inputs.insert("weights".to_string(), weights);
                Ok(Datum {
                    model_input: d.model_input,
                    loss_fn_inputs: inputs,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ranges = self.chunk_ranges(&forward_data);
        let n = ranges.len().max(1);
        // Both phases precede later requests, even while the forward is pending.
        let (forward, backward) = self.reserve(2 * n).split(n);
        let shared = Arc::new(Shared {
            client: self.clone(),
            open: Mutex::new(Some(Open {
                backward,
                data: forward_data.clone(),
                ranges: ranges.clone(),
            })),
        });
        // A failed forward poisons the client and frees the backward turn at once, so
        // later requests fail instead of waiting for a backward that cannot come.
        let on_forward = Arc::downgrade(&shared);
        let client = self.clone();
        let fut = self.forward_in(
            forward,
            Some(Box::new(move |e: &Error| {
                let cause = format!("the custom-loss forward failed: {e}");
                match on_forward.upgrade() {
                    Some(s) => s.fail(cause),
                    None => client.inner.poison(cause),
                }
            })),
            forward_data,
            ranges,
            SURROGATE_LOSS,
            None,
            true,
            Ok,
        );
        Ok((CustomLossPass { shared }, fut))
    }

    /// The whole custom-loss step with a Rust closure as the loss: forward, `loss(data,
    /// logprobs)` (on a tokio worker; keep it short or use `spawn_blocking` inside), then
    /// backward. An `Err` from the loss aborts the pass (and poisons the client).
    pub fn forward_backward_custom<F>(
        &self,
        data: Vec<Datum>,
        loss: F,
    ) -> ApiFuture<ForwardBackwardOutput>
    where
        F: FnOnce(&[Datum], &[TensorData]) -> Result<CustomLossOutput> + Send + 'static,
    {
        let (pass, forward) = match self.forward_backward_custom_start(data.clone()) {
            Ok(p) => p,
            Err(e) => return ApiFuture::ready(Err(e)),
        };
        ApiFuture::spawn(
            &self.inner.core.runtime.clone(),
            move |_handle| async move {
                let out = forward.result().await?;
                let logprobs = out
                    .loss_fn_outputs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        o.get("logprobs").cloned().ok_or_else(|| {
                            Error::fatal(format!("forward output {i} has no logprobs"))
                        })
                    })
                    .collect::<Result<Vec<_>>>();
                let computed = logprobs.and_then(|lp| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loss(&data, &lp)))
                        .unwrap_or_else(|_| Err(Error::user("the custom loss panicked")))
                });
                match computed {
                    Ok(output) => pass.backward(output).result().await,
                    Err(e) => {
                        pass.abort(&format!("the custom loss failed: {e}"));
                        Err(e)
                    }
                }
            },
        )
    }
}

impl CustomLossPass {
    /// Phase 2: sends the backward with `weights = -grads[i]` for each datum, in the
    /// reserved turn, then passes the turn on. Result: the backward's output with
    /// `loss:sum` replaced by `output.loss_sum` (when given; the server's value moves to
    /// `surrogate_loss:sum`) and `output.metrics` merged in.
    ///
    /// Fails (and poisons the client) when called twice, after an abort, after a failed
    /// forward, or when `grads` does not match the datums (count, or a gradient whose
    /// element count differs from the datum's `target_tokens`).
    pub fn backward(&self, output: CustomLossOutput) -> ApiFuture<ForwardBackwardOutput> {
        let open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(open) = open else {
            let err = self
                .shared
                .client
                .inner
                .check_poisoned()
                .err()
                .unwrap_or_else(|| Error::user("this custom-loss pass already sent its backward"));
            return ApiFuture::ready(Err(err));
        };
        let Open {
            backward,
            data,
            ranges,
        } = open;
        let built = build_backward(data, output.grads);
        let data = match built {
            Ok(d) => d,
            Err(e) => {
                // Back in place so that `fail` releases the turn inside the runtime.
                *self.shared.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(Open {
                    backward,
                    data: Vec::new(),
                    ranges: Vec::new(),
                });
                self.shared
                    .fail(format!("invalid custom-loss gradients: {e}"));
                return ApiFuture::ready(Err(e));
            }
        };
        let (loss_sum, metrics) = (output.loss_sum, output.metrics);
        let client = self.shared.client.clone();
        self.shared.client.forward_in(
            backward,
            Some(Box::new(move |e: &Error| {
                client
                    .inner
                    .poison(format!("the custom-loss backward failed: {e}"))
            })),
            data,
            ranges,
            SURROGATE_LOSS,
            None,
            false,
            move |mut out| {
                if let Some(sum) = loss_sum {
                    if let Some(surrogate) = out.metrics.remove("loss:sum") {
                        out.metrics.insert("surrogate_loss:sum".into(), surrogate);
                    }
                    out.metrics.extend(metrics);
                    out.metrics.insert("loss:sum".into(), sum);
                } else {
                    out.metrics.extend(metrics);
                }
                Ok(out)
            },
        )
    }

    /// The loss failed or was cancelled: releases the reserved turn and poisons the client
    /// (later training requests fail naming `reason`). Idempotent; after a backward it does
    /// nothing.
    pub fn abort(&self, reason: &str) {
        let open = self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if open {
            self.shared
                .fail(format!("the custom loss was aborted: {reason}"));
        }
    }

    /// Whether the pass still holds its backward turn (no backward, abort or failure yet).
    pub fn is_open(&self) -> bool {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl Drop for CustomLossPass {
    fn drop(&mut self) {
        self.abort("the pass was released without a backward");
    }
}

/// The backward datums: each forward datum with `weights = -grads[i]`.
fn build_backward(data: Vec<Datum>, grads: Vec<TensorData>) -> Result<Vec<Datum>> {
    if grads.len() != data.len() {
        return Err(Error::user(format!(
            "expected {} gradient tensors (one per datum), got {}",
            data.len(),
            grads.len()
        )));
    }
    data.into_iter()
        .zip(grads)
        .enumerate()
        .map(|(i, (mut d, g))| {
            let target_len = d
                .loss_fn_inputs
                .get("target_tokens")
                .map_or(0, |t| t.data.len());
            let values: Vec<f32> = match g.data {
                TensorValues::Float32(v) => v.into_iter().map(|x| -x).collect(),
                TensorValues::Int64(v) => v.into_iter().map(|x| -(x as f32)).collect(),
            };
            if values.len() != target_len {
                return Err(Error::user(format!(
                    "datum {i}: the gradient has {} elements but target_tokens has {target_len}",
                    values.len()
                )));
            }
            let shape = g.shape.or_else(|| {
                d.loss_fn_inputs
                    .get("target_tokens")
                    .and_then(|t| t.shape.clone())
            });
            d.loss_fn_inputs.insert(
                "weights".into(),
                TensorData {
                    data: TensorValues::Float32(values),
                    dtype: TensorDtype::Float32,
                    shape,
                    sparse_crow_indices: None,
                    sparse_col_indices: None,
                },
            );
            Ok(d)
        })
        .collect()
}

/// The most server-side custom losses one session registers (a bound on client memory).
const MAX_CUSTOM_LOSSES: usize = 4096;

/// A server-side custom loss created by this session (PROTOCOL.md 5.10).
#[derive(Clone, Debug)]
pub struct RegisteredLoss {
    /// The loss's name.
    pub name: String,
    /// Its inputs, `logprobs` first.
    pub inputs: Vec<crate::core::types::CustomLossInput>,
}

#[derive(Default)]
struct RegistryState {
    /// The `custom_loss_seq_id` counter, from 0.
    next_seq: i64,
    /// Keys (name, inputs and graph) of the losses created, to refuse a second creation.
    keys: std::collections::HashMap<String, String>,
    /// Losses by `loss_id`.
    by_id: std::collections::HashMap<String, RegisteredLoss>,
}

/// The session's server-side custom losses: the `custom_loss_seq_id` counter, the "created
/// once per session" rule, and the inputs each `loss_id` reads (checked before a
/// `loss_fn: "custom"` forward_backward, 11.6).
#[derive(Default)]
pub struct CustomLossRegistry {
    state: Mutex<RegistryState>,
}

impl CustomLossRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `key` (the traced loss) and the next `custom_loss_seq_id`; fails (user error)
    /// when this session already created the same loss.
    pub(crate) fn reserve(&self, key: String, name: &str) -> Result<i64> {
        let mut s = self.lock();
        if let Some(existing) = s.keys.get(&key) {
            return Err(Error::user(format!(
                "create_custom_loss: this session already created {existing:?} with the same \
                 traced loss; reuse its loss_id"
            )));
        }
        if s.keys.len() >= MAX_CUSTOM_LOSSES {
            return Err(Error::user(format!(
                "create_custom_loss: a session creates at most {MAX_CUSTOM_LOSSES} custom losses"
            )));
        }
        s.keys.insert(key, name.to_string());
        let seq = s.next_seq;
        s.next_seq += 1;
        Ok(seq)
    }

    /// Frees a reservation whose creation failed (the same loss may then be created again).
    pub(crate) fn release(&self, key: &str) {
        self.lock().keys.remove(key);
    }

    /// Records the server's `loss_id` of a created loss.
    pub(crate) fn insert(&self, loss_id: String, loss: RegisteredLoss) {
        self.lock().by_id.insert(loss_id, loss);
    }

    /// The checks of a `loss_fn: "custom"` batch (11.6): `loss_fn_config.loss_id` names a
    /// loss of this session, and each datum carries every input it reads at the declared
    /// rank (`logprobs` has the rank of `target_tokens`; a tensor without `shape` is 1-D).
    pub(crate) fn check(
        &self,
        data: &[Datum],
        config: Option<&BTreeMap<String, crate::core::types::LossConfigValue>>,
    ) -> Result<()> {
        use crate::core::types::LossConfigValue;
        let loss_id = match config.and_then(|c| c.get("loss_id")) {
            Some(LossConfigValue::Text(id)) => id,
            Some(_) => return Err(Error::user("loss_fn_config.loss_id must be a string")),
            None => {
                return Err(Error::user(
                    "loss_fn \"custom\" needs loss_fn_config {\"loss_id\": ...} from \
                     create_custom_loss",
                ))
            }
        };
        let loss = self.lock().by_id.get(loss_id).cloned().ok_or_else(|| {
            Error::user(format!(
                "loss_id {loss_id:?} was not created by this session (create it with \
                 create_custom_loss on the same service client)"
            ))
        })?;
        for (i, datum) in data.iter().enumerate() {
            for (n, input) in loss.inputs.iter().enumerate() {
                let key = if n == 0 {
                    "target_tokens"
                } else {
                    input.name.as_str()
                };
                let tensor = datum.loss_fn_inputs.get(key).ok_or_else(|| {
                    Error::user(format!(
                        "datum[{i}] has no loss_fn_inputs[{key:?}], which loss {:?} takes",
                        loss.name
                    ))
                })?;
                let rank = tensor.shape.as_ref().map_or(1, Vec::len);
                if rank != usize::from(input.rank) {
                    return Err(Error::user(format!(
                        "datum[{i}] loss_fn_inputs[{key:?}] has rank {rank}, but loss {:?} \
                         declared {} with rank {}",
                        loss.name, input.name, input.rank
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The maximum number of parameters of a custom loss, `logprobs` included (5.10).
const MAX_LOSS_INPUTS: usize = 16;

/// The client-side checks of a custom loss before upload (5.10): `logprobs` first with rank
/// 1 or 2, at most 16 parameters, names `[a-z_][a-z0-9_]{0,63}` and distinct, ranks 0..=2,
/// a graph `{"format": 1, "nodes": [...]}` whose `call_function` targets are `torch.`,
/// `math.` or `operator.` functions and with no `call_module` node.
pub(crate) fn validate_custom_loss(
    name: &str,
    inputs: &[crate::core::types::CustomLossInput],
    graph: &serde_json::Value,
) -> Result<()> {
    let err = |m: String| Err(Error::user(format!("create_custom_loss: {m}")));
    if name.is_empty() || name.len() > 256 {
        return err("the loss needs a name of 1 to 256 bytes".into());
    }
    match inputs.first() {
        Some(first) if first.name == "logprobs" => {
            if first.rank == 0 || first.rank > 2 {
                return err("logprobs has rank 1 ([T]) or 2 ([T, K])".into());
            }
        }
        _ => {
            return err(
                "the loss must take logprobs as its first input, followed by the \
                 loss_fn_inputs it reads"
                    .into(),
            )
        }
    }
    if inputs.len() > MAX_LOSS_INPUTS {
        return err(format!(
            "a custom loss takes at most {MAX_LOSS_INPUTS} inputs, logprobs included; got {}",
            inputs.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        let ok = input.name.len() <= 64
            && input
                .name
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
            && input
                .name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !ok {
            return err(format!(
                "input {:?} must be a lowercase name of letters, digits and underscores",
                input.name
            ));
        }
        if input.rank > 2 {
            return err(format!(
                "input {:?} has rank {}; ranks are 0, 1 or 2",
                input.name, input.rank
            ));
        }
        if !seen.insert(input.name.as_str()) {
            return err(format!("input {:?} is listed twice", input.name));
        }
    }
    if graph.get("format").and_then(|f| f.as_i64()) != Some(1) {
        return err("graph must be {\"format\": 1, \"nodes\": [...]}".into());
    }
    let Some(nodes) = graph.get("nodes").and_then(|n| n.as_array()) else {
        return err("graph.nodes must be an array".into());
    };
    for node in nodes {
        let op = node.get("op").and_then(|o| o.as_str()).unwrap_or("");
        let target = node.get("target").and_then(|t| t.as_str()).unwrap_or("");
        match op {
            "call_module" => return err(format!("torch.nn modules are not allowed ({target})")),
            "call_function"
                if !(target.starts_with("torch.")
                    || target.starts_with("math.")
                    || target.starts_with("operator.")
                    || target.starts_with("_operator.")) =>
            {
                return err(format!(
                    "only torch, math and operator functions are allowed, got {target:?}"
                ))
            }
            "call_method" if matches!(target, "item" | "numpy" | "tolist" | "backward") => {
                return err(format!(".{target}() is not allowed in a custom loss"))
            }
            _ => {}
        }
    }
    Ok(())
}
