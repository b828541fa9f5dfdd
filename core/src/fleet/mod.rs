//! The fleet (SPEC §9): which central schedules a host takes, and the host's side of the link
//! (`link`): poll for schedule versions, copy them down or resynchronise (`resync`), upload
//! the events, reconnect with back-off. A login never waits on any of it: the PAM module and
//! the enforcement loop read only the local store. Every statement is in `store::fleet*`
//! (PostgreSQL) and `store::fleet_local` (SQLite).

mod link;
mod resync;
pub mod secret;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

pub use link::{HostLink, StepReport, POLL_INTERVAL};
pub use resync::plan_resync;

use crate::clock::format_timestamp;
use crate::config::{validate_fleet_name, FleetConfig};
use crate::error::Error;
use crate::store::fleet::CentralSchedule;
use crate::store::{Access, ScheduleEvent, ScheduleRecord, Store, DEFAULT_BUSY_TIMEOUT};

/// Rows per schedule copy and per upload call.
pub const BATCH: usize = 500;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Low enough that a host is back within 5 s of the database coming back.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Checks a `--hosts` selector: `*`, a host name, or `@label`.
pub fn validate_selector(text: &str) -> Result<String, Error> {
    if text == "*" {
        return Ok(text.to_string());
    }
    let name = text.strip_prefix('@').unwrap_or(text);
    validate_fleet_name("hosts", name).map_err(|_| {
        Error::invalid(
            "hosts",
            format!("{text:?} is not a host selector (*, a host name, or @label)"),
        )
    })?;
    Ok(text.to_string())
}

/// Whether a schedule's `Hosts` selects this host.
pub fn selects(hosts: &str, host: &str, labels: &[String]) -> bool {
    match hosts.strip_prefix('@') {
        _ if hosts == "*" => true,
        Some(label) => labels.iter().any(|l| l == label),
        None => hosts == host,
    }
}

/// The local rows for a run of central versions, in order: a version that selects this host
/// is copied as it is; one that no longer selects it (retargeted or deleted) deletes the local
/// copy; the rest are none of this host's business. `held` is the set of fleet schedules the
/// store has, kept current as the run goes.
pub fn plan_copy(
    versions: &[CentralSchedule],
    held: &mut HashSet<String>,
    host: &str,
    labels: &[String],
) -> Vec<(ScheduleRecord, i64)> {
    let mut rows = Vec::new();
    for version in versions {
        let id = &version.record.id;
        let wanted =
            version.record.event != ScheduleEvent::Deleted && selects(&version.hosts, host, labels);
        if wanted {
            held.insert(id.clone());
            rows.push((version.record.clone(), version.version));
        } else if held.remove(id) {
            let mut gone = version.record.clone();
            gone.event = ScheduleEvent::Deleted;
            rows.push((gone, version.version));
        }
    }
    rows
}

/// Reconnect delays: 0.5 s doubling to 2 s, each with up to 25 % jitter so that a fleet does
/// not knock on a restarted server all at once.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    pub fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        base + base.mul_f64(f64::from(byte[0]) / 255.0 / 4.0)
    }
}

/// The host's side of the link, run by a thread of the daemon forever: a round every
/// `POLL_INTERVAL`; on any failure (recorded for `fleet status`) back off and start again.
/// Events stay in the local store until the database has them, so nothing is lost while it
/// is away.
pub fn run_host(fleet: &FleetConfig, db_path: &Path, log: &dyn Fn(&str)) -> ! {
    let mut backoff = Backoff::default();
    let mut link: Option<HostLink> = None;
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        let result = match link.as_mut() {
            Some(link) => link.step(Utc::now()),
            None => match Store::open(db_path, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT)
                .and_then(|store| HostLink::new(fleet, store))
            {
                Ok(made) => {
                    link = Some(made);
                    continue;
                }
                Err(e) => {
                    note_unlinked(db_path, &e);
                    Err(e)
                }
            },
        };
        match result {
            Ok(report) => {
                for note in &report.notes {
                    log(note);
                }
                last_error = None;
                backoff.reset();
                std::thread::sleep(POLL_INTERVAL.saturating_sub(started.elapsed()));
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(&text) {
                    log(&format!("fleet: {text}; retrying"));
                    last_error = Some(text);
                }
                std::thread::sleep(backoff.delay());
            }
        }
    }
}

/// Records for `fleet status` why the link could not even start (a bad URL or secret file).
fn note_unlinked(db_path: &Path, error: &Error) {
    if let Ok(mut store) = Store::open(db_path, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT) {
        let text = error.to_string();
        if store.fleet_state().ok().and_then(|s| s.last_error) != Some(text.clone()) {
            let _ = store.set_fleet_link(false, &format_timestamp(Utc::now()), Some(&text));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schedule::{Recurrence, Schedule};

    pub(crate) fn version(id: &str, hosts: &str, event: ScheduleEvent, v: i64) -> CentralSchedule {
        CentralSchedule {
            record: ScheduleRecord {
                date: "2026-11-23".into(),
                id: id.into(),
                update_time: "2026-11-23T10:00:00.000000Z".into(),
                event,
                actor: "root".into(),
                schedule: Schedule {
                    group: "students".into(),
                    recurrence: Recurrence::Daily,
                    time: chrono::NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
                    timezone: crate::zone::Zone::named("Europe/Berlin").unwrap(),
                    immediate: false,
                    kick: true,
                    message: String::new(),
                    lockout_minutes: 0,
                },
                due_at: None,
            },
            hosts: hosts.into(),
            version: v,
        }
    }

    /// Each planned row's Id, event and version, for comparing plans.
    pub(crate) fn seen(rows: &[(ScheduleRecord, i64)]) -> Vec<(&str, ScheduleEvent, i64)> {
        rows.iter()
            .map(|(r, v)| (r.id.as_str(), r.event, *v))
            .collect()
    }

    #[test]
    fn selectors() {
        let labels = vec!["lab".to_string(), "floor2".to_string()];
        assert!(selects("*", "lab1", &labels));
        assert!(selects("lab1", "lab1", &labels));
        assert!(!selects("lab2", "lab1", &labels));
        assert!(selects("@floor2", "lab1", &labels));
        assert!(!selects("@office", "lab1", &labels));
        for bad in ["", "@", "a b", "@*", "**", "@lab;x"] {
            assert!(validate_selector(bad).is_err(), "{bad}");
        }
        for good in ["*", "lab1", "@lab", "pc-7.example.org"] {
            assert_eq!(validate_selector(good).unwrap(), good);
        }
    }

    #[test]
    fn a_retargeted_or_deleted_schedule_leaves_the_host() {
        let labels = vec!["lab".to_string()];
        let mut held = HashSet::new();
        let rows = plan_copy(
            &[
                version("a", "@lab", ScheduleEvent::Created, 1),
                version("b", "@office", ScheduleEvent::Created, 2),
                version("a", "@lab", ScheduleEvent::Updated, 3),
                version("a", "@office", ScheduleEvent::Updated, 4),
                version("c", "*", ScheduleEvent::Created, 5),
                version("c", "*", ScheduleEvent::Deleted, 6),
                version("b", "@office", ScheduleEvent::Deleted, 7),
            ],
            &mut held,
            "lab1",
            &labels,
        );
        assert_eq!(
            seen(&rows),
            [
                ("a", ScheduleEvent::Created, 1),
                ("a", ScheduleEvent::Updated, 3),
                ("a", ScheduleEvent::Deleted, 4),
                ("c", ScheduleEvent::Created, 5),
                ("c", ScheduleEvent::Deleted, 6),
            ]
        );
        assert!(held.is_empty());
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..6).map(|_| backoff.delay()).collect();
        assert!(delays[0] >= BACKOFF_FIRST && delays[0] <= BACKOFF_FIRST.mul_f64(1.25));
        assert!(delays[5] >= BACKOFF_MAX && delays[5] <= BACKOFF_MAX.mul_f64(1.25));
        backoff.reset();
        assert!(backoff.delay() <= BACKOFF_FIRST.mul_f64(1.25));
    }
}
