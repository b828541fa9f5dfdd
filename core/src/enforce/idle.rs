//! Idle logout (SPEC §5.6): sessions whose terminal has had no input for `idle_timeout`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{chrono, end_sessions, notify, processes, terminal, Enforcer, StepReport};
use crate::error::Error;
use crate::policy;
use crate::store::{LiveSession, RemovalReason};
use crate::targeting::{Identity, Targeted};

impl Enforcer {
    /// Idle logout (SPEC §5.6): a session whose terminal has had no input for `idle_timeout`
    /// is told so and, if still idle `immediate_warning` later, removed with Reason `idle`.
    /// uid 0 and the exempt groups are spared, as from a logout of every user ('*'). Returns
    /// when to look again.
    pub(super) fn check_idle(
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
                .is_none_or(|i| i.targeted_by("*", &self.config.exempt_groups) != Targeted::Yes);
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
