//! The host's side of the link (SPEC §9, "Delivery"): each round, one poll of the central
//! database copies the new schedule versions (or resynchronises), and the events the server
//! does not have yet go up. No LISTEN and no session state: the link works through a
//! transaction pooler, and an idle host costs the server one cheap call per poll interval.

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
/// The full poll (which writes the heartbeat) at least this often; in between, a round whose
/// idle poll finds the newest version at the host's position and the same labels makes no
/// other call on the server than that one (and its uploads).
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
    /// When the last full poll was made on this connection.
    last_full_poll: Option<DateTime<Utc>>,
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
        if let Some(server) = self.idle(now)? {
            return self.upload_events(server, report);
        }
        let view = self.copy_schedules(now, report)?;
        self.last_full_poll = Some(now);
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
        self.upload_events(view.last_replay_id, report)
    }

    /// Whether this round may stop at the idle poll, and if so the server's upload position:
    /// a full poll was made on this connection less than `FULL_POLL_EVERY` ago, the server's
    /// newest version is the host's position, key included (so it is on this server's
    /// history, and nothing is new), and the host's central labels are the ones it applied.
    fn idle(&mut self, now: DateTime<Utc>) -> Result<Option<i64>, Error> {
        let recent = self.last_full_poll.is_some_and(|at| {
            now.signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age < FULL_POLL_EVERY)
        });
        if !recent {
            return Ok(None);
        }
        let state = self.store.fleet_state()?;
        let (db, me) = self.db()?;
        let peek = db.peek(me)?;
        let at_newest = match (&peek.newest, &state.schedule_version_key) {
            (None, _) => state.schedule_version == 0,
            (Some((version, key)), Some(held)) => *version == state.schedule_version && key == held,
            (Some(_), None) => false,
        };
        let same_labels = state.labels.as_ref() == Some(&peek.labels);
        Ok((at_newest && same_labels).then_some(peek.last_replay_id))
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
    /// applied); returns the last view, with the host's labels and upload position.
    fn copy_schedules(
        &mut self,
        now: DateTime<Utc>,
        report: &mut StepReport,
    ) -> Result<HostView, Error> {
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
            if view.versions.is_empty() || polls >= POLLS_PER_ROUND {
                return Ok(view);
            }
            let Some(last) = view.versions.last() else {
                return Ok(view);
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
    /// The server's position is the truth (after a failover that lost uploads it is lower,
    /// and they go up again); one above the store's newest event means the store was
    /// recreated, and everything goes up from the start (EventIdentifier keeps it exact).
    fn upload_events(&mut self, server: i64, report: &mut StepReport) -> Result<(), Error> {
        let newest = self.store.max_replay_id()?;
        let mut uploaded = server;
        if uploaded > newest && newest > 0 {
            report.notes.push(format!(
                "fleet: the server has events up to ReplayId {server} but this store only to \
                 {newest} (a new store?); uploading from the start"
            ));
            uploaded = 0;
        }
        if self.store.fleet_state()?.uploaded_replay_id != uploaded.min(newest) {
            self.store.set_fleet_uploaded(uploaded.min(newest))?;
        }
        while newest > uploaded {
            let batch = self.store.events_after(uploaded, BATCH)?;
            if batch.is_empty() {
                break;
            }
            let (db, me) = self.db()?;
            uploaded = db.upload(me, &batch)?;
            report.uploaded += batch.len() as u64;
            self.store.set_fleet_uploaded(uploaded)?;
        }
        Ok(())
    }
}
