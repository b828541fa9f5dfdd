//! `LogoutEvents`: the append-only event log.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::path::Path;

use rusqlite::{params, Connection};

use super::classify;

use crate::clock::{format_timestamp, partition_date};
use crate::error::Error;
use crate::ids;

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
    host_zone: Tz,
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
