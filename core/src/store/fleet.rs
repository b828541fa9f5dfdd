//! The central PostgreSQL database of a fleet (SPEC §9): the connection, and the statements
//! the administrators' commands run on it. Feature `fleet` only: the PAM module never links a
//! network client. The schema and roles are in `fleet_schema`, the host link's statements in
//! `fleet_host`, the URL and password file in `fleet_url`, TLS settings in `fleet_tls`, the
//! connection's byte stream in `fleet_channel`.
//!
//! Names are unquoted, so PostgreSQL folds them to lower case and `psql` users type them as
//! in SQLite (`SELECT * FROM LogoutEvents WHERE Host = 'lab1'`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::{Client, Row};

use super::schedules::RawRow;
use super::{EventRow, ScheduleEvent, ScheduleRecord};
use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::ids;
use crate::schedule::Schedule;

pub use super::fleet_channel::{FleetTls, SILENCE_LIMIT};
pub use super::fleet_enrolment::{url_for_hosts, Enrolment};
pub use super::fleet_host::{CentralVersion, HostDb, HostIdentity, HostView, Poll, DIVERGED};
pub use super::fleet_schema::InitReport;
pub use super::fleet_tls::{Check, TlsMode};
pub use super::fleet_url::FleetUrl;

/// A statement running longer than this is cancelled by the server (a central database that
/// is overloaded or stuck on a lock is reported, and the link starts again).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A statement waiting longer than this for a lock (a schedule writer behind another, an
/// administrator's open transaction) is cancelled by the server.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The group role that writes schedules and reads everything.
pub const ADMIN_ROLE: &str = "forcelogout_admin";
/// The group role whose members may call the host functions (and nothing else).
pub const HOST_ROLE: &str = "forcelogout_host";
/// The login role hosts use unless their URL names one: a member of `HOST_ROLE`, shared by
/// every host (a pooler pools per role), created by the site.
pub const LINK_ROLE: &str = "forcelogout_link";
/// The channel a new schedule version is announced on.
pub const CHANNEL: &str = "forcelogout_schedules";

pub(super) const SCHEDULE_COLUMNS: &str =
    "Date, Id, GroupName, UpdateTime, Schedule, ScheduleDate, Time, \
     Timezone, Days, Immediate, Kick, Event, Message, Actor, Lockout, DueAt, Hosts, Version";

pub(super) const EVENT_COLUMNS: &str =
    "Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId, \
     EventIdentifier, RelatedEventIdentifier, SessionKey, LoginKey, UserId, ScheduleId, Reason, \
     Service, Tty, RemoteHost, Host";

/// `pg_error` for what was being done (`what`) on `endpoint`, as a `map_err` argument.
pub(super) fn pg_failure(endpoint: &str, what: &str) -> impl FnOnce(postgres::Error) -> Error {
    let context = format!("{what} on {endpoint}");
    move |e| pg_error(&context, e)
}

/// Maps the client's errors to the product's: a refused login or a missing privilege is
/// exit 4, everything else (unreachable, closed, a server error) exit 1; one line each.
pub fn pg_error(context: &str, e: postgres::Error) -> Error {
    let line = |text: String| crate::text::sanitize_line(&text);
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *code == SqlState::INSUFFICIENT_PRIVILEGE
        {
            return Error::PermissionDenied {
                context: line(format!("fleet: {context}: {}", db.message())),
            };
        }
        return Error::io(
            line(format!("fleet: {context}")),
            std::io::Error::other(line(db.message().to_string())),
        );
    }
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    Error::io(
        line(format!("fleet: {context}")),
        std::io::Error::other(line(cause)),
    )
}

/// A version of a central schedule: the host table's row plus `Hosts` and `Version`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CentralSchedule {
    #[serde(flatten)]
    pub record: ScheduleRecord,
    #[serde(rename = "Hosts")]
    pub hosts: String,
    #[serde(rename = "Version")]
    pub version: i64,
}

/// A row of `FleetHosts`, with how far behind the host is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FleetHost {
    pub host: String,
    pub labels: Vec<String>,
    /// Whether the host has a secret (an enrolled host; rows from before secrets have none).
    pub enrolled: bool,
    pub enrolled_at: Option<String>,
    pub last_contact: Option<String>,
    pub schedule_version: i64,
    /// Central versions this host has not applied yet.
    pub versions_behind: i64,
    pub last_replay_id: i64,
    pub product_version: Option<String>,
}

/// Filters of `events --fleet`.
#[derive(Clone, Debug, Default)]
pub struct CentralEventFilter {
    pub since: Option<String>,
    pub group: Option<String>,
    pub event: Option<String>,
    pub host: Option<String>,
}

/// A connection to the central database.
pub struct FleetDb {
    pub(super) client: Client,
    pub(super) endpoint: String,
}

impl FleetDb {
    /// Connects with `config` and sets the statement and lock timeouts for the session. They
    /// are set with SET rather than the `options` startup parameter, which poolers such as
    /// pgbouncer refuse by default ("unsupported startup parameter").
    pub(super) fn open(
        config: &postgres::Config,
        tls: FleetTls,
        endpoint: String,
    ) -> Result<FleetDb, Error> {
        let fail = |e| pg_error(&format!("connecting to {endpoint}"), e);
        let mut client = config.connect(tls).map_err(fail)?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}",
                STATEMENT_TIMEOUT.as_millis(),
                LOCK_TIMEOUT.as_millis()
            ))
            .map_err(fail)?;
        Ok(FleetDb { client, endpoint })
    }

    pub(super) fn fail(&self, context: &str) -> impl FnOnce(postgres::Error) -> Error + '_ {
        let context = format!("{context} on {}", self.endpoint);
        move |e| pg_error(&context, e)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    // ---- administrators: schedules ----

    /// Writes the first version of a new central schedule.
    pub fn add_schedule(
        &mut self,
        schedule: &Schedule,
        hosts: &str,
        actor: &str,
        now: DateTime<Utc>,
        due: Option<DateTime<Utc>>,
    ) -> Result<CentralSchedule, Error> {
        let record = ScheduleRecord {
            date: partition_date(now, &crate::clock::host_timezone()),
            id: ids::new_id()?,
            update_time: format_timestamp(now),
            event: ScheduleEvent::Created,
            actor: actor.to_string(),
            schedule: schedule.clone(),
            due_at: due.map(format_timestamp),
        };
        let endpoint = self.endpoint.clone();
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| pg_error(&format!("starting a schedule write on {endpoint}"), e))?;
        let version = insert_central(&mut tx, &record, hosts)
            .map_err(|e| pg_error(&format!("writing the schedule on {endpoint}"), e))?;
        tx.commit()
            .map_err(|e| pg_error(&format!("committing the schedule on {endpoint}"), e))?;
        Ok(CentralSchedule {
            record,
            hosts: hosts.to_string(),
            version,
        })
    }

    /// Writes a new version of `id_or_prefix` (`updated`, or `deleted` with `delete`);
    /// `change` sees the current version and its Hosts inside the write transaction.
    pub fn write_version(
        &mut self,
        id_or_prefix: &str,
        delete: bool,
        actor: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&CentralSchedule) -> Result<(Schedule, String), Error>,
    ) -> Result<CentralSchedule, Error> {
        let endpoint = self.endpoint.clone();
        let fail = |what: &str| pg_failure(&endpoint, what);
        let mut tx = self
            .client
            .transaction()
            .map_err(fail("starting a schedule write"))?;
        // The version lock first: the read below and the write are one step for every writer.
        tx.batch_execute("SELECT forcelogout_lock_schedules()")
            .map_err(fail("locking the schedules"))?;
        let id = resolve_central_id(&mut tx, id_or_prefix).map_err(|e| match e {
            Resolve::Db(e) => fail("looking up the schedule id")(e),
            Resolve::Invalid(e) => e,
        })?;
        let current = current_central(&mut tx, &id)?;
        let (schedule, hosts) = change(&current)?;
        let record = ScheduleRecord {
            date: partition_date(now, &crate::clock::host_timezone()),
            id,
            update_time: format_timestamp(now),
            event: if delete {
                ScheduleEvent::Deleted
            } else {
                ScheduleEvent::Updated
            },
            actor: actor.to_string(),
            schedule,
            due_at: current.record.due_at.clone(),
        };
        let version =
            insert_central(&mut tx, &record, &hosts).map_err(fail("writing the schedule"))?;
        tx.commit().map_err(fail("committing the schedule"))?;
        Ok(CentralSchedule {
            record,
            hosts,
            version,
        })
    }

    /// The current central set (latest version per Id, not deleted), oldest first.
    pub fn current_schedules(
        &mut self,
        group: Option<&str>,
    ) -> Result<Vec<CentralSchedule>, Error> {
        let sql = format!(
            "SELECT * FROM (SELECT DISTINCT ON (Id) {SCHEDULE_COLUMNS} FROM LogoutSchedules \
             ORDER BY Id, Version DESC) AS latest \
             WHERE Event <> 'deleted' AND ($1::text IS NULL OR GroupName = $1) ORDER BY Version"
        );
        let rows = self
            .client
            .query(&sql, &[&group])
            .map_err(self.fail("reading the schedules"))?;
        rows.iter().map(central_from_row).collect()
    }

    /// Every central version, oldest first.
    pub fn schedule_history(&mut self, group: Option<&str>) -> Result<Vec<CentralSchedule>, Error> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM LogoutSchedules \
             WHERE $1::text IS NULL OR GroupName = $1 ORDER BY Version"
        );
        let rows = self
            .client
            .query(&sql, &[&group])
            .map_err(self.fail("reading the schedules"))?;
        rows.iter().map(central_from_row).collect()
    }

    /// The current version of one schedule and all its versions.
    pub fn schedule(
        &mut self,
        id_or_prefix: &str,
    ) -> Result<(CentralSchedule, Vec<CentralSchedule>), Error> {
        let endpoint = self.endpoint.clone();
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| pg_error(&format!("reading a schedule on {endpoint}"), e))?;
        let id = resolve_central_id(&mut tx, id_or_prefix).map_err(|e| match e {
            Resolve::Db(e) => pg_error(&format!("looking up the schedule id on {endpoint}"), e),
            Resolve::Invalid(e) => e,
        })?;
        let current = current_central(&mut tx, &id)?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM LogoutSchedules WHERE Id = $1 ORDER BY Version"
        );
        let rows = tx
            .query(&sql, &[&id])
            .map_err(|e| pg_error(&format!("reading a schedule on {endpoint}"), e))?;
        let versions = rows
            .iter()
            .map(central_from_row)
            .collect::<Result<_, _>>()?;
        Ok((current, versions))
    }

    /// The newest central version (0 for none).
    pub fn latest_version(&mut self) -> Result<i64, Error> {
        Ok(self
            .client
            .query_one("SELECT coalesce(max(Version), 0) FROM LogoutSchedules", &[])
            .map_err(self.fail("reading the newest version"))?
            .get(0))
    }

    // ---- administrators: events and hosts ----

    /// Events of all hosts matching `filter`, by time, at most `limit`.
    pub fn events(
        &mut self,
        filter: &CentralEventFilter,
        limit: i64,
    ) -> Result<Vec<EventRow>, Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM LogoutEvents \
             WHERE ($1::text IS NULL OR Date >= $1) AND ($2::text IS NULL OR GroupName = $2) \
             AND ($3::text IS NULL OR Event = $3) AND ($4::text IS NULL OR Host = $4) \
             ORDER BY Timestamp, Host, ReplayId LIMIT $5"
        );
        let rows = self
            .client
            .query(
                &sql,
                &[
                    &filter.since,
                    &filter.group,
                    &filter.event,
                    &filter.host,
                    &limit,
                ],
            )
            .map_err(self.fail("reading the events"))?;
        Ok(rows.iter().map(event_from_row).collect())
    }

    /// Every host, its labels, last contact and how far behind it is.
    pub fn hosts(&mut self) -> Result<Vec<FleetHost>, Error> {
        let rows = self
            .client
            .query(
                "SELECT Host, Labels, SecretHash IS NOT NULL, \
                 to_char(EnrolledAt AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 to_char(LastContact AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 ScheduleVersion, \
                 (SELECT coalesce(max(Version), 0) FROM LogoutSchedules) - ScheduleVersion, \
                 LastReplayId, ProductVersion FROM FleetHosts ORDER BY Host",
                &[],
            )
            .map_err(self.fail("reading the hosts"))?;
        Ok(rows
            .iter()
            .map(|r| FleetHost {
                host: r.get(0),
                labels: r.get(1),
                enrolled: r.get(2),
                enrolled_at: r.get(3),
                last_contact: r.get(4),
                schedule_version: r.get(5),
                versions_behind: r.get(6),
                last_replay_id: r.get(7),
                product_version: r.get(8),
            })
            .collect())
    }
}

fn insert_central(
    tx: &mut postgres::Transaction<'_>,
    r: &ScheduleRecord,
    hosts: &str,
) -> Result<i64, postgres::Error> {
    let s = &r.schedule;
    let days = s.recurrence.days().map(|d| i32::from(d.bits()));
    let lockout = i32::try_from(s.lockout_minutes).unwrap_or(0);
    let sql = "INSERT INTO LogoutSchedules (Date, Id, GroupName, UpdateTime, Schedule, ScheduleDate, \
               Time, Timezone, Days, Immediate, Kick, Event, Message, Actor, Lockout, DueAt, Hosts) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
               RETURNING Version";
    let row = tx.query_one(
        sql,
        &[
            &r.date,
            &r.id,
            &s.group,
            &r.update_time,
            &s.recurrence.kind_name(),
            &s.recurrence.schedule_date(),
            &s.time_text(),
            &s.timezone.name(),
            &days,
            &s.immediate,
            &s.kick,
            &r.event.as_str(),
            &s.message,
            &r.actor,
            &lockout,
            &r.due_at,
            &hosts,
        ],
    )?;
    Ok(row.get(0))
}

enum Resolve {
    Db(postgres::Error),
    Invalid(Error),
}

fn resolve_central_id(
    tx: &mut postgres::Transaction<'_>,
    id_or_prefix: &str,
) -> Result<String, Resolve> {
    let prefix = ids::validate_id_prefix(id_or_prefix).map_err(Resolve::Invalid)?;
    let rows = tx
        .query(
            "SELECT DISTINCT Id FROM LogoutSchedules WHERE Id >= $1 AND Id < $1 || chr(1114111) \
             ORDER BY Id LIMIT 3",
            &[&prefix],
        )
        .map_err(Resolve::Db)?;
    match rows.as_slice() {
        [row] => Ok(row.get(0)),
        [] => Err(Resolve::Invalid(Error::invalid(
            "id",
            format!("no fleet schedule has the id {prefix}"),
        ))),
        _ => Err(Resolve::Invalid(Error::invalid(
            "id",
            format!("{prefix} is the start of several schedule ids; give more of it"),
        ))),
    }
}

fn current_central(tx: &mut postgres::Transaction<'_>, id: &str) -> Result<CentralSchedule, Error> {
    let sql = format!(
        "SELECT {SCHEDULE_COLUMNS} FROM LogoutSchedules WHERE Id = $1 ORDER BY Version DESC LIMIT 1"
    );
    let row = tx
        .query_one(&sql, &[&id])
        .map_err(|e| pg_error("reading the schedule", e))?;
    let current = central_from_row(&row)?;
    if current.record.event == ScheduleEvent::Deleted {
        return Err(Error::invalid(
            "id",
            format!(
                "schedule {id} was deleted on {}",
                current.record.update_time
            ),
        ));
    }
    Ok(current)
}

/// A central row through the same checks as a local one (a row written by hand in psql is
/// reported with its Id, never applied half-understood).
pub(super) fn central_from_row(row: &Row) -> Result<CentralSchedule, Error> {
    let raw = RawRow {
        date: row.get(0),
        id: row.get(1),
        group: row.get(2),
        update_time: row.get(3),
        schedule: row.get(4),
        schedule_date: row.get(5),
        time: row.get(6),
        timezone: row.get(7),
        days: row.get::<_, Option<i32>>(8).map(i64::from),
        immediate: row.get(9),
        kick: row.get(10),
        event: row.get(11),
        message: row.get(12),
        actor: row.get(13),
        lockout: i64::from(row.get::<_, i32>(14)),
        due_at: row.get(15),
    };
    Ok(CentralSchedule {
        record: raw.into_record()?,
        hosts: row.get(16),
        version: row.get(17),
    })
}

fn event_from_row(r: &Row) -> EventRow {
    EventRow {
        date: r.get(0),
        timestamp: r.get(1),
        group_name: r.get(2),
        event: r.get(3),
        immediate: r.get(4),
        kick: r.get(5),
        replay_id: r.get(6),
        event_identifier: r.get(7),
        related_event_identifier: r.get(8),
        session_key: r.get(9),
        login_key: r.get(10),
        user_id: r.get(11),
        schedule_id: r.get(12),
        reason: r.get(13),
        service: r.get(14),
        tty: r.get(15),
        remote_host: r.get(16),
        host: r.get(17),
    }
}
