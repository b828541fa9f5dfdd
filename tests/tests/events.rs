//! The event stream and the declarative schedules: `events` (filters, JSON lines, --follow
//! with resume), `prune` under load, `apply`/`export`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forcelogout_tests::{ctl_path, PamStack, Transcript, USERS};

#[test]
fn events_filters_and_json_lines_with_every_column() {
    let stack = PamStack::standard("");
    for user in ["daemon", "bin"] {
        stack.run(user, &["open", "close"]);
    }
    let id = stack.ctl(&[
        "schedule", "add", "--group", "bin", "--daily", "--at", "10:00", "--tz", "UTC",
    ]);
    stack.ctl(&["schedule", "delete", id.trim()]);
    let out = stack.ctl_output(&["--json", "events", "--group", "bin"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["Event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["online", "removed", "offline"]);
    assert_eq!(lines[0].as_object().unwrap().len(), 18, "every column");
    assert_eq!(lines[1]["Reason"], "logout");
    let out = stack.ctl_output(&[
        "--json",
        "events",
        "--event",
        "removed",
        "--after-replay-id",
        "2",
    ]);
    let ids: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ReplayId"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [5]);
    // Schedule changes, in either spelling of the seeds.
    for spelling in ["created", "create", "deleted", "delete"] {
        let out = stack.ctl_output(&["--json", "events", "--event", spelling]);
        assert!(out.status.success(), "{spelling}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "{spelling}"
        );
    }
    let table = String::from_utf8(
        stack
            .ctl_output(&["events", "--since", "2000-01-01"])
            .stdout,
    )
    .unwrap();
    assert_eq!(table.lines().count(), 7, "{table}");
    for (args, field) in [
        (&["events", "--since", "yesterday"][..], "since"),
        (&["events", "--event", "exploded"][..], "event"),
        (&["events", "--after-replay-id=-1"][..], "after-replay-id"),
    ] {
        let out = stack.ctl_output(args);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(&format!("forcelogoutctl: {field}: "))
        );
    }
}

/// Reads `count` JSON lines from a follower, returning their ReplayIds.
fn follow_some(stack: &PamStack, after: i64, count: usize) -> Vec<i64> {
    let mut child = Command::new(ctl_path())
        .arg("--db")
        .arg(&stack.db)
        .args([
            "--json",
            "events",
            "--follow",
            "--after-replay-id",
            &after.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < count && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        ids.push(value["ReplayId"].as_i64().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ids
}

#[test]
fn a_follower_killed_and_resumed_sees_every_event_once_in_order() {
    let stack = PamStack::new(&[
        "session [success=ok ignore=bad default=bad] {module} db={db} timeout=10000",
    ]);
    stack.run("daemon", &["open", "close"]);
    // Parallel writers keep adding events while the follower runs, dies and resumes.
    let writers: Vec<_> = USERS[..4]
        .iter()
        .map(|u| {
            stack
                .harness(u, &["bench:40"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let total = 3 + 4 * 40 * 3;
    let mut seen = Vec::new();
    // Start after the first event; stop and resume from the last printed id, three times.
    let mut after = 1;
    for part in [50, 100, 150] {
        let ids = follow_some(&stack, after, part);
        assert!(!ids.is_empty());
        after = *ids.last().unwrap();
        seen.extend(ids);
    }
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let rest = follow_some(&stack, after, total - 1 - seen.len());
    seen.extend(rest);
    let expected: Vec<i64> = (2..=total as i64).collect();
    assert_eq!(seen, expected, "every event after 1 exactly once, in order");
}

#[test]
fn prune_removes_old_partitions_without_delaying_logins() {
    let stack = PamStack::new(&[
        "session [success=ok ignore=bad default=bad] {module} db={db} timeout=2000",
    ]);
    stack.run("daemon", &["open", "close"]);
    // Two million events over 300 days of the past, written in one statement.
    let conn = rusqlite::Connection::open(&stack.db).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000) \
         INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
         SELECT date('now', '-' || (30 + i % 300) || ' days'), date('now', '-' || (30 + i % 300) || ' days') || 'T12:00:00.000000Z', \
                'user' || (i % 500), 'online', 'old-' || i, 'h' FROM n;",
    )
    .unwrap();
    let before: i64 = conn
        .query_row("SELECT count(*) FROM LogoutEvents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(before, 2_000_003);
    drop(conn);
    // A PAM-style writer logs in and out throughout the prune.
    let writer = stack
        .harness("bin", &["bench:300"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = stack.ctl_output(&["prune", "--older-than", "180"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Transcript::parse(&String::from_utf8_lossy(
        &writer.wait_with_output().unwrap().stdout,
    ));
    assert_eq!(t.pairs.len(), 300);
    assert!(
        t.pairs.iter().all(|p| p.1 == 0 && p.2 == 0),
        "a login failed during the prune"
    );
    let slowest = t.pairs.iter().map(|p| p.0).max().unwrap();
    assert!(
        slowest < 2_000_000,
        "a login waited {slowest} us, past its 2 s timeout"
    );
    // Old partitions gone, recent ones intact, and the writer's events all there.
    let rows = stack.query(
        "SELECT count(*), min(Date) >= date('now', '-180 days'), \
         (SELECT count(*) FROM LogoutEvents WHERE GroupName = 'bin') FROM LogoutEvents",
    );
    let kept: i64 = rows[0][0].parse().unwrap();
    let recent_expected = 2_000_000 / 300 * 151; // days 30..=180 of the generated ones
    assert!(
        (kept - 3 - 900 - recent_expected).abs() <= 10_000,
        "{rows:?}"
    );
    assert_eq!(rows[0][1], "1");
    assert_eq!(rows[0][2], "900");
}

#[test]
fn apply_and_export_round_trip_idempotently_and_refuse_bad_files_whole() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.toml");
    std::fs::write(
        &file,
        r#"
[[schedule]]
group = "students"
weekly = "Mon-Fri"
at = "18:00"
tz = "Europe/Berlin"
message = "The lab closes"
lockout = 15

[[schedule]]
group = "staff"
daily = true
at = "22:00"
tz = "UTC"
action = "warn"
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        stack.ctl(&["apply", "-f", path]).lines().last().unwrap(),
        "2 created, 0 updated, 0 deleted, 0 unchanged"
    );
    assert_eq!(
        stack.ctl(&["apply", "-f", path]).lines().last().unwrap(),
        "0 created, 0 updated, 0 deleted, 2 unchanged"
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSchedules"),
        vec![vec!["2"]]
    );

    // Export, edit one entry by Id, drop the other: one update, one delete.
    let exported = stack.ctl(&["export"]);
    assert!(
        exported.contains("[[schedule]]") && exported.contains("id = "),
        "{exported}"
    );
    let json = stack.ctl(&["--json", "export"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schedule"].as_array().unwrap().len(), 2);
    let mut entries = value["schedule"].as_array().unwrap().clone();
    entries.retain(|e| e["group"] == "students");
    entries[0]["at"] = "17:30".into();
    let edited = dir.path().join("edited.json");
    std::fs::write(
        &edited,
        serde_json::json!({ "schedule": entries }).to_string(),
    )
    .unwrap();
    let edited = edited.to_str().unwrap();
    assert_eq!(
        stack
            .ctl(&["apply", "-f", edited, "--dry-run"])
            .lines()
            .last()
            .unwrap(),
        "dry run: 0 created, 1 updated, 1 deleted, 0 unchanged"
    );
    assert_eq!(
        stack.ctl(&["apply", "-f", edited]).lines().last().unwrap(),
        "0 created, 1 updated, 1 deleted, 0 unchanged"
    );
    assert_eq!(
        stack.ctl(&["apply", "-f", edited]).lines().last().unwrap(),
        "0 created, 0 updated, 0 deleted, 1 unchanged"
    );
    assert_eq!(
        stack.query("SELECT GroupName, Event, Time FROM LogoutSchedules ORDER BY rowid"),
        vec![
            vec!["students", "created", "18:00"],
            vec!["staff", "created", "22:00"],
            vec!["students", "updated", "17:30"],
            vec!["staff", "deleted", "22:00"],
        ]
    );
    // The exported TOML applies back unchanged.
    let exported_file = dir.path().join("exported.toml");
    std::fs::write(&exported_file, stack.ctl(&["export"])).unwrap();
    assert_eq!(
        stack
            .ctl(&["apply", "-f", exported_file.to_str().unwrap()])
            .lines()
            .last()
            .unwrap(),
        "0 created, 0 updated, 0 deleted, 1 unchanged"
    );

    // A bad entry anywhere: one line naming the entry and the field, nothing written.
    let before = stack.query("SELECT count(*) FROM LogoutSchedules");
    for (text, named) in [
        ("[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"25:00\"\n", "schedule[1].at: "),
        ("[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\n[[schedule]]\ngroup = \"b\"\nweekly = \"Funday\"\nat = \"10:00\"\n", "schedule[2].weekly: "),
        ("[[schedule]]\ngroup = \"a\"\ndaily = true\nweekly = \"Mon\"\nat = \"10:00\"\n", "schedule[1].schedule: "),
        ("[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\ncolour = \"red\"\n", "unknown field `colour`"),
        ("[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\naction = \"maybe\"\n", "schedule[1].action: "),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = stack.ctl_output(&["apply", "-f", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert_eq!(stack.query("SELECT count(*) FROM LogoutSchedules"), before);
    }
}
