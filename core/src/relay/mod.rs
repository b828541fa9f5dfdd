//! Session writes recorded by the daemon for the PAM module, as wtmpdb's daemon does for its
//! module: the daemon keeps its connections to the store open, so a write costs at most one
//! durable commit (writes that arrive together share one) instead of opening the store and
//! parsing its schema. The module writes the store itself when the daemon is absent, declines
//! or is slow; the session key it chooses makes a late second attempt harmless.
//!
//! A store the daemon cannot write for now (another process holds its write lock) loses
//! nothing: the daemon answers `Queued` before the module stops waiting, keeps the write in
//! memory and commits it, in the order it came, once the lock is free. A module that got
//! `Queued` leaves the write to the daemon; one that got no answer in time writes itself, and
//! the daemon then never makes that write.
//!
//! This file is the protocol; `client` is the module's side, `server` the daemon's reading
//! side (who may ask, `account`, notices) and `writer` its writing side.

mod client;
mod schedule_cache;
mod server;
mod writer;

pub use client::call;
pub use schedule_cache::ScheduleCache;
pub use server::{take_requests, QueuedWrite};
pub use writer::SessionWriter;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::AccountDecision;
use crate::sessions::{LoginFacts, ProcessFacts};
use crate::store::{Closed, Opened};

/// Longest request or reply line read.
const MAX_LINE: u64 = 64 * 1024;
/// Most requests recorded in one transaction.
const MAX_BATCH: usize = 256;
/// Most session writes read and waiting for their commit; past it the daemon declines at once
/// and the module writes the store itself (each waiting write holds a connection open).
pub const QUEUE_BOUND: usize = MAX_BATCH;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The store the module was configured with: the daemon records only into its own.
    pub db: PathBuf,
    /// The daemon writes nothing once this has passed: the module has stopped waiting.
    pub deadline: DateTime<Utc>,
    /// The time of the PAM call, which the rows carry.
    pub now: DateTime<Utc>,
    pub process: ProcessFacts,
    pub action: Action,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Action {
    Open {
        session_key: String,
        login: LoginFacts,
        /// The module will show notices: the daemon sends their texts.
        notices: bool,
    },
    Close {
        session_key: Option<String>,
    },
    /// `account` for `user`: a read, answered from the daemon's open store without a write.
    Account {
        user: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Opened {
        opened: Opened,
        notices: Vec<String>,
    },
    Closed(Closed),
    Account(AccountDecision),
    /// Nothing was written, for this reason: the module writes the store itself.
    Declined(String),
    /// The store is busy: the daemon keeps the write and makes it once it can, in order
    /// with the writes that follow; the module must not make it itself. An open's notices
    /// come with it.
    Queued {
        notices: Vec<String>,
    },
}

fn too_late() -> Reply {
    Reply::Declined("the module stopped waiting".into())
}

/// An open or a close to record, and the notices its reply will carry: worked out by the
/// reading side, while the writing side commits (`coming`), or before the write is queued.
struct WriteRequest {
    request: Box<Request>,
    notices: Vec<String>,
    coming: Option<std::sync::mpsc::Receiver<Vec<String>>>,
}

/// The longest the writing side waits for the notices of the opens it answers together, after
/// their commit: the reading side works them out right after queueing the writes; past this
/// the replies go without.
const NOTICES_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl WriteRequest {
    /// The notices for the reply, once the reading side has them; at `until` at the latest
    /// (one bound for a whole batch: a stuck NSS look-up delays the batch once, not per open).
    fn take_notices(&mut self, until: std::time::Instant) -> Vec<String> {
        let mut notices = std::mem::take(&mut self.notices);
        if let Some(coming) = self.coming.take() {
            let wait = until.saturating_duration_since(std::time::Instant::now());
            notices.extend(coming.recv_timeout(wait).unwrap_or_default());
        }
        notices
    }
}

#[cfg(test)]
mod tests;
