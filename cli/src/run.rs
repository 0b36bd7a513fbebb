//! `tinkex run list|info` (PROTOCOL.md 9.1, 9.2).

use crate::ctx::Ctx;
use crate::error::CliResult;
use crate::output::{format_timestamp, print_json, Table};
use clap::Subcommand;
use tinkex::core::types::{AccessScope, TrainingRun};

/// Page size of `run list` (the official CLI's).
const BATCH: i64 = 100;

/// Columns of `run list`: name, header, description.
const COLUMNS: [(&str, &str, &str); 8] = [
    ("id", "Run ID", "Training run ID"),
    ("model", "Base Model", "Base model name"),
    ("owner", "Owner", "Model owner"),
    ("lora", "LoRA", "LoRA status and rank"),
    ("updated", "Last Update", "Last request time"),
    ("status", "Status", "Run status (OK or Failed)"),
    (
        "checkpoint",
        "Last Checkpoint",
        "Most recent training checkpoint ID",
    ),
    (
        "checkpoint_time",
        "Checkpoint Time",
        "Time of last checkpoint",
    ),
];

const DEFAULT_COLUMNS: [&str; 5] = ["id", "model", "lora", "updated", "status"];

/// The `--columns` of `run list`, checked.
#[derive(Clone, Debug)]
pub struct Columns(Vec<String>);

fn parse_columns(s: &str) -> Result<Columns, String> {
    let cols: Vec<String> = s.split(',').map(|c| c.trim().to_string()).collect();
    let unknown: Vec<&str> = cols
        .iter()
        .filter(|c| !COLUMNS.iter().any(|(n, _, _)| n == c))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(Columns(cols))
    } else {
        let all: Vec<&str> = COLUMNS.iter().map(|(n, _, _)| *n).collect();
        Err(format!(
            "Unknown column(s): {}. Available: {}",
            unknown.join(", "),
            all.join(", ")
        ))
    }
}

/// `tinkex run …`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// List all training runs.
    List {
        /// Maximum number of runs to fetch (0 fetches all).
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Columns to display (comma-separated): id, model, owner, lora, updated, status,
        /// checkpoint, checkpoint_time. Default: id,model,lora,updated,status.
        #[arg(short = 'c', long, value_parser = parse_columns)]
        columns: Option<Columns>,
    },
    /// Show details of a specific run.
    Info {
        /// The training run id.
        run_id: String,
    },
}

/// Runs a run command.
pub async fn run(ctx: &Ctx, cmd: RunCommand) -> CliResult {
    match cmd {
        RunCommand::List { limit, columns } => list(ctx, limit, columns).await,
        RunCommand::Info { run_id } => info(ctx, &run_id).await,
    }
}

fn lora(r: &TrainingRun) -> String {
    match (r.is_lora, r.lora_rank) {
        (true, Some(rank)) if rank > 0 => format!("Rank {rank}"),
        (true, _) => "Yes".into(),
        (false, _) => "No".into(),
    }
}

fn cell(r: &TrainingRun, col: &str) -> String {
    match col {
        "id" => r.training_run_id.clone(),
        "model" => r.base_model.clone(),
        "owner" => r.model_owner.clone(),
        "lora" => lora(r),
        "updated" => format_timestamp(Some(&r.last_request_time)),
        "status" => if r.corrupted { "Failed" } else { "OK" }.into(),
        "checkpoint" => r
            .last_checkpoint
            .as_ref()
            .map(|c| c.checkpoint_id.clone())
            .unwrap_or_else(|| "None".into()),
        "checkpoint_time" => r
            .last_checkpoint
            .as_ref()
            .map(|c| format_timestamp(Some(&c.time)))
            .unwrap_or_else(|| "N/A".into()),
        _ => String::new(),
    }
}

/// "N items (M more not shown, use --limit to see more)".
pub fn count_title(count: usize, total: Option<i64>, one: &str, many: &str, none: &str) -> String {
    if count == 0 {
        return none.to_string();
    }
    let mut title = if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    };
    if let Some(total) = total {
        let remaining = total - count as i64;
        if remaining == 1 {
            title.push_str(" (1 more not shown, use --limit to see more)");
        } else if remaining > 1 {
            title.push_str(&format!(
                " ({remaining} more not shown, use --limit to see more)"
            ));
        }
    }
    title
}

async fn list(ctx: &Ctx, limit: u64, columns: Option<Columns>) -> CliResult {
    let rest = ctx.rest()?;
    let first_page = if limit > 0 {
        (limit as i64).min(BATCH)
    } else {
        BATCH
    };
    let first = rest
        .list_training_runs(first_page, 0, AccessScope::Owned, None)
        .await?;
    let total = first.cursor.total_count.max(0);
    let mut runs = first.training_runs;
    let target = if limit > 0 {
        (limit as i64).min(total)
    } else {
        total
    };
    while (runs.len() as i64) < target {
        let want = (target - runs.len() as i64).min(BATCH);
        let page = rest
            .list_training_runs(want, runs.len() as i64, AccessScope::Owned, None)
            .await?;
        let got = page.training_runs.len() as i64;
        runs.extend(page.training_runs);
        if got < want {
            break;
        }
    }
    if ctx.json() {
        print_json(&serde_json::json!({ "runs": runs }));
        return Ok(());
    }
    let cols: Vec<String> = columns
        .map(|c| c.0)
        .unwrap_or_else(|| DEFAULT_COLUMNS.iter().map(|c| c.to_string()).collect());
    let headers: Vec<&str> = cols
        .iter()
        .filter_map(|c| COLUMNS.iter().find(|(n, _, _)| n == c).map(|(_, h, _)| *h))
        .collect();
    let mut t = Table::new(&headers).title(count_title(
        runs.len(),
        Some(total),
        "training run",
        "training runs",
        "No training runs found",
    ));
    for r in &runs {
        t.row(cols.iter().map(|c| cell(r, c)));
    }
    t.print();
    Ok(())
}

async fn info(ctx: &Ctx, run_id: &str) -> CliResult {
    let r = ctx
        .rest()?
        .get_training_run(run_id, AccessScope::Owned)
        .await?;
    if ctx.json() {
        print_json(&r);
        return Ok(());
    }
    let mut t = Table::properties(format!("Training Run: {}", r.training_run_id));
    t.row(["Run ID".into(), r.training_run_id.clone()]);
    t.row(["Base Model".into(), r.base_model.clone()]);
    t.row(["Owner".into(), r.model_owner.clone()]);
    let lora = match (r.is_lora, r.lora_rank) {
        (true, Some(rank)) if rank > 0 => format!("Yes (Rank {rank})"),
        (true, _) => "Yes".into(),
        (false, _) => "No".into(),
    };
    t.row(["LoRA".to_string(), lora]);
    t.row([
        "Last Update".to_string(),
        format_timestamp(Some(&r.last_request_time)),
    ]);
    t.row([
        "Status".to_string(),
        if r.corrupted { "Failed" } else { "OK" }.to_string(),
    ]);
    for (label, c) in [
        ("Last Training Checkpoint", &r.last_checkpoint),
        ("Last Sampler Checkpoint", &r.last_sampler_checkpoint),
    ] {
        if let Some(c) = c {
            t.row([label.to_string(), c.checkpoint_id.clone()]);
            t.row(["  - Time".to_string(), format_timestamp(Some(&c.time))]);
            t.row(["  - Path".to_string(), c.tinker_path.clone()]);
        }
    }
    if let Some(meta) = r.user_metadata.as_ref().filter(|m| !m.is_empty()) {
        t.row(["Metadata".to_string(), String::new()]);
        for (k, v) in meta {
            t.row([format!("  - {k}"), v.clone()]);
        }
    }
    t.print();
    Ok(())
}
