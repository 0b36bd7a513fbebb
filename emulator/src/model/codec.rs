//! Compact little-endian checkpoint format.
//!
//! ```text
//! magic        8 bytes  "TNKXTINY"
//! version      u32      FORMAT_VERSION
//! total_len    u64      length of the whole checkpoint in bytes
//! base_model   u32 length + UTF-8 bytes
//! lora_rank    u32
//! seed         u8 present + u64
//! train flags  u8       bit 0 unembed, bit 1 mlp, bit 2 attn
//! shape        u32 × 4  VOCAB, EMBED_DIM, HIDDEN_DIM, effective rank
//! optimizer    u8 present + u64 step count
//! vocab map    VOCAB × (u8 known + i64 token id)
//! adapters     for E, W_in, W_ctx, U: A (rank×cols f32), B (rows×rank f32),
//!              then, with optimizer: m_A, v_A, m_B, v_B
//! checksum     u64      FNV-1a of every preceding byte
//! ```
//!
//! Base weights are not stored: they are a pure function of `base_model`.

use super::network::{effective_rank, MATRICES};
use super::{bucket, ModelConfig, ModelError, TinyModel, EMBED_DIM, HIDDEN_DIM, VOCAB};

const MAGIC: &[u8; 8] = b"TNKXTINY";
const FORMAT_VERSION: u32 = 1;
/// Magic, version and total length.
const HEADER_LEN: usize = 8 + 4 + 8;

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Serialises `model` (see the module docs for the layout).
pub(crate) fn encode(model: &TinyModel, with_optimizer: bool) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.0.extend_from_slice(MAGIC);
    w.u32(FORMAT_VERSION);
    w.u64(0); // total length, patched below
    let cfg = &model.config;
    w.u32(cfg.base_model.len() as u32);
    w.0.extend_from_slice(cfg.base_model.as_bytes());
    w.u32(cfg.lora_rank);
    w.u8(u8::from(cfg.seed.is_some()));
    w.u64(cfg.seed.unwrap_or(0));
    w.u8(u8::from(cfg.train_unembed)
        | u8::from(cfg.train_mlp) << 1
        | u8::from(cfg.train_attn) << 2);
    let rank = effective_rank(cfg.lora_rank);
    for dim in [VOCAB, EMBED_DIM, HIDDEN_DIM, rank] {
        w.u32(dim as u32);
    }
    w.u8(u8::from(with_optimizer));
    w.u64(if with_optimizer { model.steps } else { 0 });
    for entry in &model.vocab_map {
        w.u8(u8::from(entry.is_some()));
        w.u64(entry.unwrap_or(0) as u64);
    }
    for (mat, [ma, mb]) in model.net.mats.iter().zip(&model.moments) {
        w.f32s(&mat.a);
        w.f32s(&mat.b);
        if with_optimizer {
            for v in [&ma.m, &ma.v, &mb.m, &mb.v] {
                w.f32s(v);
            }
        }
    }
    let total = (w.0.len() + 8) as u64;
    w.0[12..20].copy_from_slice(&total.to_le_bytes());
    let sum = checksum(&w.0);
    w.u64(sum);
    w.0
}

/// Parses and validates a checkpoint written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<TinyModel, ModelError> {
    check_envelope(bytes)?;
    let mut r = Reader {
        bytes: &bytes[..bytes.len() - 8],
        pos: HEADER_LEN,
    };
    let config = read_config(&mut r)?;
    let rank = effective_rank(config.lora_rank);
    let shape = [VOCAB, EMBED_DIM, HIDDEN_DIM, rank];
    for (name, want) in ["vocab", "embedding dim", "hidden dim", "rank"]
        .iter()
        .zip(shape)
    {
        let got = r.u32()? as usize;
        if got != want {
            return corrupt(format!(
                "checkpoint has {name} {got} but this model uses {want}"
            ));
        }
    }
    let with_optimizer = r.flag("optimizer flag")?;
    let steps = r.u64()?;
    let mut model = TinyModel::new(config);
    for (b, entry) in model.vocab_map.iter_mut().enumerate() {
        let known = r.flag("vocab map flag")?;
        let token = r.u64()? as i64;
        if known && bucket(token) != b {
            return corrupt(format!(
                "vocab map entry {b} holds token {token} of another bucket"
            ));
        }
        *entry = known.then_some(token);
    }
    for i in 0..MATRICES {
        read_adapter(&mut r, &mut model, i, with_optimizer)?;
    }
    if r.pos != r.bytes.len() {
        return corrupt(format!(
            "{} unexpected bytes after the last section",
            r.bytes.len() - r.pos
        ));
    }
    model.net.merge();
    model.steps = steps;
    model.has_optimizer_state = with_optimizer;
    Ok(model)
}

fn check_envelope(bytes: &[u8]) -> Result<(), ModelError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return corrupt("not a tiny-model checkpoint (bad magic header)".into());
    }
    if bytes.len() < HEADER_LEN + 8 {
        return corrupt(format!("truncated: only {} bytes", bytes.len()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return corrupt(format!(
            "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
        ));
    }
    let total = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if total != bytes.len() as u64 {
        let what = if total > bytes.len() as u64 {
            "truncated"
        } else {
            "length mismatch"
        };
        return corrupt(format!(
            "{what}: header says {total} bytes, got {}",
            bytes.len()
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    if checksum(body) != u64::from_le_bytes(tail.try_into().expect("8 bytes")) {
        return corrupt("checksum mismatch: the checkpoint is damaged".into());
    }
    Ok(())
}

fn read_config(r: &mut Reader<'_>) -> Result<ModelConfig, ModelError> {
    let name_len = r.u32()? as usize;
    let base_model = String::from_utf8(r.take(name_len)?.to_vec())
        .map_err(|_| ModelError::Corrupt("base model name is not valid UTF-8".into()))?;
    let lora_rank = r.u32()?;
    let has_seed = r.flag("seed flag")?;
    let seed = r.u64()?;
    let flags = r.u8()?;
    if flags > 7 {
        return corrupt(format!("invalid train flags {flags:#x}"));
    }
    Ok(ModelConfig {
        base_model,
        lora_rank,
        seed: has_seed.then_some(seed),
        train_unembed: flags & 1 != 0,
        train_mlp: flags & 2 != 0,
        train_attn: flags & 4 != 0,
    })
}

fn read_adapter(
    r: &mut Reader<'_>,
    model: &mut TinyModel,
    index: usize,
    with_optimizer: bool,
) -> Result<(), ModelError> {
    let mat = &mut model.net.mats[index];
    r.f32s_into(&mut mat.a)?;
    r.f32s_into(&mut mat.b)?;
    if with_optimizer {
        let [ma, mb] = &mut model.moments[index];
        for v in [&mut ma.m, &mut ma.v, &mut mb.m, &mut mb.v] {
            r.f32s_into(v)?;
        }
    }
    Ok(())
}

fn corrupt<T>(message: String) -> Result<T, ModelError> {
    Err(ModelError::Corrupt(message))
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, vs: &[f32]) {
        for v in vs {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return corrupt(format!(
                "truncated: needed {n} bytes at offset {} but only {} remain",
                self.pos,
                self.bytes.len() - self.pos
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self, what: &str) -> Result<bool, ModelError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => corrupt(format!("invalid {what} {v} at offset {}", self.pos - 1)),
        }
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32s_into(&mut self, out: &mut [f32]) -> Result<(), ModelError> {
        let raw = self.take(out.len() * 4)?;
        for (o, chunk) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
            if !o.is_finite() {
                return corrupt("non-finite weight or optimizer value".into());
            }
        }
        Ok(())
    }
}
