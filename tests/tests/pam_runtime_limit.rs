//! `limit_session_runtime`: at `account` the module leaves pam_systemd the PAM data
//! `systemd.runtime_max_sec` (the session scope's RuntimeMaxSec=), a minute after the next
//! kick that targets the user, and only ever lowers a limit set before it. logind does not run
//! here, so a small C module built by the test stands where pam_systemd would: it reads the
//! data at session open through libpam, as pam_systemd does, and reports it; it can also seed
//! a limit at `account`, as another module might.

use std::path::{Path, PathBuf};
use std::process::Command;

use forcelogout_tests::{utc_hhmm, PamStack};

const PROBE_SOURCE: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <security/pam_modules.h>
#include <security/pam_ext.h>

static void release(pam_handle_t *pamh, void *data, int status) { free(data); }

int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "seed=", 5) == 0)
            return pam_set_data(pamh, "systemd.runtime_max_sec", strdup(argv[i] + 5), release);
    return PAM_SUCCESS;
}

int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    const void *data = NULL;
    if (pam_get_data(pamh, "systemd.runtime_max_sec", &data) == PAM_SUCCESS && data != NULL)
        pam_info(pamh, "probe: runtime_max_sec=%s", (const char *)data);
    else
        pam_info(pamh, "probe: runtime_max_sec unset");
    return PAM_SUCCESS;
}

int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    return PAM_SUCCESS;
}
"#;

fn build_probe(dir: &Path) -> PathBuf {
    let source = dir.join("pam_probe.c");
    let module = dir.join("pam_probe.so");
    std::fs::write(&source, PROBE_SOURCE).expect("probe source");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&module)
        .arg(&source)
        .arg("-lpam")
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    module
}

/// Runs account then open for `user` on a stack with the probe (seeding `seed` if given)
/// and our module configured by `config`; returns what the probe saw at session open.
fn runtime_max_seen(
    stack: &PamStack,
    user: &str,
    probe: &Path,
    config: &Path,
    seed: Option<u64>,
) -> String {
    let seed = seed.map(|s| format!(" seed={s}")).unwrap_or_default();
    stack.write_service(&[
        &format!("account required {}{seed}", probe.display()),
        &format!(
            "account required {{module}} db={{db}} config={}",
            config.display()
        ),
        &format!("session required {}", probe.display()),
    ]);
    let t = stack.run(user, &["acct", "open"]);
    assert_eq!((t.rc("acct"), t.rc("open")), (0, 0), "{t:?}");
    let seen: Vec<&str> = t
        .texts("info")
        .into_iter()
        .filter_map(|m| m.strip_prefix("probe: "))
        .collect();
    assert_eq!(seen.len(), 1, "{t:?}");
    seen[0].to_string()
}

/// The limit the probe saw is `expected` seconds, give or take the test's own run time.
fn assert_limit_near(seen: &str, expected: i64) {
    let limit: i64 = seen
        .strip_prefix("runtime_max_sec=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no limit: {seen}"));
    assert!(
        (expected - 5..=expected + 5).contains(&limit),
        "{limit} vs {expected}"
    );
}

#[test]
fn the_runtime_limit_ends_a_minute_after_the_next_kick_and_is_only_lowered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = build_probe(dir.path());
    let on = dir.path().join("on.toml");
    std::fs::write(&on, "limit_session_runtime = true\n").unwrap();
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "").unwrap();

    let stack = PamStack::standard("");
    // A warning for everyone in 10 minutes (ignorable: no limit from it), a kick for daemon
    // in 30, and a kick for another user in 20.
    let (warn_at, daemon_kick, bin_kick) = (utc_hhmm(10), utc_hhmm(30), utc_hhmm(20));
    for (group, at, kind) in [
        ("*", &warn_at, "--warn"),
        ("daemon", &daemon_kick, "--kick"),
        ("bin", &bin_kick, "--kick"),
    ] {
        stack.ctl(&[
            "schedule", "add", "--group", group, "--daily", "--at", at, "--tz", "UTC", kind,
        ]);
    }
    // Seconds from now to the next HH:MM in UTC, plus the minute's grace.
    let kick_in = |hhmm: &str| {
        let now = chrono::Utc::now();
        let time = chrono::NaiveTime::parse_from_str(hhmm, "%H:%M").expect("HH:MM");
        let mut at = now.date_naive().and_time(time).and_utc();
        if at <= now {
            at += chrono::Duration::days(1);
        }
        (at - now).num_seconds() + 60
    };

    let expected = kick_in(&daemon_kick);
    assert_limit_near(
        &runtime_max_seen(&stack, "daemon", &probe, &on, None),
        expected,
    );

    // A lower limit set by another module stays; a higher one is lowered to ours.
    assert_eq!(
        runtime_max_seen(&stack, "daemon", &probe, &on, Some(600)),
        "runtime_max_sec=600"
    );
    assert_limit_near(
        &runtime_max_seen(&stack, "daemon", &probe, &on, Some(86_400)),
        expected,
    );

    // A user no kick targets gets none; the other kick's user gets the other kick's limit.
    assert_eq!(
        runtime_max_seen(&stack, "sys", &probe, &on, None),
        "runtime_max_sec unset"
    );
    assert_limit_near(
        &runtime_max_seen(&stack, "bin", &probe, &on, None),
        kick_in(&bin_kick),
    );

    // Off by default: nothing is set.
    assert_eq!(
        runtime_max_seen(&stack, "daemon", &probe, &off, None),
        "runtime_max_sec unset"
    );
}
