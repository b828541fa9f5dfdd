//! Enforcement (SPEC §4–5): the countdown before each logout, the kick or the expiry of a
//! warning, messages to terminals, termination, and the stale-session sweep. The daemon calls
//! `Enforcer::step` whenever something may be due; `forcelogoutctl logout` without a daemon
//! drives the same code until its logout is done.
//!
//! This file holds the `Enforcer`, its `step` and what the parts share; `countdown.rs` the
//! countdowns and the logouts that end them, `idle.rs` idle logout, `retention.rs` the
//! stale-session sweep and the retention prune.

mod countdown;
pub mod desktop;
mod idle;
pub mod processes;
mod retention;
pub mod terminal;
mod unrecorded;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::Error;
use crate::ids::IdKey;
use crate::policy::Timing;
use crate::sessions::{current_boot_id, host_name};
use crate::store::{
    CountdownState, IgnoreOutcome, LiveSession, ScheduleEvent, ScheduleRecord, Store,
};
use crate::targeting::Identity;
use unrecorded::{PendingIgnore, Unrecorded};

/// How long processes get after SIGHUP, and after SIGTERM, before the next signal.
pub const HUP_GRACE: Duration = Duration::from_secs(1);
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// Schedule versions read at a time: a long history is never held twice while it is taken in.
const REFRESH_BATCH: usize = 256;
/// The enforcer's page cache: it reads each schedule once at start and a few rows per pass;
/// SQLite's default 2 MB would keep the schedule table resident in the daemon for nothing.
const PAGE_CACHE_KIB: u32 = 256;
/// The longest the enforcer waits on another process's write lock before it acts without
/// recording (and records later): a kick is never held back by someone else's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// How soon the enforcer looks again after a write failed.
const RETRY_WRITE: chrono::Duration = chrono::Duration::seconds(1);

/// One occurrence of a logout: a schedule and the instant it takes effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub record: ScheduleRecord,
    pub due: DateTime<Utc>,
    /// When the countdown starts.
    pub warn_from: DateTime<Utc>,
}

/// What the enforcer did in one step, for the log and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    pub warned: Vec<String>,
    pub removed: usize,
    pub skipped: Vec<String>,
    pub stale: usize,
}

pub struct Enforcer {
    store: Store,
    config: Config,
    host: String,
    boot_id: String,
    /// The current set, by Id, and the last schedule version read.
    schedules: BTreeMap<IdKey, Armed>,
    last_version: i64,
    /// The last countdown step announced per instance (in memory: after a restart a step
    /// may be announced twice, never recorded twice).
    announced: HashMap<(String, DateTime<Utc>), DateTime<Utc>>,
    next_sweep: DateTime<Utc>,
    next_prune: DateTime<Utc>,
    /// Set for `forcelogoutctl logout` without a daemon: only that logout, no sweeps.
    only: Option<String>,
    /// Idle sessions warned, by session key: when they go, and their terminal's last input
    /// when warned (input since then cancels the logout).
    idle_warned: HashMap<String, (DateTime<Utc>, std::time::SystemTime)>,
    log: Box<dyn FnMut(&str)>,
    /// Desktop notifications (SPEC §10), when the daemon delivers them; and the (user,
    /// schedule) countdowns shown there during the current step.
    desktop: Option<Box<dyn desktop::Desktop>>,
    desktop_running: HashSet<(String, String)>,
    /// What was done and not yet recorded: the store could not be written.
    unrecorded: Unrecorded,
    /// A write failed in this step: the rest of the step acts without trying to write, and
    /// the failure is logged once until a write succeeds again.
    write_failed: bool,
    stalled: bool,
}

/// What the enforcer keeps of a current schedule: when its logouts fall. The whole row (group,
/// message, …) is read back by its version when the schedule's countdown begins: as whole rows,
/// 10,000 schedules held 7.7 MB of the daemon's memory.
#[derive(Debug)]
struct Armed {
    version: i64,
    timing: Timing,
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

impl Enforcer {
    pub fn new(store: Store, config: Config, log: Box<dyn FnMut(&str)>) -> Result<Enforcer, Error> {
        store.limit_page_cache(PAGE_CACHE_KIB)?;
        store.set_busy_timeout(BUSY_TIMEOUT)?;
        let mut enforcer = Enforcer {
            store,
            config,
            host: host_name(),
            boot_id: current_boot_id(),
            schedules: BTreeMap::new(),
            last_version: 0,
            announced: HashMap::new(),
            next_sweep: DateTime::<Utc>::MIN_UTC,
            next_prune: DateTime::<Utc>::MIN_UTC,
            only: None,
            idle_warned: HashMap::new(),
            log,
            desktop: None,
            desktop_running: HashSet::new(),
            unrecorded: Unrecorded::default(),
            write_failed: false,
            stalled: false,
        };
        enforcer.refresh()?;
        Ok(enforcer)
    }

    /// An enforcer for one schedule only (no stale sweeps): what `forcelogoutctl logout` runs
    /// when no daemon does.
    pub fn for_one(
        store: Store,
        config: Config,
        id: &str,
        log: Box<dyn FnMut(&str)>,
    ) -> Result<Enforcer, Error> {
        let mut enforcer = Enforcer::new(store, config, log)?;
        enforcer.only = Some(id.to_string());
        let only = IdKey::of(id);
        enforcer.schedules.retain(|k, _| *k == only);
        enforcer.next_sweep = DateTime::<Utc>::MAX_UTC;
        Ok(enforcer)
    }

    /// Whether the countdown of `id` due at `due` has ended.
    pub fn is_done(&self, id: &str, due: DateTime<Utc>) -> Result<bool, Error> {
        Ok(matches!(
            self.store.countdown_state(id, due)?,
            Some(CountdownState::Done) | Some(CountdownState::Skipped)
        ))
    }

    /// Countdowns also go to users' desktops through `desktop` (the daemon's agents).
    pub fn set_desktop(&mut self, desktop: Box<dyn desktop::Desktop>) {
        self.desktop = Some(desktop);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the schedule versions written since the last look; true if any were.
    pub fn refresh(&mut self) -> Result<bool, Error> {
        let mut changed = false;
        loop {
            let changes = self
                .store
                .schedule_versions_after(self.last_version, REFRESH_BATCH)?;
            if changes.is_empty() {
                return Ok(changed);
            }
            changed = true;
            self.take_versions(changes);
        }
    }

    fn take_versions(&mut self, changes: Vec<(i64, Result<ScheduleRecord, Error>)>) {
        for (version, record) in changes {
            self.last_version = version;
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    (self.log)(&format!("ignoring an invalid schedule row: {e}"));
                    continue;
                }
            };
            if self.only.as_ref().is_some_and(|only| *only != record.id) {
                continue;
            }
            if record.event == ScheduleEvent::Deleted {
                self.schedules.remove(&IdKey::of(&record.id));
            } else {
                let timing = Timing::of(&record);
                self.schedules
                    .insert(IdKey::of(&record.id), Armed { version, timing });
            }
        }
    }

    /// The instance of `record` that matters at `now`: the earliest one due after the
    /// catch-up floor and after the version was written (a logout that was due before the
    /// schedule said so never fires).
    pub fn instance_at(&self, record: &ScheduleRecord, now: DateTime<Utc>) -> Option<Instance> {
        let (due, warn_from) = self.window_at(&Timing::of(record), now)?;
        Some(Instance {
            record: record.clone(),
            due,
            warn_from,
        })
    }

    /// The due instant of `instance_at`, and when its countdown begins.
    fn window_at(
        &self,
        timing: &Timing,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let written = timing.written?;
        let floor = (now - chrono(self.config.catch_up)).max(written);
        let due = if timing.immediate {
            timing
                .immediate_instant(self.config.immediate_warning)
                .filter(|&t| t >= floor)?
        } else {
            timing.after(self.config.immediate_warning, floor)?
        };
        let warning = if timing.immediate {
            due - written
        } else {
            chrono(self.config.scheduled_warning)
        };
        Some((due, (due - warning).max(written)))
    }

    /// Logouts missed by more than the catch-up window (the daemon was down, or the clock
    /// jumped): recorded as skipped and logged, never fired late.
    pub fn skip_missed(&mut self, now: DateTime<Utc>) -> Result<Vec<String>, Error> {
        let floor = now - chrono(self.config.catch_up);
        let mut skipped = Vec::new();
        let mut missed = Vec::new();
        for armed in self.schedules.values() {
            let Some(written) = armed.timing.written else {
                continue;
            };
            let due = armed
                .timing
                .at_or_before(self.config.immediate_warning, floor)
                .filter(|&due| due > written);
            if let Some(due) = due {
                missed.push((armed.version, due));
            }
        }
        for (version, due) in missed {
            let Some(record) = self.store.schedule_version(version)? else {
                continue;
            };
            if self.store.countdown_state(&record.id, due)?.is_none() {
                self.store.skip_countdown(&record, due)?;
                (self.log)(&format!(
                    "skipped the logout of {} due at {} (schedule {}): missed by more than the catch-up window",
                    record.schedule.group,
                    crate::clock::format_timestamp(due),
                    record.id
                ));
                skipped.push(record.id.clone());
            }
        }
        Ok(skipped)
    }

    /// Does everything due at `now`; returns the report and when to call again at the latest.
    /// A store that cannot be written (another process holds its write lock) does not stop
    /// it: what it does meanwhile is recorded once the store can be written.
    pub fn step(&mut self, now: DateTime<Utc>) -> Result<(StepReport, DateTime<Utc>), Error> {
        let mut report = StepReport::default();
        self.write_failed = false;
        let mut wake = self.write_unrecorded(now);
        wake = wake.min(self.housekeeping(now, &mut report));
        let mut identities: HashMap<String, Option<Identity>> = HashMap::new();
        if self.only.is_none() {
            match self.check_idle(now, &mut identities, &mut report) {
                Ok(next) => wake = next.map_or(wake, |next| wake.min(next)),
                Err(e) => wake = wake.min(self.write_failure(now, &e)),
            }
        }
        self.desktop_running.clear();
        // Only the schedules whose countdown has begun are read whole (the others only lower
        // `wake`): a pass over 10,000 schedules reads none of them.
        let mut active = Vec::new();
        for armed in self.schedules.values() {
            match self.window_at(&armed.timing, now) {
                Some((_, warn_from)) if warn_from > now => wake = wake.min(warn_from),
                Some(_) => active.push(armed.version),
                None => {}
            }
        }
        for version in active {
            if let Some(record) = self.store.schedule_version(version)? {
                let next = self.run_countdowns(&record, now, &mut identities, &mut report)?;
                wake = wake.min(next);
            }
        }
        if self.write_failed {
            wake = wake.min(now + RETRY_WRITE);
        } else if self.stalled {
            self.stalled = false;
            (self.log)("the store can be written again");
        }
        if let Some(desktop) = self.desktop.as_mut() {
            desktop.retain(&self.desktop_running);
        }
        Ok((report, wake.max(now)))
    }

    /// What was done while the store could not be written, written now if it can be; when to
    /// try again if not.
    fn write_unrecorded(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let never = now + chrono::Duration::hours(1);
        if self.unrecorded.is_empty() {
            return never;
        }
        match self.unrecorded.write(&mut self.store, &self.host) {
            Ok(()) => never,
            Err(e) => self.write_failure(now, &e),
        }
    }

    /// Notes a failed write (logged once until writes succeed again); when to try again.
    fn write_failure(&mut self, now: DateTime<Utc>, e: &Error) -> DateTime<Utc> {
        self.write_failed = true;
        if !self.stalled {
            self.stalled = true;
            (self.log)(&format!(
                "the store cannot be written now ({e}): enforcement goes on and records what it does when it can"
            ));
        }
        now + RETRY_WRITE
    }

    /// `forcelogoutctl ignore` for a user.
    pub fn ignore(
        &mut self,
        user: &str,
        uid: u32,
        now: DateTime<Utc>,
    ) -> Result<IgnoreOutcome, Error> {
        let outcome = match self.store.ignore_warnings(user, uid, &self.host, now) {
            Ok(outcome) => outcome,
            Err(e) if e.is_busy() => {
                // Honoured at once (by `fire`), recorded when the store can be written.
                self.write_failure(now, &e);
                self.unrecorded.keep_ignore(PendingIgnore {
                    user: user.to_string(),
                    uid,
                    at: now,
                });
                (self.log)(&format!(
                    "{user} chose to keep working; recorded when the store can be written"
                ));
                return Ok(IgnoreOutcome::Deferred);
            }
            Err(e) => return Err(e),
        };
        if let IgnoreOutcome::Ignored(ids) = &outcome {
            (self.log)(&format!(
                "{user} ignored the warning of schedule(s) {}",
                ids.join(", ")
            ));
            if let Some(desktop) = self.desktop.as_mut() {
                for id in ids {
                    desktop.show(user, uid, id, &desktop::kept_notification());
                    desktop.finish(user, id);
                }
            }
        }
        Ok(outcome)
    }
}

/// Ends the sessions' processes (after their removal is recorded): see
/// `processes::end_sessions` for the order (logind, the session's cgroup, signals).
fn end_sessions(sessions: &[LiveSession]) -> processes::Termination {
    let handles: Vec<processes::SessionHandle> = sessions
        .iter()
        .map(|s| processes::SessionHandle {
            uid: s.uid,
            leader: s.pid,
            leader_start: s.pid_start_time,
            process_session: s.process_session,
            login_key: s.login_key.as_deref(),
            logind_session: s.logind_session.as_deref(),
            cgroup: s.cgroup.as_deref(),
        })
        .collect();
    processes::end_sessions(&handles, HUP_GRACE, TERM_GRACE)
}

/// Writes to every terminal of the session: its PAM_TTY and the terminals its processes use
/// (`all` is one scan of the process table, shared by every session of a step).
fn notify(session: &LiveSession, all: &[processes::ProcessInfo], text: &str) {
    let mut paths: Vec<String> = session
        .tty
        .as_deref()
        .and_then(terminal::device_path)
        .into_iter()
        .collect();
    for p in processes::session_tree(all, session.pid, session.pid_start_time) {
        if let Some(path) = processes::tty_path(p.tty_nr) {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    for path in paths {
        terminal::write_to(&path, session.uid, text);
    }
}
