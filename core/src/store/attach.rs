//! The store seen from another SQLite connection (the `sqlite3` shell with the extension
//! loaded): attached read-only, with TEMP views under the store's own names. Simple views are
//! flattened by SQLite, so constraints on them use the store's indexes. A user who may not open
//! the live store but may open its readers' copy (the reader group) is given the copy.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::reader_copy;
use crate::error::Error;

/// The schema name the extension attaches the store under.
pub const ATTACHED_SCHEMA: &str = "forcelogout";

/// The names a `sqlite3` user queries, and what each shows.
pub const VIEWS: [(&str, &str); 4] = [
    ("LogoutEvents", "LogoutEvents"),
    ("LogoutSchedules", "LogoutSchedules"),
    ("LogoutSchedulesCurrent", "LogoutSchedulesCurrent"),
    ("LogoutSessions", "LogoutSessions"),
];

/// Attaches the store at `path` read-only as `forcelogout` and creates the TEMP views. The
/// attachment never writes and, in WAL mode, never blocks a writer.
pub fn attach_read_only(conn: &Connection, path: &Path) -> Result<(), Error> {
    let uri = read_only_uri(path);
    conn.execute("ATTACH DATABASE ?1 AS forcelogout", [&uri])
        .map_err(|e| Error::store(path, "attaching the store read-only", e))?;
    for (view, source) in VIEWS {
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW IF NOT EXISTS {view} AS SELECT * FROM {ATTACHED_SCHEMA}.{source}"
        ))
        .map_err(|e| Error::store(path, "creating the views", e))?;
    }
    Ok(())
}

/// How long a reader of the readers' copy waits while the daemon commits to it (a few
/// milliseconds at a time), when its connection had no busy timeout: rather than an error.
const COPY_READER_BUSY_TIMEOUT_MS: i64 = 2000;

/// Attaches, for a reader of the store at `path`, the live store when this process may open it,
/// else its readers' copy (see `reader_copy::path_for_reading`); returns the file attached.
pub fn attach_for_reader(conn: &Connection, path: &Path) -> Result<PathBuf, Error> {
    let source = reader_copy::path_for_reading(path);
    attach_read_only(conn, &source)?;
    if source != path {
        // In rollback-journal mode a reader meets the copy's writer's lock while it commits.
        let current: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .map_err(|e| Error::store(&source, "reading the busy timeout", e))?;
        if current == 0 {
            conn.pragma_update(None, "busy_timeout", COPY_READER_BUSY_TIMEOUT_MS)
                .map_err(|e| Error::store(&source, "setting the busy timeout", e))?;
        }
    }
    Ok(source)
}

/// `file:` URI of `path` opened read-only; `%`, `?` and `#` are escaped.
pub(super) fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_what_uris_mean() {
        assert_eq!(
            read_only_uri(Path::new("/var/lib/x.db")),
            "file:/var/lib/x.db?mode=ro"
        );
        assert_eq!(
            read_only_uri(Path::new("/tmp/a?b#c%d")),
            "file:/tmp/a%3fb%23c%25d?mode=ro"
        );
    }
}
