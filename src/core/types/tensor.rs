//! `TensorData` (PROTOCOL.md 10.2): flattened values with a dtype, optional shape and CSR.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// The two public element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TensorDtype {
    /// 64-bit signed integers (token ids).
    Int64,
    /// 32-bit floats (weights, advantages, logprobs).
    Float32,
}

/// Flattened tensor values, typed by dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorValues {
    /// `int64` values.
    Int64(Vec<i64>),
    /// `float32` values.
    Float32(Vec<f32>),
}

impl TensorValues {
    /// Number of stored values.
    pub fn len(&self) -> usize {
        match self {
            TensorValues::Int64(v) => v.len(),
            TensorValues::Float32(v) => v.len(),
        }
    }

    /// Whether no values are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of these values.
    pub fn dtype(&self) -> TensorDtype {
        match self {
            TensorValues::Int64(_) => TensorDtype::Int64,
            TensorValues::Float32(_) => TensorDtype::Float32,
        }
    }

    /// The values widened to `f64` (lossless for float32; exact for |ints| < 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorValues::Int64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorValues::Float32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

impl Serialize for TensorValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TensorValues::Int64(v) => v.serialize(s),
            TensorValues::Float32(v) => v.serialize(s),
        }
    }
}

/// A tensor as it appears in JSON bodies.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
pub struct TensorData {
    /// Row-major values (for sparse tensors only the stored values).
    pub data: TensorValues,
    /// Element type.
    pub dtype: TensorDtype,
    /// Shape; absent means 1-D of length `data.len()`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<i64>>,
    /// CSR row pointers (`nrows + 1`), present iff the tensor is sparse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_crow_indices: Option<Vec<i64>>,
    /// CSR column indices (`nnz`), present iff the tensor is sparse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_col_indices: Option<Vec<i64>>,
}

impl TensorData {
    /// A dense 1-D int64 tensor.
    pub fn from_i64(values: Vec<i64>) -> Self {
        let shape = Some(vec![values.len() as i64]);
        TensorData {
            data: TensorValues::Int64(values),
            dtype: TensorDtype::Int64,
            shape,
            sparse_crow_indices: None,
            sparse_col_indices: None,
        }
    }

    /// A dense 1-D float32 tensor.
    pub fn from_f32(values: Vec<f32>) -> Self {
        let shape = Some(vec![values.len() as i64]);
        TensorData {
            data: TensorValues::Float32(values),
            dtype: TensorDtype::Float32,
            shape,
            sparse_crow_indices: None,
            sparse_col_indices: None,
        }
    }

    /// The shape, defaulting to 1-D.
    pub fn shape_or_1d(&self) -> Vec<i64> {
        self.shape
            .clone()
            .unwrap_or_else(|| vec![self.data.len() as i64])
    }

    /// Whether the tensor is stored as sparse CSR.
    pub fn is_sparse(&self) -> bool {
        self.sparse_crow_indices.is_some()
    }

    /// The dense row-major values as `f64`, expanding CSR with `pad` in unlisted cells.
    pub fn dense_f64(&self, pad: f64) -> Result<Vec<f64>, String> {
        /// The largest dense form built from a sparse tensor (2^28 values, 2 GiB of f64).
        const MAX_DENSE_ELEMENTS: usize = 1 << 28;
        let values = self.data.to_f64();
        let (Some(crow), Some(col)) = (&self.sparse_crow_indices, &self.sparse_col_indices) else {
            if self.sparse_crow_indices.is_some() || self.sparse_col_indices.is_some() {
                return Err("sparse_crow_indices and sparse_col_indices must come together".into());
            }
            let expected = self.shape_or_1d().iter().try_fold(1i64, |acc, d| {
                if *d < 0 {
                    None
                } else {
                    acc.checked_mul(*d)
                }
            });
            if expected != Some(values.len() as i64) {
                return Err(format!(
                    "shape {:?} does not hold the {} values of data",
                    self.shape_or_1d(),
                    values.len()
                ));
            }
            return Ok(values);
        };
        let shape = self.shape.as_ref().ok_or("a sparse tensor needs a shape")?;
        if shape.len() != 2 {
            return Err(format!("sparse tensors must be 2-D, shape is {shape:?}"));
        }
        if shape[0] < 0 || shape[1] < 0 {
            return Err(format!(
                "sparse tensor shape {shape:?} has a negative dimension"
            ));
        }
        let (rows, cols) = (shape[0] as usize, shape[1] as usize);
        if crow.len() != rows.saturating_add(1) || col.len() != values.len() {
            return Err("CSR index lengths do not match the shape and values".into());
        }
        // The declared width is not backed by any bytes: bound the dense size before
        // allocating it (a hostile shape must not abort the process).
        let size = rows
            .checked_mul(cols)
            .filter(|n| *n <= MAX_DENSE_ELEMENTS)
            .ok_or_else(|| {
                format!("sparse tensor shape {shape:?} is too large to densify (limit {MAX_DENSE_ELEMENTS} elements)")
            })?;
        let mut dense = Vec::new();
        dense
            .try_reserve_exact(size)
            .map_err(|_| format!("cannot allocate a dense tensor of {size} elements"))?;
        dense.resize(size, pad);
        for r in 0..rows {
            let (start, end) = (crow[r] as usize, crow[r + 1] as usize);
            if start > end || end > values.len() {
                return Err(format!("CSR row pointers are not monotonic at row {r}"));
            }
            for i in start..end {
                let c = col[i];
                if c < 0 || c as usize >= cols {
                    return Err(format!("CSR column index {c} out of range"));
                }
                dense[r * cols + c as usize] = values[i];
            }
        }
        Ok(dense)
    }
}

/// A JSON number read without losing integer precision.
enum Num {
    Int(i64),
    Float(f64),
}

struct NumsVisitor;

impl<'de> Visitor<'de> for NumsVisitor {
    type Value = Vec<Num>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(n) = seq.next_element::<NumElem>()? {
            out.push(n.0);
        }
        Ok(out)
    }
}

struct NumElem(Num);

impl<'de> Deserialize<'de> for NumElem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NumElem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<NumElem, E> {
                Ok(NumElem(Num::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumElem, E> {
                i64::try_from(v)
                    .map(|v| NumElem(Num::Int(v)))
                    .map_err(|_| E::custom("integer out of int64 range"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<NumElem, E> {
                Ok(NumElem(Num::Float(v)))
            }
        }
        d.deserialize_any(V)
    }
}

struct Nums(Vec<Num>);

impl<'de> Deserialize<'de> for Nums {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(NumsVisitor).map(Nums)
    }
}

/// The JSON fields of a tensor. `STRICT` rejects unknown fields (an input of the client);
/// the lenient form reads server responses, which may gain fields (PROTOCOL.md 1.8).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorData {
    data: Nums,
    dtype: TensorDtype,
    #[serde(default)]
    shape: Option<Vec<i64>>,
    #[serde(default)]
    sparse_crow_indices: Option<Vec<i64>>,
    #[serde(default)]
    sparse_col_indices: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct LenientRawTensorData {
    data: Nums,
    dtype: TensorDtype,
    #[serde(default)]
    shape: Option<Vec<i64>>,
    #[serde(default)]
    sparse_crow_indices: Option<Vec<i64>>,
    #[serde(default)]
    sparse_col_indices: Option<Vec<i64>>,
}

impl From<LenientRawTensorData> for RawTensorData {
    fn from(r: LenientRawTensorData) -> Self {
        RawTensorData {
            data: r.data,
            dtype: r.dtype,
            shape: r.shape,
            sparse_crow_indices: r.sparse_crow_indices,
            sparse_col_indices: r.sparse_col_indices,
        }
    }
}

impl RawTensorData {
    fn into_tensor<E: de::Error>(self) -> Result<TensorData, E> {
        let raw = self;
        let data = match raw.dtype {
            TensorDtype::Int64 => TensorValues::Int64(
                raw.data
                    .0
                    .into_iter()
                    .map(|n| match n {
                        Num::Int(i) => Ok(i),
                        Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
                        Num::Float(f) => Err(E::custom(format!(
                            "int64 tensor holds a non-integer value {f}"
                        ))),
                    })
                    .collect::<Result<_, E>>()?,
            ),
            TensorDtype::Float32 => TensorValues::Float32(
                raw.data
                    .0
                    .into_iter()
                    .map(|n| match n {
                        Num::Int(i) => i as f32,
                        Num::Float(f) => f as f32,
                    })
                    .collect(),
            ),
        };
        Ok(TensorData {
            data,
            dtype: raw.dtype,
            shape: raw.shape,
            sparse_crow_indices: raw.sparse_crow_indices,
            sparse_col_indices: raw.sparse_col_indices,
        })
    }
}

/// Strict: an unknown field is an error naming it (tensors given to the client). Server
/// responses holding tensors read them with [`LenientTensorData`].
impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTensorData::deserialize(d)?.into_tensor()
    }
}

/// A [`TensorData`] read leniently (unknown fields ignored): for tensors in responses.
#[derive(Clone, Debug, PartialEq)]
pub struct LenientTensorData(pub TensorData);

impl<'de> Deserialize<'de> for LenientTensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTensorData::from(LenientRawTensorData::deserialize(d)?)
            .into_tensor()
            .map(LenientTensorData)
    }
}

/// `deserialize_with` helper: a list of name → tensor maps read leniently (response
/// outputs such as `loss_fn_outputs`).
pub(crate) fn lenient_tensor_maps<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<std::collections::BTreeMap<String, TensorData>>, D::Error> {
    let maps: Vec<std::collections::BTreeMap<String, LenientTensorData>> =
        Deserialize::deserialize(d)?;
    Ok(maps
        .into_iter()
        .map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect())
        .collect())
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for TensorValues {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TensorValues".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Row-major values: integers for int64, numbers for float32.",
            "type": "array",
            "items": {"type": "number"}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_keeps_precision_and_float32_prints_shortest() {
        let t: TensorData =
            serde_json::from_str(r#"{"data":[9007199254740993,2],"dtype":"int64"}"#).unwrap();
        assert_eq!(t.data, TensorValues::Int64(vec![9007199254740993, 2]));
        let f = TensorData::from_f32(vec![0.1, 1.0]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"data":[0.1,1.0],"dtype":"float32","shape":[2]}"#
        );
    }

    #[test]
    fn a_hostile_sparse_shape_is_an_error_not_an_abort() {
        // Reported by the emulator's hardening work: `cols` straight from the declared shape.
        for shape in [
            "[1,4611686018427387904]",
            "[2,9223372036854775807]",
            "[1,-5]",
            "[9223372036854775807,2]",
        ] {
            let t: TensorData = serde_json::from_str(&format!(
                r#"{{"data":[1.5],"dtype":"float32","shape":{shape},"sparse_crow_indices":[0,1],"sparse_col_indices":[0]}}"#
            ))
            .unwrap();
            assert!(t.dense_f64(0.0).is_err(), "{shape}");
        }
        let t: TensorData = serde_json::from_str(
            r#"{"data":[1.0],"dtype":"float32","shape":[4611686018427387904,4]}"#,
        )
        .unwrap();
        assert!(t.dense_f64(0.0).is_err(), "overflowing dense shape");
    }

    #[test]
    fn sparse_csr_densifies_with_pad() {
        let t: TensorData = serde_json::from_str(
            r#"{"data":[17,42],"dtype":"int64","shape":[3,4],"sparse_crow_indices":[0,1,1,2],"sparse_col_indices":[2,0]}"#,
        )
        .unwrap();
        let d = t.dense_f64(-1.0).unwrap();
        assert_eq!(d[2], 17.0);
        assert_eq!(d[8], 42.0);
        assert_eq!(d.iter().filter(|&&x| x == -1.0).count(), 10);
    }

    #[test]
    fn unknown_fields_are_rejected_in_inputs_and_ignored_in_responses() {
        let j = r#"{"data":[1],"dtype":"int64","shapee":[1]}"#;
        let e = serde_json::from_str::<TensorData>(j).unwrap_err();
        assert!(e.to_string().contains("shapee"), "{e}");
        let t: LenientTensorData = serde_json::from_str(j).unwrap();
        assert_eq!(t.0.data, TensorValues::Int64(vec![1]));
    }

    #[test]
    fn non_integer_in_int64_is_rejected() {
        assert!(serde_json::from_str::<TensorData>(r#"{"data":[1.5],"dtype":"int64"}"#).is_err());
    }
}
