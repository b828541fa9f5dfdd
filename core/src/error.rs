//! One error type for the whole product. Adapters map it: the CLI to "forcelogoutctl: …" and an
//! exit code, the PAM module to syslog and a PAM code, the SQLite extension to an SQL error.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// Bad input from a person or a file: names the field. Exit code 2.
    Invalid { field: String, reason: String },
    /// The caller may not do this (not root, store not writable). Exit code 4.
    PermissionDenied { context: String },
    /// The store failed: names the path and SQLite's cause. Exit code 1.
    Store {
        path: PathBuf,
        context: &'static str,
        cause: rusqlite::Error,
    },
    /// Any other operating-system failure. Exit code 1.
    Io {
        context: String,
        cause: std::io::Error,
    },
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_DENIED: i32 = 4;

/// `forcelogoutctl`'s exit statuses and what each means: the one table the code's
/// `Error::exit_code` and the manual pages' EXIT STATUS are made from.
pub const EXIT_STATUS: [(i32, &str); 4] = [
    (EXIT_OK, "success"),
    (
        EXIT_FAILURE,
        "runtime failure: the store could not be read or written, the daemon or the fleet's database could not be reached, or ignore found no warning running",
    ),
    (
        EXIT_INVALID,
        "invalid input: one line on standard error names the bad argument, file entry or configuration key; nothing was written",
    ),
    (
        EXIT_DENIED,
        "permission denied: the caller may not do this (not root or in admin_group), may not open the store, or asked to ignore a kick",
    ),
];

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn store(path: &Path, context: &'static str, cause: rusqlite::Error) -> Error {
        Error::Store {
            path: path.to_path_buf(),
            context,
            cause,
        }
    }

    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    /// The store was locked by another connection for longer than the busy timeout allowed
    /// (or SQLite refused at once to wait, to break a lock cycle): worth trying again later.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Error::Store { cause, .. } if matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
            )
        )
    }

    /// The documented exit code of `forcelogoutctl` (see `EXIT_STATUS`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } => EXIT_INVALID,
            Error::PermissionDenied { .. } => EXIT_DENIED,
            Error::Store { .. } | Error::Io { .. } => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            Error::PermissionDenied { context } => write!(f, "permission denied: {context}"),
            Error::Store {
                path,
                context,
                cause,
            } => write!(f, "{}: {context}: {cause}", path.display()),
            Error::Io { context, cause } => write!(f, "{context}: {cause}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store { cause, .. } => Some(cause),
            Error::Io { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

#[cfg(test)]
mod exit_status_tests {
    use super::*;

    #[test]
    fn every_error_exits_with_a_documented_status() {
        let documented: Vec<i32> = EXIT_STATUS.iter().map(|(code, _)| *code).collect();
        let errors = [
            Error::invalid("at", "bad"),
            Error::PermissionDenied {
                context: "x".into(),
            },
            Error::io("x", std::io::Error::other("x")),
        ];
        for error in errors {
            assert!(documented.contains(&error.exit_code()), "{error}");
        }
    }
}
