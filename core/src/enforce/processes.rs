//! The processes of a login session, and how they are ended (SPEC §5.4): the PAM caller and
//! its descendants (children that called setsid included), each identified by pid *and* start
//! time so that a reused pid is never signalled; SIGHUP, then SIGTERM, then SIGKILL.
//!
//! The caller's whole process session is deliberately not used: under `su` it is the session of
//! the user who ran su, which may belong to somebody else.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::sessions::start_time_of;

/// One process, as `/proc/PID/stat` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
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
        tty_nr: fields.get(4)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
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

/// Sends `signal` to each process that still has its recorded start time; returns how many
/// were signalled.
fn signal_all(targets: &[ProcessId], signal: Signal) -> usize {
    targets
        .iter()
        .filter(|(pid, start)| start_time_of(*pid) == Some(*start))
        .filter(|(pid, _)| kill(Pid::from_raw(*pid as i32), signal).is_ok())
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

/// What ending one login session needs: the PAM caller (pid and start time) and, where the
/// session has them, its logind session id and its cgroup (the cgroup v2 path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHandle<'a> {
    pub leader: u32,
    pub leader_start: Option<u64>,
    pub logind_session: Option<&'a str>,
    pub cgroup: Option<&'a str>,
}

/// How long `loginctl terminate-session` may take before it is given up on (a hung bus).
const LOGIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends login sessions in SPEC §5.4's order of preference: logind's TerminateSession for the
/// session's `XDG_SESSION_ID` where logind knows it; else the session's own cgroup
/// (`cgroup.kill`); and in every case SIGHUP, SIGTERM, SIGKILL to the PAM caller's process
/// tree. After the grace periods, whatever still runs in a session's own scope is killed through
/// the cgroup: logind's stop of a scope would give a process that ignores SIGTERM 90 s more.
pub fn end_sessions(
    sessions: &[SessionHandle],
    hup_grace: Duration,
    term_grace: Duration,
) -> Termination {
    let all = scan();
    let mut through_logind = 0;
    let mut through_cgroup = 0;
    let mut targets: Vec<ProcessId> = Vec::new();
    for session in sessions {
        let scope = session.cgroup.and_then(own_scope);
        if session.logind_session.is_some_and(terminate_through_logind) {
            through_logind += 1;
        } else if scope.as_deref().is_some_and(kill_cgroup) {
            through_cgroup += 1;
        }
        targets.extend(
            session_tree(&all, session.leader, session.leader_start)
                .into_iter()
                .map(|p| (p.pid, p.start_time)),
        );
    }
    let mut report = terminate(&targets, hup_grace, term_grace);
    report.through_logind = through_logind;
    report.through_cgroup = through_cgroup;
    for scope in sessions.iter().filter_map(|s| s.cgroup.and_then(own_scope)) {
        let left = cgroup_pids(&scope);
        if !left.is_empty() && kill_cgroup(&scope) {
            report.killed += left.len();
        }
    }
    report
}

/// Whether `id` is a logind session id (`3`, `c12`): nothing else is passed to loginctl.
pub fn is_logind_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `loginctl terminate-session ID`, where logind runs and still knows the session
/// (`/run/systemd/sessions/ID`); whether logind accepted it. Bounded by `LOGIND_TIMEOUT`.
fn terminate_through_logind(id: &str) -> bool {
    if !is_logind_session_id(id)
        || !std::path::Path::new("/run/systemd/sessions")
            .join(id)
            .exists()
    {
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

/// The directory of a session's own cgroup (a `session-*.scope`, never a shared slice) in the
/// cgroup v2 hierarchy: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one. `None` on a cgroup v1 only host or for any other cgroup.
fn own_scope(cgroup: &str) -> Option<PathBuf> {
    let name = cgroup.rsplit('/').next()?;
    let own = cgroup.starts_with('/')
        && name.starts_with("session-")
        && name.ends_with(".scope")
        && !cgroup.split('/').any(|part| part == "..");
    if !own {
        return None;
    }
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|root| root.join("cgroup.controllers").exists())?;
    let dir = root.join(cgroup.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
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

/// SIGKILL to every process of the cgroup: `cgroup.kill` (Linux >= 5.14), which no fork can
/// escape, else each listed pid (a cgroup's members cannot be reused pids: they are live).
fn kill_cgroup(dir: &Path) -> bool {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return true;
    }
    let pids = cgroup_pids(dir);
    let me = std::process::id();
    for pid in pids.iter().filter(|&&p| p != me && p != 1) {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
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
        assert!(all.iter().any(|p| p.pid == me));
        assert!(session_tree(&all, me, None).is_empty());
        // A wrong start time means a reused pid: nothing.
        let parent = all.iter().find(|p| p.pid == me).unwrap().parent;
        assert!(session_tree(&all, parent, Some(1)).is_empty());
    }

    #[test]
    fn only_a_session_scope_is_ever_killed_through_its_cgroup() {
        assert_eq!(own_scope("/user.slice/user-1000.slice"), None);
        assert_eq!(own_scope("/system.slice/sshd.service"), None);
        assert_eq!(own_scope("/user.slice/../session-1.scope/.."), None);
        assert_eq!(own_scope("1:cpu:/a;0::/user.slice/session-1.scope"), None);
        assert_eq!(
            own_scope("/user.slice/user-0.slice/session-999999.scope"),
            None
        );
    }

    #[test]
    fn logind_session_ids() {
        assert!(is_logind_session_id("c12"));
        assert!(is_logind_session_id("3"));
        assert!(!is_logind_session_id(""));
        assert!(!is_logind_session_id("--help"));
        assert!(!is_logind_session_id("1 2"));
        assert!(!is_logind_session_id("../c1"));
    }
}
