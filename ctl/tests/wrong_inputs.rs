//! Every wrong input an administrator can give, from the command line, an `apply` file or the
//! configuration: exit 2 (or 0 with a warning), one line on stderr naming the argument, the
//! field or the key, and the store exactly as it was (or still absent).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_forcelogoutctl");

/// Where a case's file goes.
enum File {
    None,
    /// Given to `apply -f {file}` under this name.
    Apply(&'static str, &'static str),
    /// The configuration (`FORCELOGOUT_CONFIG`).
    Config(&'static str),
}

struct Case {
    /// `{file}` is the case's file; `<ff>` in an argument is the byte 0xFF (not UTF-8).
    argv: &'static [&'static str],
    file: File,
    code: i32,
    /// What the one line must contain: the argument's, field's or key's name.
    names: &'static str,
    /// Refused by what is in the store (a past Once is refused when it would be written):
    /// run against an existing store only.
    needs_store: bool,
}

const fn cli(argv: &'static [&'static str], names: &'static str) -> Case {
    Case {
        argv,
        file: File::None,
        code: 2,
        names,
        needs_store: false,
    }
}

const fn warns(argv: &'static [&'static str], names: &'static str) -> Case {
    Case {
        argv,
        file: File::None,
        code: 0,
        names,
        needs_store: false,
    }
}

const fn apply(name: &'static str, text: &'static str, names: &'static str) -> Case {
    Case {
        argv: &["apply", "-f", "{file}"],
        file: File::Apply(name, text),
        code: 2,
        names,
        needs_store: false,
    }
}

const fn config(text: &'static str, names: &'static str) -> Case {
    Case {
        argv: &["schedule", "list"],
        file: File::Config(text),
        code: 2,
        names,
        needs_store: false,
    }
}

const ADD: &str = "schedule add --group users";

fn cases() -> Vec<Case> {
    let mut cases = command_line_cases();
    cases.extend(schedule_add_cases());
    cases.extend(apply_file_cases());
    cases.extend(config_cases());
    cases
}

fn command_line_cases() -> Vec<Case> {
    vec![
        cli(&["logout", "users", "--in", "-5m"], "in: "),
        cli(&["logout", "users", "--in", "5"], "in: "),
        cli(&["logout", "users", "--in", "5x"], "in: "),
        cli(&["logout", "users", "--in", ""], "in: "),
        cli(&["logout", "users", "--in", "31d"], "in: "),
        cli(&["logout", "users", "--in"], "--in"),
        cli(&["logout", "users", "--lockout", "-1"], "lockout: "),
        cli(&["logout", "users", "--lockout", "1441"], "lockout: "),
        cli(&["logout", "users", "--lockout", "2d"], "lockout: "),
        cli(&["logout", "users", "--lockout", "abc"], "lockout: "),
        cli(
            &["logout", "users", "--warn", "--lockout", "15"],
            "lockout: ",
        ),
        cli(&["logout"], "GROUP"),
        cli(&["logout", "users", "extra"], "\"extra\""),
        cli(&["logout", "users", "--kick", "--warn"], "--warn"),
        cli(&["logout", "users", "--message", "bad<ff>"], "--message"),
        cli(&["logout", "<ff>"], "argument 4"),
        cli(&["logout", ""], "group: "),
        cli(&["logout", "--", "-bob"], "group: "),
        cli(&["logout", "1000"], "group: "),
        cli(&["logout", "a;b"], "group: "),
        cli(
            &["logout", "users", "--message", "\u{1b}[31mred"],
            "message: ",
        ),
        cli(
            &["logout", "users", "--message", "\u{202e}evil"],
            "message: ",
        ),
        cli(&["logout", "users", "--frob"], "--frob"),
        cli(&["logout", "users", "--hosts", "lab1"], "hosts: "),
        cli(&["schedule", "update"], "ID"),
        cli(&["schedule", "update", "abcd"], "update: "),
        cli(&["schedule", "delete"], "ID"),
        cli(&["schedule", "show"], "ID"),
        cli(&["schedule", "frob"], "\"frob\""),
        cli(&["schedule"], "COMMAND"),
        cli(&[], "COMMAND"),
        cli(&["frob"], "\"frob\""),
        cli(&["next", "--count", "-3"], "count: "),
        cli(&["next", "--count", "0"], "count: "),
        cli(&["next", "--count", "abc"], "count: "),
        cli(&["next", "--after", "yesterday"], "after: "),
        cli(&["prune", "--older-than", "-1"], "older"),
        cli(&["prune", "--older-than", "x"], "older"),
        cli(&["prune"], "--older-than"),
        cli(&["events", "--since", "2026-13-01"], "since: "),
        cli(&["events", "--event", "frob"], "event: "),
        cli(&["events", "--after-replay-id", "-1"], "replay"),
        cli(&["apply"], "--file"),
        cli(&["apply", "-f", "/nonexistent/forcelogout.toml"], "file: "),
        cli(&["apply", "-f", "/tmp/<ff>.toml"], "-f"),
        cli(&["--json", "--db", "/tmp/<ff>", "schedule", "list"], "--db"),
        warns(
            &["logout", "nosuchuser-wrong-inputs", "--dry-run"],
            "nosuchuser-wrong-inputs",
        ),
    ]
}

fn schedule_add_cases() -> Vec<Case> {
    // Each row is `ADD` and these arguments.
    let rows: &[(&[&str], &str)] = &[
        (&["--at", "10:00"], "schedule: "),
        (&["--daily"], "at: "),
        (&["--daily", "--at", "25:00"], "at: "),
        (&["--daily", "--at", "9:00"], "at: "),
        (&["--daily", "--at", "10:60"], "at: "),
        (&["--daily", "--at", ""], "at: "),
        (&["--daily", "--at", "-10:00"], "at"),
        (&["--once", "2020-01-01", "--at", "10:00"], "once: "),
        (&["--once", "2030-02-30", "--at", "10:00"], "once: "),
        (&["--once", "30-01-2030", "--at", "10:00"], "once: "),
        (&["--once", "tomorrow", "--at", "10:00"], "once: "),
        (&["--weekly", "Funday", "--at", "10:00"], "weekly: "),
        (&["--weekly", "0", "--at", "10:00"], "weekly: "),
        (&["--weekly", "128", "--at", "10:00"], "weekly: "),
        (&["--weekly", "", "--at", "10:00"], "weekly: "),
        (
            &["--daily", "--at", "10:00", "--tz", "Mars/Olympus"],
            "tz: ",
        ),
        (
            &["--daily", "--at", "10:00", "--tz", "europe/berlin"],
            "Europe/Berlin",
        ),
        (&["--daily", "--at", "10:00", "--tz", ""], "tz: "),
        (&["--daily", "--at", "10:00", "--tz", "<ff>"], "--tz"),
        (
            &["--daily", "--at", "10:00", "--warn", "--lockout", "15"],
            "lockout: ",
        ),
        (
            &["--daily", "--at", "10:00", "--lockout", "-5"],
            "lockout: ",
        ),
        (
            &["--daily", "--at", "10:00", "--lockout", "1441"],
            "lockout: ",
        ),
        (
            &["--daily", "--at", "10:00", "--lockout", "5x"],
            "lockout: ",
        ),
        (&["--daily", "--at", "10:00", "--lockout"], "--lockout"),
        (
            &["--daily", "--once", "2030-01-01", "--at", "10:00"],
            "--once",
        ),
        (&["--daily", "--weekly", "Mon", "--at", "10:00"], "--weekly"),
        (&["--daily", "--at", "10:00", "--kick", "--warn"], "--warn"),
        (
            &["--daily", "--at", "10:00", "--message", "<ff>"],
            "--message",
        ),
        (
            &["--daily", "--at", "10:00", "--message", "\u{7}"],
            "message: ",
        ),
        (&["--daily", "--at", "10:00", "--hosts", "lab1"], "hosts: "),
        (&["--daily", "--at", "10:00", "--grop", "x"], "--grop"),
    ];
    let mut cases: Vec<Case> = rows
        .iter()
        .map(|(extra, names)| {
            let mut argv: Vec<&'static str> = ADD.split(' ').collect();
            argv.extend_from_slice(extra);
            cli(Vec::leak(argv), names)
        })
        .collect();
    cases.push(cli(
        &["schedule", "add", "--group", "", "--daily", "--at", "10:00"],
        "group: ",
    ));
    cases.push(cli(
        &["schedule", "add", "--daily", "--at", "10:00", "--group"],
        "--group",
    ));
    for zone in ["EST", "MST", "HST"] {
        let argv = [
            "schedule", "add", "--group", "users", "--daily", "--at", "10:00",
        ];
        let mut argv = argv.to_vec();
        argv.extend_from_slice(&["--tz", zone, "--dry-run"]);
        cases.push(warns(Vec::leak(argv), zone));
    }
    cases
}

fn apply_file_cases() -> Vec<Case> {
    vec![
        apply("bad.toml", "[[schedule]\n", "bad.toml:1:"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\n", "bad.toml:2:"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = 10:00\n", "bad.toml:4:"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\ncolour = \"red\"\n", "schedule[1].colour"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = 10\n", "schedule[1].at"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = \"yes\"\nat = \"10:00\"\n", "schedule[1].daily"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\n", "`at`"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"25:00\"\n", "schedule[1].at"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\n[[schedule]]\ngroup = \"b\"\nweekly = \"Funday\"\nat = \"10:00\"\n", "schedule[2].weekly"),
        Case {
            needs_store: true,
            ..apply("bad.toml", "[[schedule]]\ngroup = \"a\"\nonce = \"2020-01-01\"\nat = \"10:00\"\n", "once: ")
        },
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\nonce = \"2030-02-30\"\nat = \"10:00\"\n", "schedule[1].once"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\ntz = \"europe/berlin\"\n", "schedule[1].tz"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\naction = \"maybe\"\n", "schedule[1].action"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\naction = \"warn\"\nlockout = 15\n", "schedule[1].lockout"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\nlockout = -1\n", "lockout"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\nlockout = \"2d\"\n", "schedule[1].lockout"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\nlockout = \"-5m\"\n", "schedule[1].lockout"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\nmessage = \"\\u001b[2J\"\n", "schedule[1].message"),
        apply("bad.toml", "[[schedule]]\ngroup = \"\"\ndaily = true\nat = \"10:00\"\n", "schedule[1].group"),
        apply("bad.toml", "[[schedule]]\nid = \"6f6c\"\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\n", "schedule[1].id"),
        apply("bad.toml", "[[schedule]]\ngroup = \"a\"\ndaily = true\nweekly = \"Mon\"\nat = \"10:00\"\n", "schedule[1].schedule"),
        apply("bad.toml", "schedules = []\n", "schedules"),
        apply("bad.json", "{\"schedule\": [", "bad.json:1:"),
        apply("bad.json", "{\"schedule\": [{\"group\": \"a\", \"daily\": true, \"at\": \"10:00\", \"colour\": 1}]}", "colour"),
        apply("bad.json", "{\"schedule\": [{\"group\": \"a\", \"daily\": true, \"at\": \"7pm\"}]}", "schedule[1].at"),
    ]
}

fn config_cases() -> Vec<Case> {
    vec![
        config("admin_group = \n", "fl.toml:1:"),
        config("admin_group = \"ops\"\n[fleet\n", "fl.toml:2:"),
        config("idle_timout = \"5m\"\n", "key `idle_timout`"),
        config("immediate_warning = 60\n", "key `immediate_warning`"),
        config("immediate_warning = \"60\"\n", "key `immediate_warning`"),
        config("scheduled_warning = \"-5m\"\n", "key `scheduled_warning`"),
        config("notice_ahead = \"forever\"\n", "key `notice_ahead`"),
        config("idle_timeout = \"5\"\n", "key `idle_timeout`"),
        config("catch_up = \"99d\"\n", "key `catch_up`"),
        config("hook_timeout = \"x\"\n", "key `hook_timeout`"),
        config("admin_group = \"two words\"\n", "key `admin_group`"),
        config("exempt_groups = \"sudo\"\n", "key `exempt_groups`"),
        config("exempt_groups = [\"a;b\"]\n", "key `exempt_groups`"),
        config("retention_days = -3\n", "key `retention_days`"),
        config("syslog = \"yes\"\n", "key `syslog`"),
        config("[fleet]\nhost = \"lab1\"\n", "`url`"),
        config("[fleet]\nurl = \"\"\n", "fl.toml:2: key `fleet.url`"),
        config("[fleet]\nurl = \"x\"\nlabel = []\n", "key `label`"),
        config(
            "# comment\n\nidle_timeout = \"5\"\n",
            "fl.toml:3: key `idle_timeout`",
        ),
    ]
}

/// The store's rows as counts, or `None` when there is no store file.
fn state(db: &Path) -> Option<(i64, i64)> {
    if !db.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    Some((count("LogoutSchedules"), count("LogoutEvents")))
}

fn run(db: &Path, config: &Path, argv: &[OsString]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(argv)
        .env("TZ", "UTC")
        .env("FORCELOGOUT_CONFIG", config)
        .env_remove("FORCELOGOUT_DB")
        .output()
        .unwrap()
}

fn argv(case: &Case, file: &Path) -> Vec<OsString> {
    case.argv
        .iter()
        .map(|a| {
            let a = a.replace("{file}", file.to_str().unwrap());
            let mut bytes = Vec::new();
            for (i, part) in a.split("<ff>").enumerate() {
                if i > 0 {
                    bytes.push(0xFF);
                }
                bytes.extend_from_slice(part.as_bytes());
            }
            OsString::from_vec(bytes)
        })
        .collect()
}

/// Runs every case against `db`; returns the failures, each described.
fn check_all(db: &Path, dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        if case.needs_store && !db.exists() {
            continue;
        }
        let file = dir.join(match case.file {
            File::Apply(name, _) => name,
            _ => "unused",
        });
        let config = dir.join("fl.toml");
        let _ = std::fs::remove_file(&config);
        match case.file {
            File::Apply(_, text) => std::fs::write(&file, text).unwrap(),
            File::Config(text) => std::fs::write(&config, text).unwrap(),
            File::None => {}
        }
        let before = state(db);
        let out = run(db, &config, &argv(case, &file));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!(
            "case {i} {:?}: exit {:?}, stderr {stderr:?}",
            case.argv,
            out.status.code()
        );
        if out.status.code() != Some(case.code) {
            failures.push(format!("{what}: want exit {}", case.code));
        } else if stderr
            .lines()
            // Where there is no store, a dry run also says so, in a line of its own.
            .filter(|l| !l.contains(": warning: no store at "))
            .count()
            != 1
            || !stderr.starts_with("forcelogoutctl: ")
        {
            failures.push(format!("{what}: want one line"));
        } else if !stderr.contains(case.names) {
            failures.push(format!("{what}: want it to name {:?}", case.names));
        } else if state(db) != before {
            failures.push(format!(
                "{what}: the store changed: {before:?} -> {:?}",
                state(db)
            ));
        }
    }
    failures
}

#[test]
fn every_wrong_input_is_one_line_naming_it_and_writes_nothing() {
    let cases = cases();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fl.db");
    // A store with a schedule and an event in it, to see that nothing is added or removed.
    let none = dir.path().join("none.toml");
    let seed = [
        "schedule", "add", "--group", "users", "--daily", "--at", "10:00",
    ]
    .map(OsString::from);
    let out = run(&db, &none, &seed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(matches!(state(&db), Some((1, _))));
    let failures = check_all(&db, dir.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_input_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("absent/fl.db");
    let failures = check_all(&db, dir.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!db.exists() && !db.parent().unwrap().exists());
}

/// With `--fleet`, wrong input is refused as it is on this host's store (exit 2, one line
/// naming the argument) before any server is contacted: here none listens, and only a correct
/// command gets as far as finding that out (exit 1).
#[test]
fn with_fleet_wrong_input_is_refused_before_the_server_is_contacted() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "--fleet=host=127.0.0.1 port={closed_port} dbname=fleet user=admin sslmode=disable"
    );
    let fleet = |args: &[&str]| {
        let mut argv = vec![OsString::from(&url)];
        argv.extend(args.iter().map(OsString::from));
        run(
            &dir.path().join("unused.db"),
            &dir.path().join("none.toml"),
            &argv,
        )
    };
    let add = ["schedule", "add", "--group", "g", "--daily", "--at"];
    for (args, field) in [
        (&[&add[..], &["10:00", "--dry-run"]].concat()[..], "dry-run"),
        (
            &[&add[..], &["10:00", "--hosts", "@"]].concat()[..],
            "hosts",
        ),
        (&[&add[..], &["25:00"]].concat()[..], "at"),
        (&["schedule", "update", "abcd"][..], "update"),
        (&["logout", "g", "--dry-run"][..], "dry-run"),
        (&["logout", "g", "--in", "soon"][..], "in"),
        (&["next", "--count", "0"][..], "count"),
        (&["events", "--follow"][..], "follow"),
        (&["events", "--after-replay-id", "3"][..], "after-replay-id"),
        (&["events", "--event", "exploded"][..], "event"),
        (&["events", "--since", "yesterday"][..], "since"),
        (&["sessions"][..], "fleet"),
    ] {
        let out = fleet(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("forcelogoutctl: {field}: ")),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Centrally an update may change only the hosts, and says so.
    let out = fleet(&["schedule", "update", "abcd"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hosts"));
    // A correct command does contact the server, and reports it unreachable.
    let out = fleet(&["schedule", "list"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("unused.db").exists());
}
