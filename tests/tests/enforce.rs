//! The enforcement daemon with real processes: kicks end whole process trees and nothing
//! else, warnings can be ignored (only by their user), and a crashed daemon resumes.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::PamStack;

fn descendants(root: u32) -> HashSet<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields[0] != "Z" {
            parents.push((pid, fields[1].parse::<u32>().unwrap_or(0)));
        }
    }
    let mut found = HashSet::from([root]);
    loop {
        let before = found.len();
        for (pid, parent) in &parents {
            if found.contains(parent) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Kills what a test started even when the test fails, so no process outlives it.
struct KillOnDrop(HashSet<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events(stack: &PamStack) -> Vec<Vec<String>> {
    stack.query(
        "SELECT GroupName, Event, coalesce(Reason, '-'), Kick, Immediate, \
         (SELECT e2.Event FROM LogoutEvents e2 WHERE e2.EventIdentifier = e.RelatedEventIdentifier) \
         FROM LogoutEvents e WHERE Event <> 'online' ORDER BY ReplayId",
    )
}

#[test]
fn a_kick_ends_the_whole_process_tree_and_nothing_else() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    // The session leader opens a session and starts a tree: a child, a grandchild, one that
    // ignores SIGHUP (and so does its sleep), one that called setsid.
    let tree = "sleep 1000 & sh -c 'sleep 1000 & wait' & sh -c 'trap \"\" HUP; sleep 1000 & wait' & setsid sleep 1000 & wait";
    let mut leader = stack.spawn(
        "daemon",
        &["open", &format!("spawn:{tree}"), "wait", "close"],
    );
    assert_eq!(leader.until("open"), 0);
    // The harness, the outer sh, two inner sh and four sleeps.
    assert!(wait_until(Duration::from_secs(10), || descendants(
        leader.pid()
    )
    .len()
        >= 8));
    let tree_pids = descendants(leader.pid());
    let _cleanup = KillOnDrop(tree_pids.clone());
    // A bystander whose pid a stale-looking session row names with another start time: a pid
    // reused by somebody else's process.
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutSessions (SessionKey, GroupName, UserId, Pid, BootId, OpenedAt, Date, PidStartTime) \
             VALUES ('fake', 'daemon', 1, ?1, ?2, '2026-01-01T00:00:00.000000Z', '2026-01-01', 1)",
            rusqlite::params![bystander.id(), boot.trim()],
        )
        .unwrap();

    ok(&daemon.ctl(&[
        "logout",
        "daemon",
        "--kick",
        "--in",
        "1s",
        "--message",
        "Maintenance",
    ]));
    let gone = wait_until(Duration::from_secs(20), || {
        tree_pids.iter().all(|p| !alive(*p))
    });
    let left: Vec<u32> = tree_pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(gone, "still alive: {left:?}\n{}", daemon.log());
    assert!(alive(bystander.id()), "the bystander was signalled");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    drop(leader);
    // Both sessions of `daemon` were removed by the kick, pointing at its warning.
    let rows = events(&stack);
    assert_eq!(rows[0], ["daemon", "warned", "-", "1", "1", "NULL"]);
    let removed: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "removed").collect();
    assert_eq!(removed.len(), 2, "{rows:?}");
    assert!(
        removed.iter().all(|r| r[2] == "kick" && r[5] == "warned"),
        "{rows:?}"
    );
    assert_eq!(rows.last().unwrap()[..3], ["daemon", "offline", "-"]);
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSessions"),
        vec![vec!["0"]]
    );
}

#[test]
#[ignore = "needs root: runuser needs root"]
fn a_warning_that_one_user_ignores_and_another_does_not() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    let mut sessions: Vec<_> = ["mail", "news"]
        .iter()
        .map(|user| {
            let mut s = stack.spawn(user, &["open", "wait", "close"]);
            assert_eq!(s.until("open"), 0);
            s
        })
        .collect();
    // A group both are in would do; '*' with no exemptions that apply to them does too.
    ok(&daemon.ctl(&[
        "logout",
        "*",
        "--warn",
        "--in",
        "4s",
        "--message",
        "Shutting down",
    ]));
    let warned =
        || stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'warned'")[0][0] == "2";
    assert!(
        wait_until(Duration::from_secs(10), warned),
        "{}",
        daemon.log()
    );

    // `news` keeps working, as itself, over the socket.
    let out = daemon.ctl_as("news", &["ignore"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("your sessions stay"));
    // A user with no warning cannot ignore one, and nobody may do an administrator's work.
    let before = stack.query("SELECT count(*) FROM LogoutEvents")[0][0].clone();
    let out = daemon.ctl_as("games", &["ignore"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &[
            "schedule", "add", "--group", "news", "--daily", "--at", "10:00", "--tz", "UTC",
        ][..],
        &["logout", "news"][..],
        &["schedule", "delete", "ffffffff"][..],
    ] {
        let out = daemon.ctl_as("news", args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    }
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutEvents")[0][0],
        before
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSchedules")[0][0],
        "1"
    );

    let expired =
        || stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'offline'")[0][0] == "1";
    assert!(
        wait_until(Duration::from_secs(20), expired),
        "{}",
        daemon.log()
    );
    let rows = events(&stack);
    let find = |user: &str, event: &str| {
        rows.iter()
            .filter(|r| r[0] == user && r[1] == event)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        find("news", "ignored"),
        vec![vec!["news", "ignored", "-", "0", "0", "warned"]]
    );
    assert!(find("news", "removed").is_empty(), "{rows:?}");
    assert_eq!(
        find("mail", "removed"),
        vec![vec![
            "mail",
            "removed",
            "warning-expired",
            "0",
            "1",
            "warned"
        ]]
    );
    assert_eq!(find("mail", "offline").len(), 1);
    // news is still logged in; its session closes normally.
    let mut news = sessions.pop().unwrap();
    news.proceed();
    assert_eq!(news.until("close"), 0);
    news.finish();
}

#[test]
#[ignore = "needs root: runuser needs root"]
fn a_kick_cannot_be_ignored() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    let mut s = stack.spawn("lp", &["open", "wait", "close"]);
    assert_eq!(s.until("open"), 0);
    ok(&daemon.ctl(&["logout", "lp", "--kick", "--in", "30s"]));
    assert!(wait_until(Duration::from_secs(10), || stack.query(
        "SELECT count(*) FROM LogoutEvents WHERE Event = 'warned'"
    )[0][0]
        == "1"));
    let out = daemon.ctl_as("lp", &["ignore"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be ignored"));
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'ignored'"),
        vec![vec!["0"]]
    );
}

#[test]
fn a_daemon_killed_mid_countdown_resumes_and_sweeps_stale_sessions() {
    let stack = PamStack::standard("");
    let mut daemon = Daemon::start(&stack.db, "");
    let mut live = stack.spawn("games", &["open", "wait", "close"]);
    assert_eq!(live.until("open"), 0);
    // A session whose process died without closing it, and one from an earlier boot.
    let mut crashed = stack.spawn("man", &["open", "wait", "close"]);
    assert_eq!(crashed.until("open"), 0);
    unsafe_kill(crashed.pid());
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutSessions (SessionKey, GroupName, UserId, Pid, BootId, OpenedAt, Date) \
             VALUES ('old-boot', 'sys', 3, 1, 'an-earlier-boot', '2026-01-01T00:00:00.000000Z', '2026-01-01')",
            [],
        )
        .unwrap();

    ok(&daemon.ctl(&["logout", "games", "--kick", "--in", "3s"]));
    assert!(wait_until(Duration::from_secs(10), || stack.query(
        "SELECT count(*) FROM LogoutEvents WHERE Event = 'warned'"
    )[0][0]
        == "1"));
    daemon.kill9();
    // The logout falls due while no daemon runs.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        stack
            .query("SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'"),
        vec![vec!["0"]]
    );
    daemon.restart();
    let fired = || {
        stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'")
            [0][0]
            == "1"
    };
    assert!(
        wait_until(Duration::from_secs(20), fired),
        "{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(10), || !alive(live.pid())));
    // Nothing twice: one warning, one removal of the kicked session.
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'warned'"),
        vec![vec!["1"]]
    );
    let stale = stack.query("SELECT GroupName FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'stale' ORDER BY GroupName");
    assert_eq!(stale, vec![vec!["man"], vec!["sys"]]);
    assert_eq!(
        stack
            .query("SELECT GroupName FROM LogoutEvents WHERE Event = 'offline' ORDER BY GroupName"),
        vec![vec!["games"], vec!["man"], vec!["sys"]]
    );
    let _ = live.proceed_if_alive();
    let _ = crashed;
}

fn unsafe_kill(pid: u32) {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
}

#[test]
fn logout_without_a_daemon_enforces_it_itself() {
    let stack = PamStack::standard("");
    let mut s = stack.spawn("lp", &["open", "wait", "close"]);
    assert_eq!(s.until("open"), 0);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("socket = \"{}\"\n", dir.path().join("no-daemon").display()),
    )
    .unwrap();
    let out = Command::new(forcelogout_tests::ctl_path())
        .arg("--db")
        .arg(&stack.db)
        .args(["logout", "lp", "--in", "1s"])
        .env("FORCELOGOUT_CONFIG", &config)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no forcelogout daemon is running"));
    assert!(!alive(s.pid()));
    assert_eq!(
        stack.query("SELECT Event, coalesce(Reason, '-') FROM LogoutEvents ORDER BY ReplayId"),
        vec![
            vec!["online", "-"],
            vec!["warned", "-"],
            vec!["removed", "kick"],
            vec!["offline", "-"]
        ]
    );
}

#[test]
fn dry_run_shows_the_blast_radius_and_writes_nothing() {
    let stack = PamStack::standard("");
    let mut a = stack.spawn("daemon", &["open", "wait", "close"]);
    assert_eq!(a.until("open"), 0);
    let mut r = stack.spawn("root", &["open", "wait", "close"]);
    assert_eq!(r.until("open"), 0);
    let out = stack.ctl(&["logout", "*", "--dry-run"]);
    assert!(out.contains("Dry run: nothing was written."), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("daemon ") && l.ends_with("logged out")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("root ") && l.ends_with("spared: uid 0")),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&stack.ctl(&[
        "--json",
        "schedule",
        "add",
        "--group",
        "daemon",
        "--daily",
        "--at",
        "10:00",
        "--dry-run",
    ]))
    .unwrap();
    assert_eq!(json["Users"][0]["User"], "daemon");
    assert_eq!(json["Written"], false);
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSchedules"),
        vec![vec!["0"]]
    );
    for s in [&mut a, &mut r] {
        s.proceed();
    }
}

#[test]
fn an_invalid_row_is_logged_and_skipped_and_the_daemon_goes_on() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutSchedules VALUES ('2026-01-01', 'bad00000-0000-4000-8000-000000000000', '*', \
             '2026-01-01T00:00:00.000000Z', 'Daily', NULL, '10:00', 'Mars/Olympus', NULL, 0, 1, 'created', '', 'sqlite3', 0, NULL)",
            [],
        )
        .unwrap();
    let mut s = stack.spawn("lp", &["open", "wait", "close"]);
    assert_eq!(s.until("open"), 0);
    ok(&daemon.ctl(&["logout", "lp", "--in", "1s"]));
    let kicked = || {
        stack.query("SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'")
            [0][0]
            == "1"
    };
    assert!(
        wait_until(Duration::from_secs(15), kicked),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains(
            "ignoring an invalid schedule row: schedule bad00000-0000-4000-8000-000000000000 tz:"
        ),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_prunes_by_retention_days() {
    let stack = PamStack::standard("");
    stack.run("daemon", &["open", "close"]);
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
             VALUES (date('now', '-40 days'), '2020-01-01T00:00:00.000000Z', 'old', 'online', 'old-1', 'h')",
            [],
        )
        .unwrap();
    let daemon = Daemon::start(&stack.db, "retention_days = 30");
    let pruned =
        || stack.query("SELECT count(*) FROM LogoutEvents WHERE GroupName = 'old'")[0][0] == "0";
    assert!(
        wait_until(Duration::from_secs(15), pruned),
        "{}",
        daemon.log()
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutEvents WHERE GroupName = 'daemon'"),
        vec![vec!["3"]]
    );
    assert!(
        daemon.log().contains("retention: pruned 1 events"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_second_daemon_on_the_same_store_stops_before_it_does_anything() {
    use std::os::unix::fs::MetadataExt;
    let stack = PamStack::standard("");
    let first = Daemon::start(&stack.db, "");
    let session_socket = first.dir.path().join("sessions");
    let inodes = || {
        [&first.socket, &session_socket].map(|s| std::fs::metadata(s).map(|m| m.ino()).unwrap_or(0))
    };
    let before = inodes();
    let events_before = stack.query("SELECT count(*) FROM LogoutEvents");
    // Its own configuration: sockets elsewhere, so only the store is shared.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!("socket = \"{}\"\n", dir.path().join("socket").display()),
    )
    .unwrap();
    let mut second = Command::new(forcelogout_tests::ctl_path())
        .arg("--db")
        .arg(&stack.db)
        .arg("daemon")
        .env("FORCELOGOUT_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    let stopped = wait_until(Duration::from_secs(20), || {
        status = second.try_wait().unwrap();
        status.is_some()
    });
    if !stopped {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second daemon on the same store kept running");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.unwrap().success());
    let first_pid = first.pid().unwrap();
    assert!(
        stderr.contains(&format!(
            "another daemon is enforcing this store: pid {first_pid}"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("socket").exists());
    // The first keeps its sockets and its store to itself.
    assert_eq!(inodes(), before);
    assert!(std::os::unix::net::UnixStream::connect(&first.socket).is_ok());
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutEvents"),
        events_before
    );
    assert!(!first.log().contains("not delivered"), "{}", first.log());
}
