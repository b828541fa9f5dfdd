//! `--dry-run`: the blast radius of a logout before anyone is hit.

use chrono::{DateTime, Utc};
use forcelogout_core::policy::{blast_radius, local_time_label, lockout_end, Affected};
use forcelogout_core::schedule::Schedule;
use forcelogout_core::Error;
use serde::Serialize;

use super::Context;
use crate::output::Table;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Preview<'a> {
    group_name: &'a str,
    when: String,
    next: Option<String>,
    kick: bool,
    /// After `next`, logins of the targets are refused until this instant.
    lockout_until: Option<String>,
    users: Vec<Affected>,
    written: bool,
}

pub fn show(ctx: &Context, schedule: &Schedule, next: Option<DateTime<Utc>>) -> Result<(), Error> {
    let store = ctx.open_for_reading()?;
    let live: Vec<String> = store.live_sessions()?.into_iter().map(|s| s.user).collect();
    let users = blast_radius(&schedule.group, &live, &ctx.config.exempt_groups);
    let lockout_until = next.and_then(|t| lockout_end(schedule, t));
    if ctx.json {
        return ctx.print_json(&Preview {
            group_name: &schedule.group,
            when: schedule.describe_when(),
            next: next.map(forcelogout_core::clock::format_timestamp),
            kick: schedule.kick,
            lockout_until: lockout_until.map(forcelogout_core::clock::format_timestamp),
            users,
            written: false,
        });
    }
    let action = if schedule.kick { "kick" } else { "warning" };
    let mut text = format!(
        "Dry run: nothing was written.\nLogout ({action}) of {:?}",
        schedule.group
    );
    if !schedule.immediate {
        text.push_str(&format!(", {}", schedule.describe_when()));
    }
    match next {
        Some(t) => text.push_str(&format!(
            "; next at {} ({}).\n",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            local_time_label(t, &schedule.timezone, "%Y-%m-%d %H:%M")
        )),
        None => text.push_str("; it never fires.\n"),
    }
    if let Some(until) = lockout_until {
        text.push_str(&format!(
            "Logins of the targets are refused until {} ({}).\n",
            until.format("%Y-%m-%d %H:%M:%S UTC"),
            local_time_label(until, &schedule.timezone, "%Y-%m-%d %H:%M")
        ));
    }
    let mut table = Table::new(&["USER", "UID", "LIVE SESSIONS", "EFFECT"]);
    for u in &users {
        table.push(vec![
            u.user.clone(),
            u.uid.to_string(),
            u.live_sessions.to_string(),
            u.effect.clone(),
        ]);
    }
    text.push_str(&table.render());
    if schedule.group == "*" {
        text.push_str("Every other user who is logged in when it fires is logged out too.\n");
    } else {
        text.push_str("Members of the group who log in before it fires are logged out too.\n");
    }
    ctx.print(&text)
}
