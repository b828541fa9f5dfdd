//! A running `forcelogoutctl daemon` on a test store, with its own configuration and socket in
//! a directory every user may read (so unprivileged clients can reach the socket).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::ctl_path;

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

/// Polls `condition` every 20 ms for up to `limit`; whether it became true.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Starts a daemon on the store `db` with `extra` lines of configuration.
    pub fn start(db: &Path, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("socket");
        let config = dir.path().join("forcelogout.toml");
        std::fs::write(
            &config,
            format!("socket = \"{}\"\n{extra}\n", socket.display()),
        )
        .expect("config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut daemon = Daemon {
            dir,
            db: db.to_path_buf(),
            config,
            socket,
            child: None,
        };
        daemon.restart();
        daemon
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log");
        let child = Command::new(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .arg("daemon")
            .env("FORCELOGOUT_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon");
        self.child = Some(child);
        let socket = self.socket.clone();
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "the daemon did not start: {}",
            self.log()
        );
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `forcelogoutctl` as root on the daemon's store and configuration.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env("FORCELOGOUT_CONFIG", &self.config)
            .output()
            .expect("ctl")
    }

    /// `forcelogoutctl` as an unprivileged `user` (runuser), with the daemon's configuration.
    pub fn ctl_as(&self, user: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(ctl_path())
            .args(args)
            .env("FORCELOGOUT_CONFIG", &self.config)
            .env("FORCELOGOUT_DB", &self.db)
            .output()
            .expect("runuser")
    }
}

impl Daemon {
    /// One request through the control socket as this process's user (`argv` and, for
    /// `apply`, the file's `input`), the way `forcelogoutctl` sends it: the reply, and how
    /// long it took.
    pub fn ask(&self, argv: &[&str], input: Option<&str>) -> (serde_json::Value, Duration) {
        use std::io::{BufRead, Write};
        let since = Instant::now();
        let mut request = serde_json::json!({ "argv": argv });
        if let Some(input) = input {
            request["input"] = input.into();
        }
        let stream = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        (&stream)
            .write_all(format!("{request}\n").as_bytes())
            .expect("request");
        let mut line = String::new();
        if let Err(e) = std::io::BufReader::new(&stream).read_line(&mut line) {
            panic!("{argv:?}: no reply after {:?}: {e}", since.elapsed());
        }
        let reply = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        (reply, since.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
