//! When a schedule fires. DST follows RFC 5545: a local time inside a spring-forward gap is
//! read with the offset in force before the gap (02:30 in a 02:00→03:00 gap fires at 03:30),
//! and a local time that occurs twice fires once, at the first occurrence.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};

use crate::recurrence::Recurrence;
use crate::zone::Zone;

/// Longest gap searched for its preceding offset (Pacific/Apia skipped a whole day in 2011).
const LONGEST_GAP_MINUTES: i64 = 48 * 60;

/// The UTC instant of local `date` `time` in `zone`, with the DST rules above. `None` only at
/// the ends of the calendar.
pub fn resolve_local(zone: &Zone, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::new(date, time);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => resolve_in_gap(zone, local),
    }
}

/// Finds the offset in force just before the gap by walking back minute by minute to the
/// last local time that exists, then reads `local` with that offset.
fn resolve_in_gap(zone: &Zone, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    for minutes_back in 1..=LONGEST_GAP_MINUTES {
        let earlier = local.checked_sub_signed(Duration::minutes(minutes_back))?;
        let before = match zone.from_local_datetime(&earlier) {
            LocalResult::Single(t) => t,
            // A fold right before a gap: the later reading is the one adjacent to the gap.
            LocalResult::Ambiguous(a, b) => a.max(b),
            LocalResult::None => continue,
        };
        let offset = before.offset().fix();
        let utc =
            local.checked_sub_signed(Duration::seconds(i64::from(offset.local_minus_utc())))?;
        return Some(Utc.from_utc_datetime(&utc));
    }
    None
}

/// The first firing strictly after `after`, or `None` when there is none (a Once in the past).
pub fn next_after(
    recurrence: Recurrence,
    time: NaiveTime,
    zone: &Zone,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Recurrence::Once(date) = recurrence {
        return resolve_local(zone, date, time).filter(|&t| t > after);
    }
    // Start a day early: `after`'s local date may already be past `time`, and a firing late
    // on the previous local day can still lie after `after` around offset changes.
    let mut date = after.with_timezone(zone).date_naive().pred_opt()?;
    // A week and two days covers every weekday from the day before to the week after.
    for _ in 0..9 {
        let wanted = match recurrence {
            Recurrence::Weekly(days) => days.contains(date.weekday()),
            _ => true,
        };
        if wanted {
            if let Some(t) = resolve_local(zone, date, time).filter(|&t| t > after) {
                return Some(t);
            }
        }
        date = date.succ_opt()?;
    }
    None
}

/// The next `count` firings after `after`, in order.
pub fn upcoming(
    recurrence: Recurrence,
    time: NaiveTime,
    zone: &Zone,
    after: DateTime<Utc>,
    count: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count.min(64));
    let mut cursor = after;
    while out.len() < count {
        match next_after(recurrence, time, zone, cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}

/// The latest firing at or before `at`, or `None` when there is none (a Once still ahead).
/// Used for lockout windows, which run from a logout's instant for its Lockout minutes.
pub fn latest_at_or_before(
    recurrence: Recurrence,
    time: NaiveTime,
    zone: &Zone,
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Recurrence::Once(date) = recurrence {
        return resolve_local(zone, date, time).filter(|&t| t <= at);
    }
    // Walk back from the day after `at`'s local date: the mirror of `next_after`.
    let mut date = at.with_timezone(zone).date_naive().succ_opt()?;
    for _ in 0..9 {
        let wanted = match recurrence {
            Recurrence::Weekly(days) => days.contains(date.weekday()),
            _ => true,
        };
        if wanted {
            if let Some(t) = resolve_local(zone, date, time).filter(|&t| t <= at) {
                return Some(t);
            }
        }
        date = date.pred_opt()?;
    }
    None
}
