//! The daemon's reading side of the session socket: who may record, `account`, the notices
//! of each open, and the queue to the writing side.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{too_late, Action, Reply, Request, ScheduleCache, WriteRequest, MAX_BATCH, MAX_LINE};
use crate::config::Config;
use crate::policy;
use crate::sessions::LoginFacts;
use crate::store::Store;

/// How long the daemon waits for a connected module to send its request (which it writes
/// right after connecting): short, because the rest of the batch waits too.
const REQUEST_WAIT: Duration = Duration::from_millis(250);

/// A session write read from the socket, waiting for its commit, and the connection to answer.
pub struct QueuedWrite {
    pub(super) stream: UnixStream,
    pub(super) write: WriteRequest,
}

/// What the reading side made of a request: an answer now, or a write for the writing side.
pub(super) enum Triaged {
    Answer(Reply),
    Write(WriteRequest),
}

/// The daemon's reading side: waits for a connection and takes every other one already
/// waiting; answers `account` and each refusal at once from `reader` (its current schedules
/// kept in `schedules` until a version is written); works out the notices of each open; and
/// queues the writes for [`record_queued`], which commits them on its own
/// connection meanwhile (so a login's NSS look-ups and socket work overlap the previous
/// commit's fsync, and `account` never waits behind a commit). Only root may record sessions
/// (the socket's mode says so too; the kernel's word on each peer is checked again here).
pub fn take_requests(
    listener: &UnixListener,
    reader: &Store,
    schedules: &ScheduleCache,
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
    // The writes first, so that the writing side starts their commit while `account` reads.
    let (accounts, others): (Vec<_>, Vec<_>) =
        streams.into_iter().zip(requests).partition(|(_, request)| {
            matches!(
                request,
                Ok(Request {
                    action: Action::Account { .. },
                    ..
                })
            )
        });
    let mut deferred = Vec::new();
    for batch in [others, accounts] {
        if batch.is_empty() {
            continue;
        }
        let (streams, requests): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let triaged = triage_with(
            (reader, schedules),
            config,
            requests,
            clock,
            log,
            Some(&mut deferred),
        );
        answer_or_queue(streams, triaged, queue, log);
    }
    // While the writing side commits: the opens' notices (NSS, the schedules), which their
    // replies carry once committed.
    let mut notices_of = notices_reader(reader, schedules, config, log);
    for (login, now, notices) in deferred {
        let _ = notices.send(notices_of(&login, now));
    }
    Ok(())
}

/// Answers each triaged request now, or queues its write for the writing side (declining it
/// when the queue is full or the writing side has stopped).
fn answer_or_queue(
    streams: Vec<UnixStream>,
    triaged: Vec<Triaged>,
    queue: &SyncSender<QueuedWrite>,
    log: &dyn Fn(&str),
) {
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
}

/// An open whose notices are worked out after its write is queued: its user, the time of
/// its call, and where its notices go.
type DeferredNotices = (LoginFacts, DateTime<Utc>, SyncSender<Vec<String>>);

/// The notices of a login at `now`, the current schedules looked up at the first call only.
fn notices_reader<'a>(
    reader: &'a Store,
    cache: &'a ScheduleCache,
    config: &'a Config,
    log: &'a dyn Fn(&str),
) -> impl FnMut(&LoginFacts, DateTime<Utc>) -> Vec<String> + 'a {
    let mut schedules = None;
    move |login: &LoginFacts, now: DateTime<Utc>| {
        let schedules = schedules.get_or_insert_with(|| match cache.current(reader, log) {
            Ok(current) => current,
            Err(e) => {
                log(&format!("notices: {e}"));
                Vec::new().into()
            }
        });
        policy::notices_among(schedules, config, &login.user, now, &|held| {
            held.whole_row(reader)
        })
        .unwrap_or_else(|e| {
            log(&format!("notices: {e}"));
            Vec::new()
        })
    }
}

pub(super) fn send_reply(stream: &UnixStream, reply: &Reply, log: &dyn Fn(&str)) {
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

/// Sorts requests read together: refusals and `account` are answered from `reader`; opens
/// and closes become writes, each open with the notices its reply will carry (the current
/// schedules are read once for all of them).
#[cfg(test)]
pub(super) fn triage(
    reader: &Store,
    config: &Config,
    requests: Vec<Result<Request, Reply>>,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Vec<Triaged> {
    let schedules = ScheduleCache::default();
    triage_with((reader, &schedules), config, requests, clock, log, None)
}

/// `triage`; with `deferred`, an open's notices are left to work out once its write is
/// queued: the write carries the receiving end, `deferred` the rest.
fn triage_with(
    (reader, schedules): (&Store, &ScheduleCache),
    config: &Config,
    requests: Vec<Result<Request, Reply>>,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
    mut deferred: Option<&mut Vec<DeferredNotices>>,
) -> Vec<Triaged> {
    // Looked up once per batch; each request's store is compared with it.
    let own_store = file_id(reader.path());
    let mut notices_of = notices_reader(reader, schedules, config, log);
    let write = |request: Request, notices: Vec<String>, coming| {
        Triaged::Write(WriteRequest {
            request: Box::new(request),
            notices,
            coming,
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
                    Triaged::Answer(account((reader, schedules), config, user, r.now, log))
                }
                Action::Open {
                    login,
                    notices: true,
                    ..
                } => match deferred.as_deref_mut() {
                    Some(deferred) => {
                        let (send, coming) = std::sync::mpsc::sync_channel(1);
                        deferred.push((login.clone(), r.now, send));
                        write(r, Vec::new(), Some(coming))
                    }
                    None => {
                        let notices = notices_of(login, r.now);
                        write(r, notices, None)
                    }
                },
                Action::Open { .. } | Action::Close { .. } => write(r, Vec::new(), None),
            },
        })
        .collect()
}

/// `account` from the daemon's store; a store it cannot read declines, and the module reads
/// the store itself. The decision weighs the kick schedules among the current ones.
fn account(
    (store, schedules): (&Store, &ScheduleCache),
    config: &Config,
    user: &str,
    now: DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Reply {
    let decided = schedules.current(store, log).and_then(|current| {
        policy::account_decision(&current, user, config, now, &|held| held.whole_row(store))
    });
    match decided {
        Ok(decision) => Reply::Account(decision),
        Err(e) => Reply::Declined(e.to_string()),
    }
}

/// A file by device and inode, whatever path names it.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
