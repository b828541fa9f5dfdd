//! Debian's `pamtester` against a private service: the module as any PAM application sees it.

use std::process::Command;

use forcelogout_tests::{is_root, PamStack};

#[test]
#[ignore = "needs root: pamtester runs a PAM stack as root"]
fn pamtester_logs_a_session_in_and_out() {
    if !is_root() || Command::new("pamtester").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and pamtester");
        return;
    }
    let stack = PamStack::standard("");
    // pamtester reads /etc/pam.d: give it the private directory in a private mount namespace.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "mount --bind '{}' /etc/pam.d; exec pamtester -v fltest daemon acct_mgmt open_session close_session",
            stack.confdir().display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("successfully opened a session"), "{stdout}");
    assert!(
        stdout.contains("session has successfully been closed"),
        "{stdout}"
    );
    assert_eq!(
        stack.query("SELECT GroupName, Event, Service, Reason FROM LogoutEvents ORDER BY ReplayId"),
        vec![
            vec!["daemon", "online", "fltest", "NULL"],
            vec!["daemon", "removed", "fltest", "logout"],
            vec!["daemon", "offline", "NULL", "NULL"],
        ]
    );
}
