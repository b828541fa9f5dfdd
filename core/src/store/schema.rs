//! The schema, as forward migrations. `PRAGMA user_version` is the number of migrations
//! applied; a store newer than this build is refused rather than misread.

/// Each entry takes the schema from version N to N+1. Never edit a released entry: append.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

const V1: &str = r#"
CREATE TABLE LogoutSchedules (
    Date         TEXT    NOT NULL,
    Id           TEXT    NOT NULL,
    GroupName    TEXT    NOT NULL,
    UpdateTime   TEXT    NOT NULL,
    Schedule     TEXT    NOT NULL CHECK (Schedule IN ('Once', 'Daily', 'Weekly')),
    ScheduleDate TEXT    CHECK ((Schedule = 'Once') = (ScheduleDate IS NOT NULL)),
    Time         TEXT    NOT NULL CHECK (Time GLOB '[0-2][0-9]:[0-5][0-9]'),
    Timezone     TEXT    NOT NULL,
    Days         INTEGER CHECK ((Schedule = 'Weekly') = (Days IS NOT NULL) AND (Days IS NULL OR Days BETWEEN 1 AND 127)),
    Immediate    INTEGER NOT NULL CHECK (Immediate IN (0, 1)),
    Kick         INTEGER NOT NULL CHECK (Kick IN (0, 1)),
    Event        TEXT    NOT NULL CHECK (Event IN ('created', 'updated', 'deleted')),
    Message      TEXT    NOT NULL DEFAULT '',
    Actor        TEXT    NOT NULL,
    Lockout      INTEGER NOT NULL DEFAULT 0 CHECK (Lockout BETWEEN 0 AND 1440)
);
CREATE INDEX LogoutSchedules_Id ON LogoutSchedules (Id);
CREATE INDEX LogoutSchedules_Date ON LogoutSchedules (Date);
CREATE INDEX LogoutSchedules_GroupName ON LogoutSchedules (GroupName);
CREATE TRIGGER LogoutSchedules_no_update BEFORE UPDATE ON LogoutSchedules
BEGIN SELECT RAISE(ABORT, 'LogoutSchedules is append-only'); END;
CREATE TRIGGER LogoutSchedules_no_delete BEFORE DELETE ON LogoutSchedules
BEGIN SELECT RAISE(ABORT, 'LogoutSchedules is append-only'); END;

-- The current set: per Id, the latest version, unless that version deleted it.
CREATE VIEW LogoutSchedulesCurrent AS
SELECT * FROM LogoutSchedules
WHERE rowid IN (SELECT max(rowid) FROM LogoutSchedules GROUP BY Id) AND Event <> 'deleted';

CREATE TABLE LogoutEvents (
    Date                   TEXT    NOT NULL,
    Timestamp              TEXT    NOT NULL,
    GroupName              TEXT    NOT NULL,
    Event                  TEXT    NOT NULL CHECK (Event IN ('online', 'offline', 'removed', 'ignored', 'warned')),
    Immediate              INTEGER NOT NULL DEFAULT 0 CHECK (Immediate IN (0, 1)),
    Kick                   INTEGER NOT NULL DEFAULT 0 CHECK (Kick IN (0, 1)),
    ReplayId               INTEGER PRIMARY KEY AUTOINCREMENT,
    EventIdentifier        TEXT    NOT NULL UNIQUE,
    RelatedEventIdentifier TEXT,
    SessionKey             TEXT,
    LoginKey               TEXT,
    UserId                 INTEGER,
    ScheduleId             TEXT,
    Reason                 TEXT    CHECK (Reason IS NULL OR Reason IN ('logout', 'kick', 'warning-expired', 'idle', 'stale')),
    Service                TEXT,
    Tty                    TEXT,
    RemoteHost             TEXT,
    Host                   TEXT    NOT NULL
);
CREATE INDEX LogoutEvents_Date ON LogoutEvents (Date);
CREATE INDEX LogoutEvents_GroupName ON LogoutEvents (GroupName);
CREATE INDEX LogoutEvents_Event ON LogoutEvents (Event);
CREATE TRIGGER LogoutEvents_no_update BEFORE UPDATE ON LogoutEvents
BEGIN SELECT RAISE(ABORT, 'LogoutEvents is append-only'); END;

CREATE TABLE LogoutSessions (
    SessionKey             TEXT    PRIMARY KEY,
    GroupName              TEXT    NOT NULL,
    UserId                 INTEGER NOT NULL,
    Service                TEXT,
    Tty                    TEXT,
    RemoteHost             TEXT,
    Pid                    INTEGER NOT NULL,
    ProcessSession         INTEGER,
    Cgroup                 TEXT,
    LogindSession          TEXT,
    LoginKey               TEXT,
    BootId                 TEXT    NOT NULL,
    OpenedAt               TEXT    NOT NULL,
    Date                   TEXT    NOT NULL,
    PendingScheduleId      TEXT,
    PendingDueAt           TEXT,
    PendingEventIdentifier TEXT,
    PidStartTime           INTEGER
);
CREATE INDEX LogoutSessions_GroupName ON LogoutSessions (GroupName);
CREATE INDEX LogoutSessions_Pid ON LogoutSessions (Pid, BootId);

-- Internal: per user, the last forced logout whose message was shown at a login.
CREATE TABLE NoticeCursors (
    GroupName TEXT    PRIMARY KEY,
    ReplayId  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Enforcement: the exact instant of immediate logouts, and the daemon's bookkeeping, so that
/// a daemon killed mid-countdown resumes it without recording anything twice.
const V2: &str = r#"
-- Immediate logouts (`forcelogoutctl logout`): the instant the logout takes effect.
ALTER TABLE LogoutSchedules ADD COLUMN DueAt TEXT;

-- Internal: one row per logout instance the daemon has started, finished or skipped.
CREATE TABLE Countdowns (
    ScheduleId TEXT NOT NULL,
    DueAt      TEXT NOT NULL,
    WarnFrom   TEXT NOT NULL,
    Kick       INTEGER NOT NULL CHECK (Kick IN (0, 1)),
    State      TEXT NOT NULL CHECK (State IN ('running', 'done', 'skipped')),
    PRIMARY KEY (ScheduleId, DueAt)
) WITHOUT ROWID;

-- Internal: the users a countdown warned, and whether they chose to ignore it.
CREATE TABLE CountdownUsers (
    ScheduleId             TEXT NOT NULL,
    DueAt                  TEXT NOT NULL,
    GroupName              TEXT NOT NULL,
    WarnedEventIdentifier  TEXT NOT NULL,
    IgnoredEventIdentifier TEXT,
    PRIMARY KEY (ScheduleId, DueAt, GroupName)
) WITHOUT ROWID;
"#;

/// Subscribers (hooks, syslog): the last ReplayId each has been given.
const V3: &str = r#"
CREATE TABLE SubscriberCursors (
    Name      TEXT    PRIMARY KEY,
    ReplayId  INTEGER NOT NULL,
    Failures  INTEGER NOT NULL DEFAULT 0,
    LastError TEXT
) WITHOUT ROWID;
"#;

/// The fleet (SPEC §9): versions copied from the central database are marked with the central
/// `Version` they came from (local `apply`, `schedule update|delete` leave them alone), and the
/// fleet thread keeps its positions and link state here. The mark is a table of its own, not a
/// column: LogoutSchedules keeps the SPEC's columns (and hand-written INSERTs keep working).
const V4: &str = r#"
-- Internal: the LogoutSchedules rows copied from the fleet, with their central Version.
CREATE TABLE FleetMarks (
    ScheduleRowid INTEGER PRIMARY KEY,
    FleetVersion  INTEGER NOT NULL
);

-- Internal: one row, the fleet thread's view of the central database.
CREATE TABLE FleetState (
    Singleton        INTEGER PRIMARY KEY CHECK (Singleton = 1),
    ScheduleVersion  INTEGER NOT NULL DEFAULT 0,
    UploadedReplayId INTEGER NOT NULL DEFAULT 0,
    Connected        INTEGER NOT NULL DEFAULT 0 CHECK (Connected IN (0, 1)),
    Since            TEXT,
    LastError        TEXT
);
"#;

/// The store says what it is: SQLite's `application_id` in the file's header is "FLOG"
/// (`super::APPLICATION_ID`), so that a path given by mistake is told from a store without
/// guessing from its tables (stores from before this are known by their tables).
const V5: &str = r#"
PRAGMA application_id = 1179406151;
"#;

/// The fleet's position is a central version *and its key*: after a failover that lost
/// transactions the server may number a different version the same, and the key tells them
/// apart. The host's labels are set centrally; the link keeps the last ones it was told, for
/// `fleet status` and to notice a change.
const V6: &str = r#"
ALTER TABLE FleetState ADD COLUMN ScheduleVersionKey TEXT;
-- A JSON array of strings; NULL: not told yet.
ALTER TABLE FleetState ADD COLUMN Labels TEXT;
"#;
