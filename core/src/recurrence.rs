//! When a schedule fires, as the `Schedule`, `ScheduleDate` and `Days` columns say it: the
//! bottom of the model, below `firing` (which computes instants from it) and `schedule` (which
//! validates whole schedules and asks `firing` for their next instant).

use chrono::NaiveDate;

use crate::days::Days;
use crate::error::Error;

/// When a schedule fires, in its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recurrence {
    Once(NaiveDate),
    Daily,
    Weekly(Days),
}

impl Recurrence {
    /// The `Schedule` column's value.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Recurrence::Once(_) => "Once",
            Recurrence::Daily => "Daily",
            Recurrence::Weekly(_) => "Weekly",
        }
    }

    /// The `ScheduleDate` column's value.
    pub fn schedule_date(&self) -> Option<String> {
        match self {
            Recurrence::Once(date) => Some(date.format("%Y-%m-%d").to_string()),
            _ => None,
        }
    }

    /// The `Days` column's value.
    pub fn days(&self) -> Option<Days> {
        match self {
            Recurrence::Weekly(days) => Some(*days),
            _ => None,
        }
    }

    /// Rebuilds the recurrence from the `Schedule`, `ScheduleDate` and `Days` columns, checking
    /// that they agree (a Once has a date and no days, a Weekly has days and no date).
    pub fn from_columns(
        schedule: &str,
        schedule_date: Option<&str>,
        days: Option<i64>,
    ) -> Result<Recurrence, Error> {
        match parse_kind(schedule)? {
            Kind::Once => {
                let date = schedule_date.ok_or_else(|| {
                    Error::invalid("schedule_date", "a Once schedule needs a date (YYYY-MM-DD)")
                })?;
                if days.is_some() {
                    return Err(Error::invalid("days", "only Weekly schedules have days"));
                }
                Ok(Recurrence::Once(parse_date(date)?))
            }
            Kind::Daily => {
                if schedule_date.is_some() {
                    return Err(Error::invalid(
                        "schedule_date",
                        "only Once schedules have a date",
                    ));
                }
                if days.is_some() {
                    return Err(Error::invalid("days", "only Weekly schedules have days"));
                }
                Ok(Recurrence::Daily)
            }
            Kind::Weekly => {
                if schedule_date.is_some() {
                    return Err(Error::invalid(
                        "schedule_date",
                        "only Once schedules have a date",
                    ));
                }
                let days = days.ok_or_else(|| {
                    Error::invalid("days", "a Weekly schedule needs days (1..127)")
                })?;
                Ok(Recurrence::Weekly(Days::from_bits(days)?))
            }
        }
    }
}

enum Kind {
    Once,
    Daily,
    Weekly,
}

fn parse_kind(text: &str) -> Result<Kind, Error> {
    match text.to_ascii_lowercase().as_str() {
        "once" => Ok(Kind::Once),
        "daily" => Ok(Kind::Daily),
        "weekly" => Ok(Kind::Weekly),
        _ => Err(Error::invalid(
            "schedule",
            format!("{:?} is not a schedule kind (Once, Daily, Weekly)", text),
        )),
    }
}

/// `YYYY-MM-DD`, a date that exists (2027-02-29 does not).
pub fn parse_date(text: &str) -> Result<NaiveDate, Error> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped {
        return Err(Error::invalid(
            "schedule_date",
            format!("{text:?} is not a date (YYYY-MM-DD)"),
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        Error::invalid(
            "schedule_date",
            format!("{text} is not a day of the calendar"),
        )
    })
}
