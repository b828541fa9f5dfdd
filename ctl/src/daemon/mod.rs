//! `forcelogoutd` (`forcelogoutctl daemon`): the enforcement service. It sleeps until the next
//! thing to do: a CLOCK_REALTIME timer armed at the next countdown step (which the kernel
//! cancels when the wall clock is set, so a clock jump is noticed at once), inotify on the
//! store's directory (schedule changes and new sessions, within a second), and the socket.

mod desktop;
pub mod fleet;
pub mod socket;
mod subscribers;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::relay;
use forcelogout_core::store::{Access, IgnoreOutcome, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::targeting::Identity;
use forcelogout_core::Error;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::cli::{Cli, Command};
use crate::commands::Context;

/// Where the packages install the two programs; a build tree has them side by side.
const DAEMON_PROGRAM: &str = "/usr/libexec/forcelogout/forcelogoutd";
const CTL_PROGRAM: &str = "/usr/bin/forcelogoutctl";

/// The other program of the pair: beside this one (a build tree), else where packages put it.
fn companion(name: &str, installed: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from(installed))
}

/// `forcelogoutctl`, for the processes the daemon starts (desktop agents, the fleet link).
pub(crate) fn ctl_program() -> PathBuf {
    companion("forcelogoutctl", CTL_PROGRAM)
}

/// `forcelogoutctl daemon`: becomes `forcelogoutd` with the same arguments, in the same
/// process (the pid systemd and the tests started and signal). Returns only if that fails.
pub fn exec_daemon() -> Error {
    let program = companion("forcelogoutd", DAEMON_PROGRAM);
    let failure = std::process::Command::new(&program)
        .arg0("forcelogoutd")
        .args(std::env::args_os().skip(1))
        .exec();
    Error::io(format!("starting {}", program.display()), failure)
}

const SETTLE_STEP: chrono::Duration = chrono::Duration::milliseconds(100);
const SETTLE_FOR: chrono::Duration = chrono::Duration::seconds(1);
/// The module waits at most half its timeout for a session write; waiting on another writer
/// longer than that is waiting for nobody.
const SESSION_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// The session reader's connection reads a few schedules per login: a small cache keeps the
/// idle daemon small.
const READER_PAGE_CACHE_KIB: u32 = 256;

pub(crate) fn log(line: &str) {
    eprintln!(
        "forcelogoutctl daemon: {}",
        forcelogout_core::text::sanitize_line(line)
    );
}

pub fn run(ctx: &Context) -> Result<(), Error> {
    let store = Store::open(&ctx.db, Access::Create, DEFAULT_BUSY_TIMEOUT)?;
    let mut enforcer = Enforcer::new(store, ctx.config.clone(), Box::new(log))?;
    let agents = if ctx.config.desktop_notifications {
        let agents =
            desktop::Agents::new().map_err(|e| Error::io("starting desktop notifications", e))?;
        let agents = std::rc::Rc::new(std::cell::RefCell::new(agents));
        enforcer.set_desktop(Box::new(desktop::SharedAgents(agents.clone())));
        Some(agents)
    } else {
        None
    };
    for skipped in enforcer.skip_missed(Utc::now())? {
        log(&format!(
            "schedule {skipped}: a logout was missed while the daemon was down"
        ));
    }
    // Subscribers' cursors before any socket: no event committed after start-up is missed.
    let mut subscribers = subscribers::Subscribers::start(ctx.db.clone(), ctx.config.clone());
    // Sessions first: whoever sees the main socket may count on the session socket too.
    record_sessions(ctx)?;
    let listener = bind(&ctx.config.socket, 0o666)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("configuring the socket", e))?;
    let io = |what: &str, e: nix::Error| Error::io(what.to_string(), e.into());
    let inotify = forcelogout_core::store::watch_writes(&ctx.db)?;
    let timer = TimerFd::new(
        ClockId::CLOCK_REALTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(|e| io("timerfd", e))?;
    log(&format!(
        "enforcing {} (socket {})",
        ctx.db.display(),
        ctx.config.socket.display()
    ));
    fleet::start(ctx)?;
    // inotify fires when a writer starts writing to the WAL; its commit becomes visible a
    // little later (after its fsync). So after any write the daemon looks again every
    // SETTLE_STEP for SETTLE_FOR: a change is seen within a second whatever the disk.
    let mut settle_until = Utc::now();
    // A burst of writes (logins recorded one after another) wakes the loop for each; it
    // looks at the store at most every SETTLE_STEP meanwhile, so the burst is not slowed by
    // the loop's own reads.
    let mut look = true;
    let mut hooks_may_have_changed = false;
    let mut last_look = Utc::now();
    let mut planned_wake = Utc::now();
    loop {
        let now = Utc::now();
        if look {
            enforcer.refresh()?;
            let (report, wake) = enforcer.step(now)?;
            if !report.warned.is_empty() {
                log(&format!("warned {}", report.warned.join(", ")));
            }
            if hooks_may_have_changed {
                subscribers.rescan();
                hooks_may_have_changed = false;
            }
            // New events may have been committed (by PAM, by this loop, by a request).
            subscribers.notify();
            (last_look, planned_wake) = (now, wake);
        }
        let mut wake = if now < settle_until {
            planned_wake.min(last_look + SETTLE_STEP)
        } else {
            planned_wake
        };
        // Desktop agents: a stuck one is killed on time, an ended one reaped.
        if let Some(agents) = &agents {
            if let Some(at) = agents.borrow_mut().tick(std::time::Instant::now()) {
                let after = at.saturating_duration_since(std::time::Instant::now());
                wake = wake.min(Utc::now() + chrono::Duration::from_std(after).unwrap_or_default());
            }
        }
        arm(&timer, wake)?;
        let agents_ref = agents.as_ref().map(|a| a.borrow());
        // While settling the loop looks every SETTLE_STEP anyway: inotify is left out of the
        // poll then, so a burst of writes (a dozen page writes each) does not wake it for
        // every page, on a core the writers need.
        let settling = now < settle_until;
        let watch = if settling {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        let mut fds = vec![
            PollFd::new(timer.as_fd(), PollFlags::POLLIN),
            PollFd::new(inotify.as_fd(), watch),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(agents) = &agents_ref {
            fds.push(PollFd::new(agents.wake_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(io("waiting", e)),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (timer_ready, inotify_ready, socket_ready) =
            (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]));
        let desktop_ready = fds.get(3).is_some_and(ready);
        drop(fds);
        drop(agents_ref);
        if desktop_ready {
            if let Some(agents) = &agents {
                desktop_reports(agents, &mut enforcer);
            }
        }
        if timer_ready {
            if let Err(nix::Error::ECANCELED) = timer.wait() {
                // The wall clock was set: logouts it jumped over are fired if recent, else skipped.
                log("the wall clock was changed; re-planning");
                enforcer.skip_missed(Utc::now())?;
            }
        }
        if (inotify_ready || settling) && drain(&inotify) {
            hooks_may_have_changed = true;
            settle_until = Utc::now() + SETTLE_FOR;
        }
        if socket_ready {
            serve(&listener, ctx, &mut enforcer);
        }
        look =
            timer_ready || socket_ready || desktop_ready || Utc::now() >= last_look + SETTLE_STEP;
    }
}

/// Reads every pending inotify event; whether there was any.
fn drain(inotify: &nix::sys::inotify::Inotify) -> bool {
    let mut any = false;
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        any = true;
    }
    any
}

/// What the desktop agents reported: "Keep working" is `forcelogoutctl ignore` for that
/// user, through the same `Enforcer::ignore` as the socket's.
fn desktop_reports(
    agents: &std::rc::Rc<std::cell::RefCell<desktop::Agents>>,
    enforcer: &mut Enforcer,
) {
    let reports = agents.borrow_mut().take_reports();
    for received in reports {
        if let forcelogout_core::enforce::desktop::Report::Ignored { key } = received.report {
            match enforcer.ignore(&received.user, received.uid, Utc::now()) {
                Ok(IgnoreOutcome::Ignored(_)) => log(&format!(
                    "{} chose \"Keep working\" on the desktop (schedule {key})",
                    received.user
                )),
                Ok(_) => {}
                Err(e) => log(&format!(
                    "recording the desktop ignore of {}: {e}",
                    received.user
                )),
            }
        }
    }
}

/// Arms the timer at `wake` on the wall clock, to be cancelled if the clock is set.
fn arm(timer: &TimerFd, wake: DateTime<Utc>) -> Result<(), Error> {
    let at = TimeSpec::new(wake.timestamp(), i64::from(wake.timestamp_subsec_nanos()));
    timer
        .set(
            Expiration::OneShot(at),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
        .map_err(|e| Error::io("arming the timer", e.into()))
}

/// Records the PAM module's session writes on the root-only session socket, in threads of
/// their own with their own connections, so that a login never waits behind enforcement: one
/// reads requests, answers `account` and works out the notices; the other commits the writes
/// that arrive together in one transaction while the next ones are read.
fn record_sessions(ctx: &Context) -> Result<(), Error> {
    let listener = bind(&ctx.config.session_socket, 0o600)?;
    let mut writer = relay::SessionWriter::new(
        Store::open(&ctx.db, Access::ReadWrite, SESSION_BUSY_TIMEOUT)?.for_session_writer()?,
    );
    let reader = Store::open(&ctx.db, Access::ReadOnly, SESSION_BUSY_TIMEOUT)?;
    reader.limit_page_cache(READER_PAGE_CACHE_KIB)?;
    let config = ctx.config.clone();
    let (queue, queued) = std::sync::mpsc::sync_channel(relay::QUEUE_BOUND);
    std::thread::Builder::new()
        .name("session-writes".into())
        .spawn(move || while writer.record_queued(&queued, &Utc::now, &log).is_ok() {})
        .map_err(|e| Error::io("starting the session recorder", e))?;
    std::thread::Builder::new()
        .name("sessions".into())
        .spawn(move || loop {
            let taken = relay::take_requests(&listener, &reader, &config, &Utc::now, &log, &queue);
            if let Err(e) = taken {
                log(&format!("session requests failed: {e}"));
                // Out of descriptors, say: meanwhile the modules write the store themselves.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .map_err(|e| Error::io("starting the session reader", e))?;
    Ok(())
}

/// A socket at `path` with `mode` (the daemon checks who asks); a stale one is replaced.
fn bind(path: &std::path::Path, mode: u32) -> Result<UnixListener, Error> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("setting the mode of {}", dir.display()), e))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(Error::io(
                format!("{}: another daemon is running", path.display()),
                std::io::Error::from(std::io::ErrorKind::AddrInUse),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
    Ok(listener)
}

fn serve(listener: &UnixListener, ctx: &Context, enforcer: &mut Enforcer) {
    while let Ok((stream, _)) = listener.accept() {
        if let Err(e) = answer(stream, ctx, enforcer) {
            log(&format!("a request failed: {e}"));
        }
    }
}

fn answer(stream: UnixStream, ctx: &Context, enforcer: &mut Enforcer) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let peer = getsockopt(&stream, PeerCredentials).map_err(std::io::Error::from)?;
    let mut line = String::new();
    BufReader::new((&stream).take(socket::MAX_REQUEST)).read_line(&mut line)?;
    if line.is_empty() {
        // A client that only checked whether the daemon is there.
        return Ok(());
    }
    let reply = match serde_json::from_str::<socket::Request>(&line) {
        Ok(request) => handle(request, peer.uid(), ctx, enforcer),
        Err(_) => socket::Reply {
            code: 2,
            stderr: "forcelogoutctl: request: not a forcelogoutctl request\n".into(),
            ..Default::default()
        },
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

fn refuse(code: i32, message: &str) -> socket::Reply {
    socket::Reply {
        code,
        stderr: format!(
            "forcelogoutctl: {}\n",
            forcelogout_core::text::sanitize_line(message)
        ),
        ..Default::default()
    }
}

/// Runs a request as its peer: `ignore` for the peer's own warnings; everything for root and
/// the admin group; for other users, only listings of what concerns them.
fn handle(
    request: socket::Request,
    uid: u32,
    ctx: &Context,
    enforcer: &mut Enforcer,
) -> socket::Reply {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return refuse(4, &format!("permission denied: uid {uid} has no name"));
    };
    let argv = std::iter::once("forcelogoutctl".to_string()).chain(request.argv);
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            return refuse(
                2,
                e.render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments"),
            )
        }
    };
    let identity = Identity::lookup(&user.name).ok().flatten();
    let admin = uid == 0
        || identity
            .as_ref()
            .is_some_and(|i| i.groups.contains(&ctx.config.admin_group));
    if cli.fleet.is_some() || matches!(cli.command, Command::Fleet(_)) {
        return refuse(
            2,
            "fleet: not through the socket (the fleet's database checks its own roles)",
        );
    }
    match &cli.command {
        Command::Daemon => return refuse(2, "daemon: not through the socket"),
        Command::NotifyAgent { .. } => {
            return refuse(2, "notify-agent: started by the daemon only")
        }
        Command::FleetLink => return refuse(2, "fleet-link: started by the daemon only"),
        Command::Events(args) if args.follow => {
            return refuse(
                4,
                "permission denied: --follow reads the store directly (root or the group adm)",
            )
        }
        Command::Ignore => return ignore(enforcer, &user.name, uid),
        _ => {}
    }
    let read_only = matches!(
        cli.command,
        Command::Sessions
            | Command::Next(_)
            | Command::Schedule(crate::cli::ScheduleCommand::List { .. })
            | Command::Schedule(crate::cli::ScheduleCommand::Show { .. })
    );
    if !admin && !read_only {
        return refuse(
            4,
            &format!("permission denied: {}", ctx.not_an_admin_text()),
        );
    }
    let out = SharedBuffer::default();
    let err = SharedBuffer::default();
    let mut request_ctx = Context::new(
        ctx.db.clone(),
        cli.json,
        ctx.config.clone(),
        user.name.clone(),
    );
    request_ctx.daemon_running = true;
    request_ctx.viewer = if admin { None } else { identity };
    request_ctx.redirect(Box::new(out.clone()), Box::new(err.clone()));
    let code = match crate::execute_local(&request_ctx, cli.command) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(
                err.clone(),
                "forcelogoutctl: {}",
                forcelogout_core::text::sanitize_line(&e.to_string())
            );
            e.exit_code()
        }
    };
    if code == 0 {
        log(&format!(
            "{} ({uid}) ran a command through the socket",
            user.name
        ));
    }
    socket::Reply {
        code,
        stdout: out.text(),
        stderr: err.text(),
    }
}

fn ignore(enforcer: &mut Enforcer, user: &str, uid: u32) -> socket::Reply {
    match enforcer.ignore(user, uid, Utc::now()) {
        Ok(IgnoreOutcome::Ignored(ids)) if !ids.is_empty() => socket::Reply {
            stdout: format!(
                "You chose to keep working: your sessions stay (schedule {}).\n",
                ids.join(", ")
            ),
            ..Default::default()
        },
        Ok(IgnoreOutcome::Ignored(_)) => socket::Reply {
            stdout: "You already chose to keep working.\n".into(),
            ..Default::default()
        },
        Ok(IgnoreOutcome::KickOnly) => refuse(
            4,
            "permission denied: this logout cannot be ignored (the administrator chose a kick)",
        ),
        Ok(IgnoreOutcome::Deferred) => socket::Reply {
            stdout: "You chose to keep working: your sessions stay (recorded as soon as the store can be written).\n".into(),
            ..Default::default()
        },
        Ok(IgnoreOutcome::NothingToIgnore) => {
            refuse(1, &format!("no logout warning is running for {user}"))
        }
        Err(e) => refuse(e.exit_code(), &e.to_string()),
    }
}

/// A `Write` whose bytes the daemon sends back in its reply.
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
