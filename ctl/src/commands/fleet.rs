//! `--fleet [URL]` on `schedule …`, `next`, `logout` and `events`: the central database
//! instead of this host's store (SPEC §9). `fleet …` itself is in `fleet_admin`.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::{format_timestamp, host_timezone};
use forcelogout_core::firing::upcoming;
use forcelogout_core::fleet::validate_selector;
use forcelogout_core::policy::{local_time_label, lockout_end};
use forcelogout_core::schedule::parse_date;
use forcelogout_core::store::fleet::{CentralEventFilter, CentralSchedule, FleetDb, FleetUrl};
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::cli::{Command, EventsArgs, LogoutArgs, NextArgs, ScheduleCommand};
use crate::output::{abbreviate, Table};

/// Most events one `events --fleet` prints.
const EVENT_LIMIT: i64 = 100_000;

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

/// A command with `--fleet`.
pub fn run_central(ctx: &Context, command: Command) -> Result<(), Error> {
    match command {
        Command::Schedule(command) => schedule(ctx, command),
        Command::Next(args) => next(ctx, args),
        Command::Logout(args) => logout(ctx, args),
        Command::Events(args) => events(ctx, args),
        Command::Fleet(command) => super::fleet_admin::run(ctx, command),
        _ => Err(Error::invalid(
            "fleet",
            "only schedule, next, logout, events and fleet work on the central database",
        )),
    }
}

fn schedule(ctx: &Context, command: ScheduleCommand) -> Result<(), Error> {
    match command {
        ScheduleCommand::Add(flags) => {
            let now = ctx.now();
            let hosts = validate_selector(flags.hosts.as_deref().unwrap_or("*"))?;
            if flags.dry_run {
                return Err(Error::invalid("dry-run", "not with --fleet"));
            }
            let schedule = super::schedule::to_input(flags).into_new(host_timezone())?;
            schedule.check_not_past(now)?;
            let written = connect(ctx)?.add_schedule(&schedule, &hosts, &ctx.actor, now, None)?;
            print_written(ctx, &written, "")
        }
        ScheduleCommand::Update { id, flags } => {
            let now = ctx.now();
            let hosts = flags.hosts.as_deref().map(validate_selector).transpose()?;
            if flags.dry_run {
                return Err(Error::invalid("dry-run", "not with --fleet"));
            }
            let input = super::schedule::to_input(flags);
            if input.is_empty() && hosts.is_none() {
                return Err(Error::invalid(
                    "update",
                    "nothing to change; give at least one of --hosts, --group, --once/--daily/--weekly, --at, --tz, --kick/--warn, --message, --lockout",
                ));
            }
            let written = connect(ctx)?.write_version(&id, false, &ctx.actor, now, |current| {
                let next = input.apply_to(&current.record.schedule)?;
                next.check_not_past(now)?;
                Ok((next, hosts.unwrap_or_else(|| current.hosts.clone())))
            })?;
            print_written(ctx, &written, "updated ")
        }
        ScheduleCommand::Delete { id } => {
            let written = connect(ctx)?.write_version(&id, true, &ctx.actor, ctx.now(), |c| {
                Ok((c.record.schedule.clone(), c.hosts.clone()))
            })?;
            print_written(ctx, &written, "deleted ")
        }
        ScheduleCommand::List { history, group, .. } => {
            let mut db = connect(ctx)?;
            let rows = if history {
                db.schedule_history(group.as_deref())?
            } else {
                db.current_schedules(group.as_deref())?
            };
            if ctx.json {
                return ctx.print_json(&rows);
            }
            let now = ctx.now();
            let mut table = Table::new(&[
                "VERSION",
                "ID",
                "EVENT",
                "HOSTS",
                "GROUP",
                "WHEN",
                "ACTION",
                "NEXT (UTC)",
                "MESSAGE",
            ]);
            for r in &rows {
                table.push(vec![
                    r.version.to_string(),
                    r.record.id.chars().take(8).collect(),
                    r.record.event.as_str().into(),
                    r.hosts.clone(),
                    r.record.schedule.group.clone(),
                    r.record.schedule.describe_when(),
                    if r.record.schedule.kick {
                        "kick"
                    } else {
                        "warn"
                    }
                    .into(),
                    r.record
                        .schedule
                        .next_after(now)
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into()),
                    abbreviate(&r.record.schedule.message, 40),
                ]);
            }
            ctx.print(&table.render())
        }
        ScheduleCommand::Show { id } => {
            let (current, versions) = connect(ctx)?.schedule(&id)?;
            if ctx.json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    current: &'a CentralSchedule,
                    versions: &'a [CentralSchedule],
                }
                return ctx.print_json(&Shown {
                    current: &current,
                    versions: &versions,
                });
            }
            let s = &current.record.schedule;
            let text = format!(
                "Id:        {}\nHosts:     {}\nGroup:     {}\nWhen:      {}\nAction:    {}\nMessage:   {}\nUpdated:   {} by {}\nVersion:   {} ({} versions)\n",
                current.record.id,
                current.hosts,
                s.group,
                s.describe_when(),
                if s.kick { "kick" } else { "warn" },
                if s.message.is_empty() { "(none)" } else { &s.message },
                current.record.update_time,
                current.record.actor,
                current.version,
                versions.len()
            );
            ctx.print(&forcelogout_core::text::sanitize_for_terminal(&text))
        }
    }
}

fn print_written(ctx: &Context, written: &CentralSchedule, verb: &str) -> Result<(), Error> {
    if ctx.json {
        ctx.print_json(written)
    } else {
        ctx.print(&format!(
            "{verb}{}\nfleet version {} for hosts {}\n",
            written.record.id, written.version, written.hosts
        ))
    }
}

fn next(ctx: &Context, args: NextArgs) -> Result<(), Error> {
    let count = super::next::parse_count(&args.count)?;
    let after = match &args.after {
        Some(text) => super::next::parse_after(text)?,
        None => ctx.now(),
    };
    let mut db = connect(ctx)?;
    let schedules = match &args.id {
        Some(id) => vec![db.schedule(id)?.0],
        None => db.current_schedules(None)?,
    };
    let mut found: Vec<(DateTime<Utc>, &CentralSchedule)> = schedules
        .iter()
        .flat_map(|r| {
            let s = &r.record.schedule;
            upcoming(s.recurrence, s.time, s.timezone, after, count)
                .into_iter()
                .map(move |t| (t, r))
        })
        .collect();
    found.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.record.id.cmp(&b.1.record.id))
    });
    found.truncate(count);
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Upcoming {
        #[serde(rename = "UTC")]
        utc: String,
        local: String,
        timezone: String,
        id: String,
        group_name: String,
        hosts: String,
        kick: bool,
    }
    let rows: Vec<Upcoming> = found
        .iter()
        .map(|(t, r)| Upcoming {
            utc: format_timestamp(*t),
            local: t
                .with_timezone(&r.record.schedule.timezone)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string(),
            timezone: r.record.schedule.timezone.name().to_string(),
            id: r.record.id.clone(),
            group_name: r.record.schedule.group.clone(),
            hosts: r.hosts.clone(),
            kick: r.record.schedule.kick,
        })
        .collect();
    if ctx.json {
        return ctx.print_json(&rows);
    }
    let mut table = Table::new(&["UTC", "LOCAL", "ZONE", "ID", "GROUP", "HOSTS", "ACTION"]);
    for row in &rows {
        table.push(vec![
            row.utc.get(..16).unwrap_or(&row.utc).replace('T', " "),
            row.local.clone(),
            row.timezone.clone(),
            row.id.chars().take(8).collect(),
            row.group_name.clone(),
            row.hosts.clone(),
            if row.kick { "kick" } else { "warn" }.to_string(),
        ]);
    }
    ctx.print(&table.render())
}

/// An immediate logout written centrally; each selected host's daemon enforces it.
fn logout(ctx: &Context, args: LogoutArgs) -> Result<(), Error> {
    let hosts = validate_selector(args.hosts.as_deref().unwrap_or("*"))?;
    if args.dry_run {
        return Err(Error::invalid("dry-run", "not with --fleet"));
    }
    let now = ctx.now();
    let zone = host_timezone();
    let (schedule, due) = super::logout::immediate_input(&args).into_logout(
        now,
        super::logout::delay(ctx, &args)?,
        zone,
    )?;
    let written = connect(ctx)?.add_schedule(&schedule, &hosts, &ctx.actor, now, Some(due))?;
    if ctx.json {
        return ctx.print_json(&written);
    }
    let mut text = format!(
        "{}\nlogout of {:?} ({}) on hosts {} at {}\n",
        written.record.id,
        schedule.group,
        if schedule.kick { "kick" } else { "warning" },
        hosts,
        local_time_label(due, zone, "%Y-%m-%d %H:%M:%S")
    );
    if let Some(until) = lockout_end(&schedule, due) {
        text.push_str(&format!(
            "logins refused until {}\n",
            local_time_label(until, zone, "%Y-%m-%d %H:%M:%S")
        ));
    }
    ctx.print(&text)
}

fn events(ctx: &Context, args: EventsArgs) -> Result<(), Error> {
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
    let filter = CentralEventFilter {
        since: args
            .since
            .as_deref()
            .map(parse_date)
            .transpose()
            .map_err(|e| match e {
                Error::Invalid { reason, .. } => Error::invalid("since", reason),
                other => other,
            })?
            .map(|d| d.to_string()),
        group: args.group,
        event: args.event,
        host: args.host,
    };
    let rows = connect(ctx)?.events(&filter, EVENT_LIMIT)?;
    if ctx.json {
        let mut text = String::new();
        for row in &rows {
            text.push_str(
                &serde_json::to_string(row)
                    .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?,
            );
            text.push('\n');
        }
        return ctx.print(&text);
    }
    let mut table = Table::new(&[
        "HOST",
        "REPLAY",
        "TIME (UTC)",
        "USER",
        "EVENT",
        "REASON",
        "K",
        "I",
        "SERVICE",
        "FROM",
    ]);
    for r in &rows {
        table.push(vec![
            r.host.clone(),
            r.replay_id.to_string(),
            r.timestamp
                .get(..19)
                .unwrap_or(&r.timestamp)
                .replace('T', " "),
            r.group_name.clone(),
            r.event.clone(),
            r.reason.clone().unwrap_or_else(|| "-".into()),
            u8::from(r.kick).to_string(),
            u8::from(r.immediate).to_string(),
            r.service.clone().unwrap_or_else(|| "-".into()),
            r.remote_host.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    ctx.print(&table.render())
}

pub(super) fn short_time(stamp: &str) -> String {
    stamp.get(..19).unwrap_or(stamp).replace('T', " ")
}
