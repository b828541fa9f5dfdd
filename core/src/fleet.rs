//! The fleet (SPEC §9): which central schedules a host takes, and the host's side of the link:
//! copy the schedule versions down, upload the events, reconnect with back-off. A login never
//! waits on any of it: the PAM module and the enforcement loop read only the local store.
//! Every statement is in `store::fleet` (PostgreSQL) and `store::fleet_local` (SQLite).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::clock::format_timestamp;
use crate::config::{validate_fleet_name, FleetConfig};
use crate::error::Error;
use crate::store::fleet::{CentralSchedule, FleetDb, FleetTls, FleetUrl};
use crate::store::{Access, ScheduleEvent, ScheduleRecord, Store, DEFAULT_BUSY_TIMEOUT};

/// A host that heard nothing looks at the schedules this often anyway (a lost notification).
pub const SAFETY_POLL: Duration = Duration::from_secs(30);
/// How often the host looks for new local events to upload (and for a closed connection).
pub const UPLOAD_POLL: Duration = Duration::from_secs(1);
/// Rows per schedule copy and per upload transaction.
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

/// The host's side of the link, run by a thread of the daemon forever: connect, copy, upload,
/// wait; on any failure, record it for `fleet status`, back off and start again. Events stay
/// in the local store until the database has them, so nothing is lost while it is away.
pub fn run_host(fleet: &FleetConfig, db_path: &Path, log: &dyn Fn(&str)) -> ! {
    let mut backoff = Backoff::default();
    let mut store: Option<Store> = None;
    let mut link: Option<(FleetUrl, FleetTls)> = None;
    let mut last_error: Option<String> = None;
    // "connected" is logged once after each error that was logged, not at every retry.
    let mut say_connected = true;
    loop {
        let result = match (store.as_mut(), &link) {
            (None, _) => match Store::open(db_path, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT) {
                Ok(opened) => {
                    store = Some(opened);
                    continue;
                }
                Err(e) => Err(e),
            },
            // The URL parsed, and TLS set up, once: reconnects reuse them.
            (Some(_), None) => match FleetUrl::parse(&fleet.url, &fleet.host)
                .and_then(|url| url.tls().map(|tls| (url, tls)))
            {
                Ok(parsed) => {
                    link = Some(parsed);
                    continue;
                }
                Err(e) => Err(e),
            },
            (Some(store), Some((url, tls))) => session(
                fleet,
                url,
                tls,
                store,
                &mut backoff,
                &mut say_connected,
                log,
            ),
        };
        let Err(error) = result;
        let text = error.to_string();
        if last_error.as_deref() != Some(&text) {
            log(&format!("fleet: {text}; retrying"));
            say_connected = true;
            if let Some(store) = store.as_mut() {
                let _ = store.set_fleet_link(false, &format_timestamp(Utc::now()), Some(&text));
            }
            last_error = Some(text);
        }
        std::thread::sleep(backoff.delay());
    }
}

/// One connection's life; returns only with the error that ended it.
#[allow(clippy::too_many_arguments)]
fn session(
    fleet: &FleetConfig,
    url: &FleetUrl,
    tls: &FleetTls,
    store: &mut Store,
    backoff: &mut Backoff,
    say_connected: &mut bool,
    log: &dyn Fn(&str),
) -> Result<std::convert::Infallible, Error> {
    let mut db = url.connect_with(tls)?;
    db.check_schema()?;
    db.listen()?;
    let (_, mut uploaded) = db.enrol(&fleet.host, &fleet.labels, env!("CARGO_PKG_VERSION"))?;
    backoff.reset();
    store.set_fleet_link(true, &format_timestamp(Utc::now()), None)?;
    if std::mem::take(say_connected) {
        log(&format!(
            "fleet: connected to {} as {}",
            url.endpoint(),
            url.user()
        ));
    }
    let local_newest = store.max_replay_id()?;
    if uploaded > local_newest {
        log(&format!(
            "fleet: the database has events up to ReplayId {uploaded} but this store only to \
             {local_newest} (a new store?); uploading from the start"
        ));
        uploaded = 0;
        db.reset_upload_position(&fleet.host, 0)?;
    }
    if store.fleet_state()?.uploaded_replay_id != uploaded {
        store.set_fleet_uploaded(uploaded)?;
    }
    let mut next_poll = Instant::now();
    let mut announced = true;
    loop {
        let poll_due = Instant::now() >= next_poll;
        if announced || poll_due {
            let moved = copy_schedules(&mut db, store, fleet, log)?;
            // The safety poll doubles as a heartbeat: `fleet hosts` shows a live LastContact.
            if moved || poll_due {
                db.report_version(&fleet.host, store.fleet_state()?.schedule_version)?;
            }
            if poll_due {
                next_poll = Instant::now() + SAFETY_POLL;
            }
        }
        uploaded = upload_events(&mut db, store, &fleet.host, uploaded)?;
        announced = db.wait_for_announcement(UPLOAD_POLL)?;
        if db.is_closed() {
            return Err(Error::io(
                format!("fleet: {}", url.endpoint()),
                std::io::Error::other("the connection was closed"),
            ));
        }
    }
}

/// Copies the versions after the store's position, a batch per local transaction (each one
/// records its position with it); whether the position moved.
fn copy_schedules(
    db: &mut FleetDb,
    store: &mut Store,
    fleet: &FleetConfig,
    log: &dyn Fn(&str),
) -> Result<bool, Error> {
    let start = store.fleet_state()?.schedule_version;
    let mut position = start;
    loop {
        let batch = db.versions_after(position, BATCH as i64)?;
        let Some(last) = batch.last().map(|(v, _)| *v) else {
            break;
        };
        let full = batch.len() == BATCH;
        let mut good = Vec::with_capacity(batch.len());
        for (version, row) in batch {
            match row {
                Ok(row) => good.push(row),
                Err(e) => log(&format!("fleet: schedule version {version} skipped: {e}")),
            }
        }
        let mut held = store.fleet_schedule_ids()?;
        let rows = plan_copy(&good, &mut held, &fleet.host, &fleet.labels);
        store.apply_fleet_versions(&rows, last)?;
        position = last;
        if !full {
            break;
        }
    }
    Ok(position != start)
}

/// Uploads the events after `uploaded` in ReplayId order, a batch per central transaction;
/// returns the new position.
fn upload_events(
    db: &mut FleetDb,
    store: &mut Store,
    host: &str,
    mut uploaded: i64,
) -> Result<i64, Error> {
    while store.max_replay_id()? > uploaded {
        let batch = store.events_after(uploaded, BATCH)?;
        let Some(last) = batch.last().map(|e| e.replay_id) else {
            break;
        };
        db.upload(host, &batch)?;
        uploaded = last;
        store.set_fleet_uploaded(uploaded)?;
    }
    Ok(uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Recurrence, Schedule};

    fn version(id: &str, hosts: &str, event: ScheduleEvent, v: i64) -> CentralSchedule {
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
                    timezone: chrono_tz::Europe::Berlin,
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
        let seen: Vec<(&str, ScheduleEvent, i64)> = rows
            .iter()
            .map(|(r, v)| (r.id.as_str(), r.event, *v))
            .collect();
        assert_eq!(
            seen,
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
