//! `tinker://` checkpoint paths (PROTOCOL.md 10.11).

use std::fmt;

/// Which kind of checkpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// `weights/…`: a training checkpoint, resumable with optimizer state.
    Training,
    /// `sampler_weights/…`: weights for sampling.
    Sampler,
    /// `external_weights/…`: an export in an external format.
    External,
}

impl CheckpointKind {
    /// The middle path segment (`weights`, `sampler_weights`, `external_weights`).
    pub fn segment(self) -> &'static str {
        match self {
            CheckpointKind::Training => "weights",
            CheckpointKind::Sampler => "sampler_weights",
            CheckpointKind::External => "external_weights",
        }
    }

    /// The `checkpoint_type` wire value (`training`, `sampler`, `external`).
    pub fn type_name(self) -> &'static str {
        match self {
            CheckpointKind::Training => "training",
            CheckpointKind::Sampler => "sampler",
            CheckpointKind::External => "external",
        }
    }

    /// Parses a middle path segment.
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "weights" => Some(CheckpointKind::Training),
            "sampler_weights" => Some(CheckpointKind::Sampler),
            "external_weights" => Some(CheckpointKind::External),
            _ => None,
        }
    }
}

/// A parsed `tinker://{training_run_id}/{kind}/{name}` path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TinkerPath {
    /// The training run (model) id.
    pub training_run_id: String,
    /// The checkpoint kind.
    pub kind: CheckpointKind,
    /// The checkpoint name.
    pub name: String,
}

/// Why a string is not a valid `tinker://` path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid tinker path {path:?}: {reason}")]
pub struct TinkerPathError {
    /// The rejected input.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TinkerPath {
    /// Parses a path, with the same rules as the official SDK.
    pub fn parse(path: &str) -> Result<Self, TinkerPathError> {
        let err = |reason| TinkerPathError {
            path: crate::core::sanitize::bounded(path, 256),
            reason,
        };
        let rest = path
            .strip_prefix("tinker://")
            .ok_or_else(|| err("must start with tinker://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 3 {
            return Err(err("expected tinker://<training_run_id>/<kind>/<name>"));
        }
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("run id, kind and name must be non-empty"));
        }
        let kind = CheckpointKind::from_segment(parts[1])
            .ok_or_else(|| err("kind must be weights, sampler_weights or external_weights"))?;
        // The run id and name become path segments of REST calls (PROTOCOL.md 1.2, no
        // URL encoding): nothing that could change the path or add a query.
        for part in [parts[0], parts[2]] {
            if crate::core::sanitize::check_path_id(part, "segment", false).is_err() {
                return Err(err(
                    "run id and name must not be '.' or '..' or contain '?', '#', '%', '\\', whitespace or control characters",
                ));
            }
        }
        Ok(TinkerPath {
            training_run_id: parts[0].to_string(),
            kind,
            name: parts[2].to_string(),
        })
    }

    /// The REST checkpoint id, `{kind}/{name}`.
    pub fn checkpoint_id(&self) -> String {
        format!("{}/{}", self.kind.segment(), self.name)
    }
}

impl fmt::Display for TinkerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tinker://{}/{}/{}",
            self.training_run_id,
            self.kind.segment(),
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = TinkerPath::parse("tinker://sess-1:train:0/weights/step-100").unwrap();
        assert_eq!(p.training_run_id, "sess-1:train:0");
        assert_eq!(p.kind, CheckpointKind::Training);
        assert_eq!(p.checkpoint_id(), "weights/step-100");
        assert_eq!(p.to_string(), "tinker://sess-1:train:0/weights/step-100");
    }

    #[test]
    fn rejects_bad_paths_with_reasons() {
        for bad in [
            "http://x/weights/a",
            "tinker://run/weights",
            "tinker://run/checkpoints/a",
            "tinker://run/weights/a/b",
            "tinker:///weights/a",
        ] {
            let e = TinkerPath::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid tinker path"), "{e}");
        }
    }
}
