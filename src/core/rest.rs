//! [`RestClient`]: training runs, checkpoints and weights info (PROTOCOL.md 9).

use crate::core::api_future::ApiFuture;
use crate::core::error::Error;
use crate::core::sanitize::check_path_id;
use crate::core::transport::{Pool, Request};
use crate::core::types::{
    CheckpointsListResponse, TinkerPath, TrainingRun, TrainingRunsResponse, WeightsInfoRequest,
    WeightsInfoResponse,
};
use crate::core::ClientCore;
use reqwest::Method;
use std::sync::Arc;

/// Management calls; shares its ServiceClient's transport, retry policy and progress.
#[derive(Clone)]
pub struct RestClient {
    core: Arc<ClientCore>,
}

impl RestClient {
    pub(crate) fn new(core: Arc<ClientCore>) -> Self {
        RestClient { core }
    }

    fn call<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        req: Request,
        what: &'static str,
    ) -> ApiFuture<T> {
        let core = self.core.clone();
        ApiFuture::spawn(&self.core.runtime, move |_| async move {
            core.operation(async { core.send(&req).await?.json(what) })
                .await
        })
    }

    /// Training runs, newest first.
    pub fn list_training_runs(&self, limit: u32, offset: u32) -> ApiFuture<TrainingRunsResponse> {
        let path =
            format!("/api/v1/training_runs?limit={limit}&offset={offset}&access_scope=owned");
        self.call(
            Request::get(path, Pool::Train, self.core.config.timeouts.request),
            "training_runs",
        )
    }

    /// One training run.
    pub fn get_training_run(&self, training_run_id: &str) -> ApiFuture<TrainingRun> {
        if let Err(e) = check_path_id(training_run_id, "training run id", false) {
            return ApiFuture::ready(Err(e));
        }
        let path = format!("/api/v1/training_runs/{training_run_id}");
        self.call(
            Request::get(path, Pool::Train, self.core.config.timeouts.request),
            "training_run",
        )
    }

    /// Checkpoints of one run.
    pub fn list_checkpoints(&self, training_run_id: &str) -> ApiFuture<CheckpointsListResponse> {
        if let Err(e) = check_path_id(training_run_id, "training run id", false) {
            return ApiFuture::ready(Err(e));
        }
        let path = format!("/api/v1/training_runs/{training_run_id}/checkpoints");
        self.call(
            Request::get(path, Pool::Train, self.core.config.timeouts.request),
            "checkpoints",
        )
    }

    /// All checkpoints of the caller, newest first.
    pub fn list_user_checkpoints(
        &self,
        limit: u32,
        offset: u32,
    ) -> ApiFuture<CheckpointsListResponse> {
        let path = format!("/api/v1/checkpoints?limit={limit}&offset={offset}");
        self.call(
            Request::get(path, Pool::Train, self.core.config.timeouts.request),
            "checkpoints",
        )
    }

    /// Deletes the checkpoint at a `tinker://` path.
    pub fn delete_checkpoint(&self, tinker_path: &str) -> ApiFuture<()> {
        let path = match TinkerPath::parse(tinker_path) {
            Ok(p) => p,
            Err(e) => return ApiFuture::ready(Err(Error::user(e.to_string()))),
        };
        let mut req = Request::get(
            format!(
                "/api/v1/training_runs/{}/checkpoints/{}",
                path.training_run_id,
                path.checkpoint_id()
            ),
            Pool::Train,
            self.core.config.timeouts.request,
        );
        req.method = Method::DELETE;
        let core = self.core.clone();
        ApiFuture::spawn(&self.core.runtime, move |_| async move {
            core.operation(async { core.send(&req).await.map(|_| ()) })
                .await
        })
    }

    /// Base model and LoRA settings of a checkpoint.
    pub fn get_weights_info(&self, tinker_path: &str) -> ApiFuture<WeightsInfoResponse> {
        let req = Request::post_json(
            "/api/v1/weights_info",
            &WeightsInfoRequest {
                tinker_path: tinker_path.to_string(),
            },
            Pool::Train,
            self.core.config.timeouts.request,
        );
        self.call(req, "weights_info")
    }
}
