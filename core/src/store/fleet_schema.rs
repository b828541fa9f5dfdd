//! The central schema (SPEC §9): its tables, its migrations and its roles, created and
//! migrated by `fleet init`, and the check every connection makes that the schema is the one
//! this build knows.

use postgres::error::SqlState;

use super::fleet::{pg_error, pg_failure, FleetDb};
use crate::error::Error;

/// Central schema migrations, as the local store's: `FleetSchema.Version` is how many ran.
pub(super) const MIGRATIONS: &[&str] = &[CENTRAL_V1, CENTRAL_V2, CENTRAL_V3];

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

/// Hosts without roles of their own (SPEC §9, "Identity and enrolment"): every host logs in as
/// one shared member of `forcelogout_host` (so that a transaction pooler can pool them all on
/// a few server connections) and proves who it is with its secret, checked by the functions
/// below, the only things the host role may use. Versions get a key that a failover which lost
/// transactions cannot issue again, so that a host can tell its position from a reissued one.
const CENTRAL_V2: &str = r#"
ALTER TABLE LogoutSchedules ADD COLUMN VersionKey uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE LogoutSchedules ADD CONSTRAINT LogoutSchedules_VersionKey UNIQUE (VersionKey);
-- The key is drawn by the trigger too, so that no INSERT can give a version a key it chose.
CREATE OR REPLACE FUNCTION forcelogout_schedule_version() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM forcelogout_lock_schedules();
    NEW.Version := nextval('LogoutSchedules_Version');
    NEW.VersionKey := gen_random_uuid();
    RETURN NEW;
END $$;

-- The secret is 32 random bytes: nobody can guess it, so its hash needs no salt and no
-- slow key derivation (those protect passwords people choose); SHA-256 is enough to make
-- a copy of this table useless for logging in.
ALTER TABLE FleetHosts ADD COLUMN SecretHash bytea, ADD COLUMN EnrolledAt timestamptz,
    DROP COLUMN ConnectedSince;

DROP POLICY host_inserts_own ON LogoutEvents;
DROP POLICY host_reads_own ON LogoutEvents;
DROP POLICY host_own_row ON FleetHosts;
CREATE POLICY admin_enrols ON FleetHosts FOR INSERT TO forcelogout_admin WITH CHECK (true);
CREATE POLICY admin_renews ON FleetHosts FOR UPDATE TO forcelogout_admin
    USING (true) WITH CHECK (true);

-- The host whose (name, secret) this is, or SQLSTATE 28000. The hash is computed before the
-- lookup, whether the host exists or not, and the comparison is of hashes: how long it takes
-- tells nothing about the secret.
CREATE FUNCTION forcelogout_host_auth(p_host text, p_secret text) RETURNS FleetHosts
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    given bytea := sha256(convert_to(coalesce(p_secret, ''), 'UTF8'));
    me FleetHosts;
BEGIN
    SELECT * INTO me FROM FleetHosts h WHERE h.Host = p_host;
    IF me.SecretHash IS NULL OR me.SecretHash <> given THEN
        RAISE EXCEPTION 'host %: not enrolled or wrong secret', p_host USING ERRCODE = '28000';
    END IF;
    RETURN me;
END $$;

-- What the two read functions return: a header row (schedule columns NULL) with the host's
-- central labels and upload position (and, from forcelogout_host_current, the newest Version
-- and its key), then one row per schedule version.
CREATE TYPE forcelogout_host_row AS (
    Date text, Id text, GroupName text, UpdateTime text, Schedule text, ScheduleDate text,
    Time text, Timezone text, Days integer, Immediate boolean, Kick boolean, Event text,
    Message text, Actor text, Lockout integer, DueAt text, Hosts text, Version bigint,
    VersionKey uuid, Labels text[], LastReplayId bigint
);

-- A host's one call per poll interval. History diverged (the version the host stands on is
-- not on this server: a failover lost it) is SQLSTATE FLRSY, and the host resynchronises.
-- Bookkeeping is written only when it changed, the heartbeat at most every 5 minutes: an
-- idle host reads three primary keys and writes nothing.
CREATE FUNCTION forcelogout_host_poll(p_host text, p_secret text, p_after_version bigint,
    p_after_key uuid, p_applied_version bigint, p_product text, p_limit integer)
    RETURNS SETOF forcelogout_host_row
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    me FleetHosts := forcelogout_host_auth(p_host, p_secret);
BEGIN
    IF p_after_version > 0 AND NOT EXISTS (SELECT 1 FROM LogoutSchedules s
            WHERE s.Version = p_after_version AND s.VersionKey = p_after_key) THEN
        RAISE EXCEPTION 'host %: version % is not in this server''s history', p_host,
            p_after_version USING ERRCODE = 'FLRSY';
    END IF;
    IF me.ScheduleVersion IS DISTINCT FROM p_applied_version
            OR me.ProductVersion IS DISTINCT FROM p_product
            OR me.LastContact IS NULL OR me.LastContact < now() - interval '5 minutes' THEN
        -- Losing this row in a server crash only shows an older position.
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE FleetHosts h SET
            AppliedAt = CASE WHEN h.ScheduleVersion = p_applied_version THEN h.AppliedAt
                        ELSE now() END,
            ScheduleVersion = p_applied_version, ProductVersion = p_product, LastContact = now()
        WHERE h.Host = p_host;
    END IF;
    RETURN NEXT ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, me.Labels, me.LastReplayId)::forcelogout_host_row;
    RETURN QUERY SELECT s.Date, s.Id, s.GroupName, s.UpdateTime, s.Schedule, s.ScheduleDate,
        s.Time, s.Timezone, s.Days, s.Immediate, s.Kick, s.Event, s.Message, s.Actor, s.Lockout,
        s.DueAt, s.Hosts, s.Version, s.VersionKey, NULL::text[], NULL::bigint
        FROM LogoutSchedules s WHERE s.Version > p_after_version ORDER BY s.Version
        LIMIT p_limit;
END $$;

-- For a resynchronisation: the current set (latest version per Id, not deleted) and, in the
-- header, the newest Version and its key, all of one snapshot (STABLE).
CREATE FUNCTION forcelogout_host_current(p_host text, p_secret text)
    RETURNS SETOF forcelogout_host_row
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    me FleetHosts := forcelogout_host_auth(p_host, p_secret);
    newest LogoutSchedules;
BEGIN
    SELECT * INTO newest FROM LogoutSchedules s ORDER BY s.Version DESC LIMIT 1;
    RETURN NEXT ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, newest.Version, newest.VersionKey, me.Labels,
        me.LastReplayId)::forcelogout_host_row;
    RETURN QUERY SELECT l.Date, l.Id, l.GroupName, l.UpdateTime, l.Schedule, l.ScheduleDate,
        l.Time, l.Timezone, l.Days, l.Immediate, l.Kick, l.Event, l.Message, l.Actor, l.Lockout,
        l.DueAt, l.Hosts, l.Version, l.VersionKey, NULL::text[], NULL::bigint
        FROM (SELECT DISTINCT ON (s.Id) * FROM LogoutSchedules s ORDER BY s.Id, s.Version DESC) l
        WHERE l.Event <> 'deleted' ORDER BY l.Version;
END $$;

-- A batch of the host's events (a JSON array of its local rows), stored with Host = the
-- authenticated host; an event already there (same EventIdentifier) is skipped, so a batch
-- sent twice is stored once. Returns the host's new upload position, the batch's highest
-- ReplayId. One transaction, durable whatever the server's synchronous_commit default.
CREATE FUNCTION forcelogout_host_upload(p_host text, p_secret text, p_events jsonb)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    me FleetHosts := forcelogout_host_auth(p_host, p_secret);
    newest bigint;
BEGIN
    INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId,
        EventIdentifier, RelatedEventIdentifier, SessionKey, LoginKey, UserId, ScheduleId,
        Reason, Service, Tty, RemoteHost, Host)
    SELECT e."Date", e."Timestamp", e."GroupName", e."Event", e."Immediate", e."Kick",
        e."ReplayId", e."EventIdentifier", e."RelatedEventIdentifier", e."SessionKey",
        e."LoginKey", e."UserId", e."ScheduleId", e."Reason", e."Service", e."Tty",
        e."RemoteHost", me.Host
    FROM jsonb_to_recordset(p_events) AS e("Date" text, "Timestamp" text, "GroupName" text,
        "Event" text, "Immediate" boolean, "Kick" boolean, "ReplayId" bigint,
        "EventIdentifier" text, "RelatedEventIdentifier" text, "SessionKey" text,
        "LoginKey" text, "UserId" bigint, "ScheduleId" text, "Reason" text, "Service" text,
        "Tty" text, "RemoteHost" text)
    ORDER BY e."ReplayId"
    ON CONFLICT (EventIdentifier) DO NOTHING;
    SELECT max((x ->> 'ReplayId')::bigint) INTO newest FROM jsonb_array_elements(p_events) x;
    newest := coalesce(newest, me.LastReplayId);
    UPDATE FleetHosts h SET LastReplayId = newest, LastContact = now() WHERE h.Host = me.Host;
    RETURN newest;
END $$;

-- The idle poll: the newest version and its key, with the host's labels and upload position,
-- in one statement (two primary-key probes) and no write. A host whose position is that pair,
-- with the same labels, has nothing to copy and is on this server's history; it makes the full
-- poll only when something moved, and every few minutes for the heartbeat. At one poll a
-- second per host, this is what the central server pays for an idle fleet. The hash is
-- computed before the lookup, as in forcelogout_host_auth.
CREATE FUNCTION forcelogout_host_peek(p_host text, p_secret text)
    RETURNS TABLE (Version bigint, VersionKey uuid, Labels text[], LastReplayId bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    given bytea := sha256(convert_to(coalesce(p_secret, ''), 'UTF8'));
BEGIN
    RETURN QUERY SELECT n.Version, n.VersionKey, h.Labels, h.LastReplayId
        FROM FleetHosts h
        LEFT JOIN LATERAL (SELECT s.Version, s.VersionKey FROM LogoutSchedules s
            ORDER BY s.Version DESC LIMIT 1) n ON true
        WHERE h.Host = p_host AND h.SecretHash = given;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'host %: not enrolled or wrong secret', p_host USING ERRCODE = '28000';
    END IF;
END $$;

REVOKE ALL ON FUNCTION forcelogout_host_peek(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION forcelogout_host_auth(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION forcelogout_host_poll(text, text, bigint, uuid, bigint, text, integer)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION forcelogout_host_current(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION forcelogout_host_upload(text, text, jsonb) FROM PUBLIC;
"#;

/// The fleet's clock, read by every idle host every second (SPEC §9, "Delivery"): one row whose
/// `Key` is drawn again by every change a host must act on (a new schedule version; a host's
/// labels or secret changed; a host retired), in the transaction that makes the change. A host
/// whose last full poll saw this key has nothing to do; any other key sends it to the full
/// poll. It is a plain read of a one-row table, not a function: at 10,000 hosts a second, a
/// function call's planning and PL/pgSQL frame cost the server twice what the read does. The
/// row says only that something changed and when, so the host role may read it without proving
/// which host it is. A failover that lost a change leaves a key no host has seen (keys are
/// random and never drawn twice), so every host makes the full poll and finds the divergence.
/// Uploads carry the host's position (`forcelogout_host_upload` with `p_after`): events a
/// failover lost are noticed at the host's next upload, or at the full poll every few minutes.
const CENTRAL_V3: &str = r#"
CREATE TABLE FleetClock (
    Singleton boolean     PRIMARY KEY DEFAULT true CHECK (Singleton),
    Version   bigint      NOT NULL,
    Key       uuid        NOT NULL DEFAULT gen_random_uuid(),
    ChangedAt timestamptz NOT NULL DEFAULT now()
);
INSERT INTO FleetClock (Version) SELECT coalesce(max(Version), 0) FROM LogoutSchedules;

CREATE FUNCTION forcelogout_clock_tick() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE FleetClock SET Version = (SELECT coalesce(max(s.Version), 0) FROM LogoutSchedules s),
        Key = gen_random_uuid(), ChangedAt = now();
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION forcelogout_clock_tick() FROM PUBLIC;
CREATE TRIGGER LogoutSchedules_clock AFTER INSERT ON LogoutSchedules
    FOR EACH STATEMENT EXECUTE FUNCTION forcelogout_clock_tick();
-- Not on the hosts' own bookkeeping (LastContact, ScheduleVersion, LastReplayId): only what
-- changes which schedules a host takes or whether it may poll at all.
CREATE TRIGGER FleetHosts_clock AFTER UPDATE ON FleetHosts FOR EACH ROW
    WHEN (OLD.Labels IS DISTINCT FROM NEW.Labels OR OLD.SecretHash IS DISTINCT FROM NEW.SecretHash)
    EXECUTE FUNCTION forcelogout_clock_tick();
CREATE TRIGGER FleetHosts_retired_clock AFTER DELETE ON FleetHosts
    FOR EACH ROW EXECUTE FUNCTION forcelogout_clock_tick();

-- The upload, told where the host believes the server's copy of its events ends: if the
-- server has less (a failover lost uploads), nothing is stored and its position comes back,
-- and the host sends again from there. The three-argument upload stays for hosts not yet
-- upgraded.
CREATE FUNCTION forcelogout_host_upload(p_host text, p_secret text, p_after bigint,
    p_events jsonb) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    me FleetHosts := forcelogout_host_auth(p_host, p_secret);
BEGIN
    IF me.LastReplayId < p_after THEN
        RETURN me.LastReplayId;
    END IF;
    RETURN forcelogout_host_upload(p_host, p_secret, p_events);
END $$;
REVOKE ALL ON FUNCTION forcelogout_host_upload(text, text, bigint, jsonb) FROM PUBLIC;
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
REVOKE ALL ON LogoutSchedules, LogoutEvents, FleetHosts, FleetSchema, FleetClock FROM PUBLIC;
-- Hosts use the functions only: no other table, no sequence, not even the schema's version;
-- of the clock they may only read its one row (revoked by name, so that the grant's entry
-- stays where it is and a second init changes nothing).
REVOKE ALL ON LogoutSchedules, LogoutEvents, FleetHosts, FleetSchema FROM forcelogout_host;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON FleetClock
    FROM forcelogout_host, forcelogout_admin;
GRANT SELECT ON FleetClock TO forcelogout_host, forcelogout_admin;
GRANT SELECT ON FleetSchema TO forcelogout_admin;
GRANT SELECT, INSERT ON LogoutSchedules TO forcelogout_admin;
GRANT EXECUTE ON FUNCTION forcelogout_lock_schedules() TO forcelogout_admin;
GRANT SELECT ON LogoutEvents TO forcelogout_admin;
GRANT SELECT, DELETE ON FleetHosts TO forcelogout_admin;
GRANT INSERT (Host, Labels, SecretHash, EnrolledAt),
    UPDATE (Labels, SecretHash, EnrolledAt) ON FleetHosts TO forcelogout_admin;
GRANT EXECUTE ON FUNCTION
    forcelogout_host_peek(text, text),
    forcelogout_host_poll(text, text, bigint, uuid, bigint, text, integer),
    forcelogout_host_current(text, text),
    forcelogout_host_upload(text, text, jsonb),
    forcelogout_host_upload(text, text, bigint, jsonb)
    TO forcelogout_host;
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
