//! `logout --lockout`: the window of an immediate logout, at instants before, inside and after
//! it (the clock is a parameter), and which lockout speaks when several apply.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::policy::{lockout_for, open_lockout_windows};
use forcelogout_core::schedule::{parse_lockout, Recurrence, Schedule};
use forcelogout_core::store::{Access, Store};
use forcelogout_core::targeting::Identity;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn immediate(group: &str, kick: bool, lockout: &str, message: &str) -> Schedule {
    Schedule {
        group: group.into(),
        recurrence: Recurrence::Once(utc("2026-11-23T10:00:00Z").date_naive()),
        time: chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
        timezone: forcelogout_core::zone::Zone::utc(),
        immediate: true,
        kick,
        message: message.into(),
        lockout_minutes: parse_lockout(lockout).unwrap(),
    }
}

fn identity(name: &str) -> Identity {
    Identity {
        name: name.into(),
        uid: 1000,
        groups: vec![name.into(), "lab".into()],
    }
}

fn open_store(dir: &tempfile::TempDir) -> Store {
    Store::open(
        &dir.path().join("fl.db"),
        Access::Create,
        Duration::from_secs(2),
    )
    .unwrap()
}

#[test]
fn an_immediate_logouts_lockout_runs_from_its_due_instant_for_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(&dir);
    let issued = utc("2026-11-23T10:00:00Z");
    let due = utc("2026-11-23T10:01:00Z");
    store
        .add_immediate_logout(
            &immediate("alice", true, "1h", "Incident"),
            "root",
            issued,
            due,
        )
        .unwrap();
    let schedules = store.current_schedules(None).unwrap();
    let warning = Duration::from_secs(60);
    let alice = identity("alice");
    let at = |t: &str| {
        let windows = open_lockout_windows(&schedules, warning, utc(t));
        lockout_for(&alice, windows, &[]).map(|l| (l.until, l.record.schedule.message.clone()))
    };
    // During the countdown nobody is locked out yet; the logout has not happened.
    assert_eq!(at("2026-11-23T10:00:30Z"), None);
    let until = utc("2026-11-23T11:01:00Z");
    assert_eq!(at("2026-11-23T10:01:00Z"), Some((until, "Incident".into())));
    assert_eq!(at("2026-11-23T11:00:59Z"), Some((until, "Incident".into())));
    // After the window, logins again.
    assert_eq!(at("2026-11-23T11:01:00Z"), None);
    assert_eq!(at("2026-11-24T10:01:00Z"), None);
    // Another user is not named by it.
    let windows = open_lockout_windows(&schedules, warning, utc("2026-11-23T10:30:00Z"));
    assert!(lockout_for(&identity("bob"), windows, &[]).is_none());
}

#[test]
fn the_lockout_that_ends_last_gives_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(&dir);
    let issued = utc("2026-11-23T10:00:00Z");
    // Issued in an order that is neither the order of their ends nor of their lengths.
    for (group, lockout, message) in [
        ("alice", "30m", "Short"),
        ("lab", "2h", "Longest"),
        ("alice", "1h", "Middle"),
    ] {
        store
            .add_immediate_logout(
                &immediate(group, true, lockout, message),
                "root",
                issued,
                issued,
            )
            .unwrap();
    }
    // A warning never locks out, however long its lockout field.
    store
        .add_immediate_logout(
            &immediate("alice", false, "1d", "Ignorable"),
            "root",
            issued,
            issued,
        )
        .unwrap();
    let schedules = store.current_schedules(None).unwrap();
    let pick = |t: &str| {
        let windows = open_lockout_windows(&schedules, Duration::ZERO, utc(t));
        lockout_for(&identity("alice"), windows, &[]).map(|l| l.record.schedule.message.clone())
    };
    assert_eq!(pick("2026-11-23T10:10:00Z").as_deref(), Some("Longest"));
    assert_eq!(pick("2026-11-23T11:59:00Z").as_deref(), Some("Longest"));
    assert_eq!(pick("2026-11-23T12:00:00Z"), None);
}

#[test]
fn lockout_lengths_are_minutes_or_durations_rounded_up_to_a_minute() {
    assert_eq!(parse_lockout("15").unwrap(), 15);
    assert_eq!(parse_lockout("1h").unwrap(), 60);
    assert_eq!(parse_lockout("1h30m").unwrap(), 90);
    assert_eq!(parse_lockout("90s").unwrap(), 2);
    assert_eq!(parse_lockout("1d").unwrap(), 1440);
    assert_eq!(parse_lockout("0").unwrap(), 0);
    for bad in ["", "1w", "-5", "1.5h", "25h", "1441", "2d"] {
        let e = parse_lockout(bad).unwrap_err().to_string();
        assert!(e.starts_with("lockout: "), "{bad}: {e}");
    }
}
