//! Whether a logind session or a session's scope is the kicked login's own (SPEC §5.4), before
//! it is ended whole. Under `su`, `sudo -i` and `runuser -l` the PAM caller still runs in the
//! invoking user's `session-N.scope`, and pam_systemd leaves (or finds) the invoking user's
//! `XDG_SESSION_ID`: ending either would end the invoking user's login. So a logind session is
//! used only when logind's own record of it (`/run/systemd/sessions/ID`) names the kicked uid,
//! and a scope only when it is that very session's (`session-ID.scope`).
//!
//! The state file is read strictly: comment lines and `KEY=value` lines only, one `UID=`; a
//! file that is anything else, unreadable, a link, or writable by others is no proof of
//! ownership, and the session is then ended through its processes instead.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where logind keeps a state file per session.
pub const LOGIND_SESSIONS: &str = "/run/systemd/sessions";

/// logind writes a few hundred bytes; anything much larger is not its file.
const STATE_FILE_LIMIT: u64 = 64 * 1024;

/// What logind's state file for a session says, of what ownership needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogindRecord {
    pub uid: u32,
    /// `SCOPE=`: the session's scope unit, once logind has made it.
    pub scope: Option<String>,
}

/// Whether `id` is a logind session id (`3`, `c12`): nothing else names a file or is passed
/// to loginctl.
pub fn is_logind_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A logind session state file: `None` unless every line is a comment, empty, or `KEY=value`
/// with an upper-case key, and there is exactly one `UID=` with a decimal uid (and at most one
/// `SCOPE=`).
pub fn parse_state(text: &str) -> Option<LogindRecord> {
    let mut uid = None;
    let mut scope = None;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return None;
        }
        match key {
            "UID" if uid.is_none() => uid = Some(decimal_u32(value)?),
            "SCOPE" if scope.is_none() => scope = Some(value.to_string()),
            "UID" | "SCOPE" => return None,
            _ => {}
        }
    }
    Some(LogindRecord { uid: uid?, scope })
}

fn decimal_u32(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// logind's record of session `id` in `sessions_dir`: a regular file (not a link), small, not
/// writable by group or others, owned by root or by this process's user (logind runs as root,
/// and so does the daemon; the tests' temporary directories are their user's).
pub fn read_record(sessions_dir: &Path, id: &str) -> Option<LogindRecord> {
    if !is_logind_session_id(id) {
        return None;
    }
    let path = sessions_dir.join(id);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let trusted_owner = meta.uid() == 0 || meta.uid() == nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file()
        || meta.len() > STATE_FILE_LIMIT
        || meta.mode() & 0o022 != 0
        || !trusted_owner
    {
        return None;
    }
    parse_state(&std::fs::read_to_string(path).ok()?)
}

/// The session's `XDG_SESSION_ID`, when logind records that session as `uid`'s.
pub fn owned_logind_session<'a>(
    sessions_dir: &Path,
    id: Option<&'a str>,
    uid: u32,
) -> Option<&'a str> {
    let id = id?;
    read_record(sessions_dir, id)
        .filter(|record| record.uid == uid)
        .map(|_| id)
}

/// The session's own scope, as a cgroup path: its cgroup is `…/session-ID.scope` for its own
/// `XDG_SESSION_ID`, and logind records that session (and that scope, where it names one) as
/// `uid`'s. Never a slice, a service, or another session's scope.
pub fn owned_scope<'a>(
    sessions_dir: &Path,
    cgroup: Option<&'a str>,
    logind_session: Option<&str>,
    uid: u32,
) -> Option<&'a str> {
    let (cgroup, id) = (cgroup?, logind_session?);
    let name = format!("session-{id}.scope");
    let well_formed = cgroup.starts_with('/')
        && cgroup.rsplit('/').next() == Some(name.as_str())
        && !cgroup.split('/').any(|part| part == ".." || part == ".");
    if !well_formed {
        return None;
    }
    let record = read_record(sessions_dir, id)?;
    let same_scope = record.scope.as_deref().is_none_or(|scope| scope == name);
    (record.uid == uid && same_scope).then_some(cgroup)
}

/// The directory of a cgroup v2 path: under `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one; `None` on a cgroup v1 only host or when it is gone.
pub fn cgroup_dir(cgroup: &str) -> Option<PathBuf> {
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|root| root.join("cgroup.controllers").exists())?;
    let dir = root.join(cgroup.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const STATE: &str = "# This is private data. Do not parse.\nUID=1000\nUSER=ann\nACTIVE=1\n\
                         STATE=active\nREMOTE=0\nSCOPE=session-3.scope\nLEADER=812\n";

    fn sessions(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        dir
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

    #[test]
    fn a_state_file_is_read_strictly() {
        assert_eq!(
            parse_state(STATE),
            Some(LogindRecord {
                uid: 1000,
                scope: Some("session-3.scope".into())
            })
        );
        assert_eq!(parse_state("UID=0\n").map(|r| r.uid), Some(0));
        for bad in [
            "",
            "USER=ann\n",
            "UID=\n",
            "UID=-1\n",
            "UID=+5\n",
            "UID= 1000\n",
            "UID=1000 \n",
            "UID=99999999999\n",
            "UID=1000\nUID=1000\n",
            "UID=1000\nSCOPE=a\nSCOPE=b\n",
            "UID=1000\nnot a pair\n",
            "UID=1000\nuser=ann\n",
            "UID=1000\n=x\n",
            " UID=1000\n",
        ] {
            assert_eq!(parse_state(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_logind_session_is_used_only_when_its_record_names_the_kicked_uid() {
        let dir = sessions(&[("3", STATE), ("7", "UID=1001\n"), ("9", "garbage")]);
        let d = dir.path();
        assert_eq!(owned_logind_session(d, Some("3"), 1000), Some("3"));
        // su: the invoking user's session, named by the kicked user's XDG_SESSION_ID.
        assert_eq!(owned_logind_session(d, Some("7"), 1000), None);
        assert_eq!(owned_logind_session(d, Some("9"), 1000), None);
        assert_eq!(owned_logind_session(d, Some("4"), 1000), None, "no record");
        assert_eq!(owned_logind_session(d, Some("../3"), 1000), None);
        assert_eq!(owned_logind_session(d, None, 1000), None);
    }

    #[test]
    fn a_record_that_others_could_write_or_that_is_a_link_proves_nothing() {
        let dir = sessions(&[("3", STATE)]);
        let d = dir.path();
        std::os::unix::fs::symlink(d.join("3"), d.join("5")).unwrap();
        assert_eq!(owned_logind_session(d, Some("5"), 1000), None);
        std::fs::set_permissions(d.join("3"), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(owned_logind_session(d, Some("3"), 1000), None);
        std::fs::remove_file(d.join("3")).unwrap();
        std::fs::create_dir(d.join("3")).unwrap();
        assert_eq!(owned_logind_session(d, Some("3"), 1000), None);
    }

    #[test]
    fn a_scope_is_used_only_when_it_is_the_kicked_users_own_session() {
        let dir = sessions(&[("3", STATE), ("7", "UID=1001\nSCOPE=session-7.scope\n")]);
        let d = dir.path();
        let own = "/user.slice/user-1000.slice/session-3.scope";
        assert_eq!(owned_scope(d, Some(own), Some("3"), 1000), Some(own));
        // su from user 1001's session 7: its scope, its XDG_SESSION_ID, kicked user 1000.
        let theirs = "/user.slice/user-1001.slice/session-7.scope";
        assert_eq!(owned_scope(d, Some(theirs), Some("7"), 1000), None);
        // The scope of another session than the recorded one, or no recorded session.
        assert_eq!(owned_scope(d, Some(theirs), Some("3"), 1000), None);
        assert_eq!(owned_scope(d, Some(own), None, 1000), None);
        // A scope logind does not (or no longer) know.
        let unknown = "/user.slice/user-1000.slice/session-4.scope";
        assert_eq!(owned_scope(d, Some(unknown), Some("4"), 1000), None);
        for cgroup in [
            "/user.slice/user-1000.slice",
            "/system.slice/sshd.service",
            "/user.slice/../session-3.scope",
            "/user.slice/./session-3.scope",
            "user.slice/session-3.scope",
            "1:cpu:/a;0::/user.slice/session-3.scope",
        ] {
            assert_eq!(
                owned_scope(d, Some(cgroup), Some("3"), 1000),
                None,
                "{cgroup}"
            );
        }
    }

    #[test]
    fn a_scope_the_record_names_otherwise_is_not_the_sessions() {
        let dir = sessions(&[
            ("3", "UID=1000\nSCOPE=session-8.scope\n"),
            ("4", "UID=1000\n"),
        ]);
        let d = dir.path();
        assert_eq!(
            owned_scope(d, Some("/u/session-3.scope"), Some("3"), 1000),
            None
        );
        // A session logind has not given a scope yet in its record: its name decides.
        assert_eq!(
            owned_scope(d, Some("/u/session-4.scope"), Some("4"), 1000),
            Some("/u/session-4.scope")
        );
    }

    #[test]
    fn a_scope_that_does_not_exist_has_no_directory() {
        assert_eq!(
            cgroup_dir("/user.slice/user-0.slice/session-999999.scope"),
            None
        );
    }
}
