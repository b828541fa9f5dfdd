//! The daemon's copy thread: keeps the readers' copy (`forcelogout_core::store::reader_copy`)
//! current, with connections of its own, so that nothing else ever waits on the copy or on
//! the readers who hold it. It syncs at start, then whenever the live database or its WAL is
//! written (inotify on the store's directory; the copy is in a sub-directory, so its own writes
//! wake nobody), at most every `COALESCE` (every `BURST_COALESCE` while writes keep coming),
//! sleeping through the writes that come while a look is already due. A sync a reader of the
//! copy holds up is tried again with back-off, and the failure is logged once, not at every
//! attempt.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use forcelogout_core::store::reader_copy::{is_busy, ReaderCopy};
use forcelogout_core::Error;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, Inotify};

use crate::commands::Context;

/// The shortest time between two syncs: after one that found nothing to copy (the first
/// wake-up of a change often comes before its commit is visible), the change is copied soon.
const COALESCE: Duration = Duration::from_millis(200);
/// The time after a sync that copied something: writes that keep coming (a burst of logins)
/// are copied in fewer, larger syncs, each of which rewrites the copy's newest pages and
/// syncs its journal and file.
const BURST_COALESCE: Duration = Duration::from_secs(1);
/// A write to the WAL wakes the thread before its commit is visible (that comes after its
/// fsync): after the last wake-up the thread looks again every `COALESCE` for this long.
const SETTLE: Duration = Duration::from_secs(2);
/// With no wake-up, a look now and then anyway: a commit whose fsync took longer than
/// `SETTLE` is copied within this.
const IDLE_LOOK: Duration = Duration::from_secs(10);
/// The longest wait between two attempts while syncs fail.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the copy thread for the daemon's store.
pub fn start(ctx: &Context) -> Result<(), Error> {
    let watch = forcelogout_core::store::watch_writes(&ctx.db)?;
    let mut refresher = Refresher::new(ctx.db.clone());
    std::thread::Builder::new()
        .name("reader-copy".into())
        .spawn(move || loop {
            let woken = refresher.wait(&watch);
            refresher.woken(woken);
            refresher.look();
        })
        .map_err(|e| Error::io("starting the readers' copy", e))?;
    Ok(())
}

/// What a wake-up said about the live files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Woken {
    /// The live database or its WAL was written.
    written: bool,
    /// The live database was created or renamed into place: another file, to attach anew.
    replaced: bool,
}

/// The sync's schedule and the copy's connections.
struct Refresher {
    db: PathBuf,
    /// The database's and the WAL's names: the only files whose changes matter.
    names: [OsString; 2],
    copy: Option<ReaderCopy>,
    /// A look is wanted (start, or a write since the last successful sync).
    pending: bool,
    settle_until: Instant,
    last_look: Instant,
    /// The last successful sync copied something: the next waits `BURST_COALESCE`.
    copied_last: bool,
    /// Not before this (the back-off after a failure).
    not_before: Instant,
    backoff: Duration,
    /// The failing attempts in a row (the first is logged, then the recovery).
    failures: u32,
}

impl Refresher {
    fn new(db: PathBuf) -> Refresher {
        let name = db.file_name().unwrap_or_default().to_os_string();
        let mut wal = name.clone();
        wal.push("-wal");
        let now = Instant::now();
        Refresher {
            db,
            names: [name, wal],
            copy: None,
            pending: true,
            settle_until: now,
            last_look: now,
            copied_last: false,
            not_before: now,
            backoff: COALESCE,
            failures: 0,
        }
    }

    /// Waits on the store's directory until the next look; what the events that came say.
    fn wait(&self, watch: &Inotify) -> Woken {
        let timeout = self.next_look().saturating_duration_since(Instant::now());
        if self.pending {
            // A look is already due: the writes before it change nothing, so the thread
            // sleeps through them instead of waking at each (a login writes the WAL a dozen
            // times), then reads what came (the descriptor does not block).
            std::thread::sleep(timeout);
            return drain(watch, &self.names);
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => drain(watch, &self.names),
            _ => Woken::default(),
        }
    }

    /// When the thread should look next, whatever wakes it before.
    fn next_look(&self) -> Instant {
        let coalesce = if self.copied_last {
            BURST_COALESCE
        } else {
            COALESCE
        };
        let soon = self.not_before.max(self.last_look + coalesce);
        if self.pending || Instant::now() < self.settle_until {
            soon
        } else {
            soon.max(self.last_look + IDLE_LOOK)
        }
    }

    fn woken(&mut self, woken: Woken) {
        if woken.replaced {
            self.copy = None;
        }
        if woken.written || woken.replaced {
            self.pending = true;
            self.settle_until = Instant::now() + SETTLE;
        }
    }

    /// Syncs when it is time to.
    fn look(&mut self) {
        if Instant::now() < self.next_look() {
            return;
        }
        self.last_look = Instant::now();
        match self.sync() {
            Ok(copied) => {
                if self.failures > 0 {
                    super::log(&format!(
                        "the readers' copy is current again (after {} attempts)",
                        self.failures
                    ));
                }
                self.failures = 0;
                self.backoff = COALESCE;
                self.copied_last = copied;
                self.pending = false;
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Syncs the copy; whether it copied anything.
    fn sync(&mut self) -> Result<bool, Error> {
        let copy = match &mut self.copy {
            Some(copy) => copy,
            None => self.copy.insert(ReaderCopy::open(&self.db)?),
        };
        copy.sync().map(|synced| synced.wrote())
    }

    /// A failed sync: tried again after a back-off that doubles; the first failure of a run
    /// is logged. A copy that failed otherwise than busy is opened anew for the next try.
    fn failed(&mut self, error: &Error) {
        if self.failures == 0 {
            let why = if is_busy(error) {
                "a reader holds it; trying again"
            } else {
                "trying again"
            };
            super::log(&format!(
                "the readers' copy is not current ({why}): {error}"
            ));
        }
        if !is_busy(error) {
            self.copy = None;
        }
        self.failures += 1;
        self.pending = true;
        self.not_before = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads the pending events: whether the live database (`names[0]`) or its WAL (`names[1]`)
/// was written, and whether the database was replaced. The rest (the shared memory, the
/// readers' directory, hooks) is not the copy's business.
fn drain(watch: &Inotify, names: &[OsString; 2]) -> Woken {
    let mut woken = Woken::default();
    let moved_in = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
    while let Ok(events) = watch.read_events() {
        if events.is_empty() {
            break;
        }
        for event in events {
            let Some(name) = event.name.as_deref() else {
                continue;
            };
            if names.iter().any(|n| n == name) {
                woken.written = true;
                woken.replaced |= name == names[0] && event.mask.intersects(moved_in);
            }
        }
    }
    woken
}
