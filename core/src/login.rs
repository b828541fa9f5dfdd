//! The PAM module's logic (SPEC §5.5, §6.1), generic over `PamHandler` so that the C adapter
//! stays four steps per hook (convert args, read items, call this, map the verdict) and so
//! that the logic is tested without libpam.
//!
//! Failure policy: a store that cannot be read or written is logged and the login proceeds
//! (`Verdict::Ignore`: the rest of the stack decides), except that `account` with
//! `fail=closed` refuses. Only `account` ever refuses a login on purpose: during a lockout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::Error;
use crate::policy;
use crate::relay;
use crate::sessions::{LoginFacts, ProcessFacts};
use crate::store::{Access, RemovalReason, Store, DEFAULT_DB_PATH};
use crate::text::sanitize_for_terminal;

mod kept;
pub use kept::Kept;

/// What the PAM adapter gives the logic: the handle's items, data, conversation and syslog.
pub trait PamHandler {
    fn user(&self) -> Result<String, Error>;
    fn item(&self, item: PamItem) -> Option<String>;
    /// A variable of the PAM environment (pam_getenv).
    fn env(&self, name: &str) -> Option<String>;
    /// String data in the handle under `name` (pam_get_data): ours, or another module's
    /// that follows pam_systemd's convention of a NUL-terminated string.
    fn data(&self, name: &str) -> Option<String>;
    /// Stores the string `value` under `name` (pam_set_data), replacing what was there.
    fn set_data(&mut self, name: &str, value: &str) -> Result<(), Error>;
    /// A PAM_TEXT_INFO message to the user.
    fn info(&mut self, text: &str);
    /// A PAM_ERROR_MSG message to the user.
    fn error(&mut self, text: &str);
    /// A line to syslog (authpriv), as pam_syslog does.
    fn log(&self, level: LogLevel, text: &str);
    /// The slot in which this handle keeps what one hook leaves for the next (see `Kept`);
    /// `None` where the handle keeps none yet.
    fn kept(&mut self) -> Option<&mut Kept> {
        None
    }
    /// Leaves `kept` in the handle, which releases it (`Kept::release`) at its end.
    fn keep(&mut self, kept: Kept) {
        kept.release();
    }
}

/// The store kept in the handle for `args.db`, with this hook's busy timeout.
fn take_kept(h: &mut dyn PamHandler, args: &ModuleArgs, busy: Duration) -> Option<Store> {
    let store = h.kept()?.take_store(&args.db)?;
    store.set_busy_timeout(busy).ok()?;
    Some(store)
}

/// Changes what the handle keeps for the login's next hooks, starting it if there is none.
fn keep_in_handle(h: &mut dyn PamHandler, change: impl FnOnce(&mut Kept)) {
    match h.kept() {
        Some(slot) => change(slot),
        None => {
            let mut kept = Kept::new();
            change(&mut kept);
            h.keep(kept);
        }
    }
}

/// Leaves `store` in the handle for the login's next hooks.
fn keep(h: &mut dyn PamHandler, store: Store) {
    keep_in_handle(h, |kept| kept.put_store(store));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PamItem {
    Service,
    Tty,
    RemoteHost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Notice,
    Debug,
}

/// The hook's answer, which the adapter maps to a PAM return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// No opinion: the rest of the stack decides.
    Ignore,
    PermissionDenied,
}

/// The module's arguments from the PAM configuration line.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleArgs {
    pub db: PathBuf,
    pub config: PathBuf,
    pub fail_closed: bool,
    pub timeout: Duration,
    pub debug: bool,
    pub quiet: bool,
}

impl Default for ModuleArgs {
    fn default() -> ModuleArgs {
        ModuleArgs {
            db: PathBuf::from(DEFAULT_DB_PATH),
            config: PathBuf::from(crate::config::DEFAULT_CONFIG_PATH),
            fail_closed: false,
            timeout: Duration::from_millis(2000),
            debug: false,
            quiet: false,
        }
    }
}

/// The PAM data under which open_session leaves the session key for close_session.
pub const SESSION_KEY_DATA: &str = "forcelogout.session_key";
/// The PAM data pam_systemd turns into the session scope's RuntimeMaxSec= (systemd >= 244).
pub const RUNTIME_MAX_DATA: &str = "systemd.runtime_max_sec";

/// How long after a kick logind's runtime limit ends the session: the daemon, when it runs,
/// acts first and records the removal with its reason.
pub const RUNTIME_LIMIT_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// The longest `timeout=` accepted: a login must never hang on us for long.
const MAX_TIMEOUT_MS: u64 = 30_000;

impl ModuleArgs {
    /// Parses `db=PATH fail=open|closed timeout=MS debug quiet config=PATH`. Unknown or bad
    /// arguments are returned as complaints for syslog and otherwise ignored: a typo in a PAM
    /// line must not lock anyone out.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> (ModuleArgs, Vec<String>) {
        let mut parsed = ModuleArgs::default();
        let mut complaints = Vec::new();
        for arg in args {
            match arg.split_once('=') {
                Some(("db", path)) if path.starts_with('/') => parsed.db = PathBuf::from(path),
                Some(("config", path)) if path.starts_with('/') => parsed.config = PathBuf::from(path),
                Some(("fail", "open")) => parsed.fail_closed = false,
                Some(("fail", "closed")) => parsed.fail_closed = true,
                Some(("timeout", ms)) => match ms.parse::<u64>() {
                    Ok(ms) if ms <= MAX_TIMEOUT_MS => parsed.timeout = Duration::from_millis(ms),
                    _ => complaints.push(format!("ignoring {arg}: give milliseconds, 0 to {MAX_TIMEOUT_MS}")),
                },
                None if arg == "debug" => parsed.debug = true,
                None if arg == "quiet" => parsed.quiet = true,
                _ => complaints.push(format!(
                    "ignoring unknown argument {:?} (known: db=/PATH config=/PATH fail=open|closed timeout=MS debug quiet)",
                    crate::text::sanitize_line(arg)
                )),
            }
        }
        (parsed, complaints)
    }
}

/// Everything a hook needs besides the handle.
pub struct HookContext {
    pub args: ModuleArgs,
    /// PAM_SILENT: no messages to the user.
    pub silent: bool,
    pub now: DateTime<Utc>,
}

impl HookContext {
    fn config(&self, h: &dyn PamHandler) -> Config {
        Config::load(&self.args.config).unwrap_or_else(|e| {
            h.log(LogLevel::Error, &format!("{e}; using the defaults"));
            Config::default()
        })
    }

    /// Asks the daemon to record a session write, waiting at most half the timeout so that
    /// writing the store itself still fits in the rest.
    fn relay(
        &self,
        config: &Config,
        process: ProcessFacts,
        action: relay::Action,
    ) -> std::io::Result<relay::Reply> {
        let budget = self.args.timeout / 2;
        let request = relay::Request {
            db: self.args.db.clone(),
            deadline: self.now + chrono::Duration::from_std(budget).unwrap_or_default(),
            now: self.now,
            process,
            action,
        };
        relay::call(&config.session_socket, &request, budget)
    }

    /// What is left of the timeout since `started`, for the store's busy wait.
    fn remaining(&self, started: Instant) -> Duration {
        self.args.timeout.saturating_sub(started.elapsed())
    }

    fn speaks(&self) -> bool {
        !self.silent && !self.args.quiet
    }

    fn debug(&self, h: &dyn PamHandler, text: &str) {
        if self.args.debug {
            h.log(LogLevel::Debug, text);
        }
    }
}

/// `account`: refuses a login while a Kick logout that targets the user is inside its
/// lockout window; allows it otherwise.
pub fn account(h: &mut dyn PamHandler, ctx: &HookContext) -> Verdict {
    match lockout_message(h, ctx) {
        Ok(None) => Verdict::Success,
        Ok(Some(message)) => {
            if !ctx.silent {
                h.error(&message);
            }
            Verdict::PermissionDenied
        }
        Err(e) => {
            h.log(LogLevel::Error, &format!("account: {e}"));
            if ctx.args.fail_closed {
                if !ctx.silent {
                    h.error("Login refused: the logout policy could not be checked (fail=closed).");
                }
                Verdict::PermissionDenied
            } else {
                Verdict::Ignore
            }
        }
    }
}

/// The refusal message when a lockout targets the user; otherwise `None`, after leaving
/// logind a runtime limit where one is wanted. The daemon answers when it runs (it has the
/// store open); otherwise the module reads the kick schedules itself.
fn lockout_message(h: &mut dyn PamHandler, ctx: &HookContext) -> Result<Option<String>, Error> {
    let started = Instant::now();
    let user = h.user()?;
    let config = ctx.config(h);
    let action = relay::Action::Account { user: user.clone() };
    let (decision, recorder) = match ctx.relay(&config, ProcessFacts::default(), action) {
        Ok(relay::Reply::Account(decision)) => (decision, "the daemon".to_string()),
        outcome => {
            let (store, keepable) = store_for_account(h, ctx, started)?;
            let log = |line: &str| h.log(LogLevel::Error, line);
            let kicks = policy::enforceable(store.current_kick_schedules_lenient()?, &log);
            let decision =
                policy::account_decision(&kicks, &user, &config, ctx.now, &policy::whole_row)?;
            if keepable {
                keep(h, store);
            }
            (
                decision,
                format!("this process ({})", why_not_relayed(&outcome)),
            )
        }
    };
    ctx.debug(h, &format!("account of {user} decided by {recorder}"));
    let Some(refusal) = decision.refusal else {
        if let Some(at) = decision.next_kick {
            limit_runtime(h, ctx, at);
        }
        return Ok(None);
    };
    h.log(
        LogLevel::Notice,
        &format!(
            "refusing login of {user}: schedule {} locks out {} until {}",
            refusal.schedule_id,
            crate::text::sanitize_line(&refusal.group),
            crate::clock::format_timestamp(refusal.until)
        ),
    );
    Ok(Some(refusal.message))
}

/// Asks logind (through pam_systemd, which reads this PAM data at session open) to end the
/// session `RUNTIME_LIMIT_GRACE` after the kick due `at`: the backstop for a daemon that is
/// down. A limit already set is only ever lowered, and one that is not plain seconds is left.
fn limit_runtime(h: &mut dyn PamHandler, ctx: &HookContext, at: DateTime<Utc>) {
    let seconds = ((at - ctx.now) + RUNTIME_LIMIT_GRACE).num_seconds().max(1);
    match h.data(RUNTIME_MAX_DATA) {
        Some(existing) if existing.trim() == "infinity" => {}
        Some(existing) => match existing.trim().parse::<i64>() {
            Ok(limit) if limit <= seconds => return,
            Ok(_) => {}
            Err(_) => {
                ctx.debug(
                    h,
                    &format!("leaving the runtime limit {existing:?} as it is"),
                );
                return;
            }
        },
        None => {}
    }
    match h.set_data(RUNTIME_MAX_DATA, &seconds.to_string()) {
        Ok(()) => ctx.debug(h, &format!("runtime limit {seconds} s for logind")),
        Err(e) => h.log(
            LogLevel::Error,
            &format!("account: setting the runtime limit: {e}"),
        ),
    }
}

/// The read path of `account`: the directory must exist (the package makes it; its absence
/// is a fault), the file may not yet (nothing was ever scheduled).
fn open_for_reading(args: &ModuleArgs, busy_timeout: Duration) -> Result<Store, Error> {
    if let Some(dir) = args.db.parent() {
        if !dir.is_dir() {
            return Err(Error::io(
                format!("{}: the store's directory is missing", args.db.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    }
    Store::open_for_reading(&args.db, busy_timeout)
}

/// The write path of `open_session` and `close_session` when the daemon does not record:
/// the store opened for this one call (see `Store::for_one_call`).
fn open_for_writing(args: &ModuleArgs, busy_timeout: Duration) -> Result<Store, Error> {
    Ok(Store::open(&args.db, Access::ReadWrite, busy_timeout)?.for_one_call())
}

/// The store `account` reads, and whether the login's session hooks may use it after: the one
/// kept in the handle; else, for root and a store that exists, the store opened for writing
/// (what `open_session` would open next); else the read path.
fn store_for_account(
    h: &mut dyn PamHandler,
    ctx: &HookContext,
    started: Instant,
) -> Result<(Store, bool), Error> {
    let busy = ctx.remaining(started);
    if let Some(store) = take_kept(h, &ctx.args, busy) {
        return Ok((store, true));
    }
    if nix::unistd::geteuid().is_root() && ctx.args.db.is_file() {
        if let Ok(store) = open_for_writing(&ctx.args, busy) {
            return Ok((store, true));
        }
    }
    Ok((open_for_reading(&ctx.args, busy)?, false))
}

/// The store a session hook writes: the one kept in the handle, else opened for this call.
fn store_for_writing(
    h: &mut dyn PamHandler,
    ctx: &HookContext,
    started: Instant,
) -> Result<Store, Error> {
    let busy = ctx.remaining(started);
    match take_kept(h, &ctx.args, busy) {
        Some(store) => Ok(store),
        None => open_for_writing(&ctx.args, busy),
    }
}

/// `open_session`: registers the session, writes `online` if it is the user's first, and
/// shows the notices: the last forced logout's message, and logouts coming soon.
pub fn open_session(h: &mut dyn PamHandler, ctx: &HookContext) -> Verdict {
    match register(h, ctx) {
        Ok(()) => Verdict::Success,
        Err(e) => {
            h.log(LogLevel::Error, &format!("open_session: {e}"));
            Verdict::Ignore
        }
    }
}

fn register(h: &mut dyn PamHandler, ctx: &HookContext) -> Result<(), Error> {
    let started = Instant::now();
    let user = h.user()?;
    let uid = match nix::unistd::User::from_name(&user) {
        Ok(Some(u)) => u.uid.as_raw(),
        Ok(None) => {
            return Err(Error::invalid(
                "user",
                format!("{user} is not known to NSS"),
            ))
        }
        Err(e) => return Err(Error::io(format!("looking up user {user}"), e.into())),
    };
    let login = LoginFacts {
        user: user.clone(),
        uid,
        service: h.item(PamItem::Service),
        tty: h.item(PamItem::Tty),
        remote_host: h.item(PamItem::RemoteHost),
        logind_session: h.env("XDG_SESSION_ID"),
    };
    let process = ProcessFacts::of_current_process();
    let session_key = crate::ids::new_id()?;
    let config = ctx.config(h);
    let action = relay::Action::Open {
        session_key: session_key.clone(),
        login: login.clone(),
        notices: ctx.speaks(),
    };
    let (opened, notices, recorder) = match ctx.relay(&config, process.clone(), action) {
        Ok(relay::Reply::Opened { opened, notices }) => (opened, notices, "the daemon".into()),
        Ok(relay::Reply::Queued { notices }) => {
            // The store is busy: the daemon keeps this write and makes it once it can.
            h.log(
                LogLevel::Notice,
                &format!("the store is busy: the daemon records the session of {user} when it can"),
            );
            let opened = crate::store::Opened {
                session_key: session_key.clone(),
                online: false,
                last_logout_message: None,
            };
            (opened, notices, "the daemon, later".into())
        }
        outcome => {
            let mut store = store_for_writing(h, ctx, started)?;
            let opened = store.open_session_showing(
                &session_key,
                &login,
                &process,
                ctx.speaks(),
                ctx.now,
            )?;
            let notices = if ctx.speaks() {
                let log = |line: &str| h.log(LogLevel::Error, line);
                let schedules = policy::enforceable(store.current_schedules_lenient()?, &log);
                policy::notices_among(&schedules, &config, &user, ctx.now, &policy::whole_row)?
            } else {
                Vec::new()
            };
            // For this login's close_session.
            keep_in_handle(h, |kept| kept.put_store(store));
            (
                opened,
                notices,
                format!("this process ({})", why_not_relayed(&outcome)),
            )
        }
    };
    h.set_data(SESSION_KEY_DATA, &opened.session_key)?;
    keep_in_handle(h, |kept| kept.put_process(process));
    ctx.debug(
        h,
        &format!(
            "opened session {} of {user} (online: {}), recorded by {recorder}",
            opened.session_key, opened.online
        ),
    );
    if !ctx.speaks() {
        return Ok(());
    }
    if let Some(message) = &opened.last_logout_message {
        h.info(&format!(
            "You were logged out by the administrator:\n{}",
            sanitize_for_terminal(message)
        ));
    }
    for notice in notices {
        h.info(&notice);
    }
    Ok(())
}

/// Why a session write did not go through the daemon, for the debug log.
fn why_not_relayed(outcome: &std::io::Result<relay::Reply>) -> String {
    match outcome {
        Ok(relay::Reply::Declined(reason)) => format!("the daemon declined: {reason}"),
        Ok(_) => "the daemon answered out of turn".into(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no daemon".into(),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "the daemon did not answer in time".into()
        }
        Err(e) => format!("the daemon did not answer: {e}"),
    }
}

/// `close_session`: removes the session (found by this handle's data, else by this process)
/// and writes `removed` and, after the last one, `offline`. Idempotent.
pub fn close_session(h: &mut dyn PamHandler, ctx: &HookContext) -> Verdict {
    let started = Instant::now();
    let session_key = h.data(SESSION_KEY_DATA);
    let result = (|| -> Result<(crate::store::Closed, String), Error> {
        let process = h
            .kept()
            .and_then(|kept| kept.process_for_close())
            .unwrap_or_else(ProcessFacts::of_current_process);
        let config = ctx.config(h);
        let action = relay::Action::Close {
            session_key: session_key.clone(),
        };
        match ctx.relay(&config, process.clone(), action) {
            Ok(relay::Reply::Closed(closed)) => Ok((closed, "the daemon".to_string())),
            Ok(relay::Reply::Queued { .. }) => {
                let later = crate::store::Closed {
                    session_key: session_key.clone(),
                    removed: false,
                    offline: false,
                };
                Ok((later, "the daemon, later (the store is busy)".to_string()))
            }
            outcome => {
                let mut store = store_for_writing(h, ctx, started)?;
                let closed = store.close_session(
                    session_key.as_deref(),
                    &process,
                    RemovalReason::Logout,
                    ctx.now,
                )?;
                Ok((
                    closed,
                    format!("this process ({})", why_not_relayed(&outcome)),
                ))
            }
        }
    })();
    match result {
        Ok((closed, recorder)) => {
            ctx.debug(
                h,
                &format!(
                    "close_session: session {:?} removed: {}, offline: {}, recorded by {recorder}",
                    closed.session_key, closed.removed, closed.offline
                ),
            );
            Verdict::Success
        }
        Err(e) => {
            h.log(LogLevel::Error, &format!("close_session: {e}"));
            Verdict::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let (args, complaints) = ModuleArgs::parse([
            "db=/tmp/x.db",
            "fail=closed",
            "timeout=500",
            "debug",
            "quiet",
        ]);
        assert!(complaints.is_empty());
        assert_eq!(args.db, PathBuf::from("/tmp/x.db"));
        assert!(args.fail_closed && args.debug && args.quiet);
        assert_eq!(args.timeout, Duration::from_millis(500));
        let (args, complaints) = ModuleArgs::parse([
            "db=relative.db",
            "fail=maybe",
            "timeout=-1",
            "timeout=99999999",
            "loud",
        ]);
        assert_eq!(args, ModuleArgs::default());
        assert_eq!(complaints.len(), 5);
    }
}
