//! The real module through the real libpam: sessions, events, lockout, notices, symbols.

use forcelogout_tests::{module_path, utc_hhmm, PamStack};

const PAM_SUCCESS: i32 = 0;
const PAM_PERM_DENIED: i32 = 6;

fn pairs(events: &[(String, String)]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|(u, e)| (u.as_str(), e.as_str()))
        .collect()
}

#[test]
fn online_only_first_and_offline_only_after_last_across_interleaved_users() {
    let stack = PamStack::standard("");
    let mut a1 = stack.spawn("daemon", &["open", "wait", "close"]);
    assert_eq!(a1.until("open"), PAM_SUCCESS);
    let mut b1 = stack.spawn("bin", &["open", "wait", "close"]);
    assert_eq!(b1.until("open"), PAM_SUCCESS);
    let mut a2 = stack.spawn(
        "daemon",
        &[
            "--tty",
            "pts/7",
            "--rhost",
            "192.0.2.7",
            "open",
            "wait",
            "close",
        ],
    );
    assert_eq!(a2.until("open"), PAM_SUCCESS);
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSessions"),
        vec![vec!["3"]]
    );
    a1.proceed();
    assert_eq!(a1.until("close"), PAM_SUCCESS);
    b1.proceed();
    assert_eq!(b1.until("close"), PAM_SUCCESS);
    a2.proceed();
    assert_eq!(a2.until("close"), PAM_SUCCESS);
    for s in [a1, b1, a2] {
        s.finish();
    }
    assert_eq!(
        pairs(&stack.events()),
        vec![
            ("daemon", "online"),
            ("bin", "online"),
            ("daemon", "removed"),
            ("bin", "removed"),
            ("bin", "offline"),
            ("daemon", "removed"),
            ("daemon", "offline"),
        ]
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSessions"),
        vec![vec!["0"]]
    );
    // Every column of the second daemon session's removal, and offline pointing at it.
    let rows = stack.query(
        "SELECT e.UserId, e.Service, e.Tty, e.RemoteHost, e.Reason, e.Immediate, e.Kick, length(e.EventIdentifier), \
         e.SessionKey IS NOT NULL, e.Host IS NOT NULL, e.Date = substr(e.Timestamp, 1, 10), \
         (SELECT RelatedEventIdentifier FROM LogoutEvents o WHERE o.ReplayId = e.ReplayId + 1) = e.EventIdentifier \
         FROM LogoutEvents e WHERE e.ReplayId = 6",
    );
    assert_eq!(
        rows,
        vec![vec![
            "1",
            "fltest",
            "pts/7",
            "192.0.2.7",
            "logout",
            "0",
            "0",
            "36",
            "1",
            "1",
            "1",
            "1"
        ]]
    );
    // The registry row had every column of SPEC §2.3 while the session was live: checked
    // through the removed event's SessionKey matching the online event's for that session.
    let keys = stack.query(
        "SELECT count(DISTINCT SessionKey) FROM LogoutEvents WHERE Event IN ('online', 'removed')",
    );
    assert_eq!(keys, vec![vec!["3"]]);
}

#[test]
fn the_registry_row_has_every_column() {
    let stack = PamStack::standard("");
    let mut s = stack.spawn(
        "daemon",
        &[
            "--tty",
            "pts/3",
            "--rhost",
            "198.51.100.1",
            "open",
            "wait",
            "close",
        ],
    );
    assert_eq!(s.until("open"), PAM_SUCCESS);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // Field 6 of /proc/PID/stat; 0 where the session leader is outside our pid namespace
    // (some CI runners), which the module records as NULL.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.pid())).unwrap();
    let harness_sid = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap();
    let expected_sid = if harness_sid == "0" {
        "NULL"
    } else {
        harness_sid
    };
    let rows = stack.query(
        "SELECT GroupName, UserId, Service, Tty, RemoteHost, Pid > 1, ifnull(ProcessSession, 'NULL'), Cgroup IS NOT NULL, \
         BootId, length(SessionKey), Date = substr(OpenedAt, 1, 10), PidStartTime > 0 FROM LogoutSessions",
    );
    assert_eq!(
        rows,
        vec![vec![
            "daemon",
            "1",
            "fltest",
            "pts/3",
            "198.51.100.1",
            "1",
            expected_sid,
            "1",
            boot_id.trim(),
            "36",
            "1",
            "1"
        ]]
    );
    s.proceed();
    s.until("close");
    s.finish();
}

#[test]
fn close_without_open_double_close_and_close_after_the_handle_is_gone() {
    let stack = PamStack::standard("");
    let t = stack.run("daemon", &["close"]);
    assert_eq!(t.rc("close"), PAM_SUCCESS);
    assert!(stack.events().is_empty(), "{:?}", stack.events());

    let t = stack.run("daemon", &["open", "close", "close"]);
    assert!(t.steps.iter().all(|(_, rc, _)| *rc == PAM_SUCCESS), "{t:?}");
    assert_eq!(
        pairs(&stack.events()),
        vec![
            ("daemon", "online"),
            ("daemon", "removed"),
            ("daemon", "offline")
        ]
    );

    // A new PAM handle in the same process has no module data: the session is found by pid,
    // process start time and boot id.
    let t = stack.run("bin", &["open", "restart", "close"]);
    assert!(t.steps.iter().all(|(_, rc, _)| *rc == PAM_SUCCESS), "{t:?}");
    let events = stack.events();
    assert_eq!(
        pairs(&events[3..]),
        vec![("bin", "online"), ("bin", "removed"), ("bin", "offline")]
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSessions"),
        vec![vec!["0"]]
    );
}

#[test]
fn lockout_refuses_targets_with_the_message_and_never_root_unless_named() {
    let stack = PamStack::standard("");
    // A kick that fired a minute ago with a 30-minute lockout: the window is open.
    let everyone = stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "*",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--kick",
        "--lockout",
        "30",
        "--message",
        "Maintenance until noon",
    ]);
    let t = stack.run("daemon", &["acct"]);
    assert_eq!(t.rc("acct"), PAM_PERM_DENIED);
    let errors = t.texts("error");
    assert_eq!(errors.len(), 1, "{t:?}");
    assert!(
        errors[0].starts_with("Maintenance until noon\nLogins are closed until "),
        "{}",
        errors[0]
    );

    // root is exempt from '*' ...
    let t = stack.run("root", &["acct"]);
    assert_eq!(t.rc("acct"), PAM_SUCCESS, "{t:?}");
    assert!(t.messages.is_empty());
    // ... but not from a schedule that names root itself.
    stack.ctl(&["schedule", "delete", everyone.trim()]);
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "root",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--lockout",
        "30",
    ]);
    assert_eq!(stack.run("root", &["acct"]).rc("acct"), PAM_PERM_DENIED);
    // Others are not named by it.
    assert_eq!(stack.run("daemon", &["acct"]).rc("acct"), PAM_SUCCESS);
}

#[test]
fn no_lockout_after_the_window_for_warnings_or_without_lockout_minutes() {
    let stack = PamStack::standard("");
    // Fired 40 minutes ago with 30 minutes of lockout: over.
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        &utc_hhmm(-40),
        "--tz",
        "UTC",
        "--lockout",
        "30",
    ]);
    // A warning (ignorable) never locks out, even with lockout minutes stored (input refuses
    // `--warn --lockout`; a kick turned into a warning keeps its minutes, inert).
    let warning = stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--lockout",
        "30",
    ]);
    stack.ctl(&["schedule", "update", warning.trim(), "--warn"]);
    // A kick without lockout minutes does not either.
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--kick",
    ]);
    // A group daemon is not in.
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "audio",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--lockout",
        "30",
    ]);
    let t = stack.run("daemon", &["acct"]);
    assert_eq!(t.rc("acct"), PAM_SUCCESS, "{t:?}");
}

#[test]
fn a_lockout_by_group_membership() {
    let stack = PamStack::standard("");
    // `lp`'s primary group is lp; `mail`'s is mail: target the group lp only.
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "lp",
        "--daily",
        "--at",
        &utc_hhmm(-2),
        "--tz",
        "UTC",
        "--lockout",
        "10",
    ]);
    assert_eq!(stack.run("lp", &["acct"]).rc("acct"), PAM_PERM_DENIED);
    assert_eq!(stack.run("mail", &["acct"]).rc("acct"), PAM_SUCCESS);
}

#[test]
fn notices_are_shown_at_login_and_suppressed_by_quiet_and_silent() {
    let stack = PamStack::standard("");
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        &utc_hhmm(90),
        "--tz",
        "UTC",
        "--warn",
        "--message",
        "Evening shutdown",
    ]);
    let t = stack.run("daemon", &["open", "close"]);
    let infos = t.texts("info");
    assert_eq!(infos.len(), 1, "{t:?}");
    assert!(
        infos[0].starts_with("You will be asked to log out at "),
        "{}",
        infos[0]
    );
    assert!(
        infos[0].contains(" UTC, in 1 h 29 min.") || infos[0].contains(" UTC, in 1 h 30 min."),
        "{}",
        infos[0]
    );
    assert!(infos[0].ends_with("\nEvening shutdown"), "{}", infos[0]);
    // Not for another user.
    assert!(stack.run("bin", &["open", "close"]).messages.is_empty());
    // PAM_SILENT and `quiet` keep the module silent; the session is still recorded.
    assert!(stack
        .run("daemon", &["--silent", "open", "close"])
        .messages
        .is_empty());
    let quiet = PamStack::standard("quiet");
    std::fs::copy(&stack.db, &quiet.db).unwrap();
    let before = quiet.events().len();
    let t = quiet.run("daemon", &["open", "close"]);
    assert!(t.messages.is_empty(), "{t:?}");
    assert_eq!(quiet.events().len(), before + 3);
}

#[test]
fn the_last_forced_logouts_message_is_shown_once_at_the_next_login() {
    let stack = PamStack::standard("");
    // A schedule, and the kind of `removed` event the daemon writes when it kicks, by hand.
    let id = stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        &utc_hhmm(-5),
        "--tz",
        "UTC",
        "--message",
        "Kicked for maintenance",
    ]);
    let conn = rusqlite::Connection::open(&stack.db).unwrap();
    conn.execute(
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Kick, EventIdentifier, ScheduleId, Reason, Host) \
         VALUES ('2026-11-23', '2026-11-23T10:00:00.000000Z', 'daemon', 'removed', 1, 'e-1', ?1, 'kick', 'h')",
        [id.trim()],
    )
    .unwrap();
    let t = stack.run("daemon", &["open", "close"]);
    let infos = t.texts("info");
    assert_eq!(
        infos,
        vec!["You were logged out by the administrator:\nKicked for maintenance"],
        "{t:?}"
    );
    let t = stack.run("daemon", &["open", "close"]);
    assert!(t.texts("info").is_empty(), "shown twice: {t:?}");
}

#[test]
fn the_module_exports_only_pam_service_functions() {
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(module_path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    symbols.sort();
    assert_eq!(
        symbols,
        [
            "pam_sm_acct_mgmt",
            "pam_sm_authenticate",
            "pam_sm_chauthtok",
            "pam_sm_close_session",
            "pam_sm_open_session",
            "pam_sm_setcred"
        ]
    );
}

/// A schedule row written by hand that passes the schema's checks but not validation.
fn insert_invalid_schedule(stack: &PamStack) {
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutSchedules VALUES ('2026-01-01', 'bad00000-0000-4000-8000-000000000000', '*', \
             '2026-01-01T00:00:00.000000Z', 'Daily', NULL, '10:00', 'Mars/Olympus', NULL, 0, 1, 'created', '', 'sqlite3', 30, NULL)",
            [],
        )
        .unwrap();
}

#[test]
fn one_invalid_row_written_by_hand_does_not_refuse_every_login() {
    let stack = PamStack::standard("fail=closed");
    stack.ctl(&[
        "schedule",
        "add",
        "--group",
        "lp",
        "--daily",
        "--at",
        &utc_hhmm(-1),
        "--tz",
        "UTC",
        "--lockout",
        "30",
    ]);
    insert_invalid_schedule(&stack);
    // The valid lockout still refuses its target; everyone else logs in, even under fail=closed.
    assert_eq!(stack.run("lp", &["acct"]).rc("acct"), PAM_PERM_DENIED);
    let t = stack.run("mail", &["acct", "open", "close"]);
    assert!(t.steps.iter().all(|(_, rc, _)| *rc == PAM_SUCCESS), "{t:?}");
}
