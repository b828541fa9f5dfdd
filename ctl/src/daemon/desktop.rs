//! The daemon's side of desktop notifications (SPEC §10): one agent process per user while
//! any of the user's countdowns runs (`forcelogoutctl notify-agent`, started from the
//! daemon's own executable with the user's uid and primary gid, no supplementary groups, an
//! empty environment and the user's bus address), spoken to over pipes.
//!
//! Nothing here waits on an agent: requests are written without blocking (an agent whose
//! pipe is full is killed), its reports are read by a thread per agent and handed to the
//! daemon's loop through a channel and a wake-up socket in the loop's poll set, and an agent
//! that leaves a request unanswered for `AGENT_TIMEOUT` is killed. Agents run as their users,
//! so the daemon believes from them only what the user could do anyway: ignore their own
//! warning.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use forcelogout_core::enforce::desktop::{
    bus_address, session_bus, Desktop, Notification, Report, Request, AGENT_QUIT_GRACE,
    AGENT_TIMEOUT, MAX_LINE,
};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::log;

/// How soon a killed agent is looked at again, to be reaped.
const REAP_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A report from the agent of (user, uid).
pub struct Received {
    pub user: String,
    pub uid: u32,
    pub report: Report,
}

struct Agent {
    uid: u32,
    child: Child,
    stdin: ChildStdin,
    /// The countdowns (schedule Ids) the agent shows.
    keys: HashSet<String>,
    /// Requests sent and not yet answered (the connection counts as one).
    unanswered: usize,
    /// Since when the oldest unanswered request waits.
    waiting_since: Option<Instant>,
}

/// An agent told to finish, or killed, until it is reaped.
struct Ending {
    user: String,
    child: Child,
    /// When it is killed if still running (again, if that did not end it).
    deadline: Instant,
    killed: bool,
}

pub struct Agents {
    agents: HashMap<String, Agent>,
    /// Agents told to finish (stdin closed) or killed, until they are reaped.
    ending: Vec<Ending>,
    reports_tx: mpsc::SyncSender<Received>,
    reports_rx: mpsc::Receiver<Received>,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// (user, key) whose delivery failure was logged already: once per countdown is enough.
    failures_logged: HashSet<(String, String)>,
    /// (user, key) that cannot be delivered (no bus, no notification server): not tried
    /// again during that countdown, so a host full of users without a desktop does not keep
    /// an agent per user.
    undeliverable: HashSet<(String, String)>,
}

/// Errors that mean nobody shows notifications on this bus (rather than a slow server).
fn no_server(error: &str) -> bool {
    error.contains("ServiceUnknown") || error.contains("NameHasNoOwner")
}

impl Agents {
    pub fn new() -> std::io::Result<Agents> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (reports_tx, reports_rx) = mpsc::sync_channel(256);
        Ok(Agents {
            agents: HashMap::new(),
            ending: Vec::new(),
            reports_tx,
            reports_rx,
            wake_tx,
            wake_rx,
            failures_logged: HashSet::new(),
            undeliverable: HashSet::new(),
        })
    }

    /// Readable when agents have reported: for the daemon's poll set.
    pub fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake_rx.as_fd()
    }

    /// The reports received since the last call (never waits).
    pub fn take_reports(&mut self) -> Vec<Received> {
        let mut sink = [0u8; 256];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        while let Ok(received) = self.reports_rx.try_recv() {
            if let Some(agent) = self.agents.get_mut(&received.user) {
                if received.report.answers_request() && agent.unanswered > 0 {
                    agent.unanswered -= 1;
                    agent.waiting_since = (agent.unanswered > 0).then(Instant::now);
                }
            }
            if let Report::Failed { key, error } = &received.report {
                if key.is_none() || no_server(error) {
                    self.give_up(&received.user);
                }
                let first = self
                    .failures_logged
                    .insert((received.user.clone(), key.clone().unwrap_or_default()));
                if first {
                    log(&format!(
                        "desktop notification for {}: {error}",
                        received.user
                    ));
                }
            }
            out.push(received);
        }
        out
    }

    /// Kills agents that stopped answering, reaps those that ended, and returns when to
    /// look again at the latest (never waits).
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        let mut gone = Vec::new();
        for (user, agent) in self.agents.iter_mut() {
            if let Ok(Some(_)) = agent.child.try_wait() {
                gone.push(user.clone());
            } else if let Some(since) = agent.waiting_since {
                if now >= since + AGENT_TIMEOUT {
                    log(&format!(
                        "desktop notification for {user}: no answer for {} s; the agent is killed",
                        AGENT_TIMEOUT.as_secs()
                    ));
                    gone.push(user.clone());
                } else {
                    soonest(since + AGENT_TIMEOUT);
                }
            }
        }
        for user in gone {
            if let Some(agent) = self.agents.remove(&user) {
                self.end(&user, agent.child, now, true);
            }
        }
        self.ending.retain_mut(|ending| {
            if let Ok(Some(_)) | Err(_) = ending.child.try_wait() {
                return false;
            }
            if now >= ending.deadline {
                if !ending.killed {
                    log(&format!(
                        "desktop notification for {}: the agent did not finish within {} s; killed",
                        ending.user,
                        AGENT_QUIT_GRACE.as_secs()
                    ));
                }
                let _ = ending.child.kill();
                ending.killed = true;
                // Reaped at the next look; a process that SIGKILL does not end at once is in
                // the kernel (a hung file system), and is looked at again later.
                ending.deadline = now + REAP_AGAIN;
            }
            soonest(ending.deadline);
            true
        });
        next
    }

    /// Stops the agent of `user`: its countdowns are not tried again on this desktop.
    fn give_up(&mut self, user: &str) {
        if let Some(agent) = self.agents.remove(user) {
            for key in &agent.keys {
                self.undeliverable.insert((user.to_string(), key.clone()));
            }
            drop(agent.stdin);
            self.end(user, agent.child, Instant::now(), false);
        }
    }

    fn end(&mut self, user: &str, mut child: Child, now: Instant, kill: bool) {
        if kill {
            let _ = child.kill();
        }
        self.ending.push(Ending {
            user: user.to_string(),
            child,
            deadline: now + if kill { REAP_AGAIN } else { AGENT_QUIT_GRACE },
            killed: kill,
        });
    }

    /// The running agent of `user`, started if need be; `None` (logged once) when the user
    /// has no session bus or the agent cannot start.
    fn agent(&mut self, user: &str, uid: u32, key: &str) -> Option<&mut Agent> {
        if !self.agents.contains_key(user) {
            match self.spawn(user, uid) {
                Ok(agent) => {
                    self.agents.insert(user.to_string(), agent);
                }
                Err(reason) => {
                    self.undeliverable
                        .insert((user.to_string(), key.to_string()));
                    if self
                        .failures_logged
                        .insert((user.to_string(), key.to_string()))
                    {
                        log(&format!(
                            "desktop notification for {user}: not sent: {reason}"
                        ));
                    }
                    return None;
                }
            }
        }
        self.agents.get_mut(user)
    }

    fn spawn(&self, user: &str, uid: u32) -> Result<Agent, String> {
        let bus = session_bus(uid)?;
        let account = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .ok_or_else(|| format!("uid {uid} has no name"))?;
        let mut child = Command::new(super::ctl_program())
            .arg("notify-agent")
            .arg("--bus")
            .arg(bus_address(&bus))
            .env_clear()
            .current_dir("/")
            .uid(uid)
            .gid(account.gid.as_raw())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the agent: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("starting the agent: no pipes".into());
        };
        if let Err(e) = fcntl(stdin.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("configuring the agent's pipe: {e}"));
        }
        let tx = self.reports_tx.clone();
        let wake = self
            .wake_tx
            .try_clone()
            .map_err(|e| format!("starting the agent: {e}"))?;
        let (name, id) = (user.to_string(), uid);
        std::thread::Builder::new()
            .name("desktop-agent".into())
            .spawn(move || read_reports(stdout, &name, id, &tx, &wake))
            .map_err(|e| format!("starting the agent's reader: {e}"))?;
        Ok(Agent {
            uid,
            child,
            stdin,
            keys: HashSet::new(),
            // Until it reports Ready.
            unanswered: 1,
            waiting_since: Some(Instant::now()),
        })
    }

    fn send(&mut self, user: &str, request: &Request) {
        let Some(agent) = self.agents.get_mut(user) else {
            return;
        };
        // Short lines, written whole or not at all; a full pipe means a stuck agent.
        match agent.stdin.write_all(request.to_line().as_bytes()) {
            Ok(()) => {
                if matches!(request, Request::Show { .. }) {
                    agent.unanswered += 1;
                    agent.waiting_since.get_or_insert_with(Instant::now);
                }
            }
            Err(e) => {
                log(&format!(
                    "desktop notification for {user}: the agent does not take requests ({e}); killed"
                ));
                if let Some(agent) = self.agents.remove(user) {
                    self.end(user, agent.child, Instant::now(), true);
                }
            }
        }
    }

    fn finish_user_if_idle(&mut self, user: &str) {
        if self.agents.get(user).is_some_and(|a| a.keys.is_empty()) {
            if let Some(agent) = self.agents.remove(user) {
                // Closing its standard input tells it to exit once it has sent what it has.
                drop(agent.stdin);
                self.end(user, agent.child, Instant::now(), false);
            }
        }
    }
}

impl Desktop for Agents {
    fn show(&mut self, user: &str, uid: u32, key: &str, notification: &Notification) {
        if self
            .undeliverable
            .contains(&(user.to_string(), key.to_string()))
        {
            return;
        }
        let Some(agent) = self.agent(user, uid, key) else {
            return;
        };
        if agent.uid != uid {
            return;
        }
        agent.keys.insert(key.to_string());
        let request = Request::Show {
            key: key.to_string(),
            notification: notification.clone(),
        };
        self.send(user, &request);
    }

    fn finish(&mut self, user: &str, key: &str) {
        if let Some(agent) = self.agents.get_mut(user) {
            agent.keys.remove(key);
        }
        let other = |(u, k): &(String, String)| !(u == user && k == key);
        self.failures_logged.retain(other);
        self.undeliverable.retain(other);
        self.finish_user_if_idle(user);
    }

    fn retain(&mut self, running: &HashSet<(String, String)>) {
        let mut stale = Vec::new();
        for (user, agent) in &self.agents {
            for key in &agent.keys {
                if !running.contains(&(user.clone(), key.clone())) {
                    stale.push((user.clone(), key.clone()));
                }
            }
        }
        for (user, key) in stale {
            self.send(&user, &Request::Close { key: key.clone() });
            if let Some(agent) = self.agents.get_mut(&user) {
                agent.keys.remove(&key);
            }
            self.finish_user_if_idle(&user);
        }
        self.failures_logged.retain(|pair| running.contains(pair));
        self.undeliverable.retain(|pair| running.contains(pair));
    }
}

/// The agent's reports, one JSON line each, to the daemon's loop; a line too long or
/// unreadable ends the reading (the agent is then reaped when it exits or is killed).
fn read_reports(
    stdout: std::process::ChildStdout,
    user: &str,
    uid: u32,
    tx: &mpsc::SyncSender<Received>,
    mut wake: &UnixStream,
) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_LINE => return,
            Ok(_) => {}
        }
        let Ok(report) = serde_json::from_str::<Report>(&line) else {
            continue;
        };
        let received = Received {
            user: user.to_string(),
            uid,
            report,
        };
        if tx.send(received).is_err() {
            return;
        }
        let _ = wake.write(&[1]);
    }
}

/// The agents, shared by the daemon's loop (reports, ticks) and the `Enforcer` (shows).
#[derive(Clone)]
pub struct SharedAgents(pub Rc<RefCell<Agents>>);

impl Desktop for SharedAgents {
    fn show(&mut self, user: &str, uid: u32, key: &str, notification: &Notification) {
        self.0.borrow_mut().show(user, uid, key, notification);
    }

    fn finish(&mut self, user: &str, key: &str) {
        self.0.borrow_mut().finish(user, key);
    }

    fn retain(&mut self, running: &HashSet<(String, String)>) {
        self.0.borrow_mut().retain(running);
    }
}
