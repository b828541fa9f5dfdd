//! What the schedules mean for one user at one instant: an active lockout, logouts coming.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};

use crate::config::Config;
use crate::error::Error;
use crate::firing;
use crate::recurrence::Recurrence;
use crate::schedule::Schedule;
use crate::store::ScheduleRecord;
use crate::targeting::{Identity, Targeted};
use crate::text::sanitize_for_terminal;
use crate::zone::Zone;

/// When a schedule's logouts take effect, and nothing else of it: what the enforcer keeps
/// per schedule, and what the look-ups below read of a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub recurrence: Recurrence,
    pub time: NaiveTime,
    pub timezone: Zone,
    pub immediate: bool,
    /// When the version was written (`UpdateTime`); `None` if the row's text is not a time.
    pub written: Option<DateTime<Utc>>,
    /// Immediate logouts: the instant given (`DueAt`), if any.
    pub due_at: Option<DateTime<Utc>>,
}

impl Timing {
    pub fn of(record: &ScheduleRecord) -> Timing {
        let parse = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let s = &record.schedule;
        Timing {
            recurrence: s.recurrence,
            time: s.time,
            timezone: s.timezone.clone(),
            immediate: s.immediate,
            written: parse(&record.update_time),
            due_at: record.due_at.as_deref().and_then(parse),
        }
    }

    /// The instant an immediate logout takes effect: its `DueAt`, else its issue time plus
    /// the immediate warning.
    pub fn immediate_instant(&self, warning: Duration) -> Option<DateTime<Utc>> {
        self.due_at
            .or_else(|| Some(self.written? + chrono::Duration::from_std(warning).ok()?))
    }

    /// The instant the logout takes effect at or before `now`: an immediate logout's
    /// `immediate_instant`; a scheduled one's latest firing.
    pub fn at_or_before(&self, warning: Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.immediate {
            self.immediate_instant(warning).filter(|&t| t <= now)
        } else {
            firing::latest_at_or_before(self.recurrence, self.time, &self.timezone, now)
        }
    }

    /// The next instant strictly after `now` at which the logout takes effect.
    pub fn after(&self, warning: Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.immediate {
            self.immediate_instant(warning).filter(|&t| t > now)
        } else {
            firing::next_after(self.recurrence, self.time, &self.timezone, now)
        }
    }
}

/// What the look-ups below read of a schedule: a whole row (the PAM module reads them), or what
/// the daemon's reading side keeps of one (`relay::HeldSchedule`), whose whole row is read back
/// only for a schedule that concerns the login at hand.
pub trait Scheduled {
    fn timing(&self) -> Cow<'_, Timing>;
    fn group(&self) -> &str;
    fn kick(&self) -> bool;
    fn lockout_minutes(&self) -> u32;
}

impl Scheduled for ScheduleRecord {
    fn timing(&self) -> Cow<'_, Timing> {
        Cow::Owned(Timing::of(self))
    }

    fn group(&self) -> &str {
        &self.schedule.group
    }

    fn kick(&self) -> bool {
        self.schedule.kick
    }

    fn lockout_minutes(&self) -> u32 {
        self.schedule.lockout_minutes
    }
}

/// A schedule's whole row, for the text a login is shown: a row is its own; the daemon reads
/// a kept schedule's back from the store.
pub type WholeRow<'a, T> = &'a dyn Fn(&T) -> Result<Cow<'_, ScheduleRecord>, Error>;

/// `WholeRow` for whole rows.
pub fn whole_row(record: &ScheduleRecord) -> Result<Cow<'_, ScheduleRecord>, Error> {
    Ok(Cow::Borrowed(record))
}

/// An active lockout: the schedule, and when its window ends.
pub struct Lockout<'a, T = ScheduleRecord> {
    pub record: &'a T,
    pub until: DateTime<Utc>,
}

/// The end of the lockout window of a logout that takes effect at `at`; `None` when the
/// logout locks nobody out (no lockout, or a warning, which the user may ignore).
pub fn lockout_end(schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    lockout_end_of(schedule.kick, schedule.lockout_minutes, at)
}

fn lockout_end_of(kick: bool, lockout_minutes: u32, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (kick && lockout_minutes > 0)
        .then(|| at + chrono::Duration::minutes(i64::from(lockout_minutes)))
}

/// Kick schedules whose lockout window contains `now`, before targeting is considered. Cheap:
/// no NSS lookups, so the common case (no window open) costs one read of the schedules.
pub fn open_lockout_windows<T: Scheduled>(
    schedules: &[T],
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Vec<Lockout<'_, T>> {
    schedules
        .iter()
        .filter(|r| r.kick() && r.lockout_minutes() > 0)
        .filter_map(|record| {
            let at = record.timing().at_or_before(immediate_warning, now)?;
            let until = lockout_end_of(record.kick(), record.lockout_minutes(), at)?;
            (now < until).then_some(Lockout { record, until })
        })
        .collect()
}

/// The lockout that refuses this user's login now, if any: the one that ends last.
pub fn lockout_for<'a, T: Scheduled>(
    identity: &Identity,
    windows: Vec<Lockout<'a, T>>,
    exempt_groups: &[String],
) -> Option<Lockout<'a, T>> {
    windows
        .into_iter()
        .filter(|l| identity.targeted_by(l.record.group(), exempt_groups) == Targeted::Yes)
        .max_by_key(|l| l.until)
}

/// Kick logouts still to come after `now`, soonest first, before targeting is considered.
pub fn kicks_after<T: Scheduled>(
    schedules: &[T],
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, &T)> {
    let mut found: Vec<_> = schedules
        .iter()
        .filter(|r| r.kick())
        .filter_map(|r| r.timing().after(immediate_warning, now).map(|t| (t, r)))
        .collect();
    found.sort_by_key(|(t, _)| *t);
    found
}

/// Logouts due within `ahead` of `now`, soonest first, before targeting is considered (so
/// that NSS is asked about the user's groups only when something is coming).
pub fn due_within<T: Scheduled>(
    schedules: &[T],
    immediate_warning: Duration,
    ahead: Duration,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, &T)> {
    let horizon = now + chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::zero());
    let mut found: Vec<_> = schedules
        .iter()
        .filter_map(|r| r.timing().after(immediate_warning, now).map(|t| (t, r)))
        .filter(|(t, _)| *t <= horizon)
        .collect();
    found.sort_by_key(|(t, _)| *t);
    found
}

/// One user a schedule would hit, or spare, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Affected {
    pub user: String,
    pub uid: u32,
    pub live_sessions: usize,
    /// `logged out`, or `spared: …` with the reason.
    pub effect: String,
}

/// The blast radius of logging `group` out: the users with live sessions, the group's listed
/// members and the user of that name, each resolved through NSS, with their fate.
pub fn blast_radius(group: &str, live_users: &[String], exempt_groups: &[String]) -> Vec<Affected> {
    let mut candidates: Vec<String> = live_users.to_vec();
    if let Ok(Some(g)) = nix::unistd::Group::from_name(group) {
        candidates.extend(g.mem);
    }
    candidates.push(group.to_string());
    candidates.sort();
    candidates.dedup();
    candidates
        .into_iter()
        .filter_map(|name| Identity::lookup(&name).ok().flatten())
        .filter_map(|identity| {
            let effect = match identity.targeted_by(group, exempt_groups) {
                Targeted::No => return None,
                Targeted::Yes => "logged out".to_string(),
                Targeted::Exempt if identity.uid == 0 => "spared: uid 0".to_string(),
                Targeted::Exempt => {
                    let why: Vec<&str> = identity
                        .groups
                        .iter()
                        .filter(|g| exempt_groups.contains(g))
                        .map(String::as_str)
                        .collect();
                    format!("spared: member of exempt group {}", why.join(", "))
                }
            };
            Some(Affected {
                live_sessions: live_users.iter().filter(|u| **u == identity.name).count(),
                user: identity.name,
                uid: identity.uid,
                effect,
            })
        })
        .collect()
}

/// `at` as local time in `zone` with `format`, then the zone's abbreviation and, where that does
/// not already say it, the zone's name: "18:00 CET (Europe/Berlin)", "06:09 UTC".
pub fn local_time_label(at: DateTime<Utc>, zone: &Zone, format: &str) -> String {
    let local = at.with_timezone(zone);
    let abbreviation = local.format("%Z").to_string();
    let mut label = format!("{} {abbreviation}", local.format(format));
    let says_it = abbreviation == zone.name() || zone.name().ends_with(&format!("/{abbreviation}"));
    if !says_it {
        label.push_str(&format!(" ({})", zone.name()));
    }
    label
}

/// "in 2 h 05 min", "in 45 s": how far off an instant is, for people.
pub fn describe_wait(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let seconds = (to - from).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", (s + 59) / 60),
        s => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// What `account` decides for one user at one instant, whoever computes it (the module from
/// the store, or the daemon for it over the session socket).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountDecision {
    /// A kick's lockout window is open and targets the user: the login is refused.
    pub refusal: Option<Refusal>,
    /// With `limit_session_runtime`: the next kick that targets the user.
    pub next_kick: Option<DateTime<Utc>>,
}

/// Why a login is refused, and the text the user sees.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub schedule_id: String,
    pub group: String,
    pub until: DateTime<Utc>,
    pub message: String,
}

/// `account` for `user` over current schedules: only kicks can refuse a login or limit it, so
/// the others are skipped (the module reads the kick ones alone,
/// `Store::current_kick_schedules_lenient`; the daemon passes all it holds). NSS is asked
/// about the user's groups only when a lockout window is open or, with
/// `limit_session_runtime`, a kick is coming.
pub fn account_decision<T: Scheduled>(
    schedules: &[T],
    user: &str,
    config: &Config,
    now: DateTime<Utc>,
    whole: WholeRow<'_, T>,
) -> Result<AccountDecision, Error> {
    let windows = open_lockout_windows(schedules, config.immediate_warning, now);
    let kicks = if config.limit_session_runtime {
        kicks_after(schedules, config.immediate_warning, now)
    } else {
        Vec::new()
    };
    if windows.is_empty() && kicks.is_empty() {
        return Ok(AccountDecision::default());
    }
    let Some(identity) = Identity::lookup(user)? else {
        return Ok(AccountDecision::default());
    };
    if let Some(lockout) = lockout_for(&identity, windows, &config.exempt_groups) {
        let record = whole(lockout.record)?;
        let s = &record.schedule;
        let mut message = format!(
            "Logins are closed until {}.",
            local_time_label(lockout.until, &s.timezone, "%H:%M")
        );
        if !s.message.is_empty() {
            message = format!("{}\n{message}", sanitize_for_terminal(&s.message));
        }
        return Ok(AccountDecision {
            refusal: Some(Refusal {
                schedule_id: record.id.clone(),
                group: s.group.clone(),
                until: lockout.until,
                message,
            }),
            next_kick: None,
        });
    }
    let next_kick = kicks
        .into_iter()
        .find(|(_, record)| {
            identity.targeted_by(record.group(), &config.exempt_groups) == Targeted::Yes
        })
        .map(|(at, _)| at);
    Ok(AccountDecision {
        refusal: None,
        next_kick,
    })
}

/// The current schedules, each invalid row (written by hand) passed to `log` and skipped: one
/// bad row must not refuse every login under `fail=closed`.
pub fn enforceable(
    (schedules, invalid): (Vec<ScheduleRecord>, Vec<Error>),
    log: &dyn Fn(&str),
) -> Vec<ScheduleRecord> {
    for e in invalid {
        log(&format!("ignoring an invalid schedule row: {e}"));
    }
    schedules
}

/// The notices shown at a login of `user`: each logout that targets the user and is due
/// within `notice_ahead`, soonest first.
pub fn notices_among<T: Scheduled>(
    schedules: &[T],
    config: &Config,
    user: &str,
    now: DateTime<Utc>,
    whole: WholeRow<'_, T>,
) -> Result<Vec<String>, Error> {
    let due = due_within(
        schedules,
        config.immediate_warning,
        config.notice_ahead,
        now,
    );
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let Some(identity) = Identity::lookup(user)? else {
        return Ok(Vec::new());
    };
    due.into_iter()
        .filter(|(_, record)| {
            identity.targeted_by(record.group(), &config.exempt_groups) == Targeted::Yes
        })
        .map(|(at, record)| Ok(notice_text(at, &*whole(record)?, now)))
        .collect()
}

/// "You will be logged out at 18:00 CET (Europe/Berlin), in 2 h 05 min. <message>"
fn notice_text(at: DateTime<Utc>, record: &ScheduleRecord, now: DateTime<Utc>) -> String {
    let s = &record.schedule;
    let what = if s.kick {
        "You will be logged out"
    } else {
        "You will be asked to log out"
    };
    let mut text = format!(
        "{what} at {}, in {}.",
        local_time_label(at, &s.timezone, "%Y-%m-%d %H:%M"),
        describe_wait(now, at)
    );
    if !s.message.is_empty() {
        text.push('\n');
        text.push_str(&sanitize_for_terminal(&s.message));
    }
    text
}

/// Whether an immediate logout is over: it has taken effect and its lockout (if any) has
/// ended. `schedule list` hides these; a scheduled row is never over this way.
pub fn immediate_is_over(record: &ScheduleRecord, warning: Duration, now: DateTime<Utc>) -> bool {
    if !record.schedule.immediate {
        return false;
    }
    let Some(due) = Timing::of(record).immediate_instant(warning) else {
        return false;
    };
    due <= now && lockout_end(&record.schedule, due).is_none_or(|until| until <= now)
}

/// The lockouts `unlock NAME` concerns: those of kick schedules that name NAME or target the
/// user NAME, and that have not ended at `now`.
#[derive(Default)]
pub struct Lifts<'a> {
    /// Immediate logouts (open now or still to come): unlock lifts these.
    pub immediate: Vec<Lockout<'a>>,
    /// Recurring schedules whose window is open now: unlock leaves them, since lifting the
    /// lockout of a schedule lifts it for every later day too (`schedule update --lockout 0`).
    pub scheduled: Vec<Lockout<'a>>,
}

pub fn lockouts_to_lift<'a>(
    kick_schedules: &'a [ScheduleRecord],
    name: &str,
    user: Option<&Identity>,
    config: &Config,
    now: DateTime<Utc>,
) -> Lifts<'a> {
    let concerns = |r: &ScheduleRecord| {
        r.schedule.group == name
            || user.is_some_and(|u| {
                u.targeted_by(&r.schedule.group, &config.exempt_groups) == Targeted::Yes
            })
    };
    let mut lifts = Lifts::default();
    for record in kick_schedules.iter().filter(|r| concerns(r)) {
        let timing = Timing::of(record);
        let at = if record.schedule.immediate {
            timing.immediate_instant(config.immediate_warning)
        } else {
            timing.at_or_before(config.immediate_warning, now)
        };
        let Some(until) = at.and_then(|at| lockout_end(&record.schedule, at)) else {
            continue;
        };
        if now >= until {
            continue;
        }
        if record.schedule.immediate {
            lifts.immediate.push(Lockout { record, until });
        } else if at.is_some_and(|at| at <= now) {
            lifts.scheduled.push(Lockout { record, until });
        }
    }
    lifts
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn labels_and_waits() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap();
        assert_eq!(
            local_time_label(t, &Zone::named("Europe/Berlin").unwrap(), "%H:%M"),
            "18:00 CET (Europe/Berlin)"
        );
        assert_eq!(local_time_label(t, &Zone::utc(), "%H:%M"), "17:00 UTC");
        assert_eq!(describe_wait(t, t + chrono::Duration::seconds(45)), "45 s");
        assert_eq!(describe_wait(t, t + chrono::Duration::seconds(61)), "2 min");
        assert_eq!(
            describe_wait(t, t + chrono::Duration::minutes(125)),
            "2 h 05 min"
        );
    }

    /// A record as the store returns it: written at `written`, due at `due` when immediate.
    fn record(
        id: &str,
        schedule: Schedule,
        written: DateTime<Utc>,
        due: Option<DateTime<Utc>>,
    ) -> ScheduleRecord {
        ScheduleRecord {
            date: "2026-11-23".into(),
            id: id.into(),
            update_time: crate::clock::format_timestamp(written),
            event: crate::store::ScheduleEvent::Created,
            actor: "t".into(),
            schedule,
            due_at: due.map(crate::clock::format_timestamp),
        }
    }

    fn immediate(
        group: &str,
        kick: bool,
        lockout: Option<&str>,
        now: DateTime<Utc>,
        delay: i64,
    ) -> (Schedule, DateTime<Utc>) {
        crate::schedule::ImmediateInput {
            group,
            kick: Some(kick),
            message: None,
            lockout,
        }
        .into_logout(now, Duration::from_secs(delay as u64), Zone::utc())
        .unwrap()
    }

    #[test]
    fn unlock_lifts_open_and_pending_immediate_lockouts_and_names_recurring_ones() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap();
        let config = Config::default();
        let (open, due_open) = immediate("lab", true, Some("1h"), t, 0);
        let (pending, due_pending) = immediate("lab", true, Some("1h"), t, 600);
        let (ended, due_ended) =
            immediate("lab", true, Some("5m"), t - chrono::Duration::hours(1), 0);
        let (other, due_other) = immediate("office", true, Some("1h"), t, 0);
        let daily = crate::schedule::ScheduleInput {
            group: Some("lab".into()),
            recurrence: Some(crate::schedule::RecurrenceInput::Daily),
            at: Some("16:30".into()),
            timezone: Some("UTC".into()),
            kick: Some(true),
            lockout: Some("60".into()),
            ..Default::default()
        }
        .into_new(&Zone::utc())
        .unwrap();
        let written = t - chrono::Duration::days(2);
        let records = vec![
            record("open", open, t, Some(due_open)),
            record("pending", pending, t, Some(due_pending)),
            record(
                "ended",
                ended,
                t - chrono::Duration::hours(1),
                Some(due_ended),
            ),
            record("other", other, t, Some(due_other)),
            record("daily", daily, written, None),
        ];
        let now = t + chrono::Duration::seconds(30);
        let lifts = lockouts_to_lift(&records, "lab", None, &config, now);
        let ids = |l: &[Lockout]| l.iter().map(|l| l.record.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&lifts.immediate), ["open", "pending"]);
        assert_eq!(ids(&lifts.scheduled), ["daily"]);
        assert!(
            lockouts_to_lift(&records, "nobody-here", None, &config, now)
                .immediate
                .is_empty()
        );

        // Over: took effect and its lockout ended; not over while locking or still to come.
        let warning = config.immediate_warning;
        let over: Vec<bool> = records
            .iter()
            .map(|r| immediate_is_over(r, warning, now))
            .collect();
        assert_eq!(over, [false, false, true, false, false]);
    }
}
