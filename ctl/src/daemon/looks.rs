//! The main loop's looks at the store: when they are due, and the back-off after a failed one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::Error;

use super::{log, subscribers};

const SETTLE_STEP: chrono::Duration = chrono::Duration::milliseconds(100);
const SETTLE_FOR: chrono::Duration = chrono::Duration::seconds(1);
/// The first wait after a failed look at the store; it doubles after each failure, up to
/// `LAST_RETRY`, and starts again from here after a success.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// When the main loop looks at the store (refresh and step the enforcer), and what it does
/// when a look fails: it logs, waits (the store may be busy) and looks again, never exits.
pub(super) struct Looks {
    /// Why logouts may have been missed (start-up, a clock jump): skipped or fired first.
    pub(super) missed: Option<&'static str>,
    /// Something happened that calls for a look (a timer, an `ignore`, a desktop report).
    pub(super) wanted: bool,
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
    pub(super) fn new(now: DateTime<Utc>) -> Looks {
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

    pub(super) fn due(&self, now: DateTime<Utc>) -> bool {
        if let Some(at) = self.retry_at {
            return now >= at;
        }
        self.wanted || now >= self.last + SETTLE_STEP
    }

    pub(super) fn settling(&self, now: DateTime<Utc>) -> bool {
        now < self.settle_until
    }

    /// The store was written: look again every SETTLE_STEP for SETTLE_FOR.
    pub(super) fn written(&mut self) {
        self.hooks_may_have_changed = true;
        self.settle_until = Utc::now() + SETTLE_FOR;
    }

    pub(super) fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.retry_at {
            Some(at) => at,
            None if self.settling(now) => self.planned_wake.min(self.last + SETTLE_STEP),
            None => self.planned_wake,
        }
    }

    pub(super) fn look(
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
    pub(super) fn skip_missed(
        &mut self,
        enforcer: &mut Enforcer,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
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
