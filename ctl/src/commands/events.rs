//! `forcelogoutctl events` and `prune`: reading the event log (this host's, or with `--fleet`
//! every host's), following it live, and keeping it to a retention period.

use std::time::Duration;

use chrono::NaiveDate;
use forcelogout_core::clock::{host_timezone, partition_date};
use forcelogout_core::schedule::parse_date;
use forcelogout_core::schedule_store::{EventQuery, Place};
use forcelogout_core::store::{EventRow, ScheduleEvent};
use forcelogout_core::text::sanitize_line;
use forcelogout_core::Error;
use nix::sys::inotify::Inotify;

use super::Context;
use crate::cli::EventsArgs;
use crate::output::short_time;

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
    let mut query = EventQuery {
        since: since(&args)?.map(|d| d.to_string()),
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
        host: args.host.clone(),
    };
    if let Some(viewer) = &ctx.viewer {
        query.group = Some(viewer.name.clone());
    }
    let mut store = ctx.schedules_for_reading()?;
    let place = store.place();
    // Follow: wait for the directory of what is read (the store, or its readers' copy) to
    // change rather than poll.
    let watch = if args.follow {
        let read = store.file().filter(|p| p.exists()).unwrap_or(&ctx.db);
        Some(forcelogout_core::store::watch_writes(read)?)
    } else {
        None
    };
    if !ctx.json {
        ctx.print(&header(place))?;
    }
    loop {
        let mut last = None;
        store.read_events(&query, &mut |row| {
            last = Some(row.replay_id);
            ctx.print(&render(ctx.json, place, row)?)
        })?;
        query.after_replay_id = last.or(query.after_replay_id);
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

/// `--since`, named as such when it is not a date.
fn since(args: &EventsArgs) -> Result<Option<NaiveDate>, Error> {
    args.since
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(|e| match e {
            Error::Invalid { reason, .. } => Error::invalid("since", reason),
            other => other,
        })
}

/// The table's header; the central database's events start with their HOST.
fn header(place: Place) -> String {
    let host = if place == Place::Fleet {
        format!("{:<15} ", "HOST")
    } else {
        String::new()
    };
    format!("{host}REPLAY  TIME (UTC)           USER            EVENT    REASON           K I  SERVICE  TTY      FROM\n")
}

/// One event: a JSON line, or a line of fixed-width columns (so that `--follow` can print
/// each as it comes).
fn render(json: bool, place: Place, row: &EventRow) -> Result<String, Error> {
    if json {
        let mut line = serde_json::to_string(row)
            .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?;
        line.push('\n');
        return Ok(line);
    }
    let cell = |v: &Option<String>| sanitize_line(v.as_deref().unwrap_or("-"));
    let host = if place == Place::Fleet {
        format!("{:<15} ", sanitize_line(&row.host))
    } else {
        String::new()
    };
    Ok(format!(
        "{host}{:<7} {:<20} {:<15} {:<8} {:<16} {} {}  {:<8} {:<8} {}\n",
        row.replay_id,
        short_time(&row.timestamp),
        sanitize_line(&row.group_name),
        sanitize_line(&row.event),
        cell(&row.reason),
        u8::from(row.kick),
        u8::from(row.immediate),
        cell(&row.service),
        cell(&row.tty),
        cell(&row.remote_host),
    ))
}

/// `events --event created|updated|deleted`: the schedules' history of that kind.
fn schedule_changes(ctx: &Context, kind: ScheduleEvent, args: &EventsArgs) -> Result<(), Error> {
    let since = since(args)?.map(|d| d.to_string());
    let mut store = ctx.schedules_for_reading()?;
    let rows: Vec<_> = store
        .history(args.group.as_deref())?
        .into_iter()
        .filter(|r| r.record.event == kind && ctx.may_see(&r.record))
        .filter(|r| since.as_deref().is_none_or(|d| r.record.date.as_str() >= d))
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
    ctx.print(&super::schedule::history_table(&rows, store.place()))
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
        &host_timezone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> EventRow {
        EventRow {
            date: "2026-12-07".into(),
            timestamp: "2026-12-07T19:13:44.123456Z".into(),
            group_name: "alice".into(),
            event: "removed".into(),
            immediate: true,
            kick: true,
            replay_id: 42,
            event_identifier: "e42".into(),
            related_event_identifier: None,
            session_key: None,
            login_key: None,
            user_id: Some(1000),
            schedule_id: None,
            reason: Some("kick".into()),
            service: Some("sshd".into()),
            tty: Some("pts/1".into()),
            remote_host: None,
            host: "lab1".into(),
        }
    }

    #[test]
    fn an_event_line_starts_with_its_host_only_centrally() {
        let host = render(false, Place::Host, &row()).unwrap();
        assert_eq!(
            host,
            "42      2026-12-07 19:13:44  alice           removed  kick             1 1  sshd     pts/1    -\n"
        );
        assert!(header(Place::Host).starts_with("REPLAY  TIME (UTC)"));
        let fleet = render(false, Place::Fleet, &row()).unwrap();
        assert_eq!(fleet, format!("lab1            {host}"));
        assert!(header(Place::Fleet).starts_with("HOST            REPLAY  TIME (UTC)"));
        // Columns line up under the header.
        assert_eq!(
            header(Place::Fleet).find("USER"),
            fleet.find("alice"),
            "{fleet}"
        );
        // JSON is the row, whichever store, with its Host.
        let json = render(true, Place::Fleet, &row()).unwrap();
        assert_eq!(json, render(true, Place::Host, &row()).unwrap());
        assert!(json.ends_with(",\"Host\":\"lab1\"}\n"), "{json}");
    }
}
