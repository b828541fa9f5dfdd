//! Desktop notifications (SPEC §10) against a real notification server: dunst under Xvfb on
//! the user's own session bus, in a private mount namespace (see `forcelogout_tests::desktop`).
//! A warning shows our text and "Keep working", and clicking it records `ignored` and keeps
//! the session; a kick shows no such action and ends the session; a server that never
//! answers costs the kick nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::desktop::{colour_count, keep_screenshot, notify_calls, Desktop, USER};
use forcelogout_tests::is_root;

fn tools_missing() -> Option<&'static str> {
    [
        "dbus-daemon",
        "Xvfb",
        "dunst",
        "dunstctl",
        "xdotool",
        "import",
        "dbus-monitor",
        "nsenter",
        "setpriv",
    ]
    .into_iter()
    .find(|tool| {
        !std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root (private mount namespaces, a throwaway user)");
        return true;
    }
    if let Some(tool) = tools_missing() {
        eprintln!("skipped: {tool} is not installed (scripts/setup.sh installs it)");
        return true;
    }
    false
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .with_timezone(&Utc)
}

/// The instant the (only) immediate logout takes effect.
fn due(desktop: &Desktop) -> DateTime<Utc> {
    let rows = desktop.query("SELECT DueAt FROM LogoutSchedules WHERE Immediate = 1");
    instant(&rows[0][0])
}

fn events(desktop: &Desktop) -> Vec<Vec<String>> {
    desktop.query(
        "SELECT Event, coalesce(Reason, '-'), Timestamp, \
         (SELECT e2.Event FROM LogoutEvents e2 WHERE e2.EventIdentifier = e.RelatedEventIdentifier) \
         FROM LogoutEvents e WHERE GroupName = 'fldesk' ORDER BY ReplayId",
    )
}

fn has_event(desktop: &Desktop, event: &str) -> bool {
    events(desktop).iter().any(|r| r[0] == event)
}

#[test]
fn a_warning_shows_on_the_desktop_and_keep_working_keeps_the_session() {
    if skip() {
        return;
    }
    let mut desktop = Desktop::start();
    desktop.start_dunst();
    desktop.start_daemon();
    desktop.monitor("monitor.log");
    let mut session = desktop.open_session();
    desktop.ctl(&[
        "logout",
        USER,
        "--warn",
        "--in",
        "20s",
        "--message",
        "The lab closes at 18:00 & reopens at 08:00.",
    ]);
    let due = due(&desktop);

    // The countdown's first step and its update 10 s before the end: one notification,
    // updated in place (the second Notify replaces the first's id).
    let monitor = || desktop.read_log("monitor.log");
    assert!(
        wait_until(Duration::from_secs(20), || notify_calls(&monitor()).len()
            >= 2),
        "expected two Notify calls: {}\n{}",
        monitor(),
        desktop.daemon_log()
    );
    let calls = notify_calls(&monitor());
    assert_eq!(calls[0].0, 0, "the first notification replaces nothing");
    assert_ne!(
        calls[1].0, 0,
        "the update replaces the first: {}",
        calls[1].1
    );
    for (_, call) in &calls[..2] {
        assert!(call.contains("string \"forcelogout\""), "{call}");
        assert!(
            call.contains("string \"forcelogout-keep-working\""),
            "{call}"
        );
        assert!(call.contains("string \"Keep working\""), "{call}");
        assert!(call.contains("byte 2"), "critical urgency: {call}");
        // The body is markup-escaped: the server must not read the message as markup.
        assert!(call.contains("18:00 &amp; reopens"), "{call}");
    }
    assert!(calls[1].1.contains("Logout in "), "{}", calls[1].1);
    assert_eq!(desktop.dunst_count("displayed"), Some(1));

    // One agent for the user, with the user's credentials only and an empty environment.
    let agents = desktop.agents();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let (_, status, environ) = &agents[0];
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "4343 4343 4343 4343", "{status}");
    assert_eq!(field("Gid:"), "4343 4343 4343 4343", "{status}");
    assert_eq!(field("Groups:"), "", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert!(environ.is_empty(), "{:?}", String::from_utf8_lossy(environ));

    // What the screen shows: not blank.
    let png = desktop.screenshot();
    let shot = desktop.dir.path().join("screen.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(colour_count(&shot) > 2, "the screenshot is blank");
    if let Some(kept) = keep_screenshot(&png) {
        eprintln!("screenshot kept at {}", kept.display());
    }

    // The user clicks the notification: dunst invokes its only action, "Keep working".
    let (x, y, w, _) = desktop
        .notification_geometry()
        .expect("the notification's window");
    desktop.click(x + w / 2, y + 20);
    assert!(
        wait_until(Duration::from_secs(10), || has_event(&desktop, "ignored")),
        "no ignored event: {:?}\n{}",
        events(&desktop),
        desktop.daemon_log()
    );
    // dunst has our text (it moved the clicked notification to its history).
    let history = desktop.dunst_history();
    assert!(history.contains("The lab closes at 18:00"), "{history}");
    assert!(history.contains("Logout in"), "{history}");

    // Past the due instant the session is still there, and the ignore was recorded once,
    // pointing at the warning, exactly as `forcelogoutctl ignore` records it.
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(3);
    std::thread::sleep(wait);
    assert!(
        session.alive(),
        "the session was ended: {}",
        desktop.daemon_log()
    );
    let rows = events(&desktop);
    let ignored: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "ignored").collect();
    assert_eq!(ignored.len(), 1, "{rows:?}");
    assert_eq!(ignored[0][3], "warned", "{rows:?}");
    assert!(!rows.iter().any(|r| r[0] == "removed"), "{rows:?}");
    assert_eq!(
        desktop.query("SELECT count(*) FROM LogoutSessions")[0][0],
        "1"
    );
    // The answer replaced the countdown's notification.
    let calls = notify_calls(&monitor());
    let last = calls.last().unwrap();
    assert!(last.1.contains("You chose to keep working"), "{}", last.1);
    assert_eq!(last.0, calls[1].0, "{}", last.1);
    assert!(desktop
        .daemon_log()
        .contains("chose \"Keep working\" on the desktop"));
    session.close();
}

#[test]
fn a_kick_shows_no_keep_working_and_ends_the_session() {
    if skip() {
        return;
    }
    let mut desktop = Desktop::start();
    desktop.start_dunst();
    desktop.start_daemon();
    desktop.monitor("monitor.log");
    let mut session = desktop.open_session();
    desktop.ctl(&[
        "logout",
        USER,
        "--kick",
        "--in",
        "6s",
        "--message",
        "Maintenance",
    ]);
    let monitor = || desktop.read_log("monitor.log");
    assert!(
        wait_until(Duration::from_secs(15), || !notify_calls(&monitor())
            .is_empty()),
        "no Notify call: {}\n{}",
        monitor(),
        desktop.daemon_log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || desktop.dunst_count("displayed")
            == Some(1)),
        "dunst shows nothing"
    );
    let first = &notify_calls(&monitor())[0].1;
    assert!(first.contains("Maintenance"), "{first}");
    assert!(first.contains("byte 2"), "{first}");
    assert!(
        !first.contains("Keep working"),
        "a kick offers no way out: {first}"
    );
    assert!(!first.contains("forcelogout-keep-working"), "{first}");

    assert!(
        wait_until(Duration::from_secs(30), || !session.alive()),
        "the session survived the kick: {}",
        desktop.daemon_log()
    );
    let rows = events(&desktop);
    assert!(
        rows.iter().any(|r| r[0] == "removed" && r[1] == "kick"),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|r| r[0] == "ignored"), "{rows:?}");
    // The end was announced in the same notification, again without an action.
    assert!(
        wait_until(Duration::from_secs(10), || notify_calls(&monitor())
            .iter()
            .any(|(_, c)| c.contains("You are being logged out now"))),
        "{}",
        monitor()
    );
    let calls = notify_calls(&monitor());
    let last = calls
        .iter()
        .find(|(_, c)| c.contains("You are being logged out now"))
        .unwrap();
    assert_ne!(last.0, 0, "{}", last.1);
    assert!(calls.iter().all(|(_, c)| !c.contains("Keep working")));
}

#[test]
fn a_server_that_never_answers_does_not_delay_the_kick() {
    if skip() {
        return;
    }
    let python_dbus = std::process::Command::new("python3")
        .args(["-c", "import dbus"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_dbus {
        eprintln!("skipped: python3-dbus is not installed (scripts/setup.sh installs it)");
        return;
    }
    let mut desktop = Desktop::start();
    desktop.start_hanging_server();
    desktop.start_daemon();
    let mut session = desktop.open_session();
    desktop.ctl(&["logout", USER, "--kick", "--in", "5s"]);
    let due = due(&desktop);
    assert!(
        wait_until(Duration::from_secs(30), || has_event(&desktop, "removed")),
        "no removal: {:?}\n{}",
        events(&desktop),
        desktop.daemon_log()
    );
    let rows = events(&desktop);
    let removed = rows.iter().find(|r| r[0] == "removed").unwrap();
    assert_eq!(removed[1], "kick");
    let late = instant(&removed[2]) - due;
    // The daemon never waits on a notification; each call of the agent waits at most 2 s.
    // The bound is generous for a loaded machine: it is no timing benchmark.
    assert!(
        late <= chrono::Duration::seconds(2 + 5),
        "the kick came {late} after its instant\n{}",
        desktop.daemon_log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || !session.alive()),
        "the session survived the kick"
    );
    // The failure was logged, not silently dropped.
    assert!(
        wait_until(Duration::from_secs(15), || desktop
            .daemon_log()
            .contains("desktop notification for fldesk")),
        "{}",
        desktop.daemon_log()
    );
}

#[test]
fn a_bus_without_a_notification_server_is_logged_and_the_kick_goes_on() {
    if skip() {
        return;
    }
    let mut desktop = Desktop::start();
    desktop.start_daemon();
    let mut session = desktop.open_session();
    desktop.ctl(&["logout", USER, "--kick", "--in", "4s"]);
    assert!(
        wait_until(Duration::from_secs(15), || desktop
            .daemon_log()
            .contains("ServiceUnknown")),
        "{}",
        desktop.daemon_log()
    );
    // Nobody shows notifications there: the agent is not kept waiting for one.
    assert!(
        wait_until(Duration::from_secs(10), || desktop.agents().is_empty()),
        "{:?}",
        desktop.agents()
    );
    assert!(
        wait_until(Duration::from_secs(30), || !session.alive()),
        "the session survived the kick: {}",
        desktop.daemon_log()
    );
    let rows = events(&desktop);
    assert!(
        rows.iter().any(|r| r[0] == "removed" && r[1] == "kick"),
        "{rows:?}"
    );
    assert_eq!(
        desktop
            .daemon_log()
            .matches("desktop notification for fldesk")
            .count(),
        1,
        "logged once: {}",
        desktop.daemon_log()
    );
}

#[test]
fn a_bus_that_hangs_costs_the_kick_nothing_and_its_agent_is_killed() {
    if skip() {
        return;
    }
    let mut desktop = Desktop::start();
    desktop.start_daemon();
    let mut session = desktop.open_session();
    desktop.freeze_bus();
    desktop.ctl(&["logout", USER, "--kick", "--in", "4s"]);
    let due = due(&desktop);
    assert!(
        wait_until(Duration::from_secs(30), || has_event(&desktop, "removed")),
        "no removal: {:?}\n{}",
        events(&desktop),
        desktop.daemon_log()
    );
    let rows = events(&desktop);
    let removed = rows.iter().find(|r| r[0] == "removed").unwrap();
    let late = instant(&removed[2]) - due;
    assert!(
        late <= chrono::Duration::seconds(5),
        "the kick came {late} after its instant\n{}",
        desktop.daemon_log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || !session.alive()),
        "the session survived the kick"
    );
    // The agent stuck in connecting is killed (within its 10 s, or the 5 s it has to finish
    // after the countdown), and reaped.
    assert!(
        wait_until(Duration::from_secs(30), || desktop.agents().is_empty()
            && desktop.daemon_log().contains("killed")),
        "{:?}\n{}",
        desktop.agents(),
        desktop.daemon_log()
    );
}
