//! `cargo build --release --workspace && cargo build --release --manifest-path sql_ext/Cargo.toml
//!  && cargo bench -p forcelogout_tests --bench sql_ext`
//!
//! Queries on a store of 10 million events, each run through the extension (`sqlite3 :memory:`
//! with `.load`, the views over the read-only attachment) and directly on the store's own
//! tables (`sqlite3 store.db`), alternately in the same run; SQLite's own `.timer` measures.
//! The store is generated once (synthetic rows, a few GB) and kept in /var/tmp.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use forcelogout_core::store::{Access, Store};
use forcelogout_tests::{extension_load_path, Rng};

const EVENTS: i64 = 10_000_000;
const USERS: u64 = 2_000;
const DAYS: i64 = 365;
const RUNS: usize = 3;

fn store_path() -> PathBuf {
    PathBuf::from(format!("/var/tmp/forcelogout-bench/events-{EVENTS}.db"))
}

fn generate(path: &Path) {
    if path.exists() {
        let conn = rusqlite::Connection::open(path).expect("open");
        let n: i64 = conn
            .query_row("SELECT max(ReplayId) FROM LogoutEvents", [], |r| r.get(0))
            .unwrap_or(0);
        if n == EVENTS {
            return;
        }
        drop(conn);
        std::fs::remove_file(path).expect("remove partial store");
    }
    eprintln!("generating {EVENTS} events in {} (once)…", path.display());
    drop(Store::open(path, Access::Create, Duration::from_secs(5)).expect("schema"));
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;")
        .expect("pragmas");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Immediate, Kick, EventIdentifier, \
                 SessionKey, UserId, Reason, Service, Tty, RemoteHost, Host) \
                 VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6, ?7, ?8, ?9, 'pts/0', '192.0.2.1', 'bench')",
            )
            .expect("prepare");
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let per_day = EVENTS / DAYS + 1;
        for i in 0..EVENTS {
            let day = i / per_day;
            let date = chrono_date(day);
            let seconds = (i % per_day) * 86_400 / per_day;
            let stamp = format!(
                "{date}T{:02}:{:02}:{:02}.000000Z",
                seconds / 3600,
                (seconds % 3600) / 60,
                seconds % 60
            );
            let user = rng.below(USERS);
            let event = rng.pick(&["online", "removed", "offline", "removed", "warned"]);
            let reason = if event == "removed" {
                Some("logout")
            } else {
                None
            };
            insert
                .execute(rusqlite::params![
                    date,
                    stamp,
                    format!("user{user:04}"),
                    event,
                    format!("{i:032x}"),
                    format!("s{i:031x}"),
                    1000 + user as i64,
                    reason,
                    rng.pick(&["sshd", "login", "su", "sshd"]),
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .expect("checkpoint");
}

/// `2026-01-01` plus `day` days.
fn chrono_date(day: i64) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
    (start + chrono::Duration::days(day))
        .format("%Y-%m-%d")
        .to_string()
}

/// Seconds SQLite reports for `sql`, through the extension or directly.
fn timed(store: &Path, through_extension: bool, sql: &str) -> (f64, String) {
    let mut cmd = Command::new("sqlite3");
    let script = if through_extension {
        cmd.arg(":memory:").env("FORCELOGOUT_DB", store);
        format!(
            ".load {}\n.timer on\n{sql};\n",
            extension_load_path().display()
        )
    } else {
        cmd.arg(store);
        format!(".timer on\n{sql};\n")
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes())
        .expect("script");
    let out = child.wait_with_output().expect("sqlite3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = text
        .lines()
        .find_map(|l| l.strip_prefix("Run Time: real "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("timer line");
    (real, text.lines().next().unwrap_or_default().to_string())
}

fn main() {
    let path = store_path();
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    generate(&path);
    let queries = [
        (
            "one-Date count",
            "SELECT count(*) FROM LogoutEvents WHERE Date = '2026-06-15'",
        ),
        (
            "GroupName filter",
            "SELECT count(*), max(Timestamp) FROM LogoutEvents WHERE GroupName = 'user0042'",
        ),
        (
            "Event filter",
            "SELECT count(*) FROM LogoutEvents WHERE Event = 'warned'",
        ),
        (
            "ReplayId range",
            "SELECT count(*), max(Timestamp) FROM LogoutEvents WHERE ReplayId > 9990000",
        ),
        (
            "full scan",
            "SELECT count(*) FROM LogoutEvents WHERE Service = 'su'",
        ),
    ];
    println!("{EVENTS} events; best of {RUNS} runs each, alternating, SQLite's .timer (real):");
    println!(
        "  {:<18} {:>12} {:>12} {:>8}  result",
        "query", "extension", "direct", "ratio"
    );
    for (name, sql) in queries {
        let (mut ext, mut direct) = (f64::MAX, f64::MAX);
        let mut results = (String::new(), String::new());
        for _ in 0..RUNS {
            let (t, r) = timed(&path, true, sql);
            ext = ext.min(t);
            results.0 = r;
            let (t, r) = timed(&path, false, sql);
            direct = direct.min(t);
            results.1 = r;
        }
        assert_eq!(
            results.0, results.1,
            "{name}: the extension and the store disagree"
        );
        println!(
            "  {name:<18} {:>10.3} s {:>10.3} s {:>7.2}x  {}",
            ext,
            direct,
            ext / direct.max(1e-6),
            results.0
        );
    }
}
