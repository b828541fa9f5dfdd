//! Facts about a login session that the PAM module records (SPEC §2.3).

use serde::{Deserialize, Serialize};

/// What PAM tells about a login.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoginFacts {
    pub user: String,
    pub uid: u32,
    pub service: Option<String>,
    pub tty: Option<String>,
    pub remote_host: Option<String>,
    /// `XDG_SESSION_ID` from the PAM environment, set by pam_systemd where logind runs.
    pub logind_session: Option<String>,
}

/// What the kernel tells about the process that runs the PAM stack.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessFacts {
    pub pid: u32,
    pub process_session: Option<u32>,
    pub cgroup: Option<String>,
    /// The audit session id (`/proc/self/sessionid`), when set: ties su/sudo to the first login.
    pub login_key: Option<String>,
    pub boot_id: String,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): with the pid and the
    /// boot id it names a process that a reused pid cannot impersonate.
    pub pid_start_time: Option<u64>,
    pub host: String,
}

/// The audit session id the kernel uses for "not set".
const UNSET_AUDIT_SESSION: u32 = u32::MAX;

impl ProcessFacts {
    pub fn of_current_process() -> ProcessFacts {
        let pid = std::process::id();
        ProcessFacts {
            pid,
            process_session: nix::unistd::getsid(None)
                .ok()
                .and_then(|sid| known_session_id(sid.as_raw())),
            cgroup: read_trimmed("/proc/self/cgroup").map(|text| unified_cgroup(&text)),
            login_key: read_trimmed("/proc/self/sessionid")
                .and_then(|text| parse_login_key(&text))
                .map(|key| key.to_string()),
            boot_id: current_boot_id(),
            pid_start_time: start_time_of(pid),
            host: host_name(),
        }
    }
}

/// An audit session id as `/proc/PID/sessionid` (and the store's `LoginKey`) give it, when
/// set: pam_loginuid starts one per login and every process of that login inherits it,
/// through su, sudo, setsid and double forks alike; no process can change its own.
pub fn parse_login_key(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&key| key != UNSET_AUDIT_SESSION)
}

/// The audit session id of process `pid`, when set.
pub fn login_key_of(pid: u32) -> Option<u32> {
    parse_login_key(&std::fs::read_to_string(format!("/proc/{pid}/sessionid")).ok()?)
}

/// `getsid` gives 0 when the session leader lives outside our pid namespace (a container
/// started from a shell outside it, some CI runners): that is no session we can name.
fn known_session_id(raw: i32) -> Option<u32> {
    u32::try_from(raw).ok().filter(|&sid| sid > 0)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The cgroup v2 path (`0::/…`) where there is one, else the whole file on one line.
fn unified_cgroup(text: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
        .unwrap_or_else(|| text.replace('\n', ";"))
}

pub fn current_boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_else(|| "unknown".into())
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Field 22 of `/proc/PID/stat`, read after the command name (which may hold spaces and
/// parentheses, so the fields start after the last ')').
pub fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_process() {
        let facts = ProcessFacts::of_current_process();
        assert_eq!(facts.pid, std::process::id());
        assert_eq!(facts.boot_id.len(), 36);
        assert!(facts.pid_start_time.is_some());
        assert!(!facts.host.is_empty());
    }

    #[test]
    fn a_session_led_from_outside_the_pid_namespace_is_not_recorded_as_session_zero() {
        assert_eq!(known_session_id(0), None);
        assert_eq!(known_session_id(-1), None);
        assert_eq!(known_session_id(4242), Some(4242));
    }

    #[test]
    fn audit_session_ids() {
        assert_eq!(parse_login_key("42\n"), Some(42));
        assert_eq!(parse_login_key("4294967295"), None, "unset");
        for bad in ["", "-1", "+3", "3x", "99999999999"] {
            assert_eq!(parse_login_key(bad), None, "{bad:?}");
        }
        let own = std::fs::read_to_string("/proc/self/sessionid").ok();
        assert_eq!(
            login_key_of(std::process::id()),
            own.and_then(|t| parse_login_key(&t))
        );
    }

    #[test]
    fn cgroup_v2_line_is_preferred() {
        assert_eq!(
            unified_cgroup("1:cpu:/\n0::/user.slice/session-3.scope"),
            "/user.slice/session-3.scope"
        );
        assert_eq!(unified_cgroup("1:cpu:/a\n2:pids:/b"), "1:cpu:/a;2:pids:/b");
    }
}
