//! Protobuf `SampleResponse` results (PROTOCOL.md 14.4): any bytes decode to a result or a
//! typed error, with memory bounded by the message (issue 11 item 1).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinkex::core::codec::decode_sample;

fuzz_target!(|data: &[u8]| {
    let ids = ["sq-0".to_string(), "sq-1".to_string()];
    if let Ok(r) = decode_sample(data, &ids) {
        // The decoded result serializes (the C ABI hands it out as JSON).
        let _ = serde_json::to_vec(&r).unwrap();
        for s in &r.sequences {
            if let Some(rows) = &s.topk_logprobs {
                assert!(rows.len() * 4 <= data.len());
            }
        }
    }
});
