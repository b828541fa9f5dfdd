//! The read of `account`: only the current kick schedules, the ones that can lock a user out
//! or end a session, found without building the whole current set.

use super::schedules::{RawRow, COLUMNS};
use super::{classify, ScheduleRecord, Store};
use crate::error::Error;

impl Store {
    /// The current schedules with Kick = 1 (per Id the latest version, unless deleted), in
    /// the order they were written. Rows that fail validation are returned apart, as by
    /// `current_schedules_lenient`.
    pub fn current_kick_schedules_lenient(
        &self,
    ) -> Result<(Vec<ScheduleRecord>, Vec<Error>), Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM LogoutSchedules s \
             WHERE Kick = 1 AND Event <> 'deleted' \
               AND rowid = (SELECT max(rowid) FROM LogoutSchedules v WHERE v.Id = s.Id) \
             ORDER BY rowid"
        );
        let fail = |e| classify(&self.path, "reading the kick schedules", e);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(fail)?;
        let raws = stmt
            .query_map([], RawRow::read)
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for raw in raws {
            match raw.into_record() {
                Ok(record) => good.push(record),
                Err(e) => bad.push(e),
            }
        }
        Ok((good, bad))
    }
}
