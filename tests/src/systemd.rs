//! A real systemd, with dbus and logind, booted as PID 1 of private namespaces over an overlay
//! of `/` (shared/notes/systemd-in-a-namespace.md): the host's root is the lower layer, a tmpfs
//! inside the instance's own mount namespace the upper one, so nothing reaches the host.
//!
//! Each instance has its own name, temporary directory, cgroup (in the host's cgroup v2
//! hierarchy) and namespaces, so tests may boot several at once. Dropping it (on a panic
//! too) powers it off, kills what is left with SIGKILL after a bounded wait, waits for its
//! cgroups to empty and removes them deepest first: a failed test leaves no process, mount or
//! cgroup behind. Commands run inside with `nsenter -t PID1 -a`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::daemon::wait_until;

/// The only unit the instance starts: the system's basic units, dbus and logind, not every
/// service the host image has enabled.
const TARGET: &str = "[Unit]
Description=forcelogout tests: dbus and logind only
Requires=basic.target dbus.socket systemd-logind.service
After=basic.target dbus.socket systemd-logind.service
AllowIsolate=yes
";

/// Runs in a private mount namespace (`unshare -m`): builds the overlay root and its `/dev`,
/// `/run` and `/tmp`, moves itself into the instance's cgroup, and enters the remaining
/// namespaces, where the second part mounts `/proc`, `/sys` and a fresh cgroup2, pivots into
/// the root and execs systemd. `$1` is the instance's directory, `$2` its cgroup.
///
/// The root is made shared (`--make-rshared`), as systemd itself does when the kernel starts
/// it but leaves to a container manager: services with a mount namespace of their own
/// (`ProtectHome=`, `PrivateTmp=`) then see mounts made after they started, such as a user's
/// `/run/user/UID` when the user logs in, as they do on a booted host.
const BOOT_SCRIPT: &str = r#"set -eu
dir=$1; cgroup=$2; root=$dir/root
mount -t tmpfs -o mode=0755 tmpfs "$dir/layers"
mkdir "$dir/layers/upper" "$dir/layers/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/layers/upper,workdir=$dir/layers/work" "$root"
mount -t tmpfs -o mode=0755 tmpfs "$root/dev"
for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
    set -- $node
    mknod -m 0666 "$root/dev/$1" c "$2" "$3"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
touch "$root/dev/console"
mount --bind "$dir/console" "$root/dev/console"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
cp "$dir/logind-test.target" "$root/etc/systemd/system/logind-test.target"
echo $$ > "$cgroup/cgroup.procs"
exec unshare --kill-child --mount --propagation private --pid --fork --uts --ipc --net --cgroup \
    sh -euc '
root=$1
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
cd "$root"
mkdir -p .old-root
pivot_root . .old-root
umount -l /.old-root
mount --make-rshared /
exec env -i container=unshare /lib/systemd/systemd --system --unit=logind-test.target
' sh "$root"
"#;

/// A booted instance.
pub struct Systemd {
    pub name: String,
    dir: Option<tempfile::TempDir>,
    /// The outer `unshare` (its forked child is systemd).
    outer: Option<Child>,
    /// systemd's pid as the host sees it.
    pub pid1: u32,
    /// The instance's cgroup in the host's cgroup v2 hierarchy.
    cgroup: PathBuf,
    /// Processes started with `spawn`, killed and reaped at teardown.
    spawned: Mutex<Vec<Child>>,
}

/// Why this machine cannot boot an instance, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("booting systemd in namespaces needs root".into());
    }
    for needed in ["/lib/systemd/systemd", "/lib/systemd/systemd-logind"] {
        if !Path::new(needed).exists() {
            return Some(format!(
                "{needed} is missing (scripts/setup.sh installs systemd)"
            ));
        }
    }
    if pam_systemd().is_none() {
        return Some("pam_systemd.so is missing (scripts/setup.sh installs libpam-systemd)".into());
    }
    if host_cgroup2().is_none() {
        return Some("no cgroup v2 hierarchy on this host".into());
    }
    None
}

/// The host's cgroup v2 mount: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
fn host_cgroup2() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// The multiarch PAM module directory holding `pam_systemd.so`.
pub fn pam_systemd() -> Option<PathBuf> {
    let out = Command::new("dpkg-architecture")
        .arg("-qDEB_HOST_MULTIARCH")
        .output()
        .ok()?;
    let multiarch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(format!("/lib/{multiarch}/security/pam_systemd.so"));
    path.exists().then_some(path)
}

/// The instance, or `None` after printing why this test is skipped.
pub fn boot_or_skip(test: &str) -> Option<Systemd> {
    if let Some(reason) = unavailable() {
        eprintln!("skipped {test}: {reason}");
        return None;
    }
    Some(Systemd::boot())
}

static INSTANCES: AtomicU32 = AtomicU32::new(0);

impl Systemd {
    /// Boots an instance and waits (bounded) until logind answers on the system bus.
    pub fn boot() -> Systemd {
        let name = format!(
            "forcelogout-test-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("fl-systemd-")
            .tempdir()
            .expect("tempdir");
        for sub in ["layers", "root"] {
            std::fs::create_dir(dir.path().join(sub)).expect("instance dir");
        }
        std::fs::write(dir.path().join("console"), "").expect("console");
        std::fs::write(dir.path().join("logind-test.target"), TARGET).expect("target");
        let cgroup = host_cgroup2().expect("cgroup v2").join(&name);
        std::fs::create_dir(&cgroup).expect("instance cgroup");
        let outer = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                BOOT_SCRIPT,
                "sh",
            ])
            .arg(dir.path())
            .arg(&cgroup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut instance = Systemd {
            name,
            dir: Some(dir),
            outer: None,
            pid1: 0,
            cgroup,
            spawned: Mutex::new(Vec::new()),
        };
        instance.outer = Some(outer.expect("unshare"));
        let outer_pid = instance.outer.as_ref().map(Child::id).unwrap_or(0);
        // The outer process execs `unshare --fork`, whose only child is systemd.
        let started = wait_until(Duration::from_secs(30), || {
            instance.pid1 = first_child(outer_pid).unwrap_or(0);
            instance.pid1 != 0 && comm(instance.pid1).as_deref() == Some("systemd")
        });
        assert!(started, "systemd did not start: {}", instance.boot_errors());
        let ready = wait_until(Duration::from_secs(60), || {
            instance
                .run("busctl status org.freedesktop.login1 >/dev/null 2>&1")
                .status
                .success()
        });
        assert!(
            ready,
            "logind did not come up: {}\n{}",
            instance.boot_errors(),
            instance.console()
        );
        instance
    }

    fn boot_errors(&mut self) -> String {
        let Some(outer) = self.outer.as_mut() else {
            return String::new();
        };
        match outer.try_wait() {
            Ok(Some(status)) => {
                let mut text = String::new();
                if let Some(mut err) = outer.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut text);
                }
                format!("the boot script exited with {status}: {text}")
            }
            _ => String::new(),
        }
    }

    /// The instance's cgroup in the host's hierarchy.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The instance's directory on the host (the overlay's mount point lives under it).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// What systemd wrote to its console.
    pub fn console(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("console")).ok())
            .unwrap_or_default()
    }

    /// A path inside the instance, as the host reaches it (through PID 1's root).
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            self.pid1,
            inside.trim_start_matches('/')
        ))
    }

    /// Copies a host file into the instance, with `mode`.
    pub fn install(&self, from: &Path, inside: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let to = self.path(inside);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("create dir inside");
        }
        std::fs::copy(from, &to)
            .unwrap_or_else(|e| panic!("copy {} to {inside}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// The build inside the instance: `forcelogoutctl` and `forcelogoutd` at the paths the
    /// packages install them, the module at `/usr/local/lib/forcelogout/pam_forcelogout.so`
    /// (the tests' PAM stacks name it), the PAM harness, and the package's unit as shipped.
    pub fn install_build(&self) {
        self.install(&crate::ctl_path(), "/usr/bin/forcelogoutctl", 0o755);
        self.install(
            &crate::daemon_path(),
            "/usr/libexec/forcelogout/forcelogoutd",
            0o755,
        );
        self.install(
            &crate::module_path(),
            "/usr/local/lib/forcelogout/pam_forcelogout.so",
            0o644,
        );
        self.install(
            &crate::harness_path(),
            "/usr/local/bin/fl-pam-harness",
            0o755,
        );
        self.install(
            &crate::workspace_dir().join("packaging/systemd/forcelogout.service"),
            "/etc/systemd/system/forcelogout.service",
            0o644,
        );
    }

    /// Writes a file inside the instance.
    pub fn write(&self, inside: &str, text: &str) {
        let to = self.path(inside);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("create dir inside");
        }
        std::fs::write(&to, text).unwrap_or_else(|e| panic!("write {inside}: {e}"));
    }

    /// `nsenter` into every namespace of PID 1, then `program`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid1.to_string(), "-a", "--"])
            .arg(program);
        cmd
    }

    /// Runs `sh -c script` inside, bounded by a minute (`timeout -s KILL`).
    pub fn run(&self, script: &str) -> Output {
        let mut cmd = self.command("timeout");
        cmd.args(["-s", "KILL", "60", "sh", "-c", script])
            .stdin(Stdio::null());
        cmd.output().expect("nsenter")
    }

    /// `run`, which must succeed; its standard output, trimmed.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "inside: {script}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls `script` inside every 100 ms until it succeeds, for up to `limit`.
    pub fn wait_for(&self, limit: Duration, script: &str) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.run(script).status.success() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `sh -c script` inside, not waited for; its output goes to `log` inside. It is
    /// killed at teardown if it still runs.
    pub fn spawn(&self, script: &str, log: &str) {
        let mut cmd = self.command("sh");
        cmd.args(["-c", &format!("exec >{log} 2>&1 </dev/null; {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("nsenter");
        self.spawned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
    }

    /// Adds a user with a home directory in the instance's `/etc/passwd`; returns its uid.
    pub fn add_user(&self, user: &str) -> u32 {
        self.sh(&format!("useradd -m -s /bin/sh {user} && id -u {user}"))
            .parse()
            .expect("uid")
    }

    /// The cgroup directories of the instance, deepest first.
    fn cgroups_deepest_first(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
            out.push(dir.to_path_buf());
        }
        let mut out = Vec::new();
        if self.cgroup.exists() {
            walk(&self.cgroup, &mut out);
        }
        out
    }

    fn cgroups_empty(&self) -> bool {
        self.cgroups_deepest_first().iter().all(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |p| p.trim().is_empty())
        })
    }

    fn teardown(&mut self) {
        for mut child in self
            .spawned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut outer) = self.outer.take() {
            if self.pid1 != 0 {
                // SIGRTMIN+4: systemd's "poweroff" (systemctl would need the bus).
                let rtmin4 = libc::SIGRTMIN() + 4;
                // SAFETY: kill has no memory preconditions; pid1 is our own child's child.
                unsafe { libc::kill(self.pid1 as i32, rtmin4) };
            }
            let exited = wait_until(Duration::from_secs(20), || {
                matches!(outer.try_wait(), Ok(Some(_)))
            });
            if !exited {
                // SIGKILL to `unshare --kill-child` takes the whole PID namespace down.
                let _ = outer.kill();
            }
            let _ = outer.wait();
        }
        // Processes of the instance that the kernel is still tearing down.
        if !wait_until(Duration::from_secs(20), || self.cgroups_empty()) {
            for dir in self.cgroups_deepest_first() {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
            wait_until(Duration::from_secs(10), || self.cgroups_empty());
        }
        for dir in self.cgroups_deepest_first() {
            let _ = std::fs::remove_dir(&dir);
        }
        if let Some(dir) = self.dir.take() {
            // The overlay and its tmpfs lived in the mount namespace that just went away.
            let _ = dir.close();
        }
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.teardown();
        if self.cgroup.exists() {
            eprintln!("warning: cgroup {} is left behind", self.cgroup.display());
        }
    }
}

fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}
