//! `tinkex checkpoint list|info|publish|unpublish|set-ttl|delete|download` (PROTOCOL.md
//! 9.3–9.8, 6.7). `push-hf` is not available (it needs the Hugging Face Hub).

use crate::ctx::Ctx;
use crate::download::{download_external, warn_cleanup, DownloadOptions, Marker, Signer};
use crate::error::{exit_code_of, CliError, CliResult, EXIT_INTERRUPTED};
use crate::output::{
    format_bool, format_size, format_timestamp, note, parse_datetime, print_json, println_text,
    Table,
};
use crate::run::count_title;
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::PathBuf;
use tinkex::core::service::FromStateOptions;
use tinkex::core::types::{AccessScope, Checkpoint, CheckpointKind, FinishReasonKind, TinkerPath};

/// Lifetime of the temporary export a training checkpoint is downloaded through; renewed
/// whenever the download URLs are signed (the official CLI's 3600 s).
const EXPORT_TTL_SECS: i64 = 3600;

/// Page size of `checkpoint list` across runs (the official CLI's).
const BATCH: i64 = 1000;

/// Deletions in flight at once (the official CLI's).
const DELETE_CONCURRENCY: usize = 32;

const PATH_HINT: &str = "Checkpoint path must be in the format: tinker://run-id/weights/0001";

const DOWNLOADABLE_HINT: &str = "Only training (tinker://run-id/weights/name) and external weights (tinker://run-id/external_weights/name) checkpoints can be downloaded.";

/// `tinkex checkpoint …`.
///
/// `push-hf` of the official CLI is not available: it needs the Hugging Face Hub
/// (huggingface_hub). Download the checkpoint with `tinkex checkpoint download`, then upload
/// the directory with the Hub's own tools.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// List checkpoints of one run (--run-id) or of all your runs.
    List {
        /// Training run ID.
        #[arg(long)]
        run_id: Option<String>,
        /// Maximum number of checkpoints when listing from all runs (0 shows all).
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Show details of a specific checkpoint.
    Info {
        /// A tinker path, e.g. tinker://run-id/weights/0001.
        checkpoint_path: String,
    },
    /// Publish a checkpoint to make it publicly accessible (owner only).
    Publish {
        /// A tinker path, e.g. tinker://run-id/weights/0001.
        checkpoint_path: String,
    },
    /// Unpublish a checkpoint to make it private again (owner only).
    Unpublish {
        /// A tinker path, e.g. tinker://run-id/weights/0001.
        checkpoint_path: String,
    },
    /// Set or remove the TTL (time-to-live) of a checkpoint (owner only).
    SetTtl {
        /// A tinker path, e.g. tinker://run-id/weights/0001.
        checkpoint_path: String,
        /// TTL in seconds from now (1 hour to 10 years).
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        ttl: Option<i64>,
        /// Remove the expiration from the checkpoint.
        #[arg(long)]
        remove: bool,
    },
    /// Delete one or more checkpoints permanently.
    ///
    /// By paths:           tinkex checkpoint delete tinker://run-id/weights/0001 ...
    /// A whole run:        tinkex checkpoint delete --run-id <run-id>
    /// With filters:       tinkex checkpoint delete --run-id <run-id> --type weights --before 2024-06-01
    ///
    /// Dates are UTC. Asks for confirmation unless --yes. WARNING: permanent.
    Delete {
        /// Tinker paths to delete.
        #[arg(conflicts_with = "run_id", required_unless_present = "run_id")]
        checkpoint_paths: Vec<String>,
        /// Delete the checkpoints of this training run (with the filters below).
        #[arg(long)]
        run_id: Option<String>,
        /// Filter by type: weights, sampler_weights or external_weights.
        #[arg(long = "type")]
        checkpoint_type: Option<String>,
        /// Only those created before this UTC date or datetime (ISO 8601).
        #[arg(long)]
        before: Option<String>,
        /// Only those created after this UTC date or datetime (ISO 8601).
        #[arg(long)]
        after: Option<String>,
        /// Skip the confirmation prompt.
        #[arg(short, long)]
        yes: bool,
    },
    /// Download a training or external weights checkpoint.
    ///
    /// CHECKPOINT_PATH is a training checkpoint (tinker://run-id/weights/name) or an
    /// external weights export (tinker://run-id/external_weights/name); sampler checkpoints
    /// cannot be downloaded. A training checkpoint is exported through a temporary external
    /// weights checkpoint (TTL 1 hour, renewed while downloading), which starts a training
    /// session on its base model; the export is deleted afterwards.
    ///
    /// Files go into <output>/<run-id>_<kind>_<name>/. A broken connection is retried and
    /// resumed; after an interruption the directory is kept and running the same command
    /// again resumes the download. An existing directory of another download is an error
    /// unless --force.
    Download {
        /// The checkpoint's tinker path.
        checkpoint_path: String,
        /// Parent directory of the checkpoint directory (default: current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the target directory if it exists (no resume).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        download: DownloadOptions,
    },
    /// Not available in tinkex: uploading to the Hugging Face Hub needs the Hub's client.
    ///
    /// Use `tinkex checkpoint download`, then upload the directory with the Hub's tools
    /// (e.g. `hf upload`).
    #[command(name = "push-hf")]
    PushHf {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

impl CheckpointCommand {
    /// Whether the command handles Ctrl-C itself (to clean up before exiting).
    pub fn handles_interrupt(&self) -> bool {
        matches!(self, CheckpointCommand::Download { .. })
    }
}

/// Runs a checkpoint command.
pub async fn run(ctx: &Ctx, cmd: CheckpointCommand) -> CliResult {
    match cmd {
        CheckpointCommand::List { run_id, limit } => list(ctx, run_id.as_deref(), limit).await,
        CheckpointCommand::Info { checkpoint_path } => info(ctx, &checkpoint_path).await,
        CheckpointCommand::Publish { checkpoint_path } => {
            publish(ctx, &checkpoint_path, true).await
        }
        CheckpointCommand::Unpublish { checkpoint_path } => {
            publish(ctx, &checkpoint_path, false).await
        }
        CheckpointCommand::SetTtl {
            checkpoint_path,
            ttl,
            remove,
        } => set_ttl(ctx, &checkpoint_path, if remove { None } else { ttl }).await,
        CheckpointCommand::Delete {
            checkpoint_paths,
            run_id,
            checkpoint_type,
            before,
            after,
            yes,
        } => {
            delete(
                ctx,
                checkpoint_paths,
                run_id,
                checkpoint_type,
                before,
                after,
                yes,
            )
            .await
        }
        CheckpointCommand::Download {
            checkpoint_path,
            output,
            force,
            download: opts,
        } => download(ctx, &checkpoint_path, output, force, &opts).await,
        CheckpointCommand::PushHf { .. } => Err(CliError::user(
            "checkpoint push-hf is not available in tinkex",
        )
        .details(
            "It needs the Hugging Face Hub client. Run 'tinkex checkpoint download <path>' and \
             upload the directory with the Hub's tools (e.g. 'hf upload').",
        )),
    }
}

fn require_tinker_path(path: &str) -> CliResult<TinkerPath> {
    if !path.starts_with("tinker://") {
        return Err(CliError::user(format!("Invalid checkpoint path: {path}")).details(PATH_HINT));
    }
    TinkerPath::parse(path)
        .map_err(|e| CliError::user(format!("Invalid checkpoint path: {e}")).details(PATH_HINT))
}

fn checkpoint_rows(t: &mut Table, checkpoints: &[Checkpoint]) {
    for c in checkpoints {
        t.row([
            c.checkpoint_id.clone(),
            c.checkpoint_type.clone(),
            c.size_bytes
                .map(format_size)
                .unwrap_or_else(|| "N/A".into()),
            format_bool(c.public),
            format_timestamp(Some(&c.time)),
            c.expires_at
                .as_deref()
                .map(|e| format_timestamp(Some(e)))
                .unwrap_or_else(|| "Never".into()),
            c.tinker_path.clone(),
        ]);
    }
}

async fn list(ctx: &Ctx, run_id: Option<&str>, limit: u64) -> CliResult {
    let rest = ctx.rest()?;
    let (checkpoints, total) = match run_id {
        Some(run) => (rest.list_checkpoints(run).await?.checkpoints, None),
        None => {
            let first_page = if limit > 0 {
                (limit as i64).min(BATCH)
            } else {
                BATCH
            };
            let first = rest.list_user_checkpoints(first_page, 0).await?;
            let total = first
                .cursor
                .as_ref()
                .map(|c| c.total_count.max(0))
                .unwrap_or(first.checkpoints.len() as i64);
            let mut all = first.checkpoints;
            let target = if limit > 0 {
                (limit as i64).min(total)
            } else {
                total
            };
            while (all.len() as i64) < target {
                let want = (target - all.len() as i64).min(BATCH);
                let page = rest.list_user_checkpoints(want, all.len() as i64).await?;
                let got = page.checkpoints.len() as i64;
                all.extend(page.checkpoints);
                if got < want {
                    break;
                }
            }
            (all, Some(total))
        }
    };
    if ctx.json() {
        let mut v = serde_json::json!({ "checkpoints": checkpoints });
        if let Some(run) = run_id {
            v["run_id"] = run.into();
        }
        print_json(&v);
        return Ok(());
    }
    let title = match run_id {
        Some(run) => count_title(
            checkpoints.len(),
            None,
            &format!("checkpoint for run {run}"),
            &format!("checkpoints for run {run}"),
            &format!("No checkpoints found for run {run}"),
        ),
        None => count_title(
            checkpoints.len(),
            total,
            "checkpoint",
            "checkpoints",
            "No checkpoints found",
        ),
    };
    let mut t = Table::new(&[
        "Checkpoint ID",
        "Type",
        "Size",
        "Public",
        "Created",
        "Expires",
        "Path",
    ])
    .title(title);
    checkpoint_rows(&mut t, &checkpoints);
    t.print();
    Ok(())
}

async fn info(ctx: &Ctx, path: &str) -> CliResult {
    let parsed = require_tinker_path(path)?;
    let rest = ctx.rest()?;
    let listing = rest.list_checkpoints(&parsed.training_run_id).await?;
    let Some(c) = listing
        .checkpoints
        .into_iter()
        .find(|c| c.tinker_path == path)
    else {
        return Err(CliError::user(format!("Checkpoint not found: {path}")));
    };
    let run = rest
        .get_training_run(&parsed.training_run_id, AccessScope::Owned)
        .await?;
    if ctx.json() {
        let mut v = serde_json::to_value(&c).unwrap_or_default();
        v["is_lora"] = run.is_lora.into();
        v["lora_rank"] = serde_json::to_value(run.lora_rank).unwrap_or_default();
        print_json(&v);
        return Ok(());
    }
    let mut t = Table::properties(format!("Checkpoint: {}", c.checkpoint_id));
    t.row(["Checkpoint ID".to_string(), c.checkpoint_id.clone()]);
    t.row(["Type".to_string(), c.checkpoint_type.clone()]);
    t.row(["Tinker Path".to_string(), c.tinker_path.clone()]);
    if let Some(s) = c.size_bytes {
        t.row(["Size".to_string(), format_size(s)]);
    }
    t.row(["Public".to_string(), format_bool(c.public)]);
    t.row(["Created".to_string(), format_timestamp(Some(&c.time))]);
    t.row([
        "Expires".to_string(),
        c.expires_at
            .as_deref()
            .map(|e| format_timestamp(Some(e)))
            .unwrap_or_else(|| "Never".into()),
    ]);
    t.row([
        "Training Run ID".to_string(),
        parsed.training_run_id.clone(),
    ]);
    let lora = match (run.is_lora, run.lora_rank) {
        (true, Some(r)) if r > 0 => format!("Yes (Rank {r})"),
        (true, _) => "Yes".into(),
        (false, _) => "No".into(),
    };
    t.row(["LoRA".to_string(), lora]);
    t.print();
    Ok(())
}

/// Prints what a changing command did (the official CLI prints nothing).
fn done(ctx: &Ctx, text: String, json: serde_json::Value) {
    if ctx.json() {
        print_json(&json);
    } else {
        println_text(&text);
    }
}

async fn publish(ctx: &Ctx, path: &str, public: bool) -> CliResult {
    require_tinker_path(path)?;
    let rest = ctx.rest()?;
    if public {
        rest.publish_checkpoint_from_tinker_path(path).await?;
    } else {
        rest.unpublish_checkpoint_from_tinker_path(path).await?;
    }
    done(
        ctx,
        format!(
            "{} {path}",
            if public { "Published" } else { "Unpublished" }
        ),
        serde_json::json!({"tinker_path": path, "public": public}),
    );
    Ok(())
}

async fn set_ttl(ctx: &Ctx, path: &str, ttl: Option<i64>) -> CliResult {
    require_tinker_path(path)?;
    ctx.rest()?
        .set_checkpoint_ttl_from_tinker_path(path, ttl)
        .await?;
    let text = match ttl {
        Some(s) => format!("Set the TTL of {path} to {s} seconds"),
        None => format!("Removed the expiration of {path}"),
    };
    done(
        ctx,
        text,
        serde_json::json!({"tinker_path": path, "ttl_seconds": ttl}),
    );
    Ok(())
}

/// A UTC date (`YYYY-MM-DD`, midnight) or datetime as Unix seconds.
fn parse_date(s: &str) -> CliResult<f64> {
    let s = s.trim();
    let t = if tinkex::core::rest::is_date(s) {
        parse_datetime(&format!("{s}T00:00:00Z"))
    } else {
        parse_datetime(s)
    };
    t.ok_or_else(|| {
        CliError::user(format!("Invalid date: {s}"))
            .details("Use ISO 8601 format: 2024-01-01, 2024-01-01T12:00:00Z")
    })
}

fn checkpoint_kind(t: &str) -> CliResult<&'static str> {
    match t {
        "weights" | "training" => Ok("training"),
        "sampler_weights" | "sampler" => Ok("sampler"),
        "external_weights" | "external" => Ok("external"),
        _ => Err(CliError::user(format!("Invalid checkpoint type: {t}"))
            .details("Valid types: weights, sampler_weights, external_weights")),
    }
}

/// Asks for a yes/no on stderr/stdin; `None` at end of input.
fn confirm(question: &str) -> Option<bool> {
    note(&format!("{question} [y/N]: "));
    let mut line = String::new();
    let mut limited = std::io::Read::take(std::io::stdin().lock(), 64);
    match std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut limited), &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn delete(
    ctx: &Ctx,
    paths: Vec<String>,
    run_id: Option<String>,
    checkpoint_type: Option<String>,
    before: Option<String>,
    after: Option<String>,
    yes: bool,
) -> CliResult {
    if run_id.is_none() && (checkpoint_type.is_some() || before.is_some() || after.is_some()) {
        return Err(
            CliError::user("--type, --before, and --after require --run-id").details(
                "Example: tinkex checkpoint delete --run-id <run-id> --type weights --before 2024-06-01",
            ),
        );
    }
    let rest = ctx.rest()?;
    let (paths, listed) = match &run_id {
        Some(run) => {
            let kind = checkpoint_type
                .as_deref()
                .map(checkpoint_kind)
                .transpose()?;
            let before = before.as_deref().map(parse_date).transpose()?;
            let after = after.as_deref().map(parse_date).transpose()?;
            let all = rest.list_checkpoints(run).await?.checkpoints;
            let chosen: Vec<Checkpoint> = all
                .into_iter()
                .filter(|c| kind.is_none_or(|k| c.checkpoint_type == k))
                .filter(|c| {
                    let t = parse_datetime(&c.time);
                    before.is_none_or(|b| t.is_some_and(|t| t < b))
                        && after.is_none_or(|a| t.is_some_and(|t| t > a))
                })
                .collect();
            if chosen.is_empty() {
                done(
                    ctx,
                    format!("No checkpoints found for run {run} matching filters"),
                    serde_json::json!({"deleted_count": 0, "failed": []}),
                );
                return Ok(());
            }
            (
                chosen.iter().map(|c| c.tinker_path.clone()).collect(),
                Some(chosen),
            )
        }
        None => {
            for p in &paths {
                require_tinker_path(p)?;
            }
            (paths, None)
        }
    };
    if !yes {
        note(&format!("Will delete {} checkpoint(s):", paths.len()));
        match &listed {
            Some(cs) => {
                for c in cs {
                    note(&format!(
                        "  - {} ({}, created {})",
                        c.tinker_path,
                        c.size_bytes
                            .map(format_size)
                            .unwrap_or_else(|| "N/A".into()),
                        format_timestamp(Some(&c.time))
                    ));
                }
                let total: u64 = cs.iter().filter_map(|c| c.size_bytes).sum();
                note(&format!("\nTotal size: {}", format_size(total)));
            }
            None => {
                for p in &paths {
                    note(&format!("  - {p}"));
                }
            }
        }
        note("WARNING: This action is permanent and cannot be undone.");
        if !std::io::stdin().is_terminal() {
            note("(reading the answer from stdin)");
        }
        match confirm(&format!(
            "Are you sure you want to delete {} checkpoint(s)?",
            paths.len()
        )) {
            Some(true) => {}
            Some(false) => {
                done(
                    ctx,
                    "Deletion cancelled.".into(),
                    serde_json::json!({"deleted_count": 0, "failed": [], "cancelled": true}),
                );
                return Ok(());
            }
            None => {
                return Err(CliError::user("Aborted: no answer to the confirmation")
                    .details("Pass --yes to delete without a prompt."))
            }
        }
    }
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(DELETE_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for p in paths {
        let rest = rest.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = rest.delete_checkpoint_from_tinker_path(&p).await;
            (p, r)
        });
    }
    let mut deleted = 0usize;
    let mut failed: Vec<(String, tinkex::core::Error)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => deleted += 1,
            Ok((p, Err(e))) => failed.push((p, e)),
            Err(e) => failed.push((
                "<task>".into(),
                tinkex::core::Error::fatal(format!("a deletion task failed: {e}")),
            )),
        }
    }
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    if ctx.json() {
        print_json(&serde_json::json!({
            "deleted_count": deleted,
            "failed": failed.iter().map(|(p, e)| serde_json::json!({"tinker_path": p, "error": e.message})).collect::<Vec<_>>(),
        }));
    } else {
        println_text(&format!("Deleted {deleted} checkpoint(s)"));
        if !failed.is_empty() {
            println_text(&format!("Failed to delete {} checkpoint(s):", failed.len()));
            for (p, e) in &failed {
                println_text(&format!("  - {p}: {}", e.message));
            }
        }
    }
    match failed.iter().map(|(_, e)| exit_code_of(e)).max() {
        None => Ok(()),
        Some(code) => Err(CliError {
            message: format!("{} of the deletions failed", failed.len()),
            details: None,
            code,
        }),
    }
}

fn parse_downloadable(path: &str) -> CliResult<TinkerPath> {
    let parsed = TinkerPath::parse(path).map_err(|e| {
        CliError::user(format!("Invalid checkpoint path: {e}")).details(DOWNLOADABLE_HINT)
    })?;
    if parsed.kind == CheckpointKind::Sampler {
        return Err(
            CliError::user(format!("Sampler checkpoints cannot be downloaded: {path}"))
                .details(DOWNLOADABLE_HINT),
        );
    }
    Ok(parsed)
}

/// A signer of `path`'s URLs on the session-less client; with `renew`, each signing also
/// resets the checkpoint's TTL so the export outlives its URLs.
fn signer<'a>(rest: &tinkex::core::RestClient, path: &str, renew: Option<i64>) -> Box<Signer<'a>> {
    let rest = rest.clone();
    let path = path.to_string();
    Box::new(move || {
        let rest = rest.clone();
        let path = path.clone();
        Box::pin(async move {
            let urls = rest.get_external_weights_urls(&path).await?;
            if let Some(ttl) = renew {
                rest.set_checkpoint_ttl_from_tinker_path(&path, Some(ttl))
                    .await?;
            }
            Ok(urls)
        })
    })
}

/// Runs `work` unless Ctrl-C comes first.
async fn interruptible<T>(work: impl std::future::Future<Output = CliResult<T>>) -> CliResult<T> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::interrupted()),
    }
}

async fn download(
    ctx: &Ctx,
    path: &str,
    output: Option<PathBuf>,
    force: bool,
    opts: &DownloadOptions,
) -> CliResult {
    let parsed = parse_downloadable(path)?;
    let out_dir = match output {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| CliError::user(format!("Cannot create {}: {e}", d.display())))?;
            d
        }
        None => std::env::current_dir()?,
    };
    let target = out_dir.join(format!(
        "{}_{}_{}",
        parsed.training_run_id,
        parsed.kind.segment(),
        parsed.name
    ));
    let mut marker = None;
    if target.exists() {
        if force {
            std::fs::remove_dir_all(&target)
                .map_err(|e| CliError::user(format!("Cannot remove {}: {e}", target.display())))?;
        } else if let Some(m) = Marker::read(&target).filter(|m| m.checkpoint_path == path) {
            if !ctx.json() {
                note(&format!("Resuming the download into {}", target.display()));
            }
            marker = Some(m);
        } else {
            return Err(CliError::user(format!(
                "Target directory already exists: {}",
                target.display()
            ))
            .details("Use --force to overwrite or choose a different output directory."));
        }
    }
    let mut marker = match marker {
        Some(m) => m,
        None => {
            std::fs::create_dir_all(&target)
                .map_err(|e| CliError::user(format!("Cannot create {}: {e}", target.display())))?;
            let m = Marker {
                checkpoint_path: path.to_string(),
                ..Default::default()
            };
            m.write(&target)?;
            m
        }
    };
    let config = ctx.config()?;
    let rest = ctx.rest()?;
    let result = if parsed.kind == CheckpointKind::External {
        let mut sign = signer(&rest, path, None);
        interruptible(download_external(
            ctx,
            &config,
            opts,
            &target,
            &mut marker,
            &mut *sign,
        ))
        .await
    } else {
        export_and_download(ctx, &config, &rest, path, opts, &target, &mut marker).await
    };
    match result {
        Ok(total) => {
            let _ = std::fs::remove_file(target.join(crate::download::MARKER));
            let destination = target.display().to_string();
            if ctx.json() {
                let mut v =
                    serde_json::json!({"checkpoint_path": path, "destination": destination});
                if total > 0 {
                    v["file_size_bytes"] = total.into();
                }
                print_json(&v);
            } else {
                let mut t = Table::properties(format!("Checkpoint Download: {path}"));
                t.row(["Checkpoint Path".to_string(), path.to_string()]);
                if total > 0 {
                    t.row(["Total Size".to_string(), format_size(total)]);
                }
                t.row(["Downloaded to".to_string(), destination]);
                t.print();
            }
            Ok(())
        }
        Err(mut e) => {
            let hint = format!(
                "The partial download is kept in {}; run the same command again to resume (or --force to start over).",
                target.display()
            );
            if e.code == EXIT_INTERRUPTED && e.details.is_none() {
                e.details = Some(hint);
            } else {
                e.details = Some(match e.details {
                    Some(d) => format!("{d}\n{hint}"),
                    None => hint,
                });
            }
            Err(e)
        }
    }
}

/// A training checkpoint: load it into a new training run, export it as temporary external
/// weights, download those, delete the export, close the session.
async fn export_and_download(
    ctx: &Ctx,
    config: &tinkex::core::Config,
    rest: &tinkex::core::RestClient,
    path: &str,
    opts: &DownloadOptions,
    target: &std::path::Path,
    marker: &mut Marker,
) -> CliResult<u64> {
    if !ctx.json() {
        note(&format!(
            "Exporting {path} as external weights (this starts a training session on the \
             checkpoint's base model)..."
        ));
    }
    let service = ctx.service()?;
    let mut from_state = FromStateOptions::new(path, false);
    from_state.user_metadata = Some(
        [(
            "created_by".to_string(),
            "tinkex checkpoint download".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    let exported = interruptible(async {
        let training = service.training_client_from_state_full(from_state).await?;
        let export = training
            .save_weights_external("download", Some(EXPORT_TTL_SECS), None)
            .await?;
        Ok(export.path)
    })
    .await;
    let result = match exported {
        Err(e) => Err(e),
        Ok(export_path) => {
            let mut sign = signer(rest, &export_path, Some(EXPORT_TTL_SECS));
            let r = interruptible(download_external(
                ctx, config, opts, target, marker, &mut *sign,
            ))
            .await;
            if let Err(e) = rest.delete_checkpoint_from_tinker_path(&export_path).await {
                warn_cleanup(
                    &format!(
                        "failed to delete the temporary export {export_path}; it expires in \
                         {EXPORT_TTL_SECS} seconds"
                    ),
                    &e,
                );
            }
            r
        }
    };
    let status = match &result {
        Ok(_) => FinishReasonKind::Success,
        Err(e) if e.code == EXIT_INTERRUPTED => FinishReasonKind::Interrupted,
        Err(_) => FinishReasonKind::Errored,
    };
    if let Err(e) = service.close(status, None).await {
        warn_cleanup("failed to close the export's session", &e);
    }
    result
}
