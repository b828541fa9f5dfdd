//! Fixtures around `Postgres` for the fleet at scale and through failures: pgbouncer in front
//! of it (Debian's /usr/sbin/pgbouncer, run as the postgres user), a streaming standby that
//! can be promoted after the primary is killed, and a copy restored from an earlier backup on
//! the primary's port. Every process started here is stopped when its value is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::wait_until;
use crate::postgres::{as_server_user, check, free_port, Postgres, BIN, DATABASE, SERVER_USER};

pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// Server connections allowed beyond one full pool: room for `auth_query`'s own pool, which
/// a burst of new clients would otherwise grow to a pool's size.
pub const AUTH_CONNECTIONS: u32 = 4;

/// Why pgbouncer cannot run here, if it cannot (the server's own reasons included).
pub fn pgbouncer_unavailable() -> Option<String> {
    if let Some(why) = crate::postgres::unavailable() {
        return Some(why);
    }
    (!Path::new(PGBOUNCER).exists())
        .then(|| format!("{PGBOUNCER} is missing (scripts/setup.sh installs pgbouncer)"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// A pgbouncer in front of one `Postgres`'s `fleet` database, on 127.0.0.1 and a free port.
///
/// Clients log in over TCP with SCRAM and their PostgreSQL password (pgbouncer looks it up
/// with `auth_query` as the superuser), so any login role made with `Postgres::create_login`
/// works, its passfile included; pgbouncer reaches the server over its private socket
/// (trust). The admin console (`SHOW POOLS`, `SHOW STATS`) is the superuser's, over
/// pgbouncer's own socket.
pub struct Pgbouncer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

/// One pool's line of `SHOW POOLS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub cl_active: u64,
    pub cl_waiting: u64,
    pub sv_active: u64,
    pub sv_idle: u64,
    pub sv_used: u64,
}

impl PoolCounts {
    /// Server connections the pool holds open.
    pub fn server_connections(&self) -> u64 {
        self.sv_active + self.sv_idle + self.sv_used
    }
}

impl Pgbouncer {
    /// Starts pgbouncer with `default_pool_size` server connections per pool, at most
    /// `AUTH_CONNECTIONS` more for the database in all, and room for `max_client_conn`
    /// clients (its open-file limit raised to match).
    pub fn start(
        pg: &Postgres,
        mode: PoolMode,
        default_pool_size: u32,
        max_client_conn: u32,
    ) -> Pgbouncer {
        let dir = tempfile::Builder::new()
            .prefix("fl-pgb")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).expect("mkdir");
        let d = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "[databases]\n{DATABASE} = host={} port={} dbname={DATABASE}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {}\n\
             auth_type = hba\nauth_hba_file = {}\nauth_file = {}\nauth_user = {SERVER_USER}\n\
             admin_users = {SERVER_USER}\nstats_users = {SERVER_USER}\n\
             pool_mode = {}\ndefault_pool_size = {default_pool_size}\n\
             max_db_connections = {}\nmax_client_conn = {max_client_conn}\n\
             server_login_retry = 1\nlogfile = {}\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            pg.socket_dir.display(),
            pg.port,
            socket_dir.display(),
            d("hba.conf"),
            d("userlist.txt"),
            mode.as_str(),
            default_pool_size + AUTH_CONNECTIONS,
            d("pgbouncer.log"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).expect("config");
        std::fs::write(
            dir.path().join("hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("hba");
        // The superuser needs no password: the console is local (trust), and so is the server.
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{SERVER_USER}\" \"\"\n"),
        )
        .expect("userlist");
        chown_server_user(dir.path());
        let files = max_client_conn + 2 * default_pool_size + 100;
        let child = Command::new("prlimit")
            .arg(format!("--nofile={files}:{files}"))
            .args(["setpriv", "--reuid", SERVER_USER, "--regid", SERVER_USER])
            .args(["--init-groups", "--", PGBOUNCER])
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer");
        let mut bouncer = Pgbouncer { dir, port, child };
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let running = matches!(bouncer.child.try_wait(), Ok(None));
        assert!(up && running, "pgbouncer did not start: {}", bouncer.log());
        bouncer
    }

    /// A libpq URL for `role` through the pooler, its password in `passfile`.
    pub fn url(&self, role: &str, passfile: &Path) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={DATABASE} user={role} passfile={} sslmode=disable connect_timeout=5",
            self.port,
            passfile.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Runs `command` on the admin console: one map of column name to value per row.
    pub fn admin(&self, command: &str) -> Vec<HashMap<String, String>> {
        let text = check(
            Command::new("timeout")
                .args(["-s", "KILL", "60"])
                .arg(Path::new(BIN).join("psql"))
                .args(["-X", "-A", "-q", "-P", "footer=off", "-h"])
                .arg(self.dir.path().join("sock"))
                .args(["-p", &self.port.to_string(), "-U", SERVER_USER, "pgbouncer"])
                .args(["-c", command])
                .output()
                .expect("psql"),
            command,
        );
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
        lines
            .map(|line| {
                let values = line.split('|').map(str::to_string);
                header.iter().map(|h| h.to_string()).zip(values).collect()
            })
            .collect()
    }

    /// `SHOW POOLS` for the `fleet` database, summed over its users' pools (`auth_query`'s
    /// included).
    pub fn pools(&self) -> PoolCounts {
        self.pool_counts(None)
    }

    /// `SHOW POOLS` for the `fleet` database's pool of `user`.
    pub fn pool(&self, user: &str) -> PoolCounts {
        self.pool_counts(Some(user))
    }

    /// The columns differ between pgbouncer versions, so they are found by name.
    fn pool_counts(&self, user: Option<&str>) -> PoolCounts {
        let mut counts = PoolCounts::default();
        for pool in self.admin("SHOW POOLS") {
            let field = |name: &str| pool.get(name).map(String::as_str);
            if field("database") != Some(DATABASE) || user.is_some_and(|u| field("user") != Some(u))
            {
                continue;
            }
            let n = |name: &str| {
                pool.get(name)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            counts.cl_active += n("cl_active");
            counts.cl_waiting += n("cl_waiting");
            counts.sv_active += n("sv_active");
            counts.sv_idle += n("sv_idle");
            counts.sv_used += n("sv_used");
        }
        counts
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // SIGTERM: immediate shutdown; SIGKILL if it is still there after 10 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chown_server_user(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{SERVER_USER}:"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

/// A base backup of a running server (`pg_basebackup`), to start later in its place.
pub struct Backup {
    dir: tempfile::TempDir,
    data: PathBuf,
}

/// A new temporary directory for a cluster: (the directory, its empty `data` and `sock`,
/// both the server user's).
fn cluster_dir(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("data");
    let socket_dir = dir.path().join("sock");
    for d in [&data, &socket_dir] {
        std::fs::create_dir(d).expect("mkdir");
        chown_server_user(d);
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    (dir, data, socket_dir)
}

/// `pg_basebackup` of `source` into `data`, streaming the WAL it needs; with `-R` when the
/// copy is to follow `source` as a standby.
fn base_backup(source: &Postgres, data: &Path, standby: bool) {
    let mut cmd = as_server_user("pg_basebackup");
    cmd.arg("-D")
        .arg(data)
        .args(["-X", "stream", "-c", "fast", "--no-sync", "-h"])
        .arg(&source.socket_dir)
        .args(["-p", &source.port.to_string(), "-U", SERVER_USER]);
    if standby {
        cmd.arg("-R");
    }
    check(cmd.output().expect("pg_basebackup"), "pg_basebackup");
}

impl Postgres {
    /// A streaming standby of `primary` (asynchronous, hot: it answers reads), on a free port
    /// and its own socket directory, started.
    pub fn standby_of(primary: &Postgres) -> Postgres {
        let (dir, data, socket_dir) = cluster_dir("fl-pgs");
        base_backup(primary, &data, true);
        let port = free_port();
        let mut standby = Postgres::adopt(dir, port, socket_dir, data);
        standby.add_setting(&format!(
            "port = {port}\nunix_socket_directories = '{}'",
            standby.socket_dir.display()
        ));
        standby.start_on_a_free_port();
        standby
    }

    /// Makes a standby the primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        check(
            as_server_user("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "promote"])
                .output()
                .expect("pg_ctl promote"),
            "pg_ctl promote",
        );
    }

    /// Kills the server as a crash would: SIGKILL to the postmaster and every process it
    /// started, no shutdown checkpoint, connections cut without a word.
    pub fn kill_hard(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let mut victims = vec![pid];
        victims.extend(children_of(pid));
        for victim in &victims {
            let _ = Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let gone = wait_until(Duration::from_secs(30), || {
            victims.iter().all(|p| !is_running(*p))
        });
        assert!(gone, "the server's processes outlived SIGKILL");
    }

    /// A base backup of this server as it is now.
    pub fn backup(&self) -> Backup {
        let (dir, data, _) = cluster_dir("fl-pgb");
        base_backup(self, &data, false);
        Backup { dir, data }
    }

    /// Stops this server and starts `backup` in its place, on the same port and socket: a
    /// failover to a server restored from an earlier backup. Whatever was committed after
    /// the backup is gone.
    pub fn restore(&mut self, backup: Backup) {
        self.stop();
        self.switch_data(backup.data, backup.dir);
        self.start_server();
    }
}

/// Whether `pid` runs (a zombie does not).
pub fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|fields| fields[0] != "Z")
}

/// The fields of /proc/PID/stat after the command name (the state is the first).
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            proc_stat(*p).is_some_and(|f| f.get(1).and_then(|s| s.parse().ok()) == Some(pid))
        })
        .collect()
}

/// CPU time in clock ticks (USER_HZ) used by `pid` and, through their parents' counts, the
/// children it has waited for: utime + stime + cutime + cstime.
pub fn cpu_ticks(pid: u32) -> u64 {
    // After the state: ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime, so utime is the 12th field from here (index 11).
    proc_stat(pid).map_or(0, |f| {
        f[11..15]
            .iter()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum()
    })
}

/// CPU ticks of `pid` and of its live children: a server's whole CPU, reaped backends
/// included. The difference of two readings is the CPU used between them.
pub fn tree_cpu_ticks(pid: u32) -> u64 {
    cpu_ticks(pid) + children_of(pid).into_iter().map(cpu_ticks).sum::<u64>()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
