//! Protobuf `ForwardBackwardOutput` results (PROTOCOL.md 14.4), then the chunk combiner the
//! client runs over them (`chunking::combine`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinkex::core::codec::decode_forward_backward;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_forward_backward(data) {
        let _ = serde_json::to_vec(&r).unwrap();
        for out in &r.loss_fn_outputs {
            for t in out.values() {
                let shape = t.shape.as_ref().expect("decoded tensors carry a shape");
                assert!(
                    shape.iter().all(|&d| d >= 0),
                    "negative dimension {shape:?}"
                );
            }
        }
        let _ = tinkex::core::chunking::combine(vec![r.clone(), r]);
    }
});
