//! What reaches users' terminals: a countdown on a real pseudo-terminal, and a real `ssh -tt`
//! session that sees the countdown and is disconnected.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::sshd::{Sshd, USER};
use forcelogout_tests::{ctl_path, harness_path, is_root, query, try_query, PamStack};

/// Reads all of a child's stdout in a thread, so a test can wait with a limit.
fn collect(mut out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out.read_to_end(&mut text);
        let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
    });
    rx
}

/// A PAM session of `user` on a real pseudo-terminal: script(1) runs `setup` (shell) and then
/// the harness on a new pty. Returns script(1) and what the pty showed, once it closes.
fn session_on_a_pty(
    stack: &PamStack,
    user: &str,
    setup: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let inner = format!(
        "{setup} exec {} --confdir {} --service fltest --user {user} --tty \"$(tty)\" open wait close",
        harness_path().display(),
        stack.confdir().display()
    );
    let mut script = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let output = collect(script.stdout.take().unwrap());
    (script, output)
}

#[test]
fn a_message_with_escape_sequences_reaches_a_pty_as_plain_text() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(&stack.db, "");
    let (mut script, output) = session_on_a_pty(&stack, "root", "");
    assert!(wait_until(Duration::from_secs(10), || try_query(
        &stack.db,
        "SELECT count(*) FROM LogoutSessions"
    )
    .is_ok_and(|rows| rows[0][0] == "1")));
    // The CLI refuses control characters, so a row written by hand carries them: clear the
    // screen, retitle the window, colour, a C1 CSI. None of it may reach the terminal.
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    rusqlite::Connection::open(&stack.db)
        .unwrap()
        .execute(
            "INSERT INTO LogoutSchedules VALUES (?1, 'aaaaaaaa-0000-4000-8000-000000000001', 'root', ?2, 'Once', ?1, ?3, 'UTC', NULL, 1, 1, 'created', ?4, 'test', 0, ?5)",
            rusqlite::params![
                now.format("%Y-%m-%d").to_string(),
                stamp(now),
                now.format("%H:%M").to_string(),
                "Lab \u{1b}[2J\u{1b}]0;pwned\u{7}closes \u{1b}[31mnow\u{9b}31m!",
                stamp(now + chrono::Duration::seconds(2)),
            ],
        )
        .unwrap();
    let text = output
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the session was not ended; daemon: {}\nevents: {:?}",
                daemon.log(),
                stack.events()
            )
        });
    let _ = script.wait();
    assert!(
        text.contains("*** forcelogout ***"),
        "{text:?}\n{}",
        daemon.log()
    );
    assert!(text.contains("You will be logged out in"), "{text:?}");
    assert!(text.contains("Lab closes now!"), "{text:?}");
    assert!(text.contains("You are being logged out now."), "{text:?}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{9b}'),
        "an escape reached the terminal: {text:?}"
    );
    assert!(!text.contains("pwned"), "{text:?}");
}

#[test]
#[ignore = "needs root: a real sshd on 127.0.0.1 in a private mount namespace"]
fn an_ssh_session_sees_the_countdown_and_is_disconnected() {
    if !is_root() || !std::path::Path::new("/usr/sbin/sshd").exists() {
        eprintln!("skipped: needs root and openssh-server");
        return;
    }
    let sshd = Sshd::start_with("", true);
    let mut ssh = sshd
        .ssh()
        .args(["-tt", "echo logged-in; sleep 120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = collect(ssh.stdout.take().unwrap());
    let db = sshd.store().to_path_buf();
    let logged_in = || {
        try_query(&db, "SELECT count(*) FROM LogoutSessions").is_ok_and(|rows| rows[0][0] == "1")
    };
    assert!(
        wait_until(Duration::from_secs(20), logged_in),
        "sshd: {}",
        sshd.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(ctl_path())
        .arg("--db")
        .arg(&db)
        .args([
            "logout",
            USER,
            "--kick",
            "--in",
            "4s",
            "--message",
            "The lab closes now. Save your work.",
        ])
        .env("FORCELOGOUT_CONFIG", sshd.config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = output
        .recv_timeout(Duration::from_secs(40))
        .expect("ssh was not disconnected");
    let status = ssh.wait().unwrap();
    eprintln!("what the ssh -tt client showed:\n{text}");
    assert!(
        !status.success(),
        "ssh should end with the connection closed"
    );
    assert!(text.contains("logged-in"), "{text}");
    assert!(
        text.contains("You will be logged out in"),
        "{text}\ndaemon: {}",
        sshd.daemon_log()
    );
    assert!(
        text.contains("The lab closes now. Save your work."),
        "{text}"
    );
    assert!(text.contains("You are being logged out now."), "{text}");
    let done = || {
        query(
            &db,
            "SELECT count(*) FROM LogoutEvents WHERE Event = 'offline'",
        )[0][0]
            == "1"
    };
    assert!(wait_until(Duration::from_secs(20), done));
    assert_eq!(
        query(&db, "SELECT GroupName, Event, coalesce(Reason, '-'), Kick, Immediate, coalesce(Service, '-') FROM LogoutEvents ORDER BY ReplayId"),
        vec![
            vec![USER, "online", "-", "0", "0", "sshd"],
            vec![USER, "warned", "-", "1", "1", "-"],
            vec![USER, "removed", "kick", "1", "1", "sshd"],
            vec![USER, "offline", "-", "1", "1", "-"],
        ]
    );
}

#[test]
fn an_idle_session_is_warned_then_logged_out() {
    let stack = PamStack::standard("");
    let daemon = Daemon::start(
        &stack.db,
        "idle_timeout = \"1m\"\nimmediate_warning = \"2s\"",
    );
    // A session of `daemon` on a real pty that is that user's, last typed on two minutes ago.
    let (mut script, output) = session_on_a_pty(
        &stack,
        "daemon",
        "chown daemon \"$(tty)\"; touch -a -d '2 minutes ago' \"$(tty)\";",
    );
    let text = output
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the idle session was not ended; daemon: {}", daemon.log()));
    let _ = script.wait();
    assert!(
        text.contains("This session has had no input for 2 min"),
        "{text:?}"
    );
    assert!(text.contains("unless you press a key"), "{text:?}");
    assert!(
        text.contains("You are being logged out now: the session was idle."),
        "{text:?}"
    );
    assert_eq!(
        stack.query("SELECT Event, coalesce(Reason, '-') FROM LogoutEvents ORDER BY ReplayId"),
        vec![
            vec!["online", "-"],
            vec!["removed", "idle"],
            vec!["offline", "-"]
        ]
    );
}
