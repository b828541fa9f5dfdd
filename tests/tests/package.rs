//! The packages: the .deb installed into a throwaway root (an overlay of the host's root in a
//! private mount namespace, entered with chroot: nothing reaches the host), lintian, and the
//! .rpm's file list. The packages are built by packaging/build-deb.sh and build-rpm.sh
//! (scripts/test.sh runs them before the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use forcelogout_tests::workspace_dir;

fn built(dir: &str, suffix: &str) -> Option<PathBuf> {
    let dir = workspace_dir().join(dir);
    walk(&dir)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn deb() -> PathBuf {
    built("target/deb", ".deb").expect("no .deb: run packaging/build-deb.sh (scripts/test.sh does)")
}

#[test]
#[ignore = "needs root: an overlay root needs root"]
fn the_deb_installs_works_and_purges_cleanly_in_a_throwaway_root() {
    let state_existed = Path::new("/var/lib/forcelogout").exists();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().display();
    std::fs::copy(deb(), dir.path().join("forcelogout.deb")).unwrap();
    std::fs::copy(
        workspace_dir().join("tests/scripts/install-in-overlay.sh"),
        dir.path().join("inner.sh"),
    )
    .unwrap();
    let setup = format!(
        "mkdir {t}/upper {t}/work {t}/root; \
         mount -t overlay overlay -o lowerdir=/,upperdir={t}/upper,workdir={t}/work {t}/root; \
         for d in proc sys dev; do mount --rbind /$d {t}/root/$d; done; \
         mount -t tmpfs tmpfs {t}/root/run; mount -t tmpfs tmpfs {t}/root/tmp; \
         cp {t}/forcelogout.deb {t}/inner.sh {t}/root/tmp/; \
         exec chroot {t}/root sh /tmp/inner.sh /tmp/forcelogout.deb"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", &setup])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let checks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok: "))
        .collect();
    let expected = [
        "a login works before",
        "module in common-account",
        "module in common-session",
        "state directory 0750 root:adm",
        "a throwaway user logs in through login",
        "online/removed/offline recorded",
        "sqlite3 loads the extension from its installed path",
        "forcelogoutctl --help",
        "man page forcelogoutctl(8)",
        "man page pam_forcelogout(8)",
    ];
    for check in expected {
        assert!(
            checks.contains(&check),
            "failed: {check}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut after = vec![
        "/etc/pam.d byte-identical after purge",
        "state removed by purge",
        "a login still works after purge",
    ];
    if Path::new("/usr/bin/systemd-analyze").exists() {
        after.push("systemd-analyze verify");
    }
    for check in after {
        assert!(
            checks.contains(&check),
            "failed: {check}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host is untouched.
    assert_eq!(Path::new("/var/lib/forcelogout").exists(), state_existed);
    let common = std::fs::read_to_string("/etc/pam.d/common-account").unwrap_or_default();
    assert!(
        !common.contains("pam_forcelogout"),
        "the host's PAM configuration was changed"
    );
}

#[test]
fn lintian_finds_no_errors() {
    if Command::new("lintian").arg("--version").output().is_err() {
        eprintln!("skipped: lintian is not installed");
        return;
    }
    let out = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(deb())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lintian: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.lines().any(|l| l.starts_with("E: ")), "{text}");
}

#[test]
fn the_rpm_has_the_same_files_as_the_deb() {
    let Some(rpm) = built("target/rpm", ".rpm") else {
        panic!("no .rpm: run packaging/build-rpm.sh (scripts/test.sh does)");
    };
    let listed = Command::new("rpm").arg("-qlp").arg(&rpm).output().unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mut rpm_files: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        // The directories the rpm owns (the deb's listing below has files only).
        .filter(|f| !f.ends_with("/hooks.d") && !f.ends_with("/libexec/forcelogout"))
        .map(|f| {
            f.replace("/usr/lib64/security/", "/security/")
                .replace("/usr/lib/systemd/", "/systemd/")
        })
        .collect();
    let contents = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb())
        .output()
        .unwrap();
    let mut deb_files: Vec<String> = String::from_utf8_lossy(&contents.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|f| f.trim_start_matches('.').to_string())
        .map(|f| {
            let f = f.replace("/lib/systemd/", "/systemd/");
            match f.find("/security/") {
                Some(i) => f[i..].to_string(),
                None => f,
            }
        })
        .collect();
    rpm_files.sort();
    deb_files.sort();
    assert_eq!(rpm_files, deb_files);
    assert!(deb_files.len() > 25, "{deb_files:?}");
}
