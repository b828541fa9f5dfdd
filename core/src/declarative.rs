//! `forcelogoutctl apply -f FILE` and `export`: the current schedules as a file (TOML or JSON)
//! that configuration management (Ansible, Puppet, Salt) keeps on many hosts. Applying a file
//! makes the current set equal to it; applying it again writes nothing.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::schedule::{Recurrence, RecurrenceInput, Schedule, ScheduleInput};
use crate::store::{ScheduleRecord, Store};

/// The file: a list of `[[schedule]]` tables.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    #[serde(default)]
    pub schedule: Vec<Entry>,
}

/// One schedule of the file. `id` is optional: `export` writes it; a hand-written entry
/// without one is matched by its content.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub once: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<String>,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `kick` (default) or `warn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockout: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// JSON for `.json` files or text starting with `{`, else TOML.
    pub fn guess(name: &str, text: &str) -> Format {
        if name.ends_with(".json") || text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

/// What an apply did (or, with a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// Parses and validates a whole file; an error names the file, the entry and the field.
pub fn parse(
    name: &str,
    text: &str,
    default_zone: Tz,
) -> Result<Vec<(Option<String>, Schedule)>, Error> {
    let file: ScheduleFile = match Format::guess(name, text) {
        Format::Json => {
            serde_json::from_str(text).map_err(|e| Error::invalid(name, e.to_string()))?
        }
        Format::Toml => toml::from_str(text).map_err(|e| {
            Error::invalid(
                name,
                e.message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_string(),
            )
        })?,
    };
    file.schedule
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at_entry = |e: Error| match e {
                Error::Invalid { field, reason } => {
                    Error::invalid(format!("{name}: schedule[{}].{field}", i + 1), reason)
                }
                other => other,
            };
            let id = entry.id.clone();
            entry_to_schedule(entry, default_zone)
                .map(|s| (id, s))
                .map_err(at_entry)
        })
        .collect()
}

fn entry_to_schedule(entry: Entry, default_zone: Tz) -> Result<Schedule, Error> {
    let recurrence = match (entry.once, entry.daily, entry.weekly) {
        (Some(date), None | Some(false), None) => RecurrenceInput::Once(date),
        (None, Some(true), None) => RecurrenceInput::Daily,
        (None, None | Some(false), Some(days)) => RecurrenceInput::Weekly(days),
        _ => {
            return Err(Error::invalid(
                "schedule",
                "give exactly one of once = \"YYYY-MM-DD\", daily = true, weekly = \"DAYS\"",
            ))
        }
    };
    let kick = match entry.action.as_deref() {
        None | Some("kick") => true,
        Some("warn") => false,
        Some(other) => {
            return Err(Error::invalid(
                "action",
                format!("{other:?} is not kick or warn"),
            ))
        }
    };
    ScheduleInput {
        group: Some(entry.group),
        recurrence: Some(recurrence),
        at: Some(entry.at),
        timezone: entry.tz,
        kick: Some(kick),
        message: entry.message,
        lockout: entry.lockout.map(|m| m.to_string()),
    }
    .into_new(default_zone)
}

fn to_entry(record: &ScheduleRecord) -> Entry {
    let s = &record.schedule;
    let (once, daily, weekly) = match s.recurrence {
        Recurrence::Once(date) => (Some(date.format("%Y-%m-%d").to_string()), None, None),
        Recurrence::Daily => (None, Some(true), None),
        Recurrence::Weekly(days) => (None, None, Some(days.to_string())),
    };
    Entry {
        id: Some(record.id.clone()),
        group: s.group.clone(),
        once,
        daily,
        weekly,
        at: s.time_text(),
        tz: Some(s.timezone.name().to_string()),
        action: Some(if s.kick { "kick" } else { "warn" }.into()),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        lockout: Some(s.lockout_minutes).filter(|m| *m > 0),
    }
}

/// The current scheduled (not immediate) set as a file.
pub fn export(store: &Store, format: Format) -> Result<String, Error> {
    let file = ScheduleFile {
        schedule: store
            .current_schedules(None)?
            .iter()
            .filter(|r| !r.schedule.immediate)
            .map(to_entry)
            .collect(),
    };
    let encoding = |e: String| Error::io("encoding the schedules", std::io::Error::other(e));
    match format {
        Format::Json => serde_json::to_string_pretty(&file)
            .map(|t| t + "\n")
            .map_err(|e| encoding(e.to_string())),
        Format::Toml => toml::to_string(&file).map_err(|e| encoding(e.to_string())),
    }
}

/// Makes the current scheduled set equal to `wanted`: entries with an Id update that schedule
/// (if it differs); entries without one match an equal current schedule, else are created;
/// current schedules nothing matched are deleted. Immediate logouts are left alone. All
/// changes are written in one transaction; `dry_run` only counts them.
pub fn apply(
    store: &mut Store,
    wanted: Vec<(Option<String>, Schedule)>,
    actor: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Changes, Error> {
    let fleet = store.fleet_schedule_ids()?;
    let mut unmatched: Vec<ScheduleRecord> = store
        .current_schedules(None)?
        .into_iter()
        .filter(|r| !r.schedule.immediate && !fleet.contains(&r.id))
        .collect();
    let mut changes = Changes::default();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    // Entries with an Id first, so a content match cannot take their schedule.
    let (with_id, without_id): (Vec<_>, Vec<_>) =
        wanted.into_iter().partition(|(id, _)| id.is_some());
    for (id, schedule) in with_id {
        let id = id.unwrap_or_default();
        match unmatched.iter().position(|r| r.id == id) {
            Some(i) => {
                let current = unmatched.remove(i);
                if current.schedule == schedule {
                    changes.unchanged += 1;
                } else {
                    updates.push((current.id, schedule));
                }
            }
            None => creates.push(schedule),
        }
    }
    for (_, schedule) in without_id {
        match unmatched.iter().position(|r| r.schedule == schedule) {
            Some(i) => {
                unmatched.remove(i);
                changes.unchanged += 1;
            }
            None => creates.push(schedule),
        }
    }
    changes.created = creates.len();
    changes.updated = updates.len();
    changes.deleted = unmatched.len();
    if !dry_run {
        let deletes: Vec<String> = unmatched.into_iter().map(|r| r.id).collect();
        store.write_schedule_changes(&creates, &updates, &deletes, actor, now)?;
    }
    Ok(changes)
}
