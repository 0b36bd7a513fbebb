//! `tinkex session export-trace` (PROTOCOL.md 9.10): waits for the server-side export, then
//! downloads the trace from its signed URL (no credential sent), resuming after a broken
//! connection like `checkpoint download`.

use crate::ctx::Ctx;
use crate::download::{download_file, DownloadOptions};
use crate::error::CliResult;
use crate::output::{format_size, note, print_json, println_text, Table};
use clap::Subcommand;
use std::path::PathBuf;

/// `tinkex session …`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Export a session's timeline as a Perfetto trace (.pftrace).
    ///
    /// Builds a trace of the session's training and sampling requests on the server and
    /// downloads it. Open the file in https://ui.perfetto.dev to view the timeline.
    ///
    /// Examples:
    ///   tinkex session export-trace <session-id>                      (./<session-id>.pftrace)
    ///   tinkex session export-trace <session-id> -o my.pftrace
    ///   tinkex session export-trace <session-id> --url-only           (print the signed URL)
    ExportTrace {
        /// The session id.
        session_id: String,
        /// Output file path (default: ./<session-id>.pftrace).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the signed download URL instead of downloading the trace.
        #[arg(long)]
        url_only: bool,
        #[command(flatten)]
        download: DownloadOptions,
    },
}

/// Runs a session command.
pub async fn run(ctx: &Ctx, cmd: SessionCommand) -> CliResult {
    let SessionCommand::ExportTrace {
        session_id,
        output,
        url_only,
        download,
    } = cmd;
    let rest = ctx.rest()?;
    if !ctx.json() {
        note(&format!(
            "Exporting trace for session {session_id} (this may take a while)..."
        ));
    }
    let url = rest.export_session_trace(&session_id).await?;
    if url_only {
        if ctx.json() {
            print_json(&serde_json::json!({"session_id": session_id, "url": url}));
        } else {
            // The bare URL, for command substitution.
            println_text(&url);
        }
        return Ok(());
    }
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{session_id}.pftrace")));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let config = ctx.config()?;
    let size = download_file(ctx, &config, &download, "trace", &path, &url).await?;
    let destination = path.display().to_string();
    if ctx.json() {
        let mut v = serde_json::json!({"session_id": session_id, "destination": destination});
        if size > 0 {
            v["file_size_bytes"] = size.into();
        }
        print_json(&v);
    } else {
        let mut t = Table::properties(format!("Trace Export: {session_id}"));
        t.row(["Session ID".to_string(), session_id.clone()]);
        t.row(["Saved to".to_string(), destination]);
        if size > 0 {
            t.row(["Size".to_string(), format_size(size)]);
        }
        t.print();
    }
    Ok(())
}
