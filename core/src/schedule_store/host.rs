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
