//! The daemon's main loop. It sleeps until the next thing to do: a CLOCK_REALTIME timer armed
//! at the next countdown step (which the kernel cancels when the wall clock is set, so a clock
//! jump is noticed at once), inotify on the store's directory (schedule changes and new
//! sessions, within a second), the `ignore` requests of the control socket, which threads of
//! their own serve (`control`): no client can delay this loop; and the desktop agents'
//! reports. A failed look at the store (busy, say) is logged and tried again with back-off:
//! the loop never exits on one.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::rc::Rc;

use chrono::{DateTime, Utc};
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::store::IgnoreOutcome;
use forcelogout_core::Error;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::Inotify;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerFd, TimerSetTimeFlags};

use super::looks::Looks;
use super::{control, desktop, log, socket, subscribers};

/// What the main loop waits on and acts with.
pub(super) struct Daemon {
    pub(super) enforcer: Enforcer,
    pub(super) agents: Option<Rc<RefCell<desktop::Agents>>>,
    pub(super) looks: Looks,
    pub(super) subscribers: subscribers::Subscribers,
    pub(super) control: control::Control,
    pub(super) inotify: Inotify,
    pub(super) timer: TimerFd,
}

impl Daemon {
    /// Looks at the store (refresh, then step the enforcer) if something calls for it.
    pub(super) fn look_if_due(&mut self) {
        let now = Utc::now();
        if self.looks.due(now) {
            self.looks
                .look(&mut self.enforcer, &mut self.subscribers, now);
        }
    }

    /// Arms the timer at the next thing to do and sleeps until something happens.
    pub(super) fn wait(&mut self) -> Result<Woken, Error> {
        let now = Utc::now();
        let mut wake = self.looks.next_wake(now);
        // Desktop agents: a stuck one is killed on time, an ended one reaped.
        if let Some(agents) = &self.agents {
            if let Some(at) = agents.borrow_mut().tick(std::time::Instant::now()) {
                let after = at.saturating_duration_since(std::time::Instant::now());
                wake = wake.min(Utc::now() + chrono::Duration::from_std(after).unwrap_or_default());
            }
        }
        arm(&self.timer, wake)?;
        let settling = self.looks.settling(now);
        let agents = self.agents.as_ref().map(|a| a.borrow());
        let desktop = agents.as_ref().map(|a| a.wake_fd());
        poll_once(&self.timer, &self.inotify, &self.control, desktop, settling)
    }

    /// Acts on what woke the loop, then looks at the store if that calls for it.
    pub(super) fn dispatch(&mut self, woken: Woken) -> Result<(), Error> {
        if woken.desktop {
            if let Some(agents) = &self.agents {
                desktop_reports(agents, &mut self.enforcer);
            }
        }
        if woken.timer {
            if let Err(nix::Error::ECANCELED) = self.timer.wait() {
                // The wall clock was set: logouts it jumped over are fired if recent, else skipped.
                log("the wall clock was changed; re-planning");
                self.looks.missed = Some("the wall clock was set past its logout");
            }
        }
        if (woken.inotify || woken.settling) && drain(&self.inotify) {
            self.looks.written();
        }
        if woken.asked {
            // Only the bounded store write of each `ignore`: the requests' threads do the rest.
            for ask in self.control.take_asks() {
                let reply = ignore(&mut self.enforcer, &ask.user, ask.uid);
                ask.answer(reply);
            }
        }
        self.looks.wanted |= woken.timer || woken.asked || woken.desktop;
        self.look_if_due();
        Ok(())
    }
}

/// What woke the main loop.
pub(super) struct Woken {
    timer: bool,
    inotify: bool,
    /// An `ignore` waits.
    asked: bool,
    desktop: bool,
    /// The loop was settling after a write when it went to sleep (inotify left out).
    settling: bool,
}

/// Sleeps until the timer fires, the store is written, an `ignore` waits or a desktop agent
/// reports.
fn poll_once(
    timer: &TimerFd,
    inotify: &Inotify,
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
        settling,
    })
}

/// Reads every pending inotify event; whether there was any.
fn drain(inotify: &Inotify) -> bool {
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
fn desktop_reports(agents: &Rc<RefCell<desktop::Agents>>, enforcer: &mut Enforcer) {
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
