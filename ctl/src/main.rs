//! `forcelogoutctl`: the administration CLI. Glue over `forcelogout_core`: parse, validate,
//! call the core, print. Every error is printed once as "forcelogoutctl: field: reason" and
//! decides the exit code (0 ok, 1 runtime, 2 invalid input, 4 permission denied).

mod cli;
mod commands;
mod output;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;
use forcelogout_core::Error;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io { cause, .. }) if cause.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "forcelogoutctl: {}",
                forcelogout_core::text::sanitize_line(&err.to_string())
            );
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let ctx = commands::Context::new(cli.db.as_deref(), cli.json);
    match cli.command {
        Command::Schedule(command) => commands::schedule::run(&ctx, command),
        Command::Next(args) => commands::next::run(&ctx, args),
    }
}

/// Help and version print as clap renders them; a usage error becomes one line and exit 2.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Kind;
    if matches!(
        err.kind(),
        Kind::DisplayHelp | Kind::DisplayVersion | Kind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.kind() == Kind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("forcelogoutctl: {first} (see --help)");
    ExitCode::from(2)
}
