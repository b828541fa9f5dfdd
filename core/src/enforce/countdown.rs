//! The countdown before each logout (SPEC §4): the sessions a schedule targets, the warnings
//! to their terminals and desktops at each step, and the logout when it ends.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::unrecorded::{record_fired, FiredLogout};
use super::{chrono, desktop, end_sessions, notify, processes, Enforcer, Instance, StepReport};
use crate::error::Error;
use crate::policy::{self, local_time_label};
use crate::store::{CountdownState, LiveSession, RemovalReason, ScheduleRecord};
use crate::targeting::{Identity, Targeted};

/// Countdown messages go out when it starts and at these times before the logout.
const WARNING_STEPS: [Duration; 4] = [
    Duration::from_secs(300),
    Duration::from_secs(60),
    Duration::from_secs(10),
    Duration::ZERO,
];

impl Enforcer {
    /// The instances of `record` whose countdown has begun: each due one fired, the current
    /// one counted down. Returns when to look again.
    pub(super) fn run_countdowns(
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
}

fn countdown_text(instance: &Instance, now: DateTime<Utc>) -> String {
    let s = &instance.record.schedule;
    let when = local_time_label(instance.due, &s.timezone, "%H:%M:%S");
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
