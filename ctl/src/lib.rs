//! `forcelogoutctl`: the administration CLI, and `forcelogoutd`: the enforcement daemon it
//! starts. Glue over `forcelogout_core`: parse, validate, call the core, print. Every error is
//! printed once as "forcelogoutctl: field: reason" and decides the exit code (0 ok, 1 runtime,
//! 2 invalid input, 4 permission denied). A caller the store refuses is served by the daemon's
//! socket, which checks who asks.
//!
//! The daemon is its own program so that it links neither the fleet's PostgreSQL and TLS
//! client nor libdbus (2.6 MB of its resident memory): its fleet link (`fleet-link`) and its
//! desktop agents (`notify-agent`) are `forcelogoutctl` processes it starts.

mod cli;
mod commands;
mod daemon;
mod notify_agent;
mod output;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;
use forcelogout_core::config::Config;
use forcelogout_core::users::real_user_name;
use forcelogout_core::Error;

use crate::cli::{Cli, Command};
use crate::commands::Context;

/// `forcelogoutctl`.
pub fn main_ctl() -> ExitCode {
    let args = match utf8_args() {
        Ok(args) => args,
        Err(err) => return fail(&err),
    };
    let cli = match Cli::try_parse_from(commands::fleet::join_fleet_value(args.into_iter())) {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    match &cli.command {
        // Started by the daemon as a user, with nothing of the daemon's configuration or store.
        Command::NotifyAgent { bus } => return notify_agent::run(bus),
        Command::Daemon => return fail(&daemon::exec_daemon()),
        _ => {}
    }
    let ctx = match context(&cli) {
        Ok(ctx) => ctx,
        Err(err) => return fail(&err),
    };
    // The fleet's database checks its own roles: nothing about it goes through the daemon.
    let forwardable =
        !matches!(cli.command, Command::Fleet(_) | Command::FleetLink) && cli.fleet.is_none();
    let is_ignore = matches!(cli.command, Command::Ignore);
    // The daemon opens no path a client names: `apply` sends the file's content, read here.
    let sent_file = match &cli.command {
        Command::Apply { file, .. } => Some(file.clone()),
        _ => None,
    };
    let result = match cli.command {
        Command::FleetLink => daemon::fleet::run_link(&ctx),
        command => execute(&ctx, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io { cause, .. }) if cause.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err @ Error::PermissionDenied { .. })
            if forwardable && (is_ignore || !nix::unistd::geteuid().is_root()) =>
        {
            through_daemon(&ctx, err, sent_file.as_deref())
        }
        Err(err) => fail(&err),
    }
}

/// `forcelogoutd`, as `forcelogoutctl daemon` starts it (with the same arguments).
pub fn main_daemon() -> ExitCode {
    let args = match utf8_args() {
        Ok(args) => args,
        Err(err) => return fail(&err),
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    if !matches!(cli.command, Command::Daemon) || cli.fleet.is_some() {
        return fail(&Error::invalid(
            "command",
            "forcelogoutd runs the daemon only (forcelogoutctl daemon starts it)",
        ));
    }
    match context(&cli).and_then(|ctx| daemon::run(&ctx)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// The store, configuration and caller a command runs with.
fn context(cli: &Cli) -> Result<Context, Error> {
    let config = Config::load(&Config::default_path())?;
    let mut ctx = Context::new(
        forcelogout_core::store::resolve_path(cli.db.as_deref()),
        cli.json,
        config,
        real_user_name(),
    );
    ctx.fleet = cli.fleet.clone();
    Ok(ctx)
}

/// Runs one command in `ctx` for the terminal: the central database's with `--fleet`.
fn execute(ctx: &Context, command: Command) -> Result<(), Error> {
    if ctx.fleet.is_some() {
        return commands::fleet::run_central(ctx, command);
    }
    if let Command::Fleet(command) = command {
        return commands::fleet_admin::run(ctx, command);
    }
    execute_local(ctx, command)
}

/// Runs one command on this host's store: for the terminal, or for a daemon request (which
/// never names the fleet).
fn execute_local(ctx: &Context, command: Command) -> Result<(), Error> {
    commands::fleet::refuse_fleet_flags(&command)?;
    match command {
        Command::Schedule(command) => commands::schedule::run(ctx, command),
        Command::Next(args) => commands::next::run(ctx, args),
        Command::Logout(args) => commands::logout::run(ctx, args),
        Command::Sessions => commands::sessions::run(ctx),
        Command::Ignore => Err(Error::PermissionDenied {
            context: "ignoring a warning goes through the forcelogout daemon".into(),
        }),
        Command::Events(args) => commands::events::run(ctx, args),
        Command::Prune {
            older_than,
            dry_run,
        } => commands::events::prune(ctx, &older_than, dry_run),
        Command::Apply {
            file,
            dry_run,
            delete_all,
        } => commands::apply::apply(ctx, &file, dry_run, delete_all),
        Command::Unlock(args) => commands::unlock::run(ctx, args),
        Command::Export => commands::apply::export(ctx),
        // Each is dispatched before this (`main_ctl`, `execute`) or refused by the socket.
        Command::Daemon => Err(Error::invalid("daemon", "not through the daemon's socket")),
        Command::NotifyAgent { .. } => {
            Err(Error::invalid("notify-agent", "started by the daemon only"))
        }
        Command::FleetLink => Err(Error::invalid("fleet-link", "started by the daemon only")),
        Command::Fleet(_) => Err(Error::invalid("fleet", "not through the daemon's socket")),
    }
}

/// Asks the daemon to run this command line as the caller, with the content of `file` (read
/// as the caller); without a daemon, the original refusal stands.
fn through_daemon(ctx: &Context, refusal: Error, file: Option<&std::path::Path>) -> ExitCode {
    let read = |f| commands::apply::read(f, Some(daemon::socket::MAX_INPUT));
    let input = match file.map(read).transpose() {
        Ok(input) => input,
        Err(err) => return fail(&err),
    };
    let request = daemon::socket::Request {
        argv: without_db(std::env::args().skip(1).collect()),
        input,
    };
    match daemon::socket::call(&ctx.config.socket, &request) {
        Ok(reply) => {
            print!("{}", reply.stdout);
            eprint!("{}", reply.stderr);
            ExitCode::from(u8::try_from(reply.code).unwrap_or(1))
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            if matches!(refusal, Error::PermissionDenied { ref context } if context.starts_with("ignoring"))
            {
                eprintln!(
                    "forcelogoutctl: the forcelogout daemon is not running ({})",
                    ctx.config.socket.display()
                );
                return ExitCode::from(1);
            }
            fail(&refusal)
        }
        Err(e) => fail(&Error::io(
            format!("asking the daemon at {}", ctx.config.socket.display()),
            e,
        )),
    }
}

/// The daemon serves its own store: a `--db` of the caller's does not travel.
fn without_db(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg == "--db" {
            skip = true;
        } else if !arg.starts_with("--db=") {
            out.push(arg);
        }
    }
    out
}

fn fail(err: &Error) -> ExitCode {
    eprintln!(
        "forcelogoutctl: {}",
        forcelogout_core::text::sanitize_line(&err.to_string())
    );
    ExitCode::from(err.exit_code() as u8)
}

/// The arguments as text; one that is not UTF-8 is refused by its flag (or its position),
/// since every value is text the store, the terminals and the daemon's socket carry.
fn utf8_args() -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut previous: Option<String> = None;
    for (position, arg) in std::env::args_os().enumerate() {
        match arg.into_string() {
            Ok(text) => {
                previous = Some(text.clone());
                out.push(text);
            }
            Err(_) => {
                let field = match previous.as_deref() {
                    Some(flag)
                        if flag.len() > 1 && flag.starts_with('-') && !flag.contains('=') =>
                    {
                        flag.to_string()
                    }
                    _ => format!("argument {position}"),
                };
                return Err(Error::invalid(
                    field,
                    "not UTF-8 text; give the value in UTF-8",
                ));
            }
        }
    }
    Ok(out)
}

/// Help and version print as clap renders them; a usage error becomes one line naming the
/// argument, and exit 2.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Kind;
    if matches!(err.kind(), Kind::DisplayHelp | Kind::DisplayVersion) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("forcelogoutctl: {}", usage_error_line(&err));
    ExitCode::from(2)
}

/// A usage error as one line naming the argument, as the terminal and the daemon's socket
/// both print it.
pub(crate) fn usage_error_line(err: &clap::Error) -> String {
    let line = usage_line(err).unwrap_or_else(|| {
        let rendered = err.render().to_string();
        let first = rendered.lines().next().unwrap_or("invalid arguments");
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    });
    format!(
        "{} (see --help)",
        forcelogout_core::text::sanitize_line(&line)
    )
}

/// clap's error as `ARGUMENT: what`, from its context (its rendering spans several lines).
fn usage_line(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind as Kind};
    let text = |kind| match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => Some(v.join(", ")),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        _ => None,
    };
    // `--group <G>` -> `--group`; `<GROUP>` -> `GROUP`.
    let name = |arg: String| {
        arg.split(", ")
            .map(|a| {
                let a = a.split_whitespace().next().unwrap_or(a);
                a.trim_matches(|c| c == '<' || c == '>' || c == '.')
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let command = command_of(err);
    let arg = text(ContextKind::InvalidArg).map(name);
    let suggestion = text(ContextKind::SuggestedArg)
        .or_else(|| text(ContextKind::SuggestedSubcommand))
        .map(|s| format!("; did you mean {s}?"))
        .unwrap_or_default();
    Some(match err.kind() {
        Kind::MissingRequiredArgument => format!("{command}: {} is required", arg?),
        Kind::UnknownArgument => {
            format!("{command}: unexpected argument {:?}{suggestion}", arg?)
        }
        Kind::InvalidSubcommand => format!(
            "unknown command {:?}{suggestion}",
            text(ContextKind::InvalidSubcommand)?
        ),
        Kind::ArgumentConflict => format!(
            "{}: cannot be used with {}",
            arg?,
            text(ContextKind::PriorArg).map(name)?
        ),
        Kind::InvalidValue | Kind::ValueValidation | Kind::NoEquals => {
            let value = text(ContextKind::InvalidValue).unwrap_or_default();
            if value.is_empty() {
                format!("{}: a value is required", arg?)
            } else {
                format!("{}: {value:?} is not a valid value", arg?)
            }
        }
        Kind::TooManyValues | Kind::WrongNumberOfValues | Kind::TooFewValues => {
            format!("{}: wrong number of values", arg?)
        }
        Kind::MissingSubcommand | Kind::DisplayHelpOnMissingArgumentOrSubcommand => {
            if command == "forcelogoutctl" {
                "COMMAND is required".to_string()
            } else {
                format!("{command}: COMMAND is required")
            }
        }
        _ => return None,
    })
}

/// The (sub)command an error is about, from clap's usage line (`forcelogoutctl schedule add`
/// -> `schedule add`).
fn command_of(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let usage = match err.get(ContextKind::Usage) {
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        // A help shown for a missing subcommand carries its usage in its text only.
        _ => err
            .render()
            .to_string()
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default()
            .to_string(),
    };
    let words: Vec<&str> = usage
        .split_whitespace()
        .skip_while(|w| *w != "forcelogoutctl" && *w != "forcelogoutd")
        .skip(1)
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    if words.is_empty() {
        "forcelogoutctl".to_string()
    } else {
        words.join(" ")
    }
}
