//! The local side of the fleet on a real SQLite store: copied versions are marked, local
//! commands leave them alone, and the copy and its position are one transaction.

use chrono::{DateTime, Utc};
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::store::{Access, ScheduleEvent, ScheduleRecord, Store};
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
    .into_new(&forcelogout_core::zone::Zone::utc())
    .unwrap()
}

fn central(id: &str, event: ScheduleEvent, at: &str) -> ScheduleRecord {
    ScheduleRecord {
        date: "2026-11-23".into(),
        id: id.into(),
        update_time: "2026-11-23T10:00:00.000000Z".into(),
        event,
        actor: "alice".into(),
        schedule: daily("students", at),
        due_at: None,
    }
}

#[test]
fn fleet_schedules_are_marked_and_left_alone_by_local_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        &dir.path().join("s.db"),
        Access::Create,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let now = utc("2026-11-23T12:00:00Z");
    let local = store
        .add_schedule(&daily("staff", "19:00"), "root", now)
        .unwrap();
    let id = "0f1e2d3c-4b5a-4697-8877-665544332211";
    store
        .apply_fleet_versions(
            &[(central(id, ScheduleEvent::Created, "18:00"), 7)],
            (9, "k9"),
        )
        .unwrap();
    assert_eq!(store.fleet_state().unwrap().schedule_version, 9);
    assert_eq!(
        store
            .fleet_schedule_ids()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [id]
    );
    assert_eq!(
        store.current_schedule(id).unwrap().schedule.time_text(),
        "18:00"
    );

    // Update, delete and apply's changes are refused for it, naming the Id.
    let refused = |e: Error| match e {
        Error::Invalid { field, reason } => {
            assert_eq!(field, "id");
            assert!(
                reason.contains(id) && reason.contains("changed centrally"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    };
    refused(store.delete_schedule(&id[..8], "root", now).unwrap_err());
    refused(
        store
            .update_schedule(id, "root", now, |s| Ok(s.clone()))
            .unwrap_err(),
    );
    refused(
        store
            .write_schedule_changes(&[], &[], &[id.to_string()], "root", now)
            .unwrap_err(),
    );
    // `apply` of a file without it keeps it, and deletes only the local one.
    let changes =
        forcelogout_core::declarative::apply(&mut store, Vec::new(), "root", now, false).unwrap();
    assert_eq!(changes.deleted, 1);
    assert!(store.current_schedule(&local.id).is_err());
    assert!(store.current_schedule(id).is_ok());

    // The fleet's own deletion goes through.
    store
        .apply_fleet_versions(
            &[(central(id, ScheduleEvent::Deleted, "18:00"), 8)],
            (10, "k10"),
        )
        .unwrap();
    assert!(store.fleet_schedule_ids().unwrap().is_empty());
    assert_eq!(store.fleet_state().unwrap().schedule_version, 10);
}

#[test]
fn pruning_keeps_the_events_a_fleet_host_has_not_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fl.db");
    let mut store = Store::open(&path, Access::Create, std::time::Duration::from_secs(2)).unwrap();
    // Ten events from a year ago, written as a host that was offline would have them.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for i in 1..=10 {
        conn.execute(
            "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
             VALUES ('2025-11-01', '2025-11-01T10:00:00.000000Z', 'alice', 'online', ?1, 'lab1')",
            [format!("event-{i}")],
        )
        .unwrap();
    }
    store.set_fleet_uploaded(4).unwrap();
    let count = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM LogoutEvents", [], |r| r.get(0))
            .unwrap()
    };
    // A fleet host prunes only what the fleet already has, in batches.
    assert_eq!(store.prune_events_before("2026-01-01", 3, true).unwrap(), 4);
    assert_eq!(count(&conn), 6);
    let first: i64 = conn
        .query_row("SELECT min(ReplayId) FROM LogoutEvents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(first, 5);
    // A host without a fleet prunes by date alone.
    assert_eq!(
        store.prune_events_before("2026-01-01", 3, false).unwrap(),
        6
    );
    assert_eq!(count(&conn), 0);
}
