//! What every command shares: the output format and the library configuration, from which
//! the session-less clients are made.

use crate::error::{CliError, CliResult};
use crate::output::Format;
use tinkex::core::config::ConfigInput;
use tinkex::core::{AdminClient, Config, RestClient, ServiceClient};

/// The global options as the commands see them.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// `--format`.
    pub format: Format,
    /// `--client-config` (JSON of the library's configuration), if given.
    pub client_config: Option<String>,
}

impl Ctx {
    /// Whether JSON was asked for.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// The library configuration: `--client-config` over the environment (`TINKER_API_KEY`,
    /// `TINKER_BASE_URL`, the credentials file, …) and the defaults. A missing or invalid
    /// credential is a user error here, before any request.
    pub fn config(&self) -> CliResult<Config> {
        let input: ConfigInput = match &self.client_config {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                CliError::user(format!(
                    "--client-config is not a valid configuration: {}",
                    tinkex::core::sanitize::serde_message(&e)
                ))
                .details("See docs/cli.md (global options) for the accepted fields.")
            })?,
            None => ConfigInput::default(),
        };
        input.into_builder().build().map_err(|e| {
            CliError::user(format!("Configuration error: {}", e.message))
                .details("Please check your Tinker API credentials (run 'tinkex auth login' or set TINKER_API_KEY).")
        })
    }

    /// A session-less REST client (PROTOCOL.md 3.3): it never creates a session.
    pub fn rest(&self) -> CliResult<RestClient> {
        RestClient::new(self.config()?).map_err(CliError::from)
    }

    /// A session-less admin client (billing).
    pub fn admin(&self) -> CliResult<AdminClient> {
        AdminClient::new(self.config()?).map_err(CliError::from)
    }

    /// A service client: its first training call creates a session. Only `checkpoint
    /// download` of a training checkpoint uses one (the export needs a training run).
    pub fn service(&self) -> CliResult<ServiceClient> {
        ServiceClient::new(self.config()?).map_err(CliError::from)
    }
}
