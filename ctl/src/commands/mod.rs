//! One file per subcommand; this one holds what they share: which store, how to open it.

pub mod next;
pub mod schedule;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use forcelogout_core::clock::{Clock, SystemClock};
use forcelogout_core::store::{self, Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::Error;

pub struct Context {
    pub db: PathBuf,
    pub json: bool,
    clock: SystemClock,
}

impl Context {
    pub fn new(db: Option<&Path>, json: bool) -> Context {
        Context {
            db: store::resolve_path(db),
            json,
            clock: SystemClock,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Writers create the store on first use; a caller who may not write it gets exit 4.
    pub fn open_for_writing(&self) -> Result<Store, Error> {
        Store::open(&self.db, Access::Create, DEFAULT_BUSY_TIMEOUT)
    }

    /// Readers never create anything: before the first write there is nothing to list.
    pub fn open_for_reading(&self) -> Result<Store, Error> {
        Store::open_for_reading(&self.db, DEFAULT_BUSY_TIMEOUT)
    }
}
