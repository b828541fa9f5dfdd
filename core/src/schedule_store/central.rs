//! `ScheduleStore` for the fleet's central database (feature `fleet`).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Change, EventQuery, Place, ScheduleStore, ScheduleVersion};
use crate::error::Error;
use crate::fleet::validate_selector;
use crate::schedule::Schedule;
use crate::store::fleet::{CentralEventFilter, CentralSchedule, FleetDb};
use crate::store::EventRow;

/// Most events one read returns: central events are ordered by time across hosts, so there is
/// no position to page from.
const EVENT_LIMIT: i64 = 100_000;

impl From<CentralSchedule> for ScheduleVersion {
    fn from(c: CentralSchedule) -> ScheduleVersion {
        ScheduleVersion {
            record: c.record,
            hosts: Some(c.hosts),
            version: Some(c.version),
        }
    }
}

fn versions(rows: Vec<CentralSchedule>) -> Vec<ScheduleVersion> {
    rows.into_iter().map(ScheduleVersion::from).collect()
}

impl ScheduleStore for FleetDb {
    fn place(&self) -> Place {
        Place::Fleet
    }

    fn file(&self) -> Option<&Path> {
        None
    }

    fn add(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        let hosts = validate_selector(hosts.unwrap_or("*"))?;
        FleetDb::add_schedule(self, schedule, &hosts, actor, now, None).map(Into::into)
    }

    fn update(
        &mut self,
        id_or_prefix: &str,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        change: Change<'_>,
    ) -> Result<ScheduleVersion, Error> {
        let hosts = hosts.map(validate_selector).transpose()?;
        FleetDb::write_version(self, id_or_prefix, false, actor, now, |current| {
            let next = change(&current.record.id, &current.record.schedule)?;
            Ok((next, hosts.unwrap_or_else(|| current.hosts.clone())))
        })
        .map(Into::into)
    }

    fn delete(
        &mut self,
        id_or_prefix: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        FleetDb::write_version(self, id_or_prefix, true, actor, now, |current| {
            Ok((current.record.schedule.clone(), current.hosts.clone()))
        })
        .map(Into::into)
    }

    fn issue_logout(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error> {
        let hosts = validate_selector(hosts.unwrap_or("*"))?;
        FleetDb::add_schedule(self, schedule, &hosts, actor, now, Some(due)).map(Into::into)
    }

    fn current(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error> {
        FleetDb::current_schedules(self, group).map(versions)
    }

    fn history(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error> {
        FleetDb::schedule_history(self, group).map(versions)
    }

    fn with_versions(
        &mut self,
        id_or_prefix: &str,
    ) -> Result<(ScheduleVersion, Vec<ScheduleVersion>), Error> {
        let (current, all) = FleetDb::schedule(self, id_or_prefix)?;
        Ok((current.into(), versions(all)))
    }

    fn read_events(
        &mut self,
        query: &EventQuery,
        each: &mut dyn FnMut(&EventRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if query.after_replay_id.is_some() {
            return Err(Error::invalid(
                "after-replay-id",
                "not with --fleet (ReplayIds are per host; use --host and --since)",
            ));
        }
        let filter = CentralEventFilter {
            since: query.since.clone(),
            group: query.group.clone(),
            event: query.event.clone(),
            host: query.host.clone(),
        };
        for row in &FleetDb::events(self, &filter, EVENT_LIMIT)? {
            each(row)?;
        }
        Ok(())
    }
}
