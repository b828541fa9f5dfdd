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

    /// The documented exit code of `forcelogoutctl` (SPEC §6.2).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } => 2,
            Error::PermissionDenied { .. } => 4,
            Error::Store { .. } | Error::Io { .. } => 1,
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
