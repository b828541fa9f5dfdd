//! The processes of a login session, and how they are ended (SPEC §5.4): the PAM caller and
//! its descendants (children that called setsid included), each identified by pid *and* start
//! time so that a reused pid is never signalled; SIGHUP, then SIGTERM, then SIGKILL.
//!
//! The caller's whole process session is deliberately not used: under `su` it is the session of
//! the user who ran su, which may belong to somebody else.

use std::collections::{HashMap, HashSet};
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
}
