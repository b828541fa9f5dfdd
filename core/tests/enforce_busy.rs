//! The enforcer while another process holds the store's write lock (an administrator's
//! `sqlite3` shell inside a transaction): a kick that falls due ends its sessions on time,
//! without waiting for the lock, and is recorded once, complete, when the lock is released.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use forcelogout_core::config::Config;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::sessions::{current_boot_id, start_time_of, LoginFacts, ProcessFacts};
use forcelogout_core::store::{Access, CountdownState, EventFilter, Store};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// This process's user: a schedule that names the user targets it, uid 0 included.
fn me() -> (String, u32) {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).unwrap().unwrap();
    (user.name, uid.as_raw())
}

/// A login of this user whose PAM caller is `child`.
fn open_session_of(store: &mut Store, child: &Child, now: DateTime<Utc>) {
    let (user, uid) = me();
    let login = LoginFacts {
        user,
        uid,
        service: Some("fltest".into()),
        ..LoginFacts::default()
    };
    let process = ProcessFacts {
        pid: child.id(),
        pid_start_time: start_time_of(child.id()),
        boot_id: current_boot_id(),
        host: "host".into(),
        ..ProcessFacts::default()
    };
    store
        .open_session("busy-session", &login, &process, now)
        .unwrap();
}

fn events(store: &Store) -> Vec<(String, Option<String>)> {
    store
        .events(&EventFilter::default(), 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.reason))
        .collect()
}

fn gone_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_kick_due_while_the_store_is_locked_ends_its_session_and_is_recorded_once_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fl.db");
    let written = utc("2026-11-23T08:00:00Z");
    let mut store = Store::open(&path, Access::Create, Duration::from_secs(2)).unwrap();
    let kick = ScheduleInput {
        group: Some(me().0),
        recurrence: Some(RecurrenceInput::Daily),
        at: Some("12:00".into()),
        timezone: Some("UTC".into()),
        kick: Some(true),
        ..Default::default()
    }
    .into_new(&forcelogout_core::zone::Zone::utc())
    .unwrap();
    let id = store.add_schedule(&kick, "test", written).unwrap().id;
    let mut child = Command::new("sleep").arg("600").spawn().unwrap();
    open_session_of(&mut store, &child, written);
    let logged = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let log = logged.clone();
    let mut enforcer = Enforcer::new(
        Store::open(&path, Access::ReadWrite, Duration::from_secs(2)).unwrap(),
        Config::default(),
        Box::new(move |line| log.borrow_mut().push(line.to_string())),
    )
    .unwrap();
    enforcer.step(utc("2026-11-23T11:00:00Z")).unwrap();

    // Another process's transaction holds the write lock over the logout's instant.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let (report, wake) = enforcer.step(utc("2026-11-23T12:00:01Z")).unwrap();
    let took = started.elapsed();
    assert_eq!(report.removed, 1, "{:?}", logged.borrow());
    assert!(
        gone_within(&mut child, Duration::from_secs(10)),
        "the session's process was not ended"
    );
    // It tried to write once (the busy timeout) and did not wait more for the lock.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(wake <= utc("2026-11-23T12:00:02Z"), "{wake}");
    assert_eq!(events(&store), [("online".to_string(), None)]);
    // Still locked: kept, not fired again, logged once.
    let (report, _) = enforcer.step(utc("2026-11-23T12:00:02Z")).unwrap();
    assert_eq!(report.removed, 0);
    let stalls = |log: &Vec<String>| {
        log.iter()
            .filter(|l| l.contains("cannot be written"))
            .count()
    };
    assert_eq!(stalls(&logged.borrow()), 1, "{:?}", logged.borrow());

    holder.execute_batch("COMMIT").unwrap();
    enforcer.step(utc("2026-11-23T12:00:03Z")).unwrap();
    enforcer.step(utc("2026-11-23T12:00:04Z")).unwrap();
    let kicked = [
        ("online".to_string(), None),
        ("warned".to_string(), None),
        ("removed".to_string(), Some("kick".to_string())),
        ("offline".to_string(), None),
    ];
    assert_eq!(events(&store), kicked);
    assert_eq!(
        store
            .countdown_state(&id, utc("2026-11-23T12:00:00Z"))
            .unwrap(),
        Some(CountdownState::Done)
    );
    assert!(store.live_sessions().unwrap().is_empty());
    assert!(
        logged.borrow().iter().any(|l| l.contains("written again")),
        "{:?}",
        logged.borrow()
    );
}
