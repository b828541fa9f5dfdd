//! The store: one SQLite database in WAL mode. Every SQL statement of the product is in this
//! module; the adapters call its methods.

pub mod attach;
mod baseline;
mod enforce;
mod events;
mod files;
#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(feature = "fleet")]
mod fleet_channel;
#[cfg(feature = "fleet")]
mod fleet_enrolment;
#[cfg(feature = "fleet")]
mod fleet_host;
mod fleet_local;
#[cfg(feature = "fleet")]
mod fleet_schema;
#[cfg(feature = "fleet")]
mod fleet_tls;
#[cfg(feature = "fleet")]
mod fleet_url;
mod lockouts;
mod path_check;
pub mod reader_copy;
mod schedules;
mod schema;
mod sessions;

pub use enforce::{CountdownState, CountdownUser, IgnoreOutcome, LiveSession};
pub use events::{EventFilter, EventKind, EventRow, NewEvent, RemovalReason};
use files::prepare_files;
pub use fleet_local::FleetState;
pub use path_check::{inspect, Found, APPLICATION_ID};
use path_check::{open_read_only, recognise};
pub use reader_copy::{reader_copy_path, ReaderCopy};
pub use schedules::{ScheduleEvent, ScheduleRecord};
pub use sessions::{Cause, Closed, Opened, SessionWrite, SessionWritten};

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::clock;
use crate::error::Error;
use crate::zone::Zone;

/// Where the store lives unless `db=`, `--db` or `FORCELOGOUT_DB` says otherwise.
pub const DEFAULT_DB_PATH: &str = "/var/lib/forcelogout/forcelogout.db";
/// The environment variable naming the store for the CLI and the extension.
pub const DB_ENV: &str = "FORCELOGOUT_DB";
/// Group that may read the store: Debian's and Fedora's log-reading group.
pub const READER_GROUP: &str = "adm";
/// How long a statement waits on another writer before failing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL's size bound: 64 frames of 4 KiB pages (a login writes about a dozen). The WAL
/// stays when a connection closes, so the next process that opens the store alone (a PAM
/// call while the daemon is down) rebuilds its index from what is in it: this bounds that
/// re-read. Past it, the next write first copies the WAL into the database (a passive
/// checkpoint: it never waits for, or blocks, another reader or writer), and its commit then
/// starts the WAL again from the top, truncated back to this size.
pub const WAL_LIMIT_BYTES: u64 = 32 + 64 * (4096 + 24);
/// The bound for the daemon's session writer instead (see `Store::for_session_writer`): 1024
/// frames, where it copies the WAL itself before a write. Its checkpointer (a connection of
/// its own, off the logins' path) copies it every couple of hundred frames, so the writer's
/// commits carry no copy and no fsync of the database file; and the WAL's file keeps its size
/// from one cycle to the next, so a commit's fdatasync carries no change of size. While the
/// daemon runs no process opens the store alone, so nothing re-reads the WAL.
pub const SESSION_WRITER_WAL_LIMIT_BYTES: u64 = 32 + 1024 * (4096 + 24);
/// The WAL frames after which a connection of the PAM module copies the WAL into the
/// database: the bound less room for one login's write (about a dozen frames).
pub const ONE_CALL_CHECKPOINT_FRAMES: i64 = 48;
/// The largest WAL a connection opened for one PAM call copies before writing: a WAL grown
/// far past the bound (a prune, or a reader that held its snapshot for long) is left to the
/// next long-lived writer, so that a login never pays for copying it.
pub const ONE_CALL_CHECKPOINT_CAP: u64 = 2 * SESSION_WRITER_WAL_LIMIT_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Creates the directory, the file and the schema when missing; migrates.
    Create,
    /// Creates the file and the schema when missing, in a directory that must exist (the
    /// package makes it; the PAM module never does); migrates.
    ReadWrite,
    /// Opens an existing store read-only; never creates or migrates.
    ReadOnly,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Read when a row first needs its `Date`: a store opened to read never reads tzdata.
    host_zone: std::cell::OnceCell<Zone>,
    /// The WAL size past which this connection copies the WAL before a write.
    wal_limit: u64,
    /// The largest WAL this connection checkpoints before a write (see `WAL_LIMIT_BYTES`).
    checkpoint_cap: u64,
}

/// A watch on the files of the store at `path` (the database, its WAL and shared memory live
/// in one directory): readable whenever another process writes to the store, so that a reader
/// can wait for changes instead of polling. Non-blocking; poll it, then drain its events.
pub fn watch_writes(path: &Path) -> Result<nix::sys::inotify::Inotify, Error> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| Error::io("starting inotify", e.into()))?;
    watch
        .add_watch(
            dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .map_err(|e| Error::io(format!("watching {}", dir.display()), e.into()))?;
    Ok(watch)
}

/// The path of the store: an explicit one, else `FORCELOGOUT_DB`, else the default.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    match std::env::var_os(DB_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_DB_PATH),
    }
}

impl Store {
    /// Opens the store at `path`, after checking, without writing anything there, that it is
    /// one (see `inspect`): anything else is refused and left as it was.
    pub fn open(path: &Path, access: Access, busy_timeout: Duration) -> Result<Store, Error> {
        Store::open_checked(path, access, busy_timeout, false)
    }

    /// `open`; with `read_only_fs_fallback`, a reader also reads a store SQLite alone cannot
    /// open on a read-only file system (see `open_read_only`).
    fn open_checked(
        path: &Path,
        access: Access,
        busy_timeout: Duration,
        read_only_fs_fallback: bool,
    ) -> Result<Store, Error> {
        let found = inspect(path)?;
        if access != Access::ReadOnly {
            prepare_files(path, access == Access::Create)?;
        } else if found == Found::Missing {
            return Err(Error::io(
                format!("{}: opening the store", path.display()),
                std::io::Error::from(ErrorKind::NotFound),
            ));
        } else if found == Found::Empty {
            return Err(Error::io(
                format!("{}: an empty file, not yet a store", path.display()),
                std::io::Error::from(ErrorKind::InvalidData),
            ));
        }
        let conn = match access {
            Access::Create | Access::ReadWrite => Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| classify(path, "opening the store", e))?,
            Access::ReadOnly => open_read_only(path, busy_timeout, read_only_fs_fallback)?,
        };
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            host_zone: std::cell::OnceCell::new(),
            wal_limit: WAL_LIMIT_BYTES,
            checkpoint_cap: u64::MAX,
        };
        store
            .conn
            .busy_timeout(busy_timeout)
            .map_err(|e| store.fail("setting the busy timeout", e))?;
        // Every connection leaves the WAL as it is on close (see `WAL_LIMIT_BYTES`).
        store
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| store.fail("keeping the WAL on close", e))?;
        // The header's check saw the database file alone; what the WAL holds is seen now,
        // before anything is written (a database whose tables are all in its WAL).
        let deadline = std::time::Instant::now() + busy_timeout;
        retry_while_busy(deadline, || recognise(&store.conn, path))?;
        match access {
            Access::Create | Access::ReadWrite => {
                // Several processes may create the store at once (the first logins of a new
                // host): a switch to WAL or a migration that SQLite refuses at once, without
                // its busy handler, to break a lock cycle is tried again until the timeout.
                retry_while_busy(deadline, || store.set_durable_wal())?;
                retry_while_busy(deadline, || store.migrate())?;
            }
            Access::ReadOnly => store.check_version()?,
        }
        Ok(store)
    }

    /// The read path: an existing store read-only, or, before the first write has created
    /// it, an empty one (nothing scheduled yet is not an error). A store this user may not
    /// even look for is `PermissionDenied`, never mistaken for an empty one. A store this user
    /// may not open, but whose readers' copy it may (the reader group), is read from the copy:
    /// `path()` then names the copy.
    ///
    /// The login gate's read: on a read-only file system it reads only what
    /// SQLite itself can (a store whose WAL files are there), the rest is a fault for `fail=`.
    pub fn open_for_reading(path: &Path, busy_timeout: Duration) -> Result<Store, Error> {
        match Store::existing_for_reading(path, busy_timeout, false)? {
            Some(store) => Ok(store),
            None => Store::open_empty_in_memory(),
        }
    }

    /// `open_for_reading`, but `None` where there is no store yet: nothing at `path`, or the
    /// empty file a first open creates before its schema. For a reader that says so (the
    /// CLI), and reads a store on a read-only file system even without its WAL files.
    pub fn open_existing_for_reading(
        path: &Path,
        busy_timeout: Duration,
    ) -> Result<Option<Store>, Error> {
        Store::existing_for_reading(path, busy_timeout, true)
    }

    fn existing_for_reading(
        path: &Path,
        busy_timeout: Duration,
        read_only_fs_fallback: bool,
    ) -> Result<Option<Store>, Error> {
        match path.try_exists() {
            Ok(true) if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) => {
                Ok(None)
            }
            Ok(true) => Store::open_checked(
                &reader_copy::path_for_reading(path),
                Access::ReadOnly,
                busy_timeout,
                read_only_fs_fallback,
            )
            .map(Some),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(Error::PermissionDenied {
                context: format!("{}: {e}", path.display()),
            }),
            Err(e) => Err(Error::io(
                format!("{}: looking for the store", path.display()),
                e,
            )),
        }
    }

    /// An empty store in memory with the current schema: what a reader sees before the first
    /// write has created the real one, and what tests and benchmarks start from.
    pub fn open_empty_in_memory() -> Result<Store, Error> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| Error::store(&path, "opening", e))?;
        let mut store = Store {
            conn,
            path,
            host_zone: std::cell::OnceCell::new(),
            wal_limit: WAL_LIMIT_BYTES,
            checkpoint_cap: 0,
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For a connection that makes one login's writes (the PAM module's): it copies a WAL
    /// into the database before writing only up to `ONE_CALL_CHECKPOINT_CAP`; and after a
    /// commit that leaves `ONE_CALL_CHECKPOINT_FRAMES` or more in the WAL (SQLite's automatic
    /// checkpoint, which counts frames, not the file's size), so that the WAL's file stays
    /// below `WAL_LIMIT_BYTES` and is overwritten in place from one cycle to the next: no
    /// truncation, and no commit whose sync has to record a change of the file's size.
    pub fn for_one_call(mut self) -> Store {
        self.checkpoint_cap = ONE_CALL_CHECKPOINT_CAP;
        let frames = if self.wal_bytes() > ONE_CALL_CHECKPOINT_CAP {
            0
        } else {
            ONE_CALL_CHECKPOINT_FRAMES
        };
        // Only the moment of the copy depends on it: a failure leaves SQLite's default.
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", frames);
        self
    }

    /// For the daemon's session writer, which commits the logins of the whole host: its WAL
    /// bound is `SESSION_WRITER_WAL_LIMIT_BYTES`, and its commits never copy the WAL on their
    /// own (SQLite's automatic checkpoint is off): a checkpointer does it beside them (see
    /// `wal_bytes` and `checkpoint`). Left by a daemon that stopped, such a WAL is re-read by
    /// the processes that open the store alone until the first write of the module copies it
    /// (it is within `ONE_CALL_CHECKPOINT_CAP`).
    pub fn for_session_writer(mut self) -> Result<Store, Error> {
        self.bound_wal_at(SESSION_WRITER_WAL_LIMIT_BYTES)?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.fail("turning the automatic checkpoint off", e))?;
        Ok(self)
    }

    /// The size of the store's WAL file now (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    }

    /// Copies the WAL into the database as far as no reader still needs it (a passive
    /// checkpoint: it never waits for, or blocks, another reader or writer), so that the next
    /// write starts the WAL again from the top.
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.fail("copying the WAL into the database", e))
    }

    /// This connection's WAL bound: where it copies the WAL before a write (`bound_wal`), and
    /// the size a commit that starts the WAL again truncates it back to. Below the bound the
    /// WAL is overwritten in place, so a commit's sync carries no change of its size.
    fn bound_wal_at(&mut self, bytes: u64) -> Result<(), Error> {
        self.conn
            .pragma_update(None, "journal_size_limit", bytes as i64)
            .map_err(|e| self.fail("setting the WAL's size limit", e))?;
        self.wal_limit = bytes;
        Ok(())
    }

    /// How long this connection's statements wait on another writer from now on.
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|e| self.fail("setting the busy timeout", e))
    }

    /// Caps this connection's page cache at `kib` KiB (SQLite's default is 2 MB per connection).
    pub fn limit_page_cache(&self, kib: u32) -> Result<(), Error> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))
            .map_err(|e| self.fail("setting the page cache's size", e))
    }

    /// Overrides the zone of the `Date` partition (tests; hosts are read from the system).
    pub fn set_host_zone(&mut self, zone: Zone) {
        self.host_zone = std::cell::OnceCell::from(zone);
    }

    pub fn host_zone(&self) -> &Zone {
        self.host_zone.get_or_init(clock::host_timezone)
    }

    /// A write transaction (BEGIN IMMEDIATE: the write lock is taken up front, so it waits on
    /// another writer once, at the start, within the busy timeout), with the store's path and
    /// zone, which the statements inside need.
    fn begin_write(
        &mut self,
        context: &'static str,
    ) -> Result<(rusqlite::Transaction<'_>, PathBuf, Zone), Error> {
        self.bound_wal();
        let path = self.path.clone();
        let zone = self.host_zone().clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, context, e))?;
        Ok((tx, path, zone))
    }

    /// Before a write: a WAL past this connection's bound (and within this connection's cap) is
    /// copied into the database, so that this write's commit starts it again from the top.
    /// Passive: it takes no lock another connection waits for, and gives up where a reader
    /// still needs the WAL; a failure leaves the WAL to the next writer.
    fn bound_wal(&self) {
        let size = self.wal_bytes();
        if size > self.wal_limit && size <= self.checkpoint_cap {
            let _ = self.checkpoint();
        }
    }

    fn fail(&self, context: &'static str, cause: rusqlite::Error) -> Error {
        classify(&self.path, context, cause)
    }

    /// WAL so that readers never block the PAM module; FULL so that a committed event
    /// survives a power cut (an audit log that loses its tail is worse than a slow one).
    fn set_durable_wal(&mut self) -> Result<(), Error> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| self.fail("switching to WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") && self.path != Path::new(":memory:") {
            return Err(Error::io(
                format!(
                    "{}: the store stays in {mode} mode, not WAL",
                    self.path.display()
                ),
                std::io::Error::from(ErrorKind::Unsupported),
            ));
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.fail("setting synchronous=FULL", e))?;
        self.bound_wal_at(WAL_LIMIT_BYTES)
    }

    fn schema_version(&self) -> Result<usize, Error> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.fail("reading the schema version", e))?;
        Ok(usize::try_from(version).unwrap_or(usize::MAX))
    }

    fn check_version(&self) -> Result<(), Error> {
        let version = self.schema_version()?;
        match version.cmp(&schema::MIGRATIONS.len()) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(newer_schema(&self.path, version)),
            std::cmp::Ordering::Less => Err(Error::io(
                format!(
                    "{}: the store has schema version {version}, this build needs {}; a write as root upgrades it",
                    self.path.display(),
                    schema::MIGRATIONS.len()
                ),
                std::io::Error::from(ErrorKind::InvalidData),
            )),
        }
    }

    /// Applies the missing migrations in one write transaction, re-reading the version inside
    /// it so that two processes creating the store at once do not both migrate.
    fn migrate(&mut self) -> Result<(), Error> {
        if self.schema_version()? == schema::MIGRATIONS.len() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, "starting the schema migration", e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| classify(&self.path, "reading the schema version", e))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > schema::MIGRATIONS.len() {
            return Err(newer_schema(&self.path, version));
        }
        for (index, migration) in schema::MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration)
                .map_err(|e| classify(&self.path, "migrating the schema", e))?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)
                .map_err(|e| classify(&self.path, "recording the schema version", e))?;
        }
        tx.commit()
            .map_err(|e| classify(&self.path, "committing the schema migration", e))
    }
}

/// Runs `attempt` again while it fails only because the store is busy, until `deadline`,
/// with a growing pause (1 ms to 50 ms) between attempts.
fn retry_while_busy<T>(
    deadline: std::time::Instant,
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt() {
            Err(e) if e.is_busy() && std::time::Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            outcome => return outcome,
        }
    }
}

fn newer_schema(path: &Path, version: usize) -> Error {
    Error::io(
        format!(
            "{}: the store has schema version {version}, newer than this build knows ({}); upgrade forcelogout",
            path.display(),
            schema::MIGRATIONS.len()
        ),
        std::io::Error::from(ErrorKind::InvalidData),
    )
}

/// `classify` as a `map_err` argument.
pub(super) fn on_error<'p>(
    path: &'p Path,
    context: &'static str,
) -> impl FnOnce(rusqlite::Error) -> Error + 'p {
    move |e| classify(path, context, e)
}

/// Maps SQLite's refusals that mean "not allowed" to `PermissionDenied` (exit 4); the rest
/// stay store errors (exit 1).
pub(super) fn classify(path: &Path, context: &'static str, cause: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let denied = match cause.sqlite_error_code() {
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::AuthorizationForStatementDenied) => true,
        Some(ErrorCode::CannotOpen) => path.exists() && !writable(path),
        _ => false,
    };
    if denied {
        Error::PermissionDenied {
            context: format!("{}: {context}: {cause}", path.display()),
        }
    } else {
        Error::store(path, context, cause)
    }
}

pub(super) fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}
