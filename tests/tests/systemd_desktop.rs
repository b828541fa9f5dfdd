//! Desktop notifications (SPEC §10) end to end under a real systemd (tests/src/systemd.rs):
//! the daemon started by systemd from the package's unit, unchanged (its hardening in force),
//! a session opened through a PAM stack with `pam_systemd.so` and our module, so that logind
//! starts the user's manager (`user@UID.service`), whose `dbus.socket` (from
//! `dbus-user-session`) is the user's bus at `/run/user/UID/bus`, and on that bus a real
//! notification server running as a service of the user's manager
//! (tests/scripts/notification-server.py: python3-dbus on a GLib loop, recording every call).
//! A warning's notification carries "Keep working", invoking it records `ignored` and keeps
//! the session past its instant; a kick's carries no action and ends the session through
//! logind.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use forcelogout_tests::systemd::{boot_or_skip, Systemd};
use forcelogout_tests::workspace_dir;
use serde_json::Value;

const USER: &str = "fldesk";
const STORE: &str = "/var/lib/forcelogout/forcelogout.db";
const SERVER: &str = "/usr/local/bin/fl-notification-server";

/// A graphical login's stack: pam_systemd registers a `user` session (as a display manager's
/// would) before our module records it.
const PAM_STACK: &str = "account required /usr/local/lib/forcelogout/pam_forcelogout.so
account required pam_permit.so
session required pam_systemd.so class=user type=wayland desktop=fltest
session required /usr/local/lib/forcelogout/pam_forcelogout.so
session required pam_permit.so
";

const SESSION_COMMAND: &str = "#!/bin/sh\nexec sleep 7303\n";

fn python_missing() -> Option<&'static str> {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import dbus, dbus.mainloop.glib; from gi.repository import GLib",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then_some("python3-dbus or python3-gi is not installed (scripts/setup.sh installs them)")
}

fn journal(sd: &Systemd, unit: &str) -> String {
    String::from_utf8_lossy(
        &sd.run(&format!("journalctl --no-pager -o cat -u {unit}"))
            .stdout,
    )
    .into_owned()
}

fn query(sd: &Systemd, sql: &str) -> String {
    sd.sh(&format!("sqlite3 -separator '|' {STORE} \"{sql}\""))
}

/// The calls the notification server recorded, in order.
fn calls(sd: &Systemd) -> Vec<Value> {
    std::fs::read_to_string(sd.path(&format!("/home/{USER}/fl-notifications.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn notifies(sd: &Systemd) -> Vec<Value> {
    calls(sd)
        .into_iter()
        .filter(|c| c["call"] == "Notify")
        .collect()
}

/// Polls `check` every 100 ms for up to `limit`.
fn wait(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn due(sd: &Systemd, kick: bool) -> DateTime<Utc> {
    let text = query(
        sd,
        &format!(
            "SELECT DueAt FROM LogoutSchedules WHERE Immediate = 1 AND Kick = {}",
            u8::from(kick)
        ),
    );
    DateTime::parse_from_rfc3339(&text)
        .unwrap_or_else(|e| panic!("DueAt {text:?}: {e}"))
        .with_timezone(&Utc)
}

/// The fields of `/proc/PID/status` inside, whitespace-normalised.
fn status_field(sd: &Systemd, pid: i64, name: &str) -> String {
    sd.sh(&format!(
        "grep '^{name}:' /proc/{pid}/status | cut -f2- | tr -s ' \\t' ' '"
    ))
    .trim()
    .to_string()
}

#[test]
fn the_units_daemon_notifies_the_users_systemd_bus_and_keep_working_is_recorded() {
    if !forcelogout_tests::is_root() {
        eprintln!("skipped the desktop under systemd: needs root (namespaces, an overlay of /)");
        return;
    }
    if let Some(reason) = python_missing() {
        eprintln!("skipped the desktop under systemd: {reason}");
        return;
    }
    let Some(sd) = boot_or_skip("the desktop under systemd") else {
        return;
    };

    // The build at the packaged paths and the package's unit file as shipped.
    sd.install_build();
    sd.install(
        &workspace_dir().join("tests/scripts/notification-server.py"),
        SERVER,
        0o755,
    );
    sd.write("/usr/local/bin/fl-session", SESSION_COMMAND);
    sd.write("/etc/pam.d/fltest", PAM_STACK);
    sd.sh("chmod 0755 /usr/local/bin/fl-session");
    let uid = sd.add_user(USER);
    sd.sh("systemctl daemon-reload && systemctl start forcelogout");
    assert!(
        sd.wait_for(Duration::from_secs(30), "test -S /run/forcelogout/socket"),
        "the daemon did not start: {}",
        journal(&sd, "forcelogout")
    );

    // A login through the PAM stack; its command drops to the user. The daemon started
    // first, so the user's runtime directory, mounted by logind at the login, must reach the
    // daemon's own mount namespace (ProtectHome=read-only) through mount propagation.
    sd.spawn(
        &format!(
            "fl-pam-harness --confdir /etc/pam.d --service fltest --user {USER} acct open \
             'spawn:exec setpriv --reuid={USER} --regid={USER} --init-groups /usr/local/bin/fl-session' \
             sleep:600000 close"
        ),
        "/tmp/harness.log",
    );
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!("test \"$(sqlite3 {STORE} \"SELECT count(*) FROM LogoutSessions WHERE GroupName = '{USER}'\")\" = 1")
        ),
        "the session was not registered: {}\n{}",
        sd.run("cat /tmp/harness.log").stdout.escape_ascii(),
        journal(&sd, "forcelogout")
    );
    let session = query(
        &sd,
        &format!("SELECT LogindSession FROM LogoutSessions WHERE GroupName = '{USER}'"),
    );
    assert_eq!(
        sd.sh(&format!(
            "loginctl show-session {session} -p Class -p Type -p State | sort"
        )),
        "Class=user\nState=active\nType=wayland"
    );

    // logind started the user's manager; the user's bus is its dbus.socket, from
    // dbus-user-session (the bus daemon, started on the first connection, runs in
    // user@UID.service as the user).
    let bus = format!("/run/user/{uid}/bus");
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!("systemctl is-active user@{uid}.service && test -S {bus}")
        ),
        "no user bus: {}",
        journal(&sd, &format!("user@{uid}"))
    );
    assert_eq!(
        sd.sh("dpkg -S /usr/lib/systemd/user/dbus.socket | cut -d: -f1"),
        "dbus-user-session"
    );
    // The user, in the environment their manager's services get (no more).
    let as_user = format!(
        "setpriv --reuid={uid} --regid={uid} --init-groups env -i XDG_RUNTIME_DIR=/run/user/{uid} \
         DBUS_SESSION_BUS_ADDRESS=unix:path={bus} PATH=/usr/bin:/bin"
    );
    assert_eq!(
        sd.sh(&format!(
            "{as_user} systemctl --user show dbus.socket -p Listen -p ActiveState | sort"
        )),
        format!("ActiveState=active\nListen={bus} (Stream)")
    );

    // The notification server, a service of the user's manager, as desktops run theirs.
    sd.sh(&format!(
        "{as_user} systemd-run --user --unit=fl-notification-server --collect \
         /usr/bin/python3 {SERVER} unix:path={bus} /home/{USER}/fl-notifications.jsonl \
         /home/{USER}/fl-click"
    ));
    assert!(
        wait(Duration::from_secs(30), || calls(&sd)
            .iter()
            .any(|c| c["call"] == "ready")),
        "the notification server did not start: {}",
        String::from_utf8_lossy(
            &sd.run(&format!(
                "{as_user} journalctl --user --no-pager -o cat -u fl-notification-server; journalctl --no-pager -o cat _UID={uid}"
            ))
            .stdout
        )
    );
    let bus_daemon = sd.sh(&format!(
        "{as_user} busctl --user call org.freedesktop.DBus /org/freedesktop/DBus \
         org.freedesktop.DBus GetConnectionUnixProcessID s org.freedesktop.DBus"
    ));
    let bus_daemon = bus_daemon.strip_prefix("u ").unwrap_or(&bus_daemon);
    let bus_cgroup = sd.sh(&format!("grep ^0:: /proc/{bus_daemon}/cgroup"));
    assert!(
        bus_cgroup.starts_with(&format!(
            "0::/user.slice/user-{uid}.slice/user@{uid}.service/"
        )) && bus_cgroup.ends_with("/dbus.service"),
        "{bus_cgroup}"
    );

    // A warning in 20 s: the countdown's first step, then its update 10 s before the end.
    sd.sh(&format!(
        "forcelogoutctl logout {USER} --warn --in 20s --message 'The lab closes at 18:00 & reopens at 08:00.'"
    ));
    let warn_due = due(&sd, false);
    assert!(
        wait(Duration::from_secs(25), || notifies(&sd).len() >= 2),
        "expected two Notify calls: {:?}\n{}",
        calls(&sd),
        journal(&sd, "forcelogout")
    );
    let shown = notifies(&sd);
    assert_eq!(shown[0]["replaces_id"], 0, "{:?}", shown[0]);
    assert_eq!(
        shown[1]["replaces_id"], shown[0]["id"],
        "the update replaces the first: {:?}",
        shown[1]
    );
    for call in &shown[..2] {
        assert_eq!(call["app_name"], "forcelogout", "{call}");
        assert_eq!(call["hints"]["urgency"], 2, "critical urgency: {call}");
        assert_eq!(
            call["actions"],
            serde_json::json!(["forcelogout-keep-working", "Keep working"]),
            "{call}"
        );
        assert!(
            call["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with("Logout in "),
            "{call}"
        );
        let body = call["body"].as_str().unwrap_or("");
        assert!(body.contains("unless you choose to keep working"), "{call}");
        assert!(body.contains("18:00 &amp; reopens"), "{call}");
        assert_eq!(
            call["uid"], uid,
            "spoken with the user's credentials: {call}"
        );
    }
    // The caller: the daemon's agent, in the unit's cgroup, as the user, without capabilities.
    let agent = shown[1]["pid"].as_i64().expect("the caller's pid");
    assert_eq!(
        sd.sh(&format!("tr '\\0' ' ' </proc/{agent}/cmdline")),
        format!("/usr/bin/forcelogoutctl notify-agent --bus unix:path={bus}")
    );
    assert_eq!(
        sd.sh(&format!("grep ^0:: /proc/{agent}/cgroup")),
        "0::/system.slice/forcelogout.service"
    );
    assert_eq!(
        status_field(&sd, agent, "Uid"),
        format!("{uid} {uid} {uid} {uid}")
    );
    assert_eq!(status_field(&sd, agent, "Groups"), "");
    assert_eq!(status_field(&sd, agent, "CapEff"), "0000000000000000");
    assert_eq!(sd.sh(&format!("wc -c </proc/{agent}/environ")), "0");

    // The user chooses "Keep working": the server emits ActionInvoked for it.
    sd.sh(&format!(
        "setpriv --reuid={uid} --regid={uid} --init-groups touch /home/{USER}/fl-click"
    ));
    let ignored_rows = || {
        query(
            &sd,
            &format!("SELECT count(*) FROM LogoutEvents WHERE GroupName = '{USER}' AND Event = 'ignored'"),
        )
    };
    assert!(
        wait(Duration::from_secs(15), || ignored_rows() == "1"),
        "no ignored event: {:?}\n{}",
        calls(&sd),
        journal(&sd, "forcelogout")
    );
    let invoked: Vec<Value> = calls(&sd)
        .into_iter()
        .filter(|c| c["call"] == "ActionInvoked")
        .collect();
    assert_eq!(invoked.len(), 1, "{invoked:?}");
    assert_eq!(invoked[0]["id"], shown[0]["id"]);
    assert_eq!(invoked[0]["action_key"], "forcelogout-keep-working");

    // Past the due instant the session is alive, and one `ignored` points at the `warned`.
    let left = (warn_due - Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(left + Duration::from_secs(3));
    assert_eq!(
        sd.sh(&format!("loginctl show-session {session} -p State")),
        "State=active"
    );
    assert!(sd.run("pgrep -f '^sleep 7303$'").status.success());
    assert_eq!(
        query(
            &sd,
            &format!(
                "SELECT count(*) FROM LogoutEvents i JOIN LogoutEvents w \
                 ON i.RelatedEventIdentifier = w.EventIdentifier \
                 WHERE i.GroupName = '{USER}' AND i.Event = 'ignored' AND w.Event = 'warned'"
            )
        ),
        "1"
    );
    assert_eq!(ignored_rows(), "1");
    assert_eq!(
        query(
            &sd,
            &format!("SELECT count(*) FROM LogoutEvents WHERE GroupName = '{USER}' AND Event = 'removed'")
        ),
        "0"
    );
    let kept = notifies(&sd);
    let answer = kept
        .iter()
        .find(|c| c["summary"] == "You chose to keep working")
        .unwrap_or_else(|| panic!("no answer to Keep working: {kept:?}"));
    assert_eq!(answer["replaces_id"], shown[0]["id"], "{answer}");
    assert!(journal(&sd, "forcelogout").contains("chose \"Keep working\" on the desktop"));

    // A kick in 5 s: a notification without "Keep working", then the end through logind.
    let before = notifies(&sd).len();
    sd.sh(&format!(
        "forcelogoutctl logout {USER} --kick --in 5s --message Maintenance"
    ));
    assert!(
        sd.wait_for(
            Duration::from_secs(30),
            &format!("! loginctl show-session {session} && ! pgrep -f '^sleep 7303$'")
        ),
        "the session outlived the kick: {}\n{}",
        sd.run("ps -ef; loginctl list-sessions")
            .stdout
            .escape_ascii(),
        journal(&sd, "forcelogout")
    );
    let kick_calls = notifies(&sd).split_off(before);
    let countdown = kick_calls
        .iter()
        .find(|c| {
            c["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("Logout in "))
        })
        .unwrap_or_else(|| panic!("no countdown for the kick: {kick_calls:?}"));
    assert_eq!(countdown["replaces_id"], 0, "a new countdown: {countdown}");
    assert_eq!(countdown["hints"]["urgency"], 2, "{countdown}");
    assert!(
        countdown["body"]
            .as_str()
            .unwrap_or("")
            .contains("Maintenance"),
        "{countdown}"
    );
    assert!(
        kick_calls
            .iter()
            .all(|c| c["actions"] == serde_json::json!([])),
        "a kick offers no way out: {kick_calls:?}"
    );
    assert!(
        wait(Duration::from_secs(10), || notifies(&sd)
            .iter()
            .any(|c| c["summary"] == "You are being logged out now")),
        "{:?}",
        calls(&sd)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        query(
            &sd,
            &format!(
                "SELECT Event || ' ' || ifnull(Reason, '-') FROM LogoutEvents \
                 WHERE GroupName = '{USER}' AND Event IN ('removed', 'ignored') ORDER BY ReplayId"
            )
        ),
        "ignored -\nremoved kick"
    );
    let log = journal(&sd, "forcelogout");
    assert!(
        log.contains("1 sessions removed (1 through logind, 0 by cgroup)"),
        "{log}"
    );
    assert_eq!(sd.sh("systemctl is-active forcelogout"), "active");
}
