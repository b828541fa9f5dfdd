//! A real `sshd` on 127.0.0.1 with forcelogout in its PAM stack, for a throwaway user that
//! exists only inside the server's private mount namespace (bind-mounted copies of passwd,
//! group and shadow; a private /etc/pam.d and /run). Nothing of the host changes.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::module_path;

pub const USER: &str = "fltest";
pub const UID: u32 = 4242;

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub port: u16,
    server: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Sshd {
    /// Starts sshd with `module_args` on the forcelogout lines of its PAM stack.
    pub fn start(module_args: &str) -> Sshd {
        Sshd::start_with(module_args, false)
    }

    /// The same, with `forcelogoutctl daemon` running inside the same namespace (where the
    /// test user exists), configured by `config()` with its socket in the test directory.
    pub fn start_with(module_args: &str, with_daemon: bool) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        // The user's home must be reachable by the user.
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = t.join("home");
        std::fs::create_dir_all(home.join(".ssh")).expect("home");
        std::fs::create_dir_all(t.join("state")).expect("state");
        std::fs::create_dir_all(t.join("pam.d")).expect("pam.d");
        let db = t.join("state/forcelogout.db");

        let add = |file: &str, line: String| {
            let mut text = std::fs::read_to_string(format!("/etc/{file}")).expect("read /etc file");
            text.push_str(&line);
            std::fs::write(t.join(file), text).expect("write copy");
        };
        add(
            "passwd",
            format!(
                "{USER}:x:{UID}:{UID}:forcelogout test:{}:/bin/sh\n",
                home.display()
            ),
        );
        add("group", format!("{USER}:x:{UID}:\n"));
        add("shadow", format!("{USER}:*:19000:0:99999:7:::\n"));

        let module = module_path();
        std::fs::write(
            t.join("pam.d/sshd"),
            format!(
                "auth required pam_permit.so\n\
                 account required {m} db={db} config={config} {module_args}\n\
                 account required pam_permit.so\n\
                 session required {m} db={db} config={config} {module_args}\n\
                 session required pam_permit.so\n",
                m = module.display(),
                db = db.display(),
                // The daemon's configuration: with the daemon up, sessions go through it.
                config = t.join("forcelogout.toml").display()
            ),
        )
        .expect("pam stack");

        for (key, kind) in [("hostkey", "ed25519"), ("client_key", "ed25519")] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(t.join(key)));
        }
        std::fs::copy(t.join("client_key.pub"), home.join(".ssh/authorized_keys"))
            .expect("authorized_keys");
        run(Command::new("chown")
            .args(["-R", &format!("{UID}:{UID}")])
            .arg(&home));

        let port = free_port();
        std::fs::write(
            t.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {t}/hostkey\nPidFile {t}/sshd.pid\n\
                 UsePAM yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAuthorizedKeysFile {t}/home/.ssh/authorized_keys\n\
                 StrictModes no\nPermitRootLogin no\nLogLevel VERBOSE\nPrintMotd no\n",
                t = t.display()
            ),
        )
        .expect("sshd_config");

        std::fs::write(
            t.join("forcelogout.toml"),
            format!("socket = \"{}/socket\"\n", t.display()),
        )
        .expect("config");
        let daemon = if with_daemon {
            format!(
                "FORCELOGOUT_CONFIG={t}/forcelogout.toml {ctl} --db {db} daemon 2>{t}/daemon.log & echo $! > {t}/daemon.pid; ",
                t = t.display(),
                ctl = crate::ctl_path().display(),
                db = db.display()
            )
        } else {
            String::new()
        };
        let setup = format!(
            "for f in passwd group shadow; do mount --bind {t}/$f /etc/$f; done; \
             mount --bind {t}/pam.d /etc/pam.d; \
             mount -t tmpfs tmpfs /run; mkdir -m 0755 /run/sshd; \
             {daemon}exec /usr/sbin/sshd -D -e -f {t}/sshd_config",
            t = t.display()
        );
        let server = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec", &setup])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(t.join("sshd.log")).expect("log"))
            .spawn()
            .expect("start sshd");
        let sshd = Sshd {
            dir,
            db,
            port,
            server,
        };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// An `ssh` client command for the test user; add the remote command.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-p", &self.port.to_string(), "-i"])
            .arg(self.dir.path().join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=INFO",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{USER}@127.0.0.1"));
        cmd
    }

    pub fn ssh_output(&self, remote: &str) -> Output {
        self.ssh()
            .arg(remote)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    }

    pub fn store(&self) -> &Path {
        &self.db
    }

    /// The configuration the namespaced daemon reads (its socket is reachable from outside).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("forcelogout.toml")
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("daemon.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
