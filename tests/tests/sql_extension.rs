//! The SQLite extension in Debian's own `sqlite3` shell: tables, functions, indexes, errors,
//! read-only access that never blocks writers, and agreement with `forcelogoutctl next`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use forcelogout_tests::{
    ctl_path, extension_load_path, sqlite3, PamStack, Rng, Session, Transcript,
};

/// A store with two schedules (one deleted), a finished login of `daemon`, and a live session
/// of `bin` (closed when the returned session is dropped at the end of the test).
fn populated() -> (PamStack, Session) {
    let stack = PamStack::standard("");
    stack.ctl(&[
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
        "Lab closes",
    ]);
    let gone = stack.ctl(&[
        "schedule", "add", "--group", "staff", "--daily", "--at", "20:00", "--tz", "UTC",
    ]);
    stack.ctl(&["schedule", "delete", gone.trim()]);
    let t = stack.run("daemon", &["open", "close"]);
    assert!(t.steps.iter().all(|s| s.1 == 0));
    let mut live = stack.spawn("bin", &["open", "wait", "close"]);
    assert_eq!(live.until("open"), 0);
    (stack, live)
}

#[test]
fn the_tables_have_the_stores_columns_and_rows() {
    let (stack, _live) = populated();
    let (out, err, status) = sqlite3(
        Some(&stack.db),
        "SELECT group_concat(name, ',') FROM pragma_table_info('LogoutEvents');\n\
         SELECT group_concat(name, ',') FROM pragma_table_info('LogoutSchedules');\n\
         SELECT count(*) FROM pragma_table_info('LogoutSessions');\n\
         SELECT GroupName || ':' || Event FROM LogoutEvents ORDER BY ReplayId;\n\
         SELECT Event FROM LogoutSchedules ORDER BY rowid;\n\
         SELECT GroupName, decode_days(Days) FROM LogoutSchedulesCurrent;\n\
         SELECT GroupName, Service FROM LogoutSessions;",
    );
    assert!(status.success() && err.is_empty(), "{err}");
    assert_eq!(
        out,
        "Date,Timestamp,GroupName,Event,Immediate,Kick,ReplayId,EventIdentifier,RelatedEventIdentifier,SessionKey,LoginKey,UserId,ScheduleId,Reason,Service,Tty,RemoteHost,Host\n\
         Date,Id,GroupName,UpdateTime,Schedule,ScheduleDate,Time,Timezone,Days,Immediate,Kick,Event,Message,Actor,Lockout,DueAt\n\
         18\n\
         daemon:online\ndaemon:removed\ndaemon:offline\nbin:online\n\
         created\ncreated\ndeleted\n\
         students|Mon,Tue,Wed,Thu,Fri\n\
         bin|fltest\n"
    );
}

#[test]
fn the_functions() {
    // Each row: an expression and its expected value, sqlean-style: every line must be 1.
    let cases = [
        ("decode_days(62)", "'Mon,Tue,Wed,Thu,Fri'"),
        ("decode_days(127)", "'Sun,Mon,Tue,Wed,Thu,Fri,Sat'"),
        ("decode_days(1)", "'Sun'"),
        ("decode_days('65')", "'Sun,Sat'"),
        ("decode_days(62.0)", "'Mon,Tue,Wed,Thu,Fri'"),
        ("decode_days(NULL) IS NULL", "1"),
        ("encode_days('Mon-Fri')", "62"),
        ("encode_days('weekdays')", "62"),
        ("encode_days('weekend')", "65"),
        ("encode_days('all')", "127"),
        ("encode_days('mon,WED,friday')", "42"),
        ("encode_days('Fri-Mon')", "99"),
        ("encode_days(62)", "62"),
        ("encode_days(NULL) IS NULL", "1"),
        ("days_includes(62, 'Wed')", "1"),
        ("days_includes(62, 'Sun')", "0"),
        ("days_includes(62, 'Mon-Fri')", "1"),
        ("days_includes(62, 'weekend')", "0"),
        ("days_includes(NULL, 'Wed') IS NULL", "1"),
        ("days_includes(62, NULL) IS NULL", "1"),
        ("next_logout('Weekly', NULL, '18:00', 'Europe/Berlin', 62, '2026-11-27T12:00:00Z')", "'2026-11-27T17:00:00.000000Z'"),
        ("next_logout('Weekly', NULL, '18:00', 'Europe/Berlin', 62, '2026-11-27T18:00:00Z')", "'2026-11-30T17:00:00.000000Z'"),
        ("next_logout('Daily', NULL, '02:30', 'Europe/Berlin', NULL, '2026-03-28T12:00:00Z')", "'2026-03-29T01:30:00.000000Z'"),
        ("next_logout('Daily', NULL, '02:30', 'Europe/Berlin', NULL, '2026-10-24T12:00:00Z')", "'2026-10-25T00:30:00.000000Z'"),
        ("next_logout('Once', '2028-02-29', '12:00', 'UTC', NULL, '2028-01-01T00:00:00Z')", "'2028-02-29T12:00:00.000000Z'"),
        ("next_logout('Once', '2020-01-01', '12:00', 'UTC', NULL, '2026-01-01T00:00:00Z') IS NULL", "1"),
        ("next_logout('Weekly', NULL, '08:00', 'Pacific/Auckland', 'Mon', '2026-11-20T00:00:00Z')", "'2026-11-22T19:00:00.000000Z'"),
        ("next_logout(NULL, NULL, '18:00', 'UTC', NULL) IS NULL", "1"),
        ("next_logout('Daily', NULL, NULL, 'UTC', NULL) IS NULL", "1"),
        ("next_logout('Daily', NULL, '18:00', NULL, NULL) IS NULL", "1"),
        ("next_logout('Daily', NULL, '18:00', 'UTC', NULL, NULL) IS NULL", "1"),
        ("next_logout('Daily', NULL, '18:00', 'UTC', NULL) > strftime('%Y-%m-%dT%H:%M:%f', 'now')", "1"),
    ];
    let script: String = cases
        .iter()
        .map(|(expr, want)| format!("SELECT ({expr}) = ({want});\n"))
        .collect();
    let (out, err, status) = sqlite3(None, &script);
    assert!(status.success() && err.is_empty(), "{err}");
    let results: Vec<&str> = out.lines().collect();
    assert_eq!(results.len(), cases.len(), "{out}");
    for ((expr, want), got) in cases.iter().zip(results) {
        assert_eq!(got, "1", "{expr} should be {want}");
    }
}

#[test]
fn bad_input_is_an_sql_error_naming_the_problem() {
    let cases = [
        (
            "SELECT decode_days(300);",
            "decode_days: days: 300 is not a day set",
        ),
        (
            "SELECT decode_days(0);",
            "decode_days: days: 0 is not a day set",
        ),
        (
            "SELECT decode_days(2.5);",
            "decode_days: days: 2.5 is not a whole number",
        ),
        (
            "SELECT decode_days(x'00');",
            "decode_days: days: a blob is not a day set",
        ),
        (
            "SELECT encode_days('Funday');",
            "encode_days: days: unknown day \"Funday\"",
        ),
        (
            "SELECT encode_days('');",
            "encode_days: days: empty day set",
        ),
        (
            "SELECT days_includes(62, 'Someday');",
            "days_includes: days: unknown day \"Someday\"",
        ),
        (
            "SELECT next_logout('Daily', NULL, '10:00', 'Mars/Olympus', NULL);",
            "next_logout: tz: \"Mars/Olympus\" is not an IANA time zone",
        ),
        (
            "SELECT next_logout('Hourly', NULL, '10:00', 'UTC', NULL);",
            "next_logout: schedule: \"Hourly\" is not a schedule kind",
        ),
        (
            "SELECT next_logout('Daily', NULL, '25:00', 'UTC', NULL);",
            "next_logout: at: \"25:00\" is not a time of day",
        ),
        (
            "SELECT next_logout('Once', NULL, '10:00', 'UTC', NULL);",
            "next_logout: schedule_date: a Once schedule needs a date",
        ),
        (
            "SELECT next_logout('Once', '2027-02-29', '10:00', 'UTC', NULL);",
            "next_logout: schedule_date: 2027-02-29 is not a day of the calendar",
        ),
        (
            "SELECT next_logout('Weekly', NULL, '10:00', 'UTC', NULL);",
            "next_logout: days: a Weekly schedule needs days",
        ),
        (
            "SELECT next_logout('Weekly', NULL, '10:00', 'UTC', 300);",
            "next_logout: days: 300 is not a day set",
        ),
        (
            "SELECT next_logout('Daily', '2026-01-01', '10:00', 'UTC', NULL);",
            "next_logout: schedule_date: only Once schedules have a date",
        ),
        (
            "SELECT next_logout('Daily', NULL, '10:00', 'UTC', NULL, 'yesterday');",
            "next_logout: after: \"yesterday\" is not an RFC 3339 instant",
        ),
        (
            "SELECT decode_days();",
            "wrong number of arguments to function decode_days()",
        ),
    ];
    for (sql, expected) in cases {
        let (out, err, _) = sqlite3(None, sql);
        assert!(out.is_empty(), "{sql}: {out}");
        assert!(
            err.contains(expected),
            "{sql}: expected {expected:?} in {err:?}"
        );
    }
}

#[test]
fn constraints_use_the_stores_indexes() {
    let (stack, _live) = populated();
    let cases = [
        (
            "SELECT count(*) FROM LogoutEvents WHERE Date = '2026-11-23'",
            "USING COVERING INDEX LogoutEvents_Date (Date=?)",
        ),
        (
            "SELECT * FROM LogoutEvents WHERE GroupName = 'daemon'",
            "USING INDEX LogoutEvents_GroupName (GroupName=?)",
        ),
        (
            "SELECT * FROM LogoutEvents WHERE Event = 'online'",
            "USING INDEX LogoutEvents_Event (Event=?)",
        ),
        (
            "SELECT * FROM LogoutEvents WHERE ReplayId > 3",
            "USING INTEGER PRIMARY KEY (rowid>?)",
        ),
        (
            "SELECT * FROM LogoutSchedules WHERE Date = '2026-11-23'",
            "USING INDEX LogoutSchedules_Date (Date=?)",
        ),
        (
            "SELECT * FROM LogoutSchedules WHERE GroupName = 'students'",
            "USING INDEX LogoutSchedules_GroupName (GroupName=?)",
        ),
    ];
    for (sql, expected) in cases {
        let (out, err, _) = sqlite3(Some(&stack.db), &format!("EXPLAIN QUERY PLAN {sql};"));
        assert!(out.contains(expected), "{sql}: {out}{err}");
    }
}

#[test]
fn no_store_still_loads_the_functions_and_a_named_missing_store_fails_the_load() {
    let (out, err, status) = sqlite3(None, "SELECT decode_days(62);");
    assert!(status.success(), "{err}");
    assert_eq!(out, "Mon,Tue,Wed,Thu,Fri\n");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.db");
    let (_, err, _) = sqlite3(Some(&missing), "SELECT 1;");
    assert!(
        err.contains("forcelogout: ") && err.contains("absent.db"),
        "{err}"
    );
    assert!(!missing.exists(), "the extension must not create a store");
}

#[test]
fn the_extension_never_blocks_writers_and_never_writes() {
    let (stack, _live) = populated();
    let digest = |stack: &PamStack| stack.query("SELECT count(*), max(ReplayId) FROM LogoutEvents");
    let before = digest(&stack);
    // A sqlite3 session holds a read transaction open through the extension.
    let mut shell = Command::new("sqlite3")
        .args(["-batch", ":memory:"])
        .env("FORCELOGOUT_DB", &stack.db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = shell.stdin.take().unwrap();
    let mut output = BufReader::new(shell.stdout.take().unwrap());
    let load = format!(".load {}", extension_load_path().display());
    writeln!(input, "{load}").unwrap();
    let mut ask = |input: &mut std::process::ChildStdin, sql: &str| -> String {
        writeln!(input, "{sql}").unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(
        ask(&mut input, "BEGIN; SELECT count(*) FROM LogoutEvents;"),
        before[0][0]
    );

    // PAM writers commit meanwhile, every call succeeding (ignore=bad: an error would show).
    let writers = PamStack::new(&[
        "session [success=ok ignore=bad default=bad] {module} db={db} timeout=2000",
    ]);
    std::fs::remove_file(&writers.db).ok();
    std::fs::remove_dir(writers.db.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(stack.db.parent().unwrap(), writers.db.parent().unwrap()).unwrap();
    let children: Vec<_> = ["games", "man", "lp", "mail"]
        .iter()
        .map(|u| {
            writers
                .harness(u, &["bench:20"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let t = Transcript::parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(t.pairs.len(), 20);
        assert!(t.pairs.iter().all(|p| p.1 == 0 && p.2 == 0), "{t:?}");
    }
    // The reader still sees its snapshot; after it ends, the new rows.
    assert_eq!(
        ask(&mut input, "SELECT count(*) FROM LogoutEvents;"),
        before[0][0]
    );
    let written: i64 = before[0][0].parse::<i64>().unwrap() + 4 * 20 * 3;
    assert_eq!(
        ask(&mut input, "COMMIT; SELECT count(*) FROM LogoutEvents;"),
        written.to_string()
    );

    // Writes through the extension fail with a clear error; the store is unchanged.
    let after_writers = digest(&stack);
    for sql in [
        "DELETE FROM LogoutEvents;",
        "UPDATE LogoutSchedules SET GroupName = 'x';",
        "INSERT INTO LogoutSessions (SessionKey) VALUES ('x');",
        "DELETE FROM forcelogout.LogoutEvents;",
        "INSERT INTO forcelogout.LogoutEvents (Date) VALUES ('x');",
        "DROP TABLE forcelogout.LogoutEvents;",
    ] {
        writeln!(input, "{sql}").unwrap();
    }
    drop(input);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut shell.stderr.take().unwrap(), &mut err).unwrap();
    shell.wait().unwrap();
    assert_eq!(err.matches("cannot modify").count(), 3, "{err}");
    assert_eq!(
        err.matches("attempt to write a readonly database").count(),
        3,
        "{err}"
    );
    assert_eq!(digest(&stack), after_writers);
}

#[test]
fn next_logout_agrees_with_forcelogoutctl_next_on_1000_generated_schedules() {
    let stack = PamStack::standard("");
    stack.ctl(&[
        "schedule", "add", "--group", "seed", "--daily", "--at", "00:00", "--tz", "UTC",
    ]);
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Kolkata",
        "Pacific/Auckland",
        "Pacific/Chatham",
        "America/St_Johns",
        "UTC",
    ];
    // Instants just before DST changes of several zones, so the schedules land in gaps and folds.
    let afters = [
        "2026-03-28T12:00:00Z",
        "2026-10-24T12:00:00Z",
        "2026-03-07T12:00:00Z",
        "2026-04-04T00:00:00Z",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let conn = rusqlite::Connection::open(&stack.db).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..1000 {
        let (kind, date, days): (&str, Option<String>, Option<i64>) = match rng.below(3) {
            0 => (
                "Once",
                Some(format!(
                    "2026-{:02}-{:02}",
                    1 + rng.below(12),
                    1 + rng.below(28)
                )),
                None,
            ),
            1 => ("Daily", None, None),
            _ => ("Weekly", None, Some(1 + rng.below(127) as i64)),
        };
        // Times around 00:00-03:59 hit the transitions most often.
        let hour = if rng.below(2) == 0 {
            rng.below(4)
        } else {
            rng.below(24)
        };
        let time = format!("{hour:02}:{:02}", rng.below(60));
        let zone = rng.pick(&zones);
        conn.execute(
            "INSERT INTO LogoutSchedules VALUES ('2026-01-01', ?1, 'g', '2026-01-01T00:00:00.000000Z', ?2, ?3, ?4, ?5, ?6, 0, 1, 'created', '', 'test', 0, NULL)",
            rusqlite::params![format!("{i:08x}-0000-4000-8000-000000000000"), kind, date, time, zone, days],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();

    for after in afters {
        let (out, err, status) = sqlite3(
            Some(&stack.db),
            &format!(
                "SELECT Id || ' ' || coalesce(next_logout(Schedule, ScheduleDate, Time, Timezone, Days, '{after}'), '-') \
                 FROM LogoutSchedulesCurrent WHERE GroupName = 'g' ORDER BY Id;"
            ),
        );
        assert!(status.success() && err.is_empty(), "{err}");
        let from_sql: Vec<(String, String)> = out
            .lines()
            .map(|l| {
                let (id, t) = l.split_once(' ').unwrap();
                (id.to_string(), t.to_string())
            })
            .collect();
        assert_eq!(from_sql.len(), 1000);
        // forcelogoutctl, one schedule at a time, four at once.
        let chunks: Vec<Vec<(String, String)>> = from_sql.chunks(250).map(|c| c.to_vec()).collect();
        let db = stack.db.clone();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let db = db.clone();
                let after = after.to_string();
                std::thread::spawn(move || {
                    for (id, expected) in chunk {
                        let out = Command::new(ctl_path())
                            .arg("--db")
                            .arg(&db)
                            .args(["--json", "next", &id, "--count", "1", "--after", &after])
                            .output()
                            .unwrap();
                        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                        let got = json
                            .as_array()
                            .unwrap()
                            .first()
                            .map(|r| r["UTC"].as_str().unwrap().to_string())
                            .unwrap_or_else(|| "-".into());
                        assert_eq!(got, expected, "schedule {id} after {after}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

#[test]
fn random_values_of_every_type_never_crash_the_shell() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let texts = [
        "'Mon'",
        "'Mon-Fri'",
        "'Fri-Mon'",
        "'weekdays'",
        "''",
        "' '",
        "'Funday'",
        "'Mon,,Tue'",
        "'-'",
        "'62'",
        "'999999999999999999999999'",
        "'Once'",
        "'Daily'",
        "'Weekly'",
        "'once'",
        "'18:00'",
        "'24:00'",
        "'9:99'",
        "'2026-02-29'",
        "'2028-02-29'",
        "'9999-12-31'",
        "'0000-01-01'",
        "'Europe/Berlin'",
        "'Mars/Olympus'",
        "'UTC'",
        "'2026-11-23T17:00:00Z'",
        "'+262143-12-31T23:59:59Z'",
        "'ünïcödé'",
        "char(0)",
        "char(27) || '[2J'",
        "'%s%s%s%n'",
        "'''; DROP TABLE x; --'",
        "replace(hex(zeroblob(5000)), '00', 'Mon,')",
    ];
    let value = |rng: &mut Rng| -> String {
        let v: &str = match rng.below(6) {
            0 => "NULL",
            1 => rng.pick(&[
                "0",
                "1",
                "62",
                "127",
                "128",
                "-1",
                "9223372036854775807",
                "-9223372036854775808",
            ]),
            2 => rng.pick(&["0.0", "62.0", "2.5", "-1e308", "1e999", "-1e999", "0.1"]),
            3 | 4 => rng.pick(&texts),
            _ => rng.pick(&["x''", "x'00'", "x'ffff'", "zeroblob(10)", "randomblob(64)"]),
        };
        v.to_string()
    };
    let mut script = String::new();
    let mut statements = 0;
    for _ in 0..3000 {
        let arity = match rng.below(6) {
            0 => ("decode_days(", 1),
            1 => ("encode_days(", 1),
            2 => ("days_includes(", 2),
            3 => ("next_logout(", 5),
            4 => ("next_logout(", 6),
            _ => ("next_logout('Weekly', NULL, '02:30', ", 3),
        };
        let args: Vec<String> = (0..arity.1).map(|_| value(&mut rng)).collect();
        let call = format!("{}{})", arity.0, args.join(", "));
        script.push_str(&format!("SELECT 'r', typeof({call});\n"));
        statements += 1;
    }
    script.push_str("SELECT 'done';\n");
    let (out, err, status) = sqlite3(None, &script);
    assert!(
        status.signal().is_none(),
        "sqlite3 was killed by signal {:?}",
        status.signal()
    );
    assert!(out.ends_with("done\n"), "the shell did not reach the end");
    assert!(!err.contains("panicked"), "{err}");
    let answered = out.lines().filter(|l| l.starts_with("r|")).count();
    let refused = err.lines().filter(|l| l.contains("error")).count();
    assert_eq!(
        answered + refused,
        statements,
        "every call answered or refused: {answered} + {refused}"
    );
    assert!(
        answered > 100 && refused > 100,
        "the mix exercised both: {answered} answered, {refused} refused"
    );
}
