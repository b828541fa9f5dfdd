//! `forcelogoutctl schedule add|update|delete|list|show`.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::host_timezone;
use forcelogout_core::policy::immediate_is_over;
use forcelogout_core::schedule::{RecurrenceInput, Schedule, ScheduleInput};
use forcelogout_core::store::ScheduleRecord;
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::cli::{ScheduleCommand, ScheduleFlags};
use crate::output::{abbreviate, Table};

pub fn run(ctx: &Context, command: ScheduleCommand) -> Result<(), Error> {
    match command {
        ScheduleCommand::Add(flags) => add(ctx, flags),
        ScheduleCommand::Update { id, flags } => update(ctx, &id, flags),
        ScheduleCommand::Delete { id } => delete(ctx, &id),
        ScheduleCommand::List {
            history,
            group,
            all,
        } => list(ctx, history, group.as_deref(), all),
        ScheduleCommand::Show { id } => show(ctx, &id),
    }
}

pub(crate) fn to_input(flags: ScheduleFlags) -> ScheduleInput {
    // --dry-run is not a field of the schedule: the caller reads it before converting.
    let recurrence = match (flags.once, flags.daily, flags.weekly) {
        (Some(date), _, _) => Some(RecurrenceInput::Once(date)),
        (_, true, _) => Some(RecurrenceInput::Daily),
        (_, _, Some(days)) => Some(RecurrenceInput::Weekly(days)),
        _ => None,
    };
    ScheduleInput {
        group: flags.group,
        recurrence,
        at: flags.at,
        timezone: flags.tz,
        kick: flags.action.kick(),
        message: flags.action.message,
        lockout: flags.lockout,
    }
}

fn add(ctx: &Context, flags: ScheduleFlags) -> Result<(), Error> {
    let now = ctx.now();
    let dry_run = flags.dry_run;
    let schedule = to_input(flags).into_new(host_timezone())?;
    schedule.check_not_past(now)?;
    if let Some(warning) = forcelogout_core::schedule::timezone_warning(schedule.timezone) {
        ctx.warn(&warning);
    }
    if dry_run {
        return super::preview::show(ctx, &schedule, schedule.next_after(now));
    }
    let mut store = ctx.open_for_writing()?;
    let record = store.add_schedule(&schedule, &ctx.actor, now)?;
    warn_if_unknown(ctx, &schedule.group);
    if ctx.json {
        ctx.print_json(&record)
    } else {
        ctx.print(&format!("{}\n", record.id))
    }
}

fn update(ctx: &Context, id: &str, flags: ScheduleFlags) -> Result<(), Error> {
    let dry_run = flags.dry_run;
    let input = to_input(flags);
    if input.is_empty() {
        return Err(Error::invalid(
            "update",
            "nothing to change; give at least one of --group, --once/--daily/--weekly, --at, --tz, --kick/--warn, --message, --lockout",
        ));
    }
    let now = ctx.now();
    if dry_run {
        let current = ctx.open_for_reading()?.current_schedule(id)?;
        refuse_immediate(&current.id, &current.schedule)?;
        let next = input.apply_to(&current.schedule)?;
        next.check_not_past(now)?;
        return super::preview::show(ctx, &next, next.next_after(now));
    }
    let mut store = ctx.open_for_writing()?;
    let full_id = store.current_schedule(id)?.id;
    let record = store.update_schedule(&full_id, &ctx.actor, now, |current| {
        refuse_immediate(&full_id, current)?;
        let next = input.apply_to(current)?;
        next.check_not_past(now)?;
        Ok(next)
    })?;
    warn_if_unknown(ctx, &record.schedule.group);
    if ctx.json {
        ctx.print_json(&record)
    } else {
        ctx.print(&format!("updated {}\n", record.id))
    }
}

/// An immediate logout is an order already given, not a schedule: updating it could turn it
/// into a daily kick or move it into the past. Checked inside the write transaction too.
fn refuse_immediate(id: &str, schedule: &Schedule) -> Result<(), Error> {
    if schedule.immediate {
        return Err(Error::invalid(
            "id",
            format!(
                "schedule {id} is an immediate logout; it cannot be updated: \
                 issue a new logout or unlock"
            ),
        ));
    }
    Ok(())
}

fn delete(ctx: &Context, id: &str) -> Result<(), Error> {
    let mut store = ctx.open_for_writing()?;
    let record = store.delete_schedule(id, &ctx.actor, ctx.now())?;
    if ctx.json {
        ctx.print_json(&record)
    } else {
        ctx.print(&format!("deleted {}\n", record.id))
    }
}

fn list(ctx: &Context, history: bool, group: Option<&str>, all: bool) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let now = ctx.now();
    if history {
        let mut rows = store.schedule_history(group)?;
        rows.retain(|r| ctx.may_see(r));
        if ctx.json {
            return ctx.print_json(&rows);
        }
        let mut table = Table::new(&[
            "UPDATED (UTC)",
            "ID",
            "EVENT",
            "ACTOR",
            "GROUP",
            "WHEN",
            "ACTION",
            "LOCKOUT",
            "MESSAGE",
        ]);
        for r in &rows {
            table.push(vec![
                short_time(&r.update_time),
                short_id(&r.id),
                r.event.as_str().to_string(),
                r.actor.clone(),
                r.schedule.group.clone(),
                r.schedule.describe_when(),
                action(&r.schedule).to_string(),
                lockout(&r.schedule),
                abbreviate(&r.schedule.message, 40),
            ]);
        }
        return ctx.print(&table.render());
    }
    let mut rows = store.current_schedules(group)?;
    let warning = ctx.config.immediate_warning;
    rows.retain(|r| ctx.may_see(r) && (all || !immediate_is_over(r, warning, now)));
    if ctx.json {
        let listed: Vec<Listed> = rows.iter().map(|r| Listed::new(r, now)).collect();
        return ctx.print_json(&listed);
    }
    let mut table = Table::new(&[
        "ID",
        "GROUP",
        "WHEN",
        "ACTION",
        "LOCKOUT",
        "NEXT (UTC)",
        "MESSAGE",
    ]);
    for r in &rows {
        table.push(vec![
            short_id(&r.id),
            r.schedule.group.clone(),
            when(r),
            action(&r.schedule).to_string(),
            lockout(&r.schedule),
            next_text(r.schedule.next_after(now)),
            abbreviate(&r.schedule.message, 40),
        ]);
    }
    ctx.print(&table.render())
}

fn show(ctx: &Context, id: &str) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let record = store.current_schedule(id)?;
    if !ctx.may_see(&record) {
        return Err(Error::invalid(
            "id",
            format!("no schedule that targets you has the id {id}"),
        ));
    }
    let versions = store.versions_of(&record.id)?;
    let now = ctx.now();
    let upcoming = forcelogout_core::firing::upcoming(
        record.schedule.recurrence,
        record.schedule.time,
        record.schedule.timezone,
        now,
        3,
    );
    if ctx.json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            listed: Listed<'a>,
            versions: &'a [ScheduleRecord],
            upcoming: Vec<String>,
        }
        return ctx.print_json(&Shown {
            listed: Listed::new(&record, now),
            versions: &versions,
            upcoming: upcoming
                .iter()
                .map(|t| forcelogout_core::clock::format_timestamp(*t))
                .collect(),
        });
    }
    let s = &record.schedule;
    let mut text = String::new();
    let mut field = |name: &str, value: String| {
        text.push_str(&format!(
            "{name:<10} {}\n",
            forcelogout_core::text::sanitize_line(&value)
        ));
    };
    field("Id:", record.id.clone());
    field("Group:", s.group.clone());
    field("When:", s.describe_when());
    field("Action:", action(s).to_string());
    field("Lockout:", lockout(s));
    field(
        "Message:",
        if s.message.is_empty() {
            "(none)".into()
        } else {
            s.message.clone()
        },
    );
    field(
        "Updated:",
        format!("{} by {}", record.update_time, record.actor),
    );
    field("Versions:", versions.len().to_string());
    if upcoming.is_empty() {
        field("Next:", "none (a Once schedule in the past)".into());
    }
    for (i, t) in upcoming.iter().enumerate() {
        let label = if i == 0 { "Next:" } else { "" };
        field(
            label,
            format!(
                "{}  ({})",
                t.format("%Y-%m-%d %H:%M UTC"),
                t.with_timezone(&s.timezone).format("%Y-%m-%d %H:%M %Z")
            ),
        );
    }
    ctx.print(&text)
}

/// The current schedule with its next firing, for `list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    record: &'a ScheduleRecord,
    #[serde(rename = "Next")]
    next: Option<String>,
}

impl<'a> Listed<'a> {
    fn new(record: &'a ScheduleRecord, now: DateTime<Utc>) -> Listed<'a> {
        Listed {
            record,
            next: record
                .schedule
                .next_after(now)
                .map(forcelogout_core::clock::format_timestamp),
        }
    }
}

/// The WHEN column: an immediate logout is marked as one, with the instant it takes effect.
fn when(r: &ScheduleRecord) -> String {
    if !r.schedule.immediate {
        return r.schedule.describe_when();
    }
    let due = r.due_at.as_deref().unwrap_or(&r.update_time);
    format!("Immediate (logout) {}", short_time(due))
}

fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

fn short_time(stamp: &str) -> String {
    stamp.get(..16).unwrap_or(stamp).replace('T', " ")
}

fn action(s: &Schedule) -> &'static str {
    if s.kick {
        "kick"
    } else {
        "warn"
    }
}

fn lockout(s: &Schedule) -> String {
    if s.lockout_minutes == 0 {
        "-".into()
    } else {
        format!("{}m", s.lockout_minutes)
    }
}

fn next_text(next: Option<DateTime<Utc>>) -> String {
    next.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A schedule for a name NSS does not know yet is allowed (the group may come later) but
/// is probably a typo: say so on stderr.
pub(crate) fn warn_if_unknown(ctx: &Context, group: &str) {
    if group != "*" && !forcelogout_core::users::name_is_known(group) {
        ctx.warn(&format!(
            "no user or group named {group:?} is known on this host yet"
        ));
    }
}
