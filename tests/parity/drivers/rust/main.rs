//! The Rust driver of the parity suite (`tests/parity`, `docs/parity.md`): runs one
//! scenario's line form through the Rust API (`tinkex::core`) and prints the transcript lines
//! (`@@ ` + JSON) on stdout. It is the reference the other languages are compared with.
//!
//! ```text
//! cargo build --release --features testing --example parity_driver
//! target/release/examples/parity_driver SCENARIO.tsv BASE_URL
//! ```
//!
//! Op arguments (the C ABI's JSON) are deserialized into the core's input types (`*_with`
//! methods); a deserialization failure is the Rust form of a rejected input
//! (`invalid_input`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::core::requests::{
    CreateSamplingClientInput, CreateTrainingClientFromStateInput, LoadStateInput,
    ResumeTrainingRunInput, SaveWeightsAndGetSamplingClientInput, SaveWeightsExternalInput,
    SaveWeightsForSamplerInput,
};
use tinkex::core::training::CustomLossOutput;
use tinkex::core::types::{Datum, ForwardBackwardInput, TensorData};
use tinkex::core::{
    ApiFuture, CloseInput, ComputeLogprobsInput, Config, ConfigInput,
    CreateLoraTrainingClientInput, Error, OptimStepInput, RestClient, SampleInput, SamplingClient,
    SaveStateInput, ServiceClient, TrainingClient,
};

const OP_WAIT: Duration = Duration::from_secs(120);

/// What an operation produces.
enum Outcome {
    Json(Value),
    Training(TrainingClient),
    Sampling(SamplingClient),
}

/// A submitted operation: cancel it, or wait for it (with a deadline; the wait can be
/// repeated after a timeout).
struct Pending {
    cancel: Box<dyn Fn() + Send + Sync>,
    done: Box<dyn Fn() -> Option<Result<Outcome, Error>> + Send + Sync>,
    wait: Box<
        dyn Fn(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
            + Send
            + Sync,
    >,
}

fn pending<T: Send + 'static>(f: ApiFuture<T>, map: fn(T) -> Outcome) -> Pending {
    let (c, d, w) = (f.clone(), f.clone(), f);
    Pending {
        cancel: Box::new(move || c.cancel()),
        done: Box::new(move || d.try_take().map(|r| r.map(map))),
        wait: Box::new(move |t| {
            let w = w.clone();
            Box::pin(async move { tokio::time::timeout(t, w.wait_done()).await.is_ok() })
        }),
    }
}

/// The suite's custom loss (every driver has the same): loss = -(sum of all target logprobs),
/// so d loss / d logprob = -1 everywhere; metric `n_logprobs`.
fn suite_loss(_data: &[Datum], logprobs: &[TensorData]) -> Result<CustomLossOutput, Error> {
    let (mut sum, mut n) = (0.0f64, 0usize);
    let grads = logprobs
        .iter()
        .map(|t| {
            let v = t.data.to_f64();
            sum += v.iter().sum::<f64>();
            n += v.len();
            TensorData::from_f32(vec![-1.0; v.len()])
        })
        .collect();
    Ok(CustomLossOutput {
        grads,
        loss_sum: Some(-sum),
        metrics: [("n_logprobs".to_string(), n as f64)].into(),
    })
}

fn json_of<T: Serialize>(v: T) -> Outcome {
    Outcome::Json(serde_json::to_value(v).expect("results serialize"))
}

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {v}").expect("stdout");
    out.flush().expect("stdout");
}

fn error_json(e: &Error) -> Value {
    json!({
        "kind": e.kind.as_str(),
        "http_status": e.http_status,
        "category": e.category.map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
    })
}

struct Driver {
    /// Events received so far.
    events: Arc<Mutex<Vec<Value>>>,
    /// Each op's result (for `"$ref:<i>:<key>"` in later arguments).
    results: HashMap<usize, Value>,
    svc: ServiceClient,
    rest: Option<RestClient>,
    training: HashMap<String, TrainingClient>,
    sampling: HashMap<String, SamplingClient>,
    futures: HashMap<String, Pending>,
}

/// The input type `T` of an op, or the Rust form of a rejected input.
fn input<T: DeserializeOwned>(args: &Value) -> Result<T, Value> {
    serde_json::from_value(args.clone())
        .map_err(|e| json!({"kind": "invalid_input", "rust": e.to_string()}))
}

impl Driver {
    fn tc(&self, name: &str) -> &TrainingClient {
        self.training.get(name).expect("unknown training client")
    }
    fn sc(&self, name: &str) -> &SamplingClient {
        self.sampling.get(name).expect("unknown sampling client")
    }

    /// Submits op `name`; `Err` is an input rejected before anything was sent.
    fn submit(
        &mut self,
        name: &str,
        target: &str,
        param: &str,
        args: &Value,
    ) -> Result<Pending, Value> {
        let p = match name {
            "capabilities" => pending(self.svc.get_server_capabilities(), json_of),
            "create_lora" => pending(
                self.svc
                    .create_lora_training_client_with(&input::<CreateLoraTrainingClientInput>(
                        args,
                    )?),
                Outcome::Training,
            ),
            "from_state" => pending(
                self.svc.create_training_client_from_state_with(&input::<
                    CreateTrainingClientFromStateInput,
                >(args)?),
                Outcome::Training,
            ),
            "resume" => pending(
                self.svc
                    .resume_training_run_with(&input::<ResumeTrainingRunInput>(args)?),
                Outcome::Training,
            ),
            "create_sampling" => {
                let i: CreateSamplingClientInput = input(args)?;
                i.validate()
                    .map_err(|e| json!({"kind": "invalid_input", "rust": e}))?;
                pending(self.svc.create_sampling_client_with(&i), Outcome::Sampling)
            }
            "close" => pending(self.svc.close_with(input::<CloseInput>(args)?), json_of),
            "rest" => {
                let svc = &self.svc;
                let rest = self.rest.get_or_insert_with(|| svc.create_rest_client());
                pending(rest.call_json(param, args.clone()), json_of)
            }
            "forward_backward" => pending(
                self.tc(target)
                    .forward_backward_with(input::<ForwardBackwardInput>(args)?),
                json_of,
            ),
            "forward" => pending(
                self.tc(target)
                    .forward_with(input::<ForwardBackwardInput>(args)?),
                json_of,
            ),
            "optim_step" => pending(
                self.tc(target)
                    .optim_step_with(input::<OptimStepInput>(args)?),
                json_of,
            ),
            "save_state" => pending(
                self.tc(target)
                    .save_state_with(input::<SaveStateInput>(args)?),
                |p| Outcome::Json(json!({ "path": p })),
            ),
            "save_weights_for_sampler" => pending(
                self.tc(target)
                    .save_weights_for_sampler_with(&input::<SaveWeightsForSamplerInput>(args)?),
                |p| Outcome::Json(json!({ "path": p })),
            ),
            "save_weights_external" => pending(
                self.tc(target)
                    .save_weights_external_with(&input::<SaveWeightsExternalInput>(args)?),
                json_of,
            ),
            "load_state" => pending(
                self.tc(target)
                    .load_state_with(&input::<LoadStateInput>(args)?),
                json_of,
            ),
            "save_weights_and_get_sampling_client" => pending(
                self.tc(target)
                    .save_weights_and_get_sampling_client_with(&input::<
                        SaveWeightsAndGetSamplingClientInput,
                    >(args)?),
                Outcome::Sampling,
            ),
            "forward_backward_custom" => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Custom {
                    data: Vec<Datum>,
                }
                let c: Custom = input(args)?;
                pending(
                    self.tc(target).forward_backward_custom(c.data, suite_loss),
                    json_of,
                )
            }
            "sample" => {
                let i: SampleInput = input(args)?;
                pending(self.sc(target).sample_with(i), json_of)
            }
            "compute_logprobs" => {
                let i: ComputeLogprobsInput = input(args)?;
                pending(self.sc(target).compute_logprobs_with(i), json_of)
            }
            other => panic!("unknown op {other}"),
        };
        Ok(p)
    }

    /// `args` with every `"$ref:<i>:<key>"` string replaced by that member of op i's result.
    fn substitute(&self, args: &str) -> String {
        let mut out = String::new();
        let mut rest = args;
        while let Some(at) = rest.find("\"$ref:") {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 6..];
            let close = tail.find('"').expect("closed $ref");
            let (i, key) = tail[..close].split_once(':').expect("$ref:<i>:<key>");
            let v = &self.results[&i.parse::<usize>().expect("op index")][key];
            out.push_str(&v.to_string());
            rest = &tail[close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn ok(&mut self, i: usize, op: &str, v: Value) {
        self.results.entry(i).or_insert_with(|| v.clone());
        emit(json!({"i": i, "op": op, "ok": v}));
    }

    /// Prints a finished op's outcome (a created client is stored under `save_as`).
    fn finish(&mut self, i: usize, op: &str, r: Result<Outcome, Error>, save_as: &str) {
        match r {
            Err(e) => emit(json!({"i": i, "op": op, "error": error_json(&e)})),
            Ok(Outcome::Json(v)) => self.ok(i, op, v),
            Ok(Outcome::Training(tc)) => {
                let info = serde_json::to_value(tc.get_info()).expect("info serializes");
                if !save_as.is_empty() {
                    self.training.insert(save_as.to_string(), tc);
                }
                self.ok(i, op, info);
            }
            Ok(Outcome::Sampling(sc)) => {
                let info = serde_json::to_value(sc.info()).expect("info serializes");
                if !save_as.is_empty() {
                    self.sampling.insert(save_as.to_string(), sc);
                }
                self.ok(i, op, info);
            }
        }
    }

    async fn run(&mut self, f: &[&str]) {
        let i: usize = f[0].parse().expect("op index");
        let (name, target, save_as, param, wait) = (f[1], f[2], f[3], f[4], f[5] == "1");
        let args: Value = serde_json::from_str(&self.substitute(f[6])).expect("args JSON");
        match name {
            "control" => {
                emit(json!({ "control": i }));
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).expect("stdin");
                assert!(!line.is_empty(), "stdin closed during control");
            }
            "wait_event" => {
                // Waits (bounded: 10 s) until an event of type `param` was received.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let found = loop {
                    let found = self
                        .events
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|e| e["type"] == param);
                    if found || std::time::Instant::now() > deadline {
                        break found;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                emit(json!({"i": i, "op": "wait_event", "ok": found}));
            }
            "await" => {
                let t = if param.is_empty() {
                    OP_WAIT
                } else {
                    Duration::from_millis(param.parse().expect("ms"))
                };
                let p = self.futures.get(target).expect("unknown future");
                if !(p.wait)(t).await {
                    emit(json!({"i": i, "op": "await", "error": {"kind": "await_timeout"}}));
                    return;
                }
                let r = (p.done)().expect("finished");
                self.finish(i, "await", r, save_as);
            }
            "cancel" => {
                (self.futures.get(target).expect("unknown future").cancel)();
                emit(json!({"i": i, "op": "cancel", "ok": null}));
            }
            _ => match self.submit(name, target, param, &args) {
                Err(e) => emit(json!({"i": i, "op": name, "error": e})),
                Ok(p) if !wait => {
                    self.futures.insert(save_as.to_string(), p);
                    emit(json!({"i": i, "op": name, "submitted": true}));
                }
                Ok(p) => {
                    assert!(
                        (p.wait)(OP_WAIT).await,
                        "operation {i} did not finish in time"
                    );
                    let r = (p.done)().expect("finished");
                    self.finish(i, name, r, save_as);
                }
            },
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(args.len(), 3, "usage: parity_driver SCENARIO.tsv BASE_URL");
    let text = std::fs::read_to_string(&args[1]).expect("scenario");
    let events = Arc::new(Mutex::new(Vec::<Value>::new()));
    let mut record_events = false;
    let mut driver: Option<Driver> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(8, '\t').collect();
        match f[0] {
            "config" => {
                let input: ConfigInput = serde_json::from_str(f[1]).expect("config JSON");
                let config = Config::try_from(input).expect("valid config");
                let svc = ServiceClient::new(config).expect("service client");
                let sink = events.clone();
                svc.events().subscribe(move |ev| {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::to_value(ev).expect("events serialize"));
                });
                driver = Some(Driver {
                    events: events.clone(),
                    results: HashMap::new(),
                    svc,
                    rest: None,
                    training: HashMap::new(),
                    sampling: HashMap::new(),
                    futures: HashMap::new(),
                });
            }
            "events" => record_events = true,
            "op" => driver.as_mut().expect("config first").run(&f[1..]).await,
            other => panic!("bad scenario line {other}"),
        }
    }
    let recorded = if record_events {
        events.lock().unwrap().clone()
    } else {
        Vec::new()
    };
    emit(json!({ "events": recorded }));
    emit(json!({ "done": true }));
}
