//! The daemon's writing side of the session socket: group commit, and a store that is busy.

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvError, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::server::{send_reply, QueuedWrite};
use super::{too_late, Action, Reply, Request, WriteRequest, MAX_BATCH, NOTICES_WAIT};
use crate::error::Error;
use crate::store::{Access, SessionWrite, SessionWritten, Store};

/// The longest the writer waits on another process's write lock in one attempt: a write
/// whose module still waits is answered `Queued` before its deadline instead.
const LONGEST_BUSY_WAIT: Duration = Duration::from_secs(2);
/// An attempt while every waiting write is already answered waits this long on the lock, so
/// that writes arriving meanwhile are still answered before their modules stop waiting.
const ANSWERED_BUSY_WAIT: Duration = Duration::from_millis(100);
/// A write is answered `Queued` this long before its module stops waiting (the reply has to
/// reach it).
const REPLY_MARGIN: Duration = Duration::from_millis(100);
/// The session writes after which the writer asks its checkpointer to copy the WAL: about 200
/// frames (a write is 6 to 12). Counted, because the WAL's file keeps its size between cycles.
const WRITES_PER_CHECKPOINT: usize = 24;
/// Pauses between attempts on a busy store: from the first to the longest, doubling.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A write taken from the queue and not yet made: the connection of a module that still
/// waits for it, or none once the module was told `Queued`.
pub(super) struct Waiting {
    reply_to: Option<UnixStream>,
    write: WriteRequest,
}

/// The daemon's writing side: takes every write queued, records them in one transaction
/// (group commit) and answers each. While another process holds the store's write lock it
/// keeps them, in order, answers `Queued` to each module before the module stops waiting,
/// and tries again with back-off: what the module was told is written, nothing twice.
pub struct SessionWriter {
    store: Store,
    waiting: Vec<Waiting>,
    pause: Duration,
    /// Whether the last attempt failed (the failure is logged once, not at every attempt).
    stalled: bool,
    /// Wakes the checkpointer every `WRITES_PER_CHECKPOINT` writes; `None` where it could not
    /// start (the writer then copies the WAL itself at its bound).
    checkpointer: Option<SyncSender<()>>,
    /// Writes committed since the checkpointer was last woken.
    since_checkpoint: usize,
}

impl SessionWriter {
    pub fn new(store: Store) -> SessionWriter {
        let checkpointer = start_checkpointer(&store);
        SessionWriter {
            store,
            waiting: Vec::new(),
            pause: FIRST_PAUSE,
            stalled: false,
            checkpointer,
            since_checkpoint: 0,
        }
    }

    /// The store it writes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One round: takes what is queued (waiting for it when nothing is held), tries to write
    /// everything held, and answers. Ends with the reading side, once nothing is held.
    pub fn record_queued(
        &mut self,
        queue: &Receiver<QueuedWrite>,
        clock: &dyn Fn() -> DateTime<Utc>,
        log: &dyn Fn(&str),
    ) -> Result<(), RecvError> {
        self.take(queue)?;
        let now = clock();
        let wait = self.busy_wait(now);
        if let Err(e) = self.store.set_busy_timeout(wait) {
            log(&format!("session writer: {e}"));
        }
        match record(&mut self.store, &mut self.waiting, clock, log) {
            Ok(replies) => {
                if self.stalled {
                    log(&format!(
                        "the store is free again: {} waiting session writes recorded",
                        self.waiting.len()
                    ));
                }
                self.since_checkpoint += self.waiting.len();
                answer(self.waiting.drain(..).zip(replies).collect(), log);
                self.pause = FIRST_PAUSE;
                self.stalled = false;
                self.ask_for_checkpoint();
            }
            Err(e) => {
                self.keep_waiting(clock(), log);
                if !self.stalled {
                    log(&format!(
                        "session writes wait in memory until the store can be written: {e}"
                    ));
                }
                self.stalled = true;
                self.pause = (self.pause * 2).min(LONGEST_PAUSE);
            }
        }
        Ok(())
    }

    /// Wakes the checkpointer once enough writes are in the WAL (after the replies: the copy
    /// runs beside the next commits, never before a reply).
    fn ask_for_checkpoint(&mut self) {
        if self.since_checkpoint < WRITES_PER_CHECKPOINT {
            return;
        }
        if let Some(checkpointer) = &self.checkpointer {
            // Full: a copy is asked for already.
            let _ = checkpointer.try_send(());
        }
        self.since_checkpoint = 0;
    }

    /// Takes queued writes up to `MAX_BATCH` held: waits for one when none is held, and at
    /// most the current pause otherwise.
    fn take(&mut self, queue: &Receiver<QueuedWrite>) -> Result<(), RecvError> {
        let first = if self.waiting.is_empty() {
            Some(queue.recv()?)
        } else {
            match queue.recv_timeout(self.pause) {
                Ok(queued) => Some(queued),
                // With the reading side gone, what is held is still written.
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        self.waiting.extend(first.map(Waiting::from));
        while self.waiting.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => self.waiting.push(Waiting::from(queued)),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// How long this attempt may wait on the write lock: until the first module still
    /// waiting must be answered.
    fn busy_wait(&self, now: DateTime<Utc>) -> Duration {
        let first_deadline = self
            .waiting
            .iter()
            .filter(|w| w.reply_to.is_some())
            .map(|w| w.write.request.deadline)
            .min();
        match first_deadline {
            None => ANSWERED_BUSY_WAIT,
            Some(deadline) => (deadline - now)
                .to_std()
                .unwrap_or_default()
                .saturating_sub(REPLY_MARGIN)
                .clamp(Duration::from_millis(10), LONGEST_BUSY_WAIT),
        }
    }

    /// After a failed attempt: each module still waiting is told `Queued` while it still
    /// waits, and its write kept; a write whose module has stopped waiting is dropped (that
    /// module writes the store itself).
    fn keep_waiting(&mut self, now: DateTime<Utc>, log: &dyn Fn(&str)) {
        let notices_until = Instant::now() + NOTICES_WAIT;
        self.waiting.retain_mut(|waiting| {
            let Some(stream) = waiting.reply_to.take() else {
                return true;
            };
            if now >= waiting.write.request.deadline {
                send_reply(&stream, &too_late(), log);
                return false;
            }
            let notices = waiting.write.take_notices(notices_until);
            send_reply(&stream, &Reply::Queued { notices }, log);
            true
        });
    }
}

/// Sends each committed write's reply: first every reply that is complete (the closes, the
/// opens whose notices came with the write), then the opens whose notices the reading side was
/// still working out, each once it has them (one bound for the whole batch). A close never
/// waits for another login's NSS look-ups.
fn answer(answered: Vec<(Waiting, Reply)>, log: &dyn Fn(&str)) {
    let notices_until = Instant::now() + NOTICES_WAIT;
    let mut completed_later = Vec::new();
    for (waiting, reply) in answered {
        let Some(stream) = waiting.reply_to else {
            continue;
        };
        match reply {
            Reply::Opened { opened, notices } if waiting.write.coming.is_some() => {
                completed_later.push((stream, waiting.write, opened, notices));
            }
            reply => send_reply(&stream, &reply, log),
        }
    }
    for (stream, mut write, opened, mut notices) in completed_later {
        notices.extend(write.take_notices(notices_until));
        send_reply(&stream, &Reply::Opened { opened, notices }, log);
    }
}

/// The session writer's checkpointer: a thread with a connection of its own that copies the
/// WAL into the database whenever the writer asks, beside its commits, so that a login's
/// commit never waits for that copy or its fsync of the database file. A failed or partial
/// copy is left to the next request, and to the writer's own bound. It ends with the writer.
fn start_checkpointer(writer: &Store) -> Option<SyncSender<()>> {
    if writer.path() == std::path::Path::new(":memory:") {
        return None;
    }
    let store = Store::open(writer.path(), Access::ReadWrite, LONGEST_BUSY_WAIT).ok()?;
    let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("checkpoints".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                let _ = store.checkpoint();
            }
        })
        .ok()?;
    Some(ask)
}

impl From<QueuedWrite> for Waiting {
    fn from(queued: QueuedWrite) -> Waiting {
        Waiting {
            reply_to: Some(queued.stream),
            write: queued.write,
        }
    }
}

/// Records the held writes in one transaction, exactly as the module would itself; a reply
/// for each, in order. A write whose module has stopped waiting is not made; one answered
/// `Queued` always is. An error is a failed transaction: nothing was written.
pub(super) fn record(
    store: &mut Store,
    waiting: &mut [Waiting],
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Result<Vec<Reply>, Error> {
    // The reading side queues only opens and closes; anything else is declined, unwritten.
    let (made, session_writes): (Vec<usize>, Vec<SessionWrite<'_>>) = waiting
        .iter()
        .enumerate()
        .filter_map(|(index, w)| Some((index, write_of(&w.write.request)?)))
        .unzip();
    let in_time = |k: usize| {
        let w = &waiting[made[k]];
        w.reply_to.is_none() || clock() < w.write.request.deadline
    };
    let outcomes = store.record_session_writes(&session_writes, &in_time)?;
    drop(session_writes);
    let mut replies: Vec<Reply> = (0..waiting.len())
        .map(|_| Reply::Declined("not a session write".into()))
        .collect();
    for (index, outcome) in made.into_iter().zip(outcomes) {
        let w = &mut waiting[index];
        replies[index] = match outcome {
            // The notices still being worked out are added when answering (`answer`).
            Ok(SessionWritten::Opened(opened)) => Reply::Opened {
                opened,
                notices: std::mem::take(&mut w.write.notices),
            },
            Ok(SessionWritten::Closed(closed)) => Reply::Closed(closed),
            Ok(SessionWritten::TooLate) => too_late(),
            Err(e) => {
                if w.reply_to.is_none() {
                    log(&format!("a waiting session write failed: {e}"));
                }
                Reply::Declined(e.to_string())
            }
        };
    }
    Ok(replies)
}

fn write_of(request: &Request) -> Option<SessionWrite<'_>> {
    Some(match &request.action {
        Action::Open {
            session_key,
            login,
            notices,
        } => SessionWrite::Open {
            session_key,
            login,
            process: &request.process,
            shows_notices: *notices,
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
