//! The few libpam functions and constants the module uses, declared by hand: pam-sys would
//! need bindgen at build time and does not bind the varargs functions anyway.

use std::ffi::{c_char, c_int, c_void};

/// libpam's opaque handle.
#[repr(C)]
pub struct PamHandleT {
    _private: [u8; 0],
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_IGNORE: c_int = 25;

pub const PAM_SERVICE: c_int = 1;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;

pub const PAM_SILENT: c_int = 0x8000;

pub const PAM_ERROR_MSG: c_int = 3;
pub const PAM_TEXT_INFO: c_int = 4;

pub const LOG_ERR: c_int = 3;
pub const LOG_NOTICE: c_int = 5;
pub const LOG_DEBUG: c_int = 7;

pub type DataCleanup = unsafe extern "C" fn(*mut PamHandleT, *mut c_void, c_int);

#[link(name = "pam")]
extern "C" {
    pub fn pam_get_user(
        pamh: *mut PamHandleT,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    pub fn pam_get_item(
        pamh: *const PamHandleT,
        item_type: c_int,
        item: *mut *const c_void,
    ) -> c_int;
    pub fn pam_getenv(pamh: *mut PamHandleT, name: *const c_char) -> *const c_char;
    pub fn pam_set_data(
        pamh: *mut PamHandleT,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<DataCleanup>,
    ) -> c_int;
    pub fn pam_get_data(
        pamh: *const PamHandleT,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    pub fn pam_syslog(pamh: *const PamHandleT, priority: c_int, fmt: *const c_char, ...);
    pub fn pam_prompt(
        pamh: *mut PamHandleT,
        style: c_int,
        response: *mut *mut c_char,
        fmt: *const c_char,
        ...
    ) -> c_int;
}
