//! `forcelogoutd` (`forcelogoutctl daemon`): the enforcement service. This file starts it: the
//! store, the sockets and their threads, then the main loop (`main_loop`), which sleeps until
//! the next thing to do and does it; `looks` decides when it looks at the store.

mod authorise;
mod control;
mod desktop;
pub mod fleet;
mod lock;
mod looks;
mod main_loop;
mod reader_copy;
pub mod socket;
mod subscribers;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use forcelogout_core::enforce::Enforcer;
use forcelogout_core::relay;
use forcelogout_core::store::{Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::Error;
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};

use crate::commands::Context;
use looks::Looks;
use main_loop::Daemon;

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
    // Before anything that enforces, records or binds: one daemon per store.
    let _one_daemon = lock::StoreLock::take(&ctx.db)?;
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
    let mut looks = Looks::new(Utc::now());
    // Missed logouts are settled before anything else (else the first look tries again).
    if let Err(e) = looks.skip_missed(&mut enforcer, Utc::now()) {
        log(&format!("{e} (trying again shortly)"));
    }
    // Subscribers' cursors before any socket: no event committed after start-up is missed.
    let subscribers = subscribers::Subscribers::start(ctx.db.clone(), ctx.config.clone());
    // Sessions first: whoever sees the main socket may count on the session socket too.
    record_sessions(ctx)?;
    reader_copy::start(ctx)?;
    let control = control::start(bind(&ctx.config.socket, 0o666)?, ctx)?;
    let inotify = forcelogout_core::store::watch_writes(&ctx.db)?;
    let timer = TimerFd::new(
        ClockId::CLOCK_REALTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(|e| Error::io("timerfd", e.into()))?;
    log(&format!(
        "enforcing {} (socket {})",
        ctx.db.display(),
        ctx.config.socket.display()
    ));
    fleet::start(ctx)?;
    let mut daemon = Daemon {
        enforcer,
        agents,
        looks,
        subscribers,
        control,
        inotify,
        timer,
    };
    daemon.look_if_due();
    loop {
        let woken = daemon.wait()?;
        daemon.dispatch(woken)?;
    }
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
        .spawn(move || {
            let schedules = relay::ScheduleCache::default();
            loop {
                let taken = relay::take_requests(
                    &listener,
                    &reader,
                    &schedules,
                    &config,
                    &Utc::now,
                    &log,
                    &queue,
                );
                if let Err(e) = taken {
                    log(&format!("session requests failed: {e}"));
                    // Out of descriptors, say: meanwhile the modules write the store themselves.
                    std::thread::sleep(Duration::from_millis(100));
                }
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
