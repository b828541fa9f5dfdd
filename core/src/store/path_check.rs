//! What is at a store's path, found without changing it: a forcelogout store (by its
//! `application_id`, or by its tables for one from before it), nothing, or something else,
//! which is refused and left as it was. A look that a checkpoint tears is tried again.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{classify, on_error};
use crate::error::Error;

/// SQLite's `application_id` of a forcelogout store: "FLOG" (set by the schema's V5).
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"FLOG");
/// The tables that tell a store from before `APPLICATION_ID` (and its readers' copy, which
/// has none) from another program's database.
const STORE_TABLES: [&str; 2] = ["LogoutSchedules", "LogoutEvents"];

/// What is at a store's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the first write creates the store there.
    Missing,
    /// A zero-length file: what a first open creates before the schema, maybe right now in
    /// another process. A writer makes it the store.
    Empty,
    /// A forcelogout store (or its readers' copy), or an SQLite database with no table yet.
    Store,
}

/// What is at `path`, found without writing anything, creating anything beside it, or taking
/// a lock: a directory, a special file, a file that is not SQLite, another program's SQLite
/// database are refused as invalid input (exit 2). The header (the 16 bytes "SQLite format
/// 3\0", the application id, the schema) is read by an immutable read-only SQLite
/// connection, not a plain descriptor: closing a descriptor of a file would drop the locks
/// every SQLite connection of this process holds on it (the daemon opens the store often).
pub fn inspect(path: &Path) -> Result<Found, Error> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(Error::PermissionDenied {
                context: format!("{}: looking for the store: {e}", path.display()),
            })
        }
        Err(e) => {
            return Err(Error::io(
                format!("{}: looking for the store", path.display()),
                e,
            ))
        }
    };
    if meta.is_dir() {
        return Err(not_a_store(path, "a directory"));
    }
    if !meta.is_file() {
        return Err(not_a_store(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Ok(Found::Empty);
    }
    // An immutable look takes no lock, so it may catch pages of the file in the middle of a
    // checkpoint by another process: what it cannot read whole is looked at again, and what it
    // still cannot is left to the check on the real connection (made before anything is
    // written). Only a refusal seen each time is final.
    let mut refusal = None;
    for _ in 0..PROBE_ATTEMPTS {
        let probe = Connection::open_with_flags(
            immutable_uri(path),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(path, "looking at the store", e))?;
        match recognise(&probe, path) {
            Ok(()) => return Ok(Found::Store),
            Err(e @ Error::Invalid { .. }) => refusal = Some(e),
            Err(_) => refusal = None,
        }
        if refusal.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match refusal {
        Some(e) => Err(e),
        None => Ok(Found::Store),
    }
}

/// How often `inspect` looks before it takes a refusal as final.
const PROBE_ATTEMPTS: usize = 3;

/// Refuses what `conn` shows unless it is a forcelogout store, one from before its application
/// id (known by its tables), its readers' copy, or an SQLite database with no table yet.
pub(super) fn recognise(conn: &Connection, path: &Path) -> Result<(), Error> {
    let not_sqlite = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => not_a_store(path, "not an SQLite database"),
        _ => classify(path, "looking at the store", e),
    };
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(not_sqlite)?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        let reason = format!("another program's SQLite database (application_id {id:#010x})");
        return Err(not_a_store(path, &reason));
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(not_sqlite)?;
    if tables.is_empty() || STORE_TABLES.iter().all(|t| tables.iter().any(|n| n == t)) {
        return Ok(());
    }
    let mut named = tables
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 3 {
        named.push_str(", …");
    }
    Err(not_a_store(
        path,
        &format!("another program's SQLite database (tables {named})"),
    ))
}

/// The refusal of a path that is not a store: invalid input, naming the path and what it is.
fn not_a_store(path: &Path, what: &str) -> Error {
    Error::invalid(
        format!("store {}", path.display()),
        format!("{what}, not a forcelogout store; nothing was changed"),
    )
}

/// `path` as a URI SQLite opens read-only and immutable: no lock, no journal or WAL looked
/// for or created. Only for a first look: it sees the database file without its WAL.
/// Every byte of the path but the plainest is escaped, so any path (not UTF-8, with `?`, `#`
/// or `%`) names the same file; an absolute one after an empty authority (`file:///`), so
/// that a path starting with `//` is not taken for one.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let mut uri = String::from(if bytes.starts_with(b"/") {
        "file://"
    } else {
        "file:"
    });
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

/// Opens an existing store read-only. On a read-only file system SQLite cannot make the WAL's
/// shared memory; with `fallback`, where neither it nor a WAL with content is there (no
/// connection has the store open: a live one keeps its shared memory), the database file
/// holds everything and is opened immutable instead.
pub(super) fn open_read_only(
    path: &Path,
    busy_timeout: Duration,
    fallback: bool,
) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(on_error(path, "opening the store"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(on_error(path, "setting the busy timeout"))?;
    let readable = conn.query_row("PRAGMA schema_version", [], |_| Ok(()));
    match readable {
        Ok(()) => Ok(conn),
        Err(_) if fallback && on_read_only_fs(path) && wal_files_idle(path) => {
            drop(conn);
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(on_error(
                    path,
                    "opening the store on a read-only file system",
                ))
        }
        Err(e) => Err(classify(path, "opening the store", e)),
    }
}

pub(super) fn on_read_only_fs(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// No shared-memory file, and no WAL or an empty one.
fn wal_files_idle(path: &Path) -> bool {
    let beside = |suffix: &str| {
        let mut file = path.as_os_str().to_os_string();
        file.push(suffix);
        std::fs::metadata(file)
    };
    beside("-shm").is_err() && beside("-wal").map_or(true, |m| m.len() == 0)
}
