//! External-format weights (PROTOCOL.md 6.7, 9.8): `save_weights_external` writes, next to
//! the checkpoint's `model.bin`, the files a user downloads through signed URLs:
//!
//! * `config.json` — base model, LoRA rank, train flags, `format: "tinkex-emulator-tiny"`;
//! * `adapter_model.safetensors` — a valid safetensors file with one `U8` tensor
//!   `tinkex.tiny_model` holding the model's weights (the emulator's own encoding);
//!
//! With `age_encryption_recipients`, each file gets a `.age` suffix. The emulator has no age
//! implementation: the file starts with the age v1 header line and one stanza per recipient,
//! followed by the plaintext — recognisably "age-shaped", not encrypted (documented as a
//! difference).

use crate::checkpoints::StoreError;
use crate::futures::Outcome;
use crate::model::TinyModel;
use crate::state::AppState;
use tinkex::core::types::{CheckpointKind, RequestErrorCategory, TinkerPath};

/// Most age recipients accepted (PROTOCOL.md 6.7).
pub const MAX_RECIPIENTS: usize = 10;

/// Longest recipient accepted.
pub const MAX_RECIPIENT_LEN: usize = 16 * 1024;

/// Checks age recipients: at most 10, each `age1…` or an SSH public key (`ssh-…`,
/// `ecdsa-…`, `sk-…`), printable, bounded.
pub fn check_recipients(recipients: &[String]) -> Result<(), String> {
    if recipients.len() > MAX_RECIPIENTS {
        return Err(format!(
            "at most {MAX_RECIPIENTS} age_encryption_recipients, got {}",
            recipients.len()
        ));
    }
    for r in recipients {
        let ok_prefix = ["age1", "ssh-", "ecdsa-", "sk-"]
            .iter()
            .any(|p| r.starts_with(p));
        if !ok_prefix || r.len() > MAX_RECIPIENT_LEN || r.chars().any(char::is_control) {
            return Err(format!(
                "invalid age recipient {:?}: expected an age1… key or an SSH public key",
                r.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// A safetensors file with one `U8` tensor `name` holding `data`.
pub fn safetensors_u8(name: &str, data: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({
        name: {"dtype": "U8", "shape": [data.len()], "data_offsets": [0, data.len()]},
        "__metadata__": {"format": "tinkex-emulator-tiny"},
    });
    let mut head = serde_json::to_vec(&header).unwrap_or_default();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out
}

fn age_wrap(recipients: &[String], plain: Vec<u8>) -> Vec<u8> {
    let mut out = b"age-encryption.org/v1\n".to_vec();
    for r in recipients {
        out.extend_from_slice(format!("-> tinkex-emulator-unencrypted {r}\n").as_bytes());
    }
    out.extend_from_slice(b"--- not encrypted by tinkex-emulator\n");
    out.extend_from_slice(&plain);
    out
}

/// The files of an export of `model`.
pub fn export_files(model: &TinyModel, recipients: &[String]) -> Vec<(String, Vec<u8>)> {
    let c = model.config();
    let config = serde_json::json!({
        "format": "tinkex-emulator-tiny",
        "base_model": c.base_model,
        "lora_rank": c.lora_rank,
        "train_unembed": c.train_unembed,
        "train_mlp": c.train_mlp,
        "train_attn": c.train_attn,
    });
    let files = vec![
        (
            "config.json".to_string(),
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        ),
        (
            "adapter_model.safetensors".to_string(),
            safetensors_u8("tinkex.tiny_model", &model.to_bytes(false)),
        ),
    ];
    if recipients.is_empty() {
        return files;
    }
    files
        .into_iter()
        .map(|(n, b)| (format!("{n}.age"), age_wrap(recipients, b)))
        .collect()
}

/// Executes `save_weights_external` for a model (called in the model's turn).
pub fn save_external(
    app: &AppState,
    model_id: &str,
    model: &TinyModel,
    name: String,
    ttl_seconds: Option<i64>,
    recipients: &[String],
) -> Outcome {
    if let Err(e) = check_recipients(recipients) {
        return Outcome::user_error(e);
    }
    if let Some(t) = ttl_seconds {
        if !(3600..=crate::weights_export::TEN_YEARS).contains(&t) {
            return Outcome::user_error(format!(
                "ttl_seconds must be in 3600..={TEN_YEARS}, got {t}"
            ));
        }
    }
    let path = TinkerPath {
        training_run_id: model_id.to_string(),
        kind: CheckpointKind::External,
        name,
    };
    let files = export_files(model, recipients);
    match app.checkpoints.save_with_files(
        &path,
        &model.to_bytes(false),
        &files,
        false,
        None,
        ttl_seconds,
        true,
        crate::util::unix_now(),
    ) {
        Ok(meta) => Outcome::Json(serde_json::json!({
            "path": path.to_string(),
            "size_bytes": meta.checkpoint.size_bytes,
            "type": "save_weights_external",
        })),
        Err(e @ StoreError::Io(_)) => Outcome::Failed {
            error: e.to_string(),
            category: RequestErrorCategory::Server,
        },
        Err(e) => Outcome::user_error(e.to_string()),
    }
}

/// Ten years in seconds: the longest TTL (PROTOCOL.md 9.7, 6.9).
pub const TEN_YEARS: i64 = 10 * 365 * 24 * 3600;

/// Relative paths (under `files/`) of an external checkpoint's files, sorted.
pub fn files_of(app: &AppState, path: &TinkerPath) -> Result<Vec<String>, StoreError> {
    let dir = app.checkpoints.dir_of(path)?.join("files");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|_| StoreError::NotFound(path.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_header_is_valid() {
        let f = safetensors_u8("t", &[1, 2, 3]);
        let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let head: serde_json::Value = serde_json::from_slice(&f[8..8 + n]).unwrap();
        assert_eq!(head["t"]["data_offsets"], serde_json::json!([0, 3]));
        assert_eq!(&f[8 + n..], &[1, 2, 3]);
    }

    #[test]
    fn recipients_are_checked() {
        assert!(check_recipients(&["age1abc".into(), "ssh-ed25519 AAAA".into()]).is_ok());
        assert!(check_recipients(&["nope".into()]).is_err());
        assert!(check_recipients(&vec!["age1x".to_string(); 11]).is_err());
    }
}
