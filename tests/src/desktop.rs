//! A desktop for a throwaway user that exists only inside a private mount namespace: copies
//! of passwd and group with the user added, a private tmpfs on /run/user (the user's runtime
//! directory with their session bus) and on /tmp (X's sockets and locks), the user's own
//! `dbus-daemon --session` at `/run/user/UID/bus`, and, when asked, `Xvfb` with the `dunst`
//! notification server, or a server that owns the name and never answers. The
//! forcelogout daemon and the PAM sessions run in the same namespace (through `nsenter`),
//! so they see the user and the bus; nothing of the host changes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use crate::daemon::wait_until;
use crate::{ctl_path, harness_path, module_path};

pub const USER: &str = "fldesk";
pub const UID: u32 = 4343;

pub struct Desktop {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    /// `:N` once Xvfb runs.
    pub display: Option<String>,
    holder: Child,
    /// The user's processes (bus, X, notification server) and the daemon, ended on drop.
    children: Vec<Child>,
    daemon_pid: Option<u32>,
}

/// The shell lines that mount the namespace's private tmpfs on /tmp. A build under /tmp (a
/// clone there) would vanish under it, so its artefact directory is moved aside through
/// `aside` (a directory outside /tmp) first, and put back at the same path inside.
fn private_tmp_keeping(artefacts: &Path, aside: &Path) -> String {
    let tmpfs = "mount -t tmpfs -o mode=1777 tmpfs /tmp";
    if !artefacts.starts_with("/tmp") {
        return tmpfs.to_string();
    }
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let (artefacts, aside) = (quote(artefacts), quote(aside));
    format!(
        "mkdir -p {aside}\nmount --bind {artefacts} {aside}\n{tmpfs}\n\
         mkdir -p {artefacts}\nmount --move {aside} {artefacts}"
    )
}

fn bus_path() -> String {
    format!("/run/user/{UID}/bus")
}

impl Desktop {
    /// The namespace, the user and their session bus (no notification server yet).
    pub fn start() -> Desktop {
        // Not under /tmp: the namespace puts a private tmpfs there.
        let dir = tempfile::Builder::new()
            .prefix("fl-desktop")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let t = dir.path();
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = t.join("home");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(t.join("state")).expect("state");
        std::fs::create_dir_all(t.join("pam.d")).expect("pam.d");
        for (file, line) in [
            (
                "passwd",
                format!(
                    "{USER}:x:{UID}:{UID}:forcelogout desktop test:{}:/bin/sh\n",
                    home.display()
                ),
            ),
            ("group", format!("{USER}:x:{UID}:\n")),
        ] {
            let mut text = std::fs::read_to_string(format!("/etc/{file}")).expect("read /etc");
            text.push_str(&line);
            std::fs::write(t.join(file), text).expect("write copy");
        }
        std::os::unix::fs::chown(&home, Some(UID), Some(UID)).expect("chown home");
        let db = t.join("state/forcelogout.db");
        let module = module_path();
        std::fs::write(
            t.join("pam.d/fltest"),
            format!(
                "account required {m} db={db}\naccount required pam_permit.so\n\
                 session required {m} db={db}\nsession required pam_permit.so\n",
                m = module.display(),
                db = db.display()
            ),
        )
        .expect("pam stack");
        let config = t.join("forcelogout.toml");
        std::fs::write(
            &config,
            format!("socket = \"{}/socket\"\nsyslog = false\n", t.display()),
        )
        .expect("config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let setup = format!(
            "for f in passwd group; do mount --bind {t}/$f /etc/$f; done\n\
             {private_tmp}\n\
             mkdir -m 1777 /tmp/.X11-unix\n\
             mount -t tmpfs -o mode=0755 tmpfs /run/user\n\
             mkdir -m 0700 /run/user/{UID}\n\
             chown {UID}:{UID} /run/user/{UID}\n\
             touch {t}/ready\n\
             exec sleep 100000",
            t = t.display(),
            private_tmp = private_tmp_keeping(&crate::artefact_dir(), &t.join("artefacts")),
        );
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec", &setup])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let mut desktop = Desktop {
            db,
            config,
            display: None,
            holder,
            children: Vec::new(),
            daemon_pid: None,
            dir,
        };
        let ready = desktop.dir.path().join("ready");
        assert!(
            wait_until(Duration::from_secs(10), || ready.exists()),
            "the namespace did not come up"
        );
        // The session bus's configuration without service directories: nothing is started
        // on demand (Debian's dunst would be, on whatever display it found).
        let bus_config = desktop.dir.path().join("session.conf");
        std::fs::write(
            &bus_config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n                  \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n                 <busconfig><type>session</type><keep_umask/>\
                 <listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
                bus_path()
            ),
        )
        .expect("bus configuration");
        let bus = desktop
            .as_user("dbus-daemon")
            .arg(format!("--config-file={}", bus_config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(desktop.log_file("dbus-daemon.log"))
            .spawn()
            .expect("dbus-daemon");
        desktop.children.push(bus);
        assert!(
            wait_until(Duration::from_secs(10), || desktop
                .as_user("dbus-send")
                .args(["--session", "--dest=org.freedesktop.DBus", "--print-reply"])
                .args(["/org/freedesktop/DBus", "org.freedesktop.DBus.GetId"])
                .output()
                .is_ok_and(|o| o.status.success())),
            "the session bus did not start: {}",
            desktop.read_log("dbus-daemon.log")
        );
        desktop
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(name)).expect("log file")
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// `program` inside the namespace, as root.
    pub fn in_ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "--"])
            .arg(program);
        cmd
    }

    /// `program` inside the namespace as the user, with only the environment a desktop
    /// session gives its programs (HOME, PATH, the bus, the display).
    pub fn as_user(&self, program: &str) -> Command {
        let mut cmd = self.in_ns("setpriv");
        cmd.args([
            "--reuid",
            &UID.to_string(),
            "--regid",
            &UID.to_string(),
            "--clear-groups",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", self.dir.path().join("home").display()))
        .arg("PATH=/usr/bin:/bin")
        .arg(format!("DBUS_SESSION_BUS_ADDRESS=unix:path={}", bus_path()));
        if let Some(display) = &self.display {
            cmd.arg(format!("DISPLAY={display}"));
        }
        cmd.arg(program);
        cmd
    }

    /// Xvfb (on a free display it picks) and dunst with a test configuration: a left click
    /// invokes the notification's action and closes it.
    pub fn start_dunst(&mut self) {
        let mut xvfb = self
            .as_user("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "800x600x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(self.log_file("xvfb.log"))
            .spawn()
            .expect("Xvfb");
        let mut number = String::new();
        let stdout = xvfb.stdout.take().expect("Xvfb stdout");
        self.children.push(xvfb);
        let _ = BufReader::new(stdout).read_line(&mut number);
        assert!(
            !number.trim().is_empty(),
            "Xvfb did not start: {}",
            self.read_log("xvfb.log")
        );
        self.display = Some(format!(":{}", number.trim()));
        let rc = self.dir.path().join("dunstrc");
        std::fs::write(
            &rc,
            "[global]\n    font = Monospace 10\n    width = 520\n    height = 300\n\
             origin = top-right\n    offset = 10x10\n    show_indicators = no\n\
             mouse_left_click = do_action, close_current\n\
             [urgency_critical]\n    background = \"#8b0000\"\n    foreground = \"#ffffff\"\n\
             frame_color = \"#ff4040\"\n    timeout = 0\n",
        )
        .expect("dunstrc");
        let dunst = self
            .as_user("dunst")
            .arg("-config")
            .arg(&rc)
            .stdout(Stdio::null())
            .stderr(self.log_file("dunst.log"))
            .spawn()
            .expect("dunst");
        self.children.push(dunst);
        assert!(
            wait_until(Duration::from_secs(15), || self
                .dunst_count("displayed")
                .is_some()),
            "dunst did not start: {}",
            self.read_log("dunst.log")
        );
    }

    /// A process that owns `org.freedesktop.Notifications` on the user's bus and never
    /// answers a call (python3-dbus without a main loop: calls queue up unread).
    pub fn start_hanging_server(&mut self) {
        let mut server = self
            .as_user("python3")
            .args([
                "-c",
                "import dbus, sys, time\n\
                 bus = dbus.SessionBus()\n\
                 bus.request_name('org.freedesktop.Notifications')\n\
                 print('owned', flush=True)\n\
                 time.sleep(100000)\n",
            ])
            .stdout(Stdio::piped())
            .stderr(self.log_file("hanging.log"))
            .spawn()
            .expect("python3");
        let stdout = server.stdout.take().expect("stdout");
        self.children.push(server);
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert_eq!(line.trim(), "owned", "{}", self.read_log("hanging.log"));
    }

    /// Freezes the user's bus (SIGSTOP): connections are accepted by the kernel and then
    /// nothing answers, not even the authentication.
    pub fn freeze_bus(&self) {
        let bus = self.children.first().expect("the bus").id();
        let status = Command::new("kill")
            .args(["-STOP", &bus.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// `dbus-monitor` on the user's bus, writing the notification calls to `name`.
    pub fn monitor(&mut self, name: &str) {
        let monitor = self
            .as_user("dbus-monitor")
            .args(["--session", "interface='org.freedesktop.Notifications'"])
            .stdout(self.log_file(name))
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor");
        self.children.push(monitor);
        // It subscribes after it starts; give it a moment to be listening.
        std::thread::sleep(Duration::from_millis(500));
    }

    /// `forcelogoutctl daemon` in the namespace, on the test store and configuration.
    pub fn start_daemon(&mut self) {
        let daemon = self
            .in_ns(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .arg("daemon")
            .env("FORCELOGOUT_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("daemon.log"))
            .spawn()
            .expect("daemon");
        self.daemon_pid = Some(daemon.id());
        self.children.push(daemon);
        let socket = self.dir.path().join("socket");
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "the daemon did not start: {}",
            self.daemon_log()
        );
    }

    /// The daemon's notification agents now running: (pid, /proc/PID/status, environ).
    pub fn agents(&self) -> Vec<(u32, String, Vec<u8>)> {
        let Some(daemon) = self.daemon_pid else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains("notify-agent") {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            if parent == Some(daemon) && !status.contains("State:\tZ") {
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                out.push((pid, status, environ));
            }
        }
        out
    }

    pub fn daemon_log(&self) -> String {
        self.read_log("daemon.log")
    }

    /// `forcelogoutctl` as root in the namespace; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out: Output = self
            .in_ns(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env("FORCELOGOUT_CONFIG", &self.config)
            .output()
            .expect("ctl");
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A PAM session of the user (opened through the real libpam), held until `close`. The
    /// harness leads a process session of its own, as a login program does, so a kick in one
    /// test reaches no other test's processes of the same user.
    pub fn open_session(&self) -> HeldSession {
        let mut child = self
            .in_ns("setsid")
            .arg(harness_path())
            .arg("--confdir")
            .arg(self.dir.path().join("pam.d"))
            .args([
                "--service",
                "fltest",
                "--user",
                USER,
                "open",
                "wait",
                "close",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("harness");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("harness output");
        assert!(line.starts_with("step open rc=0"), "open: {line}");
        HeldSession {
            child,
            stdin,
            stdout,
        }
    }

    /// Rows of `sql` on the test store.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        crate::query(&self.db, sql)
    }

    /// `dunstctl count KIND` (displayed, history, waiting) as the user.
    pub fn dunst_count(&self, kind: &str) -> Option<usize> {
        let out = self
            .as_user("dunstctl")
            .args(["count", kind])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// `dunstctl history` (the notifications dunst has closed, as JSON) as the user.
    pub fn dunst_history(&self) -> String {
        let out = self
            .as_user("dunstctl")
            .arg("history")
            .output()
            .expect("dunstctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The notification window's position and size, from X (xdotool).
    pub fn notification_geometry(&self) -> Option<(i64, i64, i64, i64)> {
        let out = self
            .as_user("xdotool")
            .args([
                "search",
                "--onlyvisible",
                "--class",
                "dunst",
                "getwindowgeometry",
                "--shell",
                "%@",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .next_back()
                .and_then(|v| v.parse::<i64>().ok())
        };
        Some((
            value("X=")?,
            value("Y=")?,
            value("WIDTH=")?,
            value("HEIGHT=")?,
        ))
    }

    pub fn click(&self, x: i64, y: i64) {
        let out = self
            .as_user("xdotool")
            .args(["mousemove", &x.to_string(), &y.to_string(), "click", "1"])
            .output()
            .expect("xdotool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A screenshot of the whole screen (ImageMagick's `import`), as PNG bytes.
    pub fn screenshot(&self) -> Vec<u8> {
        let path = self.dir.path().join("home/screen.png");
        let out = self
            .as_user("import")
            .args(["-window", "root"])
            .arg(&path)
            .output()
            .expect("import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&path).expect("screenshot")
    }
}

/// How many colours an image has (ImageMagick's `identify`; /usr/bin, not a stand-in).
pub fn colour_count(png: &Path) -> usize {
    let out = Command::new("/usr/bin/identify")
        .args(["-format", "%k"])
        .arg(png)
        .output()
        .expect("identify");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A PAM session held open by the harness in the namespace.
pub struct HeldSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl HeldSession {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the session's process still runs (a kick ends it).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes the session (PAM close) and waits for the harness.
    pub fn close(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
    }
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The Notify calls in a dbus-monitor log: (replaces_id, the whole call's text).
pub fn notify_calls(log: &str) -> Vec<(u32, String)> {
    let mut calls = Vec::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        let starts_message = line.starts_with("method call")
            || line.starts_with("method return")
            || line.starts_with("signal")
            || line.starts_with("error");
        if starts_message {
            if let Some(call) = current.take() {
                calls.push(call);
            }
            if line.starts_with("method call") && line.contains("member=Notify") {
                current = Some(String::new());
            }
        } else if let Some(call) = current.as_mut() {
            call.push_str(line.trim());
            call.push('\n');
        }
    }
    calls.extend(current);
    calls
        .into_iter()
        .map(|call| {
            let replaces = call
                .lines()
                .find_map(|l| l.strip_prefix("uint32 "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u32::MAX);
            (replaces, call)
        })
        .collect()
}

/// Where a test leaves a copy of its screenshot when asked (`FORCELOGOUT_SCREENSHOT`).
pub fn keep_screenshot(png: &[u8]) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("FORCELOGOUT_SCREENSHOT")?);
    std::fs::write(&path, png).ok()?;
    Some(path)
}
