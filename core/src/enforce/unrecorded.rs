//! What the enforcer did but could not record yet, because another process held the store's
//! write lock (an administrator's `sqlite3` shell inside a transaction, say): logouts whose
//! sessions it ended, and ignores it was told. Enforcement does not wait for the store: it
//! acts on these at once, keeps them in memory, and writes each once, in the order they
//! happened, when the store can be written again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Instance;
use crate::error::Error;
use crate::store::{LiveSession, RemovalReason, Store};

/// A logout that fell due: the sessions it ended, each with its user, and when.
#[derive(Clone, Debug)]
pub(super) struct FiredLogout {
    pub instance: Instance,
    pub ended: Vec<LiveSession>,
    pub reason: RemovalReason,
    pub at: DateTime<Utc>,
}

/// `forcelogoutctl ignore` (or "Keep working") by `user` at `at`.
#[derive(Clone, Debug)]
pub(super) struct PendingIgnore {
    pub user: String,
    pub uid: u32,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(super) struct Unrecorded {
    fired: Vec<FiredLogout>,
    ignores: Vec<PendingIgnore>,
}

impl Unrecorded {
    pub fn is_empty(&self) -> bool {
        self.fired.is_empty() && self.ignores.is_empty()
    }

    pub fn keep_fired(&mut self, fired: FiredLogout) {
        self.fired.push(fired);
    }

    pub fn keep_ignore(&mut self, ignore: PendingIgnore) {
        self.ignores.push(ignore);
    }

    /// Whether the logout `id` due at `due` has fired already (and waits to be recorded).
    pub fn has_fired(&self, id: &str, due: DateTime<Utc>) -> bool {
        self.fired
            .iter()
            .any(|f| f.instance.record.id == id && f.instance.due == due)
    }

    /// Whether `user` chose to keep working during the countdown of `instance`.
    pub fn ignored(&self, user: &str, instance: &Instance) -> bool {
        self.ignores
            .iter()
            .any(|i| i.user == user && i.at >= instance.warn_from && i.at <= instance.due)
    }

    /// Writes what is kept, oldest first, each in its own transactions; stops at the first
    /// failure (the store is still busy) and keeps the rest. Returns the error, if any.
    pub fn write(&mut self, store: &mut Store, host: &str) -> Result<(), Error> {
        while let Some(ignore) = self.ignores.first() {
            store.ignore_warnings(&ignore.user, ignore.uid, host, ignore.at)?;
            self.ignores.remove(0);
        }
        while let Some(fired) = self.fired.first() {
            record_fired(store, fired, host)?;
            self.fired.remove(0);
        }
        Ok(())
    }
}

/// Records a logout that fell due: its countdown, a `warned` for each of its users not
/// warned yet (a logout that fires at once, or whose warnings could not be written, still
/// leaves one), then each removal, pointing at its user's `warned`, and the countdown done.
/// Returns how many sessions were still there to remove.
pub(super) fn record_fired(
    store: &mut Store,
    fired: &FiredLogout,
    host: &str,
) -> Result<usize, Error> {
    let instance = &fired.instance;
    let record = &instance.record;
    store.start_countdown(record, instance.due, instance.warn_from)?;
    let mut warned: HashMap<String, String> = warned_users(store, instance)?;
    for session in &fired.ended {
        if !warned.contains_key(&session.user) {
            let at = fired.at;
            if let Some(id) =
                store.warn_user(record, instance.due, &session.user, session.uid, host, at)?
            {
                warned.insert(session.user.clone(), id);
            }
        }
    }
    let removals: Vec<(String, RemovalReason, Option<String>)> = fired
        .ended
        .iter()
        .map(|s| (s.key.clone(), fired.reason, warned.get(&s.user).cloned()))
        .collect();
    store.finish_countdown(record, instance.due, &removals, host, fired.at)
}

/// The users the countdown of `instance` warned, with their `warned` event.
fn warned_users(store: &Store, instance: &Instance) -> Result<HashMap<String, String>, Error> {
    Ok(store
        .countdown_users(&instance.record.id, instance.due)?
        .into_iter()
        .map(|u| (u.user, u.warned))
        .collect())
}
