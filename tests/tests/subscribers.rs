//! Subscribers: hooks run by the daemon for each event (in order, at least once, a failing or
//! hanging one holding back only itself, nothing lost across a restart), each hook's cursor
//! living only while the hook is there, each run checked (owner, mode, no symbolic link), and
//! syslog lines.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::systemd::boot_or_skip;
use forcelogout_tests::{workspace_dir, PamStack, SyslogSink};

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

/// One login and logout by `user`: three events (online, removed, offline).
fn three_events(stack: &PamStack, user: &str) {
    stack.run(user, &["open", "close"]);
}

/// Waits until the daemon's log has `line` at least `times` times.
fn wait_for_log(daemon: &Daemon, line: &str, times: usize) {
    assert!(
        wait_until(Duration::from_secs(20), || daemon
            .log()
            .matches(line)
            .count()
            >= times),
        "waiting for {times} x {line:?}:\n{}",
        daemon.log()
    );
}

fn wait_for_events(log: &Path, expected: &[i64], daemon: &Daemon) {
    assert!(
        wait_until(Duration::from_secs(20), || delivered(log) == expected),
        "{}: {:?}, expected {expected:?}\n{}",
        log.display(),
        delivered(log),
        daemon.log()
    );
}

/// Waits until every hook's cursor is at `replay_id`, so that a crash now duplicates nothing
/// (a hook run but not yet recorded is run again after a restart: at least once).
fn wait_for_hook_cursors(stack: &PamStack, replay_id: i64) {
    let behind = format!(
        "SELECT count(*) FROM SubscriberCursors WHERE Name LIKE 'hook:%' AND ReplayId <> {replay_id}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || stack.query(&behind)
            == vec![vec!["0"]]),
        "{:?}",
        stack.query("SELECT * FROM SubscriberCursors")
    );
}

fn range(from: i64, to: i64) -> Vec<i64> {
    (from..=to).collect()
}

#[test]
#[ignore = "needs root: hooks are run only when owned by root"]
fn a_hook_removed_and_put_back_starts_with_new_events_and_never_gets_old_ones_again() {
    let stack = PamStack::standard("");
    let out = tempfile::tempdir().unwrap();
    let hooks = tempfile::tempdir().unwrap();
    let o = out.path().display();
    hook(hooks.path(), "10-steady", &format!("cat >> {o}/steady.log"));
    hook(hooks.path(), "20-back", &format!("cat >> {o}/back.log"));
    let config = format!("hooks_dir = \"{}\"\nsyslog = false", hooks.path().display());
    let mut daemon = Daemon::start(&stack.db, &config);
    let back_name = format!("hook:{}/20-back", hooks.path().display());
    let (steady, back) = (out.path().join("steady.log"), out.path().join("back.log"));
    let delivering = format!("delivering events to {back_name} ");
    let gone = format!("{back_name}: gone from the hooks directory");

    three_events(&stack, "daemon");
    wait_for_events(&back, &range(1, 3), &daemon);
    // Removed: events 4-6 happen while it is away.
    std::fs::remove_file(hooks.path().join("20-back")).unwrap();
    wait_for_log(&daemon, &gone, 1);
    three_events(&stack, "bin");
    wait_for_events(&steady, &range(1, 6), &daemon);
    // Put back: it starts at the end of the log (6); 1-3 are not given again, 4-6 not kept.
    hook(hooks.path(), "20-back", &format!("cat >> {o}/back.log"));
    wait_for_log(&daemon, &format!("{delivering}(those after ReplayId 6)"), 1);
    three_events(&stack, "sys");
    wait_for_events(&back, &[1, 2, 3, 7, 8, 9], &daemon);
    // A restart resumes where it is: nothing again.
    wait_for_hook_cursors(&stack, 9);
    daemon.kill9();
    daemon.restart();
    three_events(&stack, "games");
    wait_for_events(&back, &[1, 2, 3, 7, 8, 9, 10, 11, 12], &daemon);

    // A different program dropped under the removed hook's name gets no history either.
    std::fs::remove_file(hooks.path().join("20-back")).unwrap();
    wait_for_log(&daemon, &gone, 2);
    three_events(&stack, "man");
    wait_for_events(&steady, &range(1, 15), &daemon);
    hook(hooks.path(), "20-back", &format!("cat >> {o}/other.log"));
    wait_for_log(
        &daemon,
        &format!("{delivering}(those after ReplayId 15)"),
        1,
    );
    three_events(&stack, "lp");
    let other = out.path().join("other.log");
    wait_for_events(&other, &range(16, 18), &daemon);

    // Removed while the daemon is down: forgotten at start-up; put back later, it starts then.
    wait_for_hook_cursors(&stack, 18);
    daemon.kill9();
    std::fs::remove_file(hooks.path().join("20-back")).unwrap();
    three_events(&stack, "mail");
    daemon.restart();
    wait_for_log(
        &daemon,
        &format!("{back_name}: removed while the daemon was down"),
        1,
    );
    hook(hooks.path(), "20-back", &format!("cat >> {o}/other.log"));
    wait_for_log(
        &daemon,
        &format!("{delivering}(those after ReplayId 21)"),
        1,
    );
    three_events(&stack, "news");
    wait_for_events(&other, &[16, 17, 18, 22, 23, 24], &daemon);
    wait_for_events(&steady, &range(1, 24), &daemon);
    assert_eq!(
        delivered(&back),
        [1, 2, 3, 7, 8, 9, 10, 11, 12],
        "the first program was never run again"
    );
}

#[test]
#[ignore = "needs root: hooks are run only when owned by root; one is given to another user"]
fn each_run_checks_the_hooks_owner_and_mode_and_the_others_lose_nothing() {
    let stack = PamStack::standard("");
    let out = tempfile::tempdir().unwrap();
    let hooks = tempfile::tempdir().unwrap();
    let o = out.path().display();
    hook(hooks.path(), "10-steady", &format!("cat >> {o}/steady.log"));
    hook(hooks.path(), "20-mode", &format!("cat >> {o}/mode.log"));
    hook(hooks.path(), "30-owner", &format!("cat >> {o}/owner.log"));
    // A symbolic link to a root-owned program elsewhere: refused, never followed.
    hook(out.path(), "elsewhere", &format!("cat >> {o}/link.log"));
    std::os::unix::fs::symlink(out.path().join("elsewhere"), hooks.path().join("40-link")).unwrap();
    let config = format!("hooks_dir = \"{}\"\nsyslog = false", hooks.path().display());
    let daemon = Daemon::start(&stack.db, &config);
    let h = hooks.path().display();
    let log_of = |name: &str| out.path().join(format!("{name}.log"));
    wait_for_log(
        &daemon,
        &format!("{h}/40-link is a symbolic link: not run"),
        1,
    );

    three_events(&stack, "daemon");
    for name in ["steady", "mode", "owner"] {
        wait_for_events(&log_of(name), &range(1, 3), &daemon);
    }
    // After the daemon has scanned them: one made group-writable, one given to another user.
    let mode = hooks.path().join("20-mode");
    std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o775)).unwrap();
    std::os::unix::fs::chown(hooks.path().join("30-owner"), Some(1), None).unwrap();
    let writable = format!("{h}/20-mode is writable by group or others (mode 775): not run");
    let not_root = format!("{h}/30-owner is owned by uid 1, not root: not run");
    wait_for_log(&daemon, &writable, 1);
    wait_for_log(&daemon, &not_root, 1);
    three_events(&stack, "bin");
    three_events(&stack, "sys");
    wait_for_events(&log_of("steady"), &range(1, 9), &daemon);
    // The refused ones had their chance (they are woken with the steady one) and did not run.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered(&log_of("mode")), range(1, 3));
    assert_eq!(delivered(&log_of("owner")), range(1, 3));
    assert!(
        !log_of("link").exists(),
        "a symbolic link hook must not run"
    );
    // Logged once per change, not per event.
    let log = daemon.log();
    assert_eq!(log.matches(&writable).count(), 1, "{log}");
    assert_eq!(log.matches(&not_root).count(), 1, "{log}");
    assert_eq!(log.matches("is a symbolic link").count(), 1, "{log}");

    // Fixed: it runs again, first with the events it missed, in order.
    std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for_log(
        &daemon,
        &format!("hook:{h}/20-mode: passes the checks again"),
        1,
    );
    wait_for_events(&log_of("mode"), &range(1, 9), &daemon);
    three_events(&stack, "games");
    wait_for_events(&log_of("mode"), &range(1, 12), &daemon);
    wait_for_events(&log_of("steady"), &range(1, 12), &daemon);
    assert_eq!(delivered(&log_of("owner")), range(1, 3));
    assert!(!log_of("link").exists());
}

#[test]
#[ignore = "needs root: hooks are run only when owned by root"]
fn a_hooks_directory_writable_by_others_stops_every_hook_until_fixed() {
    let stack = PamStack::standard("");
    let out = tempfile::tempdir().unwrap();
    let hooks = tempfile::tempdir().unwrap();
    let o = out.path().display();
    hook(hooks.path(), "10-a", &format!("cat >> {o}/a.log"));
    hook(hooks.path(), "20-b", &format!("cat >> {o}/b.log"));
    let config = format!("hooks_dir = \"{}\"\nsyslog = false", hooks.path().display());
    let daemon = Daemon::start(&stack.db, &config);
    let (a, b) = (out.path().join("a.log"), out.path().join("b.log"));
    three_events(&stack, "daemon");
    wait_for_events(&a, &range(1, 3), &daemon);
    wait_for_events(&b, &range(1, 3), &daemon);

    let dir_mode = |mode| {
        std::fs::set_permissions(hooks.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    dir_mode(0o777);
    let refused = format!(
        "the hooks directory {} is writable by group or others (mode 777): not run",
        hooks.path().display()
    );
    wait_for_log(&daemon, &refused, 2);
    three_events(&stack, "bin");
    assert!(wait_until(Duration::from_secs(20), || stack
        .query("SELECT max(ReplayId) FROM LogoutEvents")
        == vec![vec!["6"]]));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        delivered(&a),
        range(1, 3),
        "not run from a directory others can write"
    );
    assert_eq!(delivered(&b), range(1, 3));

    dir_mode(0o755);
    wait_for_events(&a, &range(1, 6), &daemon);
    wait_for_events(&b, &range(1, 6), &daemon);
    assert_eq!(daemon.log().matches(&refused).count(), 2, "once per hook");
}

/// The drop-in in the README's Hooks section, as an administrator pastes it.
fn readme_hooks_drop_in() -> String {
    let readme = std::fs::read_to_string(workspace_dir().join("README.md")).expect("README");
    let section = &readme[readme.find("### Hooks\n").expect("Hooks section")..];
    // To the next heading, of either level.
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|heading| section[1..].find(heading))
        .min()
        .expect("next section");
    let section = &section[..end];
    let start = section.find("```ini\n").expect("the drop-in") + "```ini\n".len();
    let end = start + section[start..].find("```").expect("end of the drop-in");
    section[start..end]
        .lines()
        .map(|line| line.trim().to_string() + "\n")
        .collect()
}

/// A hook that records, per event, whether a server on the host's loopback answered it.
const NETWORK_HOOK: &str = "#!/bin/sh
if curl -fsS -o /dev/null -m 5 http://127.0.0.1:8765/ 2>/dev/null; then net=yes; else net=no; fi
echo \"$FORCELOGOUT_REPLAY_ID $net\" >> /var/lib/forcelogout/hook-net.log
";

#[test]
#[ignore = "needs root: boots systemd in private namespaces"]
fn under_the_packaged_unit_hooks_run_without_network_unless_the_readme_drop_in_is_added() {
    let Some(sd) = boot_or_skip("hooks under the packaged unit") else {
        return;
    };
    sd.install_build();
    sd.write("/etc/forcelogout/forcelogout.toml", "");
    sd.write(
        "/etc/pam.d/fltest",
        "account required /usr/local/lib/forcelogout/pam_forcelogout.so
account required pam_permit.so
session required /usr/local/lib/forcelogout/pam_forcelogout.so
session required pam_permit.so
",
    );
    sd.write("/etc/forcelogout/hooks.d/50-net", NETWORK_HOOK);
    sd.sh(
        "chmod 0755 /etc/forcelogout/hooks.d /etc/forcelogout/hooks.d/50-net && ip link set lo up",
    );
    sd.spawn(
        "exec python3 -m http.server 8765 --bind 127.0.0.1",
        "/run/http-server.log",
    );
    assert!(sd.wait_for(
        Duration::from_secs(30),
        "curl -fsS -o /dev/null http://127.0.0.1:8765/"
    ));
    let start = |what: &str| {
        sd.sh(&format!(
            "systemctl daemon-reload && systemctl {what} forcelogout"
        ));
        assert!(
            sd.wait_for(Duration::from_secs(30), "test -S /run/forcelogout/socket"),
            "{}",
            sd.sh("journalctl --no-pager -o cat -u forcelogout")
        );
    };
    let three_events = || {
        sd.sh("fl-pam-harness --confdir /etc/pam.d --service fltest --user daemon open close >/dev/null")
    };
    let hook_saw = |lines: usize| {
        let have = format!("test $(cat /var/lib/forcelogout/hook-net.log | wc -l) -ge {lines}");
        assert!(
            sd.wait_for(Duration::from_secs(30), &have),
            "{}",
            sd.sh("cat /var/lib/forcelogout/hook-net.log; journalctl --no-pager -o cat -u forcelogout")
        );
        sd.sh("cat /var/lib/forcelogout/hook-net.log")
    };

    // As packaged: the hook runs (checked and executed through its descriptor inside the
    // sandbox), and has no network.
    start("start");
    three_events();
    assert_eq!(hook_saw(3), "1 no\n2 no\n3 no");
    // With the README's drop-in: it reaches the network.
    sd.write(
        "/etc/systemd/system/forcelogout.service.d/hooks-network.conf",
        &readme_hooks_drop_in(),
    );
    start("restart");
    three_events();
    assert_eq!(hook_saw(6), "1 no\n2 no\n3 no\n4 yes\n5 yes\n6 yes");
}
