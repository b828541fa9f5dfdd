//! forcelogout's core: the schedule model, the days bit field, next-firing computation, the
//! store and everything else that is not an adapter. The PAM module, `forcelogoutctl` and the
//! SQLite extension are thin layers over this crate.

#![forbid(unsafe_code)]

pub mod clock;
pub mod days;
pub mod error;
pub mod firing;
pub mod ids;
pub mod schedule;
pub mod store;
pub mod text;
pub mod users;

pub use error::Error;
