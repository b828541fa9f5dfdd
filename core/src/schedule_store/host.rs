//! `ScheduleStore` for this host's SQLite store.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Change, EventQuery, Place, ScheduleStore, ScheduleVersion};
use crate::error::Error;
use crate::schedule::Schedule;
use crate::store::{EventFilter, EventRow, Store};

/// Events read per query: a long log is read in pages, never held whole.
const EVENT_PAGE: usize = 1000;

/// The central selector means nothing on one host's store.
fn refuse_hosts(hosts: Option<&str>) -> Result<(), Error> {
    match hosts {
        Some(_) => Err(Error::invalid("hosts", "only with --fleet")),
        None => Ok(()),
    }
}

fn of_host(records: Vec<crate::store::ScheduleRecord>) -> Vec<ScheduleVersion> {
    records.into_iter().map(ScheduleVersion::of_host).collect()
}

impl ScheduleStore for Store {
    fn place(&self) -> Place {
        Place::Host
    }

    fn file(&self) -> Option<&Path> {
        Some(self.path())
    }

    fn add(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        refuse_hosts(hosts)?;
        Store::add_schedule(self, schedule, actor, now).map(ScheduleVersion::of_host)
    }

    fn update(
        &mut self,
        id_or_prefix: &str,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        change: Change<'_>,
    ) -> Result<ScheduleVersion, Error> {
        refuse_hosts(hosts)?;
        let id = Store::current_schedule(self, id_or_prefix)?.id;
        Store::update_schedule(self, &id, actor, now, |current| change(&id, current))
            .map(ScheduleVersion::of_host)
    }

    fn delete(
        &mut self,
        id_or_prefix: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        Store::delete_schedule(self, id_or_prefix, actor, now).map(ScheduleVersion::of_host)
    }

    fn issue_logout(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        refuse_hosts(hosts)?;
        Store::add_immediate_logout(self, schedule, actor, now, due).map(ScheduleVersion::of_host)
    }

    fn current(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error> {
        Store::current_schedules(self, group).map(of_host)
    }

    fn history(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error> {
        Store::schedule_history(self, group).map(of_host)
    }

    fn current_one(&mut self, id_or_prefix: &str) -> Result<ScheduleVersion, Error> {
        Store::current_schedule(self, id_or_prefix).map(ScheduleVersion::of_host)
    }

    fn with_versions(
        &mut self,
        id_or_prefix: &str,
    ) -> Result<(ScheduleVersion, Vec<ScheduleVersion>), Error> {
        let current = Store::current_schedule(self, id_or_prefix)?;
        let versions = Store::versions_of(self, &current.id)?;
        Ok((ScheduleVersion::of_host(current), of_host(versions)))
    }

    fn read_events(
        &mut self,
        query: &EventQuery,
        each: &mut dyn FnMut(&EventRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if query.host.is_some() {
            return Err(Error::invalid("host", "only with --fleet"));
        }
        let mut filter = EventFilter {
            since: query.since.clone(),
            group: query.group.clone(),
            event: query.event.clone(),
            after_replay_id: query.after_replay_id,
        };
        loop {
            let rows = Store::events(self, &filter, EVENT_PAGE)?;
            for row in &rows {
                each(row)?;
                filter.after_replay_id = Some(row.replay_id);
            }
            if rows.len() < EVENT_PAGE {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::schedule::{RecurrenceInput, ScheduleInput};
    use crate::store::ScheduleEvent;

    fn daily(group: &str) -> Schedule {
        ScheduleInput {
            group: Some(group.into()),
            recurrence: Some(RecurrenceInput::Daily),
            at: Some("18:00".into()),
            timezone: Some("UTC".into()),
            kick: None,
            message: None,
            lockout: None,
        }
        .into_new(&crate::zone::Zone::utc())
        .unwrap()
    }

    #[test]
    fn a_hosts_store_writes_and_reads_versions_without_fleet_fields() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let mut store = Store::open_empty_in_memory().unwrap();
        let store: &mut dyn ScheduleStore = &mut store;
        assert_eq!(store.place(), Place::Host);
        let added = store.add(&daily("students"), None, "root", now).unwrap();
        assert_eq!((added.hosts.as_deref(), added.version), (None, None));
        let id = added.record.id.clone();
        // The change sees the full Id though the caller gave a prefix.
        let mut seen = String::new();
        let updated = store
            .update(
                &id[..8],
                None,
                "root",
                now,
                Box::new(|full_id, current| {
                    seen = full_id.to_string();
                    Ok(Schedule {
                        kick: false,
                        ..current.clone()
                    })
                }),
            )
            .unwrap();
        assert_eq!(seen, id);
        assert!(!updated.record.schedule.kick);
        let (current, versions) = store.with_versions(&id[..8]).unwrap();
        assert_eq!(current, updated);
        assert_eq!(versions.len(), 2);
        assert_eq!(store.current_one(&id).unwrap(), updated);
        store.delete(&id, "root", now).unwrap();
        assert!(store.current(None).unwrap().is_empty());
        let events: Vec<ScheduleEvent> = store
            .history(Some("students"))
            .unwrap()
            .iter()
            .map(|v| v.record.event)
            .collect();
        assert_eq!(
            events,
            [
                ScheduleEvent::Created,
                ScheduleEvent::Updated,
                ScheduleEvent::Deleted
            ]
        );
    }

    #[test]
    fn a_hosts_store_refuses_a_selector_and_a_host_filter() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let mut store = Store::open_empty_in_memory().unwrap();
        let field = |e: Error| match e {
            Error::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        let refused = store.add(&daily("g"), Some("*"), "root", now).unwrap_err();
        assert_eq!(field(refused), "hosts");
        let refused = store
            .issue_logout(&daily("g"), Some("@lab"), "root", now, now)
            .unwrap_err();
        assert_eq!(field(refused), "hosts");
        let query = EventQuery {
            host: Some("lab1".into()),
            ..EventQuery::default()
        };
        let refused = store.read_events(&query, &mut |_| Ok(())).unwrap_err();
        assert_eq!(field(refused), "host");
        assert!(store.history(None).unwrap().is_empty(), "nothing written");
    }
}
