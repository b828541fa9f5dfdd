//! `forcelogoutctl apply -f FILE` and `export`: the current schedules as a file (TOML or JSON)
//! that configuration management (Ansible, Puppet, Salt) keeps on many hosts. Applying a file
//! makes the current set equal to it; applying it again writes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids;
use crate::schedule::{Recurrence, RecurrenceInput, Schedule, ScheduleInput};
use crate::store::{ScheduleRecord, Store};
use crate::zone::Zone;

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
    pub lockout: Option<LockoutField>,
}

/// `lockout = 15` (minutes, as `export` writes it) or `lockout = "1h"` (a duration).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum LockoutField {
    Minutes(u32),
    Duration(String),
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

/// What an apply did (or, with a dry run, would do): the counts, and each change named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Each write, in the order it is made: creations, updates, deletions.
    pub changes: Vec<Change>,
}

/// One schedule an apply creates, updates or deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `created`, `updated` or `deleted`: the Event of the version it writes.
    pub event: &'static str,
    pub id: String,
    pub group: String,
    /// The schedule's time as `schedule list` shows it (for a deletion: the deleted one's).
    pub when: String,
}

impl Change {
    fn of(event: &'static str, id: &str, schedule: &Schedule) -> Change {
        Change {
            event,
            id: id.to_string(),
            group: schedule.group.clone(),
            when: schedule.describe_when(),
        }
    }

    /// The line both `apply` and `apply --dry-run` print: `deleted 0123… group "lab" (Daily …)`.
    pub fn line(&self) -> String {
        format!(
            "{} {} group {:?} ({})",
            self.event, self.id, self.group, self.when
        )
    }
}

/// What applying a file would write, worked out before anything is written.
#[derive(Debug, Default)]
pub struct Plan {
    pub creates: Vec<(String, Schedule)>,
    pub updates: Vec<(String, Schedule)>,
    pub deletes: Vec<ScheduleRecord>,
    pub unchanged: usize,
    /// How many entries the file holds.
    pub entries: usize,
}

impl Plan {
    /// The counts and each change, named.
    pub fn changes(&self) -> Changes {
        let mut changes: Vec<Change> = self
            .creates
            .iter()
            .map(|(id, s)| Change::of("created", id, s))
            .collect();
        changes.extend(
            self.updates
                .iter()
                .map(|(id, s)| Change::of("updated", id, s)),
        );
        changes.extend(
            self.deletes
                .iter()
                .map(|r| Change::of("deleted", &r.id, &r.schedule)),
        );
        Changes {
            created: self.creates.len(),
            updated: self.updates.len(),
            deleted: self.deletes.len(),
            unchanged: self.unchanged,
            changes,
        }
    }

    /// Refuses an empty file, or one that deletes every current schedule and keeps none,
    /// unless `delete_all`: that is what a truncated or wrong file does.
    pub fn check_deletions(&self, file: &str, delete_all: bool) -> Result<(), Error> {
        if delete_all {
            return Ok(());
        }
        let n = self.deletes.len();
        let kept = self.unchanged + self.updates.len();
        let reason = if self.entries == 0 {
            format!(
                "{file} has no schedule: applying it would delete {n} current schedule{} (give --delete-all to allow it)",
                plural(n)
            )
        } else if n > 0 && kept == 0 {
            format!(
                "applying {file} would delete every current schedule ({n}) (give --delete-all to allow it)"
            )
        } else {
            return Ok(());
        };
        Err(Error::invalid("delete-all", reason))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Parses and validates a whole file. A syntax error is `FILE:LINE:COL: what`; a wrong entry
/// is `FILE: schedule[N].FIELD: what`, by the same rules as the command line; a wrong key or
/// type `FILE:LINE: schedule[N].KEY: what`.
pub fn parse(
    name: &str,
    text: &str,
    default_zone: &Zone,
) -> Result<Vec<(Option<String>, Schedule)>, Error> {
    let file: ScheduleFile = match Format::guess(name, text) {
        Format::Json => serde_json::from_str(text).map_err(|e| json_error(name, &e))?,
        Format::Toml => toml::from_str(text).map_err(|e| toml_error(name, text, &e))?,
    };
    let mut seen_ids = std::collections::HashSet::new();
    file.schedule
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            // `schedule[N].FIELD` as scripts already match it; the entry's id, when it has
            // one, last, to find it in a long file.
            let of_id = match entry.id.as_deref() {
                Some(id) => format!(" (entry id {})", crate::text::sanitize_line(id)),
                None => String::new(),
            };
            let at_entry = |e: Error| match e {
                Error::Invalid { field, reason } => Error::invalid(
                    format!("{name}: schedule[{}].{field}", i + 1),
                    if field == "id" {
                        reason
                    } else {
                        format!("{reason}{of_id}")
                    },
                ),
                other => other,
            };
            let id = match entry.id.as_deref() {
                Some(text) => {
                    let id = ids::validate_full_id(text).map_err(at_entry)?;
                    if !seen_ids.insert(id.clone()) {
                        return Err(at_entry(Error::invalid(
                            "id",
                            format!("{id} names an earlier entry too"),
                        )));
                    }
                    Some(id)
                }
                None => None,
            };
            entry_to_schedule(entry, default_zone)
                .map(|s| (id, s))
                .map_err(at_entry)
        })
        .collect()
}

/// `FILE:LINE:COL: what` (serde_json places both syntax and meaning errors).
fn json_error(name: &str, error: &serde_json::Error) -> Error {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let what = text.strip_suffix(&suffix).unwrap_or(&text);
    Error::invalid(
        format!("{name}:{}:{}", error.line(), error.column()),
        crate::text::sanitize_line(what),
    )
}

/// A syntax error at its line and column; a wrong key or type in the entry it belongs to.
fn toml_error(name: &str, text: &str, error: &toml::de::Error) -> Error {
    let place = crate::config::TomlPlace::of(text, error);
    if !place.is_meaning {
        return Error::invalid(
            format!("{name}:{}:{}", place.line, place.column),
            place.message,
        );
    }
    // The entry is the last `[[schedule]]` header at or before the error's line.
    let entry = text
        .lines()
        .take(place.line)
        .filter(|l| l.trim().replace(' ', "") == "[[schedule]]")
        .count();
    let message = match place.key.as_deref() {
        // serde's words for a value that is neither of LockoutField's forms.
        Some("lockout") if place.message.starts_with("data did not match") => {
            "expected minutes (0 to 1440) or a duration such as \"1h\"".to_string()
        }
        _ => place.message,
    };
    let field = match (entry, place.key) {
        (0, Some(key)) => format!(": {key}"),
        (0, None) => String::new(),
        (n, Some(key)) => format!(": schedule[{n}].{key}"),
        (n, None) => format!(": schedule[{n}]"),
    };
    Error::invalid(format!("{name}:{}{field}", place.line), message)
}

fn entry_to_schedule(entry: Entry, default_zone: &Zone) -> Result<Schedule, Error> {
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
        lockout: entry.lockout.map(|l| match l {
            LockoutField::Minutes(m) => m.to_string(),
            LockoutField::Duration(text) => text,
        }),
    }
    .into_new(default_zone)
}

fn to_entry(record: &ScheduleRecord) -> Entry {
    Entry {
        id: Some(record.id.clone()),
        ..schedule_entry(&record.schedule)
    }
}

fn schedule_entry(s: &Schedule) -> Entry {
    let (once, daily, weekly) = match s.recurrence {
        Recurrence::Once(date) => (Some(date.format("%Y-%m-%d").to_string()), None, None),
        Recurrence::Daily => (None, Some(true), None),
        Recurrence::Weekly(days) => (None, None, Some(days.to_string())),
    };
    Entry {
        id: None,
        group: s.group.clone(),
        once,
        daily,
        weekly,
        at: s.time_text(),
        tz: Some(s.timezone.name().to_string()),
        action: Some(if s.kick { "kick" } else { "warn" }.into()),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        lockout: Some(s.lockout_minutes)
            .filter(|m| *m > 0)
            .map(LockoutField::Minutes),
    }
}

/// The current scheduled (not immediate, not fleet) set as a file.
pub fn export(store: &Store, format: Format) -> Result<String, Error> {
    // Fleet schedules are the central database's (SPEC §9); a file of them applied elsewhere
    // would make local copies that the fleet could no longer change.
    let fleet = store.fleet_schedule_ids()?;
    let file = ScheduleFile {
        schedule: store
            .current_schedules(None)?
            .iter()
            .filter(|r| !r.schedule.immediate && !fleet.contains(&r.id))
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

/// Makes the current scheduled set equal to `wanted`, so that applying the same file again
/// writes nothing, whatever the store held before. Every entry has an Id: the one it names, or
/// for an entry without one, an Id derived from its content (the same on every host). An
/// entry whose Id is current updates that schedule if it differs; an entry without an Id first
/// keeps a current schedule of equal content (one made by hand, or before Ids were derived);
/// any other entry is created under its Id, whether the store never saw it (a file written on
/// another host) or it was deleted (the file says it should exist). Current schedules no entry
/// claimed are deleted. Immediate logouts are left alone. All changes are written in one
/// transaction; `dry_run` only works them out.
pub fn apply(
    store: &mut Store,
    wanted: Vec<(Option<String>, Schedule)>,
    actor: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Changes, Error> {
    let plan = plan(store, wanted, now)?;
    if !dry_run {
        write(store, &plan, actor, now)?;
    }
    Ok(plan.changes())
}

/// Writes a plan in one transaction: all of it is recorded, or none of it.
pub fn write(store: &mut Store, plan: &Plan, actor: &str, now: DateTime<Utc>) -> Result<(), Error> {
    let deletes: Vec<String> = plan.deletes.iter().map(|r| r.id.clone()).collect();
    store.write_schedule_changes(&plan.creates, &plan.updates, &deletes, actor, now)
}

/// What applying `wanted` would write (see `apply`), without writing.
pub fn plan(
    store: &Store,
    wanted: Vec<(Option<String>, Schedule)>,
    now: DateTime<Utc>,
) -> Result<Plan, Error> {
    let entry_count = wanted.len();
    let current = store.current_schedules(None)?;
    // Fleet schedules are changed centrally (SPEC §9): apply neither claims nor deletes them.
    let fleet = store.fleet_schedule_ids()?;
    if let Some((id, _)) = wanted.iter().find(|(id, _)| {
        id.as_ref()
            .is_some_and(|id| current.iter().any(|r| r.schedule.immediate && &r.id == id))
    }) {
        return Err(Error::invalid(
            "id",
            format!(
                "{} is an immediate logout, not a schedule",
                id.as_deref().unwrap_or("")
            ),
        ));
    }
    if let Some(id) = wanted
        .iter()
        .filter_map(|(id, _)| id.as_ref())
        .find(|id| fleet.contains(*id))
    {
        return Err(Error::invalid(
            "id",
            format!("schedule {id} came from the fleet and is changed centrally"),
        ));
    }
    let mut unclaimed: Vec<ScheduleRecord> = current
        .into_iter()
        .filter(|r| !r.schedule.immediate && !fleet.contains(&r.id))
        .collect();
    let entries = with_ids(wanted);

    let mut plan = Plan {
        entries: entry_count,
        ..Plan::default()
    };
    let mut pending = Vec::new();
    // Entries whose Id is current claim it first, so a content match cannot take it.
    for entry in entries {
        match unclaimed.iter().position(|r| r.id == entry.id) {
            Some(i) => {
                let current = unclaimed.remove(i);
                if current.schedule == entry.schedule {
                    plan.unchanged += 1;
                } else {
                    plan.updates.push((current.id, entry.schedule));
                }
            }
            None => pending.push(entry),
        }
    }
    for entry in pending {
        let equal = unclaimed.iter().position(|r| r.schedule == entry.schedule);
        match equal {
            Some(i) if !entry.named => {
                unclaimed.remove(i);
                plan.unchanged += 1;
            }
            _ => plan.creates.push((entry.id, entry.schedule)),
        }
    }
    // The command line's rule: a Once that can no longer fire is refused, when it would be
    // written. An unchanged one stays (re-applying yesterday's file must not fail).
    for (id, schedule) in plan.creates.iter().chain(plan.updates.iter()) {
        schedule.check_not_past(now).map_err(|e| match e {
            Error::Invalid { field, reason } => {
                Error::invalid(format!("schedule {id}: {field}"), reason)
            }
            other => other,
        })?;
    }
    plan.deletes = unclaimed;
    Ok(plan)
}

/// An entry of the file with the Id it has in the store.
struct Identified {
    id: String,
    /// The file names the Id; otherwise it is derived from the content.
    named: bool,
    schedule: Schedule,
}

/// Gives each entry without an Id the one derived from its content and its place among equal
/// entries (two equal entries are two schedules).
fn with_ids(wanted: Vec<(Option<String>, Schedule)>) -> Vec<Identified> {
    let mut occurrences: std::collections::HashMap<String, usize> = Default::default();
    wanted
        .into_iter()
        .map(|(id, schedule)| match id {
            Some(id) => Identified {
                id,
                named: true,
                schedule,
            },
            None => {
                let content = content_key(&schedule);
                let n = occurrences.entry(content.clone()).or_default();
                let id = ids::derived_id(&format!("{content}#{n}"));
                *n += 1;
                Identified {
                    id,
                    named: false,
                    schedule,
                }
            }
        })
        .collect()
}

/// A schedule's content as one stable text: its file entry without the Id, as JSON (fields in
/// the struct's order, the zone resolved).
fn content_key(schedule: &Schedule) -> String {
    let mut entry = schedule_entry(schedule);
    entry.id = None;
    serde_json::to_string(&entry).unwrap_or_default()
}
