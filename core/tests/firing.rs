//! Next-firing instants on the days that break naive code: DST gaps and folds in zones of
//! different rule shapes, a skipped calendar day, 29 February, a Once in the past, and weekly
//! schedules whose weekday differs between UTC and their zone. Expected instants were read
//! off `zdump -v` for each zone.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use forcelogout_core::days::Days;
use forcelogout_core::firing::{next_after, resolve_local, upcoming};
use forcelogout_core::schedule::Recurrence;
use forcelogout_core::zone::Zone;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn zone(name: &str) -> Zone {
    Zone::named(name).unwrap()
}

fn at(hh_mm: &str) -> NaiveTime {
    NaiveTime::parse_from_str(hh_mm, "%H:%M").unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// (zone, local date, local time, expected UTC instant, what the case is)
const RESOLUTIONS: &[(&str, &str, &str, &str, &str)] = &[
    // EU rules: last Sunday of March 02:00 -> 03:00, last Sunday of October 03:00 -> 02:00.
    (
        "Europe/Berlin",
        "2026-03-29",
        "02:30",
        "2026-03-29T01:30:00Z",
        "gap: offset before (+1) -> 03:30 CEST",
    ),
    (
        "Europe/Berlin",
        "2026-03-29",
        "01:59",
        "2026-03-29T00:59:00Z",
        "just before the gap",
    ),
    (
        "Europe/Berlin",
        "2026-03-29",
        "03:00",
        "2026-03-29T01:00:00Z",
        "first minute after the gap",
    ),
    (
        "Europe/Berlin",
        "2026-10-25",
        "02:30",
        "2026-10-25T00:30:00Z",
        "fold: the first 02:30 (CEST)",
    ),
    (
        "Europe/Berlin",
        "2026-10-25",
        "03:00",
        "2026-10-25T02:00:00Z",
        "after the fold",
    ),
    // US rules: second Sunday of March at 02:00, first Sunday of November at 02:00.
    (
        "America/New_York",
        "2026-03-08",
        "02:30",
        "2026-03-08T07:30:00Z",
        "gap -> 03:30 EDT",
    ),
    (
        "America/New_York",
        "2026-11-01",
        "01:30",
        "2026-11-01T05:30:00Z",
        "fold: the first 01:30 (EDT)",
    ),
    // Southern hemisphere: DST ends in April, starts in October.
    (
        "Australia/Sydney",
        "2026-10-04",
        "02:30",
        "2026-10-03T16:30:00Z",
        "gap -> 03:30 AEDT",
    ),
    (
        "Australia/Sydney",
        "2026-04-05",
        "02:30",
        "2026-04-04T15:30:00Z",
        "fold: the first 02:30 (AEDT)",
    ),
    // Half-hour DST shift.
    (
        "Australia/Lord_Howe",
        "2026-10-04",
        "02:15",
        "2026-10-03T15:45:00Z",
        "30-minute gap -> 02:45 +11",
    ),
    (
        "Australia/Lord_Howe",
        "2026-04-05",
        "01:45",
        "2026-04-04T14:45:00Z",
        "30-minute fold: the first 01:45",
    ),
    // Transitions at midnight: the day starts at 01:00, or 23:00 happens twice.
    (
        "America/Santiago",
        "2026-09-06",
        "00:30",
        "2026-09-06T04:30:00Z",
        "midnight gap -> 01:30 -03",
    ),
    (
        "America/Santiago",
        "2026-04-04",
        "23:30",
        "2026-04-05T02:30:00Z",
        "fold before midnight: the first 23:30",
    ),
    // A zone with no DST at all.
    (
        "Asia/Kolkata",
        "2026-03-29",
        "02:30",
        "2026-03-28T21:00:00Z",
        "no DST, +05:30",
    ),
    // A whole skipped day: Samoa jumped from 2011-12-29 to 2011-12-31.
    (
        "Pacific/Apia",
        "2011-12-30",
        "10:00",
        "2011-12-30T20:00:00Z",
        "skipped day: offset before (-10)",
    ),
];

#[test]
fn local_times_resolve_by_rfc_5545() {
    for &(tz, day, time, expected, what) in RESOLUTIONS {
        let got = resolve_local(&zone(tz), date(day), at(time)).unwrap();
        assert_eq!(got, utc(expected), "{tz} {day} {time}: {what}");
    }
}

#[test]
fn daily_fires_once_on_a_fold_day_and_once_on_a_gap_day() {
    let berlin = zone("Europe/Berlin");
    let fold = upcoming(
        Recurrence::Daily,
        at("02:30"),
        &berlin,
        utc("2026-10-24T12:00:00Z"),
        3,
    );
    assert_eq!(
        fold,
        vec![
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-26T01:30:00Z"),
            utc("2026-10-27T01:30:00Z")
        ]
    );
    let gap = upcoming(
        Recurrence::Daily,
        at("02:30"),
        &berlin,
        utc("2026-03-28T12:00:00Z"),
        3,
    );
    assert_eq!(
        gap,
        vec![
            utc("2026-03-29T01:30:00Z"),
            utc("2026-03-30T00:30:00Z"),
            utc("2026-03-31T00:30:00Z")
        ]
    );
}

#[test]
fn daily_across_a_skipped_day_fires_once_for_the_two_local_dates() {
    // 2011-12-30 10:00 does not exist in Apia; read with -10 it is 2011-12-31 10:00 +14,
    // the same instant as the 31st's own firing: one logout, not two.
    let apia = zone("Pacific/Apia");
    let got = upcoming(
        Recurrence::Daily,
        at("10:00"),
        &apia,
        utc("2011-12-29T12:00:00Z"),
        3,
    );
    assert_eq!(
        got,
        vec![
            utc("2011-12-29T20:00:00Z"),
            utc("2011-12-30T20:00:00Z"),
            utc("2011-12-31T20:00:00Z")
        ]
    );
}

#[test]
fn leap_day() {
    let utc_zone = Zone::utc();
    let once = Recurrence::Once(date("2028-02-29"));
    assert_eq!(
        next_after(once, at("12:00"), &utc_zone, utc("2028-01-01T00:00:00Z")),
        Some(utc("2028-02-29T12:00:00Z"))
    );
    let daily = upcoming(
        Recurrence::Daily,
        at("12:00"),
        &utc_zone,
        utc("2028-02-28T13:00:00Z"),
        2,
    );
    assert_eq!(
        daily,
        vec![utc("2028-02-29T12:00:00Z"), utc("2028-03-01T12:00:00Z")]
    );
    // 2028-02-29 is a Tuesday; in 2027 the next Tuesday after 02-28 is 03-02.
    let tuesdays = Recurrence::Weekly(Days::parse("Tue").unwrap());
    assert_eq!(
        next_after(
            tuesdays,
            at("09:00"),
            &utc_zone,
            utc("2028-02-28T00:00:00Z")
        ),
        Some(utc("2028-02-29T09:00:00Z"))
    );
    assert_eq!(
        next_after(
            tuesdays,
            at("09:00"),
            &utc_zone,
            utc("2027-02-28T00:00:00Z")
        ),
        Some(utc("2027-03-02T09:00:00Z"))
    );
}

#[test]
fn once_in_the_past_never_fires() {
    let once = Recurrence::Once(date("2020-01-01"));
    assert_eq!(
        next_after(once, at("10:00"), &Zone::utc(), utc("2026-11-23T00:00:00Z")),
        None
    );
    // Exactly at the instant is not "after" it.
    assert_eq!(
        next_after(once, at("10:00"), &Zone::utc(), utc("2020-01-01T10:00:00Z")),
        None
    );
    assert!(upcoming(
        once,
        at("10:00"),
        &Zone::utc(),
        utc("2026-11-23T00:00:00Z"),
        5
    )
    .is_empty());
}

#[test]
fn weekly_weekday_is_taken_in_the_schedule_zone() {
    // Monday 08:00 in Auckland (+13 in November) is Sunday 19:00 UTC.
    let mondays = Recurrence::Weekly(Days::parse("Mon").unwrap());
    let got = upcoming(
        mondays,
        at("08:00"),
        &zone("Pacific/Auckland"),
        utc("2026-11-20T00:00:00Z"),
        2,
    );
    assert_eq!(
        got,
        vec![utc("2026-11-22T19:00:00Z"), utc("2026-11-29T19:00:00Z")]
    );
    // Friday 20:00 in Los Angeles (-08) is Saturday 04:00 UTC.
    let fridays = Recurrence::Weekly(Days::parse("Fri").unwrap());
    let got = next_after(
        fridays,
        at("20:00"),
        &zone("America/Los_Angeles"),
        utc("2026-11-23T00:00:00Z"),
    );
    assert_eq!(got, Some(utc("2026-11-28T04:00:00Z")));
}

#[test]
fn weekly_weekdays_skip_the_weekend() {
    let weekdays = Recurrence::Weekly(Days::WEEKDAYS);
    // Friday 2026-11-27 18:00 Berlin, then Monday 2026-11-30.
    let got = upcoming(
        weekdays,
        at("18:00"),
        &zone("Europe/Berlin"),
        utc("2026-11-27T12:00:00Z"),
        2,
    );
    assert_eq!(
        got,
        vec![utc("2026-11-27T17:00:00Z"), utc("2026-11-30T17:00:00Z")]
    );
}

#[test]
fn every_weekly_day_set_fires_only_on_its_days_in_its_zone() {
    let berlin = zone("Europe/Berlin");
    for bits in 1..=127 {
        let days = Days::from_bits(bits).unwrap();
        let got = upcoming(
            Recurrence::Weekly(days),
            at("23:30"),
            &berlin,
            utc("2026-03-20T00:00:00Z"),
            10,
        );
        assert_eq!(got.len(), 10, "{days}");
        for (t, next) in got.iter().zip(got.iter().skip(1)) {
            assert!(next > t);
        }
        for t in got {
            let local = t.with_timezone(&berlin);
            assert!(
                days.contains(chrono::Datelike::weekday(&local)),
                "{days}: {local}"
            );
            assert_eq!(local.format("%H:%M").to_string(), "23:30");
        }
    }
}

#[test]
fn latest_at_or_before_mirrors_next_after() {
    use forcelogout_core::firing::latest_at_or_before;
    let berlin = zone("Europe/Berlin");
    let weekdays = Recurrence::Weekly(Days::WEEKDAYS);
    // Sunday noon: the latest weekday 18:00 was Friday's.
    assert_eq!(
        latest_at_or_before(weekdays, at("18:00"), &berlin, utc("2026-11-29T11:00:00Z")),
        Some(utc("2026-11-27T17:00:00Z"))
    );
    // Exactly at the instant counts.
    assert_eq!(
        latest_at_or_before(
            Recurrence::Daily,
            at("18:00"),
            &berlin,
            utc("2026-11-27T17:00:00Z")
        ),
        Some(utc("2026-11-27T17:00:00Z"))
    );
    let once = Recurrence::Once(date("2030-01-01"));
    assert_eq!(
        latest_at_or_before(once, at("10:00"), &Zone::utc(), utc("2026-11-23T00:00:00Z")),
        None
    );
    // For every instant of a DST week, latest <= t < next, and next follows latest.
    let mut t = utc("2026-03-27T00:00:00Z");
    while t < utc("2026-04-02T00:00:00Z") {
        let latest = latest_at_or_before(Recurrence::Daily, at("02:30"), &berlin, t).unwrap();
        let next = next_after(Recurrence::Daily, at("02:30"), &berlin, t).unwrap();
        assert!(latest <= t && t < next, "{t}");
        assert_eq!(
            next_after(Recurrence::Daily, at("02:30"), &berlin, latest),
            Some(next)
        );
        t += chrono::Duration::minutes(17);
    }
}
