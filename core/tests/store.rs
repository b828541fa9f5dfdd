//! The store against real SQLite files: history, current set, ids, schema, permissions.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::sessions::{LoginFacts, ProcessFacts};
use forcelogout_core::store::{
    Access, RemovalReason, ScheduleEvent, Store, SESSION_WRITER_WAL_LIMIT_BYTES, WAL_LIMIT_BYTES,
};
use forcelogout_core::Error;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn daily(group: &str, at: &str) -> forcelogout_core::schedule::Schedule {
    ScheduleInput {
        group: Some(group.into()),
        recurrence: Some(RecurrenceInput::Daily),
        at: Some(at.into()),
        timezone: Some("Europe/Berlin".into()),
        ..Default::default()
    }
    .into_new(chrono_tz::Tz::UTC)
    .unwrap()
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(
        &dir.path().join("state/fl.db"),
        Access::Create,
        Duration::from_secs(2),
    )
    .unwrap()
}

#[test]
fn history_is_append_only_and_the_current_set_excludes_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.set_host_zone(chrono_tz::Europe::Berlin);
    let t0 = utc("2026-11-23T23:30:00Z");
    let a = store
        .add_schedule(&daily("students", "18:00"), "root", t0)
        .unwrap();
    let b = store
        .add_schedule(&daily("staff", "20:00"), "root", t0)
        .unwrap();
    // The partition is the host-local date: 23:30 UTC is already the 24th in Berlin.
    assert_eq!(a.date, "2026-11-24");
    assert_eq!(a.update_time, "2026-11-23T23:30:00.000000Z");

    let t1 = utc("2026-11-24T08:00:00Z");
    let updated = store
        .update_schedule(&a.id[..8], "alice", t1, |current| {
            ScheduleInput {
                at: Some("17:30".into()),
                ..Default::default()
            }
            .apply_to(current)
        })
        .unwrap();
    assert_eq!(updated.id, a.id);
    assert_eq!(updated.schedule.time_text(), "17:30");
    assert_eq!(updated.schedule.group, "students");
    store.delete_schedule(&b.id, "alice", t1).unwrap();

    let history = store.schedule_history(None).unwrap();
    let events: Vec<(&str, ScheduleEvent, &str)> = history
        .iter()
        .map(|r| (&r.id[..], r.event, &r.actor[..]))
        .collect();
    assert_eq!(
        events,
        vec![
            (&a.id[..], ScheduleEvent::Created, "root"),
            (&b.id[..], ScheduleEvent::Created, "root"),
            (&a.id[..], ScheduleEvent::Updated, "alice"),
            (&b.id[..], ScheduleEvent::Deleted, "alice"),
        ]
    );
    let current = store.current_schedules(None).unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].schedule.time_text(), "17:30");
    assert_eq!(store.current_schedules(Some("staff")).unwrap().len(), 0);
    assert_eq!(store.schedule_history(Some("staff")).unwrap().len(), 2);

    // A deleted schedule can be neither shown, updated nor deleted again.
    for result in [
        store.current_schedule(&b.id).map(|_| ()),
        store.delete_schedule(&b.id, "root", t1).map(|_| ()),
    ] {
        match result {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "id");
                assert!(reason.contains("deleted"), "{reason}");
            }
            other => panic!("expected an id error, got {other:?}"),
        }
    }
}

#[test]
fn the_tables_refuse_updates_and_schedule_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store
        .add_schedule(&daily("students", "18:00"), "root", Utc::now())
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("state/fl.db")).unwrap();
    for sql in [
        "UPDATE LogoutSchedules SET GroupName = 'x'",
        "DELETE FROM LogoutSchedules",
        "INSERT INTO LogoutSchedules VALUES ('d','i','g','u','Hourly',NULL,'10:00','UTC',NULL,0,1,'created','','root',0,NULL)",
        "INSERT INTO LogoutSchedules VALUES ('d','i','g','u','Weekly',NULL,'10:00','UTC',200,0,1,'created','','root',0,NULL)",
        "INSERT INTO LogoutSchedules VALUES ('d','i','g','u','Once',NULL,'10:00','UTC',NULL,0,1,'created','','root',0,NULL)",
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) VALUES ('d','t','g','exploded','e','h')",
    ] {
        assert!(conn.execute(sql, []).is_err(), "{sql}");
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM LogoutSchedules", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn ids_resolve_from_unique_prefixes_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let now = Utc::now();
    let records: Vec<_> = (0..40)
        .map(|i| {
            store
                .add_schedule(&daily(&format!("g{i}"), "10:00"), "root", now)
                .unwrap()
        })
        .collect();
    for r in &records {
        assert_eq!(store.current_schedule(&r.id).unwrap().id, r.id);
        assert_eq!(
            store.current_schedule(&r.id.to_uppercase()).unwrap().id,
            r.id
        );
    }
    // With 40 ids some share their first hex digit; 4 digits are almost surely unique, and a
    // 1-digit prefix is refused before any lookup.
    assert!(matches!(
        store.current_schedule("a"),
        Err(Error::Invalid { .. })
    ));
    match store.current_schedule("0000-0000") {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "id"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn files_are_created_private_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/fl.db");
    drop(open(&dir));
    let dir_mode = std::fs::metadata(dir.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    let file_mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o750);
    assert_eq!(file_mode & 0o777, 0o640);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 1);
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('LogoutSchedules')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        [
            "Date",
            "Id",
            "GroupName",
            "UpdateTime",
            "Schedule",
            "ScheduleDate",
            "Time",
            "Timezone",
            "Days",
            "Immediate",
            "Kick",
            "Event",
            "Message",
            "Actor",
            "Lockout",
            "DueAt"
        ]
    );
    let event_columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('LogoutEvents')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        &event_columns[..6],
        [
            "Date",
            "Timestamp",
            "GroupName",
            "Event",
            "Immediate",
            "Kick"
        ]
    );
    assert_eq!(event_columns[6], "ReplayId");
}

#[test]
fn a_store_from_a_newer_build_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join("state/fl.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    for access in [Access::Create, Access::ReadWrite, Access::ReadOnly] {
        match Store::open(&path, access, Duration::from_secs(1)) {
            Err(e) => assert!(e.to_string().contains("newer"), "{e}"),
            Ok(_) => panic!("opened a newer store"),
        }
    }
}

#[test]
fn concurrent_first_opens_migrate_once() {
    // A race that failed about one run in 25: several rounds make a regression visible.
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fl.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut store =
                        Store::open(&path, Access::ReadWrite, Duration::from_secs(10)).unwrap();
                    let s = daily("g", "10:00");
                    store.add_schedule(&s, "root", Utc::now()).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = Store::open(&path, Access::ReadOnly, Duration::from_secs(1)).unwrap();
        assert_eq!(store.current_schedules(None).unwrap().len(), 8);
    }
}

#[test]
fn a_missing_store_is_not_created_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    assert!(Store::open(&path, Access::ReadOnly, Duration::from_secs(1)).is_err());
    assert!(!path.exists());
}

#[test]
fn each_writer_keeps_the_wal_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join("state/fl.db");
    let wal_size = || std::fs::metadata(dir.path().join("state/fl.db-wal")).map_or(0, |m| m.len());
    // A bound is checked before each write, so one write's frames may go past it.
    let one_write = 32 * (4096 + 24);
    let login = LoginFacts {
        user: "alice".into(),
        uid: 1000,
        ..LoginFacts::default()
    };
    let process = ProcessFacts::of_current_process();
    let now = utc("2026-11-23T10:00:00Z");
    let one_call = || {
        Store::open(&path, Access::ReadWrite, Duration::from_secs(2))
            .unwrap()
            .for_one_call()
    };
    // `count` logins, each write on `writer`, else on a connection of its own as the module
    // makes them; the largest WAL seen.
    let logins = |prefix: &str, count: usize, mut writer: Option<&mut Store>| {
        let mut largest = 0;
        for i in 0..count {
            let key = format!("{prefix}{i}");
            for open in [true, false] {
                let mut own;
                let store = match writer.as_deref_mut() {
                    Some(store) => store,
                    None => {
                        own = one_call();
                        &mut own
                    }
                };
                if open {
                    store.open_session(&key, &login, &process, now).unwrap();
                } else {
                    let closed =
                        store.close_session(Some(&key), &process, RemovalReason::Logout, now);
                    assert!(closed.unwrap().removed);
                }
                largest = largest.max(wal_size());
            }
        }
        largest
    };

    // The module's connections: the WAL stays small for the next process that opens it alone.
    let largest = logins("module-", 60, None);
    assert!(
        largest > 0 && largest <= WAL_LIMIT_BYTES + one_write,
        "{largest}"
    );

    // The daemon's session writer lets it grow further, within its own bound.
    let mut writer = Store::open(&path, Access::ReadWrite, Duration::from_secs(2))
        .unwrap()
        .for_session_writer()
        .unwrap();
    let largest = logins("daemon-", 150, Some(&mut writer));
    assert!(largest > WAL_LIMIT_BYTES + one_write, "{largest}");
    assert!(
        largest <= SESSION_WRITER_WAL_LIMIT_BYTES + one_write,
        "{largest}"
    );

    // The daemon stops: the module's first write copies that WAL and starts it again, cut
    // back to the module's bound.
    drop(writer);
    logins("after-", 1, None);
    assert!(wal_size() <= WAL_LIMIT_BYTES, "{}", wal_size());
}
