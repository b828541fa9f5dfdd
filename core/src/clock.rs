//! Time is a parameter: core logic takes a `Clock` (or an instant) so that DST days, leap days
//! and past dates are tested without sleeping.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::zone::Zone;

pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always answers the same instant, for tests and `--after`.
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The stored timestamp form: UTC RFC 3339 with microseconds, e.g. `2026-11-23T17:00:00.000000Z`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The `Date` partition of a row: the calendar date of `t` in the host's zone.
pub fn partition_date(t: DateTime<Utc>, host_zone: &Zone) -> String {
    t.with_timezone(host_zone).format("%Y-%m-%d").to_string()
}

/// The host's IANA zone by name: `$TZ` if it names one, then `/etc/timezone`, then the target
/// of the `/etc/localtime` link; UTC when none of them does.
pub fn host_timezone() -> Zone {
    let from_env = std::env::var("TZ")
        .ok()
        .and_then(|tz| Zone::named(tz.trim_start_matches(':')).ok());
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .and_then(|s| Zone::named(s.trim()).ok())
    };
    let from_link = || {
        let target = std::fs::read_link("/etc/localtime").ok()?;
        let text = target.to_string_lossy().into_owned();
        let (_, name) = text.split_once("zoneinfo/")?;
        Zone::named(name).ok()
    };
    from_env
        .or_else(from_file)
        .or_else(from_link)
        .unwrap_or_else(Zone::utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_microseconds_and_z() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap();
        assert_eq!(format_timestamp(t), "2026-11-23T17:00:00.000000Z");
    }

    #[test]
    fn partition_date_is_local_to_the_host_zone() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 23, 30, 0).unwrap();
        assert_eq!(partition_date(t, &Zone::utc()), "2026-11-23");
        assert_eq!(
            partition_date(t, &Zone::named("Europe/Berlin").unwrap()),
            "2026-11-24"
        );
        assert_eq!(
            partition_date(t, &Zone::named("America/New_York").unwrap()),
            "2026-11-23"
        );
    }
}
