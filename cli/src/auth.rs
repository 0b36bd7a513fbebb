//! `tinkex auth login|logout|status|whoami` (PROTOCOL.md 2.4, 2.8, 2.9): the credentials file
//! `~/.tinker/credentials.json` shared with the official CLI (directory 0700, file 0600,
//! written atomically), the API-key endpoints checked with the key itself, and the
//! identity of the active credential. The key is never printed.

use crate::ctx::Ctx;
use crate::error::{exit_code_of, CliError, CliResult};
use crate::output::{format_optional, print_json, println_text, Table};
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tinkex::core::auth::{CredentialsFile, KeyRecord};
use tinkex::core::config::ConfigInput;
use tinkex::core::rest::plain;

/// The Tinker console (PROTOCOL.md 20.2).
const CONSOLE: &str = "https://tinker.thinkingmachines.ai";

/// Timeout of the API-key endpoints when `--client-config` sets none (the official CLI's).
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest API key read from the terminal or stdin.
const MAX_KEY_LEN: usize = 4096;

/// `tinkex auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Store an API key as the default credential.
    ///
    /// Prints the console page where a key is created, reads the key (hidden on a terminal,
    /// else one line of stdin), checks it with the server (GET /api/v1/auth/apikey/me) and
    /// stores it in ~/.tinker/credentials.json as the default credential.
    Login,
    /// Remove the default stored credential.
    ///
    /// A key minted for an old CLI ("generated") is also deleted on the server; a pasted
    /// key is only removed locally and stays active (the console link to delete it is
    /// printed).
    Logout,
    /// Check that a credential is available and that Tinker accepts it.
    ///
    /// Makes one request (server capabilities) without retries.
    Status,
    /// Show the user and organization of the active credential.
    ///
    /// Needs JWT authentication on the server (the identity is read from the JWT).
    Whoami,
}

/// Runs an auth command.
pub async fn run(ctx: &Ctx, cmd: AuthCommand) -> CliResult {
    match cmd {
        AuthCommand::Login => login(ctx).await,
        AuthCommand::Logout => logout(ctx).await,
        AuthCommand::Status => status(ctx).await,
        AuthCommand::Whoami => whoami(ctx).await,
    }
}

fn credentials_path() -> CliResult<PathBuf> {
    CredentialsFile::default_path().ok_or_else(|| {
        CliError::user("No home directory: cannot locate ~/.tinker/credentials.json")
            .details("Set HOME, or use TINKER_API_KEY instead of a stored key.")
    })
}

fn read_store(path: &std::path::Path) -> CliResult<CredentialsFile> {
    CredentialsFile::read(path).map_err(|e| CliError::user(e.message))
}

/// Base URL and timeout of the API-key endpoints: `--client-config`, else the environment.
fn auth_endpoint(ctx: &Ctx) -> CliResult<(String, Duration)> {
    let input: ConfigInput = match &ctx.client_config {
        Some(t) => serde_json::from_str(t).map_err(|e| {
            CliError::user(format!(
                "--client-config is not a valid configuration: {}",
                tinkex::core::sanitize::serde_message(&e)
            ))
        })?,
        None => ConfigInput::default(),
    };
    let base = plain::resolve_base_url(input.base_url.as_deref()).map_err(CliError::from)?;
    let timeout = input
        .timeouts
        .and_then(|t| t.request_ms)
        .map(Duration::from_millis)
        .unwrap_or(AUTH_TIMEOUT);
    Ok((base, timeout))
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let short = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if short.is_empty() {
        "unknown".into()
    } else {
        short
    }
}

fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A URL made clickable in terminals that understand OSC 8 (only on a terminal).
fn hyperlink(url: &str) -> String {
    if std::io::stdout().is_terminal() {
        format!("\x1b]8;;{url}\x1b\\{url}\x1b]8;;\x1b\\")
    } else {
        url.to_string()
    }
}

/// Reads the key: hidden on a terminal, else the first line of stdin.
fn read_key() -> CliResult<String> {
    let key = if std::io::stdin().is_terminal() {
        let term = console::Term::stderr();
        let _ = term.write_str("Paste your API key: ");
        term.read_secure_line()
            .map_err(|e| CliError::user(format!("cannot read the API key: {e}")))?
    } else {
        let mut line = String::new();
        let mut limited = std::io::Read::take(std::io::stdin().lock(), MAX_KEY_LEN as u64 + 2);
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut limited), &mut line)
            .map_err(|e| CliError::user(format!("cannot read the API key from stdin: {e}")))?;
        line
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(CliError::user("The API key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(CliError::user(format!(
            "The API key is longer than {MAX_KEY_LEN} bytes"
        )));
    }
    if !key.starts_with("tml-") {
        return Err(CliError::user(
            "The api_key must start with the 'tml-' prefix",
        ));
    }
    Ok(key)
}

async fn login(ctx: &Ctx) -> CliResult {
    let path = credentials_path()?;
    let mut store = read_store(&path)?;
    if store.default_key().is_some() {
        return Err(CliError::user("Already logged in")
            .details("Run 'tinkex auth logout' before logging in again."));
    }
    let (base, timeout) = auth_endpoint(ctx)?;
    let url = format!(
        "{CONSOLE}/keys?new_key=true&key_name={}",
        query_encode(&format!("tinkex-cli-{}", hostname()))
    );
    // The prompt goes to stderr so that stdout carries only the result.
    crate::output::note(&format!("Create an API Key: {}\n", hyperlink(&url)));
    let key = read_key()?;
    let info = plain::get_self_api_key(&base, &key, timeout)
        .await
        .map_err(|e| CliError {
            message: "Could not validate the API key".into(),
            details: Some(e.message.clone()),
            code: exit_code_of(&e),
        })?;
    let key_id = info.key_id.to_string();
    let details = serde_json::to_value(&info.details).ok();
    store.version = 1;
    store.keys.insert(
        key_id.clone(),
        KeyRecord::Manual {
            key,
            name: info.name.clone(),
            note: Some(info.note.clone()),
            details,
        },
    );
    store.default = Some(key_id.clone());
    store.write(&path).map_err(|e| CliError::user(e.message))?;
    let email = &info.details.user_details.email;
    let org = &info.details.org_details.name;
    if ctx.json() {
        print_json(&serde_json::json!({
            "key_id": key_id,
            "name": info.name,
            "email": email,
            "organization": org,
            "credentials_file": path.display().to_string(),
        }));
    } else {
        println_text(&format!(
            "Logged in as {email} ({org}). Stored API key '{}' as the default credential.",
            info.name
        ));
    }
    Ok(())
}

async fn logout(ctx: &Ctx) -> CliResult {
    let path = credentials_path()?;
    let mut store = read_store(&path)?;
    let Some((key_id, record)) = store
        .default
        .clone()
        .and_then(|id| store.keys.get(&id).cloned().map(|r| (id, r)))
    else {
        return Err(CliError::user("No default credential is stored")
            .details("There is nothing to log out from. Run 'tinkex auth login' to log in."));
    };
    let (name, details, generated) = match &record {
        KeyRecord::Manual { name, details, .. } => (name.clone(), details.clone(), false),
        KeyRecord::Generated { name, details, .. } => (name.clone(), Some(details.clone()), true),
    };
    let organization = details
        .as_ref()
        .and_then(|d| d.pointer("/org_details/name"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| "unknown (not stored with this credential)".into());
    let delete_error = if generated {
        let (base, timeout) = auth_endpoint(ctx)?;
        plain::delete_self_api_key(&base, record.key(), timeout)
            .await
            .err()
    } else {
        None
    };
    // Removing the key also clears the default, which pointed at it.
    store.keys.remove(&key_id);
    store.default = None;
    store.write(&path).map_err(|e| CliError::user(e.message))?;
    let console = format!("{CONSOLE}/keys/{}", query_encode(&key_id));
    let hint = format!(
        "API key organization: {organization}\nDelete api key here: {}",
        hyperlink(&console)
    );
    if let Some(e) = delete_error {
        return Err(CliError {
            message: "Could not delete the API key on the server".into(),
            details: Some(format!(
                "Removed the local credential.\nAPI key name: {name}\nAPI key ID: {key_id}\n{hint}\n{}",
                e.message
            )),
            code: exit_code_of(&e),
        });
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "removed": name,
            "key_id": key_id,
            "deleted_on_server": generated,
            "organization": organization,
            "console_url": console,
        }));
    } else if generated {
        println_text(&format!(
            "Removed credential '{name}' and deleted its API key on the server."
        ));
    } else {
        println_text(&format!(
            "Removed credential '{name}'. The API key is still active."
        ));
        println_text(&hint);
    }
    Ok(())
}

async fn status(ctx: &Ctx) -> CliResult {
    let say = |credentials: bool, accessible: Option<bool>| {
        if ctx.json() {
            print_json(&serde_json::json!({
                "credentials_available": credentials,
                "accessible": accessible,
            }));
        }
    };
    let mut config = match ctx.config() {
        Ok(c) => c,
        Err(e) => {
            say(false, None);
            if !ctx.json() {
                println_text("Credentials available: no");
            }
            return Err(
                CliError::user("No Tinker credentials are available").details(format!(
                    "Run 'tinkex auth login' or configure a Tinker credential.\n{}",
                    e.message
                )),
            );
        }
    };
    if !ctx.json() {
        println_text("Credentials available: yes");
    }
    // One request, no retry (as the official check): the error itself is the answer.
    config.retry.http_max_retries = 0;
    config.retry.max_attempts = Some(1);
    config.retry.holder_window = Duration::ZERO;
    config.retry.billing_max_pause = Duration::ZERO;
    let rest = tinkex::core::RestClient::new(config)?;
    match rest.get_server_capabilities().await {
        Ok(_) => {
            say(true, Some(true));
            if !ctx.json() {
                println_text("Tinker accessible: yes");
            }
            Ok(())
        }
        Err(e) => {
            say(true, Some(false));
            if !ctx.json() {
                println_text("Tinker accessible: no");
            }
            Err(e.into())
        }
    }
}

async fn whoami(ctx: &Ctx) -> CliResult {
    let identity = ctx.rest()?.whoami().await?;
    if ctx.json() {
        print_json(&identity);
    } else {
        let mut t = Table::new(&["Property", "Value"]);
        t.row(["Email".to_string(), format_optional(identity.email.clone())]);
        t.row(["User".to_string(), identity.user_urn.clone()]);
        t.row(["Organization".to_string(), identity.org_urn.clone()]);
        t.print();
    }
    Ok(())
}
