//! Baselines for the benchmarks: what the hardware and SQLite cost before any logic of ours,
//! measured on the same database file in the same run.

use std::time::{Duration, Instant};

use rusqlite::TransactionBehavior;

use super::{classify, Store};
use crate::error::Error;

impl Store {
    /// `count` bare durable commits: a plain INSERT of a row as wide as a schedule version,
    /// each in its own write transaction, in WAL mode with synchronous=FULL and SQLite's own
    /// WAL handling (no size limit: the WAL is overwritten in place, SQLite's best case; the
    /// store's bound would make many of these commits grow the file). Uses a scratch table
    /// that is dropped afterwards. The connection keeps no WAL bound after it, so every later
    /// write of ours on it would copy the WAL first: measure on a store of its own.
    pub fn bare_insert_commits(&mut self, count: usize) -> Result<Duration, Error> {
        let path = self.path.clone();
        let fail = |e| classify(&path, "measuring bare commits", e);
        self.conn
            .execute_batch("PRAGMA journal_size_limit = -1; CREATE TABLE IF NOT EXISTS BenchBaseline (a TEXT, b TEXT, c TEXT, d TEXT, e INTEGER)")
            .map_err(fail)?;
        let started = Instant::now();
        for i in 0..count {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            tx.prepare_cached("INSERT INTO BenchBaseline VALUES ('2026-11-23', ?1, 'students', 'Lab closes at 18:00', ?2)")
                .and_then(|mut stmt| stmt.execute(rusqlite::params![format!("{i:036}"), i as i64]))
                .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        let elapsed = started.elapsed();
        self.conn
            .execute_batch("DROP TABLE BenchBaseline")
            .map_err(fail)?;
        Ok(elapsed)
    }
}
