//! `cargo build --release -p forcelogoutctl && cargo bench -p forcelogout_tests --bench fleet_sim`
//! (root): a fleet of N simulated hosts against one real PostgreSQL 15 at its default
//! `max_connections = 100`, behind pgbouncer in transaction mode (at most `POOL_SIZE` server
//! connections). Each host is its own SQLite store with the product's real link
//! (`HostLink`), all in this one process, one thread per host stepping the link every poll
//! interval with jitter, as the daemon's link does. For N = 200, 1000, 2000 (or the sizes in
//! `FLEET_SIM_SIZES`, e.g. `FLEET_SIM_SIZES=50,200`; the stores in `FLEET_SIM_STORES`, e.g.
//! /dev/shm, rather than the temporary directory), one table per measure:
//!
//! - a central `logout --hosts '*'`: from its commit (PostgreSQL's commit timestamp) to each
//!   host's local commit (the step that reports the version applied): median and last host;
//! - the idle fleet: polls per second and the server's and the pooler's CPU per poll (from
//!   /proc, the postmaster with its children, and pgbouncer; above their CPU with no host),
//!   this process's own CPU apart, and the connections each holds, measured twice: on the
//!   shared cores, and with the server and pgbouncer on a core of their own (the hosts on the
//!   other), as in a fleet whose hosts are other machines; beside it the floor, the
//!   same costs for pgbench's `SELECT 1` through the same pool at the largest fleet's rate,
//!   and the link's idle read (the fleet clock) sent by pgbench the same way;
//! - events uploaded per second with every host writing;
//! - a projection to 10,000 hosts against the goals (SPEC §9): a change reaches the last host
//!   in ≤ 2 s, ≤ 50 server connections, ≤ 1 core of central CPU while the fleet is idle.
//!
//! The machine's cores are shared: the simulated hosts (SQLite commits included) compete
//! with the server and the pooler, whose CPU is therefore read apart from this process's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use forcelogout_core::config::FleetConfig;
use forcelogout_core::fleet::secret::{new_secret, write_secret};
use forcelogout_core::fleet::HostLink;
use forcelogout_core::store::fleet::{FleetUrl, LINK_ROLE};
use forcelogout_core::store::{Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::fleet_ctl;
use forcelogout_tests::pg_cluster::{
    children_of, cpu_ticks, pgbouncer_unavailable, ticks_per_second, tree_cpu_ticks, Pgbouncer,
    PoolMode,
};
use forcelogout_tests::postgres::{Postgres, BIN};
use forcelogout_tests::Rng;

#[path = "fleet_sim/report.rs"]
mod report;
use report::{median, print_tables, Cpu, Measures, References};

const DEFAULT_SIZES: [usize; 3] = [200, 1000, 2000];
const ROUNDS: usize = 3;
const EVENTS_PER_HOST: usize = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(15);
/// Server connections pgbouncer may open (SPEC §9 allows 50).
const POOL_SIZE: u32 = 40;
/// How often each host steps its link, as the daemon's link polls.
const POLL: Duration = Duration::from_secs(1);
const PROJECTED_HOSTS: f64 = 10_000.0;
const ADMIN_ROLE: &str = "sim_admin";
/// pgbench's connections when it measures the cheapest transaction's cost.
const FLOOR_CLIENTS: usize = 200;

fn host_name(i: usize) -> String {
    format!("sim{i:04}")
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the hosts' threads report: (host index, version applied, when its step returned,
/// how long that step took), and the steps made and failed.
#[derive(Default)]
struct Reports {
    applied: Mutex<Vec<(usize, i64, f64, f64)>>,
    failed_steps: AtomicU64,
    steps: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Reports {
    /// When each host first had `version` or a later one, and how long that step took, if
    /// all of the first `hosts` have.
    fn applied_at(&self, version: i64, hosts: usize) -> Option<Vec<(f64, f64)>> {
        let mut first: Vec<Option<(f64, f64)>> = vec![None; hosts];
        for &(host, v, at, took) in self.applied.lock().expect("lock").iter() {
            if host < hosts && v >= version && first[host].is_none_or(|(t, _)| at < t) {
                first[host] = Some((at, took));
            }
        }
        first.into_iter().collect()
    }
}

/// One simulated host: its store's path and the thread stepping its link.
struct SimHost {
    db: PathBuf,
    thread: JoinHandle<()>,
}

/// The central side, the hosts, and the switch that stops the hosts' threads.
struct Sim {
    // Dropped in this order: the pooler before the server.
    bouncer: Pgbouncer,
    pg: Postgres,
    dir: tempfile::TempDir,
    admin_url: String,
    pool_passfile: PathBuf,
    pool_url: String,
    hosts: Vec<SimHost>,
    stop: Arc<AtomicBool>,
    reports: Arc<Reports>,
    /// The server's and pooler's CPU with no host linked yet.
    baseline: Cpu,
}

impl Sim {
    fn start(max_hosts: usize) -> Sim {
        let pg = Postgres::start_with("max_connections = 100");
        // The hosts' stores share this machine's one disk, unlike a fleet's: FLEET_SIM_STORES
        // (e.g. /dev/shm) puts them elsewhere, to tell the link's costs from that disk's.
        let dir = match std::env::var_os("FLEET_SIM_STORES") {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        ok(fleet_ctl(
            dir.path(),
            &pg.superuser_url(),
            &["fleet", "init"],
        ));
        let admin_passfile = pg.create_login(ADMIN_ROLE, "forcelogout_admin", dir.path());
        let pool_passfile = pg.create_login(LINK_ROLE, "forcelogout_host", dir.path());
        let clients = u32::try_from(max_hosts + FLOOR_CLIENTS).expect("hosts") + 100;
        let bouncer = Pgbouncer::start(&pg, PoolMode::Transaction, POOL_SIZE, clients);
        Sim {
            admin_url: pg.tcp_url(ADMIN_ROLE, &admin_passfile),
            pool_url: bouncer.url(LINK_ROLE, &pool_passfile),
            pool_passfile,
            pg,
            bouncer,
            dir,
            hosts: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            reports: Arc::new(Reports::default()),
            baseline: Cpu::default(),
        }
    }

    fn ctl(&self, args: &[&str]) -> String {
        ok(fleet_ctl(self.dir.path(), &self.admin_url, args))
    }

    fn scalar(&self, sql: &str) -> f64 {
        self.pg.psql(sql).trim().parse().unwrap_or(f64::NAN)
    }

    /// Enrols hosts up to `n` with the product's enrolment, each with its own directory,
    /// secret file and store, and starts their threads.
    fn grow_to(&mut self, n: usize) {
        let first = self.hosts.len();
        let names: Vec<String> = (first..n).map(host_name).collect();
        let dirs: Vec<PathBuf> = names.iter().map(|h| self.dir.path().join(h)).collect();
        for dir in &dirs {
            std::fs::create_dir(dir).expect("host dir");
        }
        enrol(&self.admin_url, &names, &dirs);
        for (offset, (name, dir)) in names.into_iter().zip(dirs).enumerate() {
            let index = first + offset;
            let fleet = FleetConfig {
                url: self.pool_url.clone(),
                host: name,
                secret_file: dir.join("fleet.secret"),
                obsolete_labels: false,
            };
            let db = dir.join("forcelogout.db");
            let store = Store::open(&db, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT).expect("store");
            let link = HostLink::new(&fleet, store).expect("host link");
            let (stop, reports) = (self.stop.clone(), self.reports.clone());
            let thread = std::thread::Builder::new()
                .name(format!("host-{index}"))
                .spawn(move || drive(link, index, &stop, &reports))
                .expect("thread");
            self.hosts.push(SimHost { db, thread });
        }
    }

    /// One central logout; per host, seconds from its commit to the host's local commit, and
    /// the seconds the step that applied it took.
    fn logout_round(&self) -> Vec<(f64, f64)> {
        let out = self.ctl(&[
            "--json",
            "logout",
            "nobody-sim",
            "--hosts",
            "*",
            "--in",
            "1h",
        ]);
        let version = serde_json::from_str::<serde_json::Value>(&out).expect("json")["Version"]
            .as_i64()
            .expect("Version");
        let committed = self.scalar(&format!(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM LogoutSchedules \
             WHERE Version = {version}"
        ));
        let n = self.hosts.len();
        let mut applied = None;
        let arrived = wait_until(Duration::from_secs(180), || {
            applied = self.reports.applied_at(version, n);
            applied.is_some()
        });
        assert!(arrived, "not every host applied version {version}");
        applied
            .unwrap_or_default()
            .iter()
            .map(|(at, took)| (at - committed, *took))
            .collect()
    }

    /// Cores used over `IDLE_WINDOW`, now.
    fn cpu_window(&self) -> Cpu {
        self.cpu_during(|| std::thread::sleep(IDLE_WINDOW))
    }

    /// Server and pgbouncer CPU per transaction of `statement`, sent with pgbench's
    /// `protocol`, `rate` a second through the same pooler as the hosts' role (so in their
    /// pool, whose server connections it leaves). With `SELECT 1`, the cheapest there is: the
    /// floor under any link that asks the server once per host per poll; with the link's idle
    /// read, that statement's cost apart from the hosts' own connections.
    fn reference(&self, rate: usize, statement: &str, protocol: &str) -> Cpu {
        let script = self.dir.path().join("reference.sql");
        std::fs::write(&script, format!("{statement}\n")).expect("script");
        let clients = FLOOR_CLIENTS.min(rate).to_string();
        let mut out = String::new();
        let mut cpu = self.cpu_during(|| {
            out = ok(Command::new(Path::new(BIN).join("pgbench"))
                .args(["-n", "-M", protocol, "-j", "2", "-c", &clients])
                .args([
                    "-R",
                    &rate.to_string(),
                    "-T",
                    &IDLE_WINDOW.as_secs().to_string(),
                ])
                .args(["-h", "127.0.0.1", "-p", &self.bouncer.port.to_string()])
                .args(["-U", LINK_ROLE, "-f"])
                .arg(&script)
                .arg("fleet")
                .env("PGPASSFILE", &self.pool_passfile)
                .output()
                .expect("pgbench"));
        });
        let tps = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("pgbench's tps");
        cpu.polls = tps;
        cpu
    }

    /// Runs `work` with the server and the pooler on the first core and this process (the
    /// simulated hosts) on the others, as in a fleet, whose hosts are other machines; the
    /// same `work` on the shared cores otherwise (one core).
    fn apart<T>(&self, work: impl FnOnce() -> T) -> T {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let Some(postmaster) = self.pg.postmaster_pid().filter(|_| cores > 1) else {
            return work();
        };
        let central = || {
            let mut pids = children_of(postmaster);
            pids.extend([postmaster, self.bouncer.pid()]);
            pids
        };
        let pin = |pids: &[u32], cpus: &str| {
            for pid in pids {
                // A backend that ended meanwhile is no error.
                let _ = Command::new("taskset")
                    .args(["-a", "-cp", cpus, &pid.to_string()])
                    .output();
            }
        };
        let (first, rest, all) = (
            "0".to_string(),
            format!("1-{}", cores - 1),
            format!("0-{}", cores - 1),
        );
        pin(&central(), &first);
        pin(&[std::process::id()], &rest);
        let out = work();
        pin(&central(), &all);
        pin(&[std::process::id()], &all);
        out
    }

    /// Cores used while `work` runs.
    fn cpu_during(&self, work: impl FnOnce()) -> Cpu {
        let postmaster = self.pg.postmaster_pid().expect("postmaster pid");
        let (bouncer, own) = (self.bouncer.pid(), std::process::id());
        let read = || {
            [
                tree_cpu_ticks(postmaster),
                cpu_ticks(bouncer),
                cpu_ticks(own),
                self.reports.steps.load(Ordering::Relaxed),
            ]
        };
        let started = Instant::now();
        let before = read();
        work();
        let after = read();
        let seconds = started.elapsed().as_secs_f64();
        let per_second = |i: usize| after[i].saturating_sub(before[i]) as f64 / seconds;
        let ticks = ticks_per_second();
        Cpu {
            server: per_second(0) / ticks,
            pooler: per_second(1) / ticks,
            own: per_second(2) / ticks,
            polls: per_second(3),
        }
    }

    /// The idle fleet's CPU, and the connections the server and the pooler hold.
    fn idle(&self, m: &mut Measures) {
        std::thread::sleep(Duration::from_secs(3));
        m.idle = self.cpu_window();
        m.idle_apart = self.apart(|| self.cpu_window());
        m.pg_connections = self.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'fleet' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ) as u64;
        let pools = self.bouncer.pools();
        m.server_connections = pools.server_connections();
        m.clients = pools.cl_active + pools.cl_waiting;
    }

    /// Events per second uploaded while every store gets `EVENTS_PER_HOST` new events.
    fn upload_rate(&self) -> f64 {
        let before = self.scalar("SELECT count(*) FROM LogoutEvents") as usize;
        let started = Instant::now();
        for host in &self.hosts {
            let conn = rusqlite::Connection::open(&host.db).expect("store");
            conn.execute_batch(&format!(
                "PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EVENTS_PER_HOST}) \
                 INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
                 SELECT '2026-11-23', strftime('%Y-%m-%dT%H:%M:%fZ'), 'user' || (i % 50), \
                 CASE i % 2 WHEN 0 THEN 'online' ELSE 'offline' END, lower(hex(randomblob(16))), 'sim' FROM n; \
                 COMMIT;"
            ))
            .expect("events");
        }
        let sent = EVENTS_PER_HOST * self.hosts.len();
        assert!(
            self.pg.wait_for(
                Duration::from_secs(600),
                "SELECT count(*) FROM LogoutEvents",
                &(before + sent).to_string()
            ),
            "the events did not all arrive"
        );
        sent as f64 / started.elapsed().as_secs_f64()
    }

    fn measure(&mut self, n: usize) -> Measures {
        let started = Instant::now();
        self.grow_to(n);
        let mut m = Measures {
            hosts: n,
            latency: Vec::new(),
            idle: Cpu::default(),
            idle_apart: Cpu::default(),
            pg_connections: 0,
            server_connections: 0,
            clients: 0,
            events_per_second: 0.0,
            failed_steps: 0,
        };
        // Every host has made contact once the first round reaches them all.
        let warm_up = self.logout_round();
        println!(
            "{n} hosts enrolled and linked in {:.1} s (a first logout reached them all {:.2} s after its commit)",
            started.elapsed().as_secs_f64(),
            warm_up.iter().map(|r| r.0).fold(0.0, f64::max)
        );
        for _ in 0..ROUNDS {
            let (delays, steps): (Vec<f64>, Vec<f64>) = self.logout_round().into_iter().unzip();
            let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            m.latency.push([
                median(delays.clone()),
                max(&delays),
                median(steps.clone()),
                max(&steps),
            ]);
        }
        self.idle(&mut m);
        m.events_per_second = self.upload_rate();
        println!(
            "  measured: last host {:.3} s (median of rounds), idle server + pgbouncer {:.3} cores, {:.0} events/s",
            median(m.latency.iter().map(|r| r[1]).collect()),
            m.idle.server + m.idle.pooler,
            m.events_per_second
        );
        m.failed_steps = self.reports.failed_steps.swap(0, Ordering::Relaxed);
        if let Some(e) = self.reports.last_error.lock().expect("lock").take() {
            println!("  (a failed step: {e})");
        }
        m
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // The hosts' threads end before the pooler and the server are stopped.
        self.stop.store(true, Ordering::Relaxed);
        for host in self.hosts.drain(..) {
            let _ = host.thread.join();
        }
    }
}

/// A host's thread: step the link every `POLL` with up to ±10 % jitter, as the daemon does,
/// and report each version applied with the moment its step returned.
fn drive(mut link: HostLink, index: usize, stop: &AtomicBool, reports: &Reports) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
    let tenth = POLL.as_millis() as u64 / 10;
    let mut next = Instant::now() + Duration::from_millis(rng.below(POLL.as_millis() as u64));
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
            continue;
        }
        reports.steps.fetch_add(1, Ordering::Relaxed);
        let started = epoch_now();
        match link.step(Utc::now()) {
            Ok(report) => {
                if let Some(version) = report.applied_version {
                    let at = epoch_now();
                    let entry = (index, version, at, at - started);
                    reports.applied.lock().expect("lock").push(entry);
                }
            }
            Err(e) => {
                reports.failed_steps.fetch_add(1, Ordering::Relaxed);
                *reports.last_error.lock().expect("lock") = Some(e.to_string());
            }
        }
        next += POLL - Duration::from_millis(tenth) + Duration::from_millis(rng.below(2 * tenth));
    }
}

/// Enrols `names` with the product's enrolment (what `fleet enrol --secret-file` does, on
/// one administrator's connection), each host's secret file in its directory.
fn enrol(admin_url: &str, names: &[String], dirs: &[PathBuf]) {
    let mut db = FleetUrl::parse(admin_url, ADMIN_ROLE)
        .and_then(|url| url.connect())
        .expect("administrator's connection");
    let labels = vec!["sim".to_string()];
    for (name, dir) in names.iter().zip(dirs) {
        let secret = new_secret().expect("secret");
        write_secret(&dir.join("fleet.secret"), &secret).expect("secret file");
        db.enrol_host(name, Some(&labels), &secret, false)
            .expect("enrolment");
    }
}

/// Lets this process hold a socket and a store (three files) for each host: the soft
/// open-file limit up to the hard one, which must be enough.
fn raise_file_limit(hosts: usize) {
    let pid = std::process::id().to_string();
    let hard = ok(Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output=HARD", "--noheadings"])
        .output()
        .expect("prlimit"));
    let hard = hard.trim();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("prlimit");
    assert!(status.success(), "could not raise the open-file limit");
    let needed = 5 * hosts + 200;
    if hard.parse::<usize>().is_ok_and(|h| h < needed) {
        println!(
            "warning: the open-file limit ({hard}) is below the {needed} files this run needs"
        );
    }
}

/// /proc/loadavg's first three fields: how busy the machine was besides this run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn sizes() -> Vec<usize> {
    match std::env::var("FLEET_SIM_SIZES") {
        Ok(text) => text
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("FLEET_SIM_SIZES: numbers, e.g. 50,200")
            })
            .collect(),
        Err(_) => DEFAULT_SIZES.to_vec(),
    }
}

fn main() {
    if let Some(why) = pgbouncer_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut sizes = sizes();
    sizes.sort_unstable();
    raise_file_limit(sizes.last().copied().unwrap_or(0));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "fleet simulation: PostgreSQL 15 (max_connections = 100) behind pgbouncer 1.18 \
         (transaction mode, {POOL_SIZE} server connections); hosts in this process, one \
         thread each, stepping every {} ms ± 10 %",
        POLL.as_millis()
    );
    println!(
        "machine: {cores} cores, shared: the simulated hosts' CPU competes with the server's; \
         server and pooler CPU are read from /proc apart from this process's own"
    );
    println!(
        "load average at the start: {}; hosts' stores in {}",
        load_average(),
        std::env::var("FLEET_SIM_STORES").unwrap_or_else(|_| "the temporary directory".into())
    );
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut sim = Sim::start(largest);
    sim.baseline = sim.cpu_window();
    let references = References {
        floor: sim
            .reference(largest, "SELECT 1;", "extended")
            .per_poll(&sim.baseline),
        idle_read: sim
            .reference(largest, "SELECT Key FROM FleetClock;", "simple")
            .per_poll(&sim.baseline),
    };
    let mut results = Vec::new();
    for n in sizes {
        results.push(sim.measure(n));
    }
    print_tables(&results, &sim.baseline, &references);
    println!("\nload average at the end: {}", load_average());
    drop(sim);
}
