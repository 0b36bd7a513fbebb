//! [`AdminClient`]: the organisation endpoints of 9.12 on a session-less holder.

use super::{ArgError, PreparedCall, RestClient};
use crate::core::api_future::ApiFuture;
use crate::core::config::Config;
use crate::core::error::Result;
use crate::core::types::{
    AuditLogResponse, BillingUsageResponse, CurrentCheckpointStorageUsageResponse,
};
use serde_json::Value;

/// Audit log and billing calls (organisation roles required). Session-less (PROTOCOL.md
/// 3.3); shares the process-wide holder cache with [`RestClient::new`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminClient {
    rest: RestClient,
}

impl AdminClient {
    /// A session-less admin client on the current tokio runtime. No I/O.
    pub fn new(config: Config) -> Result<Self> {
        RestClient::new(config).map(|rest| AdminClient { rest })
    }

    /// [`new`](Self::new) running its operations on `runtime`.
    pub fn with_runtime(config: Config, runtime: tokio::runtime::Handle) -> Result<Self> {
        RestClient::with_runtime(config, runtime).map(|rest| AdminClient { rest })
    }

    /// Audit log entries (9.12): `event_type` one of `all`, `checkpoints`, `projects`,
    /// `teams`, `organizations`; `day` `YYYY-MM-DD` (UTC) or today.
    pub fn get_audit_log(
        &self,
        event_type: &str,
        day: Option<&str>,
    ) -> ApiFuture<AuditLogResponse> {
        self.rest.get_audit_log(event_type, day)
    }

    /// Billing usage events of a window (9.12).
    pub fn get_billing_usage(
        &self,
        starting_on: &str,
        ending_before: &str,
    ) -> ApiFuture<BillingUsageResponse> {
        self.rest.get_billing_usage(starting_on, ending_before)
    }

    /// Current checkpoint storage usage (9.12).
    pub fn get_current_checkpoint_storage_usage(
        &self,
        project_id: Option<&str>,
    ) -> ApiFuture<CurrentCheckpointStorageUsageResponse> {
        self.rest.get_current_checkpoint_storage_usage(project_id)
    }

    /// Validates a generic call (only the table's methods whose `clients` include `admin`).
    pub fn prepare(
        &self,
        method: &str,
        args: Value,
    ) -> std::result::Result<PreparedCall, ArgError> {
        super::methods::prepare("admin", method, args)
    }

    /// Runs a validated call.
    pub fn call_prepared(&self, call: PreparedCall) -> ApiFuture<Value> {
        self.rest.call_prepared(call)
    }

    /// Calls an admin method of the table by name (see [`RestClient::call_json`]).
    pub fn call_json(&self, method: &str, args: Value) -> ApiFuture<Value> {
        match self.prepare(method, args) {
            Ok(call) => self.call_prepared(call),
            Err(e) => ApiFuture::ready(Err(e.into())),
        }
    }
}
