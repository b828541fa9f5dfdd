//! The store's readers against the real daemon: a member of `adm` (a throwaway user, in a
//! private mount namespace whose /etc/passwd and /etc/group are copies that have it) is
//! refused the live store's files, reads the readers' copy with `sqlite3` and `forcelogoutctl`,
//! and holding every lock byte of the copy delays no write, no login and no kick, and loses or
//! doubles no event.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use forcelogout_core::store::reader_copy_path;
use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::systemd::{boot_or_skip, Systemd};
use forcelogout_tests::{ctl_path, extension_load_path, with_private_mounts, PamStack};

/// The throwaway member of `adm`; its uid is free on the test machines.
const READER: &str = "fladm";
const READER_UID: u32 = 64123;
/// Debian's python, not a per-user one the reader could not run.
const PYTHON: &str = "/usr/bin/python3";

/// Opens each file named on its command line read-only: "opened" or "refused" (EACCES) each.
const TRY_OPEN: &str = r#"
import os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        print("opened")
    except PermissionError:
        print("refused")
"#;

/// Holds a read lock (F_RDLCK, through a read-only descriptor) on each of SQLite's lock bytes
/// of a database file: PENDING, RESERVED and the SHARED range; says "locked", then holds them
/// for argv[2] seconds and until standard input ends.
const HOLD_LOCKS: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
for start, length in ((0x40000000, 1), (0x40000001, 1), (0x40000002, 510)):
    fcntl.lockf(fd, fcntl.LOCK_SH, length, start, os.SEEK_SET)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
sys.stdin.read()
"#;

fn adm_gid() -> u32 {
    let out = Command::new("getent")
        .args(["group", "adm"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// A PAM stack whose store an `adm` member can reach: the test's directory traversable, the
/// store's directory 0750 root:adm, as the packages make `/var/lib/forcelogout`.
fn reachable_stack() -> PamStack {
    let stack = PamStack::standard("");
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = stack.db.parent().unwrap();
    std::os::unix::fs::chown(state, Some(0), Some(adm_gid())).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o750)).unwrap();
    stack
}

/// `program args` as the throwaway `adm` member, in a private mount namespace.
fn as_reader(program: &str, args: &[&str]) -> Command {
    let setup = format!(
        "d=$(mktemp -d); cp /etc/passwd $d/passwd; \
         echo '{READER}:x:{READER_UID}:{READER_UID}::/nonexistent:/bin/sh' >> $d/passwd; \
         awk -F: -v OFS=: '$1 == \"adm\" {{ $4 = ($4 == \"\" ? \"{READER}\" : $4 \",{READER}\") }} {{ print }}' \
             /etc/group > $d/group; \
         echo '{READER}:x:{READER_UID}:' >> $d/group; \
         mount --bind $d/passwd /etc/passwd; mount --bind $d/group /etc/group; rm -r $d"
    );
    let uid = format!("--reuid={READER_UID}");
    let gid = format!("--regid={READER_UID}");
    let mut all = vec![uid.as_str(), gid.as_str(), "--init-groups", "--", program];
    all.extend_from_slice(args);
    let mut cmd = with_private_mounts(&setup, Path::new("setpriv"), &all);
    cmd.env("HOME", "/");
    cmd
}

/// The live store's files: the database, its WAL and shared memory.
fn live_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

/// EventIdentifier of every event in ReplayId order, of the store or of the copy.
fn identifiers(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT EventIdentifier FROM LogoutEvents ORDER BY ReplayId")
        .unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    ids
}

/// `(GroupName, Event, Reason)` of every event of the live store.
fn events(db: &Path) -> Vec<(String, String, String)> {
    forcelogout_tests::query(
        db,
        "SELECT GroupName, Event, coalesce(Reason, '-') FROM LogoutEvents ORDER BY ReplayId",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

/// Waits until the copy holds exactly the live store's events.
fn copy_caught_up(db: &Path) -> bool {
    let copy = reader_copy_path(db);
    wait_until(Duration::from_secs(20), || {
        copy.exists() && identifiers(&copy) == identifiers(db)
    })
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines a child writes, as they come (a reader thread), so that a wait for one is bounded.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A child process (the lock holder, a follower), killed and reaped even when a test fails.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root: a throwaway adm member in a private mount namespace, and the daemon"]
fn an_adm_member_holding_every_lock_byte_of_the_copy_delays_no_write_and_loses_no_event() {
    let stack = reachable_stack();
    let daemon = Daemon::start(&stack.db, "");
    let first = stack.run("daemon", &["open", "close"]);
    assert!(first.steps.iter().all(|s| s.1 == 0), "{first:?}");
    assert!(copy_caught_up(&stack.db), "{}", daemon.log());
    let copy = reader_copy_path(&stack.db);

    // The live files exist (the daemon has them open) and refuse the member; the copy does not.
    let files = live_files(&stack.db);
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
    let mut args: Vec<&str> = vec!["-c", TRY_OPEN];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.push(copy.to_str().unwrap());
    let opened = ok(&as_reader(PYTHON, &args).output().unwrap());
    assert_eq!(opened, "refused\nrefused\nrefused\nopened\n");
    // A user outside adm is refused the copy too.
    let outsider = Command::new("runuser")
        .args(["-u", "nobody", "--", PYTHON, "-c", TRY_OPEN])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(ok(&outsider), "refused\n");

    // The member holds a read lock on each lock byte of the copy, for 10 s at least.
    let holder = as_reader(PYTHON, &["-c", HOLD_LOCKS, copy.to_str().unwrap(), "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = Holder(holder);
    let mut line = String::new();
    BufReader::new(holder.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    let held_since = Instant::now();
    let copied = identifiers(&copy);

    // Meanwhile a login is recorded in the live store at once...
    let mut session = stack.spawn("bin", &["acct", "open", "wait", "close"]);
    assert_eq!(session.until("acct"), 0);
    assert_eq!(session.until("open"), 0);
    let online = ("bin".to_string(), "online".to_string(), "-".to_string());
    assert!(
        wait_until(Duration::from_secs(5), || events(&stack.db)
            .contains(&online)),
        "{:?}\n{}",
        events(&stack.db),
        daemon.log()
    );
    let recorded_after = held_since.elapsed();
    // ...and a kick issued meanwhile ends it.
    ok(&daemon.ctl(&["logout", "bin", "--kick", "--in", "1s"]));
    assert!(
        wait_until(Duration::from_secs(20), || !alive(session.pid())),
        "{}",
        daemon.log()
    );
    let kicked = ("bin".to_string(), "removed".to_string(), "kick".to_string());
    assert!(
        wait_until(Duration::from_secs(10), || events(&stack.db)
            .contains(&kicked)),
        "{:?}",
        events(&stack.db)
    );
    // All of it while the locks were held: the copy could not change meanwhile.
    assert_eq!(identifiers(&copy), copied);
    assert!(alive(daemon.pid().unwrap()), "{}", daemon.log());
    eprintln!(
        "recorded {recorded_after:?} and kicked {:?} into the hold",
        held_since.elapsed()
    );

    // The locks go: the copy holds exactly the live store's events, none lost or doubled.
    drop(holder.0.stdin.take());
    assert!(holder.0.wait().unwrap().success());
    assert!(held_since.elapsed() >= Duration::from_secs(10));
    assert!(copy_caught_up(&stack.db), "{}", daemon.log());
    let ids = identifiers(&copy);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert!(ids.len() > copied.len());
    // The delay was logged once, and the recovery.
    let log = daemon.log();
    assert_eq!(
        log.matches("the readers' copy is not current").count(),
        1,
        "{log}"
    );
    assert!(log.contains("the readers' copy is current again"), "{log}");
    drop(session);
}

#[test]
#[ignore = "needs root: a throwaway adm member in a private mount namespace, and the daemon"]
fn an_adm_member_reads_the_copy_with_sqlite3_and_forcelogoutctl() {
    let stack = reachable_stack();
    let daemon = Daemon::start(&stack.db, "");
    ok(&daemon.ctl(&[
        "schedule", "add", "--group", "staff", "--daily", "--at", "20:00", "--tz", "UTC",
    ]));
    for user in ["daemon", "bin"] {
        let t = stack.run(user, &["open", "close"]);
        assert!(t.steps.iter().all(|s| s.1 == 0), "{t:?}");
    }
    let mut open = stack.spawn("lp", &["open", "wait", "close"]);
    assert_eq!(open.until("open"), 0);
    assert!(copy_caught_up(&stack.db), "{}", daemon.log());
    let copy = reader_copy_path(&stack.db);
    let db = stack.db.to_str().unwrap();
    let live_count = identifiers(&stack.db).len();

    // The real sqlite3 shell with the extension: the tables come from the copy.
    let mut shell = as_reader("sqlite3", &["-batch", ":memory:"])
        .env("FORCELOGOUT_DB", db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        ".load {}\n\
         SELECT file FROM pragma_database_list WHERE name = 'forcelogout';\n\
         SELECT count(*) FROM LogoutEvents;\n\
         SELECT GroupName FROM LogoutSchedulesCurrent;\n\
         SELECT GroupName FROM LogoutSessions;\n",
        extension_load_path().display()
    );
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    assert_eq!(
        ok(&out),
        format!("{}\n{live_count}\nstaff\nlp\n", copy.display()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // forcelogoutctl's reading commands read the copy.
    let reader_ctl = |args: &[&str]| {
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        let mut cmd = as_reader(ctl_path().to_str().unwrap(), &all);
        cmd.env("FORCELOGOUT_CONFIG", &daemon.config);
        cmd
    };
    let listed = ok(&reader_ctl(&["--json", "events"]).output().unwrap());
    assert_eq!(listed.lines().count(), live_count, "{listed}");
    let sessions = ok(&reader_ctl(&["sessions"]).output().unwrap());
    assert!(sessions.contains("lp"), "{sessions}");

    // `events --follow` sees a login made after it started, from the copy.
    let follower = reader_ctl(&["--json", "events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut follower = Holder(follower);
    let lines = lines_of(follower.0.stdout.take().unwrap());
    let line = || lines.recv_timeout(Duration::from_secs(30)).expect("a line");
    for _ in 0..live_count {
        line();
    }
    let t = stack.run("mail", &["open", "close"]);
    assert!(t.steps.iter().all(|s| s.1 == 0), "{t:?}");
    let next = line();
    assert!(next.contains("\"mail\""), "{next}");
    drop(follower);
    open.proceed();
    open.finish();
}

/// The owner, group and mode of the store's directory, the store, and the copy, inside `sd`.
fn modes_under_the_unit(sd: &Systemd) -> String {
    sd.sh(
        "cd /var/lib/forcelogout && stat -c '%a %U %G %n' . forcelogout.db readers \
         readers/forcelogout.db",
    )
}

#[test]
#[ignore = "needs root: systemd booted in namespaces, running the packaged unit"]
fn under_the_packaged_unit_the_store_stays_roots_and_the_copy_reachable_for_adm() {
    let Some(sd) = boot_or_skip("the readers' copy under the unit") else {
        return;
    };
    sd.install_build();
    sd.write("/etc/forcelogout/forcelogout.toml", "");
    // As the packages make it.
    sd.sh("install -d -m 0750 -o root -g adm /var/lib/forcelogout");
    let expected = "750 root adm .\n600 root root forcelogout.db\n750 root adm readers\n\
                    640 root adm readers/forcelogout.db";
    // Each start, StateDirectory= hands the whole directory to root:root; the daemon gives the
    // directory and the copy back to adm.
    for start in ["start", "restart"] {
        sd.sh(&format!(
            "systemctl daemon-reload && systemctl {start} forcelogout"
        ));
        let settled = sd.wait_for(
            Duration::from_secs(30),
            &format!("test \"$(cd /var/lib/forcelogout && stat -c '%a %U %G %n' . forcelogout.db readers readers/forcelogout.db)\" = \"{expected}\""),
        );
        assert!(settled, "{start}: {}", modes_under_the_unit(&sd));
    }
}
