//! `cargo build --release --workspace && cargo bench -p forcelogout_tests --bench fleet` (root):
//! a real PostgreSQL 15 and N real daemons (N = 50, then 200), each its own host with its own
//! store, socket, configuration and secret (`fleet enrol`), all logging in as the one link role.
//!
//! - one central `logout --hosts '*'`: from its commit (PostgreSQL's commit timestamp) to each
//!   host's report that it has committed the logout locally (`FleetHosts.AppliedAt`, written
//!   right after the local commit): median and max over several rounds;
//! - events uploaded per second with every host writing;
//! - `--fleet` commands against the idle fleet, next to the same command on a local store;
//! - hosts that were offline (their secret refused) when the logout was committed: from the
//!   moment they are accepted again to their local commit.
//!
//! Goal (SPEC §9 issue): ≤ 2 s to the last of 200 hosts; ≤ 5 s after an offline host can
//! reach the database again.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::postgres::{unavailable, Postgres};
use forcelogout_tests::{ctl_path, fleet_ctl};

const SIZES: [usize; 2] = [50, 200];
const ROUNDS: usize = 5;
const EVENTS_PER_HOST: i64 = 200;
const OFFLINE_HOSTS: usize = 10;
const PASSWORD: &str = "bench-link-password";
/// The one login every host uses.
const LINK_ROLE: &str = "forcelogout_link";
/// Host i's daemon runs as uid BENCH_UID_BASE + i (no passwd entry needed).
const BENCH_UID_BASE: usize = 61_000;

/// A simulated host: its directory and its daemon, killed when dropped.
struct BenchHost {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    pg: Postgres,
    dir: tempfile::TempDir,
    admin_url: String,
    host_passfile: std::path::PathBuf,
}

fn host_name(i: usize) -> String {
    format!("bh{i:03}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Bench {
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ctl_path())
            .arg("--db")
            .arg(self.dir.path().join("admin.db"))
            .args(args)
            .env("FORCELOGOUT_CONFIG", self.dir.path().join("none.toml"))
            .output()
            .expect("forcelogoutctl")
    }

    fn admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["--fleet", &self.admin_url];
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    fn scalar(&self, sql: &str) -> f64 {
        self.pg.psql(sql).trim().parse().unwrap_or(f64::NAN)
    }

    /// Starts host number `i`: its own directory (store, socket, configuration, passfile) and
    /// its daemon, under a uid of its own. The kernel allows each uid 128 inotify instances
    /// (`fs.inotify.max_user_instances`) and every daemon needs one: 200 daemons as root would
    /// exhaust root's, and the host's limits are not the benchmark's to change.
    fn start_host(&self, i: usize) -> BenchHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = (BENCH_UID_BASE + i).to_string();
        let passfile = dir.path().join("fleet.pgpass");
        std::fs::copy(&self.host_passfile, &passfile).expect("passfile");
        let secret_file = dir.path().join("fleet.secret");
        let lines = ok(self.admin(&[
            "fleet",
            "enrol",
            &host_name(i),
            "--labels",
            "bench",
            "--secret-file",
            secret_file.to_str().expect("path"),
            "--host-url",
            &self.pg.tcp_url(LINK_ROLE, &passfile),
        ]));
        let config = dir.path().join("forcelogout.toml");
        std::fs::write(
            &config,
            format!(
                "socket = \"{}\"\nsyslog = false\nhooks_dir = \"{}\"\n{lines}",
                dir.path().join("socket").display(),
                dir.path().join("hooks").display(),
            ),
        )
        .expect("config");
        let owned = Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(owned.success());
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
            .arg(ctl_path())
            .arg("--db")
            .arg(dir.path().join("forcelogout.db"))
            .arg("daemon")
            .env("FORCELOGOUT_CONFIG", &config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon");
        let host = BenchHost { dir, child };
        let socket = host.dir.path().join("socket");
        assert!(
            wait_until(Duration::from_secs(30), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "host {i} did not start: {}",
            std::fs::read_to_string(host.dir.path().join("daemon.log")).unwrap_or_default()
        );
        host
    }

    /// One central logout; (median, max) seconds from its commit to the hosts' local commits.
    fn logout_round(&self, hosts: usize) -> (f64, f64) {
        let out = ok(self.admin(&[
            "--json",
            "logout",
            "nobody-bench",
            "--hosts",
            "*",
            "--in",
            "1h",
        ]));
        let version = serde_json::from_str::<serde_json::Value>(&out).expect("json")["Version"]
            .as_i64()
            .expect("Version");
        let sql = format!("SELECT count(*) FROM FleetHosts WHERE ScheduleVersion >= {version}");
        assert!(
            self.pg
                .wait_for(Duration::from_secs(120), &sql, &hosts.to_string()),
            "not every host got version {version}"
        );
        let delays = self.pg.psql(&format!(
            "SELECT extract(epoch FROM h.AppliedAt - c.at) FROM FleetHosts h, \
             (SELECT pg_xact_commit_timestamp(xmin) AS at FROM LogoutSchedules WHERE Version = {version}) c"
        ));
        let delays: Vec<f64> = delays
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let max = delays.iter().copied().fold(0.0, f64::max);
        (median(delays), max)
    }

    /// Seconds per run (median of 7) of `--fleet ARGS`, and of the local `schedule list` run
    /// alternately with it (the in-run baseline: same load, same moment).
    fn time_against_local(&self, args: &[&str]) -> (f64, f64) {
        let run = |fleet: bool| {
            let started = Instant::now();
            ok(if fleet {
                self.admin(args)
            } else {
                self.ctl(&["schedule", "list"])
            });
            started.elapsed().as_secs_f64()
        };
        let (mut local, mut fleet) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            local.push(run(false));
            fleet.push(run(true));
        }
        (median(fleet), median(local))
    }

    /// Events per second uploaded while `hosts` stores each get `EVENTS_PER_HOST` new events.
    fn upload_rate(&self, stores: &[BenchHost]) -> f64 {
        let before = self.scalar("SELECT count(*) FROM LogoutEvents") as i64;
        let started = Instant::now();
        for host in stores {
            let conn = rusqlite::Connection::open(host.dir.path().join("forcelogout.db")).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EVENTS_PER_HOST}) \
                 INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
                 SELECT '2026-11-23', strftime('%Y-%m-%dT%H:%M:%fZ'), 'user' || (i % 50), \
                 CASE i % 2 WHEN 0 THEN 'online' ELSE 'offline' END, lower(hex(randomblob(16))), 'bench' FROM n; \
                 COMMIT;"
            ))
            .unwrap();
        }
        let total = before + EVENTS_PER_HOST * stores.len() as i64;
        assert!(
            self.pg.wait_for(
                Duration::from_secs(300),
                "SELECT count(*) FROM LogoutEvents",
                &total.to_string()
            ),
            "the events did not all arrive"
        );
        (EVENTS_PER_HOST * stores.len() as i64) as f64 / started.elapsed().as_secs_f64()
    }

    /// Refuses the first `OFFLINE_HOSTS` hosts' logins, commits a logout, lets them in again:
    /// seconds from then to the last one's local commit.
    fn offline_catch_up(&self) -> f64 {
        let names: Vec<String> = (1..=OFFLINE_HOSTS)
            .map(|i| format!("'{}'", host_name(i)))
            .collect();
        let names = names.join(", ");
        // Their secrets stop matching (a byte in front of the stored hash): every poll is
        // refused, as a server that refuses their logins would.
        self.pg.psql(&format!(
            "UPDATE FleetHosts SET SecretHash = '\\x00'::bytea || SecretHash WHERE Host IN ({names})"
        ));
        // Long enough for their back-off to reach its cap.
        std::thread::sleep(Duration::from_secs(10));
        let out = ok(self.admin(&[
            "--json",
            "logout",
            "nobody-bench",
            "--hosts",
            "@bench",
            "--in",
            "1h",
        ]));
        let version = serde_json::from_str::<serde_json::Value>(&out).expect("json")["Version"]
            .as_i64()
            .expect("Version");
        std::thread::sleep(Duration::from_secs(3));
        let restored = self.pg.psql(&format!(
            "UPDATE FleetHosts SET SecretHash = substring(SecretHash FROM 2) WHERE Host IN ({names}); \
             SELECT extract(epoch FROM clock_timestamp())"
        ));
        let restored: f64 = restored.trim().parse().expect("epoch");
        let sql = format!(
            "SELECT count(*) FROM FleetHosts WHERE Host IN ({names}) AND ScheduleVersion >= {version}"
        );
        assert!(self
            .pg
            .wait_for(Duration::from_secs(60), &sql, &OFFLINE_HOSTS.to_string()));
        self.scalar(&format!(
            "SELECT extract(epoch FROM max(AppliedAt)) - {restored} FROM FleetHosts WHERE Host IN ({names})"
        ))
    }
}

fn main() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(fleet_ctl(
        dir.path(),
        &pg.superuser_url(),
        &["fleet", "init"],
    ));
    let admin_passfile = pg.create_login("bench_admin", "forcelogout_admin", dir.path());
    pg.psql(&format!(
        "CREATE ROLE {LINK_ROLE} LOGIN PASSWORD '{PASSWORD}' IN ROLE forcelogout_host"
    ));
    let host_passfile = dir.path().join("hosts.pgpass");
    std::fs::write(
        &host_passfile,
        format!("127.0.0.1:{}:fleet:{LINK_ROLE}:{PASSWORD}\n", pg.port),
    )
    .unwrap();
    std::fs::set_permissions(
        &host_passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let bench = Bench {
        admin_url: pg.tcp_url("bench_admin", &admin_passfile),
        pg,
        dir,
        host_passfile,
    };
    let mut hosts: Vec<BenchHost> = Vec::new();
    println!("fleet benchmark: real PostgreSQL 15, real daemons, {ROUNDS} logout rounds per size");
    let mut baseline = None;
    for n in SIZES {
        let started = Instant::now();
        while hosts.len() < n {
            hosts.push(bench.start_host(hosts.len() + 1));
        }
        let sql = "SELECT count(*) FROM FleetHosts WHERE LastContact IS NOT NULL";
        assert!(
            bench
                .pg
                .wait_for(Duration::from_secs(120), sql, &n.to_string()),
            "not every host connected"
        );
        println!(
            "\n{n} hosts (started in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let rounds: Vec<(f64, f64)> = (0..ROUNDS).map(|_| bench.logout_round(n)).collect();
        let medians: Vec<f64> = rounds.iter().map(|r| r.0).collect();
        let maxes: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        let worst = maxes.iter().copied().fold(0.0, f64::max);
        println!(
            "  logout: commit -> host's local commit: median {:.3} s, last host median {:.3} s, worst {:.3} s",
            median(medians.clone()),
            median(maxes.clone()),
            worst
        );
        let rate = bench.upload_rate(&hosts);
        println!("  events uploaded with every host writing: {rate:.0} /s");
        for args in [
            &["schedule", "list"][..],
            &["next", "--count", "10"][..],
            &["events", "--host", "bh001"][..],
            &["fleet", "hosts"][..],
        ] {
            let (t, local) = bench.time_against_local(args);
            println!(
                "  --fleet {:<22} {:>7.1} ms  ({:.1}x a local `schedule list`, {:.1} ms)",
                args.join(" "),
                t * 1000.0,
                t / local,
                local * 1000.0
            );
        }
        match baseline {
            None => baseline = Some(median(maxes)),
            Some(at50) => println!(
                "  last-host latency {:.2}x that of {} hosts",
                median(maxes) / at50,
                SIZES[0]
            ),
        }
    }
    let catch_up = bench.offline_catch_up();
    println!(
        "\n{OFFLINE_HOSTS} hosts offline during a logout: last one has it {catch_up:.2} s after it may log in again"
    );
    // Every daemon is stopped (Drop) before the server is.
    drop(hosts);
}
