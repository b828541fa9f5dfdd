//! The PAM module records sessions through the running daemon, and writes the store itself
//! when the daemon does not answer in time: each session is recorded exactly once either way.

use std::time::Duration;

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::{PamStack, SyslogSink, Transcript, USERS};

const PAM_SUCCESS: i32 = 0;
/// Half of it is the wait for the daemon: ample for one commit even on a slow CI disk.
const TIMEOUT_MS: u64 = 1600;
/// Generous: the bound under test is the timeout; the margin absorbs a loaded 2-core CI.
const MARGIN_MS: u64 = 1500;

/// Runs open and close for `daemon` (the user) with syslog captured; returns the transcript
/// and the module's debug lines.
fn open_and_close(stack: &PamStack, sink: &SyslogSink) -> (Transcript, Vec<String>) {
    let t = stack.run_with_mounts(&sink.mount_setup(), "daemon", &["open", "close"]);
    std::thread::sleep(Duration::from_millis(50));
    let lines = sink
        .lines()
        .into_iter()
        .filter(|l| l.contains("pam_forcelogout(fltest:session)"))
        .collect();
    (t, lines)
}

fn recorded_by<'a>(lines: &'a [String], hook: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| l.contains(hook))
        .unwrap_or_else(|| panic!("no {hook} line in {lines:#?}"));
    line.split("recorded by ").nth(1).unwrap_or("")
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
#[ignore = "needs root: the session socket and a private /dev/log need root"]
fn the_daemon_records_sessions_and_a_stopped_daemon_is_waited_for_only_until_the_timeout() {
    let sink = SyslogSink::new();
    let stack = PamStack::standard("");
    // Without a syslog subscriber, whose failed deliveries here are writes: a daemon stopped
    // in the middle of one would hold the store's write lock, and nobody could record.
    let daemon = Daemon::start(&stack.db, "syslog = false");
    let args = format!(
        "debug timeout={TIMEOUT_MS} config={}",
        daemon.config.display()
    );
    stack.write_service(&[
        &format!("account required {{module}} db={{db}} {args}"),
        &format!("session required {{module}} db={{db}} {args}"),
        "session required pam_permit.so",
    ]);

    let (t, lines) = open_and_close(&stack, &sink);
    assert_eq!((t.rc("open"), t.rc("close")), (PAM_SUCCESS, PAM_SUCCESS));
    assert!(
        recorded_by(&lines, "opened session").starts_with("the daemon"),
        "{lines:#?}"
    );
    assert!(
        recorded_by(&lines, "close_session").starts_with("the daemon"),
        "{lines:#?}"
    );
    assert_eq!(
        stack.events(),
        [
            ("daemon", "online"),
            ("daemon", "removed"),
            ("daemon", "offline")
        ]
        .map(|(u, e)| (u.to_string(), e.to_string()))
    );

    // A daemon that accepts but never answers (stopped): the module waits half its timeout,
    // then writes the store itself.
    let pid = daemon.pid().expect("daemon pid");
    signal(pid, "-STOP");
    let (t, lines) = open_and_close(&stack, &sink);
    signal(pid, "-CONT");
    assert_eq!((t.rc("open"), t.rc("close")), (PAM_SUCCESS, PAM_SUCCESS));
    for step in ["open", "close"] {
        assert!(
            t.ms(step) < TIMEOUT_MS + MARGIN_MS,
            "{step}: {} ms",
            t.ms(step)
        );
    }
    assert!(
        recorded_by(&lines, "opened session")
            .starts_with("this process (the daemon did not answer"),
        "{lines:#?}"
    );
    assert!(
        recorded_by(&lines, "close_session").starts_with("this process (the daemon did not answer"),
        "{lines:#?}"
    );
    // The resumed daemon first reads the two requests it was sent, past their deadline, and
    // writes neither (the late open would otherwise bring back a closed session); then it
    // records again.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (t, lines) = open_and_close(&stack, &sink);
            t.rc("open") == PAM_SUCCESS
                && recorded_by(&lines, "opened session").starts_with("the daemon")
        }),
        "the daemon did not record again after SIGCONT"
    );
    let events = stack.events();
    let count = |kind: &str| events.iter().filter(|(_, e)| e == kind).count();
    assert!(count("online") >= 3, "{events:?}");
    assert_eq!(count("online"), count("offline"), "{events:?}");
    assert_eq!(count("online"), count("removed"), "{events:?}");
    assert_eq!(stack.query("SELECT count(*) FROM LogoutSessions"), [["0"]]);
}

#[test]
#[ignore = "needs root: the session socket needs root"]
fn a_burst_of_logins_with_the_daemon_up_is_recorded_exactly_once() {
    const LOGINS: usize = 100;
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    let args = format!("timeout={TIMEOUT_MS} config={}", daemon.config.display());
    stack.write_service(&[&format!("session required {{module}} db={{db}} {args}")]);
    let children: Vec<_> = (0..LOGINS)
        .map(|i| {
            stack
                .harness(USERS[i % USERS.len()], &["open", "close"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("harness")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("harness");
        let t = Transcript::parse(&String::from_utf8_lossy(&out.stdout));
        for step in ["open", "close"] {
            assert_eq!(t.rc(step), PAM_SUCCESS, "{step}");
            assert!(
                t.ms(step) < TIMEOUT_MS + MARGIN_MS,
                "{step}: {} ms",
                t.ms(step)
            );
        }
    }
    let count = |event: &str| {
        stack.query(&format!(
            "SELECT count(*) FROM LogoutEvents WHERE Event = '{event}'"
        ))[0][0]
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(count("removed"), LOGINS);
    assert_eq!(count("online"), count("offline"));
    assert!((1..=LOGINS).contains(&count("online")));
    assert_eq!(
        stack.query("SELECT count(DISTINCT SessionKey) FROM LogoutEvents WHERE Event = 'removed'"),
        [[LOGINS.to_string()]]
    );
    assert_eq!(stack.query("SELECT count(*) FROM LogoutSessions"), [["0"]]);
}

#[test]
#[ignore = "needs root: to run a client as nobody"]
fn only_root_may_record_sessions_through_the_daemon() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    let socket = daemon.socket.with_file_name("sessions");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("session socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // A client as nobody. It only listens: a peer that is not root is answered before its
    // request is read.
    let client = |path: &std::path::Path| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_fl-socket-peek")])
            .arg(path)
            .output()
            .expect("runuser")
    };
    let refused = client(&socket);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Were the socket's mode ever loosened, the daemon still asks the kernel who connected.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let declined = client(&socket);
    assert!(declined.status.success(), "{declined:?}");
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id");
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    assert_eq!(
        String::from_utf8_lossy(&declined.stdout).trim(),
        format!(r#"{{"Declined":"uid {nobody} may not record sessions"}}"#)
    );
    assert_eq!(stack.query("SELECT count(*) FROM LogoutSessions"), [["0"]]);
}

#[test]
#[ignore = "needs root: the session socket and a private /dev/log need root"]
fn the_daemon_decides_account_as_the_module_would() {
    let sink = SyslogSink::new();
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "syslog = false");
    let args = format!(
        "debug timeout={TIMEOUT_MS} config={}",
        daemon.config.display()
    );
    stack.write_service(&[&format!("account required {{module}} db={{db}} {args}")]);
    // A kick on `games` that fired a minute ago with a 30-minute lockout: the window is open.
    let out = daemon.ctl(&[
        "schedule",
        "add",
        "--group",
        "games",
        "--daily",
        "--at",
        &forcelogout_tests::utc_hhmm(-1),
        "--tz",
        "UTC",
        "--kick",
        "--lockout",
        "30",
        "--message",
        "Maintenance",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account = |user: &str| {
        let t = stack.run_with_mounts(&sink.mount_setup(), user, &["acct"]);
        std::thread::sleep(Duration::from_millis(50));
        let decided: Vec<String> = sink
            .lines()
            .into_iter()
            .filter(|l| l.contains("decided by"))
            .collect();
        (t, decided)
    };
    let (t, decided) = account("games");
    assert_eq!(t.rc("acct"), 6, "{t:?}"); // PAM_PERM_DENIED
    assert!(
        t.texts("error")[0].starts_with("Maintenance\nLogins are closed until "),
        "{t:?}"
    );
    assert!(decided[0].contains("decided by the daemon"), "{decided:#?}");
    let (t, decided) = account("daemon");
    assert_eq!(t.rc("acct"), PAM_SUCCESS, "{t:?}");
    assert!(decided[0].contains("decided by the daemon"), "{decided:#?}");

    // Without the daemon, the module reads the store itself and decides the same.
    drop(daemon);
    let (t, decided) = account("games");
    assert_eq!(t.rc("acct"), 6, "{t:?}");
    assert!(
        decided[0].contains("decided by this process"),
        "{decided:#?}"
    );
}
