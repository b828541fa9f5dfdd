//! What a login keeps in its PAM handle from one hook to the next (see `Kept`).

use std::path::Path;

use crate::sessions::{host_name, ProcessFacts};
use crate::store::Store;

/// What one hook of a login leaves in the handle for the next hooks of the same handle
/// (`account`, `open_session`, `close_session`), in the process that made it:
/// - the store, so that a login opens it once, not three times: opening it costs more than
///   the login's two commits (SQLite reads the schema, and a process alone with the store
///   rebuilds the WAL's index). Used only while the file at the path is the one opened;
/// - the facts `open_session` read of its process in `/proc`, which `close_session` in the
///   same process reads again otherwise.
///
/// Fork-safe: only the process that made it ever uses it or closes its store; in another (a
/// child that inherited the handle) it is as if empty, and its store is never touched.
pub struct Kept {
    owner: u32,
    /// The store and the (device, inode) of the file it opened.
    store: Option<(Store, (u64, u64))>,
    process: Option<ProcessFacts>,
}

impl Kept {
    pub(super) fn new() -> Kept {
        Kept {
            owner: std::process::id(),
            store: None,
            process: None,
        }
    }

    fn is_mine(&self) -> bool {
        self.owner == std::process::id()
    }

    /// Makes this the current process's: in another process than its maker, forgets what
    /// the maker left (its store is never closed here, nor used).
    fn claim(&mut self) {
        if !self.is_mine() {
            std::mem::forget(self.store.take());
            *self = Kept::new();
        }
    }

    /// The store kept for `db`, taken out; `None` in another process, for another path, or
    /// when the file there is no longer the one opened (replaced, removed).
    pub(super) fn take_store(&mut self, db: &Path) -> Option<Store> {
        if !self.is_mine() {
            return None;
        }
        let (store, file) = self.store.take()?;
        (store.path() == db && file_id(db) == Some(file)).then_some(store)
    }

    /// Keeps `store`, in place of the one kept before (which is closed).
    pub(super) fn put_store(&mut self, store: Store) {
        self.claim();
        self.store = file_id(store.path()).map(|file| (store, file));
    }

    /// Keeps the facts `open_session` read of this process.
    pub(super) fn put_process(&mut self, facts: ProcessFacts) {
        self.claim();
        self.process = Some(facts);
    }

    /// The facts `close_session` writes with: those `open_session` read, when this process
    /// read them (the pid, its start time and the boot cannot have changed since), with the
    /// host name read again; `None` in another process or when open kept none.
    pub(super) fn process_for_close(&self) -> Option<ProcessFacts> {
        let facts = self.process.as_ref().filter(|_| self.is_mine())?;
        Some(ProcessFacts {
            host: host_name(),
            ..facts.clone()
        })
    }

    /// At the handle's end: closes the store in the process that opened it; in another one
    /// it is never touched (SQLite's connections must not cross a fork) and its memory is
    /// left to the process's exit or exec.
    pub fn release(mut self) {
        if !self.is_mine() {
            std::mem::forget(self.store.take());
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Access;
    use std::time::Duration;

    fn store(dir: &tempfile::TempDir) -> Store {
        let db = dir.path().join("fl.db");
        Store::open(&db, Access::Create, Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn the_maker_gets_back_its_store_and_facts() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = Kept::new();
        kept.put_store(store(&dir));
        let facts = ProcessFacts::of_current_process();
        kept.put_process(facts.clone());
        let again = kept.process_for_close().unwrap();
        assert_eq!(
            (again.pid, again.boot_id, again.pid_start_time, again.cgroup),
            (facts.pid, facts.boot_id, facts.pid_start_time, facts.cgroup)
        );
        assert!(kept.take_store(&dir.path().join("other.db")).is_none());
        kept.put_store(store(&dir));
        assert!(kept.take_store(&dir.path().join("fl.db")).is_some());
        kept.release();
    }

    #[test]
    fn another_process_sees_nothing_and_leaves_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = Kept::new();
        kept.put_store(store(&dir));
        kept.put_process(ProcessFacts::of_current_process());
        // As a child that inherited the handle sees it: made by another pid.
        kept.owner = std::process::id().wrapping_add(1);
        assert!(kept.process_for_close().is_none());
        assert!(kept.take_store(&dir.path().join("fl.db")).is_none());
        assert!(kept.store.is_some(), "the maker's store was taken");
        // What the child keeps replaces the maker's without using it.
        kept.put_process(ProcessFacts::default());
        assert_eq!(kept.owner, std::process::id());
        assert!(kept.store.is_none());
        assert_eq!(kept.process_for_close().unwrap().pid, 0);
    }

    #[test]
    fn a_replaced_store_file_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = Kept::new();
        kept.put_store(store(&dir));
        let db = dir.path().join("fl.db");
        std::fs::rename(&db, dir.path().join("old.db")).unwrap();
        drop(store(&dir));
        assert!(kept.take_store(&db).is_none());
    }
}
