//! The SQL functions: argument conversion only; the logic is forcelogout_core's, the same code
//! that `forcelogoutctl` runs. NULL in gives NULL out; bad input is an SQL error naming the
//! function and the problem. rusqlite catches panics in scalar functions.

use chrono::{DateTime, Utc};
use forcelogout_core::clock::format_timestamp;
use forcelogout_core::days::Days;
use forcelogout_core::firing;
use forcelogout_core::schedule::{parse_time, parse_timezone, Recurrence};
use forcelogout_core::Error;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function(c"decode_days", 1, pure, decode_days)?;
    conn.create_scalar_function(c"encode_days", 1, pure, encode_days)?;
    conn.create_scalar_function(c"days_includes", 2, pure, days_includes)?;
    // Without `after` it reads the clock: not deterministic.
    let clocked = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function(c"next_logout", 5, clocked, next_logout)?;
    conn.create_scalar_function(c"next_logout", 6, clocked, next_logout)?;
    Ok(())
}

fn fail(function: &str, error: Error) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(format!("{function}: {error}").into())
}

/// A value as text, or `None` for NULL. Numbers are read as their decimal text.
fn text(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => Some(String::from("<blob>")),
    })
}

/// A day set from an integer (62), integral real or text ('62', 'Mon-Fri').
fn days_arg(ctx: &Context<'_>, i: usize, function: &str) -> rusqlite::Result<Option<Days>> {
    let days = match ctx.get_raw(i) {
        ValueRef::Null => return Ok(None),
        ValueRef::Integer(n) => Days::from_bits(n),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 1e15 => Days::from_bits(f as i64),
        ValueRef::Real(f) => Err(Error::invalid("days", format!("{f} is not a whole number"))),
        ValueRef::Text(t) => Days::parse(&String::from_utf8_lossy(t)),
        ValueRef::Blob(_) => Err(Error::invalid("days", "a blob is not a day set")),
    };
    days.map(Some).map_err(|e| fail(function, e))
}

/// `decode_days(62)` → `'Mon,Tue,Wed,Thu,Fri'`.
fn decode_days(ctx: &Context<'_>) -> rusqlite::Result<Option<String>> {
    Ok(days_arg(ctx, 0, "decode_days")?.map(|d| d.to_string()))
}

/// `encode_days('Mon-Fri')` → 62.
fn encode_days(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    Ok(days_arg(ctx, 0, "encode_days")?.map(|d| i64::from(d.bits())))
}

/// `days_includes(62, 'Wed')` → 1: whether every day of the second set is in the first.
fn days_includes(ctx: &Context<'_>) -> rusqlite::Result<Option<bool>> {
    let (Some(set), Some(wanted)) = (
        days_arg(ctx, 0, "days_includes")?,
        days_arg(ctx, 1, "days_includes")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(set.bits() & wanted.bits() == wanted.bits()))
}

/// `next_logout(Schedule, ScheduleDate, Time, Timezone, Days [, after])` → the next firing
/// strictly after `after` (default: now) as RFC 3339 UTC text, or NULL when there is none.
/// ScheduleDate and Days are NULL where the kind has none; a NULL Schedule, Time, Timezone or
/// `after` gives NULL.
fn next_logout(ctx: &Context<'_>) -> rusqlite::Result<Option<String>> {
    const F: &str = "next_logout";
    let (Some(kind), Some(time), Some(zone)) = (text(ctx, 0)?, text(ctx, 2)?, text(ctx, 3)?) else {
        return Ok(None);
    };
    let schedule_date = text(ctx, 1)?;
    let days = match ctx.get_raw(4) {
        ValueRef::Null => None,
        _ => days_arg(ctx, 4, F)?.map(|d| i64::from(d.bits())),
    };
    let recurrence =
        Recurrence::from_columns(&kind, schedule_date.as_deref(), days).map_err(|e| fail(F, e))?;
    let time = parse_time(&time).map_err(|e| fail(F, e))?;
    let zone = parse_timezone(&zone).map_err(|e| fail(F, e))?;
    let after = if ctx.len() > 5 {
        match text(ctx, 5)? {
            None => return Ok(None),
            Some(t) => DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    fail(
                        F,
                        Error::invalid(
                            "after",
                            format!("{t:?} is not an RFC 3339 instant (e.g. 2026-12-24T12:00:00Z)"),
                        ),
                    )
                })?,
        }
    } else {
        Utc::now()
    };
    Ok(firing::next_after(recurrence, time, &zone, after).map(format_timestamp))
}
