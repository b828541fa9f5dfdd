//! Session writes recorded by the daemon for the PAM module, as wtmpdb's daemon does for its
//! module: the daemon keeps its connections to the store open, so a write costs at most one
//! durable commit (writes that arrive together share one) instead of opening the store and
//! parsing its schema. The module writes the store itself when the daemon is absent, declines
//! or is slow; the session key it chooses makes a late second attempt harmless, and the daemon
//! writes nothing after the deadline the module gives, after which the module no longer waits
//! for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvError, SyncSender, TrySendError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::policy::{self, AccountDecision};
use crate::sessions::{LoginFacts, ProcessFacts};
use crate::store::{Closed, Opened, SessionWrite, SessionWritten, Store};

/// Longest request or reply line read.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The store the module was configured with: the daemon records only into its own.
    pub db: PathBuf,
    /// The daemon writes nothing once this has passed: the module has stopped waiting.
    pub deadline: DateTime<Utc>,
    /// The time of the PAM call, which the rows carry.
    pub now: DateTime<Utc>,
    pub process: ProcessFacts,
    pub action: Action,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Action {
    Open {
        session_key: String,
        login: LoginFacts,
        /// The module will show notices: the daemon sends their texts.
        notices: bool,
    },
    Close {
        session_key: Option<String>,
    },
    /// `account` for `user`: a read, answered from the daemon's open store without a write.
    Account {
        user: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Opened {
        opened: Opened,
        notices: Vec<String>,
    },
    Closed(Closed),
    Account(AccountDecision),
    /// Nothing was written, for this reason: the module writes the store itself.
    Declined(String),
}

/// Sends `request` to the daemon on `socket` and waits at most `budget` for its reply. A
/// missing daemon, a full listen queue or a slow daemon is an error at once or within the
/// budget, never a longer wait.
pub fn call(socket: &Path, request: &Request, budget: Duration) -> std::io::Result<Reply> {
    if budget.is_zero() {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
    }
    let stream = connect_without_waiting(socket)?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(budget))?;
    stream.set_read_timeout(Some(budget))?;
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// A non-blocking connect: a Unix socket whose listen queue is full makes a blocking connect
/// wait without a bound; this one fails with EAGAIN instead.
fn connect_without_waiting(socket: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket as new_socket, AddressFamily, SockFlag, SockType};
    let fd: OwnedFd = new_socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let address = nix::sys::socket::UnixAddr::new(socket)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
    Ok(UnixStream::from(fd))
}

/// Most requests recorded in one transaction.
const MAX_BATCH: usize = 256;
/// Most session writes read and waiting for their commit; past it the daemon declines at once
/// and the module writes the store itself (each waiting write holds a connection open).
pub const QUEUE_BOUND: usize = MAX_BATCH;
/// How long the daemon waits for a connected module to send its request (which it writes
/// right after connecting): short, because the rest of the batch waits too.
const REQUEST_WAIT: Duration = Duration::from_millis(250);

/// An open or a close to record, and the notices its reply carries (worked out before the
/// write is queued).
struct WriteRequest {
    request: Box<Request>,
    notices: Vec<String>,
}

/// A session write read from the socket, waiting for its commit, and the connection to answer.
pub struct QueuedWrite {
    stream: UnixStream,
    write: WriteRequest,
}

/// What the reading side made of a request: an answer now, or a write for the writing side.
enum Triaged {
    Answer(Reply),
    Write(WriteRequest),
}

/// The daemon's reading side: waits for a connection and takes every other one already
/// waiting; answers `account` and each refusal at once from `reader`; works out the notices of
/// each open; and queues the writes for [`record_queued`], which commits them on its own
/// connection meanwhile (so a login's NSS look-ups and socket work overlap the previous
/// commit's fsync, and `account` never waits behind a commit). Only root may record sessions
/// (the socket's mode says so too; the kernel's word on each peer is checked again here).
pub fn take_requests(
    listener: &UnixListener,
    reader: &Store,
    config: &Config,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
    queue: &SyncSender<QueuedWrite>,
) -> std::io::Result<()> {
    let (first, _) = listener.accept()?;
    let mut streams = vec![first];
    listener.set_nonblocking(true)?;
    let more = take_waiting(listener, &mut streams);
    listener.set_nonblocking(false)?;
    more?;
    let requests: Vec<Result<Request, Reply>> = streams.iter().map(read_request).collect();
    let triaged = triage(reader, config, requests, clock, log);
    for (stream, triaged) in streams.into_iter().zip(triaged) {
        match triaged {
            Triaged::Answer(reply) => send_reply(&stream, &reply, log),
            Triaged::Write(write) => {
                let queued = QueuedWrite { stream, write };
                let (queued, why) = match queue.try_send(queued) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(q)) => (q, "too many session writes are waiting"),
                    Err(TrySendError::Disconnected(q)) => (q, "the session writer has stopped"),
                };
                send_reply(&queued.stream, &Reply::Declined(why.into()), log);
            }
        }
    }
    Ok(())
}

/// The daemon's writing side: waits for a queued write, takes every other one queued by then,
/// records them all in one transaction (group commit) and answers each. Ends when the
/// reading side is gone.
pub fn record_queued(
    queue: &Receiver<QueuedWrite>,
    store: &mut Store,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Result<(), RecvError> {
    let mut batch = vec![queue.recv()?];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(queued) => batch.push(queued),
            Err(_) => break,
        }
    }
    let (streams, writes): (Vec<UnixStream>, Vec<WriteRequest>) =
        batch.into_iter().map(|q| (q.stream, q.write)).unzip();
    let replies = record(store, writes, clock);
    for (stream, reply) in streams.iter().zip(replies) {
        send_reply(stream, &reply, log);
    }
    Ok(())
}

fn send_reply(stream: &UnixStream, reply: &Reply, log: &dyn Fn(&str)) {
    let sent = serde_json::to_string(reply)
        .map_err(std::io::Error::other)
        .and_then(|mut text| {
            text.push('\n');
            (&*stream).write_all(text.as_bytes())
        });
    if let Err(e) = sent {
        // The module stopped waiting and wrote the store itself.
        log(&format!("a session reply was not delivered: {e}"));
    }
}

fn take_waiting(listener: &UnixListener, streams: &mut Vec<UnixStream>) -> std::io::Result<()> {
    while streams.len() < MAX_BATCH {
        match listener.accept() {
            Ok((stream, _)) => streams.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One connection's request, or the reply that refuses it.
fn read_request(stream: &UnixStream) -> Result<Request, Reply> {
    let refuse = |why: String| Reply::Declined(why);
    // Before anything else: the reply to every connection is written with this bound too.
    let timeouts = stream
        .set_read_timeout(Some(REQUEST_WAIT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_WAIT)));
    timeouts.map_err(|e| refuse(e.to_string()))?;
    let peer = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| refuse(format!("who is asking: {e}")))?;
    if peer.uid() != 0 {
        return Err(refuse(format!(
            "uid {} may not record sessions",
            peer.uid()
        )));
    }
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut line)
        .map_err(|e| refuse(format!("reading the request: {e}")))?;
    serde_json::from_str(&line).map_err(|e| refuse(format!("not a session request: {e}")))
}

fn too_late() -> Reply {
    Reply::Declined("the module stopped waiting".into())
}

/// Sorts requests read together: refusals and `account` are answered from `reader`; opens
/// and closes become writes, each open with the notices its reply will carry (the current
/// schedules are read once for all of them).
fn triage(
    reader: &Store,
    config: &Config,
    requests: Vec<Result<Request, Reply>>,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Vec<Triaged> {
    // Looked up once per batch; each request's store is compared with it.
    let own_store = file_id(reader.path());
    let mut schedules = None;
    let mut notices_of = |login: &LoginFacts, now: DateTime<Utc>| {
        let schedules = schedules.get_or_insert_with(|| match reader.current_schedules_lenient() {
            Ok(read) => policy::enforceable(read, log),
            Err(e) => {
                log(&format!("notices: {e}"));
                Vec::new()
            }
        });
        policy::notices_among(schedules, config, &login.user, now).unwrap_or_else(|e| {
            log(&format!("notices: {e}"));
            Vec::new()
        })
    };
    let write = |request: Request, notices: Vec<String>| {
        Triaged::Write(WriteRequest {
            request: Box::new(request),
            notices,
        })
    };
    requests
        .into_iter()
        .map(|request| match request {
            Err(refusal) => Triaged::Answer(refusal),
            Ok(r) if own_store.is_none() || file_id(&r.db) != own_store => {
                Triaged::Answer(Reply::Declined(format!(
                    "this daemon records into {}, not {}",
                    reader.path().display(),
                    r.db.display()
                )))
            }
            Ok(r) if clock() >= r.deadline => Triaged::Answer(too_late()),
            Ok(r) => match &r.action {
                Action::Account { user } => {
                    Triaged::Answer(account(reader, config, user, r.now, log))
                }
                Action::Open {
                    login,
                    notices: true,
                    ..
                } => {
                    let notices = notices_of(login, r.now);
                    write(r, notices)
                }
                Action::Open { .. } | Action::Close { .. } => write(r, Vec::new()),
            },
        })
        .collect()
}

/// Records session writes in one transaction, exactly as the module would itself; a reply
/// for each, in order. A write whose module has stopped waiting is not made.
fn record(
    store: &mut Store,
    mut writes: Vec<WriteRequest>,
    clock: &dyn Fn() -> DateTime<Utc>,
) -> Vec<Reply> {
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(writes.len());
    let mut made: Vec<usize> = Vec::new();
    let mut session_writes: Vec<SessionWrite<'_>> = Vec::new();
    for (index, WriteRequest { request, .. }) in writes.iter().enumerate() {
        replies.push(match write_of(request) {
            Some(write) => {
                made.push(index);
                session_writes.push(write);
                None
            }
            None => Some(Reply::Declined("not a session write".into())),
        });
    }
    let in_time = |k: usize| clock() < writes[made[k]].request.deadline;
    match store.record_session_writes(&session_writes, &in_time) {
        Ok(outcomes) => {
            for (&index, outcome) in made.iter().zip(outcomes) {
                replies[index] = Some(match outcome {
                    Ok(SessionWritten::Opened(opened)) => Reply::Opened {
                        opened,
                        notices: std::mem::take(&mut writes[index].notices),
                    },
                    Ok(SessionWritten::Closed(closed)) => Reply::Closed(closed),
                    Ok(SessionWritten::TooLate) => too_late(),
                    Err(e) => Reply::Declined(e.to_string()),
                });
            }
        }
        Err(e) => {
            for &index in &made {
                replies[index] = Some(Reply::Declined(e.to_string()));
            }
        }
    }
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(too_late))
        .collect()
}

/// `account` from the daemon's store; a store it cannot read declines, and the module reads
/// the store itself.
fn account(
    store: &Store,
    config: &Config,
    user: &str,
    now: DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Reply {
    let decided = store.current_kick_schedules_lenient().and_then(|read| {
        policy::account_decision(&policy::enforceable(read, log), user, config, now)
    });
    match decided {
        Ok(decision) => Reply::Account(decision),
        Err(e) => Reply::Declined(e.to_string()),
    }
}

fn write_of(request: &Request) -> Option<SessionWrite<'_>> {
    Some(match &request.action {
        Action::Open {
            session_key, login, ..
        } => SessionWrite::Open {
            session_key,
            login,
            process: &request.process,
            now: request.now,
        },
        Action::Close { session_key } => SessionWrite::Close {
            session_key: session_key.as_deref(),
            process: &request.process,
            now: request.now,
        },
        Action::Account { .. } => return None,
    })
}

/// A file by device and inode, whatever path names it.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Access;
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
        for (index, reply) in written.into_iter().zip(record(store, writes, clock)) {
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
        .into_new(chrono_tz::UTC)
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
    fn account_is_answered_while_writes_wait_for_their_commit_and_a_full_queue_declines() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED: only root may record sessions through the socket (the daemon checks the peer's uid)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let mut writer = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
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
        let take = || take_requests(&listener, &reader, &config, &Utc::now, &|_| {}, &queue);
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

        record_queued(&queued, &mut writer, &Utc::now, &|_| {}).unwrap();
        let reply = first_open.join().unwrap().unwrap();
        assert!(
            matches!(reply, Reply::Opened { ref opened, .. } if opened.session_key == "a" && opened.online),
            "{reply:?}"
        );
        assert_eq!(events(&writer), ["online"]);
        assert_eq!(sessions(&writer), 1);
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
}
