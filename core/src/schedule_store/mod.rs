//! What `forcelogoutctl schedule`, `next`, `logout` and `events` do to a store of logout
//! schedules and events, whichever it is: this host's SQLite store, or the fleet's central
//! PostgreSQL (SPEC §6.2, §9). Each command has one code path over this trait; the SQL of each
//! implementation stays in `store`.
//!
//! The central database has more than a host's store: each version selects hosts (`Hosts`)
//! and is numbered (`Version`), and each event names its host. Those are optional fields
//! here; this host's store refuses a selector or a host filter, and the central database
//! refuses a ReplayId position (ReplayIds are per host).

#[cfg(feature = "fleet")]
mod central;
mod host;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Error;
use crate::schedule::Schedule;
use crate::store::{EventRow, ScheduleRecord};

/// Which kind of store a `ScheduleStore` is: what it can do beyond the common operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// This host's store: it enforces what it holds, and knows this host's users and sessions.
    Host,
    /// The fleet's central database: versions select hosts, events come from every host.
    Fleet,
}

/// A version of a schedule as a store returns it; the central database adds which hosts it
/// selects and its fleet-wide version number. Serialises as the table's row, with `Hosts`
/// and `Version` only when the store has them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleVersion {
    #[serde(flatten)]
    pub record: ScheduleRecord,
    #[serde(rename = "Hosts", skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl ScheduleVersion {
    /// A version of this host's store (no selector, no fleet version).
    pub fn of_host(record: ScheduleRecord) -> ScheduleVersion {
        ScheduleVersion {
            record,
            hosts: None,
            version: None,
        }
    }
}

/// Which events to read; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// `Date` on or after this `YYYY-MM-DD`.
    pub since: Option<String>,
    pub group: Option<String>,
    pub event: Option<String>,
    /// Only events after this ReplayId (this host's store only).
    pub after_replay_id: Option<i64>,
    /// Only events of this host (the central database only).
    pub host: Option<String>,
}

/// The change an update makes: it sees the schedule's full Id and its current version inside
/// the write, so that concurrent writers cannot lose each other's fields.
pub type Change<'a> = Box<dyn FnOnce(&str, &Schedule) -> Result<Schedule, Error> + 'a>;

/// The operations of the administration commands on a store of schedules and events.
pub trait ScheduleStore {
    fn place(&self) -> Place;

    /// The file it reads, whose writes `events --follow` waits for; `None` for a server.
    fn file(&self) -> Option<&Path>;

    /// Writes the first version of a new schedule. `hosts`: the central selector (default `*`).
    fn add(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error>;

    /// Writes a new version of `id_or_prefix` made by `change`; `hosts` retargets it (central),
    /// else it keeps its selector.
    fn update(
        &mut self,
        id_or_prefix: &str,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        change: Change<'_>,
    ) -> Result<ScheduleVersion, Error>;

    /// Writes the last version (`deleted`) of `id_or_prefix`.
    fn delete(
        &mut self,
        id_or_prefix: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error>;

    /// Writes an immediate logout of `schedule` (Immediate, with its lockout) taking effect at
    /// `due`.
    fn issue_logout(
        &mut self,
        schedule: &Schedule,
        hosts: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<ScheduleVersion, Error>;

    /// The current schedules (not deleted), optionally only those naming `group`, oldest first.
    fn current(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error>;

    /// Every version of every schedule, optionally only those naming `group`, oldest first.
    fn history(&mut self, group: Option<&str>) -> Result<Vec<ScheduleVersion>, Error>;

    /// The current version of one schedule; a deleted or unknown one is an `id` error.
    fn current_one(&mut self, id_or_prefix: &str) -> Result<ScheduleVersion, Error> {
        self.with_versions(id_or_prefix).map(|(current, _)| current)
    }

    /// The current version of one schedule and all its versions, oldest first.
    fn with_versions(
        &mut self,
        id_or_prefix: &str,
    ) -> Result<(ScheduleVersion, Vec<ScheduleVersion>), Error>;

    /// Hands `each` every event `query` selects, in the store's order (this host's: by
    /// ReplayId; the central database's: by time, then host).
    fn read_events(
        &mut self,
        query: &EventQuery,
        each: &mut dyn FnMut(&EventRow) -> Result<(), Error>,
    ) -> Result<(), Error>;
}
