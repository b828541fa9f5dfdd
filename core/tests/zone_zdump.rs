//! Every zone the host's tzdata names, read by `Zone`, against `zdump -v` (the tz project's own
//! reader, from libc-bin) over the same files: at each instant zdump lists (the second before
//! and the second of every transition from 1970 to 2100, so the POSIX rule at a file's end is
//! covered too) the offset and abbreviation agree, and the local time zdump prints reads back
//! to that instant.

use std::process::{Command, Stdio};

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use forcelogout_core::zone::{listed_names, Zone};

/// `zdump -v` over `names`, in a few processes at once (it takes seconds per hundred zones).
fn zdump(names: &[String]) -> String {
    let running: Vec<_> = names
        .chunks(names.len().div_ceil(4))
        .map(|chunk| {
            Command::new("zdump")
                .args(["-v", "-c", "1970,2100"])
                .args(chunk)
                .stdout(Stdio::piped())
                .spawn()
                .expect("zdump (libc-bin) runs")
        })
        .collect();
    let mut text = String::new();
    for child in running {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        text.push_str(&String::from_utf8(output.stdout).unwrap());
    }
    text
}

/// One line of `zdump -v`: the instant, the local reading, its abbreviation and offset.
struct Listed {
    utc: DateTime<Utc>,
    local: NaiveDateTime,
    abbreviation: String,
    offset: i32,
}

/// `Europe/Berlin  Sun Mar 29 00:59:59 2026 UT = Sun Mar 29 01:59:59 2026 CET isdst=0 gmtoff=3600`
fn parse_line(line: &str) -> Option<(String, Listed)> {
    let (name, rest) = line.split_once(char::is_whitespace)?;
    let (universal, local) = rest.trim_start().split_once(" UT = ")?;
    let utc = NaiveDateTime::parse_from_str(universal, "%a %b %e %H:%M:%S %Y")
        .ok()?
        .and_utc();
    let fields: Vec<&str> = local.split_ascii_whitespace().collect();
    let [weekday, month, day, time, year, abbreviation, _isdst, gmtoff] = fields[..] else {
        return None;
    };
    let local = NaiveDateTime::parse_from_str(
        &format!("{weekday} {month} {day} {time} {year}"),
        "%a %b %e %H:%M:%S %Y",
    )
    .ok()?;
    let offset = gmtoff.strip_prefix("gmtoff=")?.parse().ok()?;
    Some((
        name.to_string(),
        Listed {
            utc,
            local,
            abbreviation: abbreviation.to_string(),
            offset,
        },
    ))
}

#[test]
fn every_zone_agrees_with_zdump_from_1970_to_2100() {
    // Links are the same files under other names: the test below reads each of them.
    let names = listed_names(false).expect("tzdata.zi");
    assert!(names.len() > 300, "tzdata.zi names {} zones", names.len());
    let text = zdump(&names);
    let mut checked = 0;
    let mut zone: Option<Zone> = None;
    for line in text.lines() {
        // The "-c" ends are printed as NULL or as the range's edges: no transition.
        let Some((name, listed)) = parse_line(line) else {
            continue;
        };
        if zone.as_ref().map(Zone::name) != Some(name.as_str()) {
            zone = Some(Zone::named(&name).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        let zone = zone.as_ref().unwrap();
        let ours = listed.utc.with_timezone(zone);
        assert_eq!(
            ours.offset().fix().local_minus_utc(),
            listed.offset,
            "{line}"
        );
        assert_eq!(ours.format("%Z").to_string(), listed.abbreviation, "{line}");
        assert_eq!(ours.naive_local(), listed.local, "{line}");
        let back = match zone.from_local_datetime(&listed.local) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
            LocalResult::None => vec![],
        };
        assert!(back.contains(&listed.utc), "{line}: read back as {back:?}");
        checked += 1;
    }
    assert!(checked > 50_000, "only {checked} instants listed");
}

#[test]
fn every_name_in_the_list_is_a_zone_and_none_counts_leap_seconds() {
    let names = listed_names(true).expect("tzdata.zi");
    assert!(
        names.len() > 500,
        "tzdata.zi names {} zones and links",
        names.len()
    );
    for name in names {
        let zone = Zone::named(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(zone.name(), name);
    }
    assert!(Zone::named("right/Europe/Berlin").is_err());
    let fixed = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    let tokyo = Zone::named("Asia/Tokyo").unwrap();
    assert_eq!(
        fixed.with_timezone(&tokyo).format("%H:%M %Z").to_string(),
        "09:00 JST"
    );
}
