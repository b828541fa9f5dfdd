//! The current schedules the daemon's reading side decides `account` and the notices from,
//! read again from the store only when a schedule version was written since: a login's two
//! requests then cost one look at the schedules' mark each, not a read and validation of
//! every current schedule. Of each it keeps what the decisions weigh (about 130 bytes, as the
//! enforcer does; a whole row is about 550), and reads the whole row back by its version for
//! the few that concern a login: a refusal's or a notice's text.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Error;
use crate::policy::{Scheduled, Timing};
use crate::store::{ScheduleRecord, Store};

/// What the reading side keeps of a current schedule.
pub struct HeldSchedule {
    /// The rowid of its version, to read the whole row back.
    version: i64,
    group: Box<str>,
    kick: bool,
    lockout_minutes: u32,
    timing: Timing,
}

impl HeldSchedule {
    fn of(version: i64, record: &ScheduleRecord) -> HeldSchedule {
        HeldSchedule {
            version,
            group: record.schedule.group.as_str().into(),
            kick: record.schedule.kick,
            lockout_minutes: record.schedule.lockout_minutes,
            timing: Timing::of(record),
        }
    }

    /// The whole row of this version, from `store`.
    pub fn whole_row<'a>(&self, store: &Store) -> Result<Cow<'a, ScheduleRecord>, Error> {
        let record = store.schedule_version(self.version)?.ok_or_else(|| {
            Error::io(
                format!(
                    "{}: schedule version {}",
                    store.path().display(),
                    self.version
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        Ok(Cow::Owned(record))
    }
}

impl Scheduled for HeldSchedule {
    fn timing(&self) -> Cow<'_, Timing> {
        Cow::Borrowed(&self.timing)
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn kick(&self) -> bool {
        self.kick
    }

    fn lockout_minutes(&self) -> u32 {
        self.lockout_minutes
    }
}

/// The current schedules kept, and the mark they were read under.
#[derive(Default)]
pub struct ScheduleCache {
    held: RefCell<Option<(i64, Rc<[HeldSchedule]>)>>,
}

impl ScheduleCache {
    /// The enforceable current schedules of `store` (an invalid row is logged when read).
    pub fn current(&self, store: &Store, log: &dyn Fn(&str)) -> Result<Rc<[HeldSchedule]>, Error> {
        // The mark before the rows: a version written between the two reads leaves a mark
        // older than the rows, so the next call reads them again; never the other way round.
        let mark = store.schedules_mark()?;
        if let Some((held_mark, held)) = &*self.held.borrow() {
            if *held_mark == mark {
                return Ok(Rc::clone(held));
            }
        }
        // Dropped before the new set is read, so that the two are never held at once.
        *self.held.borrow_mut() = None;
        let mut read = Vec::new();
        store.for_each_current_schedule(&mut |version, record| match record {
            Ok(record) => read.push(HeldSchedule::of(version, &record)),
            Err(e) => log(&format!("ignoring an invalid schedule row: {e}")),
        })?;
        let read: Rc<[HeldSchedule]> = read.into();
        *self.held.borrow_mut() = Some((mark, Rc::clone(&read)));
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{RecurrenceInput, ScheduleInput};
    use chrono::Utc;

    fn add(store: &mut Store, group: &str) -> String {
        let input = ScheduleInput {
            group: Some(group.into()),
            recurrence: Some(RecurrenceInput::Daily),
            at: Some("18:00".into()),
            timezone: Some("UTC".into()),
            kick: Some(true),
            message: None,
            lockout: None,
        };
        let schedule = input.into_new(&crate::zone::Zone::utc()).unwrap();
        store
            .add_schedule(&schedule, "test", Utc::now())
            .unwrap()
            .id
    }

    fn groups(schedules: &[HeldSchedule]) -> Vec<String> {
        schedules.iter().map(|r| r.group().to_string()).collect()
    }

    #[test]
    fn a_version_written_since_the_last_read_is_read() {
        let mut store = Store::open_empty_in_memory().unwrap();
        let cache = ScheduleCache::default();
        assert!(cache.current(&store, &|_| {}).unwrap().is_empty());
        add(&mut store, "lab");
        let first = cache.current(&store, &|_| {}).unwrap();
        assert_eq!(groups(&first), ["lab"]);
        // Nothing written since: the same rows, not read again.
        assert!(Rc::ptr_eq(&first, &cache.current(&store, &|_| {}).unwrap()));
        let id = add(&mut store, "students");
        assert_eq!(
            groups(&cache.current(&store, &|_| {}).unwrap()),
            ["lab", "students"]
        );
        store.delete_schedule(&id, "test", Utc::now()).unwrap();
        let current = cache.current(&store, &|_| {}).unwrap();
        assert_eq!(groups(&current), ["lab"]);
        // The whole row comes back by its version.
        let whole = current[0].whole_row(&store).unwrap();
        assert_eq!(whole.schedule.group, "lab");
        assert_eq!(whole.schedule.timezone.name(), "UTC");
    }
}
