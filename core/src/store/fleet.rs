//! The central PostgreSQL database of a fleet (SPEC §9): its schema and roles, and every
//! statement the administrators' commands and the hosts' daemons run on it. Feature `fleet`
//! only: the PAM module never links a network client. The URL and password file are in
//! `fleet_url`, TLS settings in `fleet_tls`, the connection's byte stream in `fleet_channel`.
//!
//! Names are unquoted, so PostgreSQL folds them to lower case and `psql` users type them as
//! in SQLite (`SELECT * FROM LogoutEvents WHERE Host = 'lab1'`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Row};

use super::schedules::RawRow;
use super::{EventRow, ScheduleEvent, ScheduleRecord};
use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::ids;
use crate::schedule::Schedule;

pub use super::fleet_channel::{FleetTls, SILENCE_LIMIT};
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
/// The group role every host's login role belongs to.
pub const HOST_ROLE: &str = "forcelogout_host";
/// The channel a new schedule version is announced on.
pub const CHANNEL: &str = "forcelogout_schedules";

/// Central schema migrations, as the local store's: `FleetSchema.Version` is how many ran.
const MIGRATIONS: &[&str] = &[CENTRAL_V1];

const CENTRAL_V1: &str = r#"
CREATE TABLE LogoutSchedules (
    Date         text    NOT NULL,
    Id           text    NOT NULL,
    GroupName    text    NOT NULL,
    UpdateTime   text    NOT NULL,
    Schedule     text    NOT NULL CHECK (Schedule IN ('Once', 'Daily', 'Weekly')),
    ScheduleDate text    CHECK ((Schedule = 'Once') = (ScheduleDate IS NOT NULL)),
    Time         text    NOT NULL,
    Timezone     text    NOT NULL,
    Days         integer CHECK ((Schedule = 'Weekly') = (Days IS NOT NULL) AND (Days IS NULL OR Days BETWEEN 1 AND 127)),
    Immediate    boolean NOT NULL,
    Kick         boolean NOT NULL,
    Event        text    NOT NULL CHECK (Event IN ('created', 'updated', 'deleted')),
    Message      text    NOT NULL DEFAULT '',
    Actor        text    NOT NULL,
    Lockout      integer NOT NULL DEFAULT 0 CHECK (Lockout BETWEEN 0 AND 1440),
    DueAt        text,
    Hosts        text    NOT NULL DEFAULT '*' CHECK (Hosts = '*' OR Hosts ~ '^@?[A-Za-z0-9._-]+$'),
    Version      bigint  PRIMARY KEY
);
CREATE SEQUENCE LogoutSchedules_Version OWNED BY LogoutSchedules.Version;
CREATE INDEX LogoutSchedules_Id ON LogoutSchedules (Id);

-- Hosts follow the versions with "Version > my position". A bigserial drawn in one
-- transaction can commit after a higher one drawn in another, and a host that had already
-- moved past the higher one would never see the lower. So every writer takes this
-- self-conflicting lock before drawing its number and holds it to its commit: versions become
-- visible in their order. Readers take no lock and are never held up; a hand-written INSERT
-- in psql goes through the same trigger. LOCK in this mode needs UPDATE on the table, which
-- no role has: the lock is taken by these two functions as the schema's owner.
CREATE FUNCTION forcelogout_lock_schedules() RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    LOCK TABLE LogoutSchedules IN SHARE ROW EXCLUSIVE MODE;
END $$;
CREATE FUNCTION forcelogout_schedule_version() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM forcelogout_lock_schedules();
    NEW.Version := nextval('LogoutSchedules_Version');
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION forcelogout_lock_schedules() FROM PUBLIC;
CREATE TRIGGER LogoutSchedules_version BEFORE INSERT ON LogoutSchedules
    FOR EACH ROW EXECUTE FUNCTION forcelogout_schedule_version();

CREATE FUNCTION forcelogout_schedules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('forcelogout_schedules', '');
    RETURN NULL;
END $$;
CREATE TRIGGER LogoutSchedules_notify AFTER INSERT ON LogoutSchedules
    FOR EACH STATEMENT EXECUTE FUNCTION forcelogout_schedules_notify();

CREATE TABLE LogoutEvents (
    Date                   text    NOT NULL,
    Timestamp              text    NOT NULL,
    GroupName              text    NOT NULL,
    Event                  text    NOT NULL,
    Immediate              boolean NOT NULL,
    Kick                   boolean NOT NULL,
    ReplayId               bigint  NOT NULL,
    EventIdentifier        text    NOT NULL UNIQUE,
    RelatedEventIdentifier text,
    SessionKey             text,
    LoginKey               text,
    UserId                 bigint,
    ScheduleId             text,
    Reason                 text,
    Service                text,
    Tty                    text,
    RemoteHost             text,
    Host                   text    NOT NULL,
    UploadedAt             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX LogoutEvents_Host_ReplayId ON LogoutEvents (Host, ReplayId);
CREATE INDEX LogoutEvents_Date ON LogoutEvents (Date);
CREATE INDEX LogoutEvents_GroupName ON LogoutEvents (GroupName);

CREATE TABLE FleetHosts (
    Host            text    PRIMARY KEY,
    Labels          text[]  NOT NULL DEFAULT '{}',
    LastContact     timestamptz,
    ConnectedSince  timestamptz,
    ScheduleVersion bigint  NOT NULL DEFAULT 0,
    AppliedAt       timestamptz,
    LastReplayId    bigint  NOT NULL DEFAULT 0,
    ProductVersion  text
);

-- A host logs in as a login role named after it (a member of forcelogout_host): it may write
-- only events and a FleetHosts row that carry its own name.
ALTER TABLE LogoutEvents ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_reads ON LogoutEvents FOR SELECT TO forcelogout_admin USING (true);
CREATE POLICY host_inserts_own ON LogoutEvents FOR INSERT TO forcelogout_host
    WITH CHECK (Host = current_user);
-- ON CONFLICT (EventIdentifier) reads the arbiter column, so PostgreSQL checks the new row
-- against a SELECT policy too: hosts see (only the EventIdentifier of) their own events.
CREATE POLICY host_reads_own ON LogoutEvents FOR SELECT TO forcelogout_host
    USING (Host = current_user);
ALTER TABLE FleetHosts ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_reads ON FleetHosts FOR SELECT TO forcelogout_admin USING (true);
CREATE POLICY admin_removes ON FleetHosts FOR DELETE TO forcelogout_admin USING (true);
CREATE POLICY host_own_row ON FleetHosts FOR ALL TO forcelogout_host
    USING (Host = current_user) WITH CHECK (Host = current_user);
"#;

/// Run at every `fleet init`, after the migrations: the two group roles and what each may do.
/// Granting what is already granted changes nothing.
const ROLES: &str = r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'forcelogout_admin') THEN
        CREATE ROLE forcelogout_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'forcelogout_host') THEN
        CREATE ROLE forcelogout_host NOLOGIN;
    END IF;
END $$;
"#;

const GRANTS: &str = r#"
REVOKE ALL ON LogoutSchedules, LogoutEvents, FleetHosts, FleetSchema FROM PUBLIC;
GRANT SELECT ON FleetSchema TO forcelogout_admin, forcelogout_host;
GRANT SELECT, INSERT ON LogoutSchedules TO forcelogout_admin;
GRANT EXECUTE ON FUNCTION forcelogout_lock_schedules() TO forcelogout_admin;
GRANT SELECT ON LogoutEvents TO forcelogout_admin;
GRANT SELECT, DELETE ON FleetHosts TO forcelogout_admin;
GRANT SELECT ON LogoutSchedules TO forcelogout_host;
GRANT INSERT ON LogoutEvents TO forcelogout_host;
-- ON CONFLICT (EventIdentifier) needs it; host_reads_own limits it to the host's own rows.
GRANT SELECT (EventIdentifier) ON LogoutEvents TO forcelogout_host;
GRANT SELECT, INSERT, UPDATE ON FleetHosts TO forcelogout_host;
"#;

const SCHEDULE_COLUMNS: &str = "Date, Id, GroupName, UpdateTime, Schedule, ScheduleDate, Time, \
     Timezone, Days, Immediate, Kick, Event, Message, Actor, Lockout, DueAt, Hosts, Version";

const EVENT_COLUMNS: &str = "Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId, \
     EventIdentifier, RelatedEventIdentifier, SessionKey, LoginKey, UserId, ScheduleId, Reason, \
     Service, Tty, RemoteHost, Host";

/// `pg_error` for what was being done (`what`) on `endpoint`, as a `map_err` argument.
fn pg_failure(endpoint: &str, what: &str) -> impl FnOnce(postgres::Error) -> Error {
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
    pub last_contact: Option<String>,
    pub connected_since: Option<String>,
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

/// What `fleet init` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitReport {
    pub from_version: i64,
    pub to_version: i64,
}

/// A connection to the central database.
pub struct FleetDb {
    client: Client,
    endpoint: String,
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

    fn fail(&self, context: &str) -> impl FnOnce(postgres::Error) -> Error + '_ {
        let context = format!("{context} on {}", self.endpoint);
        move |e| pg_error(&context, e)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Creates or migrates the central schema and the two roles, in one transaction, under an
    /// advisory lock so two runs at once do not race. Running it again changes nothing.
    pub fn init(&mut self) -> Result<InitReport, Error> {
        let endpoint = self.endpoint.clone();
        let fail = |what: &str| pg_failure(&endpoint, what);
        let mut tx = self
            .client
            .transaction()
            .map_err(fail("starting fleet init"))?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('forcelogout fleet init')); \
             SET LOCAL client_min_messages = warning; \
             CREATE TABLE IF NOT EXISTS FleetSchema (Version integer NOT NULL)",
        )
        .map_err(fail("creating the schema version table"))?;
        tx.batch_execute(ROLES)
            .map_err(fail("creating the roles"))?;
        let from: i64 = tx
            .query_one(
                "SELECT coalesce(max(Version), 0)::bigint FROM FleetSchema",
                &[],
            )
            .map_err(fail("reading the schema version"))?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if from > known {
            return Err(Error::io(
                format!("fleet: the central schema has version {from}, newer than this build knows ({known})"),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            ));
        }
        for migration in &MIGRATIONS[usize::try_from(from).unwrap_or(0)..] {
            tx.batch_execute(migration)
                .map_err(fail("migrating the central schema"))?;
        }
        if from < known {
            tx.execute("DELETE FROM FleetSchema", &[])
                .and_then(|_| {
                    tx.execute(
                        "INSERT INTO FleetSchema (Version) VALUES ($1::bigint::integer)",
                        &[&known],
                    )
                })
                .map_err(fail("recording the schema version"))?;
        }
        tx.batch_execute(GRANTS)
            .map_err(fail("granting the roles"))?;
        tx.commit().map_err(fail("committing fleet init"))?;
        Ok(InitReport {
            from_version: from,
            to_version: known,
        })
    }

    /// Checks that the central schema is the one this build knows.
    pub fn check_schema(&mut self) -> Result<(), Error> {
        let endpoint = self.endpoint.clone();
        let version: Option<i32> = self
            .client
            .query_opt("SELECT max(Version) FROM FleetSchema", &[])
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
                    Error::io(
                        format!("fleet: {endpoint} has no forcelogout schema"),
                        std::io::Error::other("run forcelogoutctl --fleet fleet init first"),
                    )
                } else {
                    pg_error(&format!("reading the schema version on {endpoint}"), e)
                }
            })?
            .and_then(|r| r.get(0));
        match version {
            Some(v) if v as usize == MIGRATIONS.len() => Ok(()),
            other => Err(Error::io(
                format!(
                    "fleet: {endpoint} has schema version {}",
                    other.unwrap_or(0)
                ),
                std::io::Error::other(format!(
                    "this build needs {}; run forcelogoutctl --fleet fleet init",
                    MIGRATIONS.len()
                )),
            )),
        }
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
            date: partition_date(now, crate::clock::host_timezone()),
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
            date: partition_date(now, crate::clock::host_timezone()),
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
                "SELECT Host, Labels, to_char(LastContact AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 to_char(ConnectedSince AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
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
                last_contact: r.get(2),
                connected_since: r.get(3),
                schedule_version: r.get(4),
                versions_behind: r.get(5),
                last_replay_id: r.get(6),
                product_version: r.get(7),
            })
            .collect())
    }

    // ---- hosts ----

    /// Subscribes to schedule announcements. The host's bookkeeping writes (its FleetHosts
    /// row) need not wait for the server's fsync: losing one in a server crash only shows an
    /// older position. Uploads of events turn it back on for their own transactions.
    pub fn listen(&mut self) -> Result<(), Error> {
        self.client
            .batch_execute(&format!("LISTEN {CHANNEL}; SET synchronous_commit = off"))
            .map_err(self.fail("listening for schedule changes"))
    }

    /// Waits up to `timeout` for an announcement; whether one (or more) came.
    pub fn wait_for_announcement(&mut self, timeout: Duration) -> Result<bool, Error> {
        let endpoint = self.endpoint.clone();
        let mut notifications = self.client.notifications();
        let fail = |e| pg_error(&format!("waiting for schedule changes on {endpoint}"), e);
        let got = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(fail)?
            .is_some();
        // Drain what else is already there: one look at the table answers them all.
        while notifications.iter().next().map_err(fail)?.is_some() {}
        Ok(got)
    }

    /// Registers this host (or updates its labels and version) and returns the central
    /// positions: (schedule version it reported, last ReplayId the database has).
    pub fn enrol(
        &mut self,
        host: &str,
        labels: &[String],
        product: &str,
    ) -> Result<(i64, i64), Error> {
        let row = self
            .client
            .query_one(
                "INSERT INTO FleetHosts (Host, Labels, LastContact, ConnectedSince, ProductVersion) \
                 VALUES ($1, $2, now(), now(), $3) \
                 ON CONFLICT (Host) DO UPDATE SET Labels = EXCLUDED.Labels, LastContact = now(), \
                 ConnectedSince = now(), ProductVersion = EXCLUDED.ProductVersion \
                 RETURNING ScheduleVersion, LastReplayId",
                &[&host, &labels, &product],
            )
            .map_err(self.fail("registering this host"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Central versions after `position`, oldest first, at most `limit`; a row that fails
    /// validation comes back as its error, for the caller to log and skip.
    #[allow(clippy::type_complexity)]
    pub fn versions_after(
        &mut self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Result<CentralSchedule, Error>)>, Error> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM LogoutSchedules WHERE Version > $1 ORDER BY Version LIMIT $2"
        );
        let rows = self
            .client
            .query(&sql, &[&position, &limit])
            .map_err(self.fail("reading schedule changes"))?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(17), central_from_row(row)))
            .collect())
    }

    /// Reports the schedule version this host has applied (its local commit is done), with
    /// when it first had it (`AppliedAt`); also the host's heartbeat (`LastContact`).
    pub fn report_version(&mut self, host: &str, version: i64) -> Result<(), Error> {
        self.client
            .execute(
                "UPDATE FleetHosts SET AppliedAt = CASE WHEN ScheduleVersion = $2 THEN AppliedAt \
                 ELSE now() END, ScheduleVersion = $2, LastContact = now() WHERE Host = $1",
                &[&host, &version],
            )
            .map_err(self.fail("reporting the schedule version"))?;
        Ok(())
    }

    /// Uploads a batch of this host's events (ReplayId order) and its new position in one
    /// transaction; an event already there (same EventIdentifier) is skipped, so a batch
    /// sent twice is stored once. Returns how many rows were new.
    pub fn upload(&mut self, host: &str, events: &[EventRow]) -> Result<u64, Error> {
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let col =
            |f: &dyn Fn(&EventRow) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        let dates = col(&|e| Some(e.date.clone()));
        let stamps = col(&|e| Some(e.timestamp.clone()));
        let groups = col(&|e| Some(e.group_name.clone()));
        let kinds = col(&|e| Some(e.event.clone()));
        let immediate: Vec<bool> = events.iter().map(|e| e.immediate).collect();
        let kick: Vec<bool> = events.iter().map(|e| e.kick).collect();
        let replay: Vec<i64> = events.iter().map(|e| e.replay_id).collect();
        let identifiers = col(&|e| Some(e.event_identifier.clone()));
        let related = col(&|e| e.related_event_identifier.clone());
        let sessions = col(&|e| e.session_key.clone());
        let logins = col(&|e| e.login_key.clone());
        let uids: Vec<Option<i64>> = events.iter().map(|e| e.user_id).collect();
        let schedules = col(&|e| e.schedule_id.clone());
        let reasons = col(&|e| e.reason.clone());
        let services = col(&|e| e.service.clone());
        let ttys = col(&|e| e.tty.clone());
        let remotes = col(&|e| e.remote_host.clone());
        let params: [&(dyn ToSql + Sync); 18] = [
            &dates,
            &stamps,
            &groups,
            &kinds,
            &immediate,
            &kick,
            &replay,
            &identifiers,
            &related,
            &sessions,
            &logins,
            &uids,
            &schedules,
            &reasons,
            &services,
            &ttys,
            &remotes,
            &host,
        ];
        let endpoint = self.endpoint.clone();
        let fail = |what: &str| pg_failure(&endpoint, what);
        let mut tx = self
            .client
            .transaction()
            .map_err(fail("starting an upload"))?;
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .map_err(fail("starting an upload"))?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO LogoutEvents ({EVENT_COLUMNS}) \
                     SELECT d, t, g, ev, im, k, r, ei, rel, sk, lk, u, si, re, sv, tt, rh, $18 \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], \
                     $6::bool[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::int8[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]) \
                     AS x(d, t, g, ev, im, k, r, ei, rel, sk, lk, u, si, re, sv, tt, rh) \
                     ORDER BY r ON CONFLICT (EventIdentifier) DO NOTHING"
                ),
                &params,
            )
            .map_err(fail("uploading events"))?;
        tx.execute(
            "UPDATE FleetHosts SET LastReplayId = $2, LastContact = now() WHERE Host = $1",
            &[&host, &last.replay_id],
        )
        .map_err(fail("recording the upload position"))?;
        tx.commit().map_err(fail("committing an upload"))?;
        Ok(inserted)
    }

    /// Resets the central upload position (a host whose store was recreated starts again).
    pub fn reset_upload_position(&mut self, host: &str, replay_id: i64) -> Result<(), Error> {
        self.client
            .execute(
                "UPDATE FleetHosts SET LastReplayId = $2 WHERE Host = $1",
                &[&host, &replay_id],
            )
            .map_err(self.fail("resetting the upload position"))?;
        Ok(())
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
fn central_from_row(row: &Row) -> Result<CentralSchedule, Error> {
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
