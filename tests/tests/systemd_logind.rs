//! Against a real systemd and logind (tests/src/systemd.rs boots one per test in private
//! namespaces): sessions opened through a PAM stack with `pam_systemd.so` and our module, the
//! daemon started by systemd from the package's unit (its hardening in force), kicks that end
//! sessions through logind (SPEC §5.4) or, where logind no longer knows the session, through
//! the session's scope, and the runtime limit that logind enforces while the daemon is down.

use std::path::PathBuf;
use std::time::Duration;

use forcelogout_tests::systemd::{boot_or_skip, Systemd};
use forcelogout_tests::{harness_path, workspace_dir};

const USER: &str = "flsd";
const STORE: &str = "/var/lib/forcelogout/forcelogout.db";

/// The stack of a login program on a systemd host: pam_systemd registers the session with
/// logind (and moves the caller into its scope) before our module records it.
const PAM_STACK: &str = "account required /usr/local/lib/forcelogout/pam_forcelogout.so
account required pam_permit.so
session required pam_systemd.so
session required /usr/local/lib/forcelogout/pam_forcelogout.so
session required pam_permit.so
";

/// The session's command, run as the user: a child, a grandchild that double-forks out of the
/// process tree (it stays in the session's scope), and a long sleep.
const SESSION_COMMAND: &str = "#!/bin/sh
sleep 7301 &
sh -c 'sleep 7302 &'
exec sleep 7303
";

/// The build's binaries at the packaged paths, the package's unit, a configuration, the PAM
/// stack and a throwaway user; returns the user's uid.
fn install_build(sd: &Systemd, config: &str) -> u32 {
    sd.install_build();
    sd.write("/etc/forcelogout/forcelogout.toml", config);
    sd.write("/usr/local/bin/fl-session", SESSION_COMMAND);
    sd.write("/etc/pam.d/fltest", PAM_STACK);
    sd.sh("chmod 0755 /usr/local/bin/fl-session");
    sd.add_user(USER)
}

/// Starts the daemon through its unit and waits for its socket.
fn start_daemon(sd: &Systemd) {
    sd.sh("systemctl daemon-reload && systemctl start forcelogout");
    assert!(
        sd.wait_for(Duration::from_secs(30), "test -S /run/forcelogout/socket"),
        "the daemon did not start: {}",
        journal(sd, "forcelogout")
    );
    assert_eq!(sd.sh("systemctl is-active forcelogout"), "active");
}

fn journal(sd: &Systemd, unit: &str) -> String {
    String::from_utf8_lossy(
        &sd.run(&format!("journalctl --no-pager -o cat -u {unit}"))
            .stdout,
    )
    .into_owned()
}

/// Opens a session for USER through the PAM stack (`fl-pam-harness`, as a login program
/// would): the session's command drops to the user before it runs. With `terminal`, the
/// harness runs on a pseudo-terminal (`script`), its PAM_TTY, owned by the user as login
/// programs leave it, and what reaches the terminal is kept in /tmp/terminal.log.
fn open_session(sd: &Systemd, terminal: bool) {
    let command = format!(
        "spawn:exec setpriv --reuid={USER} --regid={USER} --init-groups /usr/local/bin/fl-session"
    );
    let tty = if terminal { "--tty /dev/pts/0" } else { "" };
    let harness = format!(
        "fl-pam-harness --confdir /etc/pam.d --service fltest --user {USER} {tty} acct open '{command}' sleep:600000 close"
    );
    if terminal {
        sd.spawn(
            &format!(
                "sleep 600 | script -qfec \"chown {USER} /dev/pts/0; exec {harness}\" /dev/null"
            ),
            "/tmp/terminal.log",
        );
    } else {
        sd.spawn(&harness, "/tmp/harness.log");
    }
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!("test \"$(sqlite3 {STORE} \"SELECT count(*) FROM LogoutSessions WHERE GroupName = '{USER}'\")\" = 1")
        ),
        "the session was not registered: {}\n{}",
        sd.run("cat /tmp/harness.log /tmp/terminal.log").stdout.escape_ascii(),
        journal(sd, "forcelogout")
    );
    assert!(
        sd.wait_for(Duration::from_secs(10), "pgrep -f '^sleep 7303$'"),
        "the session's command did not start"
    );
}

/// The registered session's logind id and cgroup.
fn registered(sd: &Systemd) -> (String, String) {
    let row = sd.sh(&format!(
        "sqlite3 -separator '|' {STORE} \"SELECT LogindSession, Cgroup FROM LogoutSessions WHERE GroupName = '{USER}'\""
    ));
    let (id, cgroup) = row.split_once('|').expect("id and cgroup");
    (id.to_string(), cgroup.to_string())
}

/// After a kick: a moment for any late writer, then the rows exactly once, and the daemon's
/// journal line naming the path that ended the session.
fn assert_kicked_once(sd: &Systemd, path: &str) {
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        events(sd),
        ["online -", "warned -", "removed kick", "offline -"]
    );
    let log = journal(sd, "forcelogout");
    assert!(log.contains(path), "{log}");
}

/// `Event Reason` of USER's events, in order.
fn events(sd: &Systemd) -> Vec<String> {
    sd.sh(&format!(
        "sqlite3 {STORE} \"SELECT Event || ' ' || ifnull(Reason, '-') FROM LogoutEvents WHERE GroupName = '{USER}' ORDER BY ReplayId\""
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// The session's processes (its command's three sleeps, the PAM caller) and its scope, gone.
fn session_gone(sd: &Systemd, cgroup: &str, limit: Duration) -> bool {
    sd.wait_for(
        limit,
        &format!(
            "! pgrep -f '^sleep 730[123]$' && ! pgrep -x fl-pam-harness && ! test -d /sys/fs/cgroup{cgroup}"
        ),
    )
}

/// Checks what pam_systemd and our module made of the session: the logind id and the scope
/// recorded, the user's processes in it, the double-forked one outside the PAM caller's tree.
fn check_registration(sd: &Systemd, uid: u32) -> (String, String) {
    let (id, cgroup) = registered(sd);
    assert!(
        id.starts_with('c') && id[1..].bytes().all(|b| b.is_ascii_digit()),
        "logind session id {id:?}"
    );
    assert_eq!(
        cgroup,
        format!("/user.slice/user-{uid}.slice/session-{id}.scope")
    );
    assert_eq!(
        sd.sh(&format!(
            "loginctl show-session {id} -p Scope -p Name -p State"
        )),
        format!("Name={USER}\nScope=session-{id}.scope\nState=active")
    );
    let orphan = sd.sh("pgrep -f '^sleep 7302$'");
    assert_eq!(
        sd.sh(&format!("ps -o user=,ppid= -p {orphan}"))
            .split_whitespace()
            .collect::<Vec<_>>(),
        [USER, "1"],
        "the double-forked process runs as the user, outside the PAM caller's tree"
    );
    assert_eq!(
        sd.sh(&format!("grep ^0:: /proc/{orphan}/cgroup")),
        format!("0::{cgroup}")
    );
    (id, cgroup)
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn a_kick_ends_a_logind_session_through_logind_from_the_daemon_the_unit_started() {
    let Some(sd) = boot_or_skip("a kick through logind") else {
        return;
    };
    let uid = install_build(&sd, "");
    start_daemon(&sd);
    open_session(&sd, true);
    let (id, cgroup) = check_registration(&sd, uid);

    sd.sh(&format!("forcelogoutctl logout {USER} --kick --in 2s"));
    assert!(
        session_gone(&sd, &cgroup, Duration::from_secs(30)),
        "the session outlived the kick: {}\n{}",
        sd.run("ps -ef; loginctl list-sessions")
            .stdout
            .escape_ascii(),
        journal(&sd, "forcelogout")
    );
    // logind forgets the session; the PAM caller died without closing it, so nothing else
    // writes a row: wait a moment for any late writer before counting.
    assert!(sd.wait_for(
        Duration::from_secs(30),
        &format!("! loginctl show-session {id}")
    ));
    assert_kicked_once(&sd, "1 sessions removed (1 through logind, 0 by cgroup)");
    // Written through the user's terminal by the daemon under the unit's hardening.
    let terminal = sd.sh("cat /tmp/terminal.log");
    assert!(
        terminal.contains("You will be logged out in") && terminal.contains("logged out now"),
        "{terminal}"
    );
    assert_eq!(sd.sh("systemctl is-active forcelogout"), "active");
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn a_session_logind_cannot_end_is_ended_through_its_scope() {
    let Some(sd) = boot_or_skip("a kick through the session's scope") else {
        return;
    };
    let uid = install_build(&sd, "");
    start_daemon(&sd);
    open_session(&sd, false);
    let (_, cgroup) = check_registration(&sd, uid);
    // logind goes away (masked, so the bus cannot start it again); the scope stays.
    sd.sh("systemctl mask --runtime systemd-logind && systemctl stop systemd-logind");

    sd.sh(&format!("forcelogoutctl logout {USER} --kick --in 2s"));
    assert!(
        session_gone(&sd, &cgroup, Duration::from_secs(30)),
        "the session outlived the kick: {}\n{}",
        sd.run("ps -ef").stdout.escape_ascii(),
        journal(&sd, "forcelogout")
    );
    assert_kicked_once(&sd, "1 sessions removed (0 through logind, 1 by cgroup)");
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn without_pam_systemd_a_kick_signals_the_process_tree_and_a_double_fork_escapes() {
    let Some(sd) = boot_or_skip("a kick without a logind session") else {
        return;
    };
    install_build(&sd, "");
    // A login program whose stack has no pam_systemd: no logind session, no scope of its own.
    sd.write(
        "/etc/pam.d/fltest",
        &PAM_STACK.replace("session required pam_systemd.so\n", ""),
    );
    start_daemon(&sd);
    open_session(&sd, false);
    let (id, cgroup) = registered(&sd);
    assert_eq!(id, "", "no logind session");
    assert!(!cgroup.contains("session-"), "{cgroup}");

    sd.sh(&format!("forcelogoutctl logout {USER} --kick --in 2s"));
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            "! pgrep -f '^sleep 730[13]$' && ! pgrep -x fl-pam-harness"
        ),
        "the process tree outlived the kick: {}\n{}",
        sd.run("ps -ef").stdout.escape_ascii(),
        journal(&sd, "forcelogout")
    );
    // The documented limit without logind: what double-forked out of the tree is found only
    // through the login's audit or process session, and this harness has neither (its session
    // leader is outside the namespace's pid namespace, so getsid names none).
    assert!(sd.run("pgrep -f '^sleep 7302$'").status.success());
    assert_kicked_once(&sd, "1 sessions removed (0 through logind, 0 by cgroup)");
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn logind_ends_the_session_at_its_runtime_limit_while_the_daemon_is_down() {
    let Some(sd) = boot_or_skip("the runtime limit") else {
        return;
    };
    let uid = install_build(&sd, "limit_session_runtime = true\n");
    start_daemon(&sd);
    // A kick in 5 s, recorded by the daemon, which then stops before it falls due.
    sd.sh(&format!(
        "forcelogoutctl logout {USER} --kick --in 5s && systemctl stop forcelogout"
    ));
    open_session(&sd, false);
    let (id, cgroup) = check_registration(&sd, uid);
    // The scope's limit is our PAM data: a minute after the kick, from the session's start.
    let property = sd.sh(&format!(
        "busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/session_2d{id}_2escope org.freedesktop.systemd1.Scope RuntimeMaxUSec"
    ));
    let limit_us: u64 = property
        .strip_prefix("t ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RuntimeMaxUSec: {property}"));
    assert!(
        (50_000_000..=66_000_000).contains(&limit_us),
        "RuntimeMaxUSec {limit_us}"
    );

    assert_eq!(sd.sh("systemctl is-active forcelogout || true"), "inactive");
    assert!(
        session_gone(&sd, &cgroup, Duration::from_secs(150)),
        "logind did not end the session: {}",
        sd.run("ps -ef; systemctl status --no-pager session-*.scope")
            .stdout
            .escape_ascii()
    );
    // Nobody recorded the end; the daemon, started again, sweeps it as stale.
    start_daemon(&sd);
    assert!(sd.wait_for(
        Duration::from_secs(30),
        &format!("test \"$(sqlite3 {STORE} \"SELECT count(*) FROM LogoutEvents WHERE GroupName = '{USER}' AND Event = 'offline'\")\" = 1")
    ));
    let rows = events(&sd);
    // Its end was never recorded and its process is gone: `stale` (SPEC §5.7), once; the
    // missed kick that follows finds no session left.
    assert_eq!(
        rows.iter()
            .filter(|r| r.starts_with("removed"))
            .collect::<Vec<_>>(),
        ["removed stale"],
        "{rows:?}"
    );
    assert_eq!(
        rows.last().map(String::as_str),
        Some("offline -"),
        "{rows:?}"
    );
}

/// The .deb built by packaging/build-deb.sh (scripts/test.sh builds it before the tests).
fn built_deb() -> Option<PathBuf> {
    std::fs::read_dir(workspace_dir().join("target/deb"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
}

#[test]
fn the_installed_deb_runs_its_daemon_under_systemd_and_kicks_a_real_session() {
    let Some(deb) = built_deb() else {
        eprintln!("skipped the .deb under systemd: no target/deb/*.deb (run packaging/build-deb.sh; scripts/test.sh does)");
        return;
    };
    let Some(sd) = boot_or_skip("the .deb under systemd") else {
        return;
    };
    sd.install(&deb, "/tmp/forcelogout.deb", 0o644);
    sd.install(&harness_path(), "/usr/local/bin/fl-pam-harness", 0o755);
    sd.write("/usr/local/bin/fl-session", SESSION_COMMAND);
    sd.sh("chmod 0755 /usr/local/bin/fl-session");
    // A login program's service on the system's own stacks, which the package edits.
    sd.write(
        "/etc/pam.d/fltest",
        "@include common-auth\n@include common-account\n@include common-session\n",
    );
    let uid = sd.add_user(USER);
    sd.sh("cp -a /etc/pam.d /root/pam.d-before");
    // A container image's policy-rc.d (exit 101) forbids maintainer scripts to start services;
    // a booted host has none.
    sd.sh("rm -f /usr/sbin/policy-rc.d");

    let install = sd.run("dpkg -i /tmp/forcelogout.deb");
    assert!(
        install.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    // The package's postinst started the daemon through its unit.
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            "systemctl is-active forcelogout && test -S /run/forcelogout/socket"
        ),
        "{}",
        journal(&sd, "forcelogout")
    );
    // A tzdata upgrade (its files under /usr/share/zoneinfo) restarts the daemon, which keeps
    // the zone rules it read with each schedule: the package's file trigger.
    let before = sd.sh("systemctl show -p MainPID --value forcelogout");
    sd.sh("dpkg-trigger --no-await /usr/share/zoneinfo && dpkg --triggers-only --pending");
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!(
                "systemctl is-active forcelogout && test -S /run/forcelogout/socket \
                 && test \"$(systemctl show -p MainPID --value forcelogout)\" != {before}"
            )
        ),
        "the daemon was not restarted by the tzdata trigger: {}",
        journal(&sd, "forcelogout")
    );
    // pam-auth-update puts pam_systemd before our module (equal priority, reverse name order),
    // so the module sees the logind session it was given.
    let session = sd.sh("grep -E '^session.*(pam_systemd|pam_forcelogout)' /etc/pam.d/common-session | awk '{print $3}'");
    assert_eq!(session, "pam_systemd.so\npam_forcelogout.so");

    // Only in the interactive stack: the user's manager (user@UID.service, whose PAM service
    // systemd-user includes common-session-noninteractive) and cron jobs are not logins.
    assert_eq!(
        sd.sh("grep -c pam_forcelogout /etc/pam.d/common-session-noninteractive || true"),
        "0"
    );

    open_session(&sd, false);
    assert!(sd.wait_for(
        Duration::from_secs(30),
        &format!("systemctl is-active user@{uid}.service")
    ));
    assert_eq!(
        sd.sh(&format!(
            "sqlite3 {STORE} \"SELECT count(*) FROM LogoutSessions WHERE GroupName = '{USER}'\""
        )),
        "1",
        "the user's manager was recorded as a login"
    );
    let (id, cgroup) = check_registration(&sd, uid);
    sd.sh(&format!("forcelogoutctl logout {USER} --kick --in 2s"));
    assert!(
        session_gone(&sd, &cgroup, Duration::from_secs(30)),
        "the session outlived the kick: {}\n{}",
        sd.run("ps -ef").stdout.escape_ascii(),
        journal(&sd, "forcelogout")
    );
    assert!(sd.wait_for(
        Duration::from_secs(30),
        &format!("! loginctl show-session {id}")
    ));
    assert_kicked_once(&sd, "(1 through logind, 0 by cgroup)");

    let purge = sd.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q forcelogout");
    assert!(
        purge.status.success(),
        "apt-get purge: {}{}",
        String::from_utf8_lossy(&purge.stdout),
        String::from_utf8_lossy(&purge.stderr)
    );
    sd.sh("diff -r /root/pam.d-before /etc/pam.d");
    assert_ne!(sd.sh("systemctl is-active forcelogout || true"), "active");
    assert_eq!(
        sd.sh("test -e /var/lib/forcelogout && echo left || echo gone"),
        "gone"
    );
}

/// The package's unit with its command replaced by `probe` (a oneshot): the same sandbox.
fn probe_unit(probe: &str) -> String {
    let unit =
        std::fs::read_to_string(workspace_dir().join("packaging/systemd/forcelogout.service"))
            .expect("unit");
    unit.lines()
        .filter(|l| !l.starts_with("Restart") && !l.starts_with("RuntimeDirectory"))
        .map(|l| match l {
            l if l.starts_with("ExecStart=") => format!("ExecStart={probe}"),
            l if l.starts_with("Type=") => "Type=oneshot".to_string(),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn the_units_sandbox_lets_a_child_drop_to_the_user_and_reach_the_users_bus() {
    let Some(sd) = boot_or_skip("the unit's sandbox and the user's bus") else {
        return;
    };
    let uid = install_build(&sd, "");
    start_daemon(&sd);
    open_session(&sd, false);
    // logind started the user's manager, which provides the user's bus (dbus-user-session).
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!("test -S /run/user/{uid}/bus")
        ),
        "no user bus: {}",
        journal(&sd, &format!("user@{uid}"))
    );
    // What a desktop notifier does (SPEC §10): a child drops to the user's uid, then speaks on
    // the user's bus with the user's credentials.
    sd.write(
        "/usr/local/bin/fl-bus-probe",
        &format!(
            "#!/bin/sh\nexec setpriv --reuid={uid} --regid={uid} --init-groups \
             dbus-send --bus=unix:path=/run/user/{uid}/bus --print-reply --dest=org.freedesktop.DBus \
             /org/freedesktop/DBus org.freedesktop.DBus.GetId\n"
        ),
    );
    sd.sh("chmod 0755 /usr/local/bin/fl-bus-probe");
    sd.write(
        "/etc/systemd/system/fl-bus-probe.service",
        &probe_unit("/usr/local/bin/fl-bus-probe"),
    );
    let out = sd.run("systemctl daemon-reload && systemctl start fl-bus-probe");
    assert!(
        out.status.success(),
        "the unit's sandbox stops a child from reaching the user's bus: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        journal(&sd, "fl-bus-probe")
    );
}

#[test]
#[ignore = "needs root: boots systemd and logind in private namespaces"]
fn a_failed_test_leaves_no_process_mount_or_cgroup_behind() {
    let Some(sd) = boot_or_skip("the fixture's teardown") else {
        return;
    };
    let uid = install_build(&sd, "");
    start_daemon(&sd);
    open_session(&sd, false);
    assert!(sd.wait_for(
        Duration::from_secs(30),
        &format!("test -S /run/user/{uid}/bus")
    ));
    let pid1 = sd.pid1;
    let cgroup = sd.cgroup().to_path_buf();
    let dir = sd.dir().expect("dir").to_path_buf();
    assert!(cgroup.join("user.slice").is_dir());
    // A test that panics with the instance alive: Drop tears it down while unwinding.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _sd = sd;
        panic!("deliberate: the fixture is torn down while a failing test unwinds");
    }));
    assert!(failed.is_err());
    assert!(
        std::fs::read_to_string(format!("/proc/{pid1}/comm"))
            .map_or(true, |c| c.trim() != "systemd"),
        "systemd still runs"
    );
    assert!(!cgroup.exists(), "{} is left behind", cgroup.display());
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&dir.display().to_string()), "{mounts}");
}
