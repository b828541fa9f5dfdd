//! Subscribers of the event stream (SPEC §8): executables in the hooks directory, each given
//! every new event as JSON on its standard input, and syslog, given one structured line per
//! event. Each keeps its own cursor (the last ReplayId given) in the store: delivery is in
//! ReplayId order and at least once; a failure is retried with back-off and holds back only
//! that subscriber.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::{EventFilter, EventRow, Store};

const BATCH: usize = 200;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An executable: one run per event, the event as a JSON line on stdin.
    Hook { path: PathBuf, time_limit: Duration },
    /// A syslog socket (`/dev/log`): one datagram per event.
    Syslog { socket: PathBuf },
}

impl Target {
    /// The cursor's name in the store.
    pub fn name(&self) -> String {
        match self {
            Target::Hook { path, .. } => format!("hook:{}", path.display()),
            Target::Syslog { .. } => "syslog".to_string(),
        }
    }
}

pub struct Subscriber {
    target: Target,
    store: Store,
    backoff: Duration,
}

/// What one round of delivery achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// Everything pending was delivered.
    CaughtUp,
    /// A delivery failed: try again after this long.
    RetryAfter(Duration),
    /// The hook is gone from the directory: stop.
    Gone,
}

impl Subscriber {
    pub fn new(target: Target, store: Store) -> Subscriber {
        Subscriber {
            target,
            store,
            backoff: FIRST_BACKOFF,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Delivers the pending events, in order, until caught up or one fails.
    pub fn deliver(&mut self, log: &mut dyn FnMut(&str)) -> Result<Round, Error> {
        if let Target::Hook { path, .. } = &self.target {
            if !path.exists() {
                return Ok(Round::Gone);
            }
        }
        let name = self.target.name();
        let mut cursor = self.store.subscriber_cursor(&name)?;
        loop {
            let filter = EventFilter {
                after_replay_id: Some(cursor),
                ..EventFilter::default()
            };
            let events = self.store.events(&filter, BATCH)?;
            for event in &events {
                if let Err(reason) = send(&self.target, event) {
                    let retry = self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.store.subscriber_failed(&name, &reason)?;
                    log(&format!(
                        "{name}: event {} not delivered ({reason}); retrying in {} s",
                        event.replay_id,
                        retry.as_secs()
                    ));
                    return Ok(Round::RetryAfter(retry));
                }
                self.store.advance_subscriber(&name, event.replay_id)?;
                cursor = event.replay_id;
                self.backoff = FIRST_BACKOFF;
            }
            if events.len() < BATCH {
                return Ok(Round::CaughtUp);
            }
        }
    }
}

fn send(target: &Target, event: &EventRow) -> Result<(), String> {
    match target {
        Target::Hook { path, time_limit } => run_hook(path, event, *time_limit),
        Target::Syslog { socket } => {
            let line = syslog_line(event, std::process::id());
            let sender = UnixDatagram::unbound().map_err(|e| e.to_string())?;
            sender
                .send_to(line.as_bytes(), socket)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// Runs `path` with the event as a JSON line on stdin; success is exit status 0 within
/// `limit`. A hook past its limit is killed.
fn run_hook(path: &Path, event: &EventRow, limit: Duration) -> Result<(), String> {
    let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
    let mut child = Command::new(path)
        .env("FORCELOGOUT_REPLAY_ID", event.replay_id.to_string())
        .env("FORCELOGOUT_EVENT", &event.event)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is still run; a closed pipe is not an error.
        let _ = stdin
            .write_all(json.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {} s", limit.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One syslog line (authpriv.info, as pam modules log) with the event as key=value pairs, so
/// rsyslog, journald or a shipper can parse it: `forcelogout[PID]: event=removed user=alice …`.
pub fn syslog_line(event: &EventRow, pid: u32) -> String {
    const AUTHPRIV_INFO: u32 = 10 * 8 + 6;
    let mut fields = vec![
        ("event", Some(event.event.clone())),
        ("replay_id", Some(event.replay_id.to_string())),
        ("user", Some(event.group_name.clone())),
        ("uid", event.user_id.map(|u| u.to_string())),
        ("reason", event.reason.clone()),
        ("kick", Some(u8::from(event.kick).to_string())),
        ("immediate", Some(u8::from(event.immediate).to_string())),
        ("schedule_id", event.schedule_id.clone()),
        ("session_key", event.session_key.clone()),
        ("login_key", event.login_key.clone()),
        ("service", event.service.clone()),
        ("tty", event.tty.clone()),
        ("rhost", event.remote_host.clone()),
        ("host", Some(event.host.clone())),
        ("event_id", Some(event.event_identifier.clone())),
        ("related_event_id", event.related_event_identifier.clone()),
        ("timestamp", Some(event.timestamp.clone())),
    ];
    fields.retain(|(_, v)| v.is_some());
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{k}={}", quote(&v.unwrap_or_default())))
        .collect();
    format!("<{AUTHPRIV_INFO}>forcelogout[{pid}]: {}", body.join(" "))
}

/// A value as is when it is plain, else in double quotes with `"` and `\` escaped; control
/// characters never pass.
fn quote(value: &str) -> String {
    let clean = crate::text::sanitize_line(value);
    let plain = !clean.is_empty()
        && clean.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@')
        });
    if plain {
        clean
    } else {
        format!("\"{}\"", clean.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The hooks in `dir`, as run-parts(8) would pick them: regular executable files whose names
/// are letters, digits, `_` and `-`; and, since the daemon runs them as root, only files owned
/// by root and not writable by group or others. Sorted by name.
pub fn discover_hooks(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut hooks = Vec::new();
    let mut refused = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (hooks, refused);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let proper_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !proper_name || !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if meta.uid() != 0 || meta.permissions().mode() & 0o022 != 0 {
            refused.push(format!(
                "{}: not owned by root, or writable by group or others: not run",
                path.display()
            ));
            continue;
        }
        hooks.push(path);
    }
    hooks.sort();
    (hooks, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_are_structured_and_safe() {
        let event = EventRow {
            date: "2026-11-23".into(),
            timestamp: "2026-11-23T17:00:00.000000Z".into(),
            group_name: "alice".into(),
            event: "removed".into(),
            immediate: false,
            kick: true,
            replay_id: 42,
            event_identifier: "e-1".into(),
            related_event_identifier: None,
            session_key: None,
            login_key: None,
            user_id: Some(1000),
            schedule_id: None,
            reason: Some("kick".into()),
            service: Some("sshd".into()),
            tty: Some("pts/0".into()),
            remote_host: Some("a host\u{1b}[2J\"x".into()),
            host: "lab1".into(),
        };
        let line = syslog_line(&event, 7);
        assert!(line.starts_with("<86>forcelogout[7]: event=removed replay_id=42 user=alice uid=1000 reason=kick kick=1 "), "{line}");
        assert!(line.contains(r#"rhost="a host\"x""#), "{line}");
        assert!(!line.contains('\u{1b}'));
    }
}
