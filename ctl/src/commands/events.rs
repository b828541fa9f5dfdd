//! `forcelogoutctl events` and `prune`: reading the event log, following it live, and
//! keeping it to a retention period.

use std::time::Duration;

use forcelogout_core::clock::{host_timezone, partition_date};
use forcelogout_core::schedule::parse_date;
use forcelogout_core::store::{EventFilter, EventRow, ScheduleEvent};
use forcelogout_core::Error;
use nix::sys::inotify::Inotify;

use super::Context;
use crate::cli::EventsArgs;
use crate::output::Table;

/// Events read per query while catching up.
const PAGE: usize = 1000;
/// Rows deleted per transaction by `prune`: short enough never to hold a login up.
const PRUNE_BATCH: usize = 2000;
const EVENT_KINDS: [&str; 5] = ["online", "offline", "removed", "ignored", "warned"];

pub fn run(ctx: &Context, args: EventsArgs) -> Result<(), Error> {
    if let Some(event) = args.event.as_deref() {
        if !EVENT_KINDS.contains(&event) {
            // A schedule change (created/create, …): those are LogoutSchedules' history.
            let kind = ScheduleEvent::parse(event).map_err(|_| {
                Error::invalid(
                    "event",
                    format!("{event:?} is not an event (online, offline, removed, ignored, warned, created, updated, deleted)"),
                )
            })?;
            return schedule_changes(ctx, kind, &args);
        }
    }
    let mut filter = EventFilter {
        since: args
            .since
            .as_deref()
            .map(parse_date)
            .transpose()
            .map_err(|e| rename(e, "since"))?
            .map(|d| d.to_string()),
        group: args.group.clone(),
        event: args.event.clone(),
        after_replay_id: args
            .after_replay_id
            .as_deref()
            .map(|n| {
                n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    Error::invalid(
                        "after-replay-id",
                        format!("{n:?} is not a ReplayId (0 or more)"),
                    )
                })
            })
            .transpose()?,
    };
    if let Some(viewer) = &ctx.viewer {
        filter.group = Some(viewer.name.clone());
    }
    if !ctx.json {
        ctx.print(&header())?;
    }
    let store = ctx.open_for_reading()?;
    // Follow: wait for the directory of what is read (the store, or its readers' copy) to
    // change rather than poll.
    let watch = if args.follow {
        let read = Some(store.path()).filter(|p| p.exists()).unwrap_or(&ctx.db);
        Some(forcelogout_core::store::watch_writes(read)?)
    } else {
        None
    };
    loop {
        let rows = store.events(&filter, PAGE)?;
        for row in &rows {
            ctx.print(&render(ctx, row)?)?;
            filter.after_replay_id = Some(row.replay_id);
        }
        if rows.len() == PAGE {
            continue;
        }
        let Some(inotify) = &watch else {
            return Ok(());
        };
        wait_for_change(inotify);
    }
}

/// Blocks until the store's directory changes; a commit becomes visible a moment after the
/// write that woke us (its fsync), so a quiet second is also enough to look again.
fn wait_for_change(inotify: &Inotify) {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        inotify.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let woke = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap_or(0);
    if woke > 0 {
        let _ = inotify.read_events();
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rename(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}

fn header() -> String {
    "REPLAY  TIME (UTC)           USER            EVENT    REASON           K I  SERVICE  TTY      FROM\n".to_string()
}

fn render(ctx: &Context, row: &EventRow) -> Result<String, Error> {
    if ctx.json {
        let mut line = serde_json::to_string(row)
            .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?;
        line.push('\n');
        return Ok(line);
    }
    let cell =
        |v: &Option<String>| forcelogout_core::text::sanitize_line(v.as_deref().unwrap_or("-"));
    Ok(format!(
        "{:<7} {:<20} {:<15} {:<8} {:<16} {} {}  {:<8} {:<8} {}\n",
        row.replay_id,
        row.timestamp
            .get(..19)
            .unwrap_or(&row.timestamp)
            .replace('T', " "),
        forcelogout_core::text::sanitize_line(&row.group_name),
        row.event,
        cell(&row.reason),
        u8::from(row.kick),
        u8::from(row.immediate),
        cell(&row.service),
        cell(&row.tty),
        cell(&row.remote_host),
    ))
}

fn schedule_changes(ctx: &Context, kind: ScheduleEvent, args: &EventsArgs) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let since = args
        .since
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(|e| rename(e, "since"))?;
    let rows: Vec<_> = store
        .schedule_history(args.group.as_deref())?
        .into_iter()
        .filter(|r| r.event == kind && ctx.may_see(r))
        .filter(|r| since.is_none_or(|d| r.date.as_str() >= d.to_string().as_str()))
        .collect();
    if ctx.json {
        let mut text = String::new();
        for r in &rows {
            text.push_str(
                &serde_json::to_string(r)
                    .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?,
            );
            text.push('\n');
        }
        return ctx.print(&text);
    }
    let mut table = Table::new(&["UPDATED (UTC)", "ID", "EVENT", "ACTOR", "GROUP", "WHEN"]);
    for r in &rows {
        table.push(vec![
            r.update_time
                .get(..19)
                .unwrap_or(&r.update_time)
                .replace('T', " "),
            r.id.chars().take(8).collect(),
            r.event.as_str().into(),
            r.actor.clone(),
            r.schedule.group.clone(),
            r.schedule.describe_when(),
        ]);
    }
    ctx.print(&table.render())
}

/// Deletes old events; with `dry_run`, says how many it would delete and writes nothing.
pub fn prune(ctx: &Context, older_than: &str, dry_run: bool) -> Result<(), Error> {
    let days: u32 = older_than
        .parse()
        .ok()
        .filter(|d| (1..=36_500).contains(d))
        .ok_or_else(|| {
            Error::invalid(
                "older-than",
                format!("{older_than:?} is not a number of days (1 to 36500)"),
            )
        })?;
    let cutoff = partition_date(
        ctx.now() - chrono::Duration::days(i64::from(days)),
        host_timezone(),
    );
    let keep_unuploaded = ctx.config.fleet.is_some();
    if dry_run {
        let count = ctx
            .open_for_reading()?
            .count_events_before(&cutoff, keep_unuploaded)?;
        if ctx.json {
            return ctx.print_json(
                &serde_json::json!({ "WouldPrune": count, "Before": cutoff, "DryRun": true }),
            );
        }
        return ctx.print(&format!(
            "dry run: would prune {count} events dated before {cutoff}\n"
        ));
    }
    let mut store = ctx.open_for_writing()?;
    let pruned = store.prune_events_before(&cutoff, PRUNE_BATCH, keep_unuploaded)?;
    if ctx.json {
        return ctx.print_json(&serde_json::json!({ "Pruned": pruned, "Before": cutoff }));
    }
    ctx.print(&format!("pruned {pruned} events dated before {cutoff}\n"))
}
