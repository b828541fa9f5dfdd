//! A real PostgreSQL 15 server for fleet tests: Debian's binaries, a cluster `initdb`'d into
//! a temporary directory as the unprivileged `postgres` user (the server refuses root), a
//! private socket directory, 127.0.0.1 on a free port. Dropping it stops the server (bounded,
//! SIGKILL as the last resort). Local socket logins are `trust` (the test is the superuser);
//! TCP logins need a password (`scram-sha-256`), which hosts read from a 0600 passfile.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::daemon::wait_until;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged user the server runs as.
pub const SERVER_USER: &str = "postgres";
/// The database the fleet tests use.
pub const DATABASE: &str = "fleet";

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket_dir: PathBuf,
    data: PathBuf,
    /// A data directory this server was restored from (see `pg_cluster`), kept while it runs.
    restored: Option<tempfile::TempDir>,
}

/// Why the fixture cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("needs root (to run the server as the postgres user)".into());
    }
    if !Path::new(BIN).join("initdb").exists() {
        return Some(format!(
            "{BIN}/initdb is missing (scripts/setup.sh installs postgresql-15)"
        ));
    }
    if nix_user_missing(SERVER_USER) {
        return Some("there is no postgres user (postgresql-15 creates it)".into());
    }
    None
}

fn nix_user_missing(name: &str) -> bool {
    !Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn as_server_user(program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", "runuser", "-u", SERVER_USER, "--"])
        .arg(Path::new(BIN).join(program));
    cmd
}

pub(crate) fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// Initialises and starts a cluster with a `fleet` database.
    pub fn start() -> Postgres {
        Postgres::start_with("")
    }

    /// As `start`, with `settings` (postgresql.conf lines, e.g. "max_connections = 100")
    /// after the fixture's own, so that they win.
    pub fn start_with(settings: &str) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("fl-pg")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).expect("mkdir");
            let status = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(d)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        check(
            as_server_user("initdb")
                .args(["-D"])
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output()
                .expect("initdb"),
            "initdb",
        );
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 400\nshared_buffers = 32MB\nfsync = on\nlog_min_messages = warning\n\
             track_commit_timestamp = on\n{settings}\n",
            socket_dir.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("postgresql.conf");
        let mut pg = Postgres::adopt(dir, port, socket_dir, data);
        pg.start_on_a_free_port();
        pg.psql_on("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// A server whose data directory `data` is ready to start on `port`; not started yet.
    pub(crate) fn adopt(
        dir: tempfile::TempDir,
        port: u16,
        socket_dir: PathBuf,
        data: PathBuf,
    ) -> Postgres {
        Postgres {
            dir,
            port,
            socket_dir,
            data,
            restored: None,
        }
    }

    /// The cluster's data directory (owned by the server user).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Runs the server from `data` (kept in `keep`) instead: the caller has stopped it.
    pub(crate) fn switch_data(&mut self, data: PathBuf, keep: tempfile::TempDir) {
        self.data = data;
        self.restored = Some(keep);
    }

    /// The postmaster's pid, while its pid file is there.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub(crate) fn start_server(&self) {
        if let Err(why) = self.try_start_server() {
            panic!("{why}");
        }
    }

    /// Starts the server; on failure, what pg_ctl said and the end of the server's log (the
    /// data directory goes with the fixture, so the log is read now or never).
    fn try_start_server(&self) -> Result<(), String> {
        let log = self.data.join("server.log");
        let out = as_server_user("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl start");
        if out.status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        Err(format!(
            "pg_ctl start: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// Starts a new cluster's server, on another free port while the one chosen was taken
    /// between `free_port` and the server's bind (tests start servers in parallel).
    pub(crate) fn start_on_a_free_port(&mut self) {
        for _ in 0..5 {
            match self.try_start_server() {
                Ok(()) => return,
                Err(why) if why.contains("Address already in use") => {
                    self.port = free_port();
                    self.add_setting(&format!("port = {}", self.port));
                }
                Err(why) => panic!("{why}"),
            }
        }
        self.start_server();
    }

    /// Turns TLS on with a new CA and a server certificate for the name `localhost` (not for
    /// the address 127.0.0.1), and lets TCP logins in only over TLS (`hostssl`); returns the
    /// CA certificate's path. Restarts the server.
    pub fn enable_tls(&self) -> PathBuf {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir(&dir).expect("mkdir tls");
        let ca = TestCa::new(&dir, "forcelogout test CA");
        let (cert, key) = ca.issue("server", "localhost", "DNS:localhost");
        self.install_certificate(&cert, &key);
        self.write_hba(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        );
        self.stop();
        self.start_server();
        ca.cert
    }

    /// Serves TLS with `cert` and `key` (PEM files, copied into the cluster). Restarts the
    /// server.
    pub fn use_certificate(&self, cert: &Path, key: &Path) {
        self.install_certificate(cert, key);
        self.stop();
        self.start_server();
    }

    /// Replaces pg_hba.conf with `lines`. Restarts the server (a reload would apply them at
    /// a moment the test cannot see).
    pub fn set_hba(&self, lines: &str) {
        self.write_hba(lines);
        self.stop();
        self.start_server();
    }

    /// Appends `line` to postgresql.conf; it applies at the next restart.
    pub fn add_setting(&self, line: &str) {
        let conf_path = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(line);
        text.push('\n');
        std::fs::write(&conf_path, text).expect("postgresql.conf");
    }

    fn install_certificate(&self, cert: &Path, key: &Path) {
        for (from, file) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data.join(file);
            std::fs::copy(from, &to).expect("copy");
            let status = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(&to)
                .status()
                .expect("chown");
            assert!(status.success());
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let conf = std::fs::read_to_string(self.data.join("postgresql.conf")).expect("conf");
        if !conf.contains("\nssl = on\n") {
            self.add_setting("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'");
        }
    }

    fn write_hba(&self, lines: &str) {
        std::fs::write(self.data.join("pg_hba.conf"), lines).expect("pg_hba.conf");
    }

    /// Stops the server (fast: sessions are cut, as in an outage).
    pub fn stop(&self) {
        let _ = as_server_user("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }

    /// Starts it again on the same port, after `stop`.
    pub fn restart(&self) {
        self.start_server();
    }

    /// A libpq URL for `role` over TCP with its password in `passfile`.
    pub fn tcp_url(&self, role: &str, passfile: &Path) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={DATABASE} user={role} passfile={} sslmode=disable connect_timeout=5",
            self.port,
            passfile.display()
        )
    }

    /// The superuser's URL over the private socket (trust).
    pub fn superuser_url(&self) -> String {
        format!(
            "host={} port={} dbname={DATABASE} user=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Runs `sql` as the superuser on the fleet database; panics on failure; `-At` output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on(DATABASE, sql)
    }

    fn psql_on(&self, database: &str, sql: &str) -> String {
        check(
            Command::new("timeout")
                .args(["-s", "KILL", "60"])
                .arg(Path::new(BIN).join("psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-c",
                    sql,
                ])
                .output()
                .expect("psql"),
            sql,
        )
    }

    /// Runs `sql` as the login `role` over TCP (its password from `passfile`), as a host or
    /// an administrator would; the whole output, for the caller to check success or refusal.
    pub fn psql_as(&self, role: &str, passfile: &Path, sql: &str) -> Output {
        Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .arg(Path::new(BIN).join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(self.tcp_url(role, passfile))
            .args(["-c", sql])
            .env("PGPASSFILE", passfile)
            .output()
            .expect("psql")
    }

    /// A login role that is a member of `group`, with a password in a new 0600 passfile in
    /// `dir`; returns the passfile.
    pub fn create_login(&self, role: &str, group: &str, dir: &Path) -> PathBuf {
        let password = format!("pw-{role}-{}", self.port);
        self.psql(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' IN ROLE {group}"
        ));
        let passfile = dir.join(format!("{role}.pgpass"));
        std::fs::write(
            &passfile,
            // Any port: the same login through a pooler or a standby.
            format!("127.0.0.1:*:{DATABASE}:{role}:{password}\n"),
        )
        .expect("passfile");
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))
            .expect("chmod passfile");
        passfile
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    /// Whether the server accepts connections.
    pub fn is_ready(&self) -> bool {
        Command::new(Path::new(BIN).join("pg_isready"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs `sql` as the superuser; `None` when it fails (the server is down, say).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .arg(Path::new(BIN).join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                DATABASE,
                "-c",
                sql,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits (bounded) until `sql` returns `expected` (trimmed).
    pub fn wait_for(&self, limit: Duration, sql: &str, expected: &str) -> bool {
        wait_until(limit, || {
            self.try_psql(sql).is_some_and(|out| out.trim() == expected)
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_server_user("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
        // If pg_ctl could not stop it, the postmaster's pid is in its pid file.
        if let Ok(text) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
            if let Some(pid) = text.lines().next() {
                let _ = Command::new("kill")
                    .args(["-9", pid.trim()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A certificate authority made with the openssl CLI, for TLS tests: its certificate, and
/// server certificates it signs.
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    check(
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl"),
        "openssl",
    );
}

impl TestCa {
    /// A new self-signed CA named `name`, its files in `dir` (which must exist).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let stem = name.replace(' ', "-");
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                key.to_str().expect("utf-8"),
                "-out",
                cert.to_str().expect("utf-8"),
            ],
        );
        TestCa {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate signed by this CA with common name `cn` and subjectAltName `san`
    /// (e.g. "IP:127.0.0.1" or "DNS:localhost"): (certificate, key), named after `stem`.
    pub fn issue(&self, stem: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
        let path = |ext: &str| self.dir.join(format!("{stem}.{ext}"));
        let text = |p: &PathBuf| p.to_str().expect("utf-8").to_string();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &text(&path("key")),
                "-out",
                &text(&path("csr")),
            ],
        );
        std::fs::write(path("ext"), format!("subjectAltName = {san}\n")).expect("ext");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &text(&path("csr")),
                "-CA",
                &text(&self.cert),
                "-CAkey",
                &text(&self.key),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &text(&path("ext")),
                "-out",
                &text(&path("crt")),
            ],
        );
        (path("crt"), path("key"))
    }
}
