//! Every JSON response body the client parses: futures (retrieve_future: try_again, failed,
//! metadata-only, results), sessions, client config, REST, results, and error bodies
//! (`Error::from_status`). Every input goes through every parser, so seeds are plain bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use tinkex::core::types::*;

fn parse<T: DeserializeOwned + serde::Serialize>(data: &[u8]) {
    // The client reads a body to a `Value` first, then to its type (transport.rs).
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(t) = serde_json::from_value::<T>(v) {
            let _ = serde_json::to_vec(&t);
        }
    }
    if let Ok(t) = serde_json::from_slice::<T>(data) {
        let _ = serde_json::to_vec(&t);
    }
}

fuzz_target!(|data: &[u8]| {
    parse::<UntypedApiFuture>(data);
    parse::<TryAgainResponse>(data);
    parse::<RequestFailedResponse>(data);
    parse::<MetadataOnlyResponse>(data);
    parse::<QueueState>(data);
    parse::<ClientConfig>(data);
    parse::<DynamicConfig>(data);
    parse::<CreateSessionResponse>(data);
    parse::<CreateSamplingSessionResponse>(data);
    parse::<GetSamplerResponse>(data);
    parse::<ServerCapabilities>(data);
    parse::<CreateModelResult>(data);
    parse::<GetInfoResponse>(data);
    parse::<OptimStepResult>(data);
    parse::<WeightsResult>(data);
    parse::<TrainingRun>(data);
    parse::<TrainingRunsResponse>(data);
    parse::<CheckpointsListResponse>(data);
    parse::<Checkpoint>(data);
    parse::<WeightsInfoResponse>(data);
    parse::<SampleResponse>(data);
    parse::<TensorData>(data);
    if let Ok(fb) = serde_json::from_slice::<ForwardBackwardOutput>(data) {
        let _ = serde_json::to_vec(&fb);
        for out in &fb.loss_fn_outputs {
            for t in out.values() {
                let _ = t.dense_f64(0.0);
                let _ = t.data.to_f64();
            }
        }
        let _ = tinkex::core::chunking::combine(vec![fb.clone(), fb]);
    }
    if let Ok(t) = serde_json::from_slice::<TensorData>(data) {
        let _ = t.dense_f64(0.0);
    }
    // Error bodies, for each class of status.
    let body = String::from_utf8_lossy(data);
    for status in [400u16, 401, 402, 404, 408, 410, 429, 500, 503] {
        let e = tinkex::core::Error::from_status(status, &body);
        let _ = e.to_string();
    }
});
