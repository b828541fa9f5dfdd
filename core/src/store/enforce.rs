//! What the enforcement daemon reads and writes: live sessions, countdowns, the users they
//! warned and the ones who chose to ignore, and the removals at the end.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::events::{append, EventKind, NewEvent};
use super::sessions::{remove_in_tx, Cause};
use super::{on_error, RemovalReason, ScheduleRecord, Store};
use crate::clock::format_timestamp;
use crate::error::Error;

/// A row of `LogoutSessions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    pub key: String,
    pub user: String,
    pub uid: u32,
    pub service: Option<String>,
    pub tty: Option<String>,
    pub remote_host: Option<String>,
    pub pid: u32,
    pub process_session: Option<u32>,
    pub cgroup: Option<String>,
    pub logind_session: Option<String>,
    /// The audit session id of the PAM caller (`/proc/PID/sessionid`), when it had one.
    pub login_key: Option<String>,
    pub boot_id: String,
    pub opened_at: String,
    pub pid_start_time: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountdownState {
    Running,
    Done,
    Skipped,
}

/// A user a countdown warned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountdownUser {
    pub user: String,
    pub warned: String,
    pub ignored: Option<String>,
}

/// What `forcelogoutctl ignore` achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreOutcome {
    /// An `ignored` event was written for these schedules' warnings.
    Ignored(Vec<String>),
    /// The user's only running countdowns are kicks, which cannot be ignored.
    KickOnly,
    /// No countdown is running for this user.
    NothingToIgnore,
    /// The store could not be written (another process holds its write lock): the daemon
    /// keeps the choice, honours it at once, and records it when the store can be written.
    Deferred,
}

impl Store {
    pub fn live_sessions(&self) -> Result<Vec<LiveSession>, Error> {
        let fail = |e| super::classify(&self.path, "reading live sessions", e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT SessionKey, GroupName, UserId, Service, Tty, RemoteHost, Pid, ProcessSession, Cgroup, \
                 LogindSession, BootId, OpenedAt, PidStartTime, LoginKey FROM LogoutSessions ORDER BY OpenedAt",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(LiveSession {
                    key: row.get(0)?,
                    user: row.get(1)?,
                    uid: row.get(2)?,
                    service: row.get(3)?,
                    tty: row.get(4)?,
                    remote_host: row.get(5)?,
                    pid: row.get(6)?,
                    process_session: row.get(7)?,
                    cgroup: row.get(8)?,
                    logind_session: row.get(9)?,
                    boot_id: row.get(10)?,
                    opened_at: row.get(11)?,
                    pid_start_time: row.get::<_, Option<i64>>(12)?.map(|t| t as u64),
                    login_key: row.get(13)?,
                })
            })
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(rows)
    }

    /// SQLite's counter of commits by other connections: a cheap "did anything change?".
    pub fn data_version(&self) -> Result<i64, Error> {
        self.conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(|e| super::classify(&self.path, "reading the data version", e))
    }

    pub fn countdown_state(
        &self,
        schedule_id: &str,
        due: DateTime<Utc>,
    ) -> Result<Option<CountdownState>, Error> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT State FROM Countdowns WHERE ScheduleId = ?1 AND DueAt = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![schedule_id, format_timestamp(due)], |row| {
                    row.get(0)
                })
                .optional()
            })
            .map_err(|e| super::classify(&self.path, "reading a countdown", e))?;
        Ok(state.map(|s| match s.as_str() {
            "running" => CountdownState::Running,
            "done" => CountdownState::Done,
            _ => CountdownState::Skipped,
        }))
    }

    /// Records a countdown as running (idempotent).
    pub fn start_countdown(
        &mut self,
        record: &ScheduleRecord,
        due: DateTime<Utc>,
        warn_from: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.set_countdown(record, due, warn_from, "running")
    }

    /// Records a logout instance that was missed by more than the catch-up window.
    pub fn skip_countdown(
        &mut self,
        record: &ScheduleRecord,
        due: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.set_countdown(record, due, due, "skipped")
    }

    fn set_countdown(
        &mut self,
        record: &ScheduleRecord,
        due: DateTime<Utc>,
        warn_from: DateTime<Utc>,
        state: &str,
    ) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO Countdowns (ScheduleId, DueAt, WarnFrom, Kick, State) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (ScheduleId, DueAt) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    record.id,
                    format_timestamp(due),
                    format_timestamp(warn_from),
                    record.schedule.kick,
                    state
                ])
            })
            .map_err(|e| super::classify(&self.path, "recording a countdown", e))?;
        Ok(())
    }

    /// Writes `warned` for `user` once per countdown; returns the new event's identifier, or
    /// `None` when the user was warned already.
    pub fn warn_user(
        &mut self,
        record: &ScheduleRecord,
        due: DateTime<Utc>,
        user: &str,
        uid: u32,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, Error> {
        let (tx, path, zone) = self.begin_write("starting a warning")?;
        let fail = |context| on_error(&path, context);
        let due_text = format_timestamp(due);
        let known: Option<String> = tx
            .prepare_cached(
                "SELECT WarnedEventIdentifier FROM CountdownUsers WHERE ScheduleId = ?1 AND DueAt = ?2 AND GroupName = ?3",
            )
            .and_then(|mut stmt| stmt.query_row(params![record.id, due_text, user], |r| r.get(0)).optional())
            .map_err(fail("reading a warning"))?;
        if known.is_some() {
            return Ok(None);
        }
        let event = NewEvent {
            uid: Some(uid),
            schedule_id: Some(&record.id),
            kick: record.schedule.kick,
            immediate: record.schedule.immediate,
            ..NewEvent::new(EventKind::Warned, user, host)
        };
        let warned = append(&tx, &path, &event, now, &zone)?;
        tx.prepare_cached(
            "INSERT INTO CountdownUsers (ScheduleId, DueAt, GroupName, WarnedEventIdentifier) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| stmt.execute(params![record.id, due_text, user, warned]))
        .map_err(fail("recording a warning"))?;
        tx.commit().map_err(fail("committing a warning"))?;
        Ok(Some(warned))
    }

    pub fn countdown_users(
        &self,
        schedule_id: &str,
        due: DateTime<Utc>,
    ) -> Result<Vec<CountdownUser>, Error> {
        let fail = |e| super::classify(&self.path, "reading the warned users", e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT GroupName, WarnedEventIdentifier, IgnoredEventIdentifier FROM CountdownUsers \
                 WHERE ScheduleId = ?1 AND DueAt = ?2 ORDER BY GroupName",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![schedule_id, format_timestamp(due)], |row| {
                Ok(CountdownUser {
                    user: row.get(0)?,
                    warned: row.get(1)?,
                    ignored: row.get(2)?,
                })
            })
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(rows)
    }

    /// `forcelogoutctl ignore` for `user`: an `ignored` event for every running warning (not
    /// kick) countdown that warned this user and that the user has not ignored yet.
    pub fn ignore_warnings(
        &mut self,
        user: &str,
        uid: u32,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<IgnoreOutcome, Error> {
        let (tx, path, zone) = self.begin_write("starting an ignore")?;
        let fail = |context| on_error(&path, context);
        let running: Vec<(String, String, bool, String, Option<String>)> = tx
            .prepare_cached(
                "SELECT c.ScheduleId, c.DueAt, c.Kick, u.WarnedEventIdentifier, u.IgnoredEventIdentifier \
                 FROM Countdowns c JOIN CountdownUsers u ON u.ScheduleId = c.ScheduleId AND u.DueAt = c.DueAt \
                 WHERE c.State = 'running' AND u.GroupName = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                    .collect()
            })
            .map_err(fail("reading the running countdowns"))?;
        if running.is_empty() {
            return Ok(IgnoreOutcome::NothingToIgnore);
        }
        let mut ignored = Vec::new();
        for (schedule_id, due, kick, warned, already) in &running {
            if *kick || already.is_some() {
                continue;
            }
            let event = NewEvent {
                uid: Some(uid),
                schedule_id: Some(schedule_id),
                related: Some(warned),
                ..NewEvent::new(EventKind::Ignored, user, host)
            };
            let id = append(&tx, &path, &event, now, &zone)?;
            tx.prepare_cached(
                "UPDATE CountdownUsers SET IgnoredEventIdentifier = ?4 WHERE ScheduleId = ?1 AND DueAt = ?2 AND GroupName = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![schedule_id, due, user, id]))
            .map_err(fail("recording an ignore"))?;
            ignored.push(schedule_id.clone());
        }
        tx.commit().map_err(fail("committing an ignore"))?;
        if ignored.is_empty() && running.iter().all(|r| r.2) {
            return Ok(IgnoreOutcome::KickOnly);
        }
        Ok(IgnoreOutcome::Ignored(ignored))
    }

    /// Ends a countdown: removes the sessions (one transaction for all) and marks it done.
    /// Each entry: the session, the reason, and the user's `warned` event if any.
    pub fn finish_countdown(
        &mut self,
        record: &ScheduleRecord,
        due: DateTime<Utc>,
        removals: &[(String, RemovalReason, Option<String>)],
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let (tx, path, zone) = self.begin_write("starting the logout")?;
        let fail = |context| on_error(&path, context);
        let mut removed = 0;
        for (key, reason, warned) in removals {
            let cause = Cause {
                schedule_id: &record.id,
                kick: record.schedule.kick,
                immediate: record.schedule.immediate,
                warned: warned.as_deref(),
            };
            if remove_in_tx(&tx, &path, &zone, key, *reason, Some(&cause), host, now)?.is_some() {
                removed += 1;
            }
        }
        tx.prepare_cached(
            "UPDATE Countdowns SET State = 'done' WHERE ScheduleId = ?1 AND DueAt = ?2",
        )
        .and_then(|mut stmt| stmt.execute(params![record.id, format_timestamp(due)]))
        .map_err(fail("closing the countdown"))?;
        tx.commit().map_err(fail("committing the logout"))?;
        Ok(removed)
    }

    /// Removes sessions with `reason` and no schedule behind it (stale ones, idle ones), in one
    /// transaction; returns how many were still there.
    pub fn remove_sessions(
        &mut self,
        keys: &[String],
        reason: RemovalReason,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (tx, path, zone) = self.begin_write("starting a session removal")?;
        let fail = |context| on_error(&path, context);
        let mut removed = 0;
        for key in keys {
            if remove_in_tx(&tx, &path, &zone, key, reason, None, host, now)?.is_some() {
                removed += 1;
            }
        }
        tx.commit().map_err(fail("committing a session removal"))?;
        Ok(removed)
    }
}
