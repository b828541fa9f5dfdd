//! Who may ask what through the control socket (mode 0666: every local user reaches it). The
//! whole boundary is the table `RULES`, one row per command line the socket can be sent, in the
//! spirit of OpenSSH's `mon_dispatch_proto20[]`: a command without a row is never run.
//!
//! The caller is the kernel's SO_PEERCRED uid, never anything in the request; an administrator
//! is root or a member of `admin_group` (read through NSS: when NSS fails the daemon refuses,
//! see `control`). A request's `--db` is ignored: the daemon serves its own store. `apply`'s file
//! is the content the client read as itself (`socket::Request::input`), never a path.

use crate::cli::{Cli, Command, FleetCommand, ScheduleCommand};

/// Who may ask for a command through the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Any local user; one who is not an administrator is shown only what concerns them.
    Anyone,
    /// Any local user, acting on themselves only (the uid of the connection).
    CallerOnly,
    /// root and the members of `admin_group`.
    Admin,
    /// Nobody: run directly, or started by the daemon itself.
    Never,
}

pub struct Rule {
    /// The command line's words that decide (see `row_name`).
    pub command: &'static str,
    pub who: Who,
    pub why: &'static str,
}

use Who::{Admin, Anyone, CallerOnly, Never};

#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { command: "sessions",        who: Anyone,     why: "a user sees their own sessions" },
    Rule { command: "next",            who: Anyone,     why: "a user sees the logouts that target them" },
    Rule { command: "schedule list",   who: Anyone,     why: "a user sees the schedules that target them" },
    Rule { command: "schedule show",   who: Anyone,     why: "a user sees a schedule that targets them" },
    Rule { command: "ignore",          who: CallerOnly, why: "a warned user keeps their own sessions" },
    Rule { command: "schedule add",    who: Admin,      why: "decides who is logged out" },
    Rule { command: "schedule update", who: Admin,      why: "decides who is logged out" },
    Rule { command: "schedule delete", who: Admin,      why: "decides who is logged out" },
    Rule { command: "logout",          who: Admin,      why: "logs users out" },
    Rule { command: "unlock",          who: Admin,      why: "admits users a logout locked out" },
    Rule { command: "apply",           who: Admin,      why: "replaces every schedule (with the content the client sent)" },
    Rule { command: "export",          who: Admin,      why: "shows every schedule" },
    Rule { command: "events",          who: Admin,      why: "the log names every user's logins" },
    Rule { command: "prune",           who: Admin,      why: "deletes events" },
    Rule { command: "events --follow", who: Never,      why: "streams for as long as it runs: root and the reader group read the store directly" },
    Rule { command: "daemon",          who: Never,      why: "systemd starts the daemon" },
    Rule { command: "notify-agent",    who: Never,      why: "started by the daemon as each desktop user" },
    Rule { command: "fleet-link",      who: Never,      why: "started by the daemon" },
    Rule { command: "fleet init",      who: Never,      why: "the fleet's database checks its own roles" },
    Rule { command: "fleet hosts",     who: Never,      why: "the fleet's database checks its own roles" },
    Rule { command: "fleet status",    who: Never,      why: "the fleet's database checks its own roles" },
    Rule { command: "fleet enrol",     who: Never,      why: "the fleet's database checks its own roles" },
    Rule { command: "fleet retire",    who: Never,      why: "the fleet's database checks its own roles" },
    Rule { command: "--fleet",         who: Never,      why: "the fleet's database checks its own roles" },
];

/// What decides a command line: `--fleet` whatever the command, `events --follow`, else its
/// subcommand's words.
pub fn row_name(cli: &Cli) -> &'static str {
    if cli.fleet.is_some() {
        return "--fleet";
    }
    match &cli.command {
        Command::Sessions => "sessions",
        Command::Next(_) => "next",
        Command::Schedule(ScheduleCommand::List { .. }) => "schedule list",
        Command::Schedule(ScheduleCommand::Show { .. }) => "schedule show",
        Command::Ignore => "ignore",
        Command::Schedule(ScheduleCommand::Add(_)) => "schedule add",
        Command::Schedule(ScheduleCommand::Update { .. }) => "schedule update",
        Command::Schedule(ScheduleCommand::Delete { .. }) => "schedule delete",
        Command::Logout(_) => "logout",
        Command::Unlock(_) => "unlock",
        Command::Apply { .. } => "apply",
        Command::Export => "export",
        Command::Events(args) if args.follow => "events --follow",
        Command::Events(_) => "events",
        Command::Prune { .. } => "prune",
        Command::Daemon => "daemon",
        Command::NotifyAgent { .. } => "notify-agent",
        Command::FleetLink => "fleet-link",
        Command::Fleet(FleetCommand::Init) => "fleet init",
        Command::Fleet(FleetCommand::Hosts) => "fleet hosts",
        Command::Fleet(FleetCommand::Status) => "fleet status",
        Command::Fleet(FleetCommand::Enrol(_)) => "fleet enrol",
        Command::Fleet(FleetCommand::Retire { .. }) => "fleet retire",
    }
}

/// Refused when a command line has no row: the table is the whole of what the socket runs.
const NO_ROW: Rule = Rule {
    command: "",
    who: Never,
    why: "not in the daemon's table of commands",
};

/// The rule for a command line.
pub fn rule(cli: &Cli) -> &'static Rule {
    let name = row_name(cli);
    RULES.iter().find(|r| r.command == name).unwrap_or(&NO_ROW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn who(args: &[&str]) -> Who {
        let cli =
            Cli::try_parse_from(std::iter::once("forcelogoutctl").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        rule(&cli).who
    }

    /// Every subcommand clap knows, as the words that name it ("schedule add").
    fn subcommands(command: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in command.get_subcommands() {
            let name = format!("{prefix}{}", sub.get_name());
            if sub.has_subcommands() {
                subcommands(sub, &format!("{name} "), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_command_has_exactly_one_row() {
        let mut names = Vec::new();
        subcommands(&Cli::command(), "", &mut names);
        names.extend(["events --follow".to_string(), "--fleet".to_string()]);
        for name in &names {
            let rows = RULES.iter().filter(|r| r.command == name).count();
            assert_eq!(rows, 1, "{name}: {rows} rows");
        }
        // And no row names a command that does not exist.
        for row in RULES {
            assert!(names.iter().any(|n| n == row.command), "{}", row.command);
        }
    }

    #[test]
    fn a_plain_user_may_list_and_ignore_but_not_change() {
        assert_eq!(who(&["sessions"]), Anyone);
        assert_eq!(who(&["next"]), Anyone);
        assert_eq!(who(&["schedule", "list", "--history"]), Anyone);
        assert_eq!(who(&["ignore"]), CallerOnly);
        assert_eq!(who(&["logout", "news", "--kick"]), Admin);
        assert_eq!(who(&["logout", "news", "--dry-run"]), Admin);
        assert_eq!(who(&["schedule", "delete", "abcd"]), Admin);
        assert_eq!(who(&["apply", "-f", "/dev/zero", "--dry-run"]), Admin);
        assert_eq!(who(&["events"]), Admin);
        assert_eq!(who(&["unlock", "news"]), Admin);
        assert_eq!(who(&["unlock", "news", "--dry-run"]), Admin);
        assert_eq!(who(&["export"]), Admin);
    }

    #[test]
    fn what_runs_elsewhere_never_goes_through_the_socket() {
        assert_eq!(who(&["daemon"]), Never);
        assert_eq!(who(&["notify-agent", "--bus", "unix:path=/x"]), Never);
        assert_eq!(who(&["fleet-link"]), Never);
        assert_eq!(who(&["fleet", "status"]), Never);
        assert_eq!(who(&["events", "--follow"]), Never);
        // --fleet takes any command elsewhere, even one anybody may run here.
        assert_eq!(who(&["--fleet", "sessions"]), Never);
        assert_eq!(who(&["--fleet=postgres://h/db", "next"]), Never);
    }

    #[test]
    fn every_row_says_why() {
        assert!(RULES.iter().all(|r| !r.why.is_empty()));
    }
}
