//! The central schema (SPEC §9): its tables, its migrations and its roles, created and
//! migrated by `fleet init`, and the check every connection makes that the schema is the one
//! this build knows.

use postgres::error::SqlState;

use super::fleet::{pg_error, pg_failure, FleetDb};
use crate::error::Error;

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

/// What `fleet init` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitReport {
    pub from_version: i64,
    pub to_version: i64,
}

impl FleetDb {
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
}
