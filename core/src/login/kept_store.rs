//! The store a login keeps open from one PAM hook to the next (see `KeptStore`).

use std::path::Path;

use crate::store::Store;

/// A store one hook of a login leaves open for the next hooks of the same handle (`account`,
/// `open_session`, `close_session`), so that a login opens the store once, not three times:
/// opening it costs more than the login's two commits (SQLite reads the schema, and a
/// process alone with the store rebuilds the WAL's index). Fork-safe: only the process that
/// opened it ever uses or closes it; in another (a child that inherited the handle) it is
/// left untouched and never closed. Used only while the file at the path is the one opened.
pub struct KeptStore {
    owner: u32,
    file: (u64, u64),
    store: Option<Store>,
}

impl KeptStore {
    pub(super) fn new(store: Store) -> Option<KeptStore> {
        let file = file_id(store.path())?;
        Some(KeptStore {
            owner: std::process::id(),
            file,
            store: Some(store),
        })
    }

    /// The store kept for `db`, taken out; `None` in another process, for another path, or
    /// when the file there is no longer the one opened (replaced, removed).
    pub(super) fn take(&mut self, db: &Path) -> Option<Store> {
        if self.owner != std::process::id() {
            return None;
        }
        let store = self.store.take()?;
        (store.path() == db && file_id(db) == Some(self.file)).then_some(store)
    }

    /// Keeps `store` in this slot, in place of what it held (which is closed, or, from
    /// another process, left alone).
    pub(super) fn put(&mut self, store: Store) {
        let Some(file) = file_id(store.path()) else {
            return;
        };
        if self.owner != std::process::id() {
            std::mem::forget(self.store.take());
        }
        *self = KeptStore {
            owner: std::process::id(),
            file,
            store: Some(store),
        };
    }

    /// At the handle's end: closes the store in the process that opened it; in another one
    /// it is never touched (SQLite's connections must not cross a fork) and its memory is
    /// left to the process's exit or exec.
    pub fn release(mut self) {
        if self.owner != std::process::id() {
            std::mem::forget(self.store.take());
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
