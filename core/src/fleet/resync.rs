//! Resynchronisation (SPEC §9, "Delivery"): when the server does not have the version a host
//! stands on (a failover lost it, or the server was restored from an older backup), or the
//! host's labels changed, the host makes its fleet schedules exactly the server's current ones
//! that select it, rather than trusting a position in a history that no longer exists.

use chrono::{DateTime, Utc};

use super::selects;
use crate::clock::format_timestamp;
use crate::store::fleet::CentralSchedule;
use crate::store::{ScheduleEvent, ScheduleRecord};

/// The local rows that turn `held` (the store's current fleet schedules) into the current
/// central schedules of `central` that select this host: a held schedule the server does not
/// want here is deleted (marked with `newest`, at `now`); a wanted one is written unless the
/// store already has exactly it. Deletions first, then the server's versions in their order.
pub fn plan_resync(
    held: &[ScheduleRecord],
    central: &[CentralSchedule],
    newest: i64,
    host: &str,
    labels: &[String],
    now: DateTime<Utc>,
) -> Vec<(ScheduleRecord, i64)> {
    let wanted: Vec<&CentralSchedule> = central
        .iter()
        .filter(|c| c.record.event != ScheduleEvent::Deleted && selects(&c.hosts, host, labels))
        .collect();
    let mut rows = Vec::new();
    for record in held {
        if !wanted.iter().any(|c| c.record.id == record.id) {
            let mut gone = record.clone();
            gone.event = ScheduleEvent::Deleted;
            gone.update_time = format_timestamp(now);
            rows.push((gone, newest));
        }
    }
    for c in wanted {
        if !held.contains(&c.record) {
            rows.push((c.record.clone(), c.version));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::{seen, version};

    #[test]
    fn the_store_ends_with_exactly_what_the_server_wants_here() {
        let now = "2026-11-24T08:00:00Z".parse().unwrap();
        let labels = vec!["lab".to_string()];
        let kept = version("kept", "*", ScheduleEvent::Created, 3);
        let changed_local = version("changed", "@lab", ScheduleEvent::Created, 4);
        let mut changed = version("changed", "@lab", ScheduleEvent::Updated, 4);
        changed.record.schedule.kick = false;
        let lost = version("lost", "*", ScheduleEvent::Created, 5);
        let new = version("new", "lab1", ScheduleEvent::Created, 6);
        let elsewhere = version("elsewhere", "@office", ScheduleEvent::Created, 7);
        let held = vec![
            kept.record.clone(),
            changed_local.record.clone(),
            lost.record.clone(),
        ];
        let rows = plan_resync(
            &held,
            &[kept, changed, new, elsewhere],
            7,
            "lab1",
            &labels,
            now,
        );
        assert_eq!(
            seen(&rows),
            [
                ("lost", ScheduleEvent::Deleted, 7),
                ("changed", ScheduleEvent::Updated, 4),
                ("new", ScheduleEvent::Created, 6),
            ]
        );
        assert_eq!(rows[0].0.update_time, "2026-11-24T08:00:00.000000Z");
    }
}
