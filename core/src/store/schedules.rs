//! `LogoutSchedules`: append-only history of schedule versions, and the current set.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{classify, Store};
use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::ids;
use crate::schedule::{Recurrence, Schedule};
use crate::zone::Zone;

/// The `Event` column of `LogoutSchedules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleEvent {
    Created,
    Updated,
    Deleted,
}

impl ScheduleEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleEvent::Created => "created",
            ScheduleEvent::Updated => "updated",
            ScheduleEvent::Deleted => "deleted",
        }
    }

    /// Accepts both spellings of the seeds (`create` and `created`), any case.
    pub fn parse(text: &str) -> Result<ScheduleEvent, Error> {
        match text.to_ascii_lowercase().as_str() {
            "created" | "create" => Ok(ScheduleEvent::Created),
            "updated" | "update" => Ok(ScheduleEvent::Updated),
            "deleted" | "delete" => Ok(ScheduleEvent::Deleted),
            _ => Err(Error::invalid(
                "event",
                format!("{text:?} is not a schedule event (created, updated, deleted)"),
            )),
        }
    }
}

/// One row of `LogoutSchedules`: a version of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRecord {
    pub date: String,
    pub id: String,
    pub update_time: String,
    pub event: ScheduleEvent,
    pub actor: String,
    pub schedule: Schedule,
    /// Immediate logouts: the instant it takes effect (RFC 3339).
    pub due_at: Option<String>,
}

/// Serialises with the table's column names, in the table's order.
impl Serialize for ScheduleRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = &self.schedule;
        let mut row = serializer.serialize_struct("LogoutSchedules", 16)?;
        row.serialize_field("Date", &self.date)?;
        row.serialize_field("Id", &self.id)?;
        row.serialize_field("GroupName", &s.group)?;
        row.serialize_field("UpdateTime", &self.update_time)?;
        row.serialize_field("Schedule", s.recurrence.kind_name())?;
        row.serialize_field("ScheduleDate", &s.recurrence.schedule_date())?;
        row.serialize_field("Time", &s.time_text())?;
        row.serialize_field("Timezone", s.timezone.name())?;
        row.serialize_field("Days", &s.recurrence.days().map(|d| d.bits()))?;
        row.serialize_field("Immediate", &s.immediate)?;
        row.serialize_field("Kick", &s.kick)?;
        row.serialize_field("Event", self.event.as_str())?;
        row.serialize_field("Message", &s.message)?;
        row.serialize_field("Actor", &self.actor)?;
        row.serialize_field("Lockout", &s.lockout_minutes)?;
        row.serialize_field("DueAt", &self.due_at)?;
        row.end()
    }
}

pub(super) const COLUMNS: &str =
    "Date, Id, GroupName, UpdateTime, Schedule, ScheduleDate, Time, Timezone, \
                       Days, Immediate, Kick, Event, Message, Actor, Lockout, DueAt";

/// A row as stored, before it is checked against the model.
pub(super) struct RawRow {
    pub(super) date: String,
    pub(super) id: String,
    pub(super) group: String,
    pub(super) update_time: String,
    pub(super) schedule: String,
    pub(super) schedule_date: Option<String>,
    pub(super) time: String,
    pub(super) timezone: String,
    pub(super) days: Option<i64>,
    pub(super) immediate: bool,
    pub(super) kick: bool,
    pub(super) event: String,
    pub(super) message: String,
    pub(super) actor: String,
    pub(super) lockout: i64,
    pub(super) due_at: Option<String>,
}

impl RawRow {
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<RawRow> {
        RawRow::read_at(row, 0)
    }

    /// Reads the columns starting at index `at` (after a leading rowid, say).
    fn read_at(row: &Row<'_>, at: usize) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            date: row.get(at)?,
            id: row.get(at + 1)?,
            group: row.get(at + 2)?,
            update_time: row.get(at + 3)?,
            schedule: row.get(at + 4)?,
            schedule_date: row.get(at + 5)?,
            time: row.get(at + 6)?,
            timezone: row.get(at + 7)?,
            days: row.get(at + 8)?,
            immediate: row.get(at + 9)?,
            kick: row.get(at + 10)?,
            event: row.get(at + 11)?,
            message: row.get(at + 12)?,
            actor: row.get(at + 13)?,
            lockout: row.get(at + 14)?,
            due_at: row.get(at + 15)?,
        })
    }

    /// A stored row goes through the same checks as typed input: a row written by hand with
    /// the sqlite3 shell is reported with its Id, never fired half-understood.
    pub(super) fn into_record(self) -> Result<ScheduleRecord, Error> {
        let in_row = |e: Error| match e {
            Error::Invalid { field, reason } => {
                Error::invalid(format!("schedule {} {field}", self.id), reason)
            }
            other => other,
        };
        let schedule = Schedule {
            group: self.group.clone(),
            recurrence: Recurrence::from_columns(
                &self.schedule,
                self.schedule_date.as_deref(),
                self.days,
            )
            .map_err(in_row)?,
            time: crate::schedule::parse_time(&self.time).map_err(in_row)?,
            timezone: crate::schedule::parse_timezone(&self.timezone).map_err(in_row)?,
            immediate: self.immediate,
            kick: self.kick,
            message: self.message,
            lockout_minutes: u32::try_from(self.lockout).unwrap_or(0),
        };
        Ok(ScheduleRecord {
            date: self.date,
            id: self.id.clone(),
            update_time: self.update_time,
            event: ScheduleEvent::parse(&self.event).map_err(in_row)?,
            actor: self.actor,
            schedule,
            due_at: self.due_at,
        })
    }
}

impl Store {
    /// Records a new schedule (`created`) and returns its row.
    pub fn add_schedule(
        &mut self,
        schedule: &Schedule,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, Error> {
        self.insert_new(schedule, actor, now, None)
    }

    /// Records a new version of the schedule `id_or_prefix`. `change` sees the current version
    /// inside the write transaction, so concurrent updates cannot lose each other's fields.
    pub fn update_schedule(
        &mut self,
        id_or_prefix: &str,
        actor: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&Schedule) -> Result<Schedule, Error>,
    ) -> Result<ScheduleRecord, Error> {
        self.write_version(id_or_prefix, ScheduleEvent::Updated, actor, now, change)
    }

    /// Records the deletion of a schedule: a last version with Event `deleted`.
    pub fn delete_schedule(
        &mut self,
        id_or_prefix: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, Error> {
        self.write_version(
            id_or_prefix,
            ScheduleEvent::Deleted,
            actor,
            now,
            |current| Ok(current.clone()),
        )
    }

    fn write_version(
        &mut self,
        id_or_prefix: &str,
        event: ScheduleEvent,
        actor: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&Schedule) -> Result<Schedule, Error>,
    ) -> Result<ScheduleRecord, Error> {
        let path = self.path.clone();
        let zone = self.host_zone().clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, "starting a schedule write", e))?;
        let id = resolve_id(&tx, &path, id_or_prefix)?;
        refuse_fleet_schedule(&tx, &path, &id)?;
        let current = current_version(&tx, &path, &id)?;
        let schedule = change(&current.schedule)?;
        let record = ScheduleRecord {
            date: partition_date(now, &zone),
            id,
            update_time: format_timestamp(now),
            event,
            actor: actor.to_string(),
            schedule,
            due_at: current.due_at.clone(),
        };
        insert_version(&tx, &record).map_err(|e| classify(&path, "writing the schedule", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the schedule", e))?;
        Ok(record)
    }

    fn new_version(
        &self,
        id: String,
        event: ScheduleEvent,
        schedule: &Schedule,
        actor: &str,
        now: DateTime<Utc>,
        due_at: Option<DateTime<Utc>>,
    ) -> ScheduleRecord {
        ScheduleRecord {
            date: partition_date(now, self.host_zone()),
            id,
            update_time: format_timestamp(now),
            event,
            actor: actor.to_string(),
            schedule: schedule.clone(),
            due_at: due_at.map(format_timestamp),
        }
    }

    /// Records an immediate logout (`forcelogoutctl logout`): a `created` Once row with
    /// Immediate=1 at `now`, taking effect at `due`.
    pub fn add_immediate_logout(
        &mut self,
        schedule: &Schedule,
        actor: &str,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<ScheduleRecord, Error> {
        self.insert_new(schedule, actor, now, Some(due))
    }

    /// Writes the first version (`created`) of a new schedule, in its own transaction.
    fn insert_new(
        &mut self,
        schedule: &Schedule,
        actor: &str,
        now: DateTime<Utc>,
        due: Option<DateTime<Utc>>,
    ) -> Result<ScheduleRecord, Error> {
        let record = self.new_version(
            ids::new_id()?,
            ScheduleEvent::Created,
            schedule,
            actor,
            now,
            due,
        );
        let (tx, path, _) = self.begin_write("starting a schedule write")?;
        insert_version(&tx, &record).map_err(|e| classify(&path, "writing the schedule", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing the schedule", e))?;
        Ok(record)
    }

    /// Schedule versions written after `rowid`, with their rowids: what changed since the
    /// daemon last looked, without rereading the whole history.
    /// A version that fails validation comes back as its error (with the Id), for the caller to
    /// report and skip.
    #[allow(clippy::type_complexity)]
    /// At most `limit` at a time, so that a large history is read without holding it twice.
    pub fn schedule_versions_after(
        &self,
        rowid: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Result<ScheduleRecord, Error>)>, Error> {
        let fail = |e| classify(&self.path, "reading schedule changes", e);
        let sql = format!(
            "SELECT rowid, {COLUMNS} FROM LogoutSchedules WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(fail)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![rowid, limit], |row| {
                let id: i64 = row.get(0)?;
                Ok((id, RawRow::read_at(row, 1)?))
            })
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(rows
            .into_iter()
            .map(|(rowid, raw)| (rowid, raw.into_record()))
            .collect())
    }

    /// The schedule version with this rowid (as `schedule_versions_after` numbers them): the
    /// daemon keeps only when each schedule fires and reads the whole row back when it acts.
    pub fn schedule_version(&self, rowid: i64) -> Result<Option<ScheduleRecord>, Error> {
        let fail = |e| classify(&self.path, "reading a schedule version", e);
        let sql = format!("SELECT {COLUMNS} FROM LogoutSchedules WHERE rowid = ?1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(fail)?;
        let raw = stmt
            .query_row(params![rowid], RawRow::read)
            .optional()
            .map_err(fail)?;
        raw.map(RawRow::into_record).transpose()
    }

    /// The current set, oldest first, optionally only those naming `group`.
    pub fn current_schedules(&self, group: Option<&str>) -> Result<Vec<ScheduleRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM LogoutSchedulesCurrent \
             WHERE ?1 IS NULL OR GroupName = ?1 ORDER BY rowid"
        );
        self.query_schedules(&sql, group)
    }

    /// What names the schedules' content: the last version's rowid. The table only grows
    /// (triggers refuse UPDATE and DELETE), so the same mark means the same versions.
    pub fn schedules_mark(&self) -> Result<i64, Error> {
        self.conn
            .prepare_cached("SELECT coalesce(max(rowid), 0) FROM LogoutSchedules")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .map_err(|e| classify(&self.path, "reading the schedules' mark", e))
    }

    /// The current set for enforcement: rows that fail validation (written by hand with the
    /// sqlite3 shell, say) are returned apart, with their Id, so that one bad row never stops
    /// the PAM module or the daemon from enforcing the others.
    pub fn current_schedules_lenient(&self) -> Result<(Vec<ScheduleRecord>, Vec<Error>), Error> {
        let sql = format!("SELECT {COLUMNS} FROM LogoutSchedulesCurrent ORDER BY rowid");
        self.query_schedules_lenient(&sql, "reading schedules")
    }

    /// The current set, oldest first, each with its version's rowid, handed to `each` one at a
    /// time as read: the daemon keeps a few fields of each and reads a whole row back by its
    /// rowid (`schedule_version`), so 10,000 schedules are never held whole at once. A row that
    /// fails validation comes as its error (with the Id). The rows of `LogoutSchedulesCurrent`,
    /// read from the table because a view has no rowid.
    pub fn for_each_current_schedule(
        &self,
        each: &mut dyn FnMut(i64, Result<ScheduleRecord, Error>),
    ) -> Result<(), Error> {
        let fail = |e| classify(&self.path, "reading schedules", e);
        let sql = format!(
            "SELECT rowid, {COLUMNS} FROM LogoutSchedules \
             WHERE rowid IN (SELECT max(rowid) FROM LogoutSchedules GROUP BY Id) \
             AND Event <> 'deleted' ORDER BY rowid"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(fail)?;
        let mut rows = stmt.query([]).map_err(fail)?;
        while let Some(row) = rows.next().map_err(fail)? {
            let rowid: i64 = row.get(0).map_err(fail)?;
            let raw = RawRow::read_at(row, 1).map_err(fail)?;
            each(rowid, raw.into_record());
        }
        Ok(())
    }

    /// Rows of `sql` (the `COLUMNS`), those that fail validation apart with their Id.
    #[allow(clippy::type_complexity)]
    pub(super) fn query_schedules_lenient(
        &self,
        sql: &str,
        context: &'static str,
    ) -> Result<(Vec<ScheduleRecord>, Vec<Error>), Error> {
        let fail = |e| classify(&self.path, context, e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(fail)?;
        let raws = stmt
            .query_map([], RawRow::read)
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for raw in raws {
            match raw.into_record() {
                Ok(record) => good.push(record),
                Err(e) => bad.push(e),
            }
        }
        Ok((good, bad))
    }

    /// Every version of every schedule, oldest first, optionally only those naming `group`.
    pub fn schedule_history(&self, group: Option<&str>) -> Result<Vec<ScheduleRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM LogoutSchedules \
             WHERE ?1 IS NULL OR GroupName = ?1 ORDER BY rowid"
        );
        self.query_schedules(&sql, group)
    }

    /// The current version of one schedule; a deleted or unknown one is an `id` error.
    pub fn current_schedule(&self, id_or_prefix: &str) -> Result<ScheduleRecord, Error> {
        let id = resolve_id(&self.conn, &self.path, id_or_prefix)?;
        current_version(&self.conn, &self.path, &id)
    }

    /// Every version of one schedule, oldest first.
    pub fn versions_of(&self, id_or_prefix: &str) -> Result<Vec<ScheduleRecord>, Error> {
        let id = resolve_id(&self.conn, &self.path, id_or_prefix)?;
        let sql = format!("SELECT {COLUMNS} FROM LogoutSchedules WHERE Id = ?1 ORDER BY rowid");
        self.query_schedules(&sql, Some(&id))
    }

    fn query_schedules(&self, sql: &str, arg: Option<&str>) -> Result<Vec<ScheduleRecord>, Error> {
        let fail = |e| classify(&self.path, "reading schedules", e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(fail)?;
        let rows = stmt
            .query_map(params![arg], RawRow::read)
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        rows.into_iter().map(RawRow::into_record).collect()
    }
}

/// Inserts a version; `fleet_version` marks one copied from the fleet with its central
/// `Version` (local commands leave such schedules alone).
pub(super) fn insert_marked_version(
    conn: &rusqlite::Connection,
    r: &ScheduleRecord,
    fleet_version: Option<i64>,
) -> rusqlite::Result<()> {
    insert_version(conn, r)?;
    if let Some(version) = fleet_version {
        conn.prepare_cached(
            "INSERT INTO FleetMarks (ScheduleRowid, FleetVersion) VALUES (?1, ?2)",
        )?
        .execute(params![conn.last_insert_rowid(), version])?;
    }
    Ok(())
}

fn insert_version(conn: &rusqlite::Connection, r: &ScheduleRecord) -> rusqlite::Result<()> {
    let s = &r.schedule;
    let sql = format!(
        "INSERT INTO LogoutSchedules ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    );
    conn.prepare_cached(&sql)?.execute(params![
        r.date,
        r.id,
        s.group,
        r.update_time,
        s.recurrence.kind_name(),
        s.recurrence.schedule_date(),
        s.time_text(),
        s.timezone.name(),
        s.recurrence.days().map(|d| d.bits()),
        s.immediate,
        s.kick,
        r.event.as_str(),
        s.message,
        r.actor,
        s.lockout_minutes,
        r.due_at,
    ])?;
    Ok(())
}

/// A schedule whose current version came from the fleet is changed centrally only: a local
/// `schedule update|delete` or `apply` is refused, naming the Id.
fn refuse_fleet_schedule(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: &str,
) -> Result<(), Error> {
    let marked: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM FleetMarks WHERE ScheduleRowid = \
             (SELECT max(rowid) FROM LogoutSchedules WHERE Id = ?1))",
        )
        .and_then(|mut stmt| stmt.query_row(params![id], |row| row.get(0)))
        .map_err(|e| classify(path, "looking for the fleet mark", e))?;
    if marked {
        return Err(Error::invalid(
            "id",
            format!(
                "schedule {id} came from the fleet and is changed centrally \
                 (forcelogoutctl --fleet schedule update|delete {id})"
            ),
        ));
    }
    Ok(())
}

/// The full Id for a whole Id or a unique prefix of one.
fn resolve_id(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id_or_prefix: &str,
) -> Result<String, Error> {
    let prefix = ids::validate_id_prefix(id_or_prefix)?;
    let fail = |e| classify(path, "looking up the schedule id", e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT Id FROM LogoutSchedules \
             WHERE Id >= ?1 AND Id < ?1 || char(1114111) ORDER BY Id LIMIT 3",
        )
        .map_err(fail)?;
    let found = stmt
        .query_map(params![prefix], |row| row.get::<_, String>(0))
        .map_err(fail)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    match found.as_slice() {
        [id] => Ok(id.clone()),
        [] => Err(Error::invalid(
            "id",
            format!("no schedule has the id {prefix}"),
        )),
        _ => Err(Error::invalid(
            "id",
            format!("{prefix} is the start of several schedule ids; give more of it"),
        )),
    }
}

fn current_version(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: &str,
) -> Result<ScheduleRecord, Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM LogoutSchedules WHERE Id = ?1 ORDER BY rowid DESC LIMIT 1");
    let fail = |e| classify(path, "reading the schedule", e);
    let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
    let raw = stmt.query_row(params![id], RawRow::read).map_err(fail)?;
    let record = raw.into_record()?;
    if record.event == ScheduleEvent::Deleted {
        return Err(Error::invalid(
            "id",
            format!("schedule {id} was deleted on {}", record.update_time),
        ));
    }
    Ok(record)
}

impl Store {
    /// Creates (under the given Ids), updates and deletes schedules in one transaction
    /// (`apply`): all of it is recorded, or none of it.
    pub fn write_schedule_changes(
        &mut self,
        creates: &[(String, Schedule)],
        updates: &[(String, Schedule)],
        deletes: &[String],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let stamp =
            |id: String, event: ScheduleEvent, schedule: Schedule, zone: &Zone| ScheduleRecord {
                date: partition_date(now, zone),
                id,
                update_time: format_timestamp(now),
                event,
                actor: actor.to_string(),
                schedule,
                due_at: None,
            };
        let (tx, path, zone) = self.begin_write("starting the schedule changes")?;
        let mut records: Vec<ScheduleRecord> = creates
            .iter()
            .map(|(id, schedule)| {
                stamp(id.clone(), ScheduleEvent::Created, schedule.clone(), &zone)
            })
            .collect();
        for (id, schedule) in updates {
            refuse_fleet_schedule(&tx, &path, id)?;
            let current = current_version(&tx, &path, id)?;
            records.push(stamp(
                current.id,
                ScheduleEvent::Updated,
                schedule.clone(),
                &zone,
            ));
        }
        for id in deletes {
            refuse_fleet_schedule(&tx, &path, id)?;
            let current = current_version(&tx, &path, id)?;
            records.push(stamp(
                current.id,
                ScheduleEvent::Deleted,
                current.schedule,
                &zone,
            ));
        }
        for record in &records {
            insert_version(&tx, record)
                .map_err(|e| classify(&path, "writing a schedule change", e))?;
        }
        tx.commit()
            .map_err(|e| classify(&path, "committing the schedule changes", e))
    }
}
