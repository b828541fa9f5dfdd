//! `forcelogoutctl next`: upcoming logouts, computed by the same code as SQL's `next_logout`,
//! from this host's store or (`--fleet`) the central database.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::format_timestamp;
use forcelogout_core::firing::upcoming;
use forcelogout_core::schedule_store::{Place, ScheduleVersion};
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::cli::NextArgs;
use crate::output::{action, firing_time, short_id, Table};

/// Most logouts one call lists.
const MAX_COUNT: usize = 1000;

/// One upcoming logout; `Hosts` only from the central database.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Upcoming {
    #[serde(rename = "UTC", serialize_with = "as_timestamp")]
    at: DateTime<Utc>,
    local: String,
    timezone: String,
    id: String,
    group_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<String>,
    kick: bool,
}

/// The instant as the store writes them (RFC 3339, microseconds, `Z`).
fn as_timestamp<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*at))
}

pub fn run(ctx: &Context, args: NextArgs) -> Result<(), Error> {
    let count = parse_count(&args.count)?;
    let after = match &args.after {
        Some(text) => parse_after(text)?,
        None => ctx.now(),
    };
    let mut store = ctx.schedules_for_reading()?;
    let mut schedules = match &args.id {
        Some(id) => vec![store.current_one(id)?],
        None => store.current(None)?,
    };
    schedules.retain(|r| ctx.may_see(&r.record));
    let rows = upcoming_logouts(&schedules, after, count);
    if ctx.json {
        return ctx.print_json(&rows);
    }
    ctx.print(&table(&rows, store.place()))
}

/// The first `count` firings after `after` of all `schedules`, by time then Id.
fn upcoming_logouts(
    schedules: &[ScheduleVersion],
    after: DateTime<Utc>,
    count: usize,
) -> Vec<Upcoming> {
    let mut found: Vec<(DateTime<Utc>, &ScheduleVersion)> = schedules
        .iter()
        .flat_map(|r| {
            let s = &r.record.schedule;
            upcoming(s.recurrence, s.time, &s.timezone, after, count)
                .into_iter()
                .map(move |t| (t, r))
        })
        .collect();
    found.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.record.id.cmp(&b.1.record.id))
    });
    found.truncate(count);
    found
        .iter()
        .map(|(t, r)| {
            let s = &r.record.schedule;
            Upcoming {
                at: *t,
                local: t
                    .with_timezone(&s.timezone)
                    .format("%Y-%m-%d %H:%M %:z")
                    .to_string(),
                timezone: s.timezone.name().to_string(),
                id: r.record.id.clone(),
                group_name: s.group.clone(),
                hosts: r.hosts.clone(),
                kick: s.kick,
            }
        })
        .collect()
}

/// The table; HOSTS for the central database.
fn table(rows: &[Upcoming], place: Place) -> String {
    let fleet = place == Place::Fleet;
    let mut headers = vec!["UTC", "LOCAL", "ZONE", "ID", "GROUP"];
    headers.extend(fleet.then_some("HOSTS"));
    headers.push("ACTION");
    let mut table = Table::new(&headers);
    for row in rows {
        let mut cells = vec![
            firing_time(Some(row.at)),
            row.local.clone(),
            row.timezone.clone(),
            short_id(&row.id),
            row.group_name.clone(),
        ];
        if fleet {
            cells.push(row.hosts.clone().unwrap_or_else(|| "-".into()));
        }
        cells.push(action(row.kick).to_string());
        table.push(cells);
    }
    table.render()
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::samples::{self, ID};
    use super::*;

    #[test]
    fn one_upcoming_list_for_either_store_with_hosts_centrally() {
        let after = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let host = upcoming_logouts(&[samples::host()], after, 2);
        assert_eq!(
            table(&host, Place::Host),
            format!(
                "UTC               LOCAL                    ZONE           ID        GROUP     ACTION\n\
                 2026-12-07 17:00  2026-12-07 18:00 +01:00  Europe/Berlin  {0}  students  kick\n\
                 2026-12-08 17:00  2026-12-08 18:00 +01:00  Europe/Berlin  {0}  students  kick\n",
                &ID[..8]
            )
        );
        let json = serde_json::to_string(&host[0]).unwrap();
        assert_eq!(
            json,
            format!("{{\"UTC\":\"2026-12-07T17:00:00.000000Z\",\"Local\":\"2026-12-07 18:00 +01:00\",\"Timezone\":\"Europe/Berlin\",\"Id\":\"{ID}\",\"GroupName\":\"students\",\"Kick\":true}}")
        );
        let fleet = upcoming_logouts(&[samples::fleet()], after, 1);
        assert_eq!(
            table(&fleet, Place::Fleet),
            format!(
                "UTC               LOCAL                    ZONE           ID        GROUP     HOSTS  ACTION\n\
                 2026-12-07 17:00  2026-12-07 18:00 +01:00  Europe/Berlin  {}  students  @lab   kick\n",
                &ID[..8]
            )
        );
        assert!(serde_json::to_string(&fleet[0])
            .unwrap()
            .contains("\"GroupName\":\"students\",\"Hosts\":\"@lab\",\"Kick\":true"));
    }
}
