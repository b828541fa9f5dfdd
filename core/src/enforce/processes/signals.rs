//! Signals that reach only the process they were meant for (SPEC §5.4). A pidfd is opened
//! first, and only then is the process checked (its start time, or its cgroup): if the check
//! passes, the pidfd is known to refer to that process, and a signal sent through it can never
//! reach another process that reuses the pid later. Where the kernel has no pidfds (before
//! Linux 5.3: ENOSYS), the check and `kill` remain, with the small window between them.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustix::io::Errno;
use rustix::process::{pidfd_open, pidfd_send_signal, PidfdFlags};

use crate::sessions::start_time_of;

/// Sends `signal` to `pid` if, once a pidfd holds it, `still_it` says it is the process meant;
/// whether it was sent.
pub fn send_checked(pid: u32, signal: Signal, still_it: impl FnOnce(u32) -> bool) -> bool {
    let Some(raw) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    let Some(to_send) = rustix::process::Signal::from_named_raw(signal as i32) else {
        return false;
    };
    match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(pidfd) => still_it(pid) && pidfd_send_signal(&pidfd, to_send).is_ok(),
        Err(Errno::NOSYS) => still_it(pid) && kill(Pid::from_raw(raw.as_raw_pid()), signal).is_ok(),
        // ESRCH: it is gone.
        Err(_) => false,
    }
}

/// Sends `signal` to `pid` if it still has the start time `start` (clock ticks since boot).
pub fn send(pid: u32, start: u64, signal: Signal) -> bool {
    send_checked(pid, signal, |pid| start_time_of(pid) == Some(start))
}

/// Sends `signal` to `pid` if it is in the cgroup v2 path `cgroup` or below.
pub fn send_to_member(pid: u32, cgroup: &str, signal: Signal) -> bool {
    send_checked(pid, signal, |pid| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| {
                let path = text
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))?
                    .to_string();
                Some(path == cgroup || path.starts_with(&format!("{cgroup}/")))
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn exited_by(child: &mut std::process::Child) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.signal();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_process_with_its_start_time_is_signalled_through_a_pidfd() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let start = start_time_of(child.id()).unwrap();
        assert!(send(child.id(), start, Signal::SIGTERM));
        assert_eq!(exited_by(&mut child), Some(Signal::SIGTERM as i32));
    }

    #[test]
    fn a_pid_whose_start_time_differs_is_never_signalled() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let start = start_time_of(child.id()).unwrap();
        assert!(!send(child.id(), start + 1, Signal::SIGTERM));
        assert!(!send_checked(child.id(), Signal::SIGTERM, |_| false));
        assert_eq!(child.try_wait().unwrap(), None);
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone (reaped): nothing to open a pidfd on.
        assert!(!send(child.id(), start, Signal::SIGTERM));
        assert!(!send(0, 0, Signal::SIGTERM));
    }

    #[test]
    fn only_a_member_of_the_cgroup_is_signalled() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = mine
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string);
        assert!(!send_to_member(
            child.id(),
            "/no-such.scope",
            Signal::SIGTERM
        ));
        assert_eq!(child.try_wait().unwrap(), None);
        if let Some(path) = path {
            assert!(send_to_member(child.id(), &path, Signal::SIGTERM));
            assert_eq!(exited_by(&mut child), Some(Signal::SIGTERM as i32));
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
