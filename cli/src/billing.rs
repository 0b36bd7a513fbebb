//! `tinkex billing usage|checkpoint-storage` (PROTOCOL.md 9.12), rendered generically as the
//! official CLI does: each usage row's `event_info` is flattened into the row for the table
//! and CSV; JSON keeps the response's nested shape.

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{note, print_json, print_text, Table};
use clap::Subcommand;
use serde_json::{Map, Value};

/// Column order of usage rows (the response model's field order); other keys follow.
const USAGE_ORDER: [&str; 18] = [
    "bucket_start",
    "bucket_end",
    "base_model",
    "user_id",
    "user_name",
    "session_id",
    "project_id",
    "estimated_cost_usd",
    "effective_rate_usd_per_million_tokens",
    "effective_rate_usd_per_gigabyte_month",
    "type",
    "cached",
    "token_count",
    "count",
    "free",
    "gigabyte_hours",
    "checkpoint_count",
    "size_bytes",
];

/// Column order of storage rows.
const STORAGE_ORDER: [&str; 9] = [
    "effective_rate_usd_per_gigabyte_month",
    "project_id",
    "org_user_urn",
    "user_email",
    "user_name",
    "checkpoint_count",
    "size_bytes",
    "size_gigabytes",
    "estimated_monthly_cost_usd",
];

/// `tinkex billing …`.
#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Show hourly billing usage for your organization.
    ///
    /// STARTING_ON and ENDING_BEFORE are RFC 3339 timestamps aligned to UTC hour boundaries
    /// (e.g. 2026-07-13T00:00:00Z), at most 14 days apart. One row per (hour x usage type x
    /// base model x session x user). Costs are gross estimates before credits, not invoice
    /// amounts; the table shows an unavailable applicable cost or rate as `null`, CSV as an
    /// empty cell, JSON as null. Requires billing view access in your organization.
    Usage {
        /// Window start (RFC 3339, hour aligned).
        starting_on: String,
        /// Window end, exclusive (RFC 3339, hour aligned).
        ending_before: String,
        /// Write usage rows as CSV to PATH instead of table/JSON output ('-' for stdout).
        #[arg(long = "csv", value_name = "PATH")]
        csv: Option<String>,
        /// Also write the per-session side-table (session_id + user_metadata) as CSV to PATH
        /// ('-' for stdout); join it against the usage rows on session_id.
        #[arg(long = "sessions-csv", value_name = "PATH")]
        sessions_csv: Option<String>,
    },
    /// Show current checkpoint storage and its projected run rate.
    ///
    /// Grouped by project and session owner for the whole organization, or one project
    /// with --project-id. Monthly costs are gross 720-hour projections.
    CheckpointStorage {
        /// Only show storage in this project.
        #[arg(long)]
        project_id: Option<String>,
        /// Write storage rows as CSV to PATH instead of table/JSON output ('-' for stdout).
        #[arg(long = "csv", value_name = "PATH")]
        csv: Option<String>,
    },
}

/// Runs a billing command.
pub async fn run(ctx: &Ctx, cmd: BillingCommand) -> CliResult {
    match cmd {
        BillingCommand::Usage {
            starting_on,
            ending_before,
            csv,
            sessions_csv,
        } => usage(ctx, &starting_on, &ending_before, csv, sessions_csv).await,
        BillingCommand::CheckpointStorage { project_id, csv } => {
            storage(ctx, project_id.as_deref(), csv).await
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn rows_of(v: &Value) -> Vec<Map<String, Value>> {
    v.as_array()
        .map(|a| a.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

/// A row with its `event_info` object merged in.
fn flatten(row: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in row {
        match (k.as_str(), v) {
            ("event_info", Value::Object(info)) => {
                for (ik, iv) in info {
                    out.insert(ik.clone(), iv.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Columns: `order` first (those present), then the other keys in sorted order.
fn columns(rows: &[Map<String, Value>], order: &[&str]) -> Vec<String> {
    let mut cols: Vec<String> = order
        .iter()
        .filter(|c| rows.iter().any(|r| r.contains_key(**c)))
        .map(|c| c.to_string())
        .collect();
    let mut rest: Vec<String> = rows
        .iter()
        .flat_map(|r| r.keys().cloned())
        .filter(|k| !cols.contains(k))
        .collect();
    rest.sort();
    rest.dedup();
    cols.extend(rest);
    cols
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(rows: &[Map<String, Value>], cols: &[String], path: &str) -> CliResult {
    let mut text = cols
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    text.push_str("\r\n");
    for r in rows {
        let line: Vec<String> = cols.iter().map(|c| csv_field(&cell(r.get(c)))).collect();
        text.push_str(&line.join(","));
        text.push_str("\r\n");
    }
    if path == "-" {
        print_text(&text);
    } else {
        std::fs::write(path, text)
            .map_err(|e| CliError::user(format!("Failed to write {path}: {e}")))?;
        note(&format!("Wrote {} row(s) to {path}", rows.len()));
    }
    Ok(())
}

/// The table's `null` for an unavailable cost or rate that applies to the row's type.
fn display_row(mut row: Map<String, Value>) -> Map<String, Value> {
    let fields: &[&str] = match row.get("type").and_then(Value::as_str) {
        Some("training" | "sampling_prefill" | "sampling_sample") => &[
            "estimated_cost_usd",
            "effective_rate_usd_per_million_tokens",
        ],
        Some("storage") => &[
            "estimated_cost_usd",
            "effective_rate_usd_per_gigabyte_month",
        ],
        _ => &[],
    };
    for f in fields {
        if row.get(*f).is_none_or(Value::is_null) {
            row.insert(f.to_string(), Value::String("null".into()));
        }
    }
    row
}

async fn usage(
    ctx: &Ctx,
    starting_on: &str,
    ending_before: &str,
    csv: Option<String>,
    sessions_csv: Option<String>,
) -> CliResult {
    let response = ctx
        .admin()?
        .get_billing_usage(starting_on, ending_before)
        .await?;
    let v = to_value(&response);
    let data = rows_of(&v["data"]);
    let flat: Vec<Map<String, Value>> = data.iter().map(flatten).collect();
    if let Some(path) = &sessions_csv {
        let sessions: Vec<Map<String, Value>> = v["sessions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(id, s)| {
                        let mut row = Map::new();
                        row.insert("session_id".into(), Value::String(id.clone()));
                        let meta = s.get("user_metadata").cloned().unwrap_or(Value::Null);
                        row.insert(
                            "user_metadata".into(),
                            if meta.is_null() {
                                Value::Null
                            } else {
                                Value::String(meta.to_string())
                            },
                        );
                        row
                    })
                    .collect()
            })
            .unwrap_or_default();
        write_csv(
            &sessions,
            &["session_id".to_string(), "user_metadata".to_string()],
            path,
        )?;
    }
    if let Some(path) = &csv {
        write_csv(&flat, &columns(&flat, &USAGE_ORDER), path)?;
    }
    if csv.is_some() || sessions_csv.is_some() {
        return Ok(());
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "data": v["data"],
            "sessions": v["sessions"],
            "cost_data_through": v["cost_data_through"],
        }));
        return Ok(());
    }
    let shown: Vec<Map<String, Value>> = flat.into_iter().map(display_row).collect();
    let cols = columns(&shown, &USAGE_ORDER);
    let headers: Vec<&str> = cols.iter().map(String::as_str).collect();
    let title = if shown.is_empty() {
        "No billing usage in this window".to_string()
    } else {
        format!("{} hourly usage row(s)", shown.len())
    };
    let mut t = Table::new(&headers).title(title);
    for r in &shown {
        t.row(cols.iter().map(|c| cell(r.get(c))));
    }
    t.print();
    Ok(())
}

async fn storage(ctx: &Ctx, project_id: Option<&str>, csv: Option<String>) -> CliResult {
    let response = ctx
        .admin()?
        .get_current_checkpoint_storage_usage(project_id)
        .await?;
    let v = to_value(&response);
    let rate = v["effective_rate_usd_per_gigabyte_month"].clone();
    let rows: Vec<Map<String, Value>> = rows_of(&v["data"])
        .into_iter()
        .map(|r| {
            let mut row = Map::new();
            row.insert("effective_rate_usd_per_gigabyte_month".into(), rate.clone());
            row.extend(r);
            row
        })
        .collect();
    let cols = columns(&rows, &STORAGE_ORDER);
    if let Some(path) = &csv {
        return write_csv(&rows, &cols, path);
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "effective_rate_usd_per_gigabyte_month": rate,
            "data": v["data"],
        }));
        return Ok(());
    }
    let headers: Vec<&str> = cols.iter().map(String::as_str).collect();
    let title = if rows.is_empty() {
        "No active checkpoint storage"
    } else {
        "Current checkpoint storage"
    };
    let mut t = Table::new(&headers).title(title);
    for r in &rows {
        t.row(cols.iter().map(|c| cell(r.get(c))));
    }
    t.print();
    Ok(())
}
