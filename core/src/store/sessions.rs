//! `LogoutSessions`: the live session registry, and the events its changes write. Each PAM
//! call is one write transaction: the floor that durability allows.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::events::{append, EventKind, NewEvent, RemovalReason};
use super::{on_error, Store};
use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::sessions::{LoginFacts, ProcessFacts};

/// What opening a session did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opened {
    pub session_key: String,
    /// `online` was written: this is the user's only live session.
    pub online: bool,
    /// The message of a forced logout of this user not yet shown at a login.
    pub last_logout_message: Option<String>,
}

/// What closing a session did. Closing an unknown or already removed session does nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Closed {
    pub session_key: Option<String>,
    pub removed: bool,
    pub offline: bool,
}

/// One session write of the PAM module, for `Store::record_session_writes`.
#[derive(Clone, Copy, Debug)]
pub enum SessionWrite<'a> {
    Open {
        session_key: &'a str,
        login: &'a LoginFacts,
        process: &'a ProcessFacts,
        /// The login shows notices: the last forced logout's message is taken (see
        /// `Store::open_session`); otherwise it stays pending.
        shows_notices: bool,
        now: DateTime<Utc>,
    },
    Close {
        session_key: Option<&'a str>,
        process: &'a ProcessFacts,
        now: DateTime<Utc>,
    },
}

/// What one of `Store::record_session_writes`' writes did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionWritten {
    Opened(Opened),
    Closed(Closed),
    /// Not written: its caller had stopped waiting by the time the write lock was held.
    TooLate,
}

impl Store {
    /// Registers the session `session_key` (chosen by the caller, so that a retry through
    /// another path is recognised) and writes `online` if it is the user's only live one.
    /// A key already registered is left as it is. The login shows notices: the message of the
    /// last forced logout not yet shown is taken, to be shown now.
    pub fn open_session(
        &mut self,
        session_key: &str,
        login: &LoginFacts,
        process: &ProcessFacts,
        now: DateTime<Utc>,
    ) -> Result<Opened, Error> {
        self.open_session_showing(session_key, login, process, true, now)
    }

    /// `open_session`; a login that shows no notices (PAM_SILENT, `quiet`) leaves the last
    /// forced logout's message pending for the next login that does.
    pub fn open_session_showing(
        &mut self,
        session_key: &str,
        login: &LoginFacts,
        process: &ProcessFacts,
        shows_notices: bool,
        now: DateTime<Utc>,
    ) -> Result<Opened, Error> {
        let (tx, path, zone) = self.begin_write("starting the session write")?;
        let facts = (login, process, shows_notices);
        let opened = open_in_tx(&tx, &path, &zone, session_key, facts, now)?;
        tx.commit()
            .map_err(on_error(&path, "committing the session"))?;
        Ok(opened)
    }

    /// Removes a session: the one named by `session_key`, else the latest one opened by this
    /// very process (same pid, start time and boot). Writes `removed` with `reason`, and
    /// `offline` when it was the user's last live session.
    pub fn close_session(
        &mut self,
        session_key: Option<&str>,
        process: &ProcessFacts,
        reason: RemovalReason,
        now: DateTime<Utc>,
    ) -> Result<Closed, Error> {
        let (tx, path, zone) = self.begin_write("starting the session write")?;
        let closed = close_in_tx(&tx, &path, &zone, session_key, process, reason, now)?;
        tx.commit()
            .map_err(on_error(&path, "committing the session removal"))?;
        Ok(closed)
    }

    /// Several PAM writes in one transaction and one commit (the daemon's group commit: a
    /// burst of logins costs a few fsyncs, not one each). Each runs in a savepoint, so one
    /// that fails is undone alone; `in_time(i)` is asked for write `i` once the write lock
    /// is held, and a write it refuses is not made. The outer error is a failed transaction:
    /// then nothing was written.
    pub fn record_session_writes(
        &mut self,
        writes: &[SessionWrite<'_>],
        in_time: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Result<SessionWritten, Error>>, Error> {
        let (mut tx, path, zone) = self.begin_write("starting the session writes")?;
        if let [write] = writes {
            // One write alone (the usual case while logins come one at a time): the
            // transaction is its savepoint; a failed write is rolled back with it.
            let outcome = if in_time(0) {
                session_write_in_tx(&tx, &path, &zone, write)
            } else {
                Ok(SessionWritten::TooLate)
            };
            if outcome.is_ok() {
                tx.commit()
                    .map_err(on_error(&path, "committing the session writes"))?;
            }
            return Ok(vec![outcome]);
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            if !in_time(index) {
                outcomes.push(Ok(SessionWritten::TooLate));
                continue;
            }
            let savepoint = tx
                .savepoint()
                .map_err(on_error(&path, "starting a savepoint"))?;
            let outcome = session_write_in_tx(&savepoint, &path, &zone, write);
            if outcome.is_ok() {
                savepoint
                    .commit()
                    .map_err(on_error(&path, "releasing a savepoint"))?;
            } else {
                savepoint
                    .finish()
                    .map_err(on_error(&path, "rolling back a savepoint"))?;
            }
            outcomes.push(outcome);
        }
        tx.commit()
            .map_err(on_error(&path, "committing the session writes"))?;
        Ok(outcomes)
    }
}

/// One PAM write inside the caller's transaction or savepoint.
fn session_write_in_tx(
    tx: &rusqlite::Connection,
    path: &std::path::Path,
    zone: &crate::zone::Zone,
    write: &SessionWrite<'_>,
) -> Result<SessionWritten, Error> {
    match *write {
        SessionWrite::Open {
            session_key,
            login,
            process,
            shows_notices,
            now,
        } => {
            let facts = (login, process, shows_notices);
            open_in_tx(tx, path, zone, session_key, facts, now).map(SessionWritten::Opened)
        }
        SessionWrite::Close {
            session_key,
            process,
            now,
        } => close_in_tx(
            tx,
            path,
            zone,
            session_key,
            process,
            RemovalReason::Logout,
            now,
        )
        .map(SessionWritten::Closed),
    }
}

/// The login, its process, and whether it shows notices.
type OpenFacts<'a> = (&'a LoginFacts, &'a ProcessFacts, bool);

fn open_in_tx(
    tx: &rusqlite::Connection,
    path: &std::path::Path,
    zone: &crate::zone::Zone,
    session_key: &str,
    (login, process, shows_notices): OpenFacts<'_>,
    now: DateTime<Utc>,
) -> Result<Opened, Error> {
    let fail = |context| on_error(path, context);
    let inserted = tx
        .prepare_cached(
            "INSERT INTO LogoutSessions (SessionKey, GroupName, UserId, Service, Tty, RemoteHost, Pid, \
             ProcessSession, Cgroup, LogindSession, LoginKey, BootId, OpenedAt, Date, PidStartTime) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (SessionKey) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                session_key,
                login.user,
                login.uid,
                login.service,
                login.tty,
                login.remote_host,
                process.pid,
                process.process_session,
                process.cgroup,
                login.logind_session,
                process.login_key,
                process.boot_id,
                format_timestamp(now),
                partition_date(now, zone),
                process.pid_start_time.map(|t| t as i64),
            ])
        })
        .map_err(fail("registering the session"))?;
    if inserted == 0 {
        return Ok(Opened {
            session_key: session_key.to_string(),
            online: false,
            last_logout_message: None,
        });
    }
    let live: i64 = tx
        .prepare_cached("SELECT count(*) FROM LogoutSessions WHERE GroupName = ?1")
        .and_then(|mut stmt| stmt.query_row(params![login.user], |row| row.get(0)))
        .map_err(fail("counting live sessions"))?;
    let online = live == 1;
    if online {
        let event = NewEvent {
            uid: Some(login.uid),
            session_key: Some(session_key),
            login_key: process.login_key.as_deref(),
            service: login.service.as_deref(),
            tty: login.tty.as_deref(),
            remote_host: login.remote_host.as_deref(),
            ..NewEvent::new(EventKind::Online, &login.user, &process.host)
        };
        append(tx, path, &event, now, zone)?;
    }
    // A login that shows nothing leaves the message for the next one that does.
    let last_logout_message = if shows_notices {
        take_unseen_logout_message(tx, &login.user)
            .map_err(fail("reading the last logout message"))?
    } else {
        None
    };
    Ok(Opened {
        session_key: session_key.to_string(),
        online,
        last_logout_message,
    })
}

fn close_in_tx(
    tx: &rusqlite::Connection,
    path: &std::path::Path,
    zone: &crate::zone::Zone,
    session_key: Option<&str>,
    process: &ProcessFacts,
    reason: RemovalReason,
    now: DateTime<Utc>,
) -> Result<Closed, Error> {
    let key = match session_key {
        Some(key) => Some(key.to_string()),
        None => tx
            .prepare_cached(
                "SELECT SessionKey FROM LogoutSessions WHERE Pid = ?1 AND BootId = ?2 \
                 AND PidStartTime IS ?3 ORDER BY OpenedAt DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        process.pid,
                        process.boot_id,
                        process.pid_start_time.map(|t| t as i64)
                    ],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .map_err(on_error(path, "finding the session of this process"))?,
    };
    let Some(key) = key else {
        return Ok(Closed {
            session_key: None,
            removed: false,
            offline: false,
        });
    };
    let outcome = remove_in_tx(tx, path, zone, &key, reason, None, &process.host, now)?;
    Ok(Closed {
        session_key: Some(key),
        removed: outcome.is_some(),
        offline: outcome.is_some_and(|o| o.offline),
    })
}

/// Why the daemon removed a session: the logout that did it.
#[derive(Clone, Debug)]
pub struct Cause<'a> {
    pub schedule_id: &'a str,
    pub kick: bool,
    pub immediate: bool,
    /// The user's `warned` event, which `removed` points at.
    pub warned: Option<&'a str>,
}

/// What removing one session wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Removal {
    pub offline: bool,
}

/// Deletes a session row and writes `removed` (and `offline` after the user's last session),
/// inside the caller's transaction. `None` when the session was already gone.
#[allow(clippy::too_many_arguments)]
pub(super) fn remove_in_tx(
    tx: &rusqlite::Connection,
    path: &std::path::Path,
    zone: &crate::zone::Zone,
    key: &str,
    reason: RemovalReason,
    cause: Option<&Cause<'_>>,
    host: &str,
    now: DateTime<Utc>,
) -> Result<Option<Removal>, Error> {
    let fail = |context| on_error(path, context);
    let row = tx
        .prepare_cached(
            "DELETE FROM LogoutSessions WHERE SessionKey = ?1 \
             RETURNING GroupName, UserId, Service, Tty, RemoteHost, LoginKey",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![key], |row| {
                Ok(SessionRow {
                    user: row.get(0)?,
                    uid: row.get(1)?,
                    service: row.get(2)?,
                    tty: row.get(3)?,
                    remote_host: row.get(4)?,
                    login_key: row.get(5)?,
                })
            })
            .optional()
        })
        .map_err(fail("removing the session"))?;
    let Some(row) = row else {
        // Already removed (by the daemon, or a second close): not an error.
        return Ok(None);
    };
    let removed = NewEvent {
        uid: row.uid,
        session_key: Some(key),
        login_key: row.login_key.as_deref(),
        reason: Some(reason),
        service: row.service.as_deref(),
        tty: row.tty.as_deref(),
        remote_host: row.remote_host.as_deref(),
        schedule_id: cause.map(|c| c.schedule_id),
        kick: cause.is_some_and(|c| c.kick),
        immediate: cause.is_some_and(|c| c.immediate),
        related: cause.and_then(|c| c.warned),
        ..NewEvent::new(EventKind::Removed, &row.user, host)
    };
    let removed_id = append(tx, path, &removed, now, zone)?;
    let remaining: i64 = tx
        .prepare_cached("SELECT count(*) FROM LogoutSessions WHERE GroupName = ?1")
        .and_then(|mut stmt| stmt.query_row(params![row.user], |r| r.get(0)))
        .map_err(fail("counting live sessions"))?;
    let offline = remaining == 0;
    if offline {
        let event = NewEvent {
            uid: row.uid,
            related: Some(&removed_id),
            login_key: row.login_key.as_deref(),
            schedule_id: cause.map(|c| c.schedule_id),
            kick: cause.is_some_and(|c| c.kick),
            immediate: cause.is_some_and(|c| c.immediate),
            ..NewEvent::new(EventKind::Offline, &row.user, host)
        };
        append(tx, path, &event, now, zone)?;
    }
    Ok(Some(Removal { offline }))
}

struct SessionRow {
    user: String,
    uid: Option<u32>,
    service: Option<String>,
    tty: Option<String>,
    remote_host: Option<String>,
    login_key: Option<String>,
}

/// The message of the latest forced logout of `user` since the last one shown, and moves the
/// user's cursor to the newest event, so the scan at the next login starts here.
fn take_unseen_logout_message(
    conn: &rusqlite::Connection,
    user: &str,
) -> rusqlite::Result<Option<String>> {
    let message: Option<String> = conn
        .prepare_cached(
            "SELECT (SELECT Message FROM LogoutSchedules s WHERE s.Id = e.ScheduleId ORDER BY s.rowid DESC LIMIT 1) \
             FROM LogoutEvents e \
             WHERE e.GroupName = ?1 AND e.Event = 'removed' AND e.Reason IN ('kick', 'warning-expired') \
               AND e.ReplayId > coalesce((SELECT ReplayId FROM NoticeCursors WHERE GroupName = ?1), 0) \
             ORDER BY e.ReplayId DESC LIMIT 1",
        )?
        .query_row(params![user], |row| row.get::<_, Option<String>>(0))
        .optional()?
        .flatten()
        .filter(|m| !m.is_empty());
    conn.prepare_cached(
        // max(ReplayId) in a scalar subquery keeps SQLite's O(1) min/max optimisation; the
        // `WHERE true` is what SQLite needs to parse an upsert after a SELECT.
        "INSERT INTO NoticeCursors (GroupName, ReplayId) \
         SELECT ?1, (SELECT coalesce(max(ReplayId), 0) FROM LogoutEvents) WHERE true \
         ON CONFLICT (GroupName) DO UPDATE SET ReplayId = excluded.ReplayId",
    )?
    .execute(params![user])?;
    Ok(message)
}
