//! The real `forcelogoutctl` binary against temporary stores: what it prints, what it writes,
//! and how it refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_forcelogoutctl");

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/forcelogout.db");
        Fixture { _dir: dir, db }
    }

    fn run(&self, args: &[&str]) -> Output {
        ctl(&self.db, args)
    }

    /// Runs a command that must succeed and returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |row| {
            (0..n)
                .map(|i| {
                    row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                        rusqlite::types::Value::Null => "NULL".to_string(),
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    fn count(&self) -> usize {
        if !self.db.exists() {
            return 0;
        }
        self.rows("SELECT count(*) FROM LogoutSchedules")[0][0]
            .parse()
            .unwrap()
    }
}

fn ctl(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn add_update_delete_writes_history_and_the_current_set_follows() {
    let f = Fixture::new();
    let id = f.ok(&[
        "schedule",
        "add",
        "--group",
        "students",
        "--weekly",
        "Mon-Fri",
        "--at",
        "18:00",
        "--tz",
        "Europe/Berlin",
        "--message",
        "Lab closes at 18:00",
        "--lockout",
        "15",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(
        f.rows("SELECT Id, GroupName, Schedule, ScheduleDate, Time, Timezone, Days, Immediate, Kick, Event, Message, Actor, Lockout FROM LogoutSchedules"),
        vec![vec![
            id, "students", "Weekly", "NULL", "18:00", "Europe/Berlin", "62", "0", "1", "created",
            "Lab closes at 18:00", "root", "15"
        ]]
    );

    // Update by an 8-character prefix: only the given fields change.
    let out = f.ok(&["schedule", "update", &id[..8], "--at", "19:30", "--warn"]);
    assert_eq!(out, format!("updated {id}\n"));
    let latest = f.rows("SELECT Event, Time, Kick, GroupName, Days, Message, Lockout FROM LogoutSchedules ORDER BY rowid DESC LIMIT 1");
    assert_eq!(
        latest,
        vec![vec![
            "updated",
            "19:30",
            "0",
            "students",
            "62",
            "Lab closes at 18:00",
            "15"
        ]]
    );

    let list = f.ok(&["schedule", "list"]);
    assert!(list.starts_with("ID "), "{list}");
    assert!(
        list.contains(&id[..8]) && list.contains("19:30 Europe/Berlin") && list.contains("warn"),
        "{list}"
    );

    assert_eq!(f.ok(&["schedule", "delete", id]), format!("deleted {id}\n"));
    assert_eq!(
        f.rows("SELECT Event FROM LogoutSchedules ORDER BY rowid"),
        vec![vec!["created"], vec!["updated"], vec!["deleted"]]
    );
    assert_eq!(
        f.rows("SELECT count(*) FROM LogoutSchedulesCurrent"),
        vec![vec!["0"]]
    );
    let list = f.ok(&["schedule", "list"]);
    assert_eq!(list.lines().count(), 1, "only the header: {list}");

    let history: serde_json::Value =
        serde_json::from_str(&f.ok(&["--json", "schedule", "list", "--history"])).unwrap();
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["created", "updated", "deleted"]);
    let text = f.ok(&["schedule", "list", "--history"]);
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn list_filters_by_group_and_json_has_every_column_and_the_next_logout() {
    let f = Fixture::new();
    f.ok(&[
        "schedule", "add", "--group", "alice", "--daily", "--at", "07:00", "--tz", "UTC",
    ]);
    f.ok(&[
        "schedule",
        "add",
        "--group",
        "bob",
        "--once",
        "2099-01-01",
        "--at",
        "12:00",
        "--tz",
        "UTC",
        "--kick",
    ]);
    let text = f.ok(&["--json", "schedule", "list", "--group", "bob"]);
    // Keys in the table's column order (serde_json::Value would sort them: read the text).
    let positions: Vec<usize> = [
        "Date",
        "Id",
        "GroupName",
        "UpdateTime",
        "Schedule",
        "ScheduleDate",
        "Time",
        "Timezone",
        "Days",
        "Immediate",
        "Kick",
        "Event",
        "Message",
        "Actor",
        "Lockout",
        "DueAt",
        "Next",
    ]
    .iter()
    .map(|key| {
        text.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} missing: {text}"))
    })
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "column order: {text}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ScheduleDate"], "2099-01-01");
    assert_eq!(rows[0]["Next"], "2099-01-01T12:00:00.000000Z");
    assert_eq!(rows[0]["Kick"], true);
}

#[test]
fn show_prints_the_schedule_its_versions_and_next_logouts() {
    let f = Fixture::new();
    let id = f.ok(&[
        "schedule",
        "add",
        "--group",
        "lab",
        "--weekly",
        "Sat,Sun",
        "--at",
        "09:15",
        "--tz",
        "Asia/Tokyo",
    ]);
    let id = id.trim();
    f.ok(&["schedule", "update", id, "--message", "Weekend maintenance"]);
    let text = f.ok(&["schedule", "show", &id[..6]]);
    assert!(text.contains(&format!("Id:        {id}")), "{text}");
    assert!(text.contains("Weekly Sun,Sat 09:15 Asia/Tokyo"), "{text}");
    assert!(text.contains("Versions:  2"), "{text}");
    assert!(text.contains("Weekend maintenance"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&f.ok(&["--json", "schedule", "show", id])).unwrap();
    assert_eq!(json["versions"].as_array().unwrap().len(), 2);
    assert_eq!(json["upcoming"].as_array().unwrap().len(), 3);
    assert_eq!(json["Days"], 65);
}

#[test]
fn next_lists_upcoming_logouts_in_utc_and_the_zone() {
    let f = Fixture::new();
    let berlin = f.ok(&[
        "schedule",
        "add",
        "--group",
        "students",
        "--weekly",
        "weekdays",
        "--at",
        "18:00",
        "--tz",
        "Europe/Berlin",
    ]);
    let tokyo = f.ok(&[
        "schedule",
        "add",
        "--group",
        "night",
        "--daily",
        "--at",
        "02:00",
        "--tz",
        "Asia/Tokyo",
        "--warn",
    ]);
    let (berlin, tokyo) = (berlin.trim(), tokyo.trim());
    let json: serde_json::Value = serde_json::from_str(&f.ok(&[
        "--json",
        "next",
        "--count",
        "4",
        "--after",
        "2026-11-27T12:00:00Z",
    ]))
    .unwrap();
    let got: Vec<[&str; 3]> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            [
                r["UTC"].as_str().unwrap(),
                r["Local"].as_str().unwrap(),
                r["Id"].as_str().unwrap(),
            ]
        })
        .collect();
    // Friday 18:00 in Berlin and Saturday 02:00 in Tokyo are the same instant: ordered by Id.
    let mut first_two = vec![
        [
            "2026-11-27T17:00:00.000000Z",
            "2026-11-27 18:00 +01:00",
            berlin,
        ],
        [
            "2026-11-27T17:00:00.000000Z",
            "2026-11-28 02:00 +09:00",
            tokyo,
        ],
    ];
    first_two.sort_by_key(|row| row[2]);
    let mut expected = first_two;
    expected.push([
        "2026-11-28T17:00:00.000000Z",
        "2026-11-29 02:00 +09:00",
        tokyo,
    ]);
    expected.push([
        "2026-11-29T17:00:00.000000Z",
        "2026-11-30 02:00 +09:00",
        tokyo,
    ]);
    assert_eq!(got, expected);

    // One schedule: its own next firings (the weekend is skipped).
    let json: serde_json::Value = serde_json::from_str(&f.ok(&[
        "--json",
        "next",
        &berlin[..8],
        "--count",
        "2",
        "--after",
        "2026-11-27T12:00:00Z",
    ]))
    .unwrap();
    let utc: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["UTC"].as_str().unwrap())
        .collect();
    assert_eq!(
        utc,
        ["2026-11-27T17:00:00.000000Z", "2026-11-30T17:00:00.000000Z"]
    );

    let table = f.ok(&["next", "--count", "1", "--after", "2026-11-28T00:00:00Z"]);
    assert_eq!(
        table,
        format!(
            "UTC               LOCAL                    ZONE        ID        GROUP  ACTION\n\
             2026-11-28 17:00  2026-11-29 02:00 +09:00  Asia/Tokyo  {}  night  warn\n",
            &tokyo[..8]
        )
    );
}

#[test]
fn the_zone_defaults_to_the_hosts_by_name() {
    let f = Fixture::new();
    let out = Command::new(BIN)
        .arg("--db")
        .arg(&f.db)
        .args([
            "schedule", "add", "--group", "g", "--daily", "--at", "10:00",
        ])
        .env("TZ", "America/New_York")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        f.rows("SELECT Timezone FROM LogoutSchedules"),
        vec![vec!["America/New_York"]]
    );
}

#[test]
fn the_store_comes_from_the_environment_when_no_db_is_given() {
    let f = Fixture::new();
    let out = Command::new(BIN)
        .args([
            "schedule", "add", "--group", "g", "--daily", "--at", "10:00", "--tz", "UTC",
        ])
        .env("FORCELOGOUT_DB", &f.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.count(), 1);
}

#[test]
fn readers_never_create_the_store() {
    let f = Fixture::new();
    let list = f.ok(&["schedule", "list"]);
    assert_eq!(list.lines().count(), 1);
    assert_eq!(f.ok(&["--json", "next"]).trim(), "[]");
    assert!(!f.db.exists());
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["schedule", "next", "--db", "--json", "Exit status"] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let out = Command::new(BIN)
        .args(["schedule", "add", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["--group", "--once", "--weekly", "Mon-Fri", "--lockout"] {
        assert!(help.contains(word), "{word}: {help}");
    }
    assert!(Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap()
        .status
        .success());
}

/// Each case: arguments, and the field (or flag) the one-line message must name.
fn invalid_cases(id: &str) -> Vec<(Vec<String>, &'static str)> {
    let add = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["schedule", "add"].iter().map(|s| s.to_string()).collect();
        let mut base: Vec<(&str, Option<&str>)> = vec![
            ("--group", Some("students")),
            ("--daily", None),
            ("--at", Some("18:00")),
            ("--tz", Some("UTC")),
        ];
        // A given flag replaces the base one; a kind flag replaces --daily.
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            let name = flag.split('=').next().unwrap();
            base.retain(|(f, _)| {
                *f != name && !(matches!(name, "--once" | "--weekly") && *f == "--daily")
            });
        }
        for (flag, value) in base {
            args.push(flag.to_string());
            if let Some(v) = value {
                args.push(v.to_string());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let without = |flag: &str| -> Vec<String> {
        let mut args = add(&[]);
        if let Some(i) = args.iter().position(|a| a == flag) {
            args.remove(i);
            if flag != "--daily" {
                args.remove(i);
            }
        }
        args
    };
    let words = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
    let long_name = "g".repeat(257);
    let long_message = "m".repeat(1001);
    let many_lines = "line\n".repeat(21);
    vec![
        (add(&["--group="]), "group"),
        (add(&["--group=-rf"]), "group"),
        (add(&["--group", "1000"]), "group"),
        (add(&["--group", "two words"]), "group"),
        (add(&["--group", "a;b"]), "group"),
        (add(&["--group", &long_name]), "group"),
        (add(&["--group", "x/y"]), "group"),
        (add(&["--group", ".."]), "group"),
        (add(&["--group", "café"]), "group"),
        (without("--group"), "group"),
        (without("--at"), "at"),
        (without("--daily"), "schedule"),
        (add(&["--at", "24:00"]), "at"),
        (add(&["--at", "7:00"]), "at"),
        (add(&["--at", "07:60"]), "at"),
        (add(&["--at", "0700"]), "at"),
        (add(&["--at", "ab:cd"]), "at"),
        (add(&["--at="]), "at"),
        (add(&["--at", "07:00:00"]), "at"),
        (add(&["--at", "+7:00"]), "at"),
        (add(&["--tz", "Mars/Olympus"]), "tz"),
        (add(&["--tz", "europe/berlin"]), "tz"),
        (add(&["--tz="]), "tz"),
        (add(&["--tz", "UTC+2"]), "tz"),
        (add(&["--once", "2027-02-29"]), "once"),
        (add(&["--once", "2026-13-01"]), "once"),
        (add(&["--once", "2026-1-1"]), "once"),
        (add(&["--once", "tomorrow"]), "once"),
        (add(&["--once", "2020-01-01"]), "once"),
        (add(&["--once="]), "once"),
        (add(&["--weekly", "0"]), "weekly"),
        (add(&["--weekly", "128"]), "weekly"),
        (add(&["--weekly", "Funday"]), "weekly"),
        (add(&["--weekly="]), "weekly"),
        (add(&["--weekly", "Mon-"]), "weekly"),
        (add(&["--weekly=-1"]), "weekly"),
        (add(&["--weekly", "Mon,,Fri"]), "weekly"),
        (add(&["--lockout=-5"]), "lockout"),
        (add(&["--lockout", "1441"]), "lockout"),
        (add(&["--lockout", "abc"]), "lockout"),
        (add(&["--lockout", "1.5"]), "lockout"),
        (add(&["--message", "\u{1b}[2Jwiped"]), "message"),
        (add(&["--message", &long_message]), "message"),
        (add(&["--message", &many_lines]), "message"),
        (add(&["--message", "bell\u{7}"]), "message"),
        (add(&["--message", "bidi \u{202e}txt"]), "message"),
        (add(&["--message", "carriage\rreturn"]), "message"),
        (add(&["--daily", "--weekly", "Mon"]), "--daily"),
        (add(&["--kick", "--warn"]), "--kick"),
        (add(&["--frobnicate"]), "--frobnicate"),
        (words(&["schedule", "update", id]), "update"),
        (words(&["schedule", "update", "abc", "--at", "10:00"]), "id"),
        (
            words(&["schedule", "update", "zzzz", "--at", "10:00"]),
            "id",
        ),
        (
            words(&["schedule", "update", "ffffffff", "--at", "10:00"]),
            "id",
        ),
        (words(&["schedule", "update", id, "--at", "25:00"]), "at"),
        (
            words(&["schedule", "update", id, "--once", "2001-01-01"]),
            "once",
        ),
        (words(&["schedule", "delete", "ffffffff"]), "id"),
        (words(&["schedule", "show", "x"]), "id"),
        (words(&["next", "--count", "0"]), "count"),
        (words(&["next", "--count", "abc"]), "count"),
        (words(&["next", "--count", "1001"]), "count"),
        (words(&["next", "--after", "yesterday"]), "after"),
        (words(&["next", "ffffffff"]), "id"),
    ]
}

#[test]
fn invalid_input_exits_2_with_one_line_naming_the_field_and_writes_nothing() {
    let f = Fixture::new();
    let id = f.ok(&[
        "schedule", "add", "--group", "keep", "--daily", "--at", "06:00", "--tz", "UTC",
    ]);
    let id = id.trim().to_string();
    let cases = invalid_cases(&id);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (args, field) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = f.run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{argv:?}: one line, got {stderr:?}"
        );
        let named = if field.starts_with("--") {
            stderr.contains(field)
        } else {
            stderr.starts_with(&format!("forcelogoutctl: {field}: "))
        };
        assert!(
            named,
            "{argv:?}: expected the message to name {field}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{argv:?}");
        assert!(
            !stderr.contains('\u{1b}'),
            "{argv:?}: escape reached the terminal"
        );
        assert_eq!(f.count(), 1, "{argv:?} wrote a row");
    }
}

#[test]
#[ignore = "needs root: to run as another user"]
fn a_caller_who_cannot_write_the_store_gets_exit_4() {
    let f = Fixture::new();
    f.ok(&[
        "schedule", "add", "--group", "g", "--daily", "--at", "06:00", "--tz", "UTC",
    ]);
    let as_nobody = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", "nobody", "--", BIN, "--db"])
            .arg(&f.db)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &[
            "schedule", "add", "--group", "g", "--daily", "--at", "07:00", "--tz", "UTC",
        ][..],
        &["schedule", "delete", "ffffffff"][..],
        &["schedule", "list"][..],
    ] {
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("forcelogoutctl: permission denied: "),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1);
    }
    assert_eq!(f.count(), 1);
    // A store in a directory nobody may create in.
    let fresh = f.db.parent().unwrap().join("sub/new.db");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", BIN, "--db"])
        .arg(&fresh)
        .args([
            "schedule", "add", "--group", "g", "--daily", "--at", "07:00", "--tz", "UTC",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fresh.exists());
}

/// A name no host has: the logouts of these tests target nobody.
const NOBODY_HERE: &str = "flo-no-such-group-21";

/// Every row of the schedules' history, to show that a refused command wrote nothing.
fn history(f: &Fixture) -> Vec<Vec<String>> {
    f.rows("SELECT rowid, Id, Event, Time, Schedule, Immediate, Lockout FROM LogoutSchedules ORDER BY rowid")
}

#[test]
fn an_immediate_logout_is_refused_by_update_and_named() {
    let f = Fixture::new();
    let out = f.run(&[
        "logout",
        NOBODY_HERE,
        "--kick",
        "--in",
        "0s",
        "--lockout",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown name is allowed (a group may come later) but warned about.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "warning: no user or group named {NOBODY_HERE:?} is known"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = f.rows("SELECT Id FROM LogoutSchedules")[0][0].clone();
    let before = history(&f);
    for args in [
        vec!["schedule", "update", &id, "--daily"],
        vec!["schedule", "update", &id[..8], "--at", "03:00"],
        vec!["schedule", "update", &id, "--lockout", "0"],
        vec!["schedule", "update", &id, "--daily", "--dry-run"],
    ] {
        let out = f.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "schedule {id} is an immediate logout; it cannot be updated: issue a new logout or unlock"
            )),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
        assert_eq!(history(&f), before, "{args:?} wrote");
    }
}

#[test]
fn list_marks_immediate_logouts_and_hides_those_that_are_over() {
    let f = Fixture::new();
    f.ok(&[
        "schedule", "add", "--group", "g", "--daily", "--at", "06:00", "--tz", "UTC",
    ]);
    // Over at once: a warning has no lockout, and it took effect.
    f.ok(&["logout", NOBODY_HERE, "--warn", "--in", "0s"]);
    // Not over: its lockout lasts an hour.
    f.ok(&["logout", NOBODY_HERE, "--in", "0s", "--lockout", "1h"]);
    let ids = f.rows("SELECT Id, Lockout FROM LogoutSchedules WHERE Immediate = 1 ORDER BY rowid");
    let (over, locking) = (&ids[0][0], &ids[1][0]);
    assert_eq!(ids[1][1], "60");

    let list = f.ok(&["schedule", "list"]);
    assert!(!list.contains(&over[..8]), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with(&locking[..8]))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("Immediate (logout) "), "{row}");
    assert!(
        list.lines().any(|l| l.contains("Daily 06:00 UTC")),
        "{list}"
    );
    assert_eq!(list.lines().count(), 3, "{list}");

    let all = f.ok(&["schedule", "list", "--all"]);
    let row = all
        .lines()
        .find(|l| l.starts_with(&over[..8]))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(row.contains("Immediate (logout) "), "{row}");
    assert_eq!(all.lines().count(), 4, "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&f.ok(&["--json", "schedule", "list"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
}

#[test]
fn prune_dry_run_says_what_it_would_remove_and_deletes_nothing() {
    let f = Fixture::new();
    f.ok(&[
        "schedule", "add", "--group", "g", "--daily", "--at", "06:00", "--tz", "UTC",
    ]);
    let conn = rusqlite::Connection::open(&f.db).unwrap();
    conn.execute_batch(
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) VALUES \
         (date('now', '-40 days'), date('now', '-40 days') || 'T12:00:00.000000Z', 'a', 'online', 'e1', 'h'), \
         (date('now', '-35 days'), date('now', '-35 days') || 'T12:00:00.000000Z', 'a', 'offline', 'e2', 'h'), \
         (date('now', '-31 days'), date('now', '-31 days') || 'T12:00:00.000000Z', 'b', 'online', 'e3', 'h'), \
         (date('now', '-1 days'), date('now', '-1 days') || 'T12:00:00.000000Z', 'b', 'offline', 'e4', 'h');",
    )
    .unwrap();
    drop(conn);
    let events = || f.rows("SELECT EventIdentifier FROM LogoutEvents ORDER BY ReplayId");
    let before = events();
    let cutoff = f.rows("SELECT date('now', '-30 days')")[0][0].clone();

    let out = f.ok(&["prune", "--older-than", "30", "--dry-run"]);
    assert_eq!(
        out,
        format!("dry run: would prune 3 events dated before {cutoff}\n")
    );
    assert_eq!(events(), before);
    let json: serde_json::Value =
        serde_json::from_str(&f.ok(&["--json", "prune", "--older-than", "30", "--dry-run"]))
            .unwrap();
    assert_eq!(json["WouldPrune"], 3, "{json}");
    assert_eq!(events(), before);

    // The real prune removes what the dry run said.
    let out = f.ok(&["prune", "--older-than", "30"]);
    assert_eq!(out, format!("pruned 3 events dated before {cutoff}\n"));
    assert_eq!(events(), vec![vec!["e4"]]);
}
