//! The CLI's error: a message, optional details and an exit code that tells a user error from
//! a service or network error (see `docs/cli.md`, "Exit codes").

use tinkex::core::{Error, ErrorKind};

/// Success.
pub const EXIT_OK: i32 = 0;
/// The request cannot succeed as given: invalid input, not found, permission or
/// authentication refused, billing, any other 4xx answer, or a local file problem.
pub const EXIT_USER: i32 = 1;
/// Bad command line (unknown command or option, missing or invalid argument): clap's code,
/// as with the official CLI (click also exits with 2).
pub const EXIT_USAGE: i32 = 2;
/// The service or the network failed: 5xx, 408 or 429 after the retries, a connection or
/// TLS failure, a timeout, a malformed answer. Trying again later may succeed.
pub const EXIT_SERVICE: i32 = 3;
/// Interrupted (Ctrl-C), the shell's convention (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    /// Printed after `Error: `.
    pub message: String,
    /// Printed on the next lines, when present.
    pub details: Option<String>,
    /// The process exit code.
    pub code: i32,
}

impl CliError {
    /// A user error (exit 1).
    pub fn user(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            details: None,
            code: EXIT_USER,
        }
    }

    /// A service or network error (exit 3).
    pub fn service(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            details: None,
            code: EXIT_SERVICE,
        }
    }

    /// Interrupted by the user (exit 130).
    pub fn interrupted() -> Self {
        CliError {
            message: "Interrupted".into(),
            details: None,
            code: EXIT_INTERRUPTED,
        }
    }

    /// Adds details.
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }
}

/// The exit code of a core error: 4xx (but 408/429) and the client's own checks are user
/// errors; 5xx, 408, 429, transport failures, timeouts and malformed answers are service
/// errors.
pub fn exit_code_of(e: &Error) -> i32 {
    if e.kind == ErrorKind::Cancelled {
        return EXIT_INTERRUPTED;
    }
    match e.http_status {
        Some(408 | 429) => EXIT_SERVICE,
        Some(s) if (400..500).contains(&s) => EXIT_USER,
        Some(s) if s >= 500 => EXIT_SERVICE,
        _ => match e.kind {
            ErrorKind::User | ErrorKind::Auth | ErrorKind::Billing | ErrorKind::Expired => {
                EXIT_USER
            }
            _ => EXIT_SERVICE,
        },
    }
}

impl From<Error> for CliError {
    /// The official CLI's wording per failure class, with the library's message as details.
    fn from(e: Error) -> Self {
        let detail = format!("Details: {}", e.message);
        let (message, hint): (String, Option<&str>) = match (e.http_status, e.kind) {
            (Some(404), _) => ("Resource not found".into(), None),
            (Some(401), _) | (None, ErrorKind::Auth) => (
                "Authentication failed".into(),
                Some("Please check your API key or authentication credentials."),
            ),
            (Some(403), _) => (
                "Permission denied".into(),
                Some("You don't have permission to access this resource."),
            ),
            (Some(402), _) | (None, ErrorKind::Billing) => (
                "Billing issue".into(),
                Some("There is a billing issue with your account. Please check that billing is set up."),
            ),
            (Some(400), _) => ("Invalid request".into(), None),
            (Some(422), _) => ("Invalid data provided".into(), None),
            (Some(429), _) => (
                "Rate limit exceeded".into(),
                Some("Please wait a moment before trying again."),
            ),
            (Some(s), _) if s >= 500 => (
                "Internal server error".into(),
                Some("The Tinker API encountered an internal error. Please try again later."),
            ),
            (Some(s), _) => (format!("API error (status {s})"), None),
            (None, ErrorKind::Timeout) => (
                "Request timeout".into(),
                Some("The request to Tinker API timed out. Please try again."),
            ),
            (None, ErrorKind::Cancelled) => ("Interrupted".into(), None),
            (None, ErrorKind::User) => {
                return CliError {
                    message: e.message.clone(),
                    details: None,
                    code: exit_code_of(&e),
                }
            }
            (None, _) if e.transport.is_some() => (
                "Connection failed".into(),
                Some("Could not connect to the Tinker API. Please check your network connection."),
            ),
            (None, _) => ("API error occurred".into(), None),
        };
        let details = match hint {
            Some(h) => format!("{h}\n{detail}"),
            None => detail,
        };
        CliError {
            message,
            details: Some(details),
            code: exit_code_of(&e),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::user(e.to_string())
    }
}

/// The result of a command.
pub type CliResult<T = ()> = std::result::Result<T, CliError>;
