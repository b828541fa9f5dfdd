//! A kick reaches its target and nobody else (SPEC §5.4). User A's login (a process session of
//! its own, in a cgroup named like A's logind scope) runs the real `su` into user B through a
//! private PAM stack with our module, so B's session is recorded with A's scope as its cgroup
//! (and, in one case, with A's logind session as its `XDG_SESSION_ID`). Kicking B ends every
//! one of B's processes, the one that double-forked out of su's tree too, and none of A's.
//!
//! Users, PAM stack and `/run` exist only in a private mount namespace (bind-mounted copies of
//! passwd, group and shadow); the cgroups are removed at the end, even when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::{ctl_path, module_path, query};

/// One scene: A's login, `su` into B inside it, and what the kick left.
struct Scene {
    dir: tempfile::TempDir,
    db: PathBuf,
    cgroup: ScopeCgroup,
    login: Child,
    a_uid: u32,
    b_uid: u32,
    /// The sleeps' arguments are `marker + 1..=5`: 1 and 2 are A's, 3 to 5 are B's (4 is the
    /// double-forked one).
    marker: u32,
}

const USER_A: &str = "flkicka";
const USER_B: &str = "flkickb";

/// How the scene differs between the tests.
struct Setup {
    /// A's login gets an audit session of its own (`/proc/self/loginuid`, as pam_loginuid sets).
    audit_session: bool,
    /// `su B -c` (its shell in a new process session) rather than `su B` fed on stdin (its shell
    /// in A's process session).
    command: bool,
    /// A logind state file says session N (A's scope's) is A's, and the su stack's
    /// environment names it as `XDG_SESSION_ID`, as A's login left it.
    a_logind_session: bool,
    uid_base: u32,
    marker: u32,
}

/// The cgroup v2 hierarchy: `unified` on a hybrid host, the root on a unified one.
fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| root.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy (/sys/fs/cgroup/unified or /sys/fs/cgroup)")
}

/// `<root>/<unique>/session-<n>.scope`, removed with whatever still runs in it on drop.
struct ScopeCgroup {
    top: PathBuf,
    scope: PathBuf,
    /// The scope's path as `/proc/PID/cgroup` shows it (`0::…`).
    relative: String,
}

impl ScopeCgroup {
    fn new(unique: &str, n: u32) -> ScopeCgroup {
        let root = cgroup2_root();
        let top = root.join(unique);
        let scope = top.join(format!("session-{n}.scope"));
        std::fs::create_dir_all(&scope).expect("create the scope's cgroup");
        ScopeCgroup {
            relative: format!("/{unique}/session-{n}.scope"),
            top,
            scope,
        }
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.scope.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for ScopeCgroup {
    fn drop(&mut self) {
        if std::fs::write(self.scope.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        wait_until(Duration::from_secs(10), || self.pids().is_empty());
        let _ = std::fs::remove_dir(&self.scope);
        let _ = std::fs::remove_dir(&self.top);
    }
}

/// The pid of the live `sleep ARG`, if one runs.
fn sleep_pid(arg: u32) -> Option<u32> {
    let wanted = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
                && alive(*pid)
        })
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
    })
}

/// `/proc/PID/status` field `name` (first value) and `/proc/PID/stat`'s parent.
fn status_field(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Whether `pid` descends from `ancestor` (by the parent links now).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        match status_field(current, "PPid:") {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => current = p,
            _ => return false,
        }
    }
    false
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Scene {
    fn start(setup: &Setup) -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(t.join("state")).expect("state");
        std::fs::create_dir(t.join("pam.d")).expect("pam.d");
        std::fs::create_dir(t.join("bin")).expect("bin");
        let (a_uid, b_uid) = (setup.uid_base, setup.uid_base + 1);
        let db = t.join("state/forcelogout.db");
        let n = setup.marker;

        for (file, lines) in [
            (
                "passwd",
                [(USER_A, a_uid), (USER_B, b_uid)]
                    .map(|(u, id)| format!("{u}:x:{id}:{id}:kick test:/:/bin/sh\n")),
            ),
            (
                "group",
                [(USER_A, a_uid), (USER_B, b_uid)].map(|(u, id)| format!("{u}:x:{id}:\n")),
            ),
            (
                "shadow",
                [USER_A, USER_B].map(|u| format!("{u}:*:19000:0:99999:7:::\n")),
            ),
        ] {
            let mut text = std::fs::read_to_string(format!("/etc/{file}")).expect("/etc file");
            text.extend(lines);
            std::fs::write(t.join(file), text).expect("copy");
        }
        // No daemon: `forcelogoutctl logout` enforces the kick itself.
        std::fs::write(
            t.join("forcelogout.toml"),
            format!("socket = \"{}/no-daemon\"\n", t.display()),
        )
        .expect("config");
        let module = format!(
            "{} db={} config={}/forcelogout.toml",
            module_path().display(),
            db.display(),
            t.display()
        );
        // What pam_systemd leaves under su when the caller already has a session: the
        // invoking user's XDG_SESSION_ID (here through pam_env, there being no logind).
        let env = if setup.a_logind_session {
            std::fs::write(
                t.join("pam_env.conf"),
                format!("XDG_SESSION_ID DEFAULT={n}\n"),
            )
            .expect("pam_env.conf");
            format!(
                "session required pam_env.so readenv=0 conffile={}/pam_env.conf\n",
                t.display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            t.join("pam.d/su"),
            format!(
                "auth sufficient pam_permit.so\n\
                 account required {module}\naccount required pam_permit.so\n\
                 {env}session required {module}\nsession required pam_permit.so\n"
            ),
        )
        .expect("su stack");
        // A loginctl that records what it was asked and says yes, as a logind would.
        std::fs::write(
            t.join("bin/loginctl"),
            format!("#!/bin/sh\necho \"$@\" >> {}/loginctl.log\n", t.display()),
        )
        .expect("loginctl");
        std::fs::set_permissions(
            t.join("bin/loginctl"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let logind_state = if setup.a_logind_session {
            format!(
                "mkdir -p /run/systemd/sessions; printf '# This is private data. Do not parse.\\n\
                 UID={a_uid}\\nUSER={USER_A}\\nACTIVE=1\\nSTATE=active\\nSCOPE=session-{n}.scope\\n' > /run/systemd/sessions/{n}; "
            )
        } else {
            String::new()
        };

        let cgroup = ScopeCgroup::new(&format!("fl-kick-{}-{n}", std::process::id()), n);
        let m = setup.marker * 10;
        let b_script = format!(
            "sleep {} & (sleep {} &); exec sleep {}",
            m + 3,
            m + 4,
            m + 5
        );
        let su = if setup.command {
            format!("su {USER_B} -c '{b_script}' </dev/null &")
        } else {
            format!("printf '%s\\n' '{b_script}' | su {USER_B} &")
        };
        let login = format!("sleep {} & sleep {} & {su} wait", m + 1, m + 2);
        let audit = if setup.audit_session {
            format!("echo {a_uid} > /proc/self/loginuid; ")
        } else {
            String::new()
        };
        let namespace = format!(
            "for f in passwd group shadow; do mount --bind {t}/$f /etc/$f; done; \
             mount --bind {t}/pam.d /etc/pam.d; mount -t tmpfs tmpfs /run; {logind_state}\
             echo $$ > {scope}/cgroup.procs; {audit}\
             exec setpriv --reuid={a_uid} --regid={a_uid} --init-groups setsid sh -c \"$1\"",
            t = t.display(),
            scope = cgroup.scope.display(),
        );
        let login = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-ec",
                &namespace,
                "sh",
                &login,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(t.join("login.log")).expect("log"))
            .stderr(std::fs::File::create(t.join("login.err")).expect("log"))
            .spawn()
            .expect("A's login");
        let scene = Scene {
            dir,
            db,
            cgroup,
            login,
            a_uid,
            b_uid,
            marker: m,
        };
        scene.wait_for_b();
        scene
    }

    fn log(&self) -> String {
        ["login.log", "login.err"]
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .concat()
    }

    /// Until B's session is recorded and all five sleeps run.
    fn wait_for_b(&self) {
        let ready = wait_until(Duration::from_secs(30), || {
            (1..=5).all(|k| sleep_pid(self.marker + k).is_some())
                && forcelogout_tests::try_query(
                    &self.db,
                    &format!("SELECT count(*) FROM LogoutSessions WHERE GroupName = '{USER_B}'"),
                )
                .is_ok_and(|rows| rows[0][0] == "1")
        });
        assert!(ready, "A's login and B's su did not start: {}", self.log());
    }

    fn sleep(&self, k: u32) -> Option<u32> {
        sleep_pid(self.marker + k)
    }

    /// `forcelogoutctl logout B --kick` inside the namespace, with the recording loginctl first
    /// on the PATH.
    fn kick_b(&self) -> Output {
        let t = self.dir.path();
        let path = format!(
            "{}/bin:{}",
            t.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("timeout")
            .args(["-s", "KILL", "120", "nsenter"])
            .arg(format!("--mount=/proc/{}/ns/mnt", self.login.id()))
            .arg("--")
            .arg(ctl_path())
            .arg("--db")
            .arg(&self.db)
            .args(["logout", USER_B, "--kick", "--in", "1s"])
            .env("PATH", path)
            .env("FORCELOGOUT_CONFIG", t.join("forcelogout.toml"))
            .output()
            .expect("forcelogoutctl")
    }

    /// What the premises of the scene must be: B's processes run as B in A's scope, one of them
    /// outside su's tree; A's as A; B's session recorded with A's scope.
    fn check_premises(&self, su_pid: u32) {
        for k in 1..=5 {
            let pid = self.sleep(k).expect("sleep");
            let uid = if k <= 2 { self.a_uid } else { self.b_uid };
            assert_eq!(status_field(pid, "Uid:"), Some(uid), "sleep {k}");
            assert_eq!(cgroup_of(pid), self.cgroup.relative, "sleep {k}");
        }
        assert!(descends_from(self.sleep(3).unwrap(), su_pid));
        assert!(
            !descends_from(self.sleep(4).unwrap(), su_pid),
            "the double fork left su's tree"
        );
        let row = query(
            &self.db,
            &format!("SELECT Pid, UserId, Cgroup FROM LogoutSessions WHERE GroupName = '{USER_B}'"),
        );
        assert_eq!(
            row[0],
            [
                su_pid.to_string(),
                self.b_uid.to_string(),
                self.cgroup.relative.clone()
            ]
        );
    }

    fn su_pid(&self) -> u32 {
        query(
            &self.db,
            &format!("SELECT Pid FROM LogoutSessions WHERE GroupName = '{USER_B}'"),
        )[0][0]
            .parse()
            .expect("pid")
    }

    /// Kicks B and checks: B's processes all end, A's all survive, `removed kick` for B.
    fn kick_and_check(&self) -> String {
        let a = [
            self.login.id(),
            self.sleep(1).unwrap(),
            self.sleep(2).unwrap(),
        ];
        let b = [3, 4, 5].map(|k| self.sleep(k).unwrap());
        let out = self.kick_b();
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(
            wait_until(Duration::from_secs(20), || b.iter().all(|p| !alive(*p))),
            "B's processes outlived the kick: {:?}\n{said}",
            b.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        let dead: Vec<u32> = a.iter().copied().filter(|p| !alive(*p)).collect();
        assert!(
            dead.is_empty(),
            "A's processes {dead:?} of {a:?} were killed\n{said}"
        );
        assert_eq!(
            self.cgroup.pids().len(),
            3,
            "A's three processes stay in A's scope"
        );
        assert_eq!(
            query(
                &self.db,
                &format!(
                    "SELECT Event, coalesce(Reason, '-') FROM LogoutEvents WHERE GroupName = '{USER_B}' \
                     AND Event = 'removed'"
                ),
            ),
            [["removed", "kick"]]
        );
        assert!(said.contains("(0 through logind, 0 by cgroup)"), "{said}");
        said
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = self.login.kill();
        let _ = self.login.wait();
    }
}

#[test]
#[ignore = "needs root: a private mount namespace, throwaway users, su, cgroups"]
fn a_kick_of_a_user_reached_with_su_c_spares_the_invoking_users_scope_and_logind_session() {
    let scene = Scene::start(&Setup {
        audit_session: true,
        command: true,
        a_logind_session: true,
        uid_base: 4361,
        marker: 8101,
    });
    let su = scene.su_pid();
    scene.check_premises(su);
    // `su -c` put B's shell in a process session of its own: only the audit session (A's login,
    // shared by everything it started) and the uid tie the double-forked sleep to B's session.
    let b_shell_session = status_field(scene.sleep(4).unwrap(), "NSsid:");
    assert_ne!(b_shell_session, status_field(su, "NSsid:"));
    assert_eq!(
        query(
            &scene.db,
            &format!("SELECT LogindSession FROM LogoutSessions WHERE GroupName = '{USER_B}'")
        )[0][0],
        "8101"
    );
    scene.kick_and_check();
    // A's logind session was never asked to end.
    assert!(
        !scene.dir.path().join("loginctl.log").exists(),
        "loginctl was run: {}",
        std::fs::read_to_string(scene.dir.path().join("loginctl.log")).unwrap_or_default()
    );
}

#[test]
#[ignore = "needs root: a private mount namespace, throwaway users, su, cgroups"]
fn a_kick_of_a_user_reached_with_su_in_the_same_process_session_spares_the_invoking_user() {
    let scene = Scene::start(&Setup {
        audit_session: false,
        command: false,
        a_logind_session: false,
        uid_base: 4371,
        marker: 8201,
    });
    let su = scene.su_pid();
    scene.check_premises(su);
    // `su B` without -c keeps B's shell in A's process session, and A's login has no audit
    // session: the process session and the uid tie the double-forked sleep to B's session.
    assert_eq!(
        status_field(scene.sleep(4).unwrap(), "NSsid:"),
        status_field(scene.sleep(1).unwrap(), "NSsid:")
    );
    scene.kick_and_check();
}

/// The cgroups the scenes made are gone after them.
#[test]
#[ignore = "needs root: cgroups"]
fn a_scope_cgroup_is_removed_with_what_runs_in_it() {
    let cgroup = ScopeCgroup::new(&format!("fl-kick-{}-drop", std::process::id()), 1);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs; exec sleep 8999",
            cgroup.scope.display()
        ))
        .spawn()
        .expect("sleep");
    assert!(wait_until(Duration::from_secs(10), || cgroup.pids().len() == 1));
    let top = cgroup.top.clone();
    drop(cgroup);
    let _ = child.wait();
    assert!(!top.exists(), "{} is left", top.display());
}
