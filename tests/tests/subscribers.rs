//! Subscribers: hooks run by the daemon for each event (in order, at least once, a failing or
//! hanging one holding back only itself, nothing lost across a restart), and syslog lines.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::{PamStack, SyslogSink};

fn hook(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The ReplayIds a hook appended to its log, one JSON event per line.
fn delivered(log: &Path) -> Vec<i64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ReplayId"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

fn count(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn hooks_get_every_event_in_order_and_a_hanging_one_holds_back_only_itself() {
    let stack = PamStack::standard("");
    let out = tempfile::tempdir().unwrap();
    let hooks = tempfile::tempdir().unwrap();
    let o = out.path().display();
    hook(hooks.path(), "10-ok", &format!("cat >> {o}/ok.log"));
    hook(
        hooks.path(),
        "20-flaky",
        &format!("n=$(cat {o}/flaky.count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {o}/flaky.count\n[ $n -le 2 ] && exit 1\ncat >> {o}/flaky.log"),
    );
    hook(
        hooks.path(),
        "30-hang",
        &format!("echo run >> {o}/hang.runs; exec sleep 1001"),
    );
    let config = format!(
        "hooks_dir = \"{}\"\nhook_timeout = \"1s\"\nsyslog = false",
        hooks.path().display()
    );
    let mut daemon = Daemon::start(&stack.db, &config);

    let started = Instant::now();
    for user in ["daemon", "bin", "sys"] {
        stack.run(user, &["open", "close"]);
    }
    let all = |n: i64| (1..=n).collect::<Vec<i64>>();
    let ok_log = out.path().join("ok.log");
    assert!(
        wait_until(Duration::from_secs(20), || delivered(&ok_log) == all(9)),
        "ok: {:?}\n{}",
        delivered(&ok_log),
        daemon.log()
    );
    // Not held up by the hanging hook (killed each second) or the failing one (retried).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the succeeding hook was delayed"
    );
    let flaky_log = out.path().join("flaky.log");
    assert!(
        wait_until(Duration::from_secs(20), || delivered(&flaky_log) == all(9)),
        "flaky: {:?}",
        delivered(&flaky_log)
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("flaky.count"))
            .unwrap()
            .trim(),
        "11",
        "2 failures, then 9 events"
    );
    // The hanging hook is killed at its limit and retried, never advancing.
    assert!(
        wait_until(Duration::from_secs(20), || count(
            &out.path().join("hang.runs")
        ) >= 3),
        "{}",
        daemon.log()
    );
    let hang = format!("hook:{}/30-hang", hooks.path().display());
    assert_eq!(
        stack.query(&format!("SELECT ReplayId, Failures >= 2, LastError LIKE 'killed after%' FROM SubscriberCursors WHERE Name = '{hang}'")),
        vec![vec!["0", "1", "1"]]
    );
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 1001$"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sleepers.stdout).lines().count() <= 1,
        "killed hooks must not linger"
    );

    // Across a daemon crash: more events while it is down, nothing lost after the restart.
    daemon.kill9();
    for user in ["games", "man", "lp"] {
        stack.run(user, &["open", "close"]);
    }
    daemon.restart();
    assert!(
        wait_until(Duration::from_secs(20), || delivered(&ok_log).len() >= 18),
        "{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(20), || delivered(
        &flaky_log
    )
    .len()
        >= 18));
    for log in [&ok_log, &flaky_log] {
        let ids = delivered(log);
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "in ReplayId order: {ids:?}"
        );
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique, all(18), "every event, at least once");
    }
    drop(daemon);
    let _ = std::process::Command::new("pkill")
        .args(["-f", "^sleep 1001$"])
        .status();
}

#[test]
fn each_event_goes_to_syslog_as_one_structured_line() {
    let stack = PamStack::standard("");
    let sink = SyslogSink::new();
    let config = format!(
        "syslog_socket = \"{}\"\nhooks_dir = \"/nonexistent\"",
        sink.path.display()
    );
    let _daemon = Daemon::start(&stack.db, &config);
    stack.run("daemon", &["--rhost", "192.0.2.9", "open", "close"]);
    let mut lines = Vec::new();
    let got_all = wait_until(Duration::from_secs(20), || {
        lines.extend(sink.lines());
        lines.len() >= 3
    });
    assert!(got_all, "{lines:?}");
    assert!(lines[0].starts_with("<86>forcelogout["), "{}", lines[0]);
    assert!(
        lines[0].contains(" event=online replay_id=1 user=daemon uid=1 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" event=removed replay_id=2 ")
            && lines[1].contains(" reason=logout ")
            && lines[1].contains(" rhost=192.0.2.9 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(" event=offline replay_id=3 "),
        "{}",
        lines[2]
    );
}
