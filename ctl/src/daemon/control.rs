//! The control socket's server. The socket is 0666: every local user reaches it, the one about
//! to be logged out too, so it is served off the enforcement thread and no client can delay a
//! countdown or a kick. An acceptor thread takes each connection at once; over the caps (per
//! uid, and in all) it answers one line and closes, so the listen backlog drains. Otherwise a
//! thread of the connection's own reads one request line against one deadline, runs it as its
//! peer (who may ask what: `authorise`) with its own store connection, and writes the reply
//! against another deadline. `ignore` needs the enforcer, which lives on the main thread: it
//! goes there through a channel and a wake descriptor in the main loop's poll.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use forcelogout_core::config::Config;
use forcelogout_core::targeting::Identity;
use forcelogout_core::Error;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::authorise::{self, Who};
use super::log;
use super::socket::{Reply, Request, MAX_ADMIN_REQUEST, MAX_REQUEST};
use crate::cli::Cli;
use crate::commands::{Context, FileSource};

/// Connections served at once for one uid.
const PER_UID: usize = 8;
/// Connections served at once for all uids but root's: root has only its own `PER_UID`, so no
/// crowd of users can shut root out.
const IN_ALL: usize = 64;
/// From the start of reading to the end of the request line, however the client sends it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// For the whole reply, however slowly the client reads.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// Longest a request waits for the main loop's answer to `ignore` (a kick under way there
/// waits out its processes' grace periods first).
const IGNORE_WAIT: Duration = Duration::from_secs(20);
/// Between two log lines about clients that misbehave (a flood must not flood the journal).
const QUIET_FOR: Duration = Duration::from_secs(60);

/// The main loop's side: the `ignore` requests waiting for the enforcer.
pub struct Control {
    asks: Receiver<IgnoreAsk>,
    wake: UnixStream,
}

/// An `ignore` from a caller, for the main loop to run with the enforcer and answer.
pub struct IgnoreAsk {
    pub user: String,
    pub uid: u32,
    answer: SyncSender<Reply>,
}

impl IgnoreAsk {
    /// Sends the reply to the waiting request (gone if it waited too long).
    pub fn answer(self, reply: Reply) {
        let _ = self.answer.try_send(reply);
    }
}

/// What every connection's thread shares.
struct Shared {
    db: PathBuf,
    config: Config,
    slots: Arc<Slots>,
    asks: SyncSender<IgnoreAsk>,
    wake: UnixStream,
    quiet: Quiet,
}

/// Serves `listener` from threads of its own, from now on.
pub fn start(listener: UnixListener, ctx: &Context) -> Result<Control, Error> {
    let failed = |what: &str, e| Error::io(what.to_string(), e);
    listener
        .set_nonblocking(false)
        .map_err(|e| failed("configuring the socket", e))?;
    let (wake_sender, wake) = UnixStream::pair().map_err(|e| failed("a wake-up pipe", e))?;
    for end in [&wake_sender, &wake] {
        end.set_nonblocking(true)
            .map_err(|e| failed("a wake-up pipe", e))?;
    }
    // Each connection's thread has at most one ask waiting: the channel never refuses one.
    let (asks_sender, asks) = std::sync::mpsc::sync_channel(IN_ALL + PER_UID);
    let shared = Arc::new(Shared {
        db: ctx.db.clone(),
        config: ctx.config.clone(),
        slots: Arc::new(Slots::new(PER_UID, IN_ALL)),
        asks: asks_sender,
        wake: wake_sender,
        quiet: Quiet::default(),
    });
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_forever(&listener, &shared))
        .map_err(|e| failed("starting the control socket's server", e))?;
    Ok(Control { asks, wake })
}

impl Control {
    /// Readable when an `ignore` waits.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The `ignore` requests waiting now.
    pub fn take_asks(&self) -> Vec<IgnoreAsk> {
        let mut byte = [0u8; 64];
        while matches!((&self.wake).read(&mut byte), Ok(n) if n > 0) {}
        self.asks.try_iter().collect()
    }
}

fn accept_forever(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => admit(stream, shared),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, say: the connections being served will give some back.
                shared.quiet.log(&format!("accepting a connection: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Gives the connection a thread of its own, or refuses it at once when its uid, or everybody,
/// has as many connections as the caps allow.
fn admit(stream: UnixStream, shared: &Arc<Shared>) {
    let Ok(peer) = getsockopt(&stream, PeerCredentials) else {
        return;
    };
    let uid = peer.uid();
    let slot = match shared.slots.take(uid) {
        Ok(slot) => slot,
        Err(full) => {
            let why = match full {
                Full::Uid => format!("{PER_UID} connections of uid {uid} are being served"),
                Full::All => format!("{IN_ALL} connections are being served"),
            };
            shared.quiet.log(&format!("refused a connection: {why}"));
            // A fresh connection's buffer takes a line: this never waits.
            let _ = stream.set_nonblocking(true);
            let _ = send(
                &stream,
                &refuse(1, &format!("the daemon is busy ({why}): try again")),
            );
            return;
        }
    };
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("control-request".into())
        .spawn(move || {
            let _slot = slot;
            serve(&stream, uid, &worker);
        });
    if let Err(e) = spawned {
        shared
            .quiet
            .log(&format!("starting a request's thread: {e}"));
    }
}

fn serve(stream: &UnixStream, uid: u32, shared: &Shared) {
    if let Some(reply) = answer(stream, uid, shared) {
        if let Err(e) = send(stream, &reply) {
            shared
                .quiet
                .log(&format!("uid {uid}: sending the reply: {e}"));
        }
    }
}

/// The reply to the connection's request; none to a client that sent nothing (it checked that
/// the daemon is there).
fn answer(stream: &UnixStream, uid: u32, shared: &Shared) -> Option<Reply> {
    let caller = match Caller::lookup(uid, &shared.config.admin_group) {
        Ok(caller) => caller,
        Err(refusal) => return Some(refusal),
    };
    // Only an administrator may send a file (`apply`): everybody else's line stays short.
    let cap = if caller.admin {
        MAX_ADMIN_REQUEST
    } else {
        MAX_REQUEST
    };
    let line = match read_line(stream, Instant::now() + REQUEST_DEADLINE, cap) {
        Ok(line) if line.is_empty() => return None,
        Ok(line) => line,
        Err(failure) => {
            let why = match failure {
                ReadFailure::Late => format!("not received within {REQUEST_DEADLINE:?}"),
                ReadFailure::TooLong => format!("longer than {} KiB", cap / 1024),
                ReadFailure::Io(e) => {
                    // The connection is broken: nobody to answer.
                    shared
                        .quiet
                        .log(&format!("uid {uid}: reading a request: {e}"));
                    return None;
                }
            };
            shared.quiet.log(&format!("uid {uid}: request: {why}"));
            return Some(refuse(2, &format!("request: {why}")));
        }
    };
    let Ok(request) = serde_json::from_slice::<Request>(&line) else {
        return Some(refuse(2, "request: not a forcelogoutctl request"));
    };
    Some(handle(request, &caller, shared))
}

/// Who asks, as NSS knows them. When NSS cannot say (no name, no groups), the request is
/// refused: never shown anything on a guess, least of all an administrator's view.
struct Caller {
    identity: Identity,
    admin: bool,
}

impl Caller {
    fn lookup(uid: u32, admin_group: &str) -> Result<Caller, Reply> {
        let denied = |why: String| refuse(4, &format!("permission denied: {why}"));
        let name = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(user)) => user.name,
            Ok(None) => return Err(denied(format!("uid {uid} has no name"))),
            Err(e) => return Err(denied(format!("looking up uid {uid}: {e}"))),
        };
        let identity = match Identity::lookup(&name) {
            Ok(Some(identity)) if identity.uid == uid => identity,
            Ok(_) => return Err(denied(format!("NSS does not give uid {uid} for {name}"))),
            Err(e) => return Err(denied(format!("the groups of uid {uid} are unknown: {e}"))),
        };
        let admin = uid == 0 || identity.groups.iter().any(|g| g == admin_group);
        Ok(Caller { identity, admin })
    }
}

/// Runs a request as its caller, as the table in `authorise` allows.
fn handle(request: Request, caller: &Caller, shared: &Shared) -> Reply {
    let argv = std::iter::once("forcelogoutctl".to_string()).chain(request.argv);
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return refuse(2, &crate::usage_error_line(&e)),
    };
    let rule = authorise::rule(&cli);
    let (out, err) = (SharedBuffer::default(), SharedBuffer::default());
    let mut ctx = Context::new(
        shared.db.clone(),
        cli.json,
        shared.config.clone(),
        caller.identity.name.clone(),
    );
    match rule.who {
        Who::Never => {
            return refuse(
                4,
                &format!(
                    "permission denied: {}: not through the daemon's socket ({})",
                    rule.command, rule.why
                ),
            )
        }
        Who::Admin if !caller.admin => {
            return refuse(
                4,
                &format!("permission denied: {}", ctx.not_an_admin_text()),
            )
        }
        Who::CallerOnly => return ask_main_loop(shared, caller),
        Who::Anyone | Who::Admin => {}
    }
    ctx.daemon_running = true;
    ctx.viewer = (!caller.admin).then(|| caller.identity.clone());
    ctx.file_source = FileSource::Sent(request.input);
    ctx.redirect(Box::new(out.clone()), Box::new(err.clone()));
    let code = match crate::execute_local(&ctx, cli.command) {
        Ok(()) => 0,
        Err(e) => {
            let line = forcelogout_core::text::sanitize_line(&e.to_string());
            let _ = writeln!(err.clone(), "forcelogoutctl: {line}");
            e.exit_code()
        }
    };
    if code == 0 && rule.who == Who::Admin {
        let Identity { name, uid, .. } = &caller.identity;
        log(&format!(
            "{name} ({uid}) ran {} through the socket",
            rule.command
        ));
    }
    Reply {
        code,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// `ignore`, run by the main loop (which has the enforcer); its reply, or why there is none.
fn ask_main_loop(shared: &Shared, caller: &Caller) -> Reply {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let ask = IgnoreAsk {
        user: caller.identity.name.clone(),
        uid: caller.identity.uid,
        answer,
    };
    match shared.asks.try_send(ask) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return refuse(1, "the daemon is busy: try again"),
        Err(TrySendError::Disconnected(_)) => return refuse(1, "the daemon is stopping"),
    }
    // A full pipe already holds a wake-up.
    let _ = (&shared.wake).write(&[1]);
    answered.recv_timeout(IGNORE_WAIT).unwrap_or_else(|_| {
        refuse(
            1,
            "the daemon did not answer in time (your choice may still be recorded): try again",
        )
    })
}

pub(super) fn refuse(code: i32, message: &str) -> Reply {
    Reply {
        code,
        stderr: format!(
            "forcelogoutctl: {}\n",
            forcelogout_core::text::sanitize_line(message)
        ),
        ..Default::default()
    }
}

/// Writes the reply line, all of it by `REPLY_DEADLINE`.
fn send(stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write_by(stream, &text, Instant::now() + REPLY_DEADLINE)
}

enum ReadFailure {
    Late,
    TooLong,
    Io(std::io::Error),
}

/// The request line (without its '\n'; all that came before the end of the stream if none), at
/// most `cap` bytes of it, all by `deadline` however the client trickles it.
fn read_line(
    mut stream: &UnixStream,
    deadline: Instant,
    cap: usize,
) -> Result<Vec<u8>, ReadFailure> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFailure::Late);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(ReadFailure::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ReadFailure::Late)
            }
            Err(e) => return Err(ReadFailure::Io(e)),
        };
        let end = chunk[..n].iter().position(|&b| b == b'\n');
        line.extend_from_slice(&chunk[..end.unwrap_or(n)]);
        if line.len() > cap {
            return Err(ReadFailure::TooLong);
        }
        if n == 0 || end.is_some() {
            return Ok(line);
        }
    }
}

/// Writes all of `bytes` by `deadline` however slowly the client reads.
fn write_by(mut stream: &UnixStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The connections being served, per uid and in all (root's apart).
struct Slots {
    per_uid: usize,
    in_all: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_uid: HashMap<u32, usize>,
    all_but_root: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Full {
    Uid,
    All,
}

/// A connection's place in the caps, given back when it is served.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    fn new(per_uid: usize, in_all: usize) -> Slots {
        Slots {
            per_uid,
            in_all,
            counts: Mutex::default(),
        }
    }

    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.by_uid.get(&uid).copied().unwrap_or(0) >= self.per_uid {
            return Err(Full::Uid);
        }
        if uid != 0 && counts.all_but_root >= self.in_all {
            return Err(Full::All);
        }
        *counts.by_uid.entry(uid).or_default() += 1;
        if uid != 0 {
            counts.all_but_root += 1;
        }
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
        if self.uid != 0 {
            counts.all_but_root -= 1;
        }
    }
}

/// A log line at most every `QUIET_FOR`, saying how many were left out meanwhile.
#[derive(Default)]
struct Quiet(Mutex<(Option<Instant>, u64)>);

impl Quiet {
    fn log(&self, line: &str) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, left_out) = &mut *state;
        if last.is_some_and(|t| t.elapsed() < QUIET_FOR) {
            *left_out += 1;
            return;
        }
        match *left_out {
            0 => log(line),
            n => log(&format!("{line} (and {n} more such lines left out)")),
        }
        (*last, *left_out) = (Some(Instant::now()), 0);
    }
}

/// A `Write` whose bytes the daemon sends back in its reply (within one request's thread).
#[derive(Clone, Default)]
struct SharedBuffer(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.borrow()).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_and_everybody_have_a_cap_and_root_its_own() {
        let slots = Arc::new(Slots::new(2, 3));
        let a: Vec<Slot> = (0..2).map(|_| slots.take(1000).unwrap()).collect();
        assert_eq!(slots.take(1000).err(), Some(Full::Uid));
        let b = slots.take(1001).unwrap();
        assert_eq!(slots.take(1002).err(), Some(Full::All));
        // Root is not in the crowd's count.
        let root: Vec<Slot> = (0..2).map(|_| slots.take(0).unwrap()).collect();
        assert_eq!(slots.take(0).err(), Some(Full::Uid));
        drop(a);
        assert!(slots.take(1002).is_ok());
        drop((b, root));
        assert!(slots.counts.lock().unwrap().by_uid.is_empty());
        assert_eq!(slots.counts.lock().unwrap().all_but_root, 0);
    }

    #[test]
    fn a_trickled_request_meets_one_deadline() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // One byte every 150 ms: each read would end within any per-read timeout.
            for _ in 0..20 {
                if client.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        let started = Instant::now();
        let read = read_line(&server, started + Duration::from_millis(500), 1024);
        assert!(matches!(read, Err(ReadFailure::Late)));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(server);
        writer.join().unwrap();
    }

    #[test]
    fn a_line_is_read_up_to_its_cap() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"{\"argv\":[]}\nrest").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            read_line(&server, deadline, 64).ok().unwrap(),
            b"{\"argv\":[]}"
        );
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(&[b'x'; 100]).unwrap();
        assert!(matches!(
            read_line(&server, deadline, 64),
            Err(ReadFailure::TooLong)
        ));
    }

    #[test]
    fn a_reply_nobody_reads_is_given_up_at_its_deadline() {
        let (_client, server) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let big = vec![b'x'; 16 << 20];
        let sent = write_by(&server, &big, started + Duration::from_millis(300));
        assert_eq!(sent.unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
