//! `--fleet [URL]` on `schedule …`, `next`, `logout` and `events`: choosing the central
//! database instead of this host's store (SPEC §9) — its URL, the connection, and the flags
//! that mean something in one place only. The commands themselves are the same code for both
//! (core's `ScheduleStore`); `fleet …` itself is in `fleet_admin`.

use forcelogout_core::fleet::validate_selector;
use forcelogout_core::store::fleet::{FleetDb, FleetUrl};
use forcelogout_core::Error;

use super::Context;
use crate::cli::{Command, ScheduleCommand};
pub(super) use crate::output::short_time;

/// `--fleet URL` (a separate word) becomes `--fleet=URL` when the next word is a connection
/// string (it has `=` or `://`), so that `--fleet schedule list` still means "the configured
/// URL" and `--fleet 'host=db' schedule list` a given one.
pub fn join_fleet_value(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--fleet" {
            if let Some(next) = args.peek() {
                if next.contains('=') || next.contains("://") {
                    let value = args.next().unwrap_or_default();
                    out.push(format!("--fleet={value}"));
                    continue;
                }
            }
        }
        out.push(arg);
    }
    out
}

/// `--hosts` and `--host` mean something only centrally.
pub fn refuse_fleet_flags(command: &Command) -> Result<(), Error> {
    let (hosts, host) = match command {
        Command::Schedule(ScheduleCommand::Add(f))
        | Command::Schedule(ScheduleCommand::Update { flags: f, .. }) => (f.hosts.is_some(), false),
        Command::Logout(a) => (a.hosts.is_some(), false),
        Command::Events(a) => (false, a.host.is_some()),
        _ => (false, false),
    };
    if hosts {
        return Err(Error::invalid("hosts", "only with --fleet"));
    }
    if host {
        return Err(Error::invalid("host", "only with --fleet"));
    }
    Ok(())
}

/// The URL: `--fleet URL`, else the configuration's `[fleet] url`.
pub(super) fn url(ctx: &Context) -> Result<FleetUrl, Error> {
    let given = ctx.fleet.as_deref().unwrap_or("");
    let text = if given.is_empty() {
        match &ctx.config.fleet {
            Some(fleet) => fleet.url.clone(),
            None => {
                return Err(Error::invalid(
                    "fleet",
                    "no URL given and the configuration has no [fleet] url",
                ))
            }
        }
    } else {
        given.to_string()
    };
    FleetUrl::parse(&text, &ctx.actor)
}

pub(super) fn connect(ctx: &Context) -> Result<FleetDb, Error> {
    let mut db = url(ctx)?.connect()?;
    db.check_schema()?;
    Ok(db)
}

/// A command with `--fleet`: the same commands as on this host's store, on the central
/// database (`Context::place`), less what only a host's store can do.
pub fn run_central(ctx: &Context, command: Command) -> Result<(), Error> {
    refuse_host_flags(&command)?;
    match command {
        Command::Schedule(command) => super::schedule::run(ctx, command),
        Command::Next(args) => super::next::run(ctx, args),
        Command::Logout(args) => super::logout::run(ctx, args),
        Command::Events(args) => super::events::run(ctx, args),
        Command::Fleet(command) => super::fleet_admin::run(ctx, command),
        _ => Err(Error::invalid(
            "fleet",
            "only schedule, next, logout, events and fleet work on the central database",
        )),
    }
}

/// `--dry-run` shows this host's sessions, `--follow` waits on this host's store file and
/// ReplayIds count one host's events: none means anything centrally. Refused before the
/// server is contacted.
fn refuse_host_flags(command: &Command) -> Result<(), Error> {
    let dry_run = match command {
        Command::Schedule(ScheduleCommand::Add(f))
        | Command::Schedule(ScheduleCommand::Update { flags: f, .. }) => f.dry_run,
        Command::Logout(a) => a.dry_run,
        _ => false,
    };
    if dry_run {
        return Err(Error::invalid("dry-run", "not with --fleet"));
    }
    if let Command::Events(args) = command {
        if args.follow {
            return Err(Error::invalid(
                "follow",
                "not with --fleet (follow a host's own store, or LISTEN in psql)",
            ));
        }
        if args.after_replay_id.is_some() {
            return Err(Error::invalid(
                "after-replay-id",
                "not with --fleet (ReplayIds are per host; use --host and --since)",
            ));
        }
    }
    Ok(())
}

/// `--hosts`, checked before anything is opened (a host's store refuses any).
pub(super) fn hosts_selector(given: Option<&str>) -> Result<Option<String>, Error> {
    given.map(validate_selector).transpose()
}
