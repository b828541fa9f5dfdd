//! An administrator's `sqlite3` shell holds a write transaction on the store for 30 s: the
//! daemon keeps running, a login made meanwhile takes no longer than the module's timeout and
//! is recorded once the lock is released (so a later kick ends it), a kick that falls due
//! meanwhile ends its session on time, and no event is lost or doubled.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::PamStack;

const TIMEOUT_MS: u64 = 2000;
/// Generous: the bound under test is the timeout; the margin absorbs a loaded 2-core CI.
const MARGIN_MS: u64 = 1500;
const HELD_FOR: Duration = Duration::from_secs(30);

fn count(stack: &PamStack, user: &str, event: &str) -> usize {
    stack
        .events()
        .iter()
        .filter(|(u, e)| u == user && e == event)
        .count()
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: the session socket, and logins of system users"]
fn a_write_transaction_held_for_30_s_delays_no_kick_and_loses_no_login() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "syslog = false");
    let args = format!(
        "debug timeout={TIMEOUT_MS} config={}",
        daemon.config.display()
    );
    stack.write_service(&[
        &format!("account required {{module}} db={{db}} {args}"),
        &format!("session required {{module}} db={{db}} {args}"),
        "session required pam_permit.so",
    ]);
    // `news` is logged in, and a kick of news falls due while the lock will be held.
    let mut news = stack.spawn("news", &["open", "wait", "close"]);
    assert_eq!(news.until("open"), 0);
    ok(&daemon.ctl(&["logout", "news", "--kick", "--in", "12s"]));
    assert!(wait_until(Duration::from_secs(10), || count(
        &stack, "news", "warned"
    ) == 1));

    // The shell takes the write lock and says so.
    let mut shell = Command::new("sqlite3")
        .arg(&stack.db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    let mut to_shell = shell.stdin.take().expect("stdin");
    let mut from_shell = BufReader::new(shell.stdout.take().expect("stdout"));
    writeln!(to_shell, "BEGIN IMMEDIATE;\nSELECT 'locked';").expect("to sqlite3");
    let mut line = String::new();
    from_shell.read_line(&mut line).expect("from sqlite3");
    assert_eq!(line.trim(), "locked");
    let locked_at = Instant::now();

    // A login meanwhile: no longer than the timeout, and it succeeds.
    let mut mail = stack.spawn("mail", &["open", "wait", "close"]);
    assert_eq!(mail.until("open"), 0);
    assert!(
        mail.transcript.ms("open") < TIMEOUT_MS + MARGIN_MS,
        "open took {} ms",
        mail.transcript.ms("open")
    );
    // The kick falls due at 12 s: news's session ends on time, with the lock still held.
    let news_pid = news.pid();
    let gone = || {
        !std::path::Path::new(&format!("/proc/{news_pid}")).exists() || {
            let stat =
                std::fs::read_to_string(format!("/proc/{news_pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), gone),
        "news was not kicked: {}",
        daemon.log()
    );
    assert!(
        locked_at.elapsed() < HELD_FOR,
        "the kick waited for the lock"
    );
    assert_eq!(
        count(&stack, "news", "removed"),
        0,
        "recorded under the lock?"
    );
    assert_eq!(
        count(&stack, "mail", "online"),
        0,
        "recorded under the lock?"
    );

    std::thread::sleep(HELD_FOR.saturating_sub(locked_at.elapsed()));
    assert!(daemon
        .pid()
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()));
    writeln!(to_shell, "COMMIT;\n.quit").expect("to sqlite3");
    drop(to_shell);
    assert!(shell.wait().expect("sqlite3").success());

    // Both recorded once the lock is gone, each exactly once.
    let recorded = || count(&stack, "mail", "online") == 1 && count(&stack, "news", "offline") == 1;
    assert!(
        wait_until(Duration::from_secs(15), recorded),
        "{:?}\n{}",
        stack.events(),
        daemon.log()
    );
    let kicked = stack
        .query("SELECT Reason FROM LogoutEvents WHERE GroupName = 'news' AND Event = 'removed'");
    assert_eq!(kicked, [["kick"]]);
    // The login made under the lock is a live session: a later kick ends it.
    ok(&daemon.ctl(&["logout", "mail", "--kick", "--in", "0s"]));
    assert!(
        wait_until(Duration::from_secs(20), || count(&stack, "mail", "offline")
            == 1),
        "{:?}\n{}",
        stack.events(),
        daemon.log()
    );
    let _ = news.proceed_if_alive();
    let _ = mail.proceed_if_alive();
    for (user, event, times) in [
        ("news", "online", 1),
        ("news", "warned", 1),
        ("news", "removed", 1),
        ("news", "offline", 1),
        ("mail", "online", 1),
        ("mail", "warned", 1),
        ("mail", "removed", 1),
        ("mail", "offline", 1),
    ] {
        assert_eq!(
            count(&stack, user, event),
            times,
            "{user} {event}: {:?}",
            stack.events()
        );
    }
    assert_eq!(stack.query("SELECT count(*) FROM LogoutSessions"), [["0"]]);
}
