//! `forcelogoutctl next`: upcoming logouts, computed by the same code as SQL's `next_logout`.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::format_timestamp;
use forcelogout_core::firing::upcoming;
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::cli::NextArgs;
use crate::output::Table;

/// Most logouts one call lists.
const MAX_COUNT: usize = 1000;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Upcoming {
    #[serde(rename = "UTC")]
    utc: String,
    local: String,
    timezone: String,
    id: String,
    group_name: String,
    kick: bool,
}

pub fn run(ctx: &Context, args: NextArgs) -> Result<(), Error> {
    let count = parse_count(&args.count)?;
    let after = match &args.after {
        Some(text) => parse_after(text)?,
        None => ctx.now(),
    };
    let store = ctx.open_for_reading()?;
    let mut schedules = match &args.id {
        Some(id) => vec![store.current_schedule(id)?],
        None => store.current_schedules(None)?,
    };
    schedules.retain(|r| ctx.may_see(r));
    let mut found: Vec<(DateTime<Utc>, &forcelogout_core::store::ScheduleRecord)> = schedules
        .iter()
        .flat_map(|r| {
            let s = &r.schedule;
            upcoming(s.recurrence, s.time, s.timezone, after, count)
                .into_iter()
                .map(move |t| (t, r))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    found.truncate(count);
    let rows: Vec<Upcoming> = found
        .iter()
        .map(|(t, r)| Upcoming {
            utc: format_timestamp(*t),
            local: t
                .with_timezone(&r.schedule.timezone)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string(),
            timezone: r.schedule.timezone.name().to_string(),
            id: r.id.clone(),
            group_name: r.schedule.group.clone(),
            kick: r.schedule.kick,
        })
        .collect();
    if ctx.json {
        return ctx.print_json(&rows);
    }
    let mut table = Table::new(&["UTC", "LOCAL", "ZONE", "ID", "GROUP", "ACTION"]);
    for row in &rows {
        table.push(vec![
            row.utc.get(..16).unwrap_or(&row.utc).replace('T', " "),
            row.local.clone(),
            row.timezone.clone(),
            row.id.chars().take(8).collect(),
            row.group_name.clone(),
            if row.kick { "kick" } else { "warn" }.to_string(),
        ]);
    }
    ctx.print(&table.render())
}

pub(crate) fn parse_count(text: &str) -> Result<usize, Error> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            "count",
            format!("{text:?} is not a number from 1 to {MAX_COUNT}"),
        )),
    }
}

pub(crate) fn parse_after(text: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::invalid(
                "after",
                format!("{text:?} is not an RFC 3339 instant (e.g. 2026-12-24T12:00:00Z)"),
            )
        })
}
