//! A safe view of a `pam_handle_t` for the core's `PamHandler` trait.

use std::ffi::{CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use forcelogout_core::login::{Kept, LogLevel, PamHandler, PamItem};
use forcelogout_core::Error;

use libc::{c_char, c_int, c_void};

use crate::ffi::*;

const PERCENT_S: &CStr = c"%s";
/// The PAM data under which a hook keeps the store open, and its process's facts, for the
/// login's next hooks.
const KEPT_DATA: &CStr = c"forcelogout.kept";

pub struct Handle {
    pamh: *mut PamHandle,
}

impl Handle {
    /// `pamh` must be the non-null handle libpam passed to the hook, valid for the call.
    pub fn new(pamh: *mut PamHandle) -> Handle {
        Handle { pamh }
    }

    fn say(&self, style: PamMessageStyle, text: &str) {
        let text = to_c(text);
        // SAFETY: pamh is libpam's live handle; "%s" with one NUL-terminated string argument
        // matches the varargs; a NULL response pointer is allowed for messages.
        unsafe {
            pam_prompt(
                self.pamh,
                style as c_int,
                ptr::null_mut(),
                PERCENT_S.as_ptr(),
                text.as_ptr(),
            );
        }
    }
}

/// A C string of `text`, any NUL byte (never in sanitised text) replaced.
fn to_c(text: &str) -> CString {
    CString::new(text.replace('\0', "?")).unwrap_or_default()
}

/// Copies a string that libpam owns; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string that stays valid during the call.
unsafe fn owned(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated, as the caller guarantees.
        Some(
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl PamHandler for Handle {
    fn user(&self) -> Result<String, Error> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: pamh is live; `user` is a valid out-pointer; a NULL prompt means the default.
        let rc = unsafe { pam_get_user(self.pamh, &mut user, ptr::null()) };
        if rc != code(PamReturnCode::SUCCESS) || user.is_null() {
            return Err(Error::invalid(
                "user",
                format!("pam_get_user failed ({rc})"),
            ));
        }
        // SAFETY: libpam returned a NUL-terminated string it keeps for the transaction.
        let bytes = unsafe { CStr::from_ptr(user) };
        bytes
            .to_str()
            .map(str::to_string)
            .map_err(|_| Error::invalid("user", "the user name is not UTF-8"))
    }

    fn item(&self, item: PamItem) -> Option<String> {
        let item_type = match item {
            PamItem::Service => PamItemType::SERVICE,
            PamItem::Tty => PamItemType::TTY,
            PamItem::RemoteHost => PamItemType::RHOST,
        };
        let mut value: *const c_void = ptr::null();
        // SAFETY: pamh is live; string items are NUL-terminated strings owned by libpam.
        let rc = unsafe { pam_get_item(self.pamh, item_type as c_int, &mut value) };
        if rc != code(PamReturnCode::SUCCESS) {
            return None;
        }
        // SAFETY: a string item is NULL or a NUL-terminated string valid during the call.
        unsafe { owned(value.cast()) }.filter(|s| !s.is_empty())
    }

    fn env(&self, name: &str) -> Option<String> {
        let name = to_c(name);
        // SAFETY: pamh is live; the returned pointer is owned by libpam (or NULL).
        unsafe { owned(pam_getenv(self.pamh, name.as_ptr())) }
    }

    fn data(&self, name: &str) -> Option<String> {
        let name = to_c(name);
        let mut data: *const c_void = ptr::null();
        // SAFETY: pamh is live; `name` is NUL-terminated; libpam only writes `data`.
        let rc = unsafe { pam_get_data(self.pamh, name.as_ptr(), &mut data) };
        if rc != code(PamReturnCode::SUCCESS) {
            return None;
        }
        // SAFETY: the names core asks for hold NUL-terminated strings: ours (set_data below)
        // and pam_systemd's convention for `systemd.*` data, which other modules follow.
        unsafe { owned(data.cast()) }
    }

    fn set_data(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let name = to_c(name);
        let raw = to_c(value).into_raw();
        // SAFETY: pamh is live; libpam copies the name and keeps `raw` until pam_end or
        // replacement, then calls `free_string_data`, which takes back ownership.
        let rc =
            unsafe { pam_set_data(self.pamh, name.as_ptr(), raw.cast(), Some(free_string_data)) };
        if rc != code(PamReturnCode::SUCCESS) {
            // SAFETY: libpam did not take `raw`; it came from CString::into_raw above.
            drop(unsafe { CString::from_raw(raw) });
            return Err(Error::invalid(
                "session",
                format!("pam_set_data failed ({rc})"),
            ));
        }
        Ok(())
    }

    fn kept(&mut self) -> Option<&mut Kept> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: pamh is live; the name is NUL-terminated; libpam only writes `data`.
        let rc = unsafe { pam_get_data(self.pamh, KEPT_DATA.as_ptr(), &mut data) };
        if rc != code(PamReturnCode::SUCCESS) || data.is_null() {
            return None;
        }
        // SAFETY: only `keep` sets this name, with a Box<Kept> it gave up; libpam keeps it
        // until `release_kept` at pam_end. A handle is used by one thread at a time, and the
        // borrow lasts no longer than `&mut self`.
        Some(unsafe { &mut *(data as *mut Kept) })
    }

    fn keep(&mut self, kept: Kept) {
        let raw = Box::into_raw(Box::new(kept));
        // SAFETY: pamh is live; libpam copies the name and keeps `raw` until pam_end, then
        // calls `release_kept`, which takes back ownership.
        let rc = unsafe {
            pam_set_data(
                self.pamh,
                KEPT_DATA.as_ptr(),
                raw.cast(),
                Some(release_kept),
            )
        };
        if rc != code(PamReturnCode::SUCCESS) {
            // SAFETY: libpam did not take `raw`; it came from Box::into_raw above.
            unsafe { Box::from_raw(raw) }.release();
        }
    }

    fn info(&mut self, text: &str) {
        self.say(PamMessageStyle::TEXT_INFO, text);
    }

    fn error(&mut self, text: &str) {
        self.say(PamMessageStyle::ERROR_MSG, text);
    }

    fn log(&self, level: LogLevel, text: &str) {
        let priority = match level {
            LogLevel::Error => LOG_ERR,
            LogLevel::Notice => LOG_NOTICE,
            LogLevel::Debug => LOG_DEBUG,
        };
        let text = to_c(&forcelogout_core::text::sanitize_line(text));
        // SAFETY: pamh is live; "%s" with one NUL-terminated string matches the varargs.
        unsafe { pam_syslog(self.pamh, priority, PERCENT_S.as_ptr(), text.as_ptr()) };
    }
}

/// libpam's cleanup for our PAM data: libpam passes NULL or the pointer `set_data` gave it.
extern "C" fn free_string_data(_pamh: *mut PamHandle, data: *mut c_void, _status: c_int) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !data.is_null() {
            // SAFETY: `data` came from CString::into_raw in set_data, freed only here.
            drop(unsafe { CString::from_raw(data.cast()) });
        }
    }));
}

/// libpam's cleanup for what the hooks kept, at pam_end: the store closed in the process that
/// opened it, never touched in another (see `Kept::release`).
extern "C" fn release_kept(_pamh: *mut PamHandle, data: *mut c_void, _status: c_int) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !data.is_null() {
            // SAFETY: `data` came from Box::into_raw in keep_store, released only here.
            unsafe { Box::from_raw(data.cast::<Kept>()) }.release();
        }
    }));
}
