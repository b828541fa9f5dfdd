//! `forcelogoutd` (`forcelogoutctl daemon`): the enforcement service. It sleeps until the next
//! thing to do: a CLOCK_REALTIME timer armed at the next countdown step (which the kernel
//! cancels when the wall clock is set, so a clock jump is noticed at once), inotify on the
//! store's directory (schedule changes and new sessions, within a second), and the `ignore`
//! requests of the control socket, which threads of its own serve (`control`): no client can
//! delay this loop. A failed look at the store (busy, say) is logged and tried again with
//! back-off: the loop never exits on one.

mod authorise;
mod control;
mod desktop;
pub mod fleet;
mod reader_copy;
pub mod socket;
mod subscribers;

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::relay;
use forcelogout_core::store::{Access, IgnoreOutcome, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::Error;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::commands::Context;

/// Where the packages install the two programs; a build tree has them side by side.
const DAEMON_PROGRAM: &str = "/usr/libexec/forcelogout/forcelogoutd";
const CTL_PROGRAM: &str = "/usr/bin/forcelogoutctl";

/// The other program of the pair: beside this one (a build tree), else where packages put it.
fn companion(name: &str, installed: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from(installed))
}

/// `forcelogoutctl`, for the processes the daemon starts (desktop agents, the fleet link).
pub(crate) fn ctl_program() -> PathBuf {
    companion("forcelogoutctl", CTL_PROGRAM)
}

/// `forcelogoutctl daemon`: becomes `forcelogoutd` with the same arguments, in the same
/// process (the pid systemd and the tests started and signal). Returns only if that fails.
pub fn exec_daemon() -> Error {
    let program = companion("forcelogoutd", DAEMON_PROGRAM);
    let failure = std::process::Command::new(&program)
        .arg0("forcelogoutd")
        .args(std::env::args_os().skip(1))
        .exec();
    Error::io(format!("starting {}", program.display()), failure)
}

const SETTLE_STEP: chrono::Duration = chrono::Duration::milliseconds(100);
const SETTLE_FOR: chrono::Duration = chrono::Duration::seconds(1);
/// The module waits at most half its timeout for a session write; waiting on another writer
/// longer than that is waiting for nobody.
const SESSION_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// The session reader's connection reads a few schedules per login: a small cache keeps the
/// idle daemon small.
const READER_PAGE_CACHE_KIB: u32 = 256;

pub(crate) fn log(line: &str) {
    eprintln!(
        "forcelogoutctl daemon: {}",
        forcelogout_core::text::sanitize_line(line)
    );
}

pub fn run(ctx: &Context) -> Result<(), Error> {
    let store = Store::open(&ctx.db, Access::Create, DEFAULT_BUSY_TIMEOUT)?;
    let mut enforcer = Enforcer::new(store, ctx.config.clone(), Box::new(log))?;
    let agents = if ctx.config.desktop_notifications {
        let agents =
            desktop::Agents::new().map_err(|e| Error::io("starting desktop notifications", e))?;
        let agents = std::rc::Rc::new(std::cell::RefCell::new(agents));
        enforcer.set_desktop(Box::new(desktop::SharedAgents(agents.clone())));
        Some(agents)
    } else {
        None
    };
    let mut looks = Looks::new(Utc::now());
    // Missed logouts are settled before anything else (else the first look tries again).
    if let Err(e) = looks.skip_missed(&mut enforcer, Utc::now()) {
        log(&format!("{e} (trying again shortly)"));
    }
    // Subscribers' cursors before any socket: no event committed after start-up is missed.
    let mut subscribers = subscribers::Subscribers::start(ctx.db.clone(), ctx.config.clone());
    // Sessions first: whoever sees the main socket may count on the session socket too.
    record_sessions(ctx)?;
    reader_copy::start(ctx)?;
    let control = control::start(bind(&ctx.config.socket, 0o666)?, ctx)?;
    let io = |what: &str, e: nix::Error| Error::io(what.to_string(), e.into());
    let inotify = forcelogout_core::store::watch_writes(&ctx.db)?;
    let timer = TimerFd::new(
        ClockId::CLOCK_REALTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(|e| io("timerfd", e))?;
    log(&format!(
        "enforcing {} (socket {})",
        ctx.db.display(),
        ctx.config.socket.display()
    ));
    fleet::start(ctx)?;
    loop {
        let now = Utc::now();
        if looks.due(now) {
            looks.look(&mut enforcer, &mut subscribers, now);
        }
        let mut wake = looks.next_wake(now);
        // Desktop agents: a stuck one is killed on time, an ended one reaped.
        if let Some(agents) = &agents {
            if let Some(at) = agents.borrow_mut().tick(std::time::Instant::now()) {
                let after = at.saturating_duration_since(std::time::Instant::now());
                wake = wake.min(Utc::now() + chrono::Duration::from_std(after).unwrap_or_default());
            }
        }
        arm(&timer, wake)?;
        let settling = looks.settling(now);
        let woken = {
            let agents = agents.as_ref().map(|a| a.borrow());
            let desktop = agents.as_ref().map(|a| a.wake_fd());
            wait(&timer, &inotify, &control, desktop, settling)?
        };
        if woken.desktop {
            if let Some(agents) = &agents {
                desktop_reports(agents, &mut enforcer);
            }
        }
        if woken.timer {
            if let Err(nix::Error::ECANCELED) = timer.wait() {
                // The wall clock was set: logouts it jumped over are fired if recent, else skipped.
                log("the wall clock was changed; re-planning");
                looks.missed = Some("the wall clock was set past its logout");
            }
        }
        if (woken.inotify || settling) && drain(&inotify) {
            looks.written();
        }
        if woken.asked {
            // Only the bounded store write of each `ignore`: the requests' threads do the rest.
            for ask in control.take_asks() {
                let reply = ignore(&mut enforcer, &ask.user, ask.uid);
                ask.answer(reply);
            }
        }
        looks.wanted |= woken.timer || woken.asked || woken.desktop;
    }
}

/// The first wait after a failed look at the store; it doubles after each failure, up to
/// `LAST_RETRY`, and starts again from here after a success.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// When the main loop looks at the store (refresh and step the enforcer), and what it does
/// when a look fails: it logs, waits (the store may be busy) and looks again, never exits.
struct Looks {
    /// Why logouts may have been missed (start-up, a clock jump): skipped or fired first.
    missed: Option<&'static str>,
    /// Something happened that calls for a look (a timer, an `ignore`, a desktop report).
    wanted: bool,
    retry: Duration,
    /// After a failure: no look before this.
    retry_at: Option<DateTime<Utc>>,
    hooks_may_have_changed: bool,
    /// inotify fires when a writer starts writing to the WAL; its commit becomes visible a
    /// little later (after its fsync). So after any write the loop looks again every
    /// SETTLE_STEP for SETTLE_FOR: a change is seen within a second whatever the disk. A burst
    /// of writes wakes it for each, but it looks at most every SETTLE_STEP meanwhile, so the
    /// burst is not slowed by the loop's own reads.
    settle_until: DateTime<Utc>,
    last: DateTime<Utc>,
    planned_wake: DateTime<Utc>,
}

impl Looks {
    fn new(now: DateTime<Utc>) -> Looks {
        Looks {
            missed: Some("a logout was missed while the daemon was down"),
            wanted: true,
            retry: FIRST_RETRY,
            retry_at: None,
            hooks_may_have_changed: false,
            settle_until: now,
            last: now,
            planned_wake: now,
        }
    }

    fn due(&self, now: DateTime<Utc>) -> bool {
        if let Some(at) = self.retry_at {
            return now >= at;
        }
        self.wanted || now >= self.last + SETTLE_STEP
    }

    fn settling(&self, now: DateTime<Utc>) -> bool {
        now < self.settle_until
    }

    /// The store was written: look again every SETTLE_STEP for SETTLE_FOR.
    fn written(&mut self) {
        self.hooks_may_have_changed = true;
        self.settle_until = Utc::now() + SETTLE_FOR;
    }

    fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.retry_at {
            Some(at) => at,
            None if self.settling(now) => self.planned_wake.min(self.last + SETTLE_STEP),
            None => self.planned_wake,
        }
    }

    fn look(
        &mut self,
        enforcer: &mut Enforcer,
        subscribers: &mut subscribers::Subscribers,
        now: DateTime<Utc>,
    ) {
        match self.enforce(enforcer, now) {
            Ok(wake) => self.succeeded(wake),
            Err(e) => {
                let wait = self.failed(now);
                log(&format!("{e} (trying again in {} ms)", wait.as_millis()));
            }
        }
        if self.hooks_may_have_changed {
            subscribers.rescan();
            self.hooks_may_have_changed = false;
        }
        // New events may have been committed (by PAM, by this loop, by a request).
        subscribers.notify();
        (self.last, self.wanted) = (now, false);
    }

    fn succeeded(&mut self, wake: DateTime<Utc>) {
        (self.planned_wake, self.retry_at, self.retry) = (wake, None, FIRST_RETRY);
    }

    /// Puts the next look off after a failure; for how long.
    fn failed(&mut self, now: DateTime<Utc>) -> Duration {
        let wait = self.retry;
        let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
        (self.planned_wake, self.retry_at) = (at, Some(at));
        self.retry = (wait * 2).min(LAST_RETRY);
        wait
    }

    /// Fires or skips the logouts that may have been missed, if any may have been.
    fn skip_missed(&mut self, enforcer: &mut Enforcer, now: DateTime<Utc>) -> Result<(), Error> {
        if let Some(why) = self.missed {
            for skipped in enforcer.skip_missed(now)? {
                log(&format!("schedule {skipped}: {why}"));
            }
            self.missed = None;
        }
        Ok(())
    }

    /// One look: missed logouts first, then the store's changes, then what is due now; when
    /// to look next.
    fn enforce(
        &mut self,
        enforcer: &mut Enforcer,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Error> {
        self.skip_missed(enforcer, now)?;
        enforcer.refresh()?;
        let (report, wake) = enforcer.step(now)?;
        if !report.warned.is_empty() {
            log(&format!("warned {}", report.warned.join(", ")));
        }
        Ok(wake)
    }
}

/// What woke the main loop.
struct Woken {
    timer: bool,
    inotify: bool,
    /// An `ignore` waits.
    asked: bool,
    desktop: bool,
}

/// Sleeps until the timer fires, the store is written, an `ignore` waits or a desktop agent
/// reports.
fn wait(
    timer: &TimerFd,
    inotify: &nix::sys::inotify::Inotify,
    control: &control::Control,
    desktop: Option<std::os::fd::BorrowedFd<'_>>,
    settling: bool,
) -> Result<Woken, Error> {
    // While settling the loop looks every SETTLE_STEP anyway: inotify is left out of the poll
    // then, so a burst of writes (a dozen page writes each) does not wake it for every page, on
    // a core the writers need.
    let watch = if settling {
        PollFlags::empty()
    } else {
        PollFlags::POLLIN
    };
    let mut fds = vec![
        PollFd::new(timer.as_fd(), PollFlags::POLLIN),
        PollFd::new(inotify.as_fd(), watch),
        PollFd::new(control.wake_fd(), PollFlags::POLLIN),
    ];
    if let Some(fd) = desktop {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(e) => return Err(Error::io("waiting", e.into())),
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    Ok(Woken {
        timer: ready(&fds[0]),
        inotify: ready(&fds[1]),
        asked: ready(&fds[2]),
        desktop: fds.get(3).is_some_and(ready),
    })
}

/// Reads every pending inotify event; whether there was any.
fn drain(inotify: &nix::sys::inotify::Inotify) -> bool {
    let mut any = false;
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        any = true;
    }
    any
}

/// What the desktop agents reported: "Keep working" is `forcelogoutctl ignore` for that
/// user, through the same `Enforcer::ignore` as the socket's.
fn desktop_reports(
    agents: &std::rc::Rc<std::cell::RefCell<desktop::Agents>>,
    enforcer: &mut Enforcer,
) {
    let reports = agents.borrow_mut().take_reports();
    for received in reports {
        if let forcelogout_core::enforce::desktop::Report::Ignored { key } = received.report {
            match enforcer.ignore(&received.user, received.uid, Utc::now()) {
                Ok(IgnoreOutcome::Ignored(_)) => log(&format!(
                    "{} chose \"Keep working\" on the desktop (schedule {key})",
                    received.user
                )),
                Ok(_) => {}
                Err(e) => log(&format!(
                    "recording the desktop ignore of {}: {e}",
                    received.user
                )),
            }
        }
    }
}

/// Arms the timer at `wake` on the wall clock, to be cancelled if the clock is set.
fn arm(timer: &TimerFd, wake: DateTime<Utc>) -> Result<(), Error> {
    let at = TimeSpec::new(wake.timestamp(), i64::from(wake.timestamp_subsec_nanos()));
    timer
        .set(
            Expiration::OneShot(at),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
        .map_err(|e| Error::io("arming the timer", e.into()))
}

/// Records the PAM module's session writes on the root-only session socket, in threads of
/// their own with their own connections, so that a login never waits behind enforcement: one
/// reads requests, answers `account` and works out the notices; the other commits the writes
/// that arrive together in one transaction while the next ones are read.
fn record_sessions(ctx: &Context) -> Result<(), Error> {
    let listener = bind(&ctx.config.session_socket, 0o600)?;
    let mut writer = relay::SessionWriter::new(
        Store::open(&ctx.db, Access::ReadWrite, SESSION_BUSY_TIMEOUT)?.for_session_writer()?,
    );
    let reader = Store::open(&ctx.db, Access::ReadOnly, SESSION_BUSY_TIMEOUT)?;
    reader.limit_page_cache(READER_PAGE_CACHE_KIB)?;
    let config = ctx.config.clone();
    let (queue, queued) = std::sync::mpsc::sync_channel(relay::QUEUE_BOUND);
    std::thread::Builder::new()
        .name("session-writes".into())
        .spawn(move || while writer.record_queued(&queued, &Utc::now, &log).is_ok() {})
        .map_err(|e| Error::io("starting the session recorder", e))?;
    std::thread::Builder::new()
        .name("sessions".into())
        .spawn(move || loop {
            let taken = relay::take_requests(&listener, &reader, &config, &Utc::now, &log, &queue);
            if let Err(e) = taken {
                log(&format!("session requests failed: {e}"));
                // Out of descriptors, say: meanwhile the modules write the store themselves.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .map_err(|e| Error::io("starting the session reader", e))?;
    Ok(())
}

/// A socket at `path` with `mode` (the daemon checks who asks); a stale one is replaced.
fn bind(path: &std::path::Path, mode: u32) -> Result<UnixListener, Error> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("setting the mode of {}", dir.display()), e))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(Error::io(
                format!("{}: another daemon is running", path.display()),
                std::io::Error::from(std::io::ErrorKind::AddrInUse),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
    Ok(listener)
}

/// The reply to a caller's `ignore`: only the bounded store write of `Enforcer::ignore`.
fn ignore(enforcer: &mut Enforcer, user: &str, uid: u32) -> socket::Reply {
    match enforcer.ignore(user, uid, Utc::now()) {
        Ok(IgnoreOutcome::Ignored(ids)) if !ids.is_empty() => socket::Reply {
            stdout: format!(
                "You chose to keep working: your sessions stay (schedule {}).\n",
                ids.join(", ")
            ),
            ..Default::default()
        },
        Ok(IgnoreOutcome::Ignored(_)) => socket::Reply {
            stdout: "You already chose to keep working.\n".into(),
            ..Default::default()
        },
        Ok(IgnoreOutcome::KickOnly) => control::refuse(
            4,
            "permission denied: this logout cannot be ignored (the administrator chose a kick)",
        ),
        Ok(IgnoreOutcome::Deferred) => socket::Reply {
            stdout: "You chose to keep working: your sessions stay (recorded as soon as the store can be written).\n".into(),
            ..Default::default()
        },
        Ok(IgnoreOutcome::NothingToIgnore) => {
            control::refuse(1, &format!("no logout warning is running for {user}"))
        }
        Err(e) => control::refuse(e.exit_code(), &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_look_is_tried_again_later_and_later_until_one_succeeds() {
        let start = Utc::now();
        let mut looks = Looks::new(start);
        let waits: Vec<u128> = (0..8).map(|_| looks.failed(start).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Nothing calls for a look before the retry, not even a wake-up.
        looks.wanted = true;
        assert!(!looks.due(start + chrono::Duration::seconds(4)));
        assert!(looks.due(start + chrono::Duration::seconds(5)));
        assert_eq!(looks.next_wake(start), start + chrono::Duration::seconds(5));
        let wake = start + chrono::Duration::hours(1);
        looks.succeeded(wake);
        assert_eq!(looks.next_wake(start), wake);
        assert_eq!(looks.failed(start).as_millis(), 100);
    }
}
