//! The `Days` bit field of weekly schedules: Sunday=1, Monday=2 … Saturday=64.

use std::fmt;

use chrono::Weekday;

use crate::error::Error;

/// Short names in bit order (bit 0 = Sunday), the canonical rendering.
const SHORT: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// A non-empty set of weekdays (1..=127).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(127);
    pub const WEEKDAYS: Days = Days(62);
    pub const WEEKEND: Days = Days(65);

    /// Accepts the stored integer form; anything outside 1..=127 is rejected.
    pub fn from_bits(bits: i64) -> Result<Days, Error> {
        if (1..=127).contains(&bits) {
            Ok(Days(bits as u8))
        } else {
            Err(Error::invalid(
                "days",
                format!("{bits} is not a day set (1..127: Sunday=1, Monday=2 … Saturday=64)"),
            ))
        }
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & bit(day) != 0
    }

    /// Parses what an administrator types: `62`, `Mon-Fri`, `Mon,Wed,Fri`, `weekdays`,
    /// `weekend`, `all`, full or three-letter names, any case, combinable with commas.
    /// A range wraps around the week (`Fri-Mon` is Friday to Monday).
    pub fn parse(text: &str) -> Result<Days, Error> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::invalid("days", "empty day set"));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let bits: i64 = trimmed
                .parse()
                .map_err(|_| Error::invalid("days", format!("{trimmed:?} is too large")))?;
            return Days::from_bits(bits);
        }
        let mut bits = 0u8;
        for part in trimmed.split(',') {
            let part = part.trim();
            bits |= match part.to_ascii_lowercase().as_str() {
                "all" | "every" | "daily" => Days::ALL.0,
                "weekdays" | "weekday" => Days::WEEKDAYS.0,
                "weekend" | "weekends" => Days::WEEKEND.0,
                _ => match part.split_once('-') {
                    Some((from, to)) => range_bits(day_index(from)?, day_index(to)?),
                    None => 1 << day_index(part)?,
                },
            };
        }
        Days::from_bits(i64::from(bits))
    }
}

fn bit(day: Weekday) -> u8 {
    1 << day.num_days_from_sunday()
}

fn range_bits(from: usize, to: usize) -> u8 {
    let mut bits = 0u8;
    let mut day = from;
    loop {
        bits |= 1 << day;
        if day == to {
            return bits;
        }
        day = (day + 1) % 7;
    }
}

fn day_index(name: &str) -> Result<usize, Error> {
    let lower = name.trim().to_ascii_lowercase();
    let found = (0..7).find(|&i| lower == SHORT[i].to_ascii_lowercase() || lower == LONG[i]);
    found.ok_or_else(|| {
        Error::invalid(
            "days",
            format!(
                "unknown day {:?} (use Sun Mon Tue Wed Thu Fri Sat, full names, ranges like Mon-Fri, weekdays, weekend, all, or 1..127)",
                name.trim()
            ),
        )
    })
}

/// Canonical rendering: three-letter names in week order from Sunday, comma separated.
impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| SHORT[i])
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_names_and_numbers() {
        for bits in 1..=127i64 {
            let days = Days::from_bits(bits).unwrap();
            let text = days.to_string();
            assert_eq!(Days::parse(&text).unwrap(), days, "names {text}");
            assert_eq!(Days::parse(&bits.to_string()).unwrap(), days);
            assert_eq!(Days::parse(&text.to_uppercase()).unwrap(), days);
            assert_eq!(i64::from(days.bits()), bits);
        }
    }

    #[test]
    fn zero_and_out_of_range_numbers_are_rejected() {
        for bad in [0i64, 128, 255, -1, i64::MAX] {
            assert!(Days::from_bits(bad).is_err(), "{bad}");
        }
        assert!(Days::parse("0").is_err());
        assert!(Days::parse("128").is_err());
        assert!(Days::parse("99999999999999999999999").is_err());
    }

    #[test]
    fn names_ranges_and_keywords() {
        let cases = [
            ("Mon-Fri", 62),
            ("weekdays", 62),
            ("WEEKEND", 65),
            ("all", 127),
            ("Mon,Wed,Fri", 2 + 8 + 32),
            ("monday, Wednesday ,FRI", 2 + 8 + 32),
            ("Fri-Mon", 32 + 64 + 1 + 2),
            ("Sun", 1),
            ("Saturday", 64),
            ("Sat-Sat", 64),
            ("weekend,Wed", 65 + 8),
        ];
        for (text, bits) in cases {
            assert_eq!(Days::parse(text).unwrap().bits(), bits, "{text}");
        }
    }

    #[test]
    fn canonical_rendering() {
        assert_eq!(Days(62).to_string(), "Mon,Tue,Wed,Thu,Fri");
        assert_eq!(Days(127).to_string(), "Sun,Mon,Tue,Wed,Thu,Fri,Sat");
        assert_eq!(Days(65).to_string(), "Sun,Sat");
    }

    #[test]
    fn bad_names_name_the_field() {
        for bad in ["", "Funday", "Mon-", "Mon,,Tue", "Mo", "1,2", "Mon-Funday"] {
            let err = Days::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("days:"), "{bad}: {err}");
        }
    }

    #[test]
    fn contains_uses_sunday_first_bits() {
        let days = Days::parse("Sun,Wed").unwrap();
        assert!(days.contains(Weekday::Sun));
        assert!(days.contains(Weekday::Wed));
        assert!(!days.contains(Weekday::Mon));
    }
}
