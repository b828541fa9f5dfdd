//! The enforcer with the clock as a parameter: a forward jump of the wall clock over a logout
//! does not fire it hours late, a backward jump does not fire a logout twice, and a logout
//! missed by less than the catch-up window fires when the daemon looks again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::config::Config;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::store::{Access, CountdownState, Store};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn daily_at_noon(store: &mut Store, written: DateTime<Utc>) -> String {
    let schedule = ScheduleInput {
        group: Some("nobody-in-particular".into()),
        recurrence: Some(RecurrenceInput::Daily),
        at: Some("12:00".into()),
        timezone: Some("UTC".into()),
        ..Default::default()
    }
    .into_new(&forcelogout_core::zone::Zone::utc())
    .unwrap();
    store.add_schedule(&schedule, "test", written).unwrap().id
}

fn enforcer(dir: &tempfile::TempDir) -> (Enforcer, String) {
    let path = dir.path().join("fl.db");
    let mut store = Store::open(&path, Access::Create, Duration::from_secs(2)).unwrap();
    let id = daily_at_noon(&mut store, utc("2026-11-23T08:00:00Z"));
    let store = Store::open(&path, Access::ReadWrite, Duration::from_secs(2)).unwrap();
    (
        Enforcer::new(store, Config::default(), Box::new(|_| {})).unwrap(),
        id,
    )
}

#[test]
fn the_countdown_starts_at_the_warning_and_the_wake_is_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, id) = enforcer(&dir);
    // 11:00: nothing to do until the countdown starts at 11:55 (or the minutely stale sweep).
    let (_, wake) = e.step(utc("2026-11-23T11:00:00Z")).unwrap();
    assert_eq!(
        wake,
        utc("2026-11-23T11:01:00Z"),
        "the stale sweep comes first"
    );
    let (_, wake) = e.step(utc("2026-11-23T11:54:30Z")).unwrap();
    assert_eq!(
        wake,
        utc("2026-11-23T11:55:00Z"),
        "the countdown's start comes before the sweep"
    );
    let (_, wake) = e.step(utc("2026-11-23T11:55:00Z")).unwrap();
    assert_eq!(
        e.store()
            .countdown_state(&id, utc("2026-11-23T12:00:00Z"))
            .unwrap(),
        Some(CountdownState::Running)
    );
    assert!(
        wake <= utc("2026-11-23T11:59:00Z"),
        "never later than the next announcement"
    );
    e.step(utc("2026-11-23T12:00:00Z")).unwrap();
    assert_eq!(
        e.store()
            .countdown_state(&id, utc("2026-11-23T12:00:00Z"))
            .unwrap(),
        Some(CountdownState::Done)
    );
}

#[test]
fn a_forward_jump_over_a_logout_does_not_fire_it_hours_late() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, id) = enforcer(&dir);
    e.step(utc("2026-11-23T11:00:00Z")).unwrap();
    // The wall clock is set three hours ahead: 12:00 was jumped over.
    let jumped = utc("2026-11-23T14:00:00Z");
    assert_eq!(e.skip_missed(jumped).unwrap(), vec![id.clone()]);
    let (_, wake) = e.step(jumped).unwrap();
    let noon = utc("2026-11-23T12:00:00Z");
    assert_eq!(
        e.store().countdown_state(&id, noon).unwrap(),
        Some(CountdownState::Skipped)
    );
    // Next: tomorrow's countdown, or the stale sweep, whichever comes first.
    assert!(wake <= utc("2026-11-24T11:55:00Z"));
}

#[test]
fn a_backward_jump_does_not_fire_a_logout_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, id) = enforcer(&dir);
    let noon = utc("2026-11-23T12:00:00Z");
    e.step(utc("2026-11-23T11:56:00Z")).unwrap();
    e.step(utc("2026-11-23T12:00:01Z")).unwrap();
    assert_eq!(
        e.store().countdown_state(&id, noon).unwrap(),
        Some(CountdownState::Done)
    );
    // The clock is set back to before noon: the done logout stays done.
    let (report, _) = e.step(utc("2026-11-23T11:58:00Z")).unwrap();
    assert!(report.warned.is_empty() && report.removed == 0);
    assert_eq!(
        e.store().countdown_state(&id, noon).unwrap(),
        Some(CountdownState::Done)
    );
}

#[test]
fn a_logout_missed_by_less_than_the_catch_up_window_fires_late() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, id) = enforcer(&dir);
    let noon = utc("2026-11-23T12:00:00Z");
    // The daemon was down from 11:00 to 12:04: within the 10-minute window, so it fires now.
    e.step(utc("2026-11-23T11:00:00Z")).unwrap();
    assert!(e
        .skip_missed(utc("2026-11-23T12:04:00Z"))
        .unwrap()
        .is_empty());
    e.step(utc("2026-11-23T12:04:00Z")).unwrap();
    assert_eq!(
        e.store().countdown_state(&id, noon).unwrap(),
        Some(CountdownState::Done)
    );
}
