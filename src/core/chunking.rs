//! forward_backward chunking and the combination of chunk results (PROTOCOL.md 11.4, 20.3).

use crate::core::codec::estimate_datum_bytes;
use crate::core::types::{Datum, ForwardBackwardOutput};
use std::collections::BTreeMap;

/// Splits `data` greedily into chunks of at most `max_len` datums and `max_bytes` estimated
/// bytes; a single datum larger than `max_bytes` forms its own chunk. Returns index ranges.
pub fn chunk_ranges(
    data: &[Datum],
    max_len: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, d) in data.iter().enumerate() {
        let size = estimate_datum_bytes(d);
        let len = i - start;
        if len > 0 && (bytes + size > max_bytes || len >= max_len) {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < data.len() {
        ranges.push(start..data.len());
    }
    ranges
}

/// Combines chunk outputs in chunk order: outputs concatenated, metrics reduced per key
/// (`name:reduction`) with chunk weights = number of outputs per chunk.
pub fn combine(chunks: Vec<ForwardBackwardOutput>) -> ForwardBackwardOutput {
    let mut iter = chunks.into_iter();
    let Some(first) = iter.next() else {
        return ForwardBackwardOutput::default();
    };
    let rest: Vec<ForwardBackwardOutput> = iter.collect();
    if rest.is_empty() {
        return first;
    }
    let all: Vec<&ForwardBackwardOutput> = std::iter::once(&first).chain(rest.iter()).collect();
    let weights: Vec<f64> = all.iter().map(|c| c.loss_fn_outputs.len() as f64).collect();
    let mut metrics = BTreeMap::new();
    for key in first.metrics.keys() {
        let Some(values) = all
            .iter()
            .map(|c| c.metrics.get(key).copied())
            .collect::<Option<Vec<f64>>>()
        else {
            continue; // a key missing from any chunk is dropped
        };
        let Some((_, reduction)) = key.split_once(':').filter(|(_, r)| !r.contains(':')) else {
            continue;
        };
        let total_w: f64 = weights.iter().sum();
        let mean = || {
            if total_w > 0.0 {
                values.iter().zip(&weights).map(|(v, w)| v * w).sum::<f64>() / total_w
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        };
        match reduction {
            "mean" => {
                metrics.insert(key.clone(), mean());
            }
            "sum" => {
                metrics.insert(key.clone(), values.iter().sum());
            }
            "min" => {
                metrics.insert(
                    key.clone(),
                    values.iter().copied().fold(f64::INFINITY, f64::min),
                );
            }
            "max" => {
                metrics.insert(
                    key.clone(),
                    values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                );
            }
            "slack" => {
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                metrics.insert(key.clone(), max - mean());
            }
            "hash2" => {
                let h = values
                    .iter()
                    .fold(0u64, |acc, v| acc.wrapping_add(*v as i64 as u64));
                metrics.insert(key.clone(), h as f64);
            }
            "unique" => {
                metrics.insert(key.clone(), values[0]);
                for (i, v) in values.iter().enumerate().skip(1) {
                    metrics.insert(format!("{key}_{i}"), *v);
                }
            }
            _ => {}
        }
    }
    let mut outputs = first.loss_fn_outputs;
    for c in rest {
        outputs.extend(c.loss_fn_outputs);
    }
    ForwardBackwardOutput {
        loss_fn_output_type: first.loss_fn_output_type,
        loss_fn_outputs: outputs,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{ModelInput, TensorData};

    fn datum(n: usize) -> Datum {
        Datum {
            model_input: ModelInput::from_ints(vec![1; n]),
            ..Default::default()
        }
    }

    fn out(n: usize, metrics: &[(&str, f64)]) -> ForwardBackwardOutput {
        ForwardBackwardOutput {
            loss_fn_output_type: "ArrayRecord".into(),
            loss_fn_outputs: (0..n)
                .map(|_| BTreeMap::from([("x".to_string(), TensorData::from_f32(vec![]))]))
                .collect(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn chunks_by_count_and_bytes() {
        let data: Vec<Datum> = (0..1025).map(|_| datum(1)).collect();
        assert_eq!(
            chunk_ranges(&data, 1024, 5_000_000),
            vec![0..1024, 1024..1025]
        );
        let big: Vec<Datum> = vec![datum(10), datum(2_000_000), datum(10)];
        assert_eq!(
            chunk_ranges(&big, 1024, 5_000_000),
            vec![0..1, 1..2, 2..3],
            "an oversized datum stands alone"
        );
    }

    #[test]
    fn reducers_follow_the_spec() {
        let c = combine(vec![
            out(
                3,
                &[
                    ("loss:sum", 1.0),
                    ("a:mean", 1.0),
                    ("m:min", 5.0),
                    ("m:max", 5.0),
                    ("s:slack", 1.0),
                    ("u:unique", 7.0),
                    ("h:hash2", 3.0),
                    ("gone:mean", 1.0),
                    ("x:weird", 1.0),
                ],
            ),
            out(
                1,
                &[
                    ("loss:sum", 2.0),
                    ("a:mean", 5.0),
                    ("m:min", 2.0),
                    ("m:max", 2.0),
                    ("s:slack", 5.0),
                    ("u:unique", 8.0),
                    ("h:hash2", 4.0),
                ],
            ),
            out(
                0,
                &[
                    ("loss:sum", 0.5),
                    ("a:mean", 100.0),
                    ("m:min", 9.0),
                    ("m:max", 9.0),
                    ("s:slack", 2.0),
                    ("u:unique", 9.0),
                    ("h:hash2", 1.0),
                ],
            ),
        ]);
        assert_eq!(c.loss_fn_outputs.len(), 4);
        assert_eq!(c.metrics["loss:sum"], 3.5);
        assert_eq!(c.metrics["a:mean"], 2.0, "weighted by outputs per chunk");
        assert_eq!(c.metrics["m:min"], 2.0);
        assert_eq!(c.metrics["m:max"], 9.0);
        assert_eq!(c.metrics["s:slack"], 5.0 - 2.0);
        assert_eq!(
            (
                c.metrics["u:unique"],
                c.metrics["u:unique_1"],
                c.metrics["u:unique_2"]
            ),
            (7.0, 8.0, 9.0)
        );
        assert_eq!(c.metrics["h:hash2"], 8.0);
        assert!(!c.metrics.contains_key("gone:mean") && !c.metrics.contains_key("x:weird"));
    }
}
