//! The `ForwardBackwardRequest` protobuf written straight from [`Datum`]s into the body
//! buffer (PROTOCOL.md 14.2-14.3), byte for byte what prost writes for the message that
//! [`codec::forward_backward_request`](crate::core::codec::forward_backward_request) builds,
//! without that intermediate message: no per-datum `proto::Datum`, no packed copies of the
//! token, target and weight arrays, one exactly sized allocation per chunk.
//!
//! Encoding is split in two steps so that nothing is sent for a batch that holds a user
//! error (a token id beyond int32, bad base64, an unreadable `dmel` header, an image asset
//! pointer): [`check`] validates one chunk of datums (a scan, and the decoding of media,
//! whose bytes it keeps), and [`Checked::encode`] of the same datums then cannot fail. The training client runs
//! both for every chunk in parallel and sends a chunk once every chunk was checked and its
//! own body is written (`training.rs`, `forward_in`).
//!
//! prost's rules followed here: fields in tag order; proto3 scalars, strings and bytes left
//! out when equal to their default (`seq_id` 0, empty strings and bytes, `false`, `0.0`
//! including `-0.0`, but not NaN); `optional` and `oneof` members always written when set;
//! repeated int64 packed; a map entry leaves out an empty key and a default value.
//! `tests/conformance_wire.rs` and the tests below compare the two encodings.

use crate::core::error::{Error, Result};
use crate::core::types::{Chunk, Datum, LossConfigValue, TensorData, TensorValues};
use base64::Engine;
use std::collections::BTreeMap;

/// Wire type of varints.
const VARINT: u8 = 0;
/// Wire type of 64-bit fixed values (double).
const FIXED64: u8 = 1;
/// Wire type of length-delimited fields.
const LEN: u8 = 2;

/// The request fields shared by every chunk of one call.
#[derive(Debug)]
pub struct RequestHeader<'a> {
    /// `model_id`.
    pub model_id: &'a str,
    /// `loss_fn`.
    pub loss_fn: &'a str,
    /// `loss_fn_config` (numbers go to both maps, as the official SDK writes them).
    pub config: &'a BTreeMap<String, LossConfigValue>,
    /// `forward_only`.
    pub forward_only: bool,
}

/// What [`check`] learnt of one chunk of datums: encoding them cannot fail.
#[derive(Debug, Default)]
pub struct Checked {
    /// The decoded bytes of the `image` and `dmel` chunks, in order of appearance.
    media: Vec<Vec<u8>>,
}

/// Validates `data` (datum numbers in errors start at `first_index`) and decodes its media.
/// The errors are those of [`codec::forward_backward_request`](crate::core::codec::forward_backward_request),
/// with the same messages.
pub fn check(data: &[Datum], first_index: usize) -> Result<Checked> {
    let mut media = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let datum = first_index + i;
        for chunk in &d.model_input.chunks {
            match chunk {
                Chunk::EncodedText { tokens } => {
                    // One branch-free pass over the tokens; the offender is looked up only
                    // when there is one.
                    if !tokens.iter().all(|&t| t as i32 as i64 == t) {
                        let bad = tokens
                            .iter()
                            .find(|&&t| i32::try_from(t).is_err())
                            .copied()
                            .unwrap_or_default();
                        return Err(Error::user(format!(
                            "datum {datum}: token id {bad} does not fit in int32"
                        )));
                    }
                }
                Chunk::Image { data, .. } => {
                    media.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .map_err(|e| {
                                Error::user(format!(
                                    "datum {datum}: image data is not valid base64: {e}"
                                ))
                            })?,
                    );
                }
                Chunk::Dmel { dmel } => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(dmel)
                        .map_err(|e| {
                            Error::user(format!("datum {datum}: dmel is not valid base64: {e}"))
                        })?;
                    crate::core::types::tensor_container_dim(&bytes, 0)
                        .map_err(|e| Error::user(format!("datum {datum}: dmel chunk: {e}")))?;
                    media.push(bytes);
                }
                Chunk::ImageAssetPointer { .. } => {
                    return Err(Error::user(format!(
                        "datum {datum}: Unsupported model input chunk type image_asset_pointer in forward_backward"
                    )))
                }
            }
        }
    }
    Ok(Checked { media })
}

/// `seq_id` as the int32 of the wire, or the user error of the prost path.
pub fn wire_seq_id(seq_id: i64) -> Result<i32> {
    i32::try_from(seq_id).map_err(|_| Error::user("seq_id exceeds int32"))
}

impl Checked {
    /// The encoded `ForwardBackwardRequest` of `data` (the datums given to [`check`]) with
    /// `seq_id`.
    pub fn encode(&self, data: &[Datum], header: &RequestHeader<'_>, seq_id: i32) -> Vec<u8> {
        let mut sizes = Vec::with_capacity(data.len());
        let mut media = self.media.iter().map(Vec::len);
        let mut data_len = 0;
        for d in data {
            let n = datum_len(d, &mut media);
            sizes.push(n);
            data_len += field_len(n);
        }
        let total = header_len(header, seq_id) + data_len;
        let mut w = Writer {
            buf: Vec::with_capacity(total),
        };
        w.str_field(1, header.model_id);
        if seq_id != 0 {
            w.key(2, VARINT);
            w.varint(seq_id as i64 as u64);
        }
        let mut media = self.media.iter();
        for (d, &n) in data.iter().zip(&sizes) {
            w.key(3, LEN);
            w.varint(n as u64);
            w.datum(d, &mut media);
        }
        w.str_field(4, header.loss_fn);
        for (k, v) in header.config {
            if let LossConfigValue::Number(x) = v {
                let entry = str_len(1, k) + double_len(*x);
                w.key(5, LEN);
                w.varint(entry as u64);
                w.str_field(1, k);
                w.double_field(2, *x);
            }
        }
        if header.forward_only {
            w.key(6, VARINT);
            w.varint(1);
        }
        for (k, v) in header.config {
            let value = config_value_len(v);
            let entry = str_len(1, k) + field_len(value);
            w.key(7, LEN);
            w.varint(entry as u64);
            w.str_field(1, k);
            w.key(2, LEN);
            w.varint(value as u64);
            match v {
                LossConfigValue::Number(x) => {
                    w.key(1, FIXED64);
                    w.buf.extend_from_slice(&x.to_le_bytes());
                }
                LossConfigValue::Text(s) => {
                    w.key(2, LEN);
                    w.varint(s.len() as u64);
                    w.buf.extend_from_slice(s.as_bytes());
                }
            }
        }
        debug_assert_eq!(
            w.buf.len(),
            total,
            "the sizes computed match the bytes written"
        );
        w.buf
    }
}

/// Encoded length of a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Length of a length-delimited field (tags below 16) holding `n` bytes.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// A bytes/string field, left out when empty.
fn str_len(_tag: u32, s: &str) -> usize {
    bytes_len(s.len())
}

fn bytes_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        field_len(n)
    }
}

/// A proto3 double, left out when it equals 0.0 (so also -0.0; NaN is written).
fn double_len(x: f64) -> usize {
    if x == 0.0 {
        0
    } else {
        9
    }
}

fn config_value_len(v: &LossConfigValue) -> usize {
    match v {
        LossConfigValue::Number(_) => 9,
        LossConfigValue::Text(s) => field_len(s.len()),
    }
}

/// Every field of the request but `data`.
fn header_len(h: &RequestHeader<'_>, seq_id: i32) -> usize {
    let mut n = str_len(1, h.model_id) + str_len(4, h.loss_fn);
    if seq_id != 0 {
        n += 1 + varint_len(seq_id as i64 as u64);
    }
    if h.forward_only {
        n += 2;
    }
    for (k, v) in h.config {
        if let LossConfigValue::Number(x) = v {
            n += field_len(str_len(1, k) + double_len(*x));
        }
        n += field_len(str_len(1, k) + field_len(config_value_len(v)));
    }
    n
}

/// Length of the body of a model-input chunk's oneof member (`EncodedTextChunk`,
/// `ImageChunk` or `DmelChunk`); `media_len` is the decoded size of an image or dmel.
fn member_len(c: &Chunk, media_len: usize) -> usize {
    match c {
        Chunk::EncodedText { tokens } => bytes_len(4 * tokens.len()),
        Chunk::Image {
            format,
            expected_tokens,
            ..
        } => {
            bytes_len(media_len)
                + str_len(2, format.as_str())
                + expected_tokens.map_or(0, |n| 1 + varint_len(n as i32 as i64 as u64))
        }
        Chunk::Dmel { .. } => bytes_len(media_len),
        // Rejected by `check`.
        Chunk::ImageAssetPointer { .. } => 0,
    }
}

/// Whether a chunk's bytes come from decoded media.
fn is_media(c: &Chunk) -> bool {
    matches!(c, Chunk::Image { .. } | Chunk::Dmel { .. })
}

/// The (dense or CSR) values and the dtype number of a tensor.
fn values_len(t: &TensorData) -> (usize, u64) {
    match &t.data {
        TensorValues::Int64(v) => (8 * v.len(), 2),
        TensorValues::Float32(v) => (4 * v.len(), 1),
    }
}

/// The shape written: the tensor's, or 1-D of its length.
fn shape_of(t: &TensorData) -> ShapeIter<'_> {
    match &t.shape {
        Some(s) => ShapeIter::Given(s.iter()),
        None => ShapeIter::OneD(Some(t.data.len() as i64)),
    }
}

enum ShapeIter<'a> {
    Given(std::slice::Iter<'a, i64>),
    OneD(Option<i64>),
}

impl Iterator for ShapeIter<'_> {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        match self {
            ShapeIter::Given(it) => it.next().copied(),
            ShapeIter::OneD(v) => v.take(),
        }
    }
}

fn sparse(t: &TensorData) -> Option<(&[i64], &[i64])> {
    match (&t.sparse_crow_indices, &t.sparse_col_indices) {
        (Some(crow), Some(col)) => Some((crow, col)),
        _ => None,
    }
}

/// Length of a `Tensor` message body.
fn tensor_len(t: &TensorData) -> usize {
    let (values, _) = values_len(t);
    let encoding = match sparse(t) {
        Some((crow, col)) => {
            field_len(bytes_len(values) + bytes_len(8 * crow.len()) + bytes_len(8 * col.len()))
        }
        None => field_len(values),
    };
    let packed: usize = shape_of(t).map(|d| varint_len(d as u64)).sum();
    // dtype is 1 or 2: never the default, one byte.
    encoding + 2 + if packed == 0 { 0 } else { field_len(packed) }
}

/// Length of a `Datum` message body; `media` yields the decoded sizes of its binary chunks
/// in order.
fn datum_len(d: &Datum, media: &mut impl Iterator<Item = usize>) -> usize {
    let chunks: usize = d
        .model_input
        .chunks
        .iter()
        .map(|c| {
            let m = if is_media(c) {
                media.next().unwrap_or(0)
            } else {
                0
            };
            // Datum.model_input[i] (a Chunk) around the oneof member field.
            field_len(field_len(member_len(c, m)))
        })
        .sum();
    let inputs: usize = d
        .loss_fn_inputs
        .iter()
        .map(|(k, t)| field_len(str_len(1, k) + field_len(tensor_len(t))))
        .sum();
    chunks + inputs
}

/// Appends protobuf pieces to the body buffer (allocated once at its final size).
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, tag: u32, wire_type: u8) {
        self.buf.push(((tag << 3) as u8) | wire_type);
    }

    /// A string or bytes field, left out when empty.
    fn bytes_field(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.key(tag, LEN);
            self.varint(b.len() as u64);
            self.buf.extend_from_slice(b);
        }
    }

    fn str_field(&mut self, tag: u32, s: &str) {
        self.bytes_field(tag, s.as_bytes());
    }

    fn double_field(&mut self, tag: u32, x: f64) {
        if x != 0.0 {
            self.key(tag, FIXED64);
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// `values` mapped to fixed-width little-endian bytes, converted in blocks on the stack
    /// (L1-resident) and appended with one copy each: the body is written once, with no
    /// per-element capacity check and no zero-fill pass.
    fn le<T: Copy, const N: usize>(&mut self, values: &[T], f: impl Fn(T) -> [u8; N]) {
        const BLOCK: usize = 4096;
        let mut tmp = [0u8; BLOCK];
        for block in values.chunks(BLOCK / N) {
            let bytes = &mut tmp[..block.len() * N];
            for (dst, &v) in bytes.chunks_exact_mut(N).zip(block) {
                dst.copy_from_slice(&f(v));
            }
            self.buf.extend_from_slice(bytes);
        }
    }

    /// A length-delimited field of little-endian values, left out when empty.
    fn le_field<T: Copy, const N: usize>(
        &mut self,
        tag: u32,
        values: &[T],
        f: impl Fn(T) -> [u8; N],
    ) {
        if !values.is_empty() {
            self.key(tag, LEN);
            self.varint((N * values.len()) as u64);
            self.le(values, f);
        }
    }

    fn tensor_values(&mut self, tag: u32, t: &TensorData, always: bool) {
        let (n, _) = values_len(t);
        if n == 0 && !always {
            return;
        }
        self.key(tag, LEN);
        self.varint(n as u64);
        match &t.data {
            TensorValues::Int64(v) => self.le(v, i64::to_le_bytes),
            TensorValues::Float32(v) => self.le(v, f32::to_le_bytes),
        }
    }

    fn tensor(&mut self, t: &TensorData) {
        match sparse(t) {
            Some((crow, col)) => {
                let (values, _) = values_len(t);
                let body = bytes_len(values) + bytes_len(8 * crow.len()) + bytes_len(8 * col.len());
                self.key(2, LEN);
                self.varint(body as u64);
                self.tensor_values(1, t, false);
                self.le_field(2, crow, i64::to_le_bytes);
                self.le_field(3, col, i64::to_le_bytes);
            }
            // A oneof member: written even when empty.
            None => self.tensor_values(1, t, true),
        }
        self.key(3, VARINT);
        self.varint(values_len(t).1);
        let packed: usize = shape_of(t).map(|d| varint_len(d as u64)).sum();
        if packed > 0 {
            self.key(4, LEN);
            self.varint(packed as u64);
            for d in shape_of(t) {
                self.varint(d as u64);
            }
        }
    }

    fn datum<'m>(&mut self, d: &Datum, media: &mut impl Iterator<Item = &'m Vec<u8>>) {
        for c in &d.model_input.chunks {
            let bytes: &[u8] = if is_media(c) {
                media.next().map(Vec::as_slice).unwrap_or(&[])
            } else {
                &[]
            };
            let member = member_len(c, bytes.len());
            // The Chunk message, then its oneof member (tag 1, 2 or 3).
            self.key(1, LEN);
            self.varint(field_len(member) as u64);
            let tag = match c {
                Chunk::EncodedText { .. } => 1,
                Chunk::Image { .. } => 2,
                _ => 3,
            };
            self.key(tag, LEN);
            self.varint(member as u64);
            match c {
                // Range checked by `check`.
                Chunk::EncodedText { tokens } => {
                    self.le_field(1, tokens, |t| (t as i32).to_le_bytes())
                }
                Chunk::Image {
                    format,
                    expected_tokens,
                    ..
                } => {
                    self.bytes_field(1, bytes);
                    self.str_field(2, format.as_str());
                    if let Some(n) = expected_tokens {
                        self.key(3, VARINT);
                        self.varint(*n as i32 as i64 as u64);
                    }
                }
                Chunk::Dmel { .. } => self.bytes_field(1, bytes),
                Chunk::ImageAssetPointer { .. } => {}
            }
        }
        for (k, t) in &d.loss_fn_inputs {
            let tensor = tensor_len(t);
            self.key(2, LEN);
            self.varint((str_len(1, k) + field_len(tensor)) as u64);
            self.str_field(1, k);
            self.key(2, LEN);
            self.varint(tensor as u64);
            self.tensor(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codec;
    use crate::core::types::{ImageFormat, ModelInput};
    use prost::Message;

    /// A small deterministic generator (xorshift), so every run tests the same cases.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
        fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len() as u64)].clone()
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A length that is often 0, sometimes large enough for two-byte and three-byte varints.
    fn len(g: &mut Gen) -> usize {
        g.pick(&[0, 0, 1, 3, 31, 32, 33, 200, 5000])
    }

    fn tensor(g: &mut Gen) -> TensorData {
        let n = len(g);
        let mut t = if g.below(2) == 0 {
            TensorData::from_i64(
                (0..n)
                    .map(|i| (i as i64 - 7) * g.pick(&[1, -1, 1 << 40]))
                    .collect(),
            )
        } else {
            TensorData::from_f32(
                (0..n)
                    .map(|i| g.pick(&[0.0, -0.0, 1.5, f32::NAN, f32::INFINITY, i as f32]))
                    .collect(),
            )
        };
        match g.below(5) {
            0 => t.shape = None,
            1 => t.shape = Some(vec![]),
            2 => t.shape = Some(vec![-1, 0, 300, i64::MIN, i64::MAX]),
            3 => {
                // CSR (indices need not be consistent for encoding).
                t.shape = Some(vec![2, n as i64]);
                t.sparse_crow_indices = Some((0..g.below(4)).map(|i| i as i64).collect());
                t.sparse_col_indices = Some((0..len(g)).map(|i| -(i as i64)).collect());
            }
            _ => {}
        }
        t
    }

    fn chunk(g: &mut Gen) -> Chunk {
        match g.below(4) {
            0 | 1 => Chunk::EncodedText {
                tokens: (0..len(g))
                    .map(|i| g.pick(&[0, 1, i as i64, i32::MAX as i64, i32::MIN as i64, -5]))
                    .collect(),
            },
            2 => Chunk::Image {
                data: b64(&vec![g.below(256) as u8; len(g)]),
                format: g.pick(&[ImageFormat::Png, ImageFormat::Jpeg]),
                expected_tokens: g.pick(&[None, Some(0), Some(7), Some(-3), Some(1 << 33)]),
            },
            _ => {
                // A TensorContainer header (dtype 1, 2 dims) and some payload.
                let mut bytes = vec![1u8, 2, 4, 200, 1];
                bytes.extend(std::iter::repeat_n(9u8, len(g)));
                Chunk::Dmel { dmel: b64(&bytes) }
            }
        }
    }

    fn datum(g: &mut Gen) -> Datum {
        let mut d = Datum {
            model_input: ModelInput {
                chunks: (0..g.below(4)).map(|_| chunk(g)).collect(),
            },
            ..Default::default()
        };
        for _ in 0..g.below(4) {
            let k = g.pick(&["", "target_tokens", "weights", "advantages", "x"]);
            d.loss_fn_inputs.insert(k.to_string(), tensor(g));
        }
        d
    }

    fn config(g: &mut Gen) -> BTreeMap<String, LossConfigValue> {
        (0..g.below(4))
            .map(|_| {
                let k = g.pick(&["", "clip_low", "beta", "loss_id"]).to_string();
                let v = match g.below(6) {
                    0 => LossConfigValue::Text(String::new()),
                    1 => LossConfigValue::Text("a loss id".into()),
                    2 => LossConfigValue::Number(0.0),
                    3 => LossConfigValue::Number(-0.0),
                    4 => LossConfigValue::Number(f64::NAN),
                    _ => LossConfigValue::Number(0.2),
                };
                (k, v)
            })
            .collect()
    }

    /// The direct encoding equals prost's encoding of the intermediate message over varied
    /// data: empty arrays, both dtypes, dense and CSR tensors, shapes absent, empty and with
    /// negative dimensions, images (with and without `expected_tokens`), dmel chunks, empty
    /// keys and strings, loss configs with 0.0, -0.0, NaN and text, seq ids 0, small and
    /// large, forward-only or not.
    #[test]
    fn direct_encoding_is_byte_identical_to_prost() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for case in 0..600 {
            let data: Vec<Datum> = (0..g.below(5)).map(|_| datum(&mut g)).collect();
            let cfg = config(&mut g);
            let model_id = g.pick(&["", "model-1", "a-much-longer-model-id-with-a-suffix"]);
            let loss_fn = g.pick(&["", "cross_entropy", "ppo"]);
            let seq = g.pick(&[0i64, 1, 127, 128, 300_000, i32::MAX as i64]);
            let forward_only = g.below(2) == 0;
            let first = g.below(10);
            let want = codec::forward_backward_request(
                model_id,
                seq,
                &data,
                first,
                loss_fn,
                &cfg,
                forward_only,
            )
            .unwrap()
            .encode_to_vec();
            let header = RequestHeader {
                model_id,
                loss_fn,
                config: &cfg,
                forward_only,
            };
            let got =
                check(&data, first)
                    .unwrap()
                    .encode(&data, &header, wire_seq_id(seq).unwrap());
            assert_eq!(got, want, "case {case}: {data:?} {cfg:?}");
            assert_eq!(got.capacity(), got.len(), "case {case}: sized exactly");
        }
    }

    /// The user errors and their messages are those of the prost path.
    #[test]
    fn check_rejects_what_the_prost_path_rejects() {
        let bad = |chunk: Chunk| {
            let mut data = vec![Datum::default(), Datum::default()];
            data[1].model_input.chunks.push(chunk);
            let ours = check(&data, 5).unwrap_err();
            let theirs = codec::forward_backward_request(
                "m",
                1,
                &data,
                5,
                "cross_entropy",
                &BTreeMap::new(),
                false,
            )
            .unwrap_err();
            assert_eq!(ours.kind, crate::core::ErrorKind::User);
            assert_eq!(ours.message, theirs.message);
            assert!(ours.message.starts_with("datum 6: "), "{}", ours.message);
        };
        bad(Chunk::EncodedText {
            tokens: vec![1, 1 << 31, 2],
        });
        bad(Chunk::EncodedText {
            tokens: vec![i32::MIN as i64 - 1],
        });
        bad(Chunk::Image {
            data: "not base64!".into(),
            format: ImageFormat::Png,
            expected_tokens: None,
        });
        bad(Chunk::Dmel { dmel: "@@".into() });
        bad(Chunk::Dmel { dmel: b64(&[]) });
        bad(Chunk::ImageAssetPointer {
            format: ImageFormat::Png,
            location: "s3://x".into(),
            expected_tokens: None,
        });
        assert!(wire_seq_id(i32::MAX as i64 + 1).is_err());
    }
}
