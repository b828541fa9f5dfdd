//! The fleet link (SPEC §9) with real servers in the ways sites run them: many hosts through
//! pgbouncer in transaction mode against a server at `max_connections = 100`; a streaming
//! standby promoted after the primary is killed; a failover to a server restored from an
//! earlier backup, which lost schedules and events the hosts had. Each host is its own store
//! with the product's link (`HostLink`) stepped by a thread of this process; logins are real
//! PAM sessions through the module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use forcelogout_core::config::FleetConfig;
use forcelogout_core::fleet::HostLink;
use forcelogout_core::store::fleet::LINK_ROLE;
use forcelogout_core::store::{Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::pg_cluster::{pgbouncer_unavailable, Pgbouncer, PoolMode, AUTH_CONNECTIONS};
use forcelogout_tests::postgres::{unavailable, Postgres};
use forcelogout_tests::{fleet_ctl, query, PamStack};

mod fleet_support;
use fleet_support::ok;

const ADMIN: &str = "ff_admin";
/// How often each host's thread steps its link (the daemon's link polls every second).
const STEP_EVERY: Duration = Duration::from_millis(500);
const ARRIVAL: Duration = Duration::from_secs(180);

/// The central database's logins and the tests' scratch directory.
struct Central {
    dir: tempfile::TempDir,
    admin_passfile: PathBuf,
    pool_passfile: PathBuf,
}

impl Central {
    /// `fleet init` on `pg`, an administrator's login and the hosts' shared pooled login.
    fn init(pg: &Postgres) -> Central {
        let dir = tempfile::tempdir().expect("tempdir");
        let central = Central {
            admin_passfile: PathBuf::new(),
            pool_passfile: PathBuf::new(),
            dir,
        };
        ok(central.ctl(&pg.superuser_url(), &["fleet", "init"]));
        let dir = central.dir.path();
        Central {
            admin_passfile: pg.create_login(ADMIN, "forcelogout_admin", dir),
            pool_passfile: pg.create_login(LINK_ROLE, "forcelogout_host", dir),
            ..central
        }
    }

    fn ctl(&self, url: &str, args: &[&str]) -> Output {
        fleet_ctl(self.dir.path(), url, args)
    }

    /// `forcelogoutctl --fleet` as the administrator on `pg`.
    fn admin(&self, pg: &Postgres, args: &[&str]) -> String {
        ok(self.ctl(&pg.tcp_url(ADMIN, &self.admin_passfile), args))
    }

    /// A central logout of everyone in `group` on every host: (its Id, its Version).
    fn logout_everywhere(&self, pg: &Postgres, group: &str) -> (String, i64) {
        let out = self.admin(
            pg,
            &["--json", "logout", group, "--hosts", "*", "--in", "1h"],
        );
        let written: serde_json::Value = serde_json::from_str(&out).expect("json");
        (
            written["Id"].as_str().expect("Id").to_string(),
            written["Version"].as_i64().expect("Version"),
        )
    }

    /// `fleet enrol NAME` with the secret file in `dir`; returns the secret file.
    fn enrol(&self, pg: &Postgres, name: &str, dir: &Path) -> PathBuf {
        let secret = dir.join("fleet.secret");
        let path = secret.to_str().expect("utf-8");
        self.admin(pg, &["fleet", "enrol", name, "--secret-file", path]);
        secret
    }
}

/// A host: its name, its store (inside a PAM stack, so that logins are real), and its link,
/// until a `Driver` takes it.
struct Host {
    name: String,
    stack: PamStack,
    link: Option<HostLink>,
}

impl Host {
    fn new(central: &Central, pg: &Postgres, name: &str, url: &str) -> Host {
        let stack = PamStack::standard("");
        let secret_file = central.enrol(pg, name, stack.dir.path());
        let fleet = FleetConfig {
            url: url.to_string(),
            host: name.to_string(),
            secret_file,
            obsolete_labels: false,
        };
        let store = Store::open(&stack.db, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT).expect("store");
        let link = HostLink::new(&fleet, store).expect("host link");
        Host {
            name: name.to_string(),
            stack,
            link: Some(link),
        }
    }

    /// Whether the store's current schedules include `id`.
    fn has_current(&self, id: &str) -> bool {
        query(
            &self.stack.db,
            &format!("SELECT count(*) FROM LogoutSchedulesCurrent WHERE Id = '{id}'"),
        )[0][0]
            == "1"
    }

    fn event_identifiers(&self) -> BTreeSet<String> {
        query(&self.stack.db, "SELECT EventIdentifier FROM LogoutEvents")
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    }

    fn login_logout(&self, user: &str) {
        assert_eq!(self.stack.run(user, &["open", "close"]).rc("open"), 0);
    }
}

/// Threads stepping links every `STEP_EVERY` until dropped; a failed step (the server is
/// down, or changing) is what the daemon would retry, so it is only counted.
struct Driver {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Driver {
    fn start(hosts: &mut [Host]) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = hosts
            .iter_mut()
            .map(|host| {
                let mut link = host.link.take().expect("a link not yet driven");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let _ = link.step(Utc::now());
                        let rest = STEP_EVERY.saturating_sub(started.elapsed());
                        std::thread::sleep(rest);
                    }
                })
            })
            .collect();
        Driver { stop, threads }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn all_have(hosts: &[Host], id: &str) -> bool {
    wait_until(ARRIVAL, || hosts.iter().all(|h| h.has_current(id)))
}

/// Waits until the central events are exactly the hosts' events, each once.
fn events_match(pg: &Postgres, hosts: &[Host]) -> Result<(), String> {
    let mut last = String::new();
    let matched = wait_until(ARRIVAL, || {
        let local: BTreeSet<(String, String)> = hosts
            .iter()
            .flat_map(|h| {
                h.event_identifiers()
                    .into_iter()
                    .map(|e| (h.name.clone(), e))
            })
            .collect();
        let Some(rows) = pg.try_psql("SELECT Host, EventIdentifier FROM LogoutEvents") else {
            return false;
        };
        let central: Vec<(String, String)> = rows
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(h, e)| (h.to_string(), e.to_string()))
            .collect();
        let distinct: BTreeSet<(String, String)> = central.iter().cloned().collect();
        last = format!(
            "{} local, {} central ({} distinct)",
            local.len(),
            central.len(),
            distinct.len()
        );
        central.len() == distinct.len() && distinct == local
    });
    if matched {
        Ok(())
    } else {
        Err(last)
    }
}

fn skip_unless_servers() -> bool {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

#[test]
#[ignore = "needs root: PostgreSQL and pgbouncer run as the postgres user; PAM logins"]
fn a_logout_reaches_150_hosts_through_a_transaction_pooler() {
    if let Some(why) = pgbouncer_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let pg = Postgres::start_with("max_connections = 100");
    let central = Central::init(&pg);
    let bouncer = Pgbouncer::start(&pg, PoolMode::Transaction, 20, 300);
    let url = bouncer.url(LINK_ROLE, &central.pool_passfile);
    let mut hosts: Vec<Host> = (0..150)
        .map(|i| Host::new(&central, &pg, &format!("pool{i:03}"), &url))
        .collect();
    let driver = Driver::start(&mut hosts);
    let (id, _) = central.logout_everywhere(&pg, "nobody-pooled");
    let missing: Vec<&str> = if all_have(&hosts, &id) {
        Vec::new()
    } else {
        hosts
            .iter()
            .filter(|h| !h.has_current(&id))
            .map(|h| h.name.as_str())
            .collect()
    };
    assert!(missing.is_empty(), "no logout on {missing:?}");
    let hosts_pool = bouncer.pool(LINK_ROLE);
    assert!(hosts_pool.server_connections() <= 20, "{hosts_pool:?}");
    let pools = bouncer.pools();
    assert!(
        pools.server_connections() <= 20 + AUTH_CONNECTIONS as u64,
        "{pools:?}"
    );
    let backends: i64 = pg
        .psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        .trim()
        .parse()
        .expect("count");
    assert!(backends < 100, "{backends} server connections");
    drop(driver);
}

#[test]
#[ignore = "needs root: PostgreSQL runs as the postgres user; PAM logins"]
fn hosts_follow_a_standby_promoted_after_the_primary_is_killed() {
    if skip_unless_servers() {
        return;
    }
    let primary = Postgres::start();
    let central = Central::init(&primary);
    let standby = Postgres::standby_of(&primary);
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=fleet user={LINK_ROLE} passfile={} \
         sslmode=disable connect_timeout=5 target_session_attrs=read-write",
        primary.port,
        standby.port,
        central.pool_passfile.display()
    );
    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| Host::new(&central, &primary, &format!("sb{i}"), &url))
        .collect();
    let driver = Driver::start(&mut hosts);
    let (before, _) = central.logout_everywhere(&primary, "nobody-before");
    assert!(all_have(&hosts, &before), "the first logout did not arrive");
    // Logins go on, before, during and after the failover.
    let users = ["games", "news", "man"];
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
    }
    primary.kill_hard();
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
    }
    standby.promote();
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
    }
    let (after, _) = central.logout_everywhere(&standby, "nobody-after");
    assert!(
        all_have(&hosts, &after),
        "the logout on the promoted server did not arrive"
    );
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
        assert!(
            host.has_current(&before),
            "{} lost the first logout",
            host.name
        );
    }
    let matched = events_match(&standby, &hosts);
    drop(driver);
    matched.unwrap_or_else(|e| panic!("central events are not the hosts' events once: {e}"));
}

#[test]
#[ignore = "needs root: PostgreSQL runs as the postgres user; PAM logins"]
fn hosts_resynchronise_with_a_server_restored_from_an_earlier_backup() {
    if skip_unless_servers() {
        return;
    }
    let mut pg = Postgres::start();
    let central = Central::init(&pg);
    let url = pg.tcp_url(LINK_ROLE, &central.pool_passfile);
    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| Host::new(&central, &pg, &format!("rb{i}"), &url))
        .collect();
    let driver = Driver::start(&mut hosts);
    let users = ["games", "news", "man"];
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
    }
    events_match(&pg, &hosts).expect("the first events were uploaded");
    let backup = pg.backup();
    let (s1, s1_version) = central.logout_everywhere(&pg, "nobody-s1");
    assert!(all_have(&hosts, &s1), "S1 did not arrive");
    for (host, user) in hosts.iter().zip(users) {
        host.login_logout(user);
    }
    events_match(&pg, &hosts).expect("the events after S1 were uploaded");
    pg.restore(backup);
    let lost: i64 = pg
        .psql(&format!(
            "SELECT count(*) FROM LogoutSchedules WHERE Id = '{s1}'"
        ))
        .trim()
        .parse()
        .expect("count");
    assert_eq!(lost, 0, "the restored server still has S1");
    let (s2, s2_version) = central.logout_everywhere(&pg, "nobody-s2");
    assert_eq!(s2_version, s1_version, "S2 does not take S1's Version");
    assert!(all_have(&hosts, &s2), "S2 did not arrive");
    let kept: Vec<&str> = if wait_until(ARRIVAL, || hosts.iter().all(|h| !h.has_current(&s1))) {
        Vec::new()
    } else {
        hosts
            .iter()
            .filter(|h| h.has_current(&s1))
            .map(|h| h.name.as_str())
            .collect()
    };
    assert!(kept.is_empty(), "S1 is still on {kept:?}");
    let matched = events_match(&pg, &hosts);
    drop(driver);
    matched.unwrap_or_else(|e| panic!("the lost events were not uploaded again: {e}"));
}
