//! The host's side of the link (SPEC §9, "Delivery"): each round, one poll of the central
//! database copies the new schedule versions (or resynchronises), and the events the server
//! does not have yet go up. No LISTEN and no session state: the link works through a
//! transaction pooler, and an idle host costs the server one read of a one-row table per poll
//! interval (the fleet's clock, which changes with everything a host must act on).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::resync::plan_resync;
use super::secret::read_secret;
use super::{plan_copy, BATCH};
use crate::clock::format_timestamp;
use crate::config::FleetConfig;
use crate::error::Error;
use crate::store::fleet::{
    CentralSchedule, CentralVersion, FleetTls, FleetUrl, HostDb, HostIdentity, HostView, Poll,
    LINK_ROLE,
};
use crate::store::Store;

/// How often a host polls: a change reaches it within this (plus a round's time).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The full poll (which writes the heartbeat, and tells the host the server's copy of its
/// events) at least this often; in between, a round whose read of the fleet's clock finds the
/// key the last full poll saw makes no other call on the server than that one (and uploads).
pub const FULL_POLL_EVERY: Duration = Duration::from_secs(5 * 60);
/// Polls in one round at most (copying a long history, resynchronising): the rest is for the
/// next round, so that a round always ends and uploads get their turn.
const POLLS_PER_ROUND: usize = 20;
/// The product version reported in `FleetHosts`.
const PRODUCT: &str = env!("CARGO_PKG_VERSION");

/// One host's link: its identity, its connection (when it has one) and its store.
pub struct HostLink {
    host: String,
    secret_file: PathBuf,
    /// Read again at each connection: a renewed secret is taken without a restart.
    secret: String,
    url: FleetUrl,
    tls: FleetTls,
    store: Store,
    db: Option<HostDb>,
    /// Whether the store says "connected" (written when that changes, not every round).
    linked: bool,
    /// The error the store shows, so that the same one is not written again every retry.
    last_error: Option<String>,
    /// When the last complete full poll was made on this connection, and the fleet clock's
    /// key it settled on (read the same just before it and just after).
    last_full_poll: Option<(DateTime<Utc>, String)>,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// The position the round ended at, if it copied or resynchronised anything.
    pub applied_version: Option<i64>,
    /// Whether the round resynchronised (history diverged, or the labels changed).
    pub resynced: bool,
    /// Events sent to the server.
    pub uploaded: u64,
    /// Lines for the log (connected, resynchronised, a version skipped).
    pub notes: Vec<String>,
}

impl HostLink {
    /// Parses the URL, reads the secret file (0600, owned by the caller's euid; refused
    /// otherwise). Nothing is connected yet.
    pub fn new(fleet: &FleetConfig, store: Store) -> Result<HostLink, Error> {
        let url = FleetUrl::parse(&fleet.url, LINK_ROLE)?;
        let tls = url.tls()?;
        let secret = read_secret(&fleet.secret_file)?;
        Ok(HostLink {
            host: fleet.host.clone(),
            secret_file: fleet.secret_file.clone(),
            secret,
            url,
            tls,
            store,
            db: None,
            linked: false,
            last_error: None,
            last_full_poll: None,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One round: connect if not connected, poll (copy new versions / resync), upload
    /// pending events; returns what it did. On error the connection is dropped (and the
    /// error recorded for `fleet status`); the caller backs off and calls again.
    pub fn step(&mut self, now: DateTime<Utc>) -> Result<StepReport, Error> {
        let mut report = StepReport::default();
        match self.round(now, &mut report) {
            Ok(()) => Ok(report),
            Err(error) => {
                self.db = None;
                self.linked = false;
                let text = error.to_string();
                if self.last_error.as_deref() != Some(&text) {
                    let _ = self
                        .store
                        .set_fleet_link(false, &format_timestamp(now), Some(&text));
                    self.last_error = Some(text);
                }
                Err(error)
            }
        }
    }

    fn round(&mut self, now: DateTime<Utc>, report: &mut StepReport) -> Result<(), Error> {
        if self.db.as_ref().is_none_or(HostDb::is_closed) {
            self.secret = read_secret(&self.secret_file)?;
            self.db = Some(self.url.connect_host(&self.tls)?);
            self.last_full_poll = None;
        }
        let clock = self.db()?.0.clock()?;
        if self.idle(now, clock.as_deref()) {
            return self.upload_events(None, report);
        }
        let (view, complete) = self.copy_schedules(now, report)?;
        // The key stands for what the poll copied only if it is the same after the poll: a
        // change committed in between (which the poll may have copied) draws another key, and
        // a failover that lost that change must not find the host at the key before it. A
        // round that stopped short, or saw the clock move, leaves the next to a full poll.
        let settled = if complete && clock.is_some() {
            let after = self.db()?.0.clock()?;
            clock.filter(|key| after.as_ref() == Some(key))
        } else {
            None
        };
        self.last_full_poll = settled.map(|key| (now, key));
        if !self.linked {
            self.store
                .set_fleet_link(true, &format_timestamp(now), None)?;
            self.linked = true;
            self.last_error = None;
            report.notes.push(format!(
                "fleet: linked to {} as {} (host {})",
                self.url.endpoint(),
                self.url.user(),
                self.host
            ));
        }
        self.upload_events(Some(view.last_replay_id), report)
    }

    /// Whether this round may stop at the idle poll: the last complete full poll on this
    /// connection was less than `FULL_POLL_EVERY` ago, and the fleet's clock has the key it
    /// had then (nothing a host acts on has changed, on this server's history).
    fn idle(&self, now: DateTime<Utc>, clock: Option<&str>) -> bool {
        self.last_full_poll.as_ref().is_some_and(|(at, key)| {
            Some(key.as_str()) == clock
                && now
                    .signed_duration_since(*at)
                    .to_std()
                    .is_ok_and(|age| age < FULL_POLL_EVERY)
        })
    }

    fn db(&mut self) -> Result<(&mut HostDb, HostIdentity<'_>), Error> {
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| Error::io("fleet", std::io::Error::other("not connected")))?;
        Ok((
            db,
            HostIdentity {
                host: &self.host,
                secret: &self.secret,
            },
        ))
    }

    /// Polls until nothing new is left (each poll after a copy also reports the version just
    /// applied); returns the last view, with the host's labels and upload position, and
    /// whether it is complete (false: the round's polls ran out with versions left).
    fn copy_schedules(
        &mut self,
        now: DateTime<Utc>,
        report: &mut StepReport,
    ) -> Result<(HostView, bool), Error> {
        let mut polls = 0;
        loop {
            polls += 1;
            let state = self.store.fleet_state()?;
            let position = (
                state.schedule_version,
                state.schedule_version_key.as_deref(),
            );
            let (db, me) = self.db()?;
            let poll = db.poll(me, position, state.schedule_version, PRODUCT, BATCH as i32)?;
            let view = match poll {
                Poll::Diverged => {
                    let why = format!(
                        "version {} is not in the server's history (a failover lost it?)",
                        state.schedule_version
                    );
                    self.resync(now, &why, report)?;
                    continue;
                }
                Poll::Found(view) => view,
            };
            if state.labels.as_ref() != Some(&view.labels) {
                let why = format!("the central labels are [{}]", view.labels.join(", "));
                self.resync(now, &why, report)?;
                continue;
            }
            if polls >= POLLS_PER_ROUND {
                return Ok((view, false));
            }
            let Some(last) = view.versions.last() else {
                return Ok((view, true));
            };
            let position = (last.version, last.key.clone());
            let good = self.validated(view.versions, report);
            let mut held = self.store.fleet_schedule_ids()?;
            let rows = plan_copy(&good, &mut held, &self.host, &view.labels);
            self.store
                .apply_fleet_versions(&rows, (position.0, &position.1))?;
            report.applied_version = Some(position.0);
        }
    }

    /// Makes the store's fleet schedules exactly the server's current ones for this host,
    /// and its position the server's newest version, in one local transaction.
    fn resync(
        &mut self,
        now: DateTime<Utc>,
        why: &str,
        report: &mut StepReport,
    ) -> Result<(), Error> {
        if report.resynced {
            // Twice in one round: something keeps changing; the next round tries again.
            return Err(Error::io(
                "fleet: resynchronising",
                std::io::Error::other("the server's history changed again during it"),
            ));
        }
        let (db, me) = self.db()?;
        let view = db.current(me)?;
        let newest = view.newest.clone();
        let central = self.validated(view.versions, report);
        let held = self.store.fleet_schedules()?;
        let rows = plan_resync(
            &held,
            &central,
            newest.as_ref().map_or(0, |n| n.0),
            &self.host,
            &view.labels,
            now,
        );
        let position = newest.as_ref().map(|(v, k)| (*v, k.as_str()));
        self.store.resync_fleet(&rows, position, &view.labels)?;
        report.resynced = true;
        report.applied_version = Some(position.map_or(0, |p| p.0));
        report.notes.push(format!(
            "fleet: {why}: resynchronised with {}: {} change(s), now at version {}",
            self.url.endpoint(),
            rows.len(),
            position.map_or(0, |p| p.0)
        ));
        Ok(())
    }

    /// The versions that pass validation; the others are noted and skipped.
    fn validated(
        &self,
        versions: Vec<CentralVersion>,
        report: &mut StepReport,
    ) -> Vec<CentralSchedule> {
        versions
            .into_iter()
            .filter_map(|v| match v.row {
                Ok(row) => Some(row),
                Err(e) => {
                    report.notes.push(format!(
                        "fleet: schedule version {} skipped: {e}",
                        v.version
                    ));
                    None
                }
            })
            .collect()
    }

    /// Uploads the events after the server's position, in ReplayId order, a batch per call.
    /// The server's position is the truth: the full poll's (`server`), or, in an idle round,
    /// the one each upload answers; after a failover that lost uploads it is lower than the
    /// host's, and they go up again. One above the store's newest event means the store was
    /// recreated, and everything goes up from the start (EventIdentifier keeps it exact).
    fn upload_events(&mut self, server: Option<i64>, report: &mut StepReport) -> Result<(), Error> {
        let newest = self.store.max_replay_id()?;
        let held = self.store.fleet_state()?.uploaded_replay_id;
        let mut uploaded = server.unwrap_or(held);
        if uploaded > newest && newest > 0 {
            report.notes.push(format!(
                "fleet: the server has events up to ReplayId {uploaded} but this store only to \
                 {newest} (a new store?); uploading from the start"
            ));
            uploaded = 0;
        }
        if held != uploaded.min(newest) {
            self.store.set_fleet_uploaded(uploaded.min(newest))?;
        }
        let mut behind_once = false;
        while newest > uploaded {
            let batch = self.store.events_after(uploaded, BATCH)?;
            if batch.is_empty() {
                break;
            }
            let (db, me) = self.db()?;
            let position = db.upload(me, uploaded, &batch)?;
            if position < uploaded {
                if behind_once {
                    return Err(Error::io(
                        "fleet: uploading events",
                        std::io::Error::other("the server's copy of them went back twice"),
                    ));
                }
                behind_once = true;
                report.notes.push(format!(
                    "fleet: the server has this host's events only up to ReplayId {position}, \
                     not {uploaded} (a failover lost some?); uploading them again"
                ));
            } else {
                report.uploaded += batch.len() as u64;
            }
            uploaded = position;
            self.store.set_fleet_uploaded(uploaded)?;
        }
        Ok(())
    }
}
