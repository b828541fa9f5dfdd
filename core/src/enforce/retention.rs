//! Housekeeping between logouts: the stale-session sweep (SPEC §5.7) and the pruning of old
//! events for `retention_days`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{chrono, processes, Enforcer, StepReport, PAGE_CACHE_KIB};
use crate::error::Error;
use crate::store::RemovalReason;

/// Rows per transaction when the daemon prunes for `retention_days`.
const RETENTION_BATCH: usize = 2000;
/// A retention prune's page cache (SQLite's default): with 256 KiB, its transactions of
/// thousands of rows spill dirty pages into the WAL and hold the write lock far longer.
const PRUNE_PAGE_CACHE_KIB: u32 = 2000;
/// How often the stale-session sweep runs.
const STALE_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How soon the enforcer looks again after a failed sweep or prune.
const RETRY_SWEEP: chrono::Duration = chrono::Duration::seconds(5);
const RETRY_PRUNE: chrono::Duration = chrono::Duration::minutes(1);

impl Enforcer {
    /// The stale-session sweep and the retention prune, when due; when either is due next.
    pub(super) fn housekeeping(
        &mut self,
        now: DateTime<Utc>,
        report: &mut StepReport,
    ) -> DateTime<Utc> {
        if now >= self.next_sweep {
            match self.sweep_stale(now) {
                Ok(stale) => {
                    report.stale = stale;
                    self.next_sweep = now + chrono(STALE_SWEEP_EVERY);
                }
                Err(e) => {
                    self.write_failure(now, &e);
                    self.next_sweep = now + RETRY_SWEEP;
                }
            }
        }
        let mut wake = self.next_sweep;
        if let Some(days) = self.config.retention_days.filter(|_| self.only.is_none()) {
            if now >= self.next_prune {
                self.next_prune = match self.prune(now, days) {
                    Ok(()) => now + chrono::Duration::hours(1),
                    Err(e) => {
                        self.write_failure(now, &e);
                        now + RETRY_PRUNE
                    }
                };
            }
            wake = wake.min(self.next_prune);
        }
        wake
    }

    /// Retention: events dated more than `days` before `now` are pruned.
    fn prune(&mut self, now: DateTime<Utc>, days: u32) -> Result<(), Error> {
        let cutoff = crate::clock::partition_date(
            now - chrono::Duration::days(i64::from(days)),
            self.store.host_zone(),
        );
        self.store.limit_page_cache(PRUNE_PAGE_CACHE_KIB)?;
        let pruned =
            self.store
                .prune_events_before(&cutoff, RETENTION_BATCH, self.config.fleet.is_some());
        self.store.limit_page_cache(PAGE_CACHE_KIB)?;
        let pruned = pruned?;
        if pruned > 0 {
            (self.log)(&format!(
                "retention: pruned {pruned} events dated before {cutoff}"
            ));
        }
        Ok(())
    }

    /// Sessions from an earlier boot, or whose PAM caller is gone (or its pid reused), are
    /// removed with Reason `stale` (SPEC §5.7).
    pub fn sweep_stale(&mut self, now: DateTime<Utc>) -> Result<usize, Error> {
        let stale: Vec<String> = self
            .store
            .live_sessions()?
            .into_iter()
            .filter(|s| s.boot_id != self.boot_id || !same_process(s.pid, s.pid_start_time))
            .map(|s| s.key)
            .collect();
        let removed = self
            .store
            .remove_sessions(&stale, RemovalReason::Stale, &self.host, now)?;
        if removed > 0 {
            (self.log)(&format!("removed {removed} stale sessions"));
        }
        Ok(removed)
    }
}

/// Whether `pid` still runs the process that opened the session: same start time, and not a
/// zombie (a process that has exited holds no session, even before its parent reaps it).
fn same_process(pid: u32, start: Option<u64>) -> bool {
    let running = processes::scan_one(pid).filter(|p| !p.zombie);
    match (running, start) {
        (Some(p), Some(then)) => p.start_time == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}
