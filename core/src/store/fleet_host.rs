//! The statements a host's fleet link runs on the central database: the idle poll (a read of
//! the fleet's clock, `CENTRAL_V3`), and three functions, each authenticating the host by its
//! name and secret (`CENTRAL_V2`): the poll, the current set for a resynchronisation, and the
//! upload.
//!
//! Every statement goes through a transaction pooler (pgbouncer in transaction mode), in a
//! transaction of its own, and the link sets nothing in the session: no SET, no LISTEN. The
//! functions are unnamed statements with their parameter types given (`query_typed`: parse,
//! bind and execute in one round trip, nothing prepared that a later transaction on another
//! server connection would miss); the clock's read has no parameter and goes as a simple
//! query (one message, the server's cheapest way to run a statement). The link's guards against a stalled server are on the client side
//! (`tcp_user_timeout`, keepalives, and the channel's silence limit, `fleet_channel`).

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Row, SimpleQueryMessage};

use super::fleet::{central_from_row, pg_error, CentralSchedule, FleetTls};
use super::EventRow;
use crate::error::Error;

/// The SQLSTATE `forcelogout_host_poll` raises when the host's position is not in the
/// server's history (a failover lost the version it applied).
pub const DIVERGED: &str = "FLRSY";

/// The columns of `forcelogout_host_row`, the key as text (the client has no uuid type here).
const HOST_ROW_COLUMNS: &str = "Date, Id, GroupName, UpdateTime, Schedule, ScheduleDate, Time, \
     Timezone, Days, Immediate, Kick, Event, Message, Actor, Lockout, DueAt, Hosts, Version, \
     VersionKey::text, Labels, LastReplayId";

/// A host's connection to the central database (or to a pooler in front of it).
pub struct HostDb {
    client: Client,
    endpoint: String,
}

/// What the central database has for this host: its labels and upload position, and
/// schedule versions (a row that fails validation comes back as its error, for the caller to
/// log and skip).
#[derive(Debug)]
pub struct HostView {
    pub labels: Vec<String>,
    /// The highest ReplayId of this host's events the database has.
    pub last_replay_id: i64,
    /// From `current`: the newest Version and its key (`None`: no versions at all).
    pub newest: Option<(i64, String)>,
    pub versions: Vec<CentralVersion>,
}

/// A central version and its key; the row's error if it fails validation.
#[derive(Debug)]
pub struct CentralVersion {
    pub version: i64,
    pub key: String,
    pub row: Result<CentralSchedule, Error>,
}

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    /// The versions after the position (none: idle), and the host's central state.
    Found(HostView),
    /// The position is not in this server's history: resynchronise.
    Diverged,
}

/// Who the host is, for every call.
#[derive(Clone, Copy)]
pub struct HostIdentity<'a> {
    pub host: &'a str,
    pub secret: &'a str,
}

impl HostDb {
    /// Connects, and sets nothing: a pooler's server connection is shared.
    pub(super) fn open(
        config: &postgres::Config,
        tls: FleetTls,
        endpoint: String,
    ) -> Result<HostDb, Error> {
        let client = config
            .connect(tls)
            .map_err(|e| pg_error(&format!("connecting to {endpoint}"), e))?;
        Ok(HostDb { client, endpoint })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn failure(&self, what: &str, e: postgres::Error) -> Error {
        // A server whose schema predates this build's link: its functions or its clock are
        // missing until `fleet init` migrates it.
        if e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
            || e.code() == Some(&SqlState::UNDEFINED_TABLE)
        {
            return Error::io(
                format!("fleet: {} has an older forcelogout schema", self.endpoint),
                std::io::Error::other("run forcelogoutctl --fleet fleet init on it"),
            );
        }
        pg_error(&format!("{what} on {}", self.endpoint), e)
    }

    /// The poll: versions after `(after, after_key)`, at most `limit`, with the host's
    /// labels and upload position; reports `applied` and `product` (written only if changed).
    pub fn poll(
        &mut self,
        me: HostIdentity<'_>,
        after: (i64, Option<&str>),
        applied: i64,
        product: &str,
        limit: i32,
    ) -> Result<Poll, Error> {
        let sql = format!(
            "SELECT {HOST_ROW_COLUMNS} FROM \
             forcelogout_host_poll($1, $2, $3, $4::uuid, $5, $6, $7)"
        );
        let params: [(&(dyn ToSql + Sync), Type); 7] = [
            (&me.host, Type::TEXT),
            (&me.secret, Type::TEXT),
            (&after.0, Type::INT8),
            (&after.1, Type::TEXT),
            (&applied, Type::INT8),
            (&product, Type::TEXT),
            (&limit, Type::INT4),
        ];
        match self.client.query_typed(&sql, &params) {
            Ok(rows) => Ok(Poll::Found(view(&rows))),
            Err(e) if e.code().map(SqlState::code) == Some(DIVERGED) => Ok(Poll::Diverged),
            Err(e) => Err(self.failure("polling for schedule changes", e)),
        }
    }

    /// The idle poll: the fleet clock's key, which changes with everything a host must act
    /// on (`None`: the server has no clock row, so every poll is a full one).
    pub fn clock(&mut self) -> Result<Option<String>, Error> {
        let messages = self
            .client
            .simple_query("SELECT Key FROM FleetClock")
            .map_err(|e| self.failure("reading the fleet clock", e))?;
        Ok(messages.iter().find_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        }))
    }

    /// The current central set (latest version per Id, not deleted), and the newest version.
    pub fn current(&mut self, me: HostIdentity<'_>) -> Result<HostView, Error> {
        let sql = format!("SELECT {HOST_ROW_COLUMNS} FROM forcelogout_host_current($1, $2)");
        let params: [(&(dyn ToSql + Sync), Type); 2] =
            [(&me.host, Type::TEXT), (&me.secret, Type::TEXT)];
        let rows = self
            .client
            .query_typed(&sql, &params)
            .map_err(|e| self.failure("reading the current schedules", e))?;
        Ok(view(&rows))
    }

    /// Uploads a batch of this host's events (ReplayId order, all after `after`, where the
    /// host believes the server's copy ends) and returns the new central upload position; an
    /// event already there (same EventIdentifier) is skipped. A position below `after` means
    /// the server has less than that, and nothing was stored: send again from there.
    pub fn upload(
        &mut self,
        me: HostIdentity<'_>,
        after: i64,
        events: &[EventRow],
    ) -> Result<i64, Error> {
        let batch = serde_json::to_string(events).map_err(|e| {
            Error::io(
                "fleet: encoding an upload batch",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&me.host, Type::TEXT),
            (&me.secret, Type::TEXT),
            (&after, Type::INT8),
            (&batch, Type::TEXT),
        ];
        let row = self
            .client
            .query_typed_one(
                "SELECT forcelogout_host_upload($1, $2, $3, $4::jsonb)",
                &params,
            )
            .map_err(|e| self.failure("uploading events", e))?;
        Ok(row.get(0))
    }
}

/// The header row (labels, position, newest version) and the version rows after it.
fn view(rows: &[Row]) -> HostView {
    let mut view = HostView {
        labels: Vec::new(),
        last_replay_id: 0,
        newest: None,
        versions: Vec::new(),
    };
    for row in rows {
        let version: Option<i64> = row.get(17);
        let key: Option<String> = row.get(18);
        let labels: Option<Vec<String>> = row.get(19);
        match labels {
            Some(labels) => {
                view.labels = labels;
                view.last_replay_id = row.get(20);
                view.newest = version.zip(key);
            }
            None => view.versions.push(CentralVersion {
                version: version.unwrap_or_default(),
                key: key.unwrap_or_default(),
                row: central_from_row(row),
            }),
        }
    }
    view
}
