//! The current schedules the daemon's reading side decides `account` and the notices from,
//! read again from the store only when a schedule version was written since: a login's two
//! requests then cost one look at the schedules' mark each, not a read and validation of
//! every current schedule.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Error;
use crate::policy;
use crate::store::{ScheduleRecord, Store};

/// The enforceable current schedules and the mark they were read under.
#[derive(Default)]
pub struct ScheduleCache {
    held: RefCell<Option<(i64, Rc<[ScheduleRecord]>)>>,
}

impl ScheduleCache {
    /// The enforceable current schedules of `store` (an invalid row is logged when read).
    pub fn current(
        &self,
        store: &Store,
        log: &dyn Fn(&str),
    ) -> Result<Rc<[ScheduleRecord]>, Error> {
        // The mark before the rows: a version written between the two reads leaves a mark
        // older than the rows, so the next call reads them again; never the other way round.
        let mark = store.schedules_mark()?;
        if let Some((held_mark, held)) = &*self.held.borrow() {
            if *held_mark == mark {
                return Ok(Rc::clone(held));
            }
        }
        let read: Rc<[ScheduleRecord]> =
            policy::enforceable(store.current_schedules_lenient()?, log).into();
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

    fn groups(schedules: &[ScheduleRecord]) -> Vec<String> {
        schedules.iter().map(|r| r.schedule.group.clone()).collect()
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
        assert_eq!(groups(&cache.current(&store, &|_| {}).unwrap()), ["lab"]);
    }
}
