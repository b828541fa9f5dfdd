//! The processes of a login session, and how they are ended (SPEC §5.4): logind's
//! TerminateSession or the session's own scope when the session is the kicked user's own
//! (`ownership`), and in every case SIGHUP, SIGTERM, SIGKILL to the session's processes, each
//! named by pid *and* start time and signalled through a pidfd (`signals`), so that a reused pid
//! is never signalled.
//!
//! A session's processes are the PAM caller and its descendants (children that called setsid
//! included), and, of the processes that left that tree (double forks, `nohup`, `tmux`), those
//! that run as the kicked uid (real or effective) and share the session's audit session
//! (`LoginKey`) or its process session (`ProcessSession`). The uid is what spares the invoking
//! user under su: both ties are the invoking user's login, not the target's. Never pid 1, never
//! this process. What each way in gets (A: the invoking user, B: the kicked one):
//!
//! - `su B`, `su - B`, `su B -c CMD` (util-linux): the PAM caller is su, run in A's login: A's
//!   process session, A's `session-N.scope`, A's `XDG_SESSION_ID` or none, A's audit session.
//!   Neither logind nor the scope is used (their owner is A). Signals go to su and its
//!   descendants (B's shell), and to B's processes in A's process session (`su B` without
//!   `-c` keeps the shell there) or in A's audit session (`-c` calls setsid, but the audit
//!   session follows every fork). A's own processes never run as B: untouched. Without an audit
//!   session (no pam_loginuid in A's login), a double fork of a `su -c` shell is not found.
//! - `sudo -i -u B`: the same, with sudo as the PAM caller (and, with `use_pty`, the command in
//!   a process session of its own on sudo's pty, a descendant of sudo).
//! - `runuser -l B`: the same as su, A being root: root's processes do not run as B.
//! - `machinectl shell B@`: PID 1 runs the shell as a transient unit with the `login` stack:
//!   pam_systemd gives it a logind session and scope of its own, logind's record says UID=B,
//!   pam_loginuid a new audit session: TerminateSession, else its scope's `cgroup.kill`, and
//!   the signals.
//! - A display manager's session (gdm, lightdm, sddm): the session worker's stack has
//!   pam_systemd and pam_loginuid: as machinectl shell. The user's systemd units
//!   (`user@UID.service`) are in neither the scope nor the audit session: logind's
//!   KillUserProcesses ends those.
//! - ssh or login without logind: the PAM caller leads (or its parent leads) a process session
//!   of its own and pam_loginuid starts an audit session: its tree, and what B started in that
//!   login and detached from it.

mod ownership;
mod signals;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use ownership::{is_logind_session_id, LOGIND_SESSIONS};

use crate::sessions::{login_key_of, parse_login_key};

/// One process, as `/proc/PID/stat` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
    /// Its process session (`getsid`; 0 when led from outside our pid namespace).
    pub process_session: u32,
    pub start_time: u64,
    /// The controlling terminal as the kernel encodes it (0: none).
    pub tty_nr: u32,
    /// Exited, waiting for its parent to reap it.
    pub zombie: bool,
}

/// A process to signal: its pid and the start time it must still have.
pub type ProcessId = (u32, u64);

/// Every process on the system.
pub fn scan() -> Vec<ProcessInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// One process, if it exists.
pub fn scan_one(pid: u32) -> Option<ProcessInfo> {
    read_stat(pid)
}

fn read_stat(pid: u32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcessInfo {
        pid,
        zombie: *fields.first()? == "Z",
        parent: fields.get(1)?.parse().ok()?,
        process_session: fields.get(3)?.parse().ok()?,
        tty_nr: fields.get(4)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Who a process runs as, and which login (audit session) it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub real_uid: u32,
    pub effective_uid: u32,
    pub login_key: Option<u32>,
}

/// A process's credentials, from `/proc/PID/status` and `/proc/PID/sessionid`.
pub fn credentials_of(pid: u32) -> Option<Credentials> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (real_uid, effective_uid) = parse_uids(&status)?;
    Some(Credentials {
        real_uid,
        effective_uid,
        login_key: login_key_of(pid),
    })
}

/// The real and effective uid from `/proc/PID/status`: its one `Uid:` line holds exactly four
/// decimal uids (real, effective, saved, filesystem); anything else is no answer.
pub fn parse_uids(status: &str) -> Option<(u32, u32)> {
    let mut lines = status.lines().filter_map(|l| l.strip_prefix("Uid:"));
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let uids: Vec<u32> = line
        .split_whitespace()
        .map(|f| {
            f.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| f.parse().ok())?
        })
        .collect::<Option<_>>()?;
    match uids[..] {
        [real, effective, _saved, _filesystem] => Some((real, effective)),
        _ => None,
    }
}

/// The session leader (when it is still the process that opened the session) and all of its
/// descendants. Never pid 1 or this process.
pub fn session_tree(
    all: &[ProcessInfo],
    leader: u32,
    leader_start: Option<u64>,
) -> Vec<ProcessInfo> {
    let Some(root) = all.iter().find(|p| p.pid == leader) else {
        return Vec::new();
    };
    if leader_start.is_some_and(|start| start != root.start_time) {
        // The pid was reused: whatever runs under it now is somebody else's.
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<&ProcessInfo>> = HashMap::new();
    for p in all {
        children.entry(p.parent).or_default().push(p);
    }
    let me = std::process::id();
    let mut found = vec![*root];
    let mut seen: HashSet<u32> = HashSet::from([root.pid]);
    let mut queue = vec![root.pid];
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child.pid) {
                found.push(**child);
                queue.push(child.pid);
            }
        }
    }
    found.retain(|p| p.pid != 1 && p.pid != me);
    found
}

/// What a kick of `session` signals (see the module's notes): its process tree, and the
/// processes of the kicked uid (real or effective) that share its audit session or its process
/// session, never the enforcer's own descendants. `credentials` is asked only about processes
/// that may be tied to the session.
pub fn session_targets(
    all: &[ProcessInfo],
    session: &SessionHandle,
    mut credentials: impl FnMut(u32) -> Option<Credentials>,
) -> Vec<ProcessInfo> {
    let mut targets = session_tree(all, session.leader, session.leader_start);
    let login_key = session.login_key.and_then(parse_login_key);
    let process_session = session.process_session.filter(|&sid| sid > 0);
    if login_key.is_none() && process_session.is_none() {
        return targets;
    }
    let me = std::process::id();
    let in_tree: HashSet<u32> = targets.iter().map(|p| p.pid).collect();
    // The enforcer's own children (a desktop agent running as the user, a hook) are never
    // tied to a login, whatever process session they share with it.
    let own: HashSet<u32> = session_tree(all, me, None).iter().map(|p| p.pid).collect();
    for p in all {
        if p.pid == 1 || p.pid == me || p.zombie || in_tree.contains(&p.pid) || own.contains(&p.pid)
        {
            continue;
        }
        let same_process_session = process_session == Some(p.process_session);
        if !same_process_session && login_key.is_none() {
            continue;
        }
        let Some(c) = credentials(p.pid) else {
            continue;
        };
        let tied = same_process_session || (login_key.is_some() && c.login_key == login_key);
        let theirs = c.real_uid == session.uid || c.effective_uid == session.uid;
        if tied && theirs {
            targets.push(*p);
        }
    }
    targets
}

/// Sends `signal` to each process that still has its recorded start time; returns how many
/// were signalled.
fn signal_all(targets: &[ProcessId], signal: Signal) -> usize {
    targets
        .iter()
        .filter(|(pid, start)| signals::send(*pid, *start, signal))
        .count()
}

fn alive(targets: &[ProcessId]) -> Vec<ProcessId> {
    targets
        .iter()
        .copied()
        .filter(|(pid, start)| read_stat(*pid).is_some_and(|p| p.start_time == *start && !p.zombie))
        .collect()
}

fn wait_gone(targets: &[ProcessId], limit: Duration) -> Vec<ProcessId> {
    let deadline = Instant::now() + limit;
    loop {
        let left = alive(targets);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What ending a set of processes took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Termination {
    /// Sessions that logind was asked to terminate (and accepted).
    pub through_logind: usize,
    /// Sessions whose own cgroup was killed, logind being absent or refusing.
    pub through_cgroup: usize,
    pub hangup: usize,
    pub terminated: usize,
    pub killed: usize,
    /// Still there after SIGKILL and the grace period (a process in uninterruptible sleep).
    pub survivors: usize,
}

/// SIGHUP (a terminal went away: shells save history and leave), then SIGTERM after
/// `hup_grace`, then SIGKILL after `term_grace`.
pub fn terminate(targets: &[ProcessId], hup_grace: Duration, term_grace: Duration) -> Termination {
    let mut report = Termination {
        hangup: signal_all(targets, Signal::SIGHUP),
        ..Termination::default()
    };
    // A stopped process cannot act on SIGHUP or SIGTERM until it is continued.
    signal_all(targets, Signal::SIGCONT);
    let left = wait_gone(targets, hup_grace);
    if left.is_empty() {
        return report;
    }
    report.terminated = signal_all(&left, Signal::SIGTERM);
    let left = wait_gone(&left, term_grace);
    if left.is_empty() {
        return report;
    }
    report.killed = signal_all(&left, Signal::SIGKILL);
    report.survivors = wait_gone(&left, Duration::from_secs(2)).len();
    report
}

/// The device path of a `tty_nr` (pseudo-terminals and virtual consoles), if it is one.
pub fn tty_path(tty_nr: u32) -> Option<String> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => Some(format!("/dev/pts/{}", minor + (major - 136) * 256)),
        4 if minor < 64 => Some(format!("/dev/tty{minor}")),
        _ => None,
    }
}

/// What ending one login session needs, as the PAM module recorded it: the kicked user's uid,
/// the PAM caller (pid and start time), its process session and audit session, and, where the
/// session has them, its logind session id and its cgroup (the cgroup v2 path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHandle<'a> {
    pub uid: u32,
    pub leader: u32,
    pub leader_start: Option<u64>,
    pub process_session: Option<u32>,
    /// The audit session id (`LoginKey`), as recorded.
    pub login_key: Option<&'a str>,
    pub logind_session: Option<&'a str>,
    pub cgroup: Option<&'a str>,
}

/// How long `loginctl terminate-session` may take before it is given up on (a hung bus).
const LOGIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends login sessions in SPEC §5.4's order of preference: logind's TerminateSession for the
/// session's `XDG_SESSION_ID` where logind records that session as the kicked user's; else
/// that session's own scope (`cgroup.kill`); and in every case SIGHUP, SIGTERM, SIGKILL to the
/// session's processes (`session_targets`). After the grace periods, whatever still runs in a
/// session's own scope is killed through the cgroup: logind's stop of a scope would give a
/// process that ignores SIGTERM 90 s more.
pub fn end_sessions(
    sessions: &[SessionHandle],
    hup_grace: Duration,
    term_grace: Duration,
) -> Termination {
    end_sessions_in(Path::new(LOGIND_SESSIONS), sessions, hup_grace, term_grace)
}

/// `end_sessions` with logind's session records in `sessions_dir`.
fn end_sessions_in(
    sessions_dir: &Path,
    sessions: &[SessionHandle],
    hup_grace: Duration,
    term_grace: Duration,
) -> Termination {
    let all = scan();
    let mut known: HashMap<u32, Option<Credentials>> = HashMap::new();
    let mut through_logind = 0;
    let mut through_cgroup = 0;
    let mut scopes: Vec<&str> = Vec::new();
    let mut targets: Vec<ProcessId> = Vec::new();
    for session in sessions {
        // Both read logind's record before logind, ending the session, removes it.
        let logind =
            ownership::owned_logind_session(sessions_dir, session.logind_session, session.uid);
        let scope = ownership::owned_scope(
            sessions_dir,
            session.cgroup,
            session.logind_session,
            session.uid,
        );
        if logind.is_some_and(terminate_through_logind) {
            through_logind += 1;
        } else if scope.is_some_and(kill_cgroup) {
            through_cgroup += 1;
        }
        scopes.extend(scope);
        let credentials = |pid| *known.entry(pid).or_insert_with(|| credentials_of(pid));
        targets.extend(
            session_targets(&all, session, credentials)
                .into_iter()
                .map(|p| (p.pid, p.start_time)),
        );
    }
    targets.sort_unstable();
    targets.dedup();
    let mut report = terminate(&targets, hup_grace, term_grace);
    report.through_logind = through_logind;
    report.through_cgroup = through_cgroup;
    for scope in scopes {
        let left = ownership::cgroup_dir(scope).map_or_else(Vec::new, |dir| cgroup_pids(&dir));
        if !left.is_empty() && kill_cgroup(scope) {
            report.killed += left.len();
        }
    }
    report
}

/// `loginctl terminate-session ID` (an id `ownership` checked); whether logind accepted it.
/// Bounded by `LOGIND_TIMEOUT`.
fn terminate_through_logind(id: &str) -> bool {
    if !is_logind_session_id(id) {
        return false;
    }
    let child = std::process::Command::new("loginctl")
        .args(["--no-ask-password", "terminate-session", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + LOGIND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The pids in a cgroup and its children.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path()));
        }
    }
    pids
}

/// SIGKILL to every process of the cgroup v2 path `cgroup`: `cgroup.kill` (Linux >= 5.14),
/// which no fork can escape, else each listed pid still in it when a pidfd holds it.
fn kill_cgroup(cgroup: &str) -> bool {
    let Some(dir) = ownership::cgroup_dir(cgroup) else {
        return false;
    };
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return true;
    }
    let pids = cgroup_pids(&dir);
    let me = std::process::id();
    for pid in pids.iter().filter(|&&p| p != me && p != 1) {
        signals::send_to_member(*pid, cgroup, Signal::SIGKILL);
    }
    !pids.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_numbers() {
        assert_eq!(tty_path(0), None);
        assert_eq!(tty_path((136 << 8) | 3), Some("/dev/pts/3".into()));
        assert_eq!(tty_path((4 << 8) | 2), Some("/dev/tty2".into()));
    }

    #[test]
    fn this_process_is_found_but_never_its_own_target() {
        let all = scan();
        let me = std::process::id();
        let mine = all.iter().find(|p| p.pid == me).expect("this process");
        assert_eq!(
            i64::from(mine.process_session),
            i64::from(nix::unistd::getsid(None).unwrap().as_raw())
        );
        // Never this process (its children, such as other tests' processes, may be there).
        assert!(session_tree(&all, me, None).iter().all(|p| p.pid != me));
        // A wrong start time means a reused pid: nothing.
        assert!(session_tree(&all, mine.parent, Some(1)).is_empty());
    }

    #[test]
    fn uids_are_read_strictly_from_status() {
        let status = "Name:\tsleep\nPid:\t42\nUid:\t1001\t0\t0\t0\nGid:\t1001\t1001\t1001\t1001\n";
        assert_eq!(parse_uids(status), Some((1001, 0)));
        for bad in [
            "Name:\tsleep\n",
            "Uid:\t1001\t1001\t1001\n",
            "Uid:\t1001\t1001\t1001\t1001\t1001\n",
            "Uid:\t-1\t0\t0\t0\n",
            "Uid:\t1001\tx\t0\t0\n",
            "Uid:\t1\t1\t1\t1\nUid:\t2\t2\t2\t2\n",
        ] {
            assert_eq!(parse_uids(bad), None, "{bad:?}");
        }
        let mine = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(parse_uids(&mine).map(|u| u.0), Some(uid));
        assert_eq!(
            credentials_of(std::process::id()).map(|c| c.real_uid),
            Some(uid)
        );
    }

    const A: u32 = 1000;
    const B: u32 = 1001;
    const KEY: u32 = 7;

    fn process(pid: u32, parent: u32, process_session: u32) -> ProcessInfo {
        ProcessInfo {
            pid,
            parent,
            process_session,
            start_time: u64::from(pid) * 10,
            tty_nr: 0,
            zombie: false,
        }
    }

    /// A's login (session 50, audit session 7) ran `su -c` (su: 100) into B; B's shell (101)
    /// called setsid, started 102 and double-forked 103.
    fn su_scene() -> (Vec<ProcessInfo>, HashMap<u32, Credentials>) {
        let me = std::process::id();
        let creds = |real, effective, key| Credentials {
            real_uid: real,
            effective_uid: effective,
            login_key: key,
        };
        let mut zombie = process(104, 1, 101);
        zombie.zombie = true;
        let rows = [
            (process(1, 0, 1), creds(B, B, Some(KEY))),
            (process(50, 40, 50), creds(A, A, Some(KEY))),
            (process(51, 50, 50), creds(A, A, Some(KEY))),
            (process(52, 1, 50), creds(A, A, Some(KEY))),
            (process(100, 50, 50), creds(A, 0, Some(KEY))),
            (process(101, 100, 101), creds(B, B, Some(KEY))),
            (process(102, 101, 101), creds(B, B, Some(KEY))),
            (process(103, 1, 101), creds(B, B, Some(KEY))),
            (zombie, creds(B, B, Some(KEY))),
            // B's shell of an earlier `su B` (no -c) in A's process session, double-forked.
            (process(60, 1, 50), creds(B, B, Some(KEY))),
            // A setuid-B program A runs: B's by its effective uid.
            (process(61, 51, 50), creds(A, B, Some(KEY))),
            // B's own ssh login elsewhere: another audit session and process session.
            (process(70, 1, 70), creds(B, B, Some(8))),
            // Somebody else's process in B's new process session (it cannot be, but if it were).
            (process(80, 1, 101), creds(A, A, Some(9))),
            (process(me, 1, 50), creds(B, B, Some(KEY))),
        ];
        let all = rows.iter().map(|(p, _)| *p).collect();
        let creds = rows.iter().map(|(p, c)| (p.pid, *c)).collect();
        (all, creds)
    }

    fn targets_of(session: &SessionHandle) -> Vec<u32> {
        let (all, creds) = su_scene();
        let mut pids: Vec<u32> = session_targets(&all, session, |pid| creds.get(&pid).copied())
            .iter()
            .map(|p| p.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    fn su_session() -> SessionHandle<'static> {
        SessionHandle {
            uid: B,
            leader: 100,
            leader_start: Some(1000),
            process_session: Some(50),
            login_key: Some("7"),
            logind_session: None,
            cgroup: Some("/user.slice/user-1000.slice/session-3.scope"),
        }
    }

    #[test]
    fn a_kick_reaches_the_su_tree_and_the_targets_processes_that_left_it_and_no_other() {
        // Never 1, this process, a zombie, A's processes, B's other login, an A process in
        // B's process session.
        assert_eq!(targets_of(&su_session()), [60, 61, 100, 101, 102, 103]);
    }

    #[test]
    fn without_an_audit_session_the_process_session_ties_and_the_uid_still_spares() {
        let session = SessionHandle {
            login_key: None,
            ..su_session()
        };
        // 103 double-forked from a `su -c` shell in a process session of its own: not found.
        assert_eq!(targets_of(&session), [60, 61, 100, 101, 102]);
        let unset = SessionHandle {
            login_key: Some("4294967295"),
            ..session
        };
        assert_eq!(targets_of(&unset), [60, 61, 100, 101, 102]);
    }

    #[test]
    fn without_ties_only_the_tree_and_with_a_reused_leader_not_even_that() {
        let session = SessionHandle {
            login_key: None,
            process_session: None,
            ..su_session()
        };
        // What double-forked out of the tree is out of reach then (103, 60).
        assert_eq!(targets_of(&session), [100, 101, 102]);
        let reused = SessionHandle {
            leader_start: Some(1),
            ..session
        };
        assert!(targets_of(&reused).is_empty());
    }

    #[test]
    fn a_kick_of_the_invoking_user_takes_its_whole_login_tree() {
        // Kicking A through A's own login (its shell, 50): its tree (su and B's shell under it
        // end with A's login) and A's processes that left it (52), never B's that left su's
        // tree (60, 103), an A process outside A's login (80), this process or pid 1.
        let session = SessionHandle {
            uid: A,
            leader: 50,
            leader_start: Some(500),
            ..su_session()
        };
        assert_eq!(targets_of(&session), [50, 51, 52, 61, 100, 101, 102]);
    }
}
