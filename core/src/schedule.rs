//! The schedule model: what fires, for whom, how. Everything a person or a file types is
//! validated here, each failure naming its field.

use chrono::{DateTime, NaiveTime, Timelike, Utc};

use crate::days::Days;
use crate::error::Error;
use crate::firing;
pub use crate::recurrence::{parse_date, Recurrence};
use crate::zone::{self, Zone, ZoneError};

/// Longest message, in characters; it is written to terminals and shown at login.
pub const MESSAGE_MAX_CHARS: usize = 1000;
/// Most lines a message may have.
pub const MESSAGE_MAX_LINES: usize = 20;
/// Longest lockout: one day. Longer is a disabled account, which is not this product's job.
pub const LOCKOUT_MAX_MINUTES: u32 = 1440;
/// Longest user or group name accepted (LOGIN_NAME_MAX is 256 on Linux).
pub const GROUP_NAME_MAX_LEN: usize = 256;

/// A validated schedule: every field checked, ready to store and to fire.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub group: String,
    pub recurrence: Recurrence,
    pub time: NaiveTime,
    pub timezone: Zone,
    pub immediate: bool,
    pub kick: bool,
    pub message: String,
    pub lockout_minutes: u32,
}

impl Schedule {
    /// The `Time` column's value, `HH:mm`.
    pub fn time_text(&self) -> String {
        self.time.format("%H:%M").to_string()
    }

    /// The next instant strictly after `after` at which this schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        firing::next_after(self.recurrence, self.time, &self.timezone, after)
    }

    /// A short human description: `Weekly Mon,Tue,Wed,Thu,Fri 18:00 Europe/Berlin`.
    pub fn describe_when(&self) -> String {
        let what = match self.recurrence {
            Recurrence::Once(date) => format!("Once {date}"),
            Recurrence::Daily => "Daily".to_string(),
            Recurrence::Weekly(days) => format!("Weekly {days}"),
        };
        format!("{what} {} {}", self.time_text(), self.timezone.name())
    }

    /// Refuses a scheduled Once that can no longer fire: it would only be a row.
    pub fn check_not_past(&self, now: DateTime<Utc>) -> Result<(), Error> {
        if self.immediate || !matches!(self.recurrence, Recurrence::Once(_)) {
            return Ok(());
        }
        if self.next_after(now).is_none() {
            return Err(Error::invalid(
                "once",
                format!(
                    "{} is in the past; a Once schedule must be in the future",
                    self.describe_when()
                ),
            ));
        }
        Ok(())
    }
}

/// What `forcelogoutctl logout` asks for, unvalidated: the local command and `--fleet` alike.
#[derive(Clone, Debug, Default)]
pub struct ImmediateInput<'a> {
    pub group: &'a str,
    /// `None`: a kick (the default).
    pub kick: Option<bool>,
    pub message: Option<&'a str>,
    pub lockout: Option<&'a str>,
}

impl ImmediateInput<'_> {
    /// The immediate logout (a Once row at `now` in `zone`, Immediate=1) and the instant it
    /// takes effect, `delay` after `now`. A warning cannot carry a lockout: its users may keep
    /// working.
    pub fn into_logout(
        self,
        now: DateTime<Utc>,
        delay: std::time::Duration,
        zone: Zone,
    ) -> Result<(Schedule, DateTime<Utc>), Error> {
        let kick = self.kick.unwrap_or(true);
        let lockout_minutes = match self.lockout {
            Some(text) => parse_lockout(text)?,
            None => 0,
        };
        check_lockout_is_a_kick(kick, lockout_minutes)?;
        let local = now.with_timezone(&zone);
        let schedule = Schedule {
            group: validate_group(self.group)?,
            recurrence: Recurrence::Once(local.date_naive()),
            time: local
                .time()
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(local.time()),
            timezone: zone,
            immediate: true,
            kick,
            message: validate_message(self.message.unwrap_or(""))?,
            lockout_minutes,
        };
        let due = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        Ok((schedule, due))
    }
}

/// What a person or a file gives for a schedule, unvalidated. `None` means "not given": on
/// add, the default; on update, keep the current value.
#[derive(Clone, Debug, Default)]
pub struct ScheduleInput {
    pub group: Option<String>,
    pub recurrence: Option<RecurrenceInput>,
    pub at: Option<String>,
    pub timezone: Option<String>,
    pub kick: Option<bool>,
    pub message: Option<String>,
    pub lockout: Option<String>,
}

#[derive(Clone, Debug)]
pub enum RecurrenceInput {
    Once(String),
    Daily,
    Weekly(String),
}

impl ScheduleInput {
    /// Validates a new schedule. `default_zone` is used when no zone is given.
    pub fn into_new(self, default_zone: &Zone) -> Result<Schedule, Error> {
        let group = self
            .group
            .as_deref()
            .ok_or_else(|| Error::invalid("group", "required (a user, a group, or '*')"))?;
        let recurrence = self.recurrence.as_ref().ok_or_else(|| {
            Error::invalid(
                "schedule",
                "required: one of --once DATE, --daily, --weekly DAYS",
            )
        })?;
        let at = self
            .at
            .as_deref()
            .ok_or_else(|| Error::invalid("at", "required (HH:MM, 24-hour)"))?;
        let schedule = Schedule {
            group: validate_group(group)?,
            recurrence: parse_recurrence(recurrence)?,
            time: parse_time(at)?,
            timezone: match &self.timezone {
                Some(zone) => parse_timezone(zone)?,
                None => default_zone.clone(),
            },
            immediate: false,
            kick: self.kick.unwrap_or(true),
            message: validate_message(self.message.as_deref().unwrap_or(""))?,
            lockout_minutes: match &self.lockout {
                Some(text) => parse_lockout(text)?,
                None => 0,
            },
        };
        check_lockout_is_a_kick(schedule.kick, schedule.lockout_minutes)?;
        Ok(schedule)
    }

    /// Validates the given fields over an existing schedule.
    pub fn apply_to(self, current: &Schedule) -> Result<Schedule, Error> {
        let mut next = current.clone();
        if let Some(group) = &self.group {
            next.group = validate_group(group)?;
        }
        if let Some(recurrence) = &self.recurrence {
            next.recurrence = parse_recurrence(recurrence)?;
        }
        if let Some(at) = &self.at {
            next.time = parse_time(at)?;
        }
        if let Some(zone) = &self.timezone {
            next.timezone = parse_timezone(zone)?;
        }
        if let Some(kick) = self.kick {
            next.kick = kick;
        }
        if let Some(message) = &self.message {
            next.message = validate_message(message)?;
        }
        if let Some(lockout) = &self.lockout {
            next.lockout_minutes = parse_lockout(lockout)?;
        }
        // A lockout given for a warning is refused; one kept from a kick that becomes a
        // warning stays stored but inert (`policy::lockout_end`), ready if it turns back.
        if self.lockout.is_some() {
            check_lockout_is_a_kick(next.kick, next.lockout_minutes)?;
        }
        Ok(next)
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_none()
            && self.recurrence.is_none()
            && self.at.is_none()
            && self.timezone.is_none()
            && self.kick.is_none()
            && self.message.is_none()
            && self.lockout.is_none()
    }
}

fn parse_recurrence(input: &RecurrenceInput) -> Result<Recurrence, Error> {
    Ok(match input {
        RecurrenceInput::Once(date) => {
            Recurrence::Once(parse_date(date).map_err(|e| rename(e, "once"))?)
        }
        RecurrenceInput::Daily => Recurrence::Daily,
        RecurrenceInput::Weekly(days) => {
            Recurrence::Weekly(Days::parse(days).map_err(|e| rename(e, "weekly"))?)
        }
    })
}

/// Reports an error under the name the person typed (`--once`, not `schedule_date`).
fn rename(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}

/// `HH:MM`, 24-hour, two digits each, 00:00–23:59.
pub fn parse_time(text: &str) -> Result<NaiveTime, Error> {
    let bad = || {
        Error::invalid(
            "at",
            format!("{text:?} is not a time of day (HH:MM, 24-hour, 00:00 to 23:59)"),
        )
    };
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return Err(bad());
    }
    let digits = |s: &str| -> Option<u32> {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let hour = digits(&text[0..2]).ok_or_else(bad)?;
    let minute = digits(&text[3..5]).ok_or_else(bad)?;
    let time = NaiveTime::from_hms_opt(hour, minute, 0).ok_or_else(bad)?;
    debug_assert_eq!(time.second(), 0);
    Ok(time)
}

/// The one rule, for every route a schedule comes by (command line, `apply` file, socket,
/// fleet): a warning cannot carry a lockout, since its users may keep working.
pub fn check_lockout_is_a_kick(kick: bool, lockout_minutes: u32) -> Result<(), Error> {
    if lockout_minutes > 0 && !kick {
        return Err(Error::invalid(
            "lockout",
            "a warning (--warn) never locks anyone out: the user may keep working; use --kick",
        ));
    }
    Ok(())
}

/// An IANA zone name the host's tzdata has, e.g. `Europe/Berlin`; exact spelling, with the
/// right spelling suggested for a name that differs only in case (`europe/berlin`).
pub fn parse_timezone(text: &str) -> Result<Zone, Error> {
    let shown = crate::text::sanitize_line(text);
    Zone::named(text).map_err(|e| match e {
        ZoneError::Unknown => {
            let hint = zone::same_name_but_case(text.trim())
                .map(|name| format!("; did you mean {name}?"))
                .unwrap_or_else(|| " (e.g. Europe/Berlin, UTC)".to_string());
            Error::invalid("tz", format!("{shown:?} is not an IANA time zone{hint}"))
        }
        unreadable => Error::invalid("tz", format!("{shown:?}: {unreadable}")),
    })
}

/// A warning for a valid zone that is almost surely a mistake: a legacy abbreviation with a
/// fixed offset all year (`EST` is UTC-5 in July too), where a region's name follows its
/// daylight saving. `EST5EDT`-style names do follow it and get none.
pub fn timezone_warning(zone: &Zone) -> Option<String> {
    let (region, offset) = match zone.name() {
        "EST" => ("America/New_York", "UTC-5"),
        "MST" => (
            "America/Denver (America/Phoenix keeps no daylight saving)",
            "UTC-7",
        ),
        "HST" => ("Pacific/Honolulu", "UTC-10"),
        _ => return None,
    };
    Some(format!(
        "tz: {} is a legacy abbreviation fixed at {offset} all year, without daylight saving; \
         for local time use the IANA name, e.g. {region}",
        zone.name()
    ))
}

/// Lockout length, 0 (none) to one day: whole minutes (`15`, as the `Lockout` column holds
/// them), or a duration (`90m`, `1h`, `1h30m`), a part of a minute counting as a whole one so
/// that the lockout is never shorter than asked.
pub fn parse_lockout(text: &str) -> Result<u32, Error> {
    let trimmed = text.trim();
    let bad = || {
        Error::invalid(
            "lockout",
            format!(
                "{:?} is not a lockout (minutes, or a duration such as 30m, 1h, 1h30m)",
                crate::text::sanitize_line(text)
            ),
        )
    };
    if trimmed.starts_with('-') {
        return Err(Error::invalid(
            "lockout",
            format!(
                "{:?} is negative; a lockout is 0 to {LOCKOUT_MAX_MINUTES} minutes, or a duration such as 30m",
                crate::text::sanitize_line(text)
            ),
        ));
    }
    let minutes: u64 = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed.parse().map_err(|_| bad())?
    } else {
        crate::config::parse_duration(trimmed)
            .map_err(|_| bad())?
            .as_secs()
            .div_ceil(60)
    };
    if minutes > u64::from(LOCKOUT_MAX_MINUTES) {
        return Err(Error::invalid(
            "lockout",
            format!(
                "{minutes} minutes is longer than the limit of {LOCKOUT_MAX_MINUTES} (one day)"
            ),
        ));
    }
    Ok(minutes as u32)
}

/// A user or group name as NSS knows them (local, LDAP, SSSD `user@domain`), or `*` for every
/// user. The name need not exist yet: a schedule may be made before its group.
pub fn validate_group(name: &str) -> Result<String, Error> {
    if name == "*" {
        return Ok(name.to_string());
    }
    let reason = if name.is_empty() {
        Some("empty; give a user, a group, or '*'".to_string())
    } else if name.len() > GROUP_NAME_MAX_LEN {
        Some(format!("longer than {GROUP_NAME_MAX_LEN} bytes"))
    } else if name.starts_with('-') {
        Some(format!("{name:?} starts with '-'"))
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!("{name:?} is numeric; give the name, not the id"))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not a name"))
    } else {
        let body = name.strip_suffix('$').unwrap_or(name);
        let bad = body
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')));
        bad.map(|c| {
            format!(
                "{:?} has the character {:?}; names use letters, digits, '_', '.', '-', '@' (and a final '$')",
                crate::text::sanitize_line(name),
                c
            )
        })
    };
    match reason {
        Some(reason) => Err(Error::invalid("group", reason)),
        None => Ok(name.to_string()),
    }
}

/// A message for terminals: printable text, newlines and tabs; no control characters, no
/// escape sequences, no bidirectional overrides; bounded in length and lines.
pub fn validate_message(text: &str) -> Result<String, Error> {
    let chars = text.chars().count();
    if chars > MESSAGE_MAX_CHARS {
        return Err(Error::invalid(
            "message",
            format!("{chars} characters; the limit is {MESSAGE_MAX_CHARS}"),
        ));
    }
    let lines = text.lines().count();
    if lines > MESSAGE_MAX_LINES {
        return Err(Error::invalid(
            "message",
            format!("{lines} lines; the limit is {MESSAGE_MAX_LINES}"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\n' && c != '\t' && crate::text::is_unsafe_for_terminal(c))
    {
        return Err(Error::invalid(
            "message",
            format!(
                "contains the control character U+{:04X}; only printable text, newlines and tabs are allowed",
                c as u32
            ),
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kick: Option<bool>, lockout: Option<&str>) -> ScheduleInput {
        ScheduleInput {
            group: Some("lab".into()),
            recurrence: Some(RecurrenceInput::Daily),
            at: Some("18:00".into()),
            timezone: Some("UTC".into()),
            kick,
            lockout: lockout.map(str::to_string),
            ..Default::default()
        }
    }

    fn field(result: Result<Schedule, Error>) -> String {
        match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_warning_with_a_lockout_is_refused_on_add_and_update_alike() {
        assert_eq!(
            field(input(Some(false), Some("15")).into_new(&Zone::utc())),
            "lockout"
        );
        let kick = input(None, Some("15")).into_new(&Zone::utc()).unwrap();
        let give = |kick: Option<bool>, lockout: Option<&str>| ScheduleInput {
            kick,
            lockout: lockout.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(
            field(give(Some(false), Some("15")).apply_to(&kick)),
            "lockout"
        );
        // Turned into a warning, the kick keeps its minutes, inert.
        let warning = give(Some(false), None).apply_to(&kick).unwrap();
        assert_eq!(field(give(None, Some("30")).apply_to(&warning)), "lockout");
        assert!(give(None, Some("0")).apply_to(&warning).is_ok());
        let immediate = ImmediateInput {
            group: "lab",
            kick: Some(false),
            lockout: Some("15"),
            ..Default::default()
        };
        let refused =
            immediate.into_logout(chrono::Utc::now(), std::time::Duration::ZERO, Zone::utc());
        assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "lockout"));
    }

    #[test]
    fn zones_a_wrong_case_is_named_right_and_fixed_offsets_warned() {
        let e = parse_timezone("europe/berlin").unwrap_err().to_string();
        assert!(e.contains("did you mean Europe/Berlin?"), "{e}");
        assert!(parse_timezone("Mars/Olympus").is_err());
        for zone in ["EST", "MST", "HST"] {
            let tz = parse_timezone(zone).unwrap();
            assert!(timezone_warning(&tz).unwrap().contains(zone));
        }
        for zone in ["EST5EDT", "America/New_York", "UTC", "Europe/Berlin"] {
            assert_eq!(
                timezone_warning(&parse_timezone(zone).unwrap()),
                None,
                "{zone}"
            );
        }
    }

    #[test]
    fn a_negative_lockout_says_so() {
        let e = parse_lockout("-1").unwrap_err().to_string();
        assert!(e.starts_with("lockout: ") && e.contains("negative"), "{e}");
    }
}
