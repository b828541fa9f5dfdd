//! Subscribers of the event stream (SPEC §8): executables in the hooks directory, each given
//! every new event as JSON on its standard input, and syslog, given one structured line per
//! event. Each keeps its own cursor (the last ReplayId given) in the store: delivery is in
//! ReplayId order and at least once; a failure is retried with back-off and holds back only
//! that subscriber. Which hooks exist, and so which cursors, is the roster's (see `roster`);
//! each run of a hook is checked through the descriptor it is executed from (`hook_file`).

mod hook_file;
mod roster;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::{EventFilter, EventRow, Store};

use hook_file::{HookFile, Unfit};
pub use roster::{hook_name, Roster};

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
            Target::Hook { path, .. } => hook_name(path),
            Target::Syslog { .. } => "syslog".to_string(),
        }
    }
}

pub struct Subscriber {
    target: Target,
    store: Store,
    backoff: Duration,
    /// Why the hook was last refused, while it is: logged once per change, not per event.
    refusal: Option<String>,
}

/// What one round of delivery achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// Everything pending was delivered.
    CaughtUp,
    /// A delivery failed: try again after this long.
    RetryAfter(Duration),
    /// The hook is not in the directory (it has no cursor, or its file is gone): nothing to
    /// do until it is.
    Gone,
    /// The hook fails the checks (logged): not run until it passes them.
    Refused,
}

/// Why an event was not delivered.
enum Failure {
    /// The hook was not run at all.
    Unfit(Unfit),
    /// It was run, or sent, and that failed.
    Failed(String),
}

impl Subscriber {
    pub fn new(target: Target, store: Store) -> Subscriber {
        Subscriber {
            target,
            store,
            backoff: FIRST_BACKOFF,
            refusal: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Delivers the pending events, in order, until caught up or one fails.
    pub fn deliver(&mut self, log: &mut dyn FnMut(&str)) -> Result<Round, Error> {
        loop {
            let Some(cursor) = self.cursor()? else {
                return Ok(Round::Gone);
            };
            // Checked here too, not only before each run: a refusal is logged when it happens,
            // and a fixed hook says so, even with no event pending.
            if let Target::Hook { path, .. } = &self.target {
                match HookFile::open(path) {
                    Err(unfit) => return self.unfit(unfit, log),
                    Ok(_) => self.passes_checks(log),
                }
            }
            if let Some(round) = self.deliver_after(cursor, log)? {
                return Ok(round);
            }
            // The roster moved the cursor meanwhile (the hook was removed, or put back).
        }
    }

    /// A hook's cursor exists only while the roster sees the hook; syslog's always does.
    fn cursor(&mut self) -> Result<Option<i64>, Error> {
        let name = self.target.name();
        match self.target {
            Target::Hook { .. } => self.store.existing_subscriber_cursor(&name),
            Target::Syslog { .. } => self.store.subscriber_cursor(&name).map(Some),
        }
    }

    /// Delivers the events after `cursor`; None when the cursor was moved by someone else.
    fn deliver_after(
        &mut self,
        mut cursor: i64,
        log: &mut dyn FnMut(&str),
    ) -> Result<Option<Round>, Error> {
        let name = self.target.name();
        loop {
            let filter = EventFilter {
                after_replay_id: Some(cursor),
                ..EventFilter::default()
            };
            let events = self.store.events(&filter, BATCH)?;
            for event in &events {
                match send(&self.target, event) {
                    Ok(()) => {}
                    Err(Failure::Unfit(unfit)) => return self.unfit(unfit, log).map(Some),
                    Err(Failure::Failed(reason)) => {
                        return self.failed(event.replay_id, &reason, log).map(Some)
                    }
                }
                if !self
                    .store
                    .advance_subscriber(&name, cursor, event.replay_id)?
                {
                    return Ok(None);
                }
                cursor = event.replay_id;
                self.backoff = FIRST_BACKOFF;
            }
            if events.len() < BATCH {
                return Ok(Some(Round::CaughtUp));
            }
        }
    }

    fn failed(
        &mut self,
        replay_id: i64,
        reason: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Round, Error> {
        let name = self.target.name();
        let retry = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.store.subscriber_failed(&name, reason)?;
        log(&format!(
            "{name}: event {replay_id} not delivered ({reason}); retrying in {} s",
            retry.as_secs()
        ));
        Ok(Round::RetryAfter(retry))
    }

    /// A hook not run: gone (the roster forgets it), or refused, logged and recorded once
    /// per reason; its cursor stays, so it is given what it missed once fixed.
    fn unfit(&mut self, unfit: Unfit, log: &mut dyn FnMut(&str)) -> Result<Round, Error> {
        let Unfit::Refused(reason) = unfit else {
            return Ok(Round::Gone);
        };
        if self.refusal.as_ref() != Some(&reason) {
            log(&format!(
                "{reason} (checked again before each run; its events wait)"
            ));
            self.store.subscriber_failed(&self.target.name(), &reason)?;
            self.refusal = Some(reason);
        }
        Ok(Round::Refused)
    }

    fn passes_checks(&mut self, log: &mut dyn FnMut(&str)) {
        if self.refusal.take().is_some() {
            log(&format!("{}: passes the checks again", self.target.name()));
        }
    }
}

fn send(target: &Target, event: &EventRow) -> Result<(), Failure> {
    match target {
        Target::Hook { path, time_limit } => run_hook(path, event, *time_limit),
        Target::Syslog { socket } => {
            let line = syslog_line(event, std::process::id());
            UnixDatagram::unbound()
                .and_then(|sender| sender.send_to(line.as_bytes(), socket))
                .map(|_| ())
                .map_err(|e| Failure::Failed(e.to_string()))
        }
    }
}

/// Runs the hook at `path`, checked through the descriptor it is executed from, with the
/// event as a JSON line on stdin; success is exit status 0 within `limit`. A hook past its
/// limit is killed.
fn run_hook(path: &Path, event: &EventRow, limit: Duration) -> Result<(), Failure> {
    let hook = HookFile::open(path).map_err(Failure::Unfit)?;
    let failed = |e: String| Failure::Failed(e);
    let json = serde_json::to_string(event).map_err(|e| failed(e.to_string()))?;
    let mut child = Command::new(hook.exec_path())
        .arg0(path)
        .env("FORCELOGOUT_HOOK", path)
        .env("FORCELOGOUT_REPLAY_ID", event.replay_id.to_string())
        .env("FORCELOGOUT_EVENT", &event.event)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is still run; a closed pipe is not an error.
        let _ = stdin
            .write_all(json.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let deadline = Instant::now() + limit;
    // `hook` stays open until the child has ended: its interpreter opens it by that path.
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Ok(()),
            Ok(Some(status)) => break Err(failed(format!("exited with {status}"))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(failed(format!("killed after {} s", limit.as_secs_f64())));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(failed(e.to_string())),
        }
    };
    drop(hook);
    outcome
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
