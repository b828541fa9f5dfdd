//! The store path is checked before it is used: the real `forcelogoutctl` given a path that is
//! not a store refuses it in one line and leaves it, and everything beside it, as it was; a
//! reading command says there is no store where there is none and creates nothing; a store on
//! a read-only file system is read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_forcelogoutctl");

const READING: [&[&str]; 6] = [
    &["schedule", "list"],
    &["events"],
    &["sessions"],
    &["next"],
    &["export"],
    &["--json", "schedule", "list"],
];
const WRITING: [&[&str]; 3] = [
    &[
        "schedule", "add", "--group", "g", "--daily", "--at", "10:00", "--tz", "UTC",
    ],
    &["prune", "--older-than", "30"],
    &["schedule", "delete", "ffffffff"],
];

fn ctl(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

/// Every entry under `dir` (recursively): its name, kind, bytes, mode and mtime.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32, i64, i64)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let bytes = if meta.is_file() {
            std::fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        out.push((
            path.clone(),
            bytes,
            meta.mode(),
            meta.mtime(),
            meta.mtime_nsec(),
        ));
        if meta.is_dir() {
            out.extend(snapshot(&path));
        }
    }
    out
}

/// Runs every reading and writing command at `db` and asserts each is refused with exit 2 and
/// one line naming `db` and `what`, with nothing under `dir` changed.
fn assert_refused(dir: &Path, db: &Path, what: &str) {
    let before = snapshot(dir);
    for args in READING.iter().chain(WRITING.iter()) {
        let out = ctl(db, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let expected = format!("forcelogoutctl: store {}: {what}", db.display());
        assert!(stderr.starts_with(&expected), "{args:?}: {stderr}");
        assert!(stderr.contains("not a forcelogout store"), "{stderr}");
        // `events` prints its table's header before it opens the store: nothing more.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.lines().count() <= 1, "{args:?}: {stdout}");
        assert_eq!(snapshot(dir), before, "{args:?} changed something");
    }
}

#[test]
fn another_programs_sqlite_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&tables).unwrap();
    conn.execute_batch("CREATE TABLE accounts (name TEXT); INSERT INTO accounts VALUES ('x');")
        .unwrap();
    drop(conn);
    // One in WAL mode, whose -wal and -shm a careless open would create again.
    let wal = dir.path().join("wal.db");
    let conn = rusqlite::Connection::open(&wal).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("CREATE TABLE LogoutSchedules (x); CREATE TABLE other (y);")
        .unwrap();
    drop(conn);
    let tagged = dir.path().join("tagged.db");
    let conn = rusqlite::Connection::open(&tagged).unwrap();
    conn.pragma_update(None, "application_id", 0x1234_5678)
        .unwrap();
    conn.execute_batch("CREATE TABLE LogoutSchedules (x); CREATE TABLE LogoutEvents (y);")
        .unwrap();
    drop(conn);
    assert_refused(
        dir.path(),
        &tables,
        "another program's SQLite database (tables accounts)",
    );
    assert_refused(
        dir.path(),
        &wal,
        "another program's SQLite database (tables LogoutSchedules, other)",
    );
    assert_refused(
        dir.path(),
        &tagged,
        "another program's SQLite database (application_id 0x12345678)",
    );
}

#[test]
fn a_directory_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.d");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("inside"), b"kept").unwrap();
    assert_refused(dir.path(), &db, "a directory");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"SQLite").unwrap();
    assert_refused(dir.path(), &passwd, "not an SQLite database");
    assert_refused(dir.path(), &short, "not an SQLite database");
    // A FIFO is never opened (reading it would block until a writer came).
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert_refused(dir.path(), &fifo, "not a regular file");
}

#[test]
fn a_missing_store_is_named_by_reading_commands_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/forcelogout.db");
    for args in READING {
        let out = ctl(&db, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "forcelogoutctl: warning: no store at {}: nothing has been written there yet\n",
                db.display()
            ),
            "{args:?}"
        );
        assert!(
            snapshot(dir.path()).is_empty(),
            "{args:?} created something"
        );
    }
    // The same for the empty file a first open creates before its schema: left as it is.
    std::fs::create_dir(db.parent().unwrap()).unwrap();
    std::fs::write(&db, b"").unwrap();
    let before = snapshot(dir.path());
    let out = ctl(&db, &["schedule", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_missing_store_is_created_by_a_writing_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/forcelogout.db");
    let out = ctl(&db, WRITING[0]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600);
    let id: i32 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, i32::from_be_bytes(*b"FLOG"));
    let list = ctl(&db, &["schedule", "list"]);
    assert!(list.stderr.is_empty());
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 2);
    // An empty file (a first open's, or one made for the store) becomes the store.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(ctl(&empty, WRITING[0]).status.code(), Some(0));
    assert_eq!(
        ctl(&empty, &["--json", "schedule", "list"]).status.code(),
        Some(0)
    );
}

/// Runs `script` (sh) in a private mount namespace where `dir` is mounted read-only.
fn in_read_only(dir: &Path, script: &str) -> Output {
    let dir = dir.display();
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{dir}' '{dir}' && mount -o remount,bind,ro '{dir}' && {script}"
        ))
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root: a read-only bind mount in a private mount namespace"]
fn a_store_on_a_read_only_file_system_is_read_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live/fl.db");
    let clean = dir.path().join("clean/fl.db");
    for db in [&live, &clean] {
        assert_eq!(ctl(db, WRITING[0]).status.code(), Some(0));
    }
    // One as a running host leaves it (WAL and shared memory), one copied into the database
    // file alone (no WAL for SQLite's shared memory to index).
    let conn = rusqlite::Connection::open(&clean).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    assert!(!clean.with_file_name("fl.db-wal").exists());
    assert!(live.with_file_name("fl.db-wal").exists());
    for db in [&live, &clean] {
        let before = snapshot(dir.path());
        let out = in_read_only(
            dir.path(),
            &format!(
                "'{BIN}' --db '{0}' schedule list; echo \"rc=$?\"; '{BIN}' --db '{0}' {1}; echo \"rc=$?\"",
                db.display(),
                WRITING[0].join(" ")
            ),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{db:?}: {stdout} {stderr}");
        assert!(lines[1].contains("Daily 10:00 UTC"), "{stdout}");
        assert_eq!(lines[2], "rc=0", "{stdout} {stderr}");
        assert_eq!(lines[3], "rc=4", "{stdout} {stderr}");
        assert_eq!(
            stderr,
            format!(
                "forcelogoutctl: permission denied: {}: the store is on a read-only file system; it can be read, not written\n",
                db.display()
            )
        );
        assert_eq!(snapshot(dir.path()), before, "{db:?}");
    }
}
