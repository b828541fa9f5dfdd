//! Desktop notifications (SPEC §10): the countdown and the message on each targeted user's
//! desktop, over the freedesktop notification interface on the user's session bus.
//!
//! This module holds what is not D-Bus: the notification built from a countdown (text
//! sanitised and markup-escaped), the line protocol between the daemon and its notification
//! agent (a child running as the user, `forcelogoutctl notify-agent`, which makes the D-Bus
//! calls), which users have a session bus, and the `Desktop` trait through which the
//! `Enforcer` hands notifications to whoever delivers them.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Instance;
use crate::policy::{self, local_time_label};
use crate::store::ScheduleRecord;
use crate::text::{sanitize_for_terminal, sanitize_line};

/// The action key of "Keep working" (a warning only). Not `default`: desktops show the
/// default action as a click on the body, the others as buttons, and this one should be seen.
pub const KEEP_WORKING_ACTION: &str = "forcelogout-keep-working";
pub const KEEP_WORKING_LABEL: &str = "Keep working";
/// Every D-Bus call the agent makes (connect, Hello, AddMatch, Notify) waits at most this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// An agent that has not answered a request for this long is killed: a connect, a Hello, an
/// AddMatch and a Notify, each within `CALL_TIMEOUT`, and a margin for a loaded machine.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// After its last countdown, an agent gets this long to deliver what it was sent and exit.
pub const AGENT_QUIT_GRACE: Duration = Duration::from_secs(5);
/// The longest line either side reads; longer ones end the agent.
pub const MAX_LINE: usize = 64 * 1024;
/// Where logind (or the test's private tmpfs) keeps users' runtime directories.
pub const RUNTIME_ROOT: &str = "/run/user";
pub const APP_NAME: &str = "forcelogout";
pub const APP_ICON: &str = "system-log-out";

/// One notification as the agent sends it (`org.freedesktop.Notifications.Notify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Plain text, one line.
    pub summary: String,
    /// Already markup-escaped: servers may interpret a subset of HTML in the body.
    pub body: String,
    /// (key, label) pairs.
    pub actions: Vec<(String, String)>,
    /// Urgency "critical" (2); otherwise "normal" (1).
    pub critical: bool,
    /// Milliseconds; 0 = until dismissed or replaced, -1 = the server's default.
    pub expire_ms: i32,
}

/// Daemon → agent, one JSON object per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Shows the notification `key` (a schedule Id), replacing the one shown before under it.
    Show {
        key: String,
        notification: Notification,
    },
    /// Closes the notification `key`, if shown.
    Close { key: String },
}

/// Agent → daemon, one JSON object per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Report {
    /// Connected to the bus.
    Ready,
    /// The server took the notification `key` under `id`.
    Shown { key: String, id: u32 },
    /// The user chose "Keep working" on the notification `key`.
    Ignored { key: String },
    /// The server closed the notification `key` (`reason` as the specification numbers it).
    Closed { key: String, reason: u32 },
    /// A request (or, without a key, the connection) failed.
    Failed { key: Option<String>, error: String },
}

impl Request {
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

impl Report {
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Whether this report answers a request (so the agent is not stuck).
    pub fn answers_request(&self) -> bool {
        matches!(
            self,
            Report::Ready | Report::Shown { .. } | Report::Failed { .. }
        )
    }
}

/// Whoever delivers notifications to desktops (the daemon's agents). Every method returns at
/// once: delivery is never waited for by enforcement.
pub trait Desktop {
    /// Shows (or updates in place) the notification of countdown `key` on `user`'s desktop.
    fn show(&mut self, user: &str, uid: u32, key: &str, notification: &Notification);
    /// The countdown `key` is over for `user`: what was shown last stays on the screen, and
    /// the user's agent ends once none of the user's countdowns runs.
    fn finish(&mut self, user: &str, key: &str);
    /// Closes the notifications of countdowns that no longer run (a deleted schedule): every
    /// (user, key) not in `running`.
    fn retain(&mut self, running: &HashSet<(String, String)>);
}

/// Escapes the five characters the notification body markup gives a meaning to.
pub fn markup_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Body text: escape sequences and control characters stripped (newlines kept), markup escaped.
fn body_text(lines: &[String]) -> String {
    let text = lines
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    markup_escape(&sanitize_for_terminal(&text).replace('\t', " "))
}

/// The countdown of `instance` at `now`: "Logout in 1 min", when, the message, and for a
/// warning the "Keep working" action.
pub fn countdown_notification(instance: &Instance, now: DateTime<Utc>) -> Notification {
    let s = &instance.record.schedule;
    let when = local_time_label(instance.due, &s.timezone, "%H:%M:%S");
    let wait = policy::describe_wait(now, instance.due);
    let mut lines = vec![if s.kick {
        format!("You will be logged out at {when}.")
    } else {
        format!("You will be logged out at {when} unless you choose to keep working.")
    }];
    lines.push(s.message.clone());
    if !s.kick {
        lines.push(format!(
            "To stay logged in, choose \u{201c}{KEEP_WORKING_LABEL}\u{201d} (or run: forcelogoutctl ignore)."
        ));
    }
    lines.push("Save your work now.".into());
    Notification {
        summary: sanitize_line(&format!("Logout in {wait}")),
        body: body_text(&lines),
        actions: if s.kick {
            Vec::new()
        } else {
            vec![(KEEP_WORKING_ACTION.into(), KEEP_WORKING_LABEL.into())]
        },
        critical: true,
        expire_ms: 0,
    }
}

/// The end of a countdown, for a user whose sessions are being ended.
pub fn logout_notification(record: &ScheduleRecord) -> Notification {
    Notification {
        summary: "You are being logged out now".into(),
        body: body_text(std::slice::from_ref(&record.schedule.message)),
        actions: Vec::new(),
        critical: true,
        expire_ms: 0,
    }
}

/// The answer to "Keep working" (or `forcelogoutctl ignore`): the sessions stay.
pub fn kept_notification() -> Notification {
    Notification {
        summary: "You chose to keep working".into(),
        body: body_text(&["Your sessions stay logged in.".into()]),
        actions: Vec::new(),
        critical: false,
        expire_ms: -1,
    }
}

/// `ROOT/UID/bus` when it is a socket owned by `uid` (not followed if a link: a user's
/// runtime directory is theirs, and the daemon must not be led to another user's bus).
pub fn session_bus_in(root: &Path, uid: u32) -> Result<PathBuf, String> {
    let path = root.join(uid.to_string()).join("bus");
    let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{}: not a socket", path.display()));
    }
    if meta.uid() != uid {
        return Err(format!(
            "{}: owned by uid {}, not by the user ({uid})",
            path.display(),
            meta.uid()
        ));
    }
    Ok(path)
}

/// The user's session bus (`/run/user/UID/bus`), checked as `session_bus_in` does.
pub fn session_bus(uid: u32) -> Result<PathBuf, String> {
    session_bus_in(Path::new(RUNTIME_ROOT), uid)
}

/// A D-Bus address for a socket path (`unix:path=…`, with the address escaping: every byte
/// outside `[-0-9A-Za-z_/.\*]` as `%XX`).
pub fn bus_address(path: &Path) -> String {
    let mut out = String::from("unix:path=");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'-' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'/' | b'.' | b'*' => {
                out.push(char::from(*b))
            }
            b => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use crate::store::ScheduleEvent;

    fn instance(kick: bool, message: &str) -> Instance {
        let due: DateTime<Utc> = "2026-11-23T17:00:00Z".parse().unwrap();
        let schedule = Schedule {
            group: "students".into(),
            recurrence: crate::schedule::Recurrence::Daily,
            time: chrono::NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
            timezone: crate::zone::Zone::utc(),
            immediate: false,
            kick,
            message: message.into(),
            lockout_minutes: 0,
        };
        Instance {
            record: ScheduleRecord {
                date: "2026-11-23".into(),
                id: "5d0c6f2e".into(),
                update_time: "2026-11-23T16:55:00.000000Z".into(),
                event: ScheduleEvent::Created,
                actor: "root".into(),
                schedule,
                due_at: None,
            },
            due,
            warn_from: due - chrono::Duration::minutes(5),
        }
    }

    #[test]
    fn a_warning_carries_keep_working_and_a_kick_does_not() {
        let now: DateTime<Utc> = "2026-11-23T16:59:00Z".parse().unwrap();
        let warning = countdown_notification(&instance(false, "Lab closes"), now);
        assert_eq!(warning.summary, "Logout in 1 min");
        assert_eq!(
            warning.actions,
            [(KEEP_WORKING_ACTION.to_string(), "Keep working".to_string())]
        );
        assert!(warning.critical);
        assert!(warning
            .body
            .contains("at 17:00:00 UTC unless you choose to keep working"));
        assert!(warning.body.contains("\nLab closes\n"));
        let kick = countdown_notification(&instance(true, ""), now);
        assert!(kick.actions.is_empty());
        assert!(!kick.body.contains("Keep working"));
        assert_eq!(
            kick.body,
            "You will be logged out at 17:00:00 UTC.\nSave your work now."
        );
    }

    #[test]
    fn message_text_is_sanitised_and_markup_escaped() {
        let now: DateTime<Utc> = "2026-11-23T16:59:50Z".parse().unwrap();
        let n = countdown_notification(
            &instance(true, "<b>bold</b> & \u{1b}[31mred\u{1b}[0m \"q\"\u{7}"),
            now,
        );
        assert!(
            n.body
                .contains("&lt;b&gt;bold&lt;/b&gt; &amp; red &quot;q&quot;"),
            "{}",
            n.body
        );
        let done = logout_notification(&instance(true, "a <i>b</i>").record);
        assert_eq!(done.body, "a &lt;i&gt;b&lt;/i&gt;");
    }

    #[test]
    fn protocol_lines_round_trip() {
        let request = Request::Show {
            key: "k".into(),
            notification: kept_notification(),
        };
        let line = request.to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        let report: Report = serde_json::from_str(r#"{"event":"ignored","key":"k"}"#).unwrap();
        assert_eq!(report, Report::Ignored { key: "k".into() });
        assert!(!report.answers_request());
        assert!(Report::Ready.answers_request());
    }

    #[test]
    fn the_bus_must_be_the_users_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        std::fs::create_dir(dir.path().join(me.to_string())).unwrap();
        assert!(session_bus_in(dir.path(), me).is_err(), "missing");
        let path = dir.path().join(me.to_string()).join("bus");
        std::fs::write(&path, "").unwrap();
        assert!(session_bus_in(dir.path(), me)
            .unwrap_err()
            .contains("not a socket"));
        std::fs::remove_file(&path).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(session_bus_in(dir.path(), me).unwrap(), path);
        // Somebody else's uid: the socket is not theirs.
        std::fs::create_dir(dir.path().join((me + 1).to_string())).unwrap();
        std::os::unix::fs::symlink(&path, dir.path().join((me + 1).to_string()).join("bus"))
            .unwrap();
        assert!(session_bus_in(dir.path(), me + 1).is_err());
    }

    #[test]
    fn bus_addresses_escape_odd_bytes() {
        assert_eq!(
            bus_address(Path::new("/run/user/1000/bus")),
            "unix:path=/run/user/1000/bus"
        );
        assert_eq!(bus_address(Path::new("/a b;c")), "unix:path=/a%20b%3bc");
    }
}
