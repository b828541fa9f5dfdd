//! Fixtures for cross-component tests: private PAM stacks run through the real libpam by the
//! `fl-pam-harness` binary, a real sshd (`sshd`), the built artefacts, and reading the store.

pub mod daemon;
pub mod desktop;
pub mod pg_cluster;
pub mod postgres;
pub mod sshd;
pub mod systemd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The directory with the build's artefacts (`target/debug` or `target/release`), found once
/// per test process from the running test binary (`target/debug/deps/…`).
pub fn artefact_dir() -> PathBuf {
    static DIR: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("deps dir");
        deps.parent().expect("target dir").to_path_buf()
    });
    DIR.clone()
}

/// The workspace's top directory (packaging scripts, units, the built packages).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built artefact; a clear failure when the workspace was not built first.
pub fn artefact(name: &str) -> PathBuf {
    let path = artefact_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn module_path() -> PathBuf {
    artefact("libpam_forcelogout.so")
}

pub fn ctl_path() -> PathBuf {
    artefact("forcelogoutctl")
}

/// `forcelogoutctl --fleet URL ARGS` with no configuration file and its scratch store in
/// `dir`, as an administrator runs it against the central database; killed if it runs for
/// more than two minutes.
pub fn fleet_ctl(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["-s", "KILL", "120"])
        .arg(ctl_path())
        .arg("--db")
        .arg(dir.join("unused.db"))
        .args(["--fleet", url])
        .args(args)
        .env("FORCELOGOUT_CONFIG", dir.join("none.toml"))
        .output()
        .expect("forcelogoutctl")
}

/// The daemon, which `forcelogoutctl daemon` runs (from beside itself, or the packaged path).
pub fn daemon_path() -> PathBuf {
    artefact("forcelogoutd")
}

pub fn harness_path() -> PathBuf {
    artefact("fl-pam-harness")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A private PAM configuration directory with one service, `fltest`, and a store beside it.
pub struct PamStack {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

pub const SERVICE: &str = "fltest";

impl PamStack {
    /// `lines` are the service file's lines; `{module}` and `{db}` are replaced by the built
    /// module's path and the store's.
    pub fn new(lines: &[&str]) -> PamStack {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("pam.d")).expect("pam.d");
        std::fs::create_dir(dir.path().join("state")).expect("state");
        let db = dir.path().join("state/forcelogout.db");
        let stack = PamStack { dir, db };
        stack.write_service(lines);
        stack
    }

    /// The usual stack: our module, then pam_permit, in account and session, with `args`.
    pub fn standard(args: &str) -> PamStack {
        PamStack::new(&[
            &format!("account required {{module}} db={{db}} {args}"),
            "account required pam_permit.so",
            &format!("session required {{module}} db={{db}} {args}"),
            "session required pam_permit.so",
        ])
    }

    pub fn write_service(&self, lines: &[&str]) {
        let module = module_path();
        let text: String = lines
            .iter()
            .map(|l| {
                l.replace("{module}", &module.to_string_lossy())
                    .replace("{db}", &self.db.to_string_lossy())
                    + "\n"
            })
            .collect();
        std::fs::write(self.confdir().join(SERVICE), text).expect("service file");
    }

    pub fn confdir(&self) -> PathBuf {
        self.dir.path().join("pam.d")
    }

    /// The harness as a login program runs: the leader of a process session of its own (as
    /// sshd's child for each connection is), so that a kick, which also ends the processes of
    /// the login's process session that run as its user, reaches no other test's processes.
    /// setsid(1) execs in place: the child's pid is the harness's.
    pub fn harness(&self, user: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg(harness_path())
            .arg("--confdir")
            .arg(self.confdir())
            .args(["--service", SERVICE, "--user", user])
            .args(extra);
        cmd
    }

    /// Runs the steps in one PAM transaction and returns what happened.
    pub fn run(&self, user: &str, args: &[&str]) -> Transcript {
        transcript_of(self.harness(user, args))
    }

    /// `run` in a private mount namespace after `setup` (see `with_private_mounts`).
    pub fn run_with_mounts(&self, setup: &str, user: &str, args: &[&str]) -> Transcript {
        let confdir = self.confdir().display().to_string();
        let mut all = vec!["--confdir", &confdir, "--service", SERVICE, "--user", user];
        all.extend_from_slice(args);
        transcript_of(with_private_mounts(setup, &harness_path(), &all))
    }

    /// Starts the steps in a process of its own, to be driven step by step.
    pub fn spawn(&self, user: &str, args: &[&str]) -> Session {
        Session::start(self.harness(user, args))
    }

    /// Runs `forcelogoutctl --db <this store>` with `args`, whatever its outcome.
    pub fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .output()
            .expect("ctl")
    }

    /// Runs `forcelogoutctl --db <this store>` with `args`; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `(GroupName, Event)` of every event, in ReplayId order.
    pub fn events(&self) -> Vec<(String, String)> {
        self.query("SELECT GroupName, Event FROM LogoutEvents ORDER BY ReplayId")
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect()
    }

    /// Rows of `sql` as text (NULL as "NULL").
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        query(&self.db, sql)
    }
}

/// Runs a harness command to its end; panics unless it succeeds.
fn transcript_of(mut cmd: Command) -> Transcript {
    let out = cmd.output().expect("harness");
    assert!(
        out.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Transcript::parse(&String::from_utf8_lossy(&out.stdout))
}

pub fn query(db: &Path, sql: &str) -> Vec<Vec<String>> {
    try_query(db, sql).unwrap_or_else(|e| panic!("{}: {sql}: {e}", db.display()))
}

/// `query`, or why it could not run: for waits that may begin before the store or its tables
/// exist. Never creates the file (a test must not race the product to create its store).
pub fn try_query(db: &Path, sql: &str) -> rusqlite::Result<Vec<Vec<String>>> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |row| {
        (0..n)
            .map(|i| {
                row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => "NULL".to_string(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(b) => format!("{b:?}"),
                })
            })
            .collect()
    })?;
    rows.collect()
}

/// What a harness run printed.
#[derive(Debug, Default)]
pub struct Transcript {
    /// (step, return code, milliseconds)
    pub steps: Vec<(String, i32, u64)>,
    /// (info|error, text)
    pub messages: Vec<(String, String)>,
    /// Microseconds of each `bench:` pair, and its two return codes.
    pub pairs: Vec<(u64, i32, i32)>,
    /// Each `login:` step's whole logins.
    pub logins: Vec<Login>,
    /// Microseconds of the process's first `pam_start`, which loaded the stack's modules.
    pub loaded_us: Option<u64>,
}

/// One whole login of a `login:` step: microseconds in all and per call, and the calls'
/// return codes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Login {
    pub us: u64,
    pub acct_us: u64,
    pub open_us: u64,
    pub close_us: u64,
    pub rc: [i32; 3],
}

impl Transcript {
    pub fn parse(text: &str) -> Transcript {
        let mut t = Transcript::default();
        for line in text.lines() {
            t.add(line);
        }
        t
    }

    fn add(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("conv ") {
            let (kind, json) = rest.split_once(' ').unwrap_or((rest, "\"\""));
            let text: String = serde_json::from_str(json).unwrap_or_default();
            self.messages.push((kind.to_string(), text));
        } else if let Some(rest) = line.strip_prefix("step ") {
            let mut parts = rest.split(' ');
            let step = parts.next().unwrap_or_default().to_string();
            let field = |p: Option<&str>, key: &str| -> i64 {
                p.and_then(|f| f.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1)
            };
            let rc = field(parts.next(), "rc=") as i32;
            let ms = field(parts.next(), "ms=") as u64;
            self.steps.push((step, rc, ms));
        } else if let Some(us) = line.strip_prefix("loaded us=") {
            self.loaded_us = us.parse().ok();
        } else if let Some(rest) = line.strip_prefix("login ") {
            let mut login = Login::default();
            for (key, value) in rest.split(' ').filter_map(|f| f.split_once('=')) {
                let n = || value.parse().unwrap_or(0);
                match key {
                    "us" => login.us = n(),
                    "acct" => login.acct_us = n(),
                    "open" => login.open_us = n(),
                    "close" => login.close_us = n(),
                    "rc" => {
                        for (slot, rc) in login.rc.iter_mut().zip(value.split(',')) {
                            *slot = rc.parse().unwrap_or(-1);
                        }
                    }
                    _ => {}
                }
            }
            self.logins.push(login);
        } else if let Some(rest) = line.strip_prefix("pair ") {
            let fields: Vec<i64> = rest
                .split(' ')
                .filter_map(|f| f.split_once('=').and_then(|(_, v)| v.parse().ok()))
                .collect();
            if let [us, open, close] = fields[..] {
                self.pairs.push((us as u64, open as i32, close as i32));
            }
        }
    }

    /// The return code of the first step named `name`.
    pub fn rc(&self, name: &str) -> i32 {
        self.steps
            .iter()
            .find(|(s, _, _)| s == name)
            .unwrap_or_else(|| panic!("no step {name} in {self:?}"))
            .1
    }

    pub fn ms(&self, name: &str) -> u64 {
        self.steps
            .iter()
            .find(|(s, _, _)| s == name)
            .map(|s| s.2)
            .unwrap_or(u64::MAX)
    }

    pub fn texts(&self, kind: &str) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

/// A harness process driven step by step: each `wait` step continues on `proceed()`.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub transcript: Transcript,
}

impl Session {
    fn start(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn harness");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            child,
            stdin,
            stdout,
            transcript: Transcript::default(),
        }
    }

    /// Reads output until the step `name` has reported; returns its return code.
    pub fn until(&mut self, name: &str) -> i32 {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read harness");
            assert!(
                n > 0,
                "harness ended before step {name}: {:?}",
                self.transcript
            );
            self.transcript.add(line.trim_end());
            if let Some((step, rc, _)) = self.transcript.steps.last() {
                if step == name && line.starts_with("step ") {
                    return *rc;
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets a `wait` step go on if the process still runs (it may have been logged out).
    pub fn proceed_if_alive(&mut self) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(b"\n").and_then(|()| stdin.flush()).is_ok(),
            None => false,
        }
    }

    /// Lets a `wait` step go on.
    pub fn proceed(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write harness");
        stdin.flush().expect("flush harness");
    }

    pub fn finish(mut self) -> Transcript {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        for line in rest.lines() {
            self.transcript.add(line);
        }
        let status = self.child.wait().expect("wait harness");
        assert!(status.success(), "harness exited with {status}");
        self.transcript
    }
}

/// The system users the tests log in as: they exist on every Debian system, need no setup and
/// are left unchanged (the module only reads NSS).
pub const USERS: [&str; 8] = ["daemon", "bin", "sys", "games", "man", "lp", "mail", "news"];

/// `HH:MM` of now plus `minutes`, in UTC, for schedules relative to the test's own clock.
pub fn utc_hhmm(minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = now + minutes * 60;
    let day_seconds = t.rem_euclid(86_400);
    format!("{:02}:{:02}", day_seconds / 3600, (day_seconds % 3600) / 60)
}

/// A command run in a private mount namespace after `setup` (shell commands, e.g. bind
/// mounts): whatever it mounts vanishes with the process, and the host is never changed.
pub fn with_private_mounts(setup: &str, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg(format!("{setup}\nexec \"$@\""))
        .arg("sh")
        .arg(program)
        .args(args);
    cmd
}

/// A syslog receiver: a datagram socket that a namespaced `/dev/log` is bound to.
pub struct SyslogSink {
    pub socket: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SyslogSink {
    pub fn new() -> SyslogSink {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind syslog socket");
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        SyslogSink {
            socket,
            path,
            _dir: dir,
        }
    }

    /// Shell lines that put this socket at `/dev/log` (a private tmpfs `/dev` with `null`).
    pub fn mount_setup(&self) -> String {
        format!(
            "d=$(mktemp -d); touch $d/null; mount --bind /dev/null $d/null; \
             mount -t tmpfs tmpfs /dev; touch /dev/null /dev/log; \
             mount --bind $d/null /dev/null; mount --bind '{}' /dev/log",
            self.path.display()
        )
    }

    /// Every datagram received so far.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

impl Default for SyslogSink {
    fn default() -> Self {
        SyslogSink::new()
    }
}

/// The built SQLite extension, as `.load` takes it (no `.so`): `sql_ext` is its own cargo
/// workspace (SPEC §1), built beside this one in the same profile.
pub fn extension_load_path() -> PathBuf {
    let profile = artefact_dir()
        .file_name()
        .map(|p| p.to_os_string())
        .unwrap_or_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sql_ext/target")
        .join(profile);
    let so = dir.join("libforcelogout.so");
    assert!(
        so.exists(),
        "{} is missing: build it with `cargo build --manifest-path sql_ext/Cargo.toml` (scripts/test.sh does)",
        so.display()
    );
    dir.join("libforcelogout")
}

/// Runs the real `sqlite3` shell on `script` (stdin), with the extension loaded first and
/// `FORCELOGOUT_DB` set to `db`. Returns (stdout, stderr, exit status).
pub fn sqlite3(db: Option<&Path>, script: &str) -> (String, String, std::process::ExitStatus) {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-batch").arg(":memory:");
    match db {
        Some(db) => cmd.env("FORCELOGOUT_DB", db),
        None => cmd.env_remove("FORCELOGOUT_DB"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    let full = format!(".load {}\n{script}\n", extension_load_path().display());
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(full.as_bytes());
    });
    let out = child.wait_with_output().expect("sqlite3 output");
    let _ = writer.join();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status,
    )
}

/// A small deterministic generator (xorshift64) so generated tests are the same every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
