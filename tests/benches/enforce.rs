//! `cargo build --release --workspace && cargo bench -p forcelogout_tests --bench enforce`
//! (root): one kick against 1000 live sessions held by real processes (the time from the due
//! instant to the last `removed` row and to the last process gone), and the daemon's resident
//! memory when idle with 10,000 schedules, next to an idle daemon with none (same run).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::store::{Access, Store};
use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::{is_root, PamStack, USERS};

const SESSIONS: usize = 1000;
const SCHEDULES: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn parse(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .expect("timestamp")
        .with_timezone(&Utc)
}

fn kick_benchmark() {
    // A thousand logins at the same instant, on the module's defaults (2 s timeout), with the
    // daemon recording them (its session socket, group commit).
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    stack.write_service(&[
        &format!(
            "account required {{module}} db={{db}} config={}",
            daemon.config.display()
        ),
        &format!(
            "session required {{module}} db={{db}} config={}",
            daemon.config.display()
        ),
    ]);
    let login_started = Instant::now();
    let mut leaders: Vec<Child> = (0..SESSIONS)
        .map(|i| {
            stack
                .harness(USERS[i % USERS.len()], &["open", "sleep:600000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("harness")
        })
        .collect();
    let spawned = login_started.elapsed();
    let all_open =
        || stack.query("SELECT count(*) FROM LogoutSessions")[0][0] == SESSIONS.to_string();
    let recorded = wait_until(Duration::from_secs(60), all_open);
    let opened_in = login_started.elapsed();
    let count = &stack.query("SELECT count(*) FROM LogoutSessions")[0][0];
    println!(
        "{SESSIONS} logins at once (spawned in {} ms): {count} recorded, the last {} ms after the first spawn",
        spawned.as_millis(),
        opened_in.as_millis()
    );
    assert!(
        recorded,
        "only {count} of {SESSIONS} sessions were recorded"
    );
    let out = daemon.ctl(&["--json", "logout", "*", "--kick", "--in", "3s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let due = parse(record["DueAt"].as_str().expect("DueAt"));
    let pids: Vec<u32> = leaders.iter().map(Child::id).collect();
    // Watch both, every 5 ms: when every `removed` row is committed (visible to another
    // connection), and when every leader process is gone (reaped).
    let conn = rusqlite::Connection::open(&stack.db).expect("store");
    let removed = || -> usize {
        conn.query_row(
            "SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0) as usize
    };
    let started = Instant::now();
    let (mut rows_at, mut gone_at) = (None, None);
    while started.elapsed() < Duration::from_secs(120) && (rows_at.is_none() || gone_at.is_none()) {
        if rows_at.is_none() && removed() == SESSIONS {
            rows_at = Some(Utc::now());
        }
        if gone_at.is_none()
            && leaders
                .iter_mut()
                .all(|c| c.try_wait().ok().flatten().is_some())
        {
            gone_at = Some(Utc::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (rows_at, gone_at) = (
        rows_at.expect("rows"),
        gone_at.expect("processes outlived the kick"),
    );
    println!(
        "one kick, {SESSIONS} live sessions held by real processes ({} pids):",
        pids.len()
    );
    println!(
        "  due instant -> all `removed` rows committed  {:>6} ms",
        (rows_at - due).num_milliseconds()
    );
    println!(
        "  due instant -> last process gone             {:>6} ms",
        (gone_at - due).num_milliseconds()
    );
    drop(daemon);
}

fn rss_benchmark() {
    let make = |count: usize| {
        let stack = PamStack::standard("");
        let mut store =
            Store::open(&stack.db, Access::Create, Duration::from_secs(5)).expect("store");
        for i in 0..count {
            let schedule = ScheduleInput {
                group: Some(format!("group{i}")),
                recurrence: Some(RecurrenceInput::Weekly("Mon-Fri".into())),
                at: Some(format!("{:02}:{:02}", i % 24, i % 60)),
                timezone: Some("Europe/Berlin".into()),
                ..Default::default()
            }
            .into_new(&forcelogout_core::zone::Zone::utc())
            .expect("schedule");
            store
                .add_schedule(&schedule, "bench", Utc::now())
                .expect("add");
        }
        stack
    };
    let empty = make(0);
    let full = make(SCHEDULES);
    let idle = Daemon::start(&empty.db, "");
    let busy = Daemon::start(&full.db, "");
    // Measured 3 s after the daemons start or the logins end, once they have settled.
    let print_rss = |heading: &str| {
        std::thread::sleep(Duration::from_secs(3));
        let (a, b) = (
            rss_kib(idle.pid().expect("pid")),
            rss_kib(busy.pid().expect("pid")),
        );
        println!("{heading}");
        println!("  no schedules                        {:>7} KiB", a);
        println!(
            "  {SCHEDULES} schedules                   {:>7} KiB  ({:.2}x)",
            b,
            b as f64 / a.max(1) as f64
        );
    };
    print_rss("daemon resident memory, idle:");
    // Logins make the reading side keep the current schedules (for `account` and the notices).
    for (stack, daemon) in [(&empty, &idle), (&full, &busy)] {
        let config = daemon.config.display();
        stack.write_service(&[
            &format!("account required {{module}} db={{db}} config={config}"),
            &format!("session required {{module}} db={{db}} config={config}"),
        ]);
        let status = stack
            .harness(USERS[0], &["login:20"])
            .stdout(Stdio::null())
            .status()
            .expect("harness");
        assert!(status.success(), "logins: {status}");
    }
    print_rss("… after 20 logins:");
}

fn main() {
    if !is_root() {
        eprintln!("the enforcement benchmark needs root");
        return;
    }
    kick_benchmark();
    rss_benchmark();
}
