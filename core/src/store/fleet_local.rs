//! The local side of the fleet (SPEC §9), in SQLite: schedule versions copied from the central
//! database (marked with their central `Version`), the fleet thread's positions and its link
//! state. The PostgreSQL side is `store::fleet` (feature `fleet`).

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::schedules::insert_marked_version;
use super::{classify, EventRow, Store};
use crate::error::Error;
use crate::store::ScheduleRecord;

/// What the fleet thread last knew: `forcelogoutctl fleet status` reads it without the network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FleetState {
    /// The last central schedule version applied to this store.
    pub schedule_version: i64,
    /// Its key (`LogoutSchedules.VersionKey`): the version is trusted only if the server
    /// has it with this key. `None` from stores older than keys (they resynchronise once).
    pub schedule_version_key: Option<String>,
    /// The host's labels as the central database last said (`None`: not told yet).
    pub labels: Option<Vec<String>>,
    /// The last local ReplayId the central database has (as of the last upload).
    pub uploaded_replay_id: i64,
    pub connected: bool,
    /// Since when connected (or disconnected), RFC 3339.
    pub since: Option<String>,
    pub last_error: Option<String>,
}

impl Store {
    pub fn fleet_state(&self) -> Result<FleetState, Error> {
        self.conn
            .prepare_cached(
                "SELECT ScheduleVersion, UploadedReplayId, Connected, Since, LastError, \
                 ScheduleVersionKey, Labels FROM FleetState WHERE Singleton = 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([], |r| {
                    Ok(FleetState {
                        schedule_version: r.get(0)?,
                        uploaded_replay_id: r.get(1)?,
                        connected: r.get(2)?,
                        since: r.get(3)?,
                        last_error: r.get(4)?,
                        schedule_version_key: r.get(5)?,
                        // Written only by this file, as JSON: anything else reads as unknown.
                        labels: r
                            .get::<_, Option<String>>(6)?
                            .and_then(|text| serde_json::from_str(&text).ok()),
                    })
                })
                .optional()
            })
            .map(Option::unwrap_or_default)
            .map_err(|e| self.fail("reading the fleet state", e))
    }

    /// Ids of the current schedules that came from the fleet.
    pub fn fleet_schedule_ids(&self) -> Result<HashSet<String>, Error> {
        self.conn
            .prepare_cached(
                "SELECT s.Id FROM LogoutSchedules s JOIN FleetMarks m ON m.ScheduleRowid = s.rowid \
                 WHERE s.rowid IN (SELECT max(rowid) FROM LogoutSchedules GROUP BY Id) \
                 AND s.Event <> 'deleted'",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<HashSet<_>, _>>()
            })
            .map_err(|e| self.fail("reading the fleet schedules", e))
    }

    /// Writes the versions copied from the fleet and the new position (a version and its
    /// key), in one transaction: after a crash the thread resumes exactly where the store
    /// says it got to.
    pub fn apply_fleet_versions(
        &mut self,
        versions: &[(ScheduleRecord, i64)],
        position: (i64, &str),
    ) -> Result<(), Error> {
        let (tx, path, _) = self.begin_write("starting the fleet schedule copy")?;
        for (record, version) in versions {
            insert_marked_version(&tx, record, Some(*version))
                .map_err(|e| classify(&path, "copying a fleet schedule", e))?;
        }
        upsert_state(&tx)
            .and_then(|()| {
                tx.execute(
                    "UPDATE FleetState SET ScheduleVersion = ?1, ScheduleVersionKey = ?2 \
                     WHERE Singleton = 1",
                    params![position.0, position.1],
                )
            })
            .map_err(|e| classify(&path, "recording the fleet schedule position", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the fleet schedule copy", e))
    }

    /// A resynchronisation's writes, in one transaction: the versions that make the fleet
    /// schedules exactly the server's (`fleet::resync` plans them), the server's newest
    /// version as the position (`None`: it has none) and the labels it sent.
    pub fn resync_fleet(
        &mut self,
        versions: &[(ScheduleRecord, i64)],
        position: Option<(i64, &str)>,
        labels: &[String],
    ) -> Result<(), Error> {
        let (tx, path, _) = self.begin_write("starting the fleet resynchronisation")?;
        for (record, version) in versions {
            insert_marked_version(&tx, record, Some(*version))
                .map_err(|e| classify(&path, "copying a fleet schedule", e))?;
        }
        let labels = serde_json::to_string(labels).unwrap_or_else(|_| "[]".into());
        upsert_state(&tx)
            .and_then(|()| {
                tx.execute(
                    "UPDATE FleetState SET ScheduleVersion = ?1, ScheduleVersionKey = ?2, \
                     Labels = ?3 WHERE Singleton = 1",
                    params![position.map_or(0, |p| p.0), position.map(|p| p.1), labels],
                )
            })
            .map_err(|e| classify(&path, "recording the fleet schedule position", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the fleet resynchronisation", e))
    }

    /// The current schedules that came from the fleet.
    pub fn fleet_schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        let ids = self.fleet_schedule_ids()?;
        Ok(self
            .current_schedules_lenient()?
            .0
            .into_iter()
            .filter(|record| ids.contains(&record.id))
            .collect())
    }

    /// Records the link's state for `fleet status` (only when it changes).
    pub fn set_fleet_link(
        &mut self,
        connected: bool,
        since: &str,
        error: Option<&str>,
    ) -> Result<(), Error> {
        let (tx, path, _) = self.begin_write("starting a fleet state write")?;
        upsert_state(&tx)
            .and_then(|()| {
                tx.execute(
                    "UPDATE FleetState SET Connected = ?1, Since = ?2, LastError = ?3 \
                     WHERE Singleton = 1",
                    params![connected, since, error],
                )
            })
            .map_err(|e| classify(&path, "recording the fleet link", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the fleet link", e))
    }

    /// Records how far the central database has this host's events.
    pub fn set_fleet_uploaded(&mut self, replay_id: i64) -> Result<(), Error> {
        let (tx, path, _) = self.begin_write("starting a fleet state write")?;
        upsert_state(&tx)
            .and_then(|()| {
                tx.execute(
                    "UPDATE FleetState SET UploadedReplayId = ?1 WHERE Singleton = 1",
                    params![replay_id],
                )
            })
            .map_err(|e| classify(&path, "recording the upload position", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the upload position", e))
    }

    /// The newest ReplayId (the primary key: one index lookup), 0 for none.
    pub fn max_replay_id(&self) -> Result<i64, Error> {
        self.conn
            .prepare_cached("SELECT coalesce(max(ReplayId), 0) FROM LogoutEvents")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(|e| self.fail("reading the newest ReplayId", e))
    }

    /// Events after `replay_id`, oldest first, at most `limit`: the next upload batch.
    pub fn events_after(&self, replay_id: i64, limit: usize) -> Result<Vec<EventRow>, Error> {
        self.events(
            &super::EventFilter {
                after_replay_id: Some(replay_id),
                ..Default::default()
            },
            limit,
        )
    }
}

fn upsert_state(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO FleetState (Singleton) VALUES (1) ON CONFLICT (Singleton) DO NOTHING",
    )?
    .execute([])?;
    Ok(())
}
