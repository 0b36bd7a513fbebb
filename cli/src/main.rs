//! `tinkex`: the command-line tool of libtinkex. The official `tinker` CLI's command tree
//! (SDK 0.38) on the Rust core: `auth`, `checkpoint`, `run`, `session`, `model`, `billing`,
//! `version`, with `--format table|json`. It is a session-less holder (PROTOCOL.md 3.3):
//! no command creates a session, except `checkpoint download` of a training checkpoint,
//! which — as in the official CLI — must load it into a training run to export it.
//!
//! See `docs/cli.md` for the commands, the exit codes and the differences from the
//! official CLI.

mod auth;
mod billing;
mod checkpoint;
mod ctx;
mod download;
mod error;
mod model;
mod output;
mod run;
mod session;

use clap::{Parser, Subcommand};
use ctx::Ctx;
use error::{CliError, CliResult, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use output::Format;

/// Tinker management CLI (libtinkex).
///
/// Credentials: TINKER_API_KEY, else the default key stored by `tinkex auth login` in
/// ~/.tinker/credentials.json (shared with the official `tinker` CLI), else
/// TINKER_CREDENTIAL_CMD. Server: TINKER_BASE_URL.
///
/// Exit codes: 0 success, 1 user error (invalid input, not found, refused, any other 4xx),
/// 2 bad command line, 3 service or network error (5xx, 408/429 after retries, connection,
/// timeout, malformed answer), 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "tinkex", version, propagate_version = true)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,

    /// The library's configuration as JSON (the `tinkex_service_client_new` input:
    /// timeouts, retry policy, telemetry, ...), e.g. '{"retry": {"holder_window_ms": 10000}}'.
    /// Credentials and base URL come from the environment unless set here.
    #[arg(
        long,
        env = "TINKEX_CLIENT_CONFIG",
        global = true,
        hide_env_values = true
    )]
    pub client_config: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The command tree.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage authentication credentials.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// View billing usage.
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// Manage checkpoints.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// List available models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Manage training runs.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Manage sessions.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Show version information.
    Version,
}

async fn dispatch(cli: Cli) -> CliResult {
    let ctx = Ctx {
        format: cli.format,
        client_config: cli.client_config,
    };
    match cli.command {
        Command::Auth(c) => auth::run(&ctx, c).await,
        Command::Billing(c) => billing::run(&ctx, c).await,
        Command::Checkpoint(c) => checkpoint::run(&ctx, c).await,
        Command::Model(c) => model::run(&ctx, c).await,
        Command::Run(c) => run::run(&ctx, c).await,
        Command::Session(c) => session::run(&ctx, c).await,
        Command::Version => {
            version(&ctx);
            Ok(())
        }
    }
}

fn version(ctx: &Ctx) {
    let cli = env!("CARGO_PKG_VERSION");
    if ctx.json() {
        output::print_json(&serde_json::json!({
            "tinkex": cli,
            "protocol": "tinker SDK 0.38.0",
        }));
    } else {
        output::println_text(&format!("tinkex {cli} (protocol of tinker SDK 0.38.0)"));
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version exit 0; usage errors exit 2.
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tinkex-cli")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            std::process::exit(error::EXIT_SERVICE);
        }
    };
    let handles_interrupt = matches!(&cli.command, Command::Checkpoint(c) if c.handles_interrupt());
    let result = runtime.block_on(async {
        if handles_interrupt {
            // Cleans up (temporary export, session) and returns an interrupted error itself.
            return dispatch(cli).await;
        }
        tokio::select! {
            r = dispatch(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(CliError::interrupted()),
        }
    });
    // Background work (telemetry, pools) is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let code = match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            // Ctrl-C alone ends quietly, as the official CLI does.
            if !(e.code == EXIT_INTERRUPTED && e.details.is_none()) {
                eprintln!("Error: {}", tinkex::core::sanitize::printable(&e.message));
                for line in e.details.iter().flat_map(|d| d.lines()) {
                    eprintln!("{}", tinkex::core::sanitize::printable(line));
                }
            }
            e.code
        }
    };
    std::process::exit(code);
}
