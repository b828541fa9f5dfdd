//! Enforcement (SPEC §4–5): the countdown before each logout, the kick or the expiry of a
//! warning, messages to terminals, termination, and the stale-session sweep. The daemon calls
//! `Enforcer::step` whenever something may be due; `forcelogoutctl logout` without a daemon
//! drives the same code until its logout is done.

pub mod desktop;
pub mod processes;
pub mod terminal;
mod unrecorded;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::Error;
use crate::ids::IdKey;
use crate::policy::{self, local_time_label, Timing};
use crate::sessions::{current_boot_id, host_name};
use crate::store::{
    CountdownState, IgnoreOutcome, LiveSession, RemovalReason, ScheduleEvent, ScheduleRecord, Store,
};
use crate::targeting::{Identity, Targeted};
use unrecorded::{record_fired, FiredLogout, PendingIgnore, Unrecorded};

/// Countdown messages go out when it starts and at these times before the logout.
const WARNING_STEPS: [Duration; 4] = [
    Duration::from_secs(300),
    Duration::from_secs(60),
    Duration::from_secs(10),
    Duration::ZERO,
];
/// How long processes get after SIGHUP, and after SIGTERM, before the next signal.
pub const HUP_GRACE: Duration = Duration::from_secs(1);
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// Rows per transaction when the daemon prunes for `retention_days`.
const RETENTION_BATCH: usize = 2000;
/// Schedule versions read at a time: a long history is never held twice while it is taken in.
const REFRESH_BATCH: usize = 256;
/// The enforcer's page cache: it reads each schedule once at start and a few rows per pass;
/// SQLite's default 2 MB would keep the schedule table resident in the daemon for nothing.
const PAGE_CACHE_KIB: u32 = 256;
/// A retention prune's page cache (SQLite's default): with 256 KiB, its transactions of
/// thousands of rows spill dirty pages into the WAL and hold the write lock far longer.
const PRUNE_PAGE_CACHE_KIB: u32 = 2000;
/// How often the stale-session sweep runs.
const STALE_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The longest the enforcer waits on another process's write lock before it acts without
/// recording (and records later): a kick is never held back by someone else's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// How soon the enforcer looks again after a write failed, and after a failed sweep or prune.
const RETRY_WRITE: chrono::Duration = chrono::Duration::seconds(1);
const RETRY_SWEEP: chrono::Duration = chrono::Duration::seconds(5);
const RETRY_PRUNE: chrono::Duration = chrono::Duration::minutes(1);

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

    /// The stale-session sweep and the retention prune, when due; when either is due next.
    fn housekeeping(&mut self, now: DateTime<Utc>, report: &mut StepReport) -> DateTime<Utc> {
        if now >= self.next_sweep {
            match self.sweep_stale(now) {
                Ok(stale) => {
                    report.stale = stale;
                    self.next_sweep = now + chrono(STALE_SWEEP_EVERY);
                }
                Err(e) => {
                    self.write_failure(now, &e);
                    self.next_sweep = now + RETRY_SWEEP;
                }
            }
        }
        let mut wake = self.next_sweep;
        if let Some(days) = self.config.retention_days.filter(|_| self.only.is_none()) {
            if now >= self.next_prune {
                self.next_prune = match self.prune(now, days) {
                    Ok(()) => now + chrono::Duration::hours(1),
                    Err(e) => {
                        self.write_failure(now, &e);
                        now + RETRY_PRUNE
                    }
                };
            }
            wake = wake.min(self.next_prune);
        }
        wake
    }

    /// Retention: events dated more than `days` before `now` are pruned.
    fn prune(&mut self, now: DateTime<Utc>, days: u32) -> Result<(), Error> {
        let cutoff = crate::clock::partition_date(
            now - chrono::Duration::days(i64::from(days)),
            self.store.host_zone(),
        );
        self.store.limit_page_cache(PRUNE_PAGE_CACHE_KIB)?;
        let pruned =
            self.store
                .prune_events_before(&cutoff, RETENTION_BATCH, self.config.fleet.is_some());
        self.store.limit_page_cache(PAGE_CACHE_KIB)?;
        let pruned = pruned?;
        if pruned > 0 {
            (self.log)(&format!(
                "retention: pruned {pruned} events dated before {cutoff}"
            ));
        }
        Ok(())
    }

    /// The instances of `record` whose countdown has begun: each due one fired, the current
    /// one counted down. Returns when to look again.
    fn run_countdowns(
        &mut self,
        record: &ScheduleRecord,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<DateTime<Utc>, Error> {
        let mut wake = now + chrono::Duration::hours(1);
        let mut at = now;
        // At most a few instances per schedule: each done one moves past its due time.
        for _ in 0..4 {
            let Some(instance) = self.instance_at(record, at) else {
                break;
            };
            if instance.warn_from > now {
                wake = wake.min(instance.warn_from);
                break;
            }
            let done = matches!(
                self.store.countdown_state(&record.id, instance.due)?,
                Some(CountdownState::Done) | Some(CountdownState::Skipped)
            );
            if done || self.unrecorded.has_fired(&record.id, instance.due) {
                at = instance.due;
                continue;
            }
            if instance.due <= now {
                report.removed += self.fire(&instance, now, identities, report)?;
                at = instance.due;
                continue;
            }
            self.count_down(&instance, now, identities, report)?;
            wake = wake
                .min(self.next_announcement(&instance, now))
                .min(instance.due);
            break;
        }
        Ok(wake)
    }

    /// The live sessions of users `record` targets, each with the user's NSS identity.
    fn targeted_sessions(
        &self,
        record: &ScheduleRecord,
        identities: &mut HashMap<String, Option<Identity>>,
    ) -> Result<Vec<LiveSession>, Error> {
        let mut out = Vec::new();
        for session in self.store.live_sessions()? {
            let identity = match identities.get(&session.user) {
                Some(known) => known.clone(),
                None => {
                    let found = Identity::lookup(&session.user).unwrap_or(None);
                    identities.insert(session.user.clone(), found.clone());
                    found
                }
            };
            let targeted = identity.is_some_and(|i| {
                i.targeted_by(&record.schedule.group, &self.config.exempt_groups) == Targeted::Yes
            });
            if targeted {
                out.push(session);
            }
        }
        Ok(out)
    }

    /// Starts (or continues) the countdown of `instance`: the live sessions it targets, and a
    /// `warned` for each of their users not warned yet (returned as the newly warned).
    fn open_countdown(
        &mut self,
        instance: &Instance,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<(Vec<LiveSession>, HashSet<String>), Error> {
        let record = &instance.record;
        self.store
            .start_countdown(record, instance.due, instance.warn_from)?;
        let sessions = self.targeted_sessions(record, identities)?;
        let mut newly_warned = HashSet::new();
        for session in &sessions {
            let warned = self.store.warn_user(
                record,
                instance.due,
                &session.user,
                session.uid,
                &self.host,
                now,
            )?;
            if warned.is_some() {
                report.warned.push(session.user.clone());
                newly_warned.insert(session.user.clone());
            }
        }
        Ok((sessions, newly_warned))
    }

    fn count_down(
        &mut self,
        instance: &Instance,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let (sessions, newly_warned) =
            self.countdown_sessions(instance, now, identities, report)?;
        let key = (instance.record.id.clone(), instance.due);
        let step = self.current_step(instance, now);
        let announce_all = self.announced.get(&key) != Some(&step);
        let users: Vec<String> = sessions.iter().map(|s| s.user.clone()).collect();
        let ignored = self.ignoring_users(instance, &users)?;
        let all = processes::scan();
        for session in &sessions {
            if ignored.contains(&session.user) {
                continue;
            }
            let announce = announce_all || newly_warned.contains(&session.user);
            if announce {
                notify(session, &all, &countdown_text(instance, now));
            }
            if let Some(desktop) = self.desktop.as_mut() {
                let running = (session.user.clone(), instance.record.id.clone());
                // One notification per user, however many sessions they have.
                if self.desktop_running.insert(running) && announce {
                    desktop.show(
                        &session.user,
                        session.uid,
                        &instance.record.id,
                        &desktop::countdown_notification(instance, now),
                    );
                }
            }
        }
        self.announced.insert(key, step);
        Ok(())
    }

    /// The latest warning step at or before `now` (the countdown's start counts as one).
    fn current_step(&self, instance: &Instance, now: DateTime<Utc>) -> DateTime<Utc> {
        WARNING_STEPS
            .iter()
            .map(|d| instance.due - chrono(*d))
            .filter(|&t| t <= now && t >= instance.warn_from)
            .max()
            .unwrap_or(instance.warn_from)
    }

    fn next_announcement(&self, instance: &Instance, now: DateTime<Utc>) -> DateTime<Utc> {
        WARNING_STEPS
            .iter()
            .map(|d| instance.due - chrono(*d))
            .filter(|&t| t > now)
            .min()
            .unwrap_or(instance.due)
    }

    /// `open_countdown`; where the store cannot be written, the sessions the countdown targets,
    /// found without writing (their warnings are recorded later).
    fn countdown_sessions(
        &mut self,
        instance: &Instance,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<(Vec<LiveSession>, HashSet<String>), Error> {
        if !self.write_failed {
            match self.open_countdown(instance, now, identities, report) {
                Ok(opened) => return Ok(opened),
                Err(e) => {
                    self.write_failure(now, &e);
                }
            }
        }
        let sessions = self.targeted_sessions(&instance.record, identities)?;
        Ok((sessions, HashSet::new()))
    }

    /// The users who chose to keep working during the countdown of `instance`: recorded, or
    /// waiting to be.
    fn ignoring_users(
        &self,
        instance: &Instance,
        users: &[String],
    ) -> Result<HashSet<String>, Error> {
        let mut ignoring: HashSet<String> = self
            .store
            .countdown_users(&instance.record.id, instance.due)?
            .into_iter()
            .filter(|u| u.ignored.is_some())
            .map(|u| u.user)
            .collect();
        ignoring.extend(
            users
                .iter()
                .filter(|u| self.unrecorded.ignored(u, instance))
                .cloned(),
        );
        Ok(ignoring)
    }

    /// The end of a countdown: warns whoever was not warned yet (a logout that fires at once
    /// still leaves its `warned` row), tells the terminals, records the removals, and ends the
    /// sessions' processes. Returns how many sessions were removed.
    fn fire(
        &mut self,
        instance: &Instance,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<usize, Error> {
        let (sessions, _) = self.countdown_sessions(instance, now, identities, report)?;
        let kick = instance.record.schedule.kick;
        let users: Vec<String> = sessions.iter().map(|s| s.user.clone()).collect();
        let ignoring = self.ignoring_users(instance, &users)?;
        let ending: Vec<LiveSession> = sessions
            .into_iter()
            .filter(|s| kick || !ignoring.contains(&s.user))
            .collect();
        let all = processes::scan();
        for session in &ending {
            notify(session, &all, &logout_text(&instance.record));
        }
        if let Some(desktop) = self.desktop.as_mut() {
            let mut told = HashSet::new();
            let last = desktop::logout_notification(&instance.record);
            for session in &ending {
                if told.insert(session.user.clone()) {
                    desktop.show(&session.user, session.uid, &instance.record.id, &last);
                    desktop.finish(&session.user, &instance.record.id);
                }
            }
        }
        let fired = FiredLogout {
            instance: instance.clone(),
            ended: ending,
            reason: if kick {
                RemovalReason::Kick
            } else {
                RemovalReason::WarningExpired
            },
            at: now,
        };
        // Recorded first where the store can be written: the PAM close that the hang-up
        // triggers then finds nothing to do, so the session's `removed` carries this logout's
        // reason, not `logout`. Where it cannot, the sessions end all the same, on time, and
        // the record waits for the store.
        let recorded = if self.write_failed {
            None
        } else {
            match record_fired(&mut self.store, &fired, &self.host) {
                Ok(removed) => Some(removed),
                Err(e) => {
                    self.write_failure(now, &e);
                    None
                }
            }
        };
        let outcome = end_sessions(&fired.ended);
        let removed = recorded.unwrap_or(fired.ended.len());
        (self.log)(&format!(
            "logout of {} (schedule {}, {}): {} sessions removed{} ({} through logind, {} by cgroup); {} processes hung up, {} terminated, {} killed, {} left",
            instance.record.schedule.group,
            instance.record.id,
            if kick { "kick" } else { "warning" },
            removed,
            if recorded.is_some() { "" } else { ", recorded later" },
            outcome.through_logind,
            outcome.through_cgroup,
            outcome.hangup,
            outcome.terminated,
            outcome.killed,
            outcome.survivors
        ));
        if recorded.is_none() {
            self.unrecorded.keep_fired(fired);
        }
        self.announced
            .remove(&(instance.record.id.clone(), instance.due));
        Ok(removed)
    }

    /// Sessions from an earlier boot, or whose PAM caller is gone (or its pid reused), are
    /// removed with Reason `stale` (SPEC §5.7).
    pub fn sweep_stale(&mut self, now: DateTime<Utc>) -> Result<usize, Error> {
        let stale: Vec<String> = self
            .store
            .live_sessions()?
            .into_iter()
            .filter(|s| s.boot_id != self.boot_id || !same_process(s.pid, s.pid_start_time))
            .map(|s| s.key)
            .collect();
        let removed = self
            .store
            .remove_sessions(&stale, RemovalReason::Stale, &self.host, now)?;
        if removed > 0 {
            (self.log)(&format!("removed {removed} stale sessions"));
        }
        Ok(removed)
    }

    /// Idle logout (SPEC §5.6): a session whose terminal has had no input for `idle_timeout`
    /// is told so and, if still idle `immediate_warning` later, removed with Reason `idle`.
    /// uid 0 and the exempt groups are spared, as from any logout. Returns when to look again.
    fn check_idle(
        &mut self,
        now: DateTime<Utc>,
        identities: &mut HashMap<String, Option<Identity>>,
        report: &mut StepReport,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let Some(limit) = self.config.idle_timeout else {
            return Ok(None);
        };
        let all = processes::scan();
        let mut wake: Option<DateTime<Utc>> = None;
        let mut soonest = |t: DateTime<Utc>| wake = Some(wake.map_or(t, |w| w.min(t)));
        let mut expired = Vec::new();
        let sessions = self.store.live_sessions()?;
        let live: HashSet<&str> = sessions.iter().map(|s| s.key.as_str()).collect();
        self.idle_warned
            .retain(|key, _| live.contains(key.as_str()));
        for session in &sessions {
            let Some(path) = input_terminal(session, &all) else {
                continue;
            };
            let Ok(last_input) = std::fs::metadata(&path).and_then(|m| m.accessed()) else {
                continue;
            };
            let idle_since = DateTime::<Utc>::from(last_input);
            let exempt = identities
                .entry(session.user.clone())
                .or_insert_with(|| Identity::lookup(&session.user).unwrap_or(None))
                .as_ref()
                .is_none_or(|i| {
                    i.uid == 0
                        || i.groups
                            .iter()
                            .any(|g| self.config.exempt_groups.contains(g))
                });
            if exempt {
                continue;
            }
            match self.idle_warned.get(&session.key) {
                Some((_, warned_at)) if last_input > *warned_at => {
                    // The user typed: nothing happens.
                    self.idle_warned.remove(&session.key);
                    soonest(idle_since + chrono(limit));
                }
                Some((deadline, _)) if now >= *deadline => expired.push(session.clone()),
                Some((deadline, _)) => soonest(*deadline),
                None if now - idle_since >= chrono(limit) => {
                    let deadline = now + chrono(self.config.immediate_warning);
                    notify(
                        session,
                        &all,
                        &format!(
                            "This session has had no input for {}. It will be logged out in {} unless you press a key.",
                            policy::describe_wait(idle_since, now),
                            policy::describe_wait(now, deadline)
                        ),
                    );
                    self.idle_warned
                        .insert(session.key.clone(), (deadline, last_input));
                    if deadline <= now {
                        expired.push(session.clone());
                    } else {
                        soonest(deadline);
                    }
                }
                None => soonest(idle_since + chrono(limit)),
            }
        }
        if !expired.is_empty() {
            for session in &expired {
                notify(
                    session,
                    &all,
                    "You are being logged out now: the session was idle.",
                );
                self.idle_warned.remove(&session.key);
            }
            let keys: Vec<String> = expired.iter().map(|s| s.key.clone()).collect();
            let removed =
                self.store
                    .remove_sessions(&keys, RemovalReason::Idle, &self.host, now)?;
            let outcome = end_sessions(&expired);
            report.removed += removed;
            (self.log)(&format!(
                "idle logout: {removed} sessions removed; {} processes hung up, {} killed",
                outcome.hangup, outcome.killed
            ));
        }
        Ok(wake)
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

/// Whether `pid` still runs the process that opened the session: same start time, and not a
/// zombie (a process that has exited holds no session, even before its parent reaps it).
fn same_process(pid: u32, start: Option<u64>) -> bool {
    let running = processes::scan_one(pid).filter(|p| !p.zombie);
    match (running, start) {
        (Some(p), Some(then)) => p.start_time == then,
        (Some(_), None) => true,
        (None, _) => false,
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

/// The terminal device a session's user types on: its PAM_TTY, else the first terminal of its
/// processes.
fn input_terminal(session: &LiveSession, all: &[processes::ProcessInfo]) -> Option<String> {
    session
        .tty
        .as_deref()
        .and_then(terminal::device_path)
        .or_else(|| {
            processes::session_tree(all, session.pid, session.pid_start_time)
                .iter()
                .find_map(|p| processes::tty_path(p.tty_nr))
        })
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

fn countdown_text(instance: &Instance, now: DateTime<Utc>) -> String {
    let s = &instance.record.schedule;
    let when = local_time_label(instance.due, s.timezone, "%H:%M:%S");
    let mut text = if s.kick {
        format!(
            "You will be logged out in {} (at {when}).",
            policy::describe_wait(now, instance.due)
        )
    } else {
        format!(
            "You will be logged out in {} (at {when}) unless you choose to stay.",
            policy::describe_wait(now, instance.due)
        )
    };
    if !s.message.is_empty() {
        text.push('\n');
        text.push_str(&s.message);
    }
    if !s.kick {
        text.push_str("\nTo keep working, run: forcelogoutctl ignore");
    }
    text.push_str("\nSave your work now.");
    text
}

fn logout_text(record: &ScheduleRecord) -> String {
    let mut text = String::from("You are being logged out now.");
    if !record.schedule.message.is_empty() {
        text.push('\n');
        text.push_str(&record.schedule.message);
    }
    text
}
