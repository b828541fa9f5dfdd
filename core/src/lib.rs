//! forcelogout's core: the schedule model, the days bit field, next-firing computation, the
//! store and everything else that is not an adapter. The PAM module, `forcelogoutctl` and the
//! SQLite extension are thin layers over this crate.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod days;
pub mod declarative;
pub mod enforce;
pub mod error;
pub mod firing;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod ids;
pub mod login;
pub mod policy;
pub mod recurrence;
pub mod relay;
pub mod schedule;
pub mod schedule_store;
pub mod sessions;
pub mod store;
pub mod subscribers;
pub mod targeting;
pub mod text;
pub mod users;
pub mod zone;

pub use error::Error;
