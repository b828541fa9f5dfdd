//! What the schedules mean for one user at one instant: an active lockout, logouts coming.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::firing;
use crate::schedule::Schedule;
use crate::store::ScheduleRecord;
use crate::targeting::{Identity, Targeted};

/// The instant a schedule's logout takes effect at or before `now`: an immediate logout's is
/// its issue time plus the immediate warning; a scheduled one's is its latest firing.
pub fn logout_at_or_before(
    record: &ScheduleRecord,
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let s = &record.schedule;
    if s.immediate {
        immediate_instant(record, immediate_warning).filter(|&t| t <= now)
    } else {
        firing::latest_at_or_before(s.recurrence, s.time, s.timezone, now)
    }
}

/// The next instant strictly after `now` at which the schedule's logout takes effect.
pub fn logout_after(
    record: &ScheduleRecord,
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let s = &record.schedule;
    if s.immediate {
        immediate_instant(record, immediate_warning).filter(|&t| t > now)
    } else {
        s.next_after(now)
    }
}

/// An immediate logout takes effect at its DueAt; a row without one (written by hand) at its
/// issue time plus the configured immediate warning.
pub fn immediate_instant(record: &ScheduleRecord, warning: Duration) -> Option<DateTime<Utc>> {
    let parse = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    if let Some(due) = record.due_at.as_deref().and_then(parse) {
        return Some(due);
    }
    Some(parse(&record.update_time)? + chrono::Duration::from_std(warning).ok()?)
}

/// An active lockout: the schedule, and when its window ends.
pub struct Lockout<'a> {
    pub record: &'a ScheduleRecord,
    pub until: DateTime<Utc>,
}

/// The end of the lockout window of a logout that takes effect at `at`; `None` when the
/// logout locks nobody out (no lockout, or a warning, which the user may ignore).
pub fn lockout_end(schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (schedule.kick && schedule.lockout_minutes > 0)
        .then(|| at + chrono::Duration::minutes(i64::from(schedule.lockout_minutes)))
}

/// Kick schedules whose lockout window contains `now`, before targeting is considered. Cheap:
/// no NSS lookups, so the common case (no window open) costs one read of the schedules.
pub fn open_lockout_windows<'a>(
    schedules: &'a [ScheduleRecord],
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Vec<Lockout<'a>> {
    schedules
        .iter()
        .filter(|r| r.schedule.kick && r.schedule.lockout_minutes > 0)
        .filter_map(|record| {
            let at = logout_at_or_before(record, immediate_warning, now)?;
            let until = lockout_end(&record.schedule, at)?;
            (now < until).then_some(Lockout { record, until })
        })
        .collect()
}

/// The lockout that refuses this user's login now, if any: the one that ends last.
pub fn lockout_for<'a>(
    identity: &Identity,
    windows: Vec<Lockout<'a>>,
    exempt_groups: &[String],
) -> Option<Lockout<'a>> {
    windows
        .into_iter()
        .filter(|l| identity.targeted_by(&l.record.schedule.group, exempt_groups) == Targeted::Yes)
        .max_by_key(|l| l.until)
}

/// Kick logouts still to come after `now`, soonest first, before targeting is considered.
pub fn kicks_after(
    schedules: &[ScheduleRecord],
    immediate_warning: Duration,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, &ScheduleRecord)> {
    let mut found: Vec<_> = schedules
        .iter()
        .filter(|r| r.schedule.kick)
        .filter_map(|r| logout_after(r, immediate_warning, now).map(|t| (t, r)))
        .collect();
    found.sort_by_key(|(t, _)| *t);
    found
}

/// Logouts due within `ahead` of `now`, soonest first, before targeting is considered (so
/// that NSS is asked about the user's groups only when something is coming).
pub fn due_within(
    schedules: &[ScheduleRecord],
    immediate_warning: Duration,
    ahead: Duration,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, &ScheduleRecord)> {
    let horizon = now + chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::zero());
    let mut found: Vec<_> = schedules
        .iter()
        .filter_map(|r| logout_after(r, immediate_warning, now).map(|t| (t, r)))
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
pub fn local_time_label(at: DateTime<Utc>, zone: chrono_tz::Tz, format: &str) -> String {
    let local = at.with_timezone(&zone);
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn labels_and_waits() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap();
        assert_eq!(
            local_time_label(t, chrono_tz::Europe::Berlin, "%H:%M"),
            "18:00 CET (Europe/Berlin)"
        );
        assert_eq!(local_time_label(t, chrono_tz::UTC, "%H:%M"), "17:00 UTC");
        assert_eq!(describe_wait(t, t + chrono::Duration::seconds(45)), "45 s");
        assert_eq!(describe_wait(t, t + chrono::Duration::seconds(61)), "2 min");
        assert_eq!(
            describe_wait(t, t + chrono::Duration::minutes(125)),
            "2 h 05 min"
        );
    }
}
