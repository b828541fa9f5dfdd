//! The PAM ABI: libpam's functions, types and constants from `pam-sys` (hand-written bindings
//! over `libc`'s C types, no bindgen), and, declared here, only what it lacks: the two varargs
//! functions of `<security/pam_ext.h>` and syslog's priorities.

use libc::{c_char, c_int};

pub use pam_sys::raw::{pam_get_data, pam_get_item, pam_get_user, pam_getenv, pam_set_data};
pub use pam_sys::{PamFlag, PamHandle, PamItemType, PamMessageStyle, PamReturnCode};

/// A `PamReturnCode` as the `int` a PAM function returns.
pub const fn code(rc: PamReturnCode) -> c_int {
    rc as c_int
}

pub use libc::{LOG_DEBUG, LOG_ERR, LOG_NOTICE};

// Not in pam-sys 0.5: its bindings leave out the varargs functions.
#[link(name = "pam")]
extern "C" {
    pub fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    pub fn pam_prompt(
        pamh: *mut PamHandle,
        style: c_int,
        response: *mut *mut c_char,
        fmt: *const c_char,
        ...
    ) -> c_int;
}
