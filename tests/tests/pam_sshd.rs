//! A real `ssh` login to a real `sshd` on 127.0.0.1 with the module in its PAM stack.

use std::time::{Duration, Instant};

use forcelogout_tests::sshd::{Sshd, UID, USER};
use forcelogout_tests::{ctl_path, is_root, query, utc_hhmm};

fn wait_for(db: &std::path::Path, sql: &str, expected: &str) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = query(db, sql);
        if rows.first().and_then(|r| r.first()).map(String::as_str) == Some(expected)
            || Instant::now() > deadline
        {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root: a real sshd on 127.0.0.1 in a private mount namespace"]
fn an_ssh_login_and_logout_is_recorded_and_a_lockout_refuses_it_with_the_message() {
    if !is_root() || !std::path::Path::new("/usr/sbin/sshd").exists() {
        eprintln!("skipped: needs root and openssh-server");
        return;
    }
    let sshd = Sshd::start("");
    let out = sshd.ssh_output("echo logged-in-as-$(id -un)");
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd: {}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("logged-in-as-{USER}")
    );

    // sshd closes the PAM session after the client is gone: wait for the offline row.
    wait_for(
        sshd.store(),
        "SELECT count(*) FROM LogoutEvents WHERE Event = 'offline'",
        "1",
    );
    let rows = query(
        sshd.store(),
        "SELECT GroupName, Event, UserId, Service, RemoteHost, coalesce(Reason, '-') FROM LogoutEvents ORDER BY ReplayId",
    );
    let uid = UID.to_string();
    assert_eq!(
        rows,
        vec![
            vec![USER, "online", &uid, "sshd", "127.0.0.1", "-"],
            vec![USER, "removed", &uid, "sshd", "127.0.0.1", "logout"],
            vec![USER, "offline", &uid, "NULL", "NULL", "-"],
        ]
    );

    // A kick with a lockout that started a minute ago: the login is refused, and the client
    // is shown the administrator's message (sshd sends PAM account messages as a banner).
    let add = std::process::Command::new(ctl_path())
        .arg("--db")
        .arg(sshd.store())
        .args([
            "schedule",
            "add",
            "--group",
            USER,
            "--daily",
            "--at",
            &utc_hhmm(-1),
            "--tz",
            "UTC",
            "--kick",
            "--lockout",
            "30",
            "--message",
            "Maintenance window: back at 14:00",
        ])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let out = sshd.ssh_output("echo should-not-run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("what the ssh client printed during the lockout:\n{stderr}");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(
        stderr.contains("Maintenance window: back at 14:00"),
        "client saw: {stderr}\nsshd: {}",
        sshd.log()
    );
    assert!(stderr.contains("Logins are closed until "), "{stderr}");
    // A refused login opens no session.
    assert_eq!(
        query(sshd.store(), "SELECT count(*) FROM LogoutEvents"),
        vec![vec!["3"]]
    );
}
