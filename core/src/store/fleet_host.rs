//! The statements a host's fleet link runs on the central database: the schedule versions
//! it copies, its bookkeeping row and its event uploads.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use super::fleet::{
    central_from_row, pg_error, pg_failure, CentralSchedule, FleetDb, CHANNEL, EVENT_COLUMNS,
    SCHEDULE_COLUMNS,
};
use super::EventRow;
use crate::error::Error;

impl FleetDb {
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
