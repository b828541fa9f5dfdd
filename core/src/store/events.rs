//! `LogoutEvents`: the append-only event log.

use chrono::{DateTime, Utc};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::classify;

use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::ids;
use crate::zone::Zone;

/// The `Event` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Online,
    Offline,
    Removed,
    Ignored,
    Warned,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Online => "online",
            EventKind::Offline => "offline",
            EventKind::Removed => "removed",
            EventKind::Ignored => "ignored",
            EventKind::Warned => "warned",
        }
    }
}

/// The `Reason` column of `removed` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    Logout,
    Kick,
    WarningExpired,
    Idle,
    Stale,
}

impl RemovalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Logout => "logout",
            RemovalReason::Kick => "kick",
            RemovalReason::WarningExpired => "warning-expired",
            RemovalReason::Idle => "idle",
            RemovalReason::Stale => "stale",
        }
    }
}

/// One event to append. ReplayId is assigned by SQLite; EventIdentifier here.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub user: &'a str,
    pub uid: Option<u32>,
    pub immediate: bool,
    pub kick: bool,
    pub related: Option<&'a str>,
    pub session_key: Option<&'a str>,
    pub login_key: Option<&'a str>,
    pub schedule_id: Option<&'a str>,
    pub reason: Option<RemovalReason>,
    pub service: Option<&'a str>,
    pub tty: Option<&'a str>,
    pub remote_host: Option<&'a str>,
    pub host: &'a str,
}

impl<'a> NewEvent<'a> {
    /// An event with only its kind, user and host set.
    pub fn new(kind: EventKind, user: &'a str, host: &'a str) -> NewEvent<'a> {
        NewEvent {
            kind,
            user,
            uid: None,
            immediate: false,
            kick: false,
            related: None,
            session_key: None,
            login_key: None,
            schedule_id: None,
            reason: None,
            service: None,
            tty: None,
            remote_host: None,
            host,
        }
    }
}

/// Appends `event` inside the caller's transaction; returns its EventIdentifier.
pub(super) fn append(
    conn: &Connection,
    path: &Path,
    event: &NewEvent<'_>,
    now: DateTime<Utc>,
    host_zone: &Zone,
) -> Result<String, Error> {
    let identifier = ids::new_id()?;
    conn.prepare_cached(
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Immediate, Kick, \
             EventIdentifier, RelatedEventIdentifier, SessionKey, LoginKey, UserId, ScheduleId, \
             Reason, Service, Tty, RemoteHost, Host) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            partition_date(now, host_zone),
            format_timestamp(now),
            event.user,
            event.kind.as_str(),
            event.immediate,
            event.kick,
            identifier,
            event.related,
            event.session_key,
            event.login_key,
            event.uid,
            event.schedule_id,
            event.reason.map(RemovalReason::as_str),
            event.service,
            event.tty,
            event.remote_host,
            event.host,
        ])
    })
    .map_err(|e| classify(path, "appending an event", e))?;
    Ok(identifier)
}

/// One row of `LogoutEvents`, every column, serialised under the column names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventRow {
    pub date: String,
    pub timestamp: String,
    pub group_name: String,
    pub event: String,
    pub immediate: bool,
    pub kick: bool,
    pub replay_id: i64,
    pub event_identifier: String,
    pub related_event_identifier: Option<String>,
    pub session_key: Option<String>,
    pub login_key: Option<String>,
    pub user_id: Option<i64>,
    pub schedule_id: Option<String>,
    pub reason: Option<String>,
    pub service: Option<String>,
    pub tty: Option<String>,
    pub remote_host: Option<String>,
    pub host: String,
}

/// Which events to read: every given condition must hold. Each uses an index.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// `Date` on or after this `YYYY-MM-DD`.
    pub since: Option<String>,
    pub group: Option<String>,
    pub event: Option<String>,
    /// Only events after this ReplayId (a subscriber's resume point).
    pub after_replay_id: Option<i64>,
}

impl super::Store {
    /// Events matching `filter`, in ReplayId order, at most `limit`.
    pub fn events(&self, filter: &EventFilter, limit: usize) -> Result<Vec<EventRow>, Error> {
        let fail = |e| classify(&self.path, "reading events", e);
        // Only the conditions given, so that SQLite uses the index of each (an `x IS NULL OR`
        // form would hide them); every value is a bound parameter.
        let mut conditions = vec!["ReplayId > ?"];
        let mut values: Vec<rusqlite::types::Value> =
            vec![filter.after_replay_id.unwrap_or(0).into()];
        for (condition, value) in [
            ("Date >= ?", &filter.since),
            ("GroupName = ?", &filter.group),
            ("Event = ?", &filter.event),
        ] {
            if let Some(value) = value {
                conditions.push(condition);
                values.push(value.clone().into());
            }
        }
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let sql = format!(
            "SELECT Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId, EventIdentifier, \
             RelatedEventIdentifier, SessionKey, LoginKey, UserId, ScheduleId, Reason, Service, Tty, \
             RemoteHost, Host FROM LogoutEvents WHERE {} ORDER BY ReplayId LIMIT ?",
            conditions.join(" AND ")
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(fail)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                Ok(EventRow {
                    date: r.get(0)?,
                    timestamp: r.get(1)?,
                    group_name: r.get(2)?,
                    event: r.get(3)?,
                    immediate: r.get(4)?,
                    kick: r.get(5)?,
                    replay_id: r.get(6)?,
                    event_identifier: r.get(7)?,
                    related_event_identifier: r.get(8)?,
                    session_key: r.get(9)?,
                    login_key: r.get(10)?,
                    user_id: r.get(11)?,
                    schedule_id: r.get(12)?,
                    reason: r.get(13)?,
                    service: r.get(14)?,
                    tty: r.get(15)?,
                    remote_host: r.get(16)?,
                    host: r.get(17)?,
                })
            })
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(rows)
    }

    /// How many events `prune_events_before(date, _, keep_unuploaded)` would delete
    /// (`prune --dry-run`).
    pub fn count_events_before(&self, date: &str, keep_unuploaded: bool) -> Result<usize, Error> {
        self.conn
            .prepare_cached(
                "SELECT count(*) FROM LogoutEvents WHERE Date < ?1 \
                 AND (?2 = 0 OR ReplayId <= \
                      (SELECT coalesce(max(UploadedReplayId), 0) FROM FleetState))",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![date, keep_unuploaded], |row| row.get::<_, i64>(0))
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(|e| classify(&self.path, "counting events", e))
    }

    /// Deletes events whose `Date` is before `date`, at most `batch` rows per transaction, so
    /// that the write lock is never held long enough to delay a login. Returns the total.
    ///
    /// `keep_unuploaded`: this host follows a fleet, so events not yet uploaded to it are kept
    /// whatever their age (SPEC §9: a host keeps every event until it can upload it).
    pub fn prune_events_before(
        &mut self,
        date: &str,
        batch: usize,
        keep_unuploaded: bool,
    ) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let (tx, path, _) = self.begin_write("starting a prune")?;
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM LogoutEvents WHERE ReplayId IN \
                     (SELECT ReplayId FROM LogoutEvents WHERE Date < ?1 \
                      AND (?3 = 0 OR ReplayId <= \
                           (SELECT coalesce(max(UploadedReplayId), 0) FROM FleetState)) \
                      LIMIT ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(rusqlite::params![
                        date,
                        i64::try_from(batch).unwrap_or(5000),
                        keep_unuploaded
                    ])
                })
                .map_err(|e| classify(&path, "pruning events", e))?;
            tx.commit()
                .map_err(|e| classify(&path, "committing a prune", e))?;
            total += deleted;
            if deleted < batch {
                return Ok(total);
            }
        }
    }
}

impl super::Store {
    /// The last ReplayId delivered to subscriber `name`; a subscriber seen for the first time
    /// starts at the newest event (it is given what happens from now on).
    pub fn subscriber_cursor(&mut self, name: &str) -> Result<i64, Error> {
        self.cursor_at_newest(name, "ON CONFLICT (Name) DO NOTHING")
    }

    /// Subscriber `name`'s cursor, if it has one: a hook's is forgotten when the hook is
    /// removed, and a hook without one is not delivered to.
    pub fn existing_subscriber_cursor(&self, name: &str) -> Result<Option<i64>, Error> {
        self.conn
            .prepare_cached("SELECT ReplayId FROM SubscriberCursors WHERE Name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
            .map_err(|e| classify(&self.path, "reading a subscriber cursor", e))
    }

    /// Starts subscriber `name` afresh at the newest event, whatever cursor it had (a hook that
    /// appeared, or came back, in the hooks directory); its new cursor.
    pub fn restart_subscriber(&mut self, name: &str) -> Result<i64, Error> {
        self.cursor_at_newest(
            name,
            "ON CONFLICT (Name) DO UPDATE SET ReplayId = excluded.ReplayId, Failures = 0, LastError = NULL",
        )
    }

    /// Gives subscriber `name` a cursor at the newest event (what `on_conflict` says of one it
    /// has already) and returns its cursor, in one transaction.
    fn cursor_at_newest(&mut self, name: &str, on_conflict: &'static str) -> Result<i64, Error> {
        let (tx, path, _) = self.begin_write("starting a subscriber cursor write")?;
        let insert = format!(
            "INSERT INTO SubscriberCursors (Name, ReplayId) \
             SELECT ?1, (SELECT coalesce(max(ReplayId), 0) FROM LogoutEvents) WHERE true {on_conflict}"
        );
        tx.prepare_cached(&insert)
            .and_then(|mut stmt| stmt.execute(rusqlite::params![name]))
            .map_err(|e| classify(&path, "writing a subscriber cursor", e))?;
        let cursor = tx
            .query_row(
                "SELECT ReplayId FROM SubscriberCursors WHERE Name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(|e| classify(&path, "reading a subscriber cursor", e))?;
        tx.commit()
            .map_err(|e| classify(&path, "committing a subscriber cursor", e))?;
        Ok(cursor)
    }

    /// Forgets subscriber `name`'s cursor (its hook was removed); whether it had one.
    pub fn forget_subscriber(&mut self, name: &str) -> Result<bool, Error> {
        self.conn
            .prepare_cached("DELETE FROM SubscriberCursors WHERE Name = ?1")
            .and_then(|mut stmt| stmt.execute([name]))
            .map(|deleted| deleted > 0)
            .map_err(|e| classify(&self.path, "forgetting a subscriber cursor", e))
    }

    /// The names of the subscribers that have a cursor.
    pub fn subscriber_names(&self) -> Result<Vec<String>, Error> {
        self.conn
            .prepare_cached("SELECT Name FROM SubscriberCursors ORDER BY Name")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(|e| classify(&self.path, "listing subscriber cursors", e))
    }

    /// Records that subscriber `name` has been given every event up to `to`, if its cursor
    /// still stands at `from`. False when it was forgotten or restarted meanwhile (its hook
    /// removed, or put back): the cursor then stays as that left it.
    pub fn advance_subscriber(&mut self, name: &str, from: i64, to: i64) -> Result<bool, Error> {
        self.conn
            .prepare_cached(
                "UPDATE SubscriberCursors SET ReplayId = ?3, Failures = 0, LastError = NULL \
                 WHERE Name = ?1 AND ReplayId = ?2",
            )
            .and_then(|mut stmt| stmt.execute(rusqlite::params![name, from, to]))
            .map(|updated| updated > 0)
            .map_err(|e| classify(&self.path, "advancing a subscriber cursor", e))
    }

    /// Records a failed delivery (kept for `sqlite3` and the log; the cursor stays).
    pub fn subscriber_failed(&mut self, name: &str, error: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached("UPDATE SubscriberCursors SET Failures = Failures + 1, LastError = ?2 WHERE Name = ?1")
            .and_then(|mut stmt| stmt.execute(rusqlite::params![name, error]))
            .map_err(|e| classify(&self.path, "recording a subscriber failure", e))?;
        Ok(())
    }
}
