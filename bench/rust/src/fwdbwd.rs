//! forward_backward of a large batch: the Rust API, the raw loop (encode + POST of the same
//! protobuf body), and the bare protobuf encode. Wire arrival times come from the proxy
//! (`proxy.rs`); this side records when each call was made.

use crate::raw::Raw;
use crate::sample::BASE_MODEL;
use crate::util::{cpu, mono, Args};
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tinkex::core::codec;
use tinkex::core::types::{Datum, ModelInput, TensorData};
use tinkex::core::{Config, LoraOptions, ServiceClient};

/// `datums` × `tokens` next-token datums: model input, `target_tokens` (int64) and
/// `weights` (float32). The same formula as bench/python/bench_client.py.
pub fn make_data(datums: usize, tokens: usize) -> Vec<Datum> {
    (0..datums)
        .map(|d| {
            let ids: Vec<i64> = (0..=tokens)
                .map(|i| ((d * 7919 + i * 31) % 150_000) as i64)
                .collect();
            let mut datum = Datum {
                model_input: ModelInput::from_ints(ids[..tokens].to_vec()),
                ..Default::default()
            };
            datum.loss_fn_inputs.insert(
                "target_tokens".into(),
                TensorData::from_i64(ids[1..].to_vec()),
            );
            datum
                .loss_fn_inputs
                .insert("weights".into(), TensorData::from_f32(vec![1.0; tokens]));
            datum
        })
        .collect()
}

/// `fwdbwd --client rust|raw`: `reps` forward_backward calls, each timed from the call.
pub async fn run(a: &Args) -> Value {
    let base = a.req("base-url");
    let kind = a.req("client");
    let datums: usize = a.num("datums", 256);
    let tokens: usize = a.num("tokens", 4096);
    let reps: usize = a.num("reps", 3);
    let mut out = Vec::new();
    match kind.as_str() {
        "rust" => {
            let cfg = Config::builder()
                .api_key(crate::raw::API_KEY)
                .base_url(&base)
                .telemetry(false)
                .build()
                .unwrap();
            let service = ServiceClient::new(cfg).unwrap();
            let training = service
                .create_lora_training_client(BASE_MODEL, LoraOptions::default())
                .await
                .expect("training client");
            // Warm-up: a small request opens the connections.
            training
                .forward_backward(make_data(1, 16), "cross_entropy", None)
                .await
                .expect("warm-up");
            for _ in 0..reps {
                let data = make_data(datums, tokens);
                let (u0, s0) = cpu();
                let t_call = mono();
                let f = training.forward_backward(data, "cross_entropy", None);
                let t_ret = mono();
                let r = f.await;
                let t_done = mono();
                let (u1, s1) = cpu();
                out.push(json!({
                    "t_call": t_call, "t_return": t_ret, "t_done": t_done, "ok": r.is_ok(),
                    "cpu_s": u1 - u0 + s1 - s0,
                }));
            }
        }
        "raw" => {
            let raw = Raw::new(&base);
            let session = raw.create_session().await;
            let model = raw.create_model(&session, BASE_MODEL).await;
            let mut seq = 1;
            let mut send = |data: Vec<Datum>| {
                let msg = codec::forward_backward_request(
                    &model,
                    seq,
                    &data,
                    0,
                    "cross_entropy",
                    &BTreeMap::new(),
                    false,
                )
                .unwrap();
                seq += 1;
                msg.encode_to_vec()
            };
            let warm = send(make_data(1, 16));
            let id = raw
                .submit("/api/v1/forward_backward", warm.into(), true)
                .await
                .unwrap();
            raw.wait(&id, true).await;
            for _ in 0..reps {
                let data = make_data(datums, tokens);
                let (u0, s0) = cpu();
                let t_call = mono();
                let body = send(data);
                let id = raw
                    .submit("/api/v1/forward_backward", body.into(), true)
                    .await;
                let t_ret = mono();
                let ok = match &id {
                    Some(id) => {
                        raw.wait(id, true).await;
                        true
                    }
                    None => false,
                };
                let t_done = mono();
                let (u1, s1) = cpu();
                out.push(json!({
                    "t_call": t_call, "t_return": t_ret, "t_done": t_done, "ok": ok,
                    "cpu_s": u1 - u0 + s1 - s0,
                }));
            }
        }
        other => panic!("unknown client {other}"),
    }
    json!({ "reps": out, "datums": datums, "tokens": tokens })
}

/// `encode`: the bare protobuf encode of the same batch as one ForwardBackwardRequest
/// (`codec::forward_backward_request` + prost), and as libtinkex chunks it.
pub fn encode(a: &Args) -> Value {
    let datums: usize = a.num("datums", 256);
    let tokens: usize = a.num("tokens", 4096);
    let reps: usize = a.num("reps", 5);
    let data = make_data(datums, tokens);
    let cfg = BTreeMap::new();
    let mut whole = Vec::new();
    let mut bytes = 0;
    for _ in 0..reps {
        let t = mono();
        let msg =
            codec::forward_backward_request("model", 1, &data, 0, "cross_entropy", &cfg, false)
                .unwrap();
        let b = msg.encode_to_vec();
        whole.push(mono() - t);
        bytes = std::hint::black_box(b).len();
    }
    // As the client does it: chunk ranges by the server's defaults, one message per chunk.
    let defaults = tinkex::core::types::ClientConfig::default();
    let ranges = tinkex::core::chunking::chunk_ranges(
        &data,
        defaults.fwdbwd_max_chunk_len as usize,
        defaults.fwdbwd_max_chunk_bytes_count as usize,
    );
    let mut chunked = Vec::new();
    for _ in 0..reps {
        let t = mono();
        let mut n = 0;
        for (i, r) in ranges.iter().enumerate() {
            let msg = codec::forward_backward_request(
                "model",
                1 + i as i64,
                &data[r.clone()],
                r.start,
                "cross_entropy",
                &cfg,
                false,
            )
            .unwrap();
            n += std::hint::black_box(msg.encode_to_vec()).len();
        }
        chunked.push(mono() - t);
        std::hint::black_box(n);
    }
    json!({
        "datums": datums, "tokens": tokens, "bytes": bytes, "chunks": ranges.len(),
        "encode_s": whole, "encode_chunked_s": chunked,
    })
}
