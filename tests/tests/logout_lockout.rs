//! `logout GROUP --lockout DURATION`: "log alice out now and keep her out for an hour", through
//! the real CLI and the real module in a real libpam stack. (The window's end, at instants
//! chosen by the test, is in core/tests/lockout.rs: the clock is a parameter there.)

use forcelogout_tests::PamStack;

const PAM_SUCCESS: i32 = 0;
const PAM_PERM_DENIED: i32 = 6;

/// No schedule row: the store was never created, or holds none.
fn nothing_written(stack: &PamStack) -> bool {
    !stack.db.exists() || stack.query("SELECT count(*) FROM LogoutSchedules") == vec![vec!["0"]]
}

#[test]
fn a_lockout_now_refuses_the_target_with_its_message_and_spares_root() {
    let stack = PamStack::standard("");
    assert_eq!(stack.run("daemon", &["acct"]).rc("acct"), PAM_SUCCESS);

    let out = stack.ctl(&[
        "logout",
        "daemon",
        "--kick",
        "--in",
        "0s",
        "--lockout",
        "1h",
        "--message",
        "Incident 42: account under review",
    ]);
    assert!(out.contains("logins refused until "), "{out}");
    assert_eq!(
        stack.query("SELECT Immediate, Kick, Lockout FROM LogoutSchedulesCurrent"),
        vec![vec!["1", "1", "60"]]
    );
    let t = stack.run("daemon", &["acct"]);
    assert_eq!(t.rc("acct"), PAM_PERM_DENIED, "{t:?}");
    let errors = t.texts("error");
    assert_eq!(errors.len(), 1, "{t:?}");
    assert!(
        errors[0].starts_with("Incident 42: account under review\nLogins are closed until "),
        "{}",
        errors[0]
    );
    // Others log in.
    assert_eq!(stack.run("bin", &["acct"]).rc("acct"), PAM_SUCCESS);

    // Everyone locked out: root still logs in (it is not named) ...
    stack.ctl(&["logout", "*", "--in", "0s", "--lockout", "30m"]);
    assert_eq!(stack.run("root", &["acct"]).rc("acct"), PAM_SUCCESS);
    assert_eq!(stack.run("bin", &["acct"]).rc("acct"), PAM_PERM_DENIED);
    // ... and daemon's refusal shows the message of the lockout that ends last (the hour).
    let t = stack.run("daemon", &["acct"]);
    assert!(t.texts("error")[0].starts_with("Incident 42"), "{t:?}");
    stack.ctl(&[
        "logout",
        "daemon",
        "--in",
        "0s",
        "--lockout",
        "2h",
        "--message",
        "Extended",
    ]);
    let t = stack.run("daemon", &["acct"]);
    assert!(t.texts("error")[0].starts_with("Extended\n"), "{t:?}");

    // root is refused only by a lockout that names root.
    stack.ctl(&["logout", "root", "--in", "0s", "--lockout", "5m"]);
    assert_eq!(stack.run("root", &["acct"]).rc("acct"), PAM_PERM_DENIED);
}

#[test]
fn dry_run_shows_the_lockouts_end_and_bad_lockouts_are_refused() {
    let stack = PamStack::standard("");
    let text = stack.ctl(&[
        "logout",
        "daemon",
        "--in",
        "5m",
        "--lockout",
        "1h",
        "--dry-run",
    ]);
    assert!(text.starts_with("Dry run: nothing was written."), "{text}");
    assert!(
        text.contains("Logins of the targets are refused until "),
        "{text}"
    );
    let json = stack.ctl(&[
        "--json",
        "logout",
        "daemon",
        "--in",
        "5m",
        "--lockout",
        "1h",
        "--dry-run",
    ]);
    let preview: serde_json::Value = serde_json::from_str(&json).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(preview["Next"].as_str().unwrap()).unwrap();
    let until =
        chrono::DateTime::parse_from_rfc3339(preview["LockoutUntil"].as_str().unwrap()).unwrap();
    assert_eq!(until - next, chrono::Duration::hours(1), "{json}");
    // Without a lockout there is no end to show.
    let json = stack.ctl(&["--json", "logout", "daemon", "--in", "5m", "--dry-run"]);
    let preview: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(preview["LockoutUntil"].is_null(), "{json}");
    assert!(nothing_written(&stack));

    for (args, field) in [
        (
            vec!["logout", "daemon", "--warn", "--lockout", "1h"],
            "lockout: ",
        ),
        (vec!["logout", "daemon", "--lockout", "2d"], "lockout: "),
        (vec!["logout", "daemon", "--lockout", "soon"], "lockout: "),
    ] {
        let out = stack.ctl_output(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    }
    assert!(nothing_written(&stack));
}

/// Every row of the schedules' history, to show what a command wrote.
fn history(stack: &PamStack) -> Vec<Vec<String>> {
    stack.query(
        "SELECT rowid, Id, Event, Immediate, Kick, Lockout FROM LogoutSchedules ORDER BY rowid",
    )
}

#[test]
fn unlock_admits_a_locked_out_user_at_once_and_the_lift_is_recorded() {
    let stack = PamStack::standard("");
    stack.ctl(&[
        "logout",
        "daemon",
        "--kick",
        "--in",
        "0s",
        "--lockout",
        "1h",
    ]);
    let id = stack.query("SELECT Id FROM LogoutSchedulesCurrent")[0][0].clone();
    assert_eq!(stack.run("daemon", &["acct"]).rc("acct"), PAM_PERM_DENIED);

    // A dry run names the lockout and lifts nothing.
    let before = history(&stack);
    let out = stack.ctl(&["unlock", "daemon", "--dry-run"]);
    assert!(
        out.starts_with(&format!(
            "would lift the lockout of {id} (logout of \"daemon\", logins refused until "
        )),
        "{out}"
    );
    assert_eq!(history(&stack), before);
    assert_eq!(stack.run("daemon", &["acct"]).rc("acct"), PAM_PERM_DENIED);

    // The unlock: the next login is admitted, at once.
    let out = stack.ctl(&["unlock", "daemon"]);
    assert!(
        out.starts_with(&format!("lifted the lockout of {id} ")),
        "{out}"
    );
    let t = stack.run("daemon", &["acct"]);
    assert_eq!(t.rc("acct"), PAM_SUCCESS, "{t:?}");
    // Recorded: the history keeps the lockout that was set, then the version that lifted it.
    assert_eq!(
        stack.query(&format!(
            "SELECT Event, Immediate, Kick, Lockout FROM LogoutSchedules WHERE Id = '{id}' ORDER BY rowid"
        )),
        vec![vec!["created", "1", "1", "60"], vec!["updated", "1", "1", "0"]]
    );
    // ... and the event stream shows it as a schedule change.
    let updates = stack.ctl(&["--json", "events", "--event", "updated"]);
    let lines: Vec<serde_json::Value> = updates
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{updates}");
    assert_eq!(lines[0]["Id"], id.as_str(), "{updates}");
    assert_eq!(lines[0]["Lockout"], 0, "{updates}");
    // Nothing left to lift: said, exit 0, nothing written.
    let before = history(&stack);
    let out = stack.ctl(&["unlock", "daemon"]);
    assert!(out.starts_with("no lockout of \"daemon\" to lift"), "{out}");
    assert_eq!(history(&stack), before);
}

#[test]
fn unlock_of_a_user_lifts_the_lockout_that_targets_them_and_unknown_names_are_warned() {
    let stack = PamStack::standard("");
    // Everyone locked out; unlocking one user by name lifts that logout's lockout.
    stack.ctl(&["logout", "*", "--in", "0s", "--lockout", "30m"]);
    assert_eq!(stack.run("bin", &["acct"]).rc("acct"), PAM_PERM_DENIED);
    let out = stack.ctl(&["unlock", "bin"]);
    assert!(out.contains("(logout of \"*\","), "{out}");
    assert_eq!(stack.run("bin", &["acct"]).rc("acct"), PAM_SUCCESS);

    // Names this host does not know: a warning on stderr, exit 0.
    for args in [
        &["logout", "flo-nosuch-21", "--in", "0s", "--lockout", "1h"][..],
        &["unlock", "flo-nosuch-21"][..],
    ] {
        let out = stack.ctl_output(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains("warning: no user or group named \"flo-nosuch-21\" is known"),
            "{args:?}: {stderr}"
        );
    }
    // The unlock of the unknown name lifted the lockout its logout set.
    assert_eq!(
        stack.query("SELECT Lockout FROM LogoutSchedulesCurrent WHERE GroupName = 'flo-nosuch-21'"),
        vec![vec!["0"]]
    );
}
