//! `forcelogout.so`, a SQLite loadable extension: `.load /usr/lib/sqlite3/forcelogout` gives the
//! store's tables, read-only, and the functions `decode_days`, `encode_days`, `days_includes`
//! and `next_logout`. The entry point is one line; `register` does the work.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod functions;

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use forcelogout_core::store::{attach, DB_ENV, DEFAULT_DB_PATH};
use rusqlite::{ffi, Connection};

/// The entry point `sqlite3` looks for when loading `forcelogout` or `libforcelogout`.
///
/// # Safety
/// Called by SQLite with a live connection, an error-message out-pointer and its API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_forcelogout_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite's own arguments, forwarded; rusqlite does not catch panics here, so the
    // whole init runs inside catch_unwind.
    catch_unwind(AssertUnwindSafe(|| unsafe {
        Connection::extension_init2(db, pz_err_msg, p_api, register)
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

/// Registers the functions, then attaches the store: the one named by `FORCELOGOUT_DB` (which
/// must exist), else the default one if it exists. Without a store the functions still load.
/// A user the live store refuses but its readers' copy does not (the reader group) gets the
/// copy, silently.
fn register(conn: Connection) -> rusqlite::Result<bool> {
    functions::register(&conn)?;
    let (path, explicit) = match std::env::var_os(DB_ENV) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_DB_PATH), false),
    };
    if explicit || path.exists() {
        attach::attach_for_reader(&conn, &path).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some(format!("forcelogout: {e}")),
            )
        })?;
    }
    Ok(false)
}
