//! The session socket's two sides on real stores.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::server::{triage, Triaged};
use super::writer::{record, Waiting};
use super::*;
use crate::config::Config;
use crate::store::{Access, Store};
use chrono::TimeZone;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn open_request(db: &Path, key: &str, deadline: DateTime<Utc>) -> Request {
    Request {
        db: db.to_path_buf(),
        deadline,
        now: t(0),
        process: ProcessFacts {
            pid: 4242,
            boot_id: "boot".into(),
            host: "host".into(),
            ..ProcessFacts::default()
        },
        action: Action::Open {
            session_key: key.into(),
            login: LoginFacts {
                user: "alice".into(),
                uid: 1000,
                ..LoginFacts::default()
            },
            notices: true,
        },
    }
}

/// Both sides on one store, as the daemon's two threads do on two connections: a reply
/// for each request, in order.
fn serve(
    store: &mut Store,
    config: &Config,
    requests: Vec<Result<Request, Reply>>,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Vec<Reply> {
    let mut replies: Vec<Option<Reply>> = Vec::new();
    let (mut written, mut writes) = (Vec::new(), Vec::new());
    for (index, triaged) in triage(store, config, requests, clock, log)
        .into_iter()
        .enumerate()
    {
        replies.push(match triaged {
            Triaged::Answer(reply) => Some(reply),
            Triaged::Write(write) => {
                written.push(index);
                writes.push(write);
                None
            }
        });
    }
    // Each write as the writing side holds it: a module still waiting on a connection.
    let mut waiting: Vec<Waiting> = writes
        .into_iter()
        .map(|write| {
            let (stream, _module) = UnixStream::pair().unwrap();
            Waiting::from(QueuedWrite { stream, write })
        })
        .collect();
    let recorded = record(store, &mut waiting, clock, log).unwrap();
    for (index, reply) in written.into_iter().zip(recorded) {
        replies[index] = Some(reply);
    }
    replies.into_iter().map(Option::unwrap).collect()
}

fn serve_one(store: &mut Store, request: Request, clock: &dyn Fn() -> DateTime<Utc>) -> Reply {
    serve(store, &Config::default(), vec![Ok(request)], clock, &|_| {}).remove(0)
}

fn close_request(db: &Path, key: &str, deadline: DateTime<Utc>) -> Request {
    Request {
        action: Action::Close {
            session_key: Some(key.into()),
        },
        ..open_request(db, key, deadline)
    }
}

fn sessions(store: &Store) -> usize {
    store.live_sessions().unwrap().len()
}

fn events(store: &Store) -> Vec<String> {
    let all = crate::store::EventFilter::default();
    store
        .events(&all, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[test]
fn a_repeated_open_is_recorded_once_and_a_late_one_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    let clock = || t(0);

    let reply = serve_one(&mut store, open_request(&db, "k1", t(1)), &clock);
    assert!(matches!(reply, Reply::Opened { ref opened, .. } if opened.online));
    // The module gave up and wrote it itself, or the same request came twice.
    let reply = serve_one(&mut store, open_request(&db, "k1", t(1)), &clock);
    assert!(matches!(reply, Reply::Opened { ref opened, .. } if !opened.online));
    assert_eq!(sessions(&store), 1);
    assert_eq!(events(&store), ["online"]);

    // Past its deadline before it is read, and past it once the write lock is held.
    let late = serve_one(&mut store, open_request(&db, "k2", t(0)), &clock);
    assert!(matches!(late, Reply::Declined(_)));
    let calls = std::cell::Cell::new(0);
    let slow_clock = || {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            t(0)
        } else {
            t(5)
        }
    };
    let late = serve_one(&mut store, open_request(&db, "k3", t(1)), &slow_clock);
    assert!(matches!(late, Reply::Declined(_)));
    assert_eq!(sessions(&store), 1);

    // Another store than the daemon's.
    let other = dir.path().join("other.db");
    Store::open(&other, Access::Create, Duration::from_secs(1)).unwrap();
    let reply = serve_one(&mut store, open_request(&other, "k4", t(1)), &clock);
    assert!(matches!(reply, Reply::Declined(ref why) if why.contains("other.db")));
    assert_eq!(sessions(&store), 1);

    let close = |key: &str| close_request(&db, key, t(1));
    let reply = serve_one(&mut store, close("k1"), &clock);
    assert!(matches!(reply, Reply::Closed(ref c) if c.removed && c.offline));
    let reply = serve_one(&mut store, close("k1"), &clock);
    assert!(matches!(reply, Reply::Closed(ref c) if !c.removed));
    assert_eq!(events(&store), ["online", "removed", "offline"]);
    assert_eq!(sessions(&store), 0);
}

#[test]
fn account_is_answered_from_the_store_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    let account = Request {
        action: Action::Account {
            user: "nobody".into(),
        },
        ..open_request(&db, "unused", t(1))
    };
    let before = events(&store).len();
    let reply = serve_one(&mut store, account, &|| t(0));
    assert!(
        matches!(reply, Reply::Account(ref d) if d.refusal.is_none() && d.next_kick.is_none()),
        "{reply:?}"
    );
    assert_eq!(events(&store).len(), before);
    assert_eq!(sessions(&store), 0);
}

#[test]
fn notices_come_with_the_opens_that_ask_for_them_and_only_their_users() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    // Debian's `daemon` user and group: in every NSS, never a login of anybody's.
    let schedule = crate::schedule::ScheduleInput {
        group: Some("daemon".into()),
        recurrence: Some(crate::schedule::RecurrenceInput::Daily),
        at: Some("09:30".into()),
        timezone: Some("UTC".into()),
        message: Some("Evening shutdown".into()),
        ..Default::default()
    }
    .into_new(&crate::zone::Zone::utc())
    .unwrap();
    store.add_schedule(&schedule, "test", t(-60)).unwrap();
    let open_as = |key: &str, user: &str, notices: bool| Request {
        action: Action::Open {
            session_key: key.into(),
            login: LoginFacts {
                user: user.into(),
                uid: 1,
                ..LoginFacts::default()
            },
            notices,
        },
        ..open_request(&db, key, t(1))
    };
    let batch = vec![
        Ok(open_as("a", "daemon", true)),
        Ok(open_as("b", "daemon", false)),
        Ok(open_as("c", "nobody", true)),
        Ok(open_as("d", "daemon", true)),
    ];
    let replies = serve(&mut store, &Config::default(), batch, &|| t(0), &|_| {});
    let notices: Vec<Vec<String>> = replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Opened { notices, .. } => notices,
            other => panic!("{other:?}"),
        })
        .collect();
    for asked in [&notices[0], &notices[3]] {
        assert_eq!(asked.len(), 1, "{notices:?}");
        assert!(asked[0].contains("in 30 min"), "{notices:?}");
        assert!(asked[0].ends_with("\nEvening shutdown"), "{notices:?}");
    }
    assert!(notices[1].is_empty(), "{notices:?}");
    assert!(notices[2].is_empty(), "{notices:?}");
}

#[test]
#[ignore = "needs root: only root may record sessions through the socket (the daemon checks the peer's uid)"]
fn account_is_answered_while_writes_wait_for_their_commit_and_a_full_queue_declines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let writer = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    let reader = Store::open(&db, Access::ReadOnly, Duration::from_secs(1)).unwrap();
    let socket = dir.path().join("sessions");
    let listener = UnixListener::bind(&socket).unwrap();
    // Room for one waiting write.
    let (queue, queued) = std::sync::mpsc::sync_channel(1);
    let config = Config::default();
    let ask = |request: Request| {
        let socket = socket.clone();
        std::thread::spawn(move || call(&socket, &request, Duration::from_secs(5)))
    };
    let schedules = super::ScheduleCache::default();
    let take = || {
        take_requests(
            &listener,
            &reader,
            &schedules,
            &config,
            &Utc::now,
            &|_| {},
            &queue,
        )
    };
    let deadline = Utc::now() + chrono::Duration::seconds(30);

    let first_open = ask(open_request(&db, "a", deadline));
    take().unwrap();
    let account = ask(Request {
        action: Action::Account {
            user: "nobody".into(),
        },
        ..open_request(&db, "unused", deadline)
    });
    take().unwrap();
    let reply = account.join().unwrap().unwrap();
    assert!(matches!(reply, Reply::Account(_)), "{reply:?}");
    // The open is read and queued, not yet written.
    assert!(events(&writer).is_empty());

    let second_open = ask(open_request(&db, "b", deadline));
    take().unwrap();
    let reply = second_open.join().unwrap().unwrap();
    assert!(
        matches!(reply, Reply::Declined(ref why) if why.contains("too many")),
        "{reply:?}"
    );

    let mut writer = SessionWriter::new(writer);
    writer.record_queued(&queued, &Utc::now, &|_| {}).unwrap();
    let writer = writer.store();
    let reply = first_open.join().unwrap().unwrap();
    assert!(
        matches!(reply, Reply::Opened { ref opened, .. } if opened.session_key == "a" && opened.online),
        "{reply:?}"
    );
    assert_eq!(events(writer), ["online"]);
    assert_eq!(sessions(writer), 1);
}

#[test]
fn a_batch_is_one_transaction_with_a_reply_for_each_request_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    let clock = || t(0);
    let batch = vec![
        Ok(open_request(&db, "a", t(1))),
        Err(Reply::Declined("uid 1000 may not record sessions".into())),
        Ok(open_request(&db, "b", t(0))),
        Ok(open_request(&dir.path().join("elsewhere.db"), "c", t(1))),
        Ok(open_request(&db, "d", t(1))),
        Ok(close_request(&db, "a", t(1))),
    ];
    let replies = serve(&mut store, &Config::default(), batch, &clock, &|_| {});
    assert_eq!(replies.len(), 6);
    assert!(
        matches!(&replies[0], Reply::Opened { opened, .. } if opened.session_key == "a" && opened.online)
    );
    assert!(matches!(&replies[1], Reply::Declined(why) if why.starts_with("uid 1000")));
    assert!(matches!(&replies[2], Reply::Declined(why) if why.contains("stopped waiting")));
    assert!(matches!(&replies[3], Reply::Declined(why) if why.contains("elsewhere.db")));
    assert!(
        matches!(&replies[4], Reply::Opened { opened, .. } if opened.session_key == "d" && !opened.online)
    );
    assert!(matches!(&replies[5], Reply::Closed(c) if c.removed && !c.offline));
    // a and d opened, a closed: alice stays online through d.
    assert_eq!(events(&store), ["online", "removed"]);
    assert_eq!(sessions(&store), 1);
}

/// A write queued as the daemon's reading side queues it, and the module's end of its
/// connection.
fn queue_write(queue: &std::sync::mpsc::SyncSender<QueuedWrite>, request: Request) -> UnixStream {
    let (stream, module) = UnixStream::pair().unwrap();
    let write = WriteRequest {
        request: Box::new(request),
        notices: vec!["a notice".into()],
        coming: None,
    };
    queue.try_send(QueuedWrite { stream, write }).ok().unwrap();
    module
}

fn reply_on(module: &UnixStream) -> Reply {
    use std::io::BufRead;
    module
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(module)
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_busy_store_keeps_the_writes_it_promised_and_makes_them_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
    let mut writer = SessionWriter::new(store);
    let (queue, queued) = std::sync::mpsc::sync_channel(8);
    let logged = std::cell::RefCell::new(Vec::<String>::new());
    let log = |line: &str| logged.borrow_mut().push(line.to_string());

    // Another process's transaction holds the write lock (an `sqlite3` shell in BEGIN).
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let deadline = Utc::now() + chrono::Duration::seconds(2);
    let open = queue_write(&queue, open_request(&db, "k1", deadline));
    let close = queue_write(&queue, close_request(&db, "k1", deadline));
    let late = queue_write(&queue, open_request(&db, "k2", Utc::now()));
    writer.record_queued(&queued, &Utc::now, &log).unwrap();
    // Told before they stop waiting; the one past its deadline is left to its module.
    let notices = vec!["a notice".to_string()];
    assert_eq!(
        serde_json::to_string(&reply_on(&open)).unwrap(),
        serde_json::to_string(&Reply::Queued { notices }).unwrap()
    );
    assert!(matches!(reply_on(&close), Reply::Queued { .. }));
    assert!(matches!(reply_on(&late), Reply::Declined(_)));
    assert!(events(writer.store()).is_empty());
    assert_eq!(logged.borrow().len(), 1, "{:?}", logged.borrow());

    // Still busy: kept, logged once.
    writer.record_queued(&queued, &Utc::now, &log).unwrap();
    assert!(events(writer.store()).is_empty());
    assert_eq!(logged.borrow().len(), 1, "{:?}", logged.borrow());

    // Long after the modules stopped waiting, the lock is released: made once, in order.
    holder.execute_batch("COMMIT").unwrap();
    writer.record_queued(&queued, &Utc::now, &log).unwrap();
    assert_eq!(events(writer.store()), ["online", "removed", "offline"]);
    assert_eq!(sessions(writer.store()), 0);
    assert!(
        logged.borrow()[1].contains("free again"),
        "{:?}",
        logged.borrow()
    );
}
