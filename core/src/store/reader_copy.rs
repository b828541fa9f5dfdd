//! The readers' copy: `readers/<store file>` beside the store, what members of the reader group
//! read instead of the live store. Whoever may open a file of a SQLite database may hold a read
//! lock on its lock bytes (a read-only descriptor suffices), and such a lock on the live store's
//! would stop every write; so the live files are root's alone, and readers get this copy, which
//! only the daemon's copy thread writes. A reader holding the copy's locks delays the copy, and
//! nothing else.
//!
//! The copy is in rollback-journal mode (a read-only reader needs nothing but read access, even
//! with the daemon down), has the store's public tables, view and indexes as the store's own
//! migrations create them, none of its internal tables, and a position table of its own, so that
//! a restarted daemon resumes where it was. A copy whose positions do not match the store (a
//! store replaced) is rebuilt from scratch.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};

use super::{attach, on_error, schema, READER_GROUP};
use crate::error::Error;

/// The copy's directory, inside the store's: its own writes wake nobody who watches the store's.
pub const READERS_DIR: &str = "readers";
/// How long the copy's writer waits for a reader of the copy: it only delays the copy, so the
/// thread rather retries later than waits long.
pub const COPY_BUSY_TIMEOUT: Duration = Duration::from_millis(100);
/// The copy's page caches, for the copy and for the attached store: 256 KiB each.
const COPY_PAGE_CACHE: &str = "PRAGMA main.cache_size = -256; PRAGMA live.cache_size = -256;";
/// How often a sync also compares the copy's events with the store's whole (a prune that left
/// the first event in place is otherwise seen only when the first event goes).
const WHOLE_CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The public tables; the view `LogoutSchedulesCurrent` comes with `LogoutSchedules`.
const TABLES: [&str; 3] = ["LogoutSchedules", "LogoutEvents", "LogoutSessions"];

/// The copy's own bookkeeping: the last event and schedule version it holds. The event's
/// identifier tells a store that was replaced from one that pruned that event.
const POSITIONS: &str = r#"
CREATE TABLE ReaderCopyPositions (
    Singleton       INTEGER PRIMARY KEY CHECK (Singleton = 1),
    ReplayId        INTEGER NOT NULL,
    EventIdentifier TEXT,
    ScheduleRowid   INTEGER NOT NULL
);
INSERT INTO ReaderCopyPositions VALUES (1, 0, NULL, 0);
"#;

/// The readers' copy of the store at `store`: `<store dir>/readers/<store file name>`.
pub fn reader_copy_path(store: &Path) -> PathBuf {
    let dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = store.file_name().unwrap_or("forcelogout.db".as_ref());
    dir.join(READERS_DIR).join(name)
}

/// The file a reader of the store at `store` opens: the store itself when this process may open
/// its files, else the readers' copy when the store refuses it (EACCES) and the copy does not.
/// Otherwise the store, so that the refusal is the store's, as it always was.
pub fn path_for_reading(store: &Path) -> PathBuf {
    let live_refused = [
        store.to_path_buf(),
        sibling(store, "-wal"),
        sibling(store, "-shm"),
    ]
    .iter()
    .any(|file| open_refused(file) == Some(true));
    let copy = reader_copy_path(store);
    if live_refused && open_refused(&copy) == Some(false) {
        copy
    } else {
        store.to_path_buf()
    }
}

/// Whether this process is refused reading `file`, by its effective ids (a setuid root PAM
/// caller reads the live store); `None` when it is missing or the check fails otherwise. Asked
/// of the kernel without opening the file: closing a descriptor of a file drops every POSIX
/// lock this process holds on it, and this process may have the store open (the daemon, a
/// `sqlite3` shell loading the extension).
fn open_refused(file: &Path) -> Option<bool> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{faccessat, AccessFlags};
    match faccessat(None, file, AccessFlags::R_OK, AtFlags::AT_EACCESS) {
        Ok(()) => Some(false),
        Err(nix::errno::Errno::EACCES) => Some(true),
        Err(_) => None,
    }
}

/// `store` with `suffix` appended to its file name (`-wal`, `-shm`, `-journal`).
fn sibling(store: &Path, suffix: &str) -> PathBuf {
    let mut name = store.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether `error` is SQLite's "busy" or "locked": a reader of the copy holds its lock, so the
/// sync is tried again later.
pub fn is_busy(error: &Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error,
        Error::Store { cause, .. } if matches!(
            cause.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    )
}

/// What one sync changed in the copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// The copy was emptied first: its positions did not match the store.
    pub rebuilt: bool,
    pub events: usize,
    pub schedules: usize,
    /// Events gone from the store (a prune) removed from the copy.
    pub pruned: usize,
    /// LogoutSessions differed and was replaced.
    pub sessions: bool,
}

impl Synced {
    /// Whether the sync wrote to the copy at all.
    pub fn wrote(&self) -> bool {
        *self != Synced::default()
    }
}

/// The copy's positions (its table `ReaderCopyPositions`).
#[derive(Clone, Debug, Default)]
struct Positions {
    replay_id: i64,
    event_identifier: Option<String>,
    schedule_rowid: i64,
}

/// What the copy reads of the store, in the sync's snapshot of it.
#[derive(Clone, Copy, Debug, Default)]
struct LiveEnds {
    first_replay_id: Option<i64>,
    last_replay_id: i64,
    /// The largest ReplayId the store ever gave (AUTOINCREMENT's counter): it never goes
    /// down, even when events are pruned.
    replay_counter: i64,
    last_schedule_rowid: i64,
}

/// A connection whose main database is the copy (read-write) and that has the live store
/// attached read-only as `live`: it never takes a lock on the live store a writer waits for.
pub struct ReaderCopy {
    conn: Connection,
    store: PathBuf,
    copy: PathBuf,
    statements: Statements,
    whole_checked: Option<Instant>,
}

/// The copying statements, with the copy's column lists spelled out.
struct Statements {
    events: String,
    schedules: String,
    sessions_differ: String,
    sessions: String,
}

impl ReaderCopy {
    /// Opens (creating, or re-creating when it is not a copy this build can keep) the readers'
    /// copy of the store at `store`, with the modes readers need; attaches the store.
    pub fn open(store: &Path) -> Result<ReaderCopy, Error> {
        let copy = reader_copy_path(store);
        prepare_readers_dir(store, &copy)?;
        let conn = match open_copy(&copy) {
            Ok(conn) => conn,
            Err(e) if is_busy(&e) => return Err(e),
            Err(_) => {
                create_copy(&copy)?;
                open_copy(&copy)?
            }
        };
        own_copy(&copy)?;
        let uri = attach::read_only_uri(store);
        conn.execute("ATTACH DATABASE ?1 AS live", [&uri])
            .map_err(|e| Error::store(store, "attaching the store to its readers' copy", e))?;
        // A sync streams rows once: SQLite's default 2 MB per database would keep the last
        // 2 MB read of the store and 2 MB written of the copy in the daemon for nothing.
        conn.execute_batch(COPY_PAGE_CACHE)
            .map_err(|e| Error::store(&copy, "setting the page caches' size", e))?;
        let statements =
            Statements::new(&conn).map_err(|e| Error::store(&copy, "reading its columns", e))?;
        Ok(ReaderCopy {
            conn,
            store: store.to_path_buf(),
            copy,
            statements,
            whole_checked: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.copy
    }

    /// Brings the copy up to the store's current state in one transaction on the copy; writes
    /// nothing when nothing changed. A reader holding the copy's lock makes this fail with a
    /// busy error (`is_busy`) within `COPY_BUSY_TIMEOUT`, and the copy stays as it was.
    pub fn sync(&mut self) -> Result<Synced, Error> {
        let whole = self
            .whole_checked
            .is_none_or(|at| at.elapsed() >= WHOLE_CHECK_EVERY);
        let copy = &self.copy;
        let fail = |context| on_error(copy, context);
        let tx = self.conn.transaction().map_err(fail("starting a sync"))?;
        check_live_version(&tx, &self.store)?;
        let live = LiveEnds::read(&tx).map_err(fail("reading the store"))?;
        let mut positions = Positions::read(&tx).map_err(fail("reading its positions"))?;
        let mut synced = Synced::default();
        if !positions
            .match_store(&tx, &live)
            .map_err(fail("checking its positions"))?
        {
            clear(&tx).map_err(fail("clearing it"))?;
            positions = Positions::default();
            synced.rebuilt = true;
        }
        self.statements
            .copy_new(&tx, &live, &mut positions, &mut synced)
            .map_err(fail("copying new rows"))?;
        synced.pruned = follow_prunes(&tx, &live, whole).map_err(fail("following a prune"))?;
        synced.sessions = self
            .statements
            .copy_sessions(&tx)
            .map_err(fail("copying the sessions"))?;
        if synced.wrote() {
            positions
                .write(&tx)
                .map_err(fail("writing its positions"))?;
        }
        tx.commit().map_err(fail("committing a sync"))?;
        if whole {
            self.whole_checked = Some(Instant::now());
        }
        Ok(synced)
    }
}

impl Statements {
    fn new(conn: &Connection) -> rusqlite::Result<Statements> {
        let columns = |table: &str| -> rusqlite::Result<String> {
            let names: Vec<String> = conn
                .prepare("SELECT name FROM main.pragma_table_info(?1) ORDER BY cid")?
                .query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(names
                .iter()
                .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(", "))
        };
        let (schedules, events, sessions) = (
            columns(TABLES[0])?,
            columns(TABLES[1])?,
            columns(TABLES[2])?,
        );
        Ok(Statements {
            events: format!(
                "INSERT INTO main.LogoutEvents ({events}) SELECT {events} FROM live.LogoutEvents \
                 WHERE ReplayId > ?1 ORDER BY ReplayId"
            ),
            // The rowids too: LogoutSchedulesCurrent picks each Id's version by rowid.
            schedules: format!(
                "INSERT INTO main.LogoutSchedules (rowid, {schedules}) \
                 SELECT rowid, {schedules} FROM live.LogoutSchedules WHERE rowid > ?1 ORDER BY rowid"
            ),
            sessions_differ: format!(
                "SELECT EXISTS (SELECT {sessions} FROM live.LogoutSessions \
                                EXCEPT SELECT {sessions} FROM main.LogoutSessions) \
                     OR EXISTS (SELECT {sessions} FROM main.LogoutSessions \
                                EXCEPT SELECT {sessions} FROM live.LogoutSessions)"
            ),
            sessions: format!(
                "DELETE FROM main.LogoutSessions; \
                 INSERT INTO main.LogoutSessions ({sessions}) SELECT {sessions} FROM live.LogoutSessions"
            ),
        })
    }

    /// Copies the events and schedule versions after the positions; moves the positions.
    fn copy_new(
        &self,
        tx: &Transaction,
        live: &LiveEnds,
        positions: &mut Positions,
        synced: &mut Synced,
    ) -> rusqlite::Result<()> {
        if live.last_replay_id > positions.replay_id {
            synced.events = tx.execute(&self.events, [positions.replay_id])?;
            positions.replay_id = live.last_replay_id;
            positions.event_identifier = tx
                .query_row(
                    "SELECT EventIdentifier FROM main.LogoutEvents WHERE ReplayId = ?1",
                    [live.last_replay_id],
                    |r| r.get(0),
                )
                .optional()?;
        }
        if live.last_schedule_rowid > positions.schedule_rowid {
            synced.schedules = tx.execute(&self.schedules, [positions.schedule_rowid])?;
            positions.schedule_rowid = live.last_schedule_rowid;
        }
        Ok(())
    }

    /// Replaces the copy's sessions when they differ from the store's (a few rows: comparing
    /// them whole is cheaper than keeping track).
    fn copy_sessions(&self, tx: &Transaction) -> rusqlite::Result<bool> {
        let differ: bool = tx.query_row(&self.sessions_differ, [], |r| r.get(0))?;
        if differ {
            tx.execute_batch(&self.sessions)?;
        }
        Ok(differ)
    }
}

/// The store's first and last events. Each end in a subquery of its own: SQLite finds a lone
/// min() or max() at one end of the index, but scans the whole table for both at once (22 ms
/// at 200,000 events, at every sync).
const LIVE_EVENT_ENDS: &str = "SELECT (SELECT min(ReplayId) FROM live.LogoutEvents), \
     (SELECT max(ReplayId) FROM live.LogoutEvents)";

impl LiveEnds {
    fn read(tx: &Transaction) -> rusqlite::Result<LiveEnds> {
        let (first_replay_id, last_replay_id): (Option<i64>, Option<i64>) =
            tx.query_row(LIVE_EVENT_ENDS, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let replay_counter: Option<i64> = tx
            .query_row(
                "SELECT seq FROM live.sqlite_sequence WHERE name = 'LogoutEvents'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let last_schedule_rowid: Option<i64> =
            tx.query_row("SELECT max(rowid) FROM live.LogoutSchedules", [], |r| {
                r.get(0)
            })?;
        let last_replay_id = last_replay_id.unwrap_or(0);
        Ok(LiveEnds {
            first_replay_id,
            last_replay_id,
            replay_counter: replay_counter.unwrap_or(0).max(last_replay_id),
            last_schedule_rowid: last_schedule_rowid.unwrap_or(0),
        })
    }
}

impl Positions {
    fn read(tx: &Transaction) -> rusqlite::Result<Positions> {
        tx.query_row(
            "SELECT ReplayId, EventIdentifier, ScheduleRowid FROM main.ReaderCopyPositions",
            [],
            |r| {
                Ok(Positions {
                    replay_id: r.get(0)?,
                    event_identifier: r.get(1)?,
                    schedule_rowid: r.get(2)?,
                })
            },
        )
    }

    fn write(&self, tx: &Transaction) -> rusqlite::Result<()> {
        tx.execute(
            "UPDATE main.ReaderCopyPositions SET ReplayId = ?1, EventIdentifier = ?2, ScheduleRowid = ?3",
            rusqlite::params![self.replay_id, self.event_identifier, self.schedule_rowid],
        )?;
        Ok(())
    }

    /// Whether the store is the one the copy was made from: its last copied event is still
    /// there with the same identifier (or was pruned: the store's counter went past it), and its
    /// last copied schedule version is still there (schedules are never deleted).
    fn match_store(&self, tx: &Transaction, live: &LiveEnds) -> rusqlite::Result<bool> {
        let events_match = self.replay_id == 0 || {
            let identifier: Option<String> = tx
                .query_row(
                    "SELECT EventIdentifier FROM live.LogoutEvents WHERE ReplayId = ?1",
                    [self.replay_id],
                    |r| r.get(0),
                )
                .optional()?;
            match identifier {
                Some(id) => Some(id) == self.event_identifier,
                None => live.replay_counter >= self.replay_id,
            }
        };
        let schedules_match = self.schedule_rowid == 0
            || tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM live.LogoutSchedules l JOIN main.LogoutSchedules c \
                 ON c.rowid = l.rowid WHERE l.rowid = ?1 \
                 AND l.Id = c.Id AND l.UpdateTime = c.UpdateTime AND l.Event = c.Event)",
                [self.schedule_rowid],
                |r| r.get(0),
            )?;
        Ok(events_match && schedules_match)
    }
}

/// Refuses a store whose schema is not this build's: the copy's columns are this build's.
fn check_live_version(tx: &Transaction, store: &Path) -> Result<(), Error> {
    let version: i64 = tx
        .query_row("PRAGMA live.user_version", [], |r| r.get(0))
        .map_err(|e| Error::store(store, "reading the schema version", e))?;
    if usize::try_from(version).ok() == Some(schema::MIGRATIONS.len()) {
        return Ok(());
    }
    Err(Error::io(
        format!(
            "{}: schema version {version}, the readers' copy is of version {}",
            store.display(),
            schema::MIGRATIONS.len()
        ),
        std::io::Error::from(ErrorKind::InvalidData),
    ))
}

/// Empties the copy, for a rebuild from scratch.
fn clear(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DELETE FROM main.LogoutEvents; DELETE FROM main.LogoutSchedules; \
         DELETE FROM main.LogoutSessions;",
    )
}

/// Removes from the copy the events the store no longer has. A prune deletes the oldest
/// first, so a first event that moved says there was one (cheap: both ends are index
/// lookups); `whole` also compares the counts, and either way a remaining difference is
/// settled event by event.
fn follow_prunes(tx: &Transaction, live: &LiveEnds, whole: bool) -> rusqlite::Result<usize> {
    let copy_first: Option<i64> =
        tx.query_row("SELECT min(ReplayId) FROM main.LogoutEvents", [], |r| {
            r.get(0)
        })?;
    if copy_first == live.first_replay_id && !whole {
        return Ok(0);
    }
    let mut pruned = match live.first_replay_id {
        Some(first) => tx.execute("DELETE FROM main.LogoutEvents WHERE ReplayId < ?1", [first])?,
        None => tx.execute("DELETE FROM main.LogoutEvents", [])?,
    };
    let count = |schema: &str| -> rusqlite::Result<i64> {
        tx.query_row(
            &format!("SELECT count(*) FROM {schema}.LogoutEvents"),
            [],
            |r| r.get(0),
        )
    };
    if count("main")? != count("live")? {
        pruned += tx.execute(
            "DELETE FROM main.LogoutEvents WHERE NOT EXISTS \
             (SELECT 1 FROM live.LogoutEvents AS l WHERE l.ReplayId = LogoutEvents.ReplayId)",
            [],
        )?;
    }
    Ok(pruned)
}

/// The copy's schema: the store's public tables, their indexes and the view, as the store's own
/// migrations create them (so the columns, their order and the indexes are the store's), without
/// the triggers or the internal tables.
fn copy_schema() -> rusqlite::Result<Vec<String>> {
    let conn = Connection::open_in_memory()?;
    for migration in schema::MIGRATIONS {
        conn.execute_batch(migration)?;
    }
    let mut names: Vec<&str> = TABLES.to_vec();
    names.extend(attach::VIEWS.iter().map(|(view, _)| *view));
    let placeholders = vec!["?"; names.len()].join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT sql FROM sqlite_master WHERE type IN ('table', 'index', 'view') \
         AND tbl_name IN ({placeholders}) AND sql IS NOT NULL ORDER BY rowid"
    ))?;
    let sql = stmt
        .query_map(rusqlite::params_from_iter(names), |r| r.get(0))?
        .collect();
    sql
}

/// Opens an existing copy read-write and checks that it is one this build keeps.
fn open_copy(copy: &Path) -> Result<Connection, Error> {
    let fail = |context| on_error(copy, context);
    if !copy.exists() {
        return Err(Error::io(
            format!("{}: opening the readers' copy", copy.display()),
            std::io::Error::from(ErrorKind::NotFound),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(copy, flags).map_err(fail("opening the readers' copy"))?;
    conn.busy_timeout(COPY_BUSY_TIMEOUT)
        .map_err(fail("setting the busy timeout"))?;
    // The store's WAL stays as it is when this connection closes, as with every other.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(fail("keeping the WAL on close"))?;
    let (version, mode): (i64, String) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), \
                    (SELECT journal_mode FROM pragma_journal_mode)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(fail("reading the readers' copy"))?;
    conn.query_row("SELECT count(*) FROM main.ReaderCopyPositions", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(fail("reading the readers' copy's positions"))?;
    if usize::try_from(version).ok() != Some(schema::MIGRATIONS.len()) || mode != "delete" {
        return Err(Error::io(
            format!(
                "{}: a readers' copy of schema version {version} in {mode} mode",
                copy.display()
            ),
            std::io::Error::from(ErrorKind::InvalidData),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail("setting synchronous=FULL"))?;
    Ok(conn)
}

/// Creates an empty copy beside `copy` and renames it into place: a reader sees the old copy
/// or the new one, never half of one.
fn create_copy(copy: &Path) -> Result<(), Error> {
    let name = copy.file_name().unwrap_or_default().to_string_lossy();
    let fresh = copy.with_file_name(format!(".{name}.new"));
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", fresh.display()), e);
    for stale in [fresh.clone(), sibling(&fresh, "-journal")] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(io("removing", e)),
            _ => {}
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&fresh)
        .map_err(|e| io("creating", e))?;
    own_file(&file).map_err(|e| io("setting the owner and mode of", e))?;
    drop(file);
    let fail = |context| on_error(&fresh, context);
    let mut conn = Connection::open_with_flags(
        &fresh,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail("opening"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(fail("setting the journal mode"))?;
    debug_assert_eq!(mode, "delete");
    let schema = copy_schema().map_err(fail("building the schema"))?;
    let tx = conn.transaction().map_err(fail("starting"))?;
    for sql in schema {
        tx.execute_batch(&sql)
            .map_err(fail("creating the schema"))?;
    }
    tx.execute_batch(POSITIONS)
        .map_err(fail("creating the positions"))?;
    tx.pragma_update(None, "user_version", schema::MIGRATIONS.len() as i64)
        .map_err(fail("setting the schema version"))?;
    tx.commit().map_err(fail("committing the schema"))?;
    drop(conn);
    // A journal the old copy left (a daemon killed mid-sync) must not be played into this one.
    match std::fs::remove_file(sibling(copy, "-journal")) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(io("removing the old journal of", e))
        }
        _ => {}
    }
    std::fs::rename(&fresh, copy).map_err(|e| io("renaming into place", e))
}

/// The reader group's gid, when it exists.
fn reader_gid() -> Option<u32> {
    nix::unistd::Group::from_name(READER_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A file of the copy: 0640, and when we are root, owned by root and the reader group.
fn own_file(file: &std::fs::File) -> std::io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(file, Some(0), reader_gid())?;
    }
    Ok(())
}

/// The copy as readers need it, whatever changed it since (systemd's `StateDirectory=` hands
/// the whole directory to root:root at each start). By path: a descriptor of it closed would
/// drop the locks of this process's connection (see `open_refused`).
fn own_copy(copy: &Path) -> Result<(), Error> {
    let io = |e| {
        Error::io(
            format!("setting the owner and mode of {}", copy.display()),
            e,
        )
    };
    let meta = std::fs::metadata(copy).map_err(io)?;
    if meta.mode() & 0o7777 != 0o640 {
        std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o640)).map_err(io)?;
    }
    let gid = reader_gid();
    if nix::unistd::geteuid().is_root() && (meta.uid() != 0 || gid.is_some_and(|g| meta.gid() != g))
    {
        std::os::unix::fs::chown(copy, Some(0), gid).map_err(io)?;
    }
    Ok(())
}

/// Creates the readers' directory (0750, root and the reader group when we are root) and sets
/// it so again when something else changed it: members of the reader group must reach the copy.
/// The store's directory is left as it is, unless it is exactly what systemd's
/// `StateDirectory=` makes of it at each start of the unit (0750 root:root), which would keep
/// them out: its group goes back to the reader group, as the packages and `prepare_files` make it.
fn prepare_readers_dir(store: &Path, copy: &Path) -> Result<(), Error> {
    let Some(readers) = copy.parent() else {
        return Ok(());
    };
    let io = |what: &str, dir: &Path, e: std::io::Error| {
        Error::io(format!("{what} {}", dir.display()), e)
    };
    match DirBuilder::new().mode(0o750).create(readers) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            return Err(io("creating the readers' directory", readers, e))
        }
        _ => {}
    }
    let (true, Some(gid)) = (nix::unistd::geteuid().is_root(), reader_gid()) else {
        return Ok(());
    };
    let meta = std::fs::metadata(readers).map_err(|e| io("reading", readers, e))?;
    if meta.uid() != 0 || meta.gid() != gid {
        std::os::unix::fs::chown(readers, Some(0), Some(gid))
            .map_err(|e| io("setting the owner of", readers, e))?;
    }
    if meta.mode() & 0o7777 != 0o750 {
        std::fs::set_permissions(readers, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| io("setting the mode of", readers, e))?;
    }
    let store_dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = std::fs::metadata(store_dir).map_err(|e| io("reading", store_dir, e))?;
    if meta.mode() & 0o7777 == 0o750 && meta.uid() == 0 && meta.gid() == 0 {
        std::os::unix::fs::chown(store_dir, None, Some(gid))
            .map_err(|e| io("setting the group of", store_dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stores_ends_are_found_without_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        drop(
            crate::store::Store::open(
                &store,
                crate::store::Access::Create,
                std::time::Duration::from_secs(5),
            )
            .unwrap(),
        );
        let conn = Connection::open_in_memory().unwrap();
        conn.execute("ATTACH ?1 AS live", [store.to_str().unwrap()])
            .unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIVE_EVENT_ENDS}"))
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("live.LogoutEvents")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN live.")),
            "{plan:?}"
        );
    }
}
