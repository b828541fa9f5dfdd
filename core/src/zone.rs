//! IANA time zones read from the system's tzdata (`/usr/share/zoneinfo`), as glibc, cron and
//! systemd read them: a rule change that the distribution ships (a country moving its daylight
//! saving with weeks of notice) takes effect without a new forcelogout, and loading the PAM
//! module relocates no compiled-in zone tables.
//!
//! A `Zone` is a chrono `TimeZone`, so the firing and display code works with it unchanged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{
    Datelike, FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike,
    Utc,
};
use nix::errno::Errno;

/// Where Debian's and Fedora's tzdata packages install the compiled zones. Fixed: `TZDIR` is not
/// read, as the PAM module runs in processes whose environment a user may set (`su`).
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

/// The source form of the whole database, read only to suggest a name after a misspelling.
const NAME_LIST: &str = "tzdata.zi";

/// A day in seconds: the probes' distance either side of a local time (see `Zone::readings`).
const DAY: i64 = 24 * 3600;

/// A compiled zone is a few KiB; anything far larger is not one.
const LARGEST_ZONE_FILE: u64 = 256 * 1024;

/// A time zone by its IANA name, with the rules the host's tzdata gives it. Cheap to clone.
#[derive(Clone)]
pub struct Zone {
    inner: Arc<ZoneRules>,
}

struct ZoneRules {
    name: Box<str>,
    rules: tz::TimeZone,
}

/// Why a name gives no zone.
#[derive(Debug)]
pub enum ZoneError {
    /// Not a name the host's tzdata has (misspelt, or not an IANA name at all).
    Unknown,
    /// The file is there but cannot be read or is not a compiled zone.
    Unreadable { path: PathBuf, reason: String },
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneError::Unknown => write!(f, "not an IANA time zone"),
            ZoneError::Unreadable { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

thread_local! {
    /// The zones this thread has read, by name: 10,000 schedules in a dozen zones hold a dozen
    /// parsed zones, not 10,000. Per thread, so no lock is held across a `fork`; bounded by the
    /// names tzdata has. A tzdata upgrade reaches a process that started before it when it
    /// starts again (the packages restart the daemon).
    static READ: RefCell<HashMap<Box<str>, Zone>> = RefCell::new(HashMap::new());

    static UTC: Zone = Zone {
        inner: Arc::new(ZoneRules {
            name: "UTC".into(),
            rules: utc_rules(),
        }),
    };
}

impl Zone {
    /// UTC, which needs no file (a host without tzdata still has it); one per thread, as
    /// every other zone, so 10,000 schedules in UTC share it.
    pub fn utc() -> Zone {
        UTC.with(Zone::clone)
    }

    /// The zone `name` (e.g. `Europe/Berlin`), read from the host's tzdata once per thread.
    pub fn named(name: &str) -> Result<Zone, ZoneError> {
        if name == "UTC" {
            return Ok(Zone::utc());
        }
        if let Some(zone) = READ.with(|read| read.borrow().get(name).cloned()) {
            return Ok(zone);
        }
        let zone = Zone::read(name)?;
        READ.with(|read| read.borrow_mut().insert(name.into(), zone.clone()));
        Ok(zone)
    }

    /// Reads `name`'s file, uncached.
    fn read(name: &str) -> Result<Zone, ZoneError> {
        if !is_zone_name(name) {
            return Err(ZoneError::Unknown);
        }
        let path = PathBuf::from(ZONEINFO_DIR).join(name);
        let unreadable = |reason: String| ZoneError::Unreadable {
            path: path.clone(),
            reason,
        };
        let bytes = read_small_file(&path).map_err(|e| match is_absent(&e) {
            true => ZoneError::Unknown,
            false => unreadable(e.to_string()),
        })?;
        let rules = tz::TimeZone::from_tz_data(&bytes)
            .map_err(|e| unreadable(format!("not a compiled time zone ({e})")))?;
        // The `right/` zones count leap seconds in their instants: ours are POSIX time.
        if !rules.as_ref().leap_seconds().is_empty() {
            return Err(ZoneError::Unknown);
        }
        Ok(Zone {
            inner: Arc::new(ZoneRules {
                name: name.into(),
                rules,
            }),
        })
    }

    /// The earliest and latest instants whose reading in this zone is `local` (seconds of the
    /// wall clock, counted as if it were UTC), from the offsets in force a day before, at and a
    /// day after it: each offset `o` found gives the instant `local - o` if `o` is in force
    /// then. Every offset a reading can have is among them while each lasts longer than a day,
    /// which the unit test below checks against tz-rs's exhaustive search at every transition
    /// of every zone. `None`, a gap or a miss, is left to that search.
    fn readings(&self, local: i64) -> Option<(i64, i64)> {
        if let Some(instant) = self.steady_reading(local) {
            return Some((instant, instant));
        }
        let mut found: Option<(i64, i64)> = None;
        for probe in [local - DAY, local, local + DAY] {
            let offset = i64::from(self.local_type_at(probe).ut_offset());
            let instant = local - offset;
            if i64::from(self.local_type_at(instant).ut_offset()) == offset {
                found = Some(match found {
                    None => (instant, instant),
                    Some((earlier, later)) => (earlier.min(instant), later.max(instant)),
                });
            }
        }
        found
    }

    /// The one reading of `local` when no transition of the file lies within two days of it
    /// (an offset is less than a day, so every reading does), and the file's transitions go on
    /// after that (past the last one, the POSIX rule at its end decides): one binary search
    /// and one look-up, where most local times are.
    fn steady_reading(&self, local: i64) -> Option<i64> {
        let transitions = self.inner.rules.as_ref().transitions();
        let (from, to) = (local - 2 * DAY, local + 2 * DAY);
        let first_after = transitions.partition_point(|t| t.unix_leap_time() < from);
        match transitions.get(first_after) {
            Some(next) if next.unix_leap_time() > to => {
                Some(local - i64::from(self.local_type_at(local).ut_offset()))
            }
            _ => None,
        }
    }

    /// `readings` by tz-rs's search through every local time type (slower: it allocates).
    fn readings_searched(&self, local: &NaiveDateTime) -> Option<(i64, i64)> {
        let found = tz::DateTime::find(
            local.year(),
            u8::try_from(local.month()).ok()?,
            u8::try_from(local.day()).ok()?,
            u8::try_from(local.hour()).ok()?,
            u8::try_from(local.minute()).ok()?,
            u8::try_from(local.second()).ok()?,
            local.nanosecond().min(999_999_999),
            self.inner.rules.as_ref(),
        )
        .ok()?;
        found
            .into_inner()
            .into_iter()
            .filter_map(|kind| match kind {
                tz::datetime::FoundDateTimeKind::Normal(t) => Some(t.unix_time()),
                tz::datetime::FoundDateTimeKind::Skipped { .. } => None,
            })
            .fold(None, |found, t| match found {
                None => Some((t, t)),
                Some((earlier, later)) => Some((t.min(earlier), t.max(later))),
            })
    }

    /// The IANA name, as given.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The local time type in force at `unix_time`. Never fails: tz-rs refuses only instants
    /// beyond its arithmetic, for which the last known type (or UTC) stands.
    fn local_type_at(&self, unix_time: i64) -> tz::LocalTimeType {
        let rules = self.inner.rules.as_ref();
        match rules.find_local_time_type(unix_time) {
            Ok(found) => *found,
            Err(_) => rules
                .local_time_types()
                .last()
                .copied()
                .unwrap_or(tz::LocalTimeType::utc()),
        }
    }

    fn offset_at(&self, unix_time: i64) -> ZoneOffset {
        let local = self.local_type_at(unix_time);
        ZoneOffset {
            zone: self.clone(),
            fixed: fixed(local.ut_offset()),
            abbreviation: Abbreviation::of(local.time_zone_designation()),
        }
    }
}

/// UTC, abbreviated `UTC` as the file of that name has it (tz-rs's own UTC has no abbreviation).
fn utc_rules() -> tz::TimeZone {
    tz::LocalTimeType::new(0, false, Some(b"UTC"))
        .ok()
        .and_then(|utc| tz::TimeZone::new(Vec::new(), vec![utc], Vec::new(), None).ok())
        .unwrap_or_else(tz::TimeZone::utc)
}

/// The IANA names' form (theory.html: ASCII letters, digits, `.`, `-`, `_`, `+` in components
/// separated by `/`, never `.` or `..`), less the files tzdata installs beside the zones:
/// `posix/` and `right/` copies, `localtime` (the host's own, by link) and `posixrules`.
pub fn is_zone_name(name: &str) -> bool {
    let component = |c: &str| {
        !c.is_empty()
            && !c.starts_with('.')
            && !c.starts_with('-')
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
    };
    let first = name.split('/').next().unwrap_or("");
    name.len() <= 255
        && name.split('/').all(component)
        && !matches!(first, "posix" | "right" | "localtime" | "posixrules")
}

/// The names in the host's tzdata that equal `text` but for case (`europe/berlin`).
pub fn same_name_but_case(text: &str) -> Option<String> {
    listed_names(true)
        .ok()?
        .into_iter()
        .find(|name| name.eq_ignore_ascii_case(text))
}

/// The names the host's `tzdata.zi` lists: each Zone's (`Z NAME …`) and, with `links`, each
/// Link's (`L TARGET NAME`), in the file's order.
pub fn listed_names(links: bool) -> std::io::Result<Vec<String>> {
    let list = std::fs::read_to_string(PathBuf::from(ZONEINFO_DIR).join(NAME_LIST))?;
    Ok(list
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            match fields.next()? {
                "Z" => fields.next(),
                "L" if links => fields.nth(1),
                _ => None,
            }
        })
        .map(str::to_string)
        .collect())
}

/// Reads a regular file of at most `LARGEST_ZONE_FILE` bytes. Opened non-blocking: a FIFO
/// put in the zones' place would otherwise stop a login at `open`.
fn read_small_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_dir() {
        return Err(std::io::Error::from_raw_os_error(Errno::EISDIR as i32));
    }
    if !kind.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(LARGEST_ZONE_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > LARGEST_ZONE_FILE {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "larger than any compiled time zone",
        ));
    }
    Ok(bytes)
}

/// Not found, a directory, or a path through a file: no zone of that name.
fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
        || e.raw_os_error() == Some(Errno::EISDIR as i32)
        || e.raw_os_error() == Some(Errno::ENOTDIR as i32)
}

fn fixed(seconds: i32) -> FixedOffset {
    FixedOffset::east_opt(seconds).unwrap_or_else(|| Utc.fix())
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Zones are the same zone when their names are: the name is what the store keeps.
impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Zone {}

/// A zone's abbreviation (`CET`, `-03`), kept inline: an offset is made for every conversion.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Abbreviation {
    bytes: [u8; 15],
    len: u8,
}

impl Abbreviation {
    fn of(text: &str) -> Abbreviation {
        let mut bytes = [0u8; 15];
        let len = text.len().min(bytes.len());
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Abbreviation {
            bytes,
            len: len as u8,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// The offset a zone has at one instant, with its abbreviation, which `%Z` prints.
#[derive(Clone)]
pub struct ZoneOffset {
    zone: Zone,
    fixed: FixedOffset,
    abbreviation: Abbreviation,
}

impl Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Debug for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.abbreviation.as_str(), self.fixed)
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.abbreviation.as_str() {
            "" => write!(f, "{}", self.fixed),
            abbreviation => f.write_str(abbreviation),
        }
    }
}

impl TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Zone {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<ZoneOffset> {
        match local.and_hms_opt(0, 0, 0) {
            Some(midnight) => self.offset_from_local_datetime(&midnight),
            None => MappedLocalTime::None,
        }
    }

    /// The offsets under which `local` is a real reading of the clock: none in a gap, two in
    /// a fold (earlier instant first), as chrono expects.
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<ZoneOffset> {
        match self.readings(local.and_utc().timestamp()) {
            Some((earlier, later)) if earlier == later => {
                MappedLocalTime::Single(self.offset_at(earlier))
            }
            Some((earlier, later)) => {
                MappedLocalTime::Ambiguous(self.offset_at(earlier), self.offset_at(later))
            }
            None => match self.readings_searched(local) {
                Some((earlier, later)) if earlier == later => {
                    MappedLocalTime::Single(self.offset_at(earlier))
                }
                Some((earlier, later)) => {
                    MappedLocalTime::Ambiguous(self.offset_at(earlier), self.offset_at(later))
                }
                None => MappedLocalTime::None,
            },
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        match utc.and_hms_opt(0, 0, 0) {
            Some(midnight) => self.offset_from_utc_datetime(&midnight),
            None => self.offset_at(0),
        }
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.offset_at(utc.and_utc().timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::LocalResult;

    fn berlin() -> Zone {
        Zone::named("Europe/Berlin").unwrap()
    }

    #[test]
    fn names_outside_the_iana_form_are_refused_before_any_file_is_opened() {
        for bad in [
            "",
            "/etc/passwd",
            "../etc/passwd",
            "Europe/../../etc/passwd",
            "Europe//Berlin",
            "Europe/Berlin/",
            "right/Europe/Berlin",
            "posix/Europe/Berlin",
            "localtime",
            "posixrules",
            "Europe/Ber lin",
            "-Europe",
            "Europe/Berlin\n",
        ] {
            assert!(!is_zone_name(bad), "{bad:?}");
            assert!(
                matches!(Zone::named(bad), Err(ZoneError::Unknown)),
                "{bad:?}"
            );
        }
        for good in [
            "Europe/Berlin",
            "Etc/GMT+5",
            "GMT-0",
            "EST5EDT",
            "America/Port-au-Prince",
        ] {
            assert!(is_zone_name(good), "{good:?}");
        }
    }

    #[test]
    fn a_missing_name_or_a_directory_is_unknown() {
        assert!(matches!(
            Zone::named("Mars/Olympus"),
            Err(ZoneError::Unknown)
        ));
        assert!(matches!(Zone::named("Europe"), Err(ZoneError::Unknown)));
    }

    #[test]
    fn offsets_and_abbreviations_follow_daylight_saving() {
        let zone = berlin();
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
        let summer = Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(
            winter.with_timezone(&zone).format("%H:%M %Z").to_string(),
            "13:00 CET"
        );
        assert_eq!(
            summer.with_timezone(&zone).format("%H:%M %Z").to_string(),
            "14:00 CEST"
        );
        // Past the last transition in the file, the POSIX rule at its end applies.
        let later = Utc.with_ymd_and_hms(2091, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(
            later.with_timezone(&zone).format("%H:%M %Z").to_string(),
            "14:00 CEST"
        );
    }

    #[test]
    fn a_gap_has_no_reading_and_a_fold_two() {
        let zone = berlin();
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert!(matches!(zone.from_local_datetime(&gap), LocalResult::None));
        let fold = NaiveDate::from_ymd_opt(2026, 10, 25)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        match zone.from_local_datetime(&fold) {
            LocalResult::Ambiguous(a, b) => {
                assert_eq!(a.to_rfc3339(), "2026-10-25T02:30:00+02:00");
                assert_eq!(b.to_rfc3339(), "2026-10-25T02:30:00+01:00");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The probes of `readings` against tz-rs's exhaustive search, around every transition
    /// since 1970 of every zone the host has (local times every 20 minutes from two hours
    /// before the earlier reading of the transition to two hours after the later).
    #[test]
    fn readings_agree_with_the_exhaustive_search_around_every_transition() {
        let zones = listed_names(false).unwrap();
        assert!(zones.len() > 300);
        let mut checked = 0u64;
        for name in &zones {
            let zone = Zone::named(name).unwrap();
            let rules = zone.inner.rules.as_ref();
            for transition in rules.transitions() {
                let at = transition.unix_leap_time();
                if at < 0 {
                    continue;
                }
                let before = i64::from(zone.local_type_at(at - 1).ut_offset());
                let after = i64::from(zone.local_type_at(at).ut_offset());
                let mut local = at + before.min(after) - 7200;
                while local <= at + before.max(after) + 7200 {
                    let naive = chrono::DateTime::from_timestamp(local, 0)
                        .unwrap()
                        .naive_utc();
                    let searched = zone.readings_searched(&naive);
                    let probed = zone.readings(local).or(searched);
                    assert_eq!(probed, searched, "{name} at {naive}");
                    assert_eq!(zone.steady_reading(local), None, "{name} at {naive}");
                    checked += 1;
                    local += 1200;
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    /// Away from transitions, the single look-up of `steady_reading` against the search: noon
    /// on the first of every month from 1970 to 2040, in every zone.
    #[test]
    fn steady_readings_agree_with_the_exhaustive_search() {
        let mut steady = 0u64;
        for name in listed_names(false).unwrap() {
            let zone = Zone::named(&name).unwrap();
            for year in 1970..=2040 {
                for month in 1..=12 {
                    let naive = NaiveDate::from_ymd_opt(year, month, 1)
                        .unwrap()
                        .and_hms_opt(12, 0, 0)
                        .unwrap();
                    let local = naive.and_utc().timestamp();
                    if let Some(instant) = zone.steady_reading(local) {
                        let searched = zone.readings_searched(&naive);
                        assert_eq!(Some((instant, instant)), searched, "{name} at {naive}");
                        steady += 1;
                    }
                }
            }
        }
        assert!(steady > 100_000, "{steady}");
    }

    #[test]
    fn a_fifo_a_directory_or_an_oversized_file_is_no_zone_and_nothing_waits() {
        use nix::sys::stat::Mode;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let refused = read_small_file(&fifo).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidData);
        assert!(!is_absent(&refused));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; LARGEST_ZONE_FILE as usize + 1]).unwrap();
        assert_eq!(
            read_small_file(&big).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        assert!(is_absent(&read_small_file(dir.path()).unwrap_err()));
        assert!(is_absent(&read_small_file(&big.join("below")).unwrap_err()));
    }

    #[test]
    fn utc_needs_no_file_and_names_compare_equal() {
        let utc = Zone::utc();
        assert_eq!(utc.name(), "UTC");
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap();
        assert_eq!(
            t.with_timezone(&utc).format("%H:%M %Z").to_string(),
            "17:00 UTC"
        );
        assert_eq!(berlin(), berlin());
        assert_ne!(berlin(), utc);
        // Read once per thread: every schedule in a zone shares its rules.
        assert!(Arc::ptr_eq(&berlin().inner, &berlin().inner));
        assert!(Arc::ptr_eq(
            &Zone::utc().inner,
            &Zone::named("UTC").unwrap().inner
        ));
    }

    #[test]
    fn a_misspelt_case_is_found_in_the_list() {
        assert_eq!(
            same_name_but_case("europe/berlin").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            same_name_but_case("us/pacific").as_deref(),
            Some("US/Pacific")
        );
        assert_eq!(same_name_but_case("Mars/Olympus"), None);
    }
}
