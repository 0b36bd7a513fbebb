//! `tinkex model list` (PROTOCOL.md 5.2).

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{format_bool, format_optional, print_json, Table};
use clap::Subcommand;

/// `tinkex model …`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List the models your organization can use.
    ///
    /// SUBSTRING keeps only the models whose name contains it, ignoring case. Pass the name
    /// in the Model column as base_model.
    List {
        /// Case-insensitive part of the model name.
        substring: Option<String>,
    },
}

/// Runs a model command.
pub async fn run(ctx: &Ctx, cmd: ModelCommand) -> CliResult {
    let ModelCommand::List { substring } = cmd;
    let rest = ctx.rest()?;
    let mut models = rest.get_server_capabilities().await?.supported_models;
    if let Some(s) = &substring {
        let needle = s.to_lowercase();
        models.retain(|m| {
            m.model_name
                .as_deref()
                .is_some_and(|n| n.to_lowercase().contains(&needle))
        });
        if models.is_empty() {
            // The organization is named when the identity is known (JWT auth).
            let org = match rest.whoami().await {
                Ok(w) => format!(" for organization {}", w.org_urn),
                Err(_) => String::new(),
            };
            return Err(CliError::user(format!("No model name contains '{s}'{org}"))
                .details("Run 'tinkex model list' to see every model this organization can use."));
        }
    }
    if ctx.json() {
        print_json(&serde_json::json!({ "models": models }));
        return Ok(());
    }
    let mut t = Table::new(&["Model", "Max Context", "Trainable", "Sampleable"]);
    for m in &models {
        t.row([
            format_optional(m.model_name.clone()),
            format_optional(m.max_context_length),
            format_optional(m.trainable.map(format_bool)),
            format_optional(m.sampleable.map(format_bool)),
        ]);
    }
    t.print();
    Ok(())
}
