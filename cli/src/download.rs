//! Downloads from signed URLs (PROTOCOL.md 9.8, 9.10): a progress bar, retries after a broken
//! connection that resume where the bytes stopped (`Range` + `If-Range` with the file's
//! entity tag), re-signing when a URL expires, and — for `checkpoint download` — a resume
//! marker in the target directory so that running the same command again after an
//! interruption continues instead of starting over.
//!
//! Bytes go to `<file>.tinkex-part` and are renamed to `<file>` once the announced size has
//! arrived. Resuming is only done with a strong entity tag from the server: without one,
//! the bytes held cannot be proven to belong to the same file, and the file restarts.

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::note;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use tinkex::core::rest::plain;
use tinkex::core::{Config, ErrorKind};

/// Suffix of a file being downloaded.
pub const PART_SUFFIX: &str = ".tinkex-part";

/// The resume marker of a checkpoint download directory.
pub const MARKER: &str = ".tinkex-download.json";

/// Most files a checkpoint may list.
const MAX_FILES: usize = 10_000;

/// Longest relative file name accepted from the server.
const MAX_NAME: usize = 1024;

/// Options shared by the commands that download.
#[derive(Clone, Debug, clap::Args)]
pub struct DownloadOptions {
    /// Attempts per file when the connection breaks or the server fails; each attempt
    /// resumes where the previous one stopped.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Re-sign the download URLs when they expire within this many seconds.
    #[arg(long, default_value_t = 300)]
    pub resign_margin_secs: u64,
    /// Accept plain-http download URLs to hosts other than loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
}

/// How one file ended.
pub enum FileOutcome {
    /// Complete: its size and entity tag.
    Done(u64, Option<String>),
    /// The URL was refused (403: expired or bad signature); sign again and retry.
    NeedsNewUrl,
}

fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(PART_SUFFIX);
    PathBuf::from(p)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::user(format!("Failed to save {}: {e}", path.display())).details(format!(
        "Please check that you can write to {} ({what}).",
        path.display()
    ))
}

fn progress_bar(ctx: &Ctx, label: &str) -> ProgressBar {
    let target = if ctx.json() || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(tinkex::core::sanitize::printable(label).into_owned());
    bar
}

/// Downloads `url` into `dest` (through `dest` + [`PART_SUFFIX`]). `etag` is the entity tag
/// of the bytes already in the part file (from an earlier run), if any; `on_etag` is called
/// with a new tag before any byte of it is written (the caller persists it for a later
/// run). Broken connections and retryable failures are retried up to `attempts` times,
/// resuming when the server gave an entity tag.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_file(
    ctx: &Ctx,
    config: &Config,
    opts: &DownloadOptions,
    label: &str,
    url: &str,
    dest: &Path,
    mut etag: Option<String>,
    on_etag: &mut dyn FnMut(Option<&str>) -> CliResult,
) -> CliResult<FileOutcome> {
    let part = part_path(dest);
    let bar = progress_bar(ctx, label);
    let mut failures = 0u32;
    let mut last_error: Option<CliError> = None;
    let result = loop {
        if failures >= opts.attempts {
            break Err(last_error.unwrap_or_else(|| CliError::service("download failed")));
        }
        if failures > 0 {
            tokio::time::sleep(config.retry.backoff(failures - 1, 0.5)).await;
        }
        let held = match (&etag, std::fs::metadata(&part)) {
            (Some(_), Ok(m)) => m.len(),
            _ => 0,
        };
        let resp = plain::open_signed_url(
            url,
            held,
            etag.as_deref().filter(|_| held > 0),
            config.timeouts.connect,
            opts.allow_insecure_http,
        )
        .await;
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) if e.http_status == Some(403) => break Ok(FileOutcome::NeedsNewUrl),
            Err(e) if e.http_status == Some(416) => {
                // The held bytes are not a prefix of this file: start over.
                etag = None;
                on_etag(None)?;
                failures += 1;
                last_error = Some(e.into());
                continue;
            }
            Err(e) if e.kind == ErrorKind::Transient => {
                failures += 1;
                last_error = Some(e.into());
                continue;
            }
            Err(e) => break Err(e.into()),
        };
        let start = if resp.status == 206 { held } else { 0 };
        if resp.status == 200 && resp.etag != etag {
            etag = resp.etag.clone();
            on_etag(etag.as_deref())?;
        }
        let mut file = match std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(start == 0)
            .open(&part)
        {
            Ok(f) => f,
            Err(e) => break Err(io_error("create", &part, e)),
        };
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            break Err(io_error("seek", &part, e));
        }
        if start > 0 {
            if let Err(e) = file.set_len(start) {
                break Err(io_error("truncate", &part, e));
            }
        }
        let total = resp.total_size();
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(start);
        let mut have = start;
        let mut broke = None;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    if let Err(e) = file.write_all(&bytes) {
                        return Err(io_error("write", &part, e));
                    }
                    have += bytes.len() as u64;
                    bar.set_position(have);
                }
                Ok(None) => break,
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = file.flush().and_then(|_| file.sync_data()) {
            break Err(io_error("sync", &part, e));
        }
        drop(file);
        let short = total.is_some_and(|t| have != t);
        if broke.is_some() || short {
            failures += 1;
            let why = match &broke {
                Some(e) => e.message.clone(),
                None => format!(
                    "the connection closed after {have} of {} bytes",
                    total.unwrap_or(0)
                ),
            };
            if !ctx.json() && failures < opts.attempts {
                let how = if etag.is_some() {
                    format!("resuming from byte {have}")
                } else {
                    "restarting (the server sent no entity tag)".into()
                };
                bar.suspend(|| note(&format!("{label}: {why}; {how}")));
            }
            last_error = Some(match broke {
                Some(e) => e.into(),
                None => CliError::service(why),
            });
            continue;
        }
        if let Err(e) = std::fs::rename(&part, dest) {
            break Err(io_error("rename", dest, e));
        }
        break Ok(FileOutcome::Done(have, etag.clone()));
    };
    bar.finish_and_clear();
    result
}

/// Downloads one file whose URL cannot be re-signed (a trace): a refused URL is an error.
pub async fn download_file(
    ctx: &Ctx,
    config: &Config,
    opts: &DownloadOptions,
    label: &str,
    dest: &Path,
    url: &str,
) -> CliResult<u64> {
    match fetch_file(ctx, config, opts, label, url, dest, None, &mut |_| Ok(())).await? {
        FileOutcome::Done(size, _) => Ok(size),
        FileOutcome::NeedsNewUrl => Err(CliError::user(format!(
            "Failed to download {label}: the signed URL was refused (expired?)"
        ))
        .details(
            "The signed URL is valid for about an hour. Re-run the command to get a fresh one.",
        )),
    }
}

/// What a checkpoint download directory holds, for a later run to resume.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Marker {
    /// The checkpoint being downloaded.
    pub checkpoint_path: String,
    /// Per file: the entity tag of its bytes, and whether it is complete.
    #[serde(default)]
    pub files: BTreeMap<String, MarkerFile>,
}

/// One file of a [`Marker`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MarkerFile {
    /// Entity tag of the bytes held.
    #[serde(default)]
    pub etag: Option<String>,
    /// Size, once complete.
    #[serde(default)]
    pub complete_size: Option<u64>,
}

impl Marker {
    /// Reads the marker of `dir`, if it is a valid one.
    pub fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read(dir.join(MARKER)).ok()?;
        if text.len() > 16 * 1024 * 1024 {
            return None;
        }
        serde_json::from_slice(&text).ok()
    }

    /// Writes it atomically.
    pub fn write(&self, dir: &Path) -> CliResult {
        let tmp = dir.join(format!("{MARKER}.tmp"));
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(|e| io_error("write", &tmp, e))?;
        std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| io_error("rename", &tmp, e))
    }
}

/// Checks a file name from the server: relative, no `.`/`..`/empty segment, no `\`, no
/// control character, not one of the downloader's own names.
pub fn safe_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && !name.ends_with(PART_SUFFIX)
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !name.starts_with(MARKER)
}

/// Signs the URLs of an external checkpoint (and renews its TTL when it is a temporary
/// export) — one closure per download.
pub type Signer<'a> = dyn FnMut() -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = CliResult<tinkex::core::types::ExternalWeightsUrlsResponse>,
                > + Send
                + 'a,
        >,
    > + Send
    + 'a;

/// Downloads every file of an external checkpoint into `dir` (which holds `marker`),
/// re-signing before the URLs expire and after one is refused. Returns the total size.
pub async fn download_external(
    ctx: &Ctx,
    config: &Config,
    opts: &DownloadOptions,
    dir: &Path,
    marker: &mut Marker,
    sign: &mut Signer<'_>,
) -> CliResult<u64> {
    let mut signed = sign().await?;
    if signed.urls.is_empty() {
        return Err(CliError::user(format!(
            "External weights checkpoint has no files: {}",
            marker.checkpoint_path
        )));
    }
    if signed.urls.len() > MAX_FILES {
        return Err(CliError::service(format!(
            "The checkpoint lists {} files (at most {MAX_FILES} are accepted)",
            signed.urls.len()
        )));
    }
    let names: Vec<String> = signed.urls.keys().cloned().collect();
    for name in &names {
        if !safe_name(name) {
            return Err(CliError::service(format!(
                "Unsafe file path in checkpoint: {}",
                tinkex::core::sanitize::bounded(name, 200)
            ))
            .details("The checkpoint may be corrupted or malicious."));
        }
    }
    let margin = opts.resign_margin_secs as f64;
    let mut total = 0u64;
    for name in &names {
        let dest = dir.join(name);
        let state = marker.files.get(name).cloned().unwrap_or_default();
        if let Some(size) = state.complete_size {
            if std::fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
                total += size;
                continue;
            }
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
        }
        let mut refusals = 0;
        loop {
            let expires = crate::output::parse_datetime(&signed.expires).unwrap_or(0.0);
            if crate::output::unix_now() >= expires - margin {
                signed = sign().await?;
            }
            let Some(url) = signed.urls.get(name).cloned() else {
                return Err(CliError::service(format!(
                    "The re-signed URLs no longer list {}",
                    tinkex::core::sanitize::bounded(name, 200)
                )));
            };
            let etag = marker.files.get(name).and_then(|f| f.etag.clone());
            let mut save = |tag: Option<&str>| {
                marker.files.entry(name.clone()).or_default().etag = tag.map(str::to_string);
                marker.write(dir)
            };
            match fetch_file(ctx, config, opts, name, &url, &dest, etag, &mut save).await? {
                FileOutcome::Done(size, tag) => {
                    let f = marker.files.entry(name.clone()).or_default();
                    f.etag = tag;
                    f.complete_size = Some(size);
                    marker.write(dir)?;
                    total += size;
                    break;
                }
                FileOutcome::NeedsNewUrl if refusals == 0 => {
                    refusals += 1;
                    signed = sign().await?;
                }
                FileOutcome::NeedsNewUrl => {
                    return Err(CliError::user(format!(
                        "Failed to download {name}: the signed URL was refused twice"
                    )))
                }
            }
        }
    }
    Ok(total)
}

/// A failed cleanup step, as a warning line on stderr.
pub fn warn_cleanup(what: &str, e: &tinkex::core::Error) {
    note(&format!(
        "Warning: {what} ({})",
        tinkex::core::sanitize::printable(&e.message)
    ));
}
