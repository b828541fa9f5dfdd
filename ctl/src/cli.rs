//! The command-line definition. It is the single source of `--help`, the man pages and the
//! shell completions, so every flag's text here is user documentation.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "forcelogoutctl",
    version,
    about = "Schedule forced logouts of users and groups, and read the logout event log",
    long_about = "Schedule forced logouts of users and groups, and read the logout event log.\n\n\
        A schedule logs a user or a group out once, daily or weekly at HH:MM in an IANA time \
        zone, with a countdown warning first. A kick disconnects the sessions when the \
        countdown ends; a warning lets each user choose to keep working.",
    after_help = "Exit status: 0 success, 1 runtime failure, 2 invalid input, 4 permission denied.\n\
        Store: --db, else $FORCELOGOUT_DB, else /var/lib/forcelogout/forcelogout.db.\n\
        Configuration: $FORCELOGOUT_CONFIG, else /etc/forcelogout/forcelogout.toml."
)]
pub struct Cli {
    /// The store to use (default: $FORCELOGOUT_DB, else /var/lib/forcelogout/forcelogout.db)
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Print JSON for programs instead of tables for people
    #[arg(long, global = true)]
    pub json: bool,

    /// Work on the fleet's central PostgreSQL instead of this host's store: `--fleet URL` or
    /// `--fleet=URL`, a libpq connection string or URI without a password (its secret in a 0600
    /// passfile=); `--fleet` alone: [fleet] url of the configuration
    #[arg(long, global = true, value_name = "URL", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub fleet: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, change, delete and list logout schedules
    #[command(subcommand)]
    Schedule(ScheduleCommand),

    /// Show upcoming logouts, in UTC and in each schedule's zone
    Next(NextArgs),

    /// Log a user or a group out now (after the immediate warning, or --in)
    Logout(LogoutArgs),

    /// Lift the lockout of a user or a group now: their logins are admitted again
    Unlock(UnlockArgs),

    /// Keep my sessions: ignore the logout warning addressed to me
    Ignore,

    /// List the live login sessions
    Sessions,

    /// Run the enforcement service (started by systemd)
    Daemon,

    /// Read the event log (logins, logouts, warnings, ignores, removals); --json: JSON lines
    Events(EventsArgs),

    /// Delete events older than DAYS days (by their Date), in small transactions
    Prune {
        /// Keep the events of the last DAYS days
        #[arg(long, value_name = "DAYS", allow_hyphen_values = true)]
        older_than: String,
        /// Say how many events would be deleted, and delete nothing
        #[arg(long)]
        dry_run: bool,
    },

    /// Make the current schedules equal to a file (TOML or JSON); applying it again changes nothing
    Apply {
        /// The file, as `export` writes it ([[schedule]] tables, or {"schedule": [...]})
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Show what would change, and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Allow a file that deletes every current schedule, or an empty file
        #[arg(long)]
        delete_all: bool,
    },

    /// Print the current schedules as a file for `apply` (TOML; JSON with --json)
    Export,

    /// The daemon's desktop notification agent (started by the daemon as each user)
    #[command(hide = true)]
    NotifyAgent {
        /// The user's session bus (unix:path=/run/user/UID/bus)
        #[arg(long, value_name = "ADDRESS")]
        bus: String,
    },

    /// The daemon's link to the fleet's central database (started by the daemon)
    #[command(hide = true)]
    FleetLink,

    /// The fleet's central database: set it up, list its hosts, this host's link
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create or upgrade the central schema and the roles forcelogout_admin and
    /// forcelogout_host (as the database's owner; running it again changes nothing)
    Init,
    /// Each host: its labels, last contact, and how far behind it is
    Hosts,
    /// This host's link to the fleet: connected or not, since when, what waits to upload
    Status,
    /// Give a host its identity in the fleet: a new secret (its SHA-256 is stored centrally)
    /// and its labels. Prints the host's [fleet] lines; the secret goes to --secret-file, or
    /// is printed after the lines. An enrolled host is refused unless --renew
    Enrol(EnrolArgs),
    /// Take a host's identity away: its secret stops working at once (its events stay)
    Retire {
        /// The host's name in the fleet ([fleet] host of its configuration)
        #[arg(value_name = "HOST")]
        host: String,
    },
}

#[derive(Debug, Args)]
pub struct EnrolArgs {
    /// The host's name in the fleet ([fleet] host of its configuration; default there: its
    /// host name)
    #[arg(value_name = "HOST")]
    pub host: String,

    /// The host's labels, which schedules select with --hosts @LABEL (comma-separated; with
    /// --renew and without --labels the host keeps its labels)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub labels: Option<Vec<String>>,

    /// Write the secret to this new file (mode 0600; an existing file is never replaced),
    /// and name it as the host's secret_file; copy it to the host at that path
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,

    /// Give an enrolled host a new secret (the old one stops working at once) and, with
    /// --labels, new labels
    #[arg(long)]
    pub renew: bool,

    /// The URL hosts connect with, for the printed [fleet] lines (default: the URL this
    /// command uses, with user=forcelogout_link and without its passfile)
    #[arg(long, value_name = "URL")]
    pub host_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this day or later (YYYY-MM-DD, the host's calendar)
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub since: Option<String>,

    /// Only events of this user
    #[arg(long, value_name = "G")]
    pub group: Option<String>,

    /// Only this kind: online, offline, removed, ignored, warned; or a schedule change:
    /// created, updated, deleted (also create, update, delete)
    #[arg(long, value_name = "E")]
    pub event: Option<String>,

    /// Only events after this ReplayId (resume a subscriber where it stopped)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub after_replay_id: Option<String>,

    /// Keep printing new events as they are committed
    #[arg(long)]
    pub follow: bool,

    /// With --fleet: only events of this host
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Who is logged out: a user name, a group name, or '*' for every user
    #[arg(value_name = "GROUP")]
    pub group: String,

    #[command(flatten)]
    pub action: ActionFlags,

    /// Countdown length, e.g. 30s, 5m (default: immediate_warning, 60s)
    #[arg(long = "in", value_name = "DURATION", allow_hyphen_values = true)]
    pub delay: Option<String>,

    /// Refuse the targets' logins for this long after the logout, e.g. 30m, 1h (at most 1d);
    /// a kick only
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub lockout: Option<String>,

    /// Show who would be logged out, and when, without doing anything
    #[arg(long)]
    pub dry_run: bool,

    /// With --fleet: which hosts: '*' (default), a host name, or @label
    #[arg(long, value_name = "SELECTOR")]
    pub hosts: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Whose lockout is lifted: a user name (every lockout that refuses them) or the user or
    /// group name a `logout` named
    #[arg(value_name = "USER|GROUP")]
    pub name: String,

    /// Show which lockouts would be lifted, without lifting them
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule and print its Id
    #[command(group(ArgGroup::new("when").args(["once", "daily", "weekly"]).multiple(false)))]
    Add(ScheduleFlags),

    /// Change some fields of a schedule; the others keep their values
    #[command(group(ArgGroup::new("when").args(["once", "daily", "weekly"]).multiple(false)))]
    Update {
        /// The schedule's Id, or its first 4 or more characters
        id: String,
        #[command(flatten)]
        flags: ScheduleFlags,
    },

    /// Delete a schedule (its history stays in the log)
    Delete {
        /// The schedule's Id, or its first 4 or more characters
        id: String,
    },

    /// List the current schedules
    List {
        /// Every version of every schedule: created, updated and deleted rows
        #[arg(long)]
        history: bool,
        /// Only schedules that name this user or group
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// Also the immediate logouts that are over (taken effect, lockout ended)
        #[arg(long)]
        all: bool,
    },

    /// Show one schedule, its versions and its next logouts
    Show {
        /// The schedule's Id, or its first 4 or more characters
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ScheduleFlags {
    /// Who is logged out: a user name, a group name, or '*' for every user
    #[arg(long, value_name = "G")]
    pub group: Option<String>,

    /// Once, on this date (YYYY-MM-DD)
    #[arg(long, value_name = "YYYY-MM-DD", allow_hyphen_values = true)]
    pub once: Option<String>,

    /// Every day
    #[arg(long)]
    pub daily: bool,

    /// On these weekdays: Mon-Fri, Mon,Wed,Fri, weekdays, weekend, all, or a number 1..127
    #[arg(long, value_name = "DAYS")]
    pub weekly: Option<String>,

    /// Time of the logout, 24-hour HH:MM, in the schedule's zone
    #[arg(long, value_name = "HH:MM", allow_hyphen_values = true)]
    pub at: Option<String>,

    /// IANA time zone of --at, e.g. Europe/Berlin, as the host's tzdata has it (default: the host's zone)
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,

    #[command(flatten)]
    pub action: ActionFlags,

    /// How long after the logout new logins of the targets are refused: minutes (0-1440) or a
    /// duration such as 30m, 1h
    #[arg(long, value_name = "MINUTES", allow_hyphen_values = true)]
    pub lockout: Option<String>,

    /// Show who the schedule would log out, and when, without writing anything
    #[arg(long)]
    pub dry_run: bool,

    /// With --fleet: which hosts: '*' (default on add), a host name, or @label
    #[arg(long, value_name = "SELECTOR")]
    pub hosts: Option<String>,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// Only this schedule (its Id or first 4 or more characters)
    pub id: Option<String>,

    /// How many logouts to show (1-1000)
    #[arg(
        long,
        value_name = "N",
        default_value = "10",
        allow_hyphen_values = true
    )]
    pub count: String,

    /// Start after this instant (RFC 3339, e.g. 2026-12-24T12:00:00Z) instead of now
    #[arg(long, value_name = "RFC3339")]
    pub after: Option<String>,
}

/// What happens at the end of the countdown, and what the users are told.
#[derive(Debug, Args)]
pub struct ActionFlags {
    /// Disconnect the sessions when the countdown ends (the default)
    #[arg(long, conflicts_with = "warn")]
    pub kick: bool,

    /// Only warn: each user may keep working with `forcelogoutctl ignore`
    #[arg(long)]
    pub warn: bool,

    /// Message shown to the users with the countdown and at their next login
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
}

impl ActionFlags {
    /// `Some(true)` for --kick, `Some(false)` for --warn, `None` when neither was given.
    pub fn kick(&self) -> Option<bool> {
        match (self.kick, self.warn) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}
