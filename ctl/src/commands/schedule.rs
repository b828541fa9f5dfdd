//! `forcelogoutctl schedule add|update|delete|list|show`, on this host's store or (`--fleet`)
//! the central database: one code path over core's `ScheduleStore`, and one rendering whose
//! VERSION and HOSTS columns appear when the store has them.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::{format_timestamp, host_timezone};
use forcelogout_core::policy::immediate_is_over;
use forcelogout_core::schedule::{RecurrenceInput, Schedule, ScheduleInput};
use forcelogout_core::schedule_store::{Place, ScheduleVersion};
use forcelogout_core::text::sanitize_line;
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::cli::{ScheduleCommand, ScheduleFlags};
use crate::output::{abbreviate, action, firing_time, short_id, short_time, Table};

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
    // --dry-run and --hosts are not fields of the schedule: the caller reads them first.
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
    let hosts = super::fleet::hosts_selector(flags.hosts.as_deref())?;
    let schedule = to_input(flags).into_new(&host_timezone())?;
    schedule.check_not_past(now)?;
    if let Some(warning) = forcelogout_core::schedule::timezone_warning(&schedule.timezone) {
        ctx.warn(&warning);
    }
    if dry_run {
        return super::preview::show(ctx, &schedule, schedule.next_after(now));
    }
    let written = ctx
        .schedules_for_writing()?
        .add(&schedule, hosts.as_deref(), &ctx.actor, now)?;
    warn_if_unknown(ctx, &schedule.group);
    print_written(ctx, &written, "")
}

fn update(ctx: &Context, id: &str, flags: ScheduleFlags) -> Result<(), Error> {
    let dry_run = flags.dry_run;
    let hosts = super::fleet::hosts_selector(flags.hosts.as_deref())?;
    let input = to_input(flags);
    if input.is_empty() && hosts.is_none() {
        let fleet = if ctx.place() == Place::Fleet {
            "--hosts, "
        } else {
            ""
        };
        return Err(Error::invalid(
            "update",
            format!("nothing to change; give at least one of {fleet}--group, --once/--daily/--weekly, --at, --tz, --kick/--warn, --message, --lockout"),
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
    let change = Box::new(|full_id: &str, current: &Schedule| {
        refuse_immediate(full_id, current)?;
        let next = input.apply_to(current)?;
        next.check_not_past(now)?;
        Ok(next)
    });
    let written =
        ctx.schedules_for_writing()?
            .update(id, hosts.as_deref(), &ctx.actor, now, change)?;
    warn_if_unknown(ctx, &written.record.schedule.group);
    print_written(ctx, &written, "updated ")
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
    let written = ctx
        .schedules_for_writing()?
        .delete(id, &ctx.actor, ctx.now())?;
    print_written(ctx, &written, "deleted ")
}

fn print_written(ctx: &Context, written: &ScheduleVersion, verb: &str) -> Result<(), Error> {
    if ctx.json {
        ctx.print_json(written)
    } else {
        ctx.print(&written_text(written, verb))
    }
}

/// "ID" after the verb; for the central database, also the version and the hosts.
fn written_text(written: &ScheduleVersion, verb: &str) -> String {
    let mut text = format!("{verb}{}\n", written.record.id);
    if let (Some(version), Some(hosts)) = (written.version, &written.hosts) {
        text.push_str(&format!("fleet version {version} for hosts {hosts}\n"));
    }
    text
}

fn list(ctx: &Context, history: bool, group: Option<&str>, all: bool) -> Result<(), Error> {
    let mut store = ctx.schedules_for_reading()?;
    let place = store.place();
    let now = ctx.now();
    if history {
        let mut rows = store.history(group)?;
        rows.retain(|r| ctx.may_see(&r.record));
        if ctx.json {
            return ctx.print_json(&rows);
        }
        return ctx.print(&history_table(&rows, place));
    }
    let mut rows = store.current(group)?;
    let warning = ctx.config.immediate_warning;
    rows.retain(|r| ctx.may_see(&r.record) && (all || !immediate_is_over(&r.record, warning, now)));
    if ctx.json {
        let listed: Vec<Listed> = rows.iter().map(|r| Listed::new(r, now)).collect();
        return ctx.print_json(&listed);
    }
    ctx.print(&current_table(&rows, place, now))
}

/// The columns only the central database has, where they go: VERSION first, HOSTS before
/// GROUP.
fn fleet_cells(place: Place, r: &ScheduleVersion) -> (Vec<String>, Vec<String>) {
    if place == Place::Host {
        return (Vec::new(), Vec::new());
    }
    let version = r.version.map_or_else(|| "-".into(), |v| v.to_string());
    let hosts = r.hosts.clone().unwrap_or_else(|| "-".into());
    (vec![version], vec![hosts])
}

fn headers(
    place: Place,
    before_hosts: &[&'static str],
    after_hosts: &[&'static str],
) -> Vec<&'static str> {
    let fleet = place == Place::Fleet;
    let mut headers: Vec<&'static str> = Vec::new();
    headers.extend(fleet.then_some("VERSION"));
    headers.extend(before_hosts);
    headers.extend(fleet.then_some("HOSTS"));
    headers.extend(after_hosts);
    headers
}

/// `schedule list --history` and `events --event created|updated|deleted`: versions.
pub(super) fn history_table(rows: &[ScheduleVersion], place: Place) -> String {
    let mut table = Table::new(&headers(
        place,
        &["UPDATED (UTC)", "ID", "EVENT", "ACTOR"],
        &["GROUP", "WHEN", "ACTION", "LOCKOUT", "MESSAGE"],
    ));
    for r in rows {
        let (version, hosts) = fleet_cells(place, r);
        let (record, s) = (&r.record, &r.record.schedule);
        let mut cells = version;
        cells.extend([
            short_time(&record.update_time),
            short_id(&record.id),
            record.event.as_str().to_string(),
            record.actor.clone(),
        ]);
        cells.extend(hosts);
        cells.extend([
            s.group.clone(),
            s.describe_when(),
            action(s.kick).to_string(),
            lockout(s),
            abbreviate(&s.message, 40),
        ]);
        table.push(cells);
    }
    table.render()
}

/// `schedule list`: the current schedules and their next logout.
fn current_table(rows: &[ScheduleVersion], place: Place, now: DateTime<Utc>) -> String {
    let mut table = Table::new(&headers(
        place,
        &["ID"],
        &[
            "GROUP",
            "WHEN",
            "ACTION",
            "LOCKOUT",
            "NEXT (UTC)",
            "MESSAGE",
        ],
    ));
    for r in rows {
        let (version, hosts) = fleet_cells(place, r);
        let s = &r.record.schedule;
        let mut cells = version;
        cells.push(short_id(&r.record.id));
        cells.extend(hosts);
        cells.extend([
            s.group.clone(),
            when(r),
            action(s.kick).to_string(),
            lockout(s),
            firing_time(s.next_after(now)),
            abbreviate(&s.message, 40),
        ]);
        table.push(cells);
    }
    table.render()
}

fn show(ctx: &Context, id: &str) -> Result<(), Error> {
    let (current, versions) = ctx.schedules_for_reading()?.with_versions(id)?;
    if !ctx.may_see(&current.record) {
        return Err(Error::invalid(
            "id",
            format!("no schedule that targets you has the id {id}"),
        ));
    }
    let now = ctx.now();
    let s = &current.record.schedule;
    let upcoming = forcelogout_core::firing::upcoming(s.recurrence, s.time, &s.timezone, now, 3);
    if ctx.json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            listed: Listed<'a>,
            versions: &'a [ScheduleVersion],
            upcoming: Vec<String>,
        }
        return ctx.print_json(&Shown {
            listed: Listed::new(&current, now),
            versions: &versions,
            upcoming: upcoming.iter().map(|t| format_timestamp(*t)).collect(),
        });
    }
    ctx.print(&shown_text(&current, versions.len(), &upcoming))
}

/// `schedule show`: one field a line; Hosts and Version when the store has them.
fn shown_text(current: &ScheduleVersion, versions: usize, upcoming: &[DateTime<Utc>]) -> String {
    let (record, s) = (&current.record, &current.record.schedule);
    let mut text = String::new();
    let mut field = |name: &str, value: String| {
        text.push_str(&format!("{name:<10} {}\n", sanitize_line(&value)));
    };
    field("Id:", record.id.clone());
    if let Some(hosts) = &current.hosts {
        field("Hosts:", hosts.clone());
    }
    field("Group:", s.group.clone());
    field("When:", s.describe_when());
    field("Action:", action(s.kick).to_string());
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
    if let Some(version) = current.version {
        field("Version:", version.to_string());
    }
    field("Versions:", versions.to_string());
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
    text
}

/// The current schedule with its next firing, for `list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    version: &'a ScheduleVersion,
    #[serde(rename = "Next")]
    next: Option<String>,
}

impl<'a> Listed<'a> {
    fn new(version: &'a ScheduleVersion, now: DateTime<Utc>) -> Listed<'a> {
        Listed {
            version,
            next: version
                .record
                .schedule
                .next_after(now)
                .map(format_timestamp),
        }
    }
}

/// The WHEN column: an immediate logout is marked as one, with the instant it takes effect.
fn when(r: &ScheduleVersion) -> String {
    let r = &r.record;
    if !r.schedule.immediate {
        return r.schedule.describe_when();
    }
    let due = r.due_at.as_deref().unwrap_or(&r.update_time);
    format!("Immediate (logout) {}", short_time(due))
}

fn lockout(s: &Schedule) -> String {
    if s.lockout_minutes == 0 {
        "-".into()
    } else {
        format!("{}m", s.lockout_minutes)
    }
}

/// A schedule for a name NSS does not know yet is allowed (the group may come later) but
/// is probably a typo: say so on stderr. Only for this host's store: this host's users say
/// nothing of the fleet's.
pub(crate) fn warn_if_unknown(ctx: &Context, group: &str) {
    if ctx.place() == Place::Host && group != "*" && !forcelogout_core::users::name_is_known(group)
    {
        ctx.warn(&format!(
            "no user or group named {group:?} is known on this host yet"
        ));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::samples::{self, ID};
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    /// A table's lines as their cells (columns are two or more spaces apart).
    fn cells(table: &str) -> Vec<Vec<String>> {
        table
            .lines()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_current_table_has_version_and_hosts_only_from_the_fleet() {
        let host = current_table(&[samples::host()], Place::Host, now());
        assert_eq!(
            cells(&host),
            [
                vec![
                    "ID",
                    "GROUP",
                    "WHEN",
                    "ACTION",
                    "LOCKOUT",
                    "NEXT (UTC)",
                    "MESSAGE"
                ],
                vec![
                    &ID[..8],
                    "students",
                    "Daily 18:00 Europe/Berlin",
                    "kick",
                    "15m",
                    "2026-12-07 17:00",
                    "Lab closes"
                ],
            ]
        );
        let fleet = current_table(&[samples::fleet()], Place::Fleet, now());
        assert_eq!(
            cells(&fleet),
            [
                vec![
                    "VERSION",
                    "ID",
                    "HOSTS",
                    "GROUP",
                    "WHEN",
                    "ACTION",
                    "LOCKOUT",
                    "NEXT (UTC)",
                    "MESSAGE"
                ],
                vec![
                    "7",
                    &ID[..8],
                    "@lab",
                    "students",
                    "Daily 18:00 Europe/Berlin",
                    "kick",
                    "15m",
                    "2026-12-07 17:00",
                    "Lab closes"
                ],
            ]
        );
        // An empty central list still says which columns it has.
        assert!(current_table(&[], Place::Fleet, now()).starts_with("VERSION  ID  HOSTS  GROUP"));
    }

    #[test]
    fn the_history_table_shows_the_second_of_each_change_from_either_store() {
        let host = history_table(&[samples::host()], Place::Host);
        assert_eq!(
            cells(&host),
            [
                vec![
                    "UPDATED (UTC)",
                    "ID",
                    "EVENT",
                    "ACTOR",
                    "GROUP",
                    "WHEN",
                    "ACTION",
                    "LOCKOUT",
                    "MESSAGE"
                ],
                vec![
                    "2026-12-07 19:13:44",
                    &ID[..8],
                    "created",
                    "root",
                    "students",
                    "Daily 18:00 Europe/Berlin",
                    "kick",
                    "15m",
                    "Lab closes"
                ],
            ]
        );
        let fleet = history_table(&[samples::fleet()], Place::Fleet);
        assert_eq!(
            cells(&fleet),
            [
                vec![
                    "VERSION",
                    "UPDATED (UTC)",
                    "ID",
                    "EVENT",
                    "ACTOR",
                    "HOSTS",
                    "GROUP",
                    "WHEN",
                    "ACTION",
                    "LOCKOUT",
                    "MESSAGE"
                ],
                vec![
                    "7",
                    "2026-12-07 19:13:44",
                    &ID[..8],
                    "created",
                    "root",
                    "@lab",
                    "students",
                    "Daily 18:00 Europe/Berlin",
                    "kick",
                    "15m",
                    "Lab closes"
                ],
            ]
        );
    }

    #[test]
    fn a_write_names_the_fleet_version_and_hosts_only_centrally() {
        assert_eq!(
            written_text(&samples::host(), "updated "),
            format!("updated {ID}\n")
        );
        assert_eq!(
            written_text(&samples::fleet(), ""),
            format!("{ID}\nfleet version 7 for hosts @lab\n")
        );
    }

    #[test]
    fn show_has_hosts_and_version_lines_only_centrally() {
        let upcoming = [Utc.with_ymd_and_hms(2026, 12, 7, 17, 0, 0).unwrap()];
        let host = shown_text(&samples::host(), 1, &upcoming);
        assert!(
            !host.contains("Hosts:") && !host.contains("Version:"),
            "{host}"
        );
        assert!(host.contains("Lockout:   15m\n"), "{host}");
        assert!(
            host.contains("Next:      2026-12-07 17:00 UTC  (2026-12-07 18:00 CET)\n"),
            "{host}"
        );
        let fleet = shown_text(&samples::fleet(), 2, &upcoming);
        assert!(
            fleet.starts_with(&format!(
                "Id:        {ID}\nHosts:     @lab\nGroup:     students\n"
            )),
            "{fleet}"
        );
        assert!(fleet.contains("Version:   7\nVersions:  2\n"), "{fleet}");
    }

    #[test]
    fn json_rows_are_the_table_columns_plus_hosts_and_version_centrally() {
        let host = serde_json::to_string(&Listed::new(&samples::host(), now())).unwrap();
        assert!(host.contains("\"DueAt\":null,\"Next\":"), "{host}");
        assert_eq!(
            serde_json::to_string(&samples::host()).unwrap(),
            serde_json::to_string(&samples::record()).unwrap()
        );
        let fleet = serde_json::to_string(&Listed::new(&samples::fleet(), now())).unwrap();
        assert!(
            fleet.contains("\"DueAt\":null,\"Hosts\":\"@lab\",\"Version\":7,\"Next\":\"2026-12-07T17:00:00.000000Z\""),
            "{fleet}"
        );
    }
}
