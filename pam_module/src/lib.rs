//! `pam_forcelogout.so`: the PAM adapter over `forcelogout_core::login`. Each hook converts
//! its arguments, wraps the handle, calls the core and maps the verdict to a PAM code, inside
//! `catch_unwind`: no panic crosses into the host process (sshd, login, su).
//!
//! Exported: the six `pam_sm_*` functions. `account`, `open_session` and `close_session` do
//! the work; `authenticate`, `setcred` and `chauthtok` return PAM_IGNORE, so a line naming
//! the module in a stack where it has nothing to do changes nothing (libpam would turn a
//! missing function into PAM_MODULE_UNKNOWN, a failure for a `required` line).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ffi;
mod handle;

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use forcelogout_core::login::{self, HookContext, LogLevel, ModuleArgs, PamHandler, Verdict};

use libc::{c_char, c_int};

use crate::ffi::{code, PamFlag, PamHandle, PamReturnCode};
use crate::handle::Handle;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Account,
    OpenSession,
    CloseSession,
}

/// The shared body of the hooks.
///
/// # Safety
/// As for every `pam_sm_*` function: `pamh` is libpam's handle and `argv` holds `argc`
/// NUL-terminated strings, both valid for the call.
unsafe fn run_hook(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
    hook: Hook,
) -> c_int {
    let mut fail_closed = false;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if pamh.is_null() {
            return code(PamReturnCode::IGNORE);
        }
        // SAFETY: forwarded from libpam, as this function's contract says.
        let args = unsafe { arguments(argc, argv) };
        let (args, complaints) = ModuleArgs::parse(args.iter().map(String::as_str));
        fail_closed = args.fail_closed;
        let mut handle = Handle::new(pamh);
        for complaint in complaints {
            handle.log(LogLevel::Error, &complaint);
        }
        let ctx = HookContext {
            args,
            silent: flags & PamFlag::SILENT as c_int != 0,
            now: chrono::Utc::now(),
        };
        let verdict = match hook {
            Hook::Account => login::account(&mut handle, &ctx),
            Hook::OpenSession => login::open_session(&mut handle, &ctx),
            Hook::CloseSession => login::close_session(&mut handle, &ctx),
        };
        match verdict {
            Verdict::Success => code(PamReturnCode::SUCCESS),
            Verdict::Ignore => code(PamReturnCode::IGNORE),
            Verdict::PermissionDenied => code(PamReturnCode::PERM_DENIED),
        }
    }));
    outcome.unwrap_or_else(|_| {
        // A bug of ours: the login proceeds unless the administrator asked for fail=closed.
        let _ = catch_unwind(|| {
            Handle::new(pamh).log(
                LogLevel::Error,
                "internal error (panic) in pam_forcelogout; see the journal",
            );
        });
        if hook == Hook::Account && fail_closed {
            code(PamReturnCode::PERM_DENIED)
        } else {
            code(PamReturnCode::IGNORE)
        }
    })
}

/// The module's arguments as strings.
///
/// # Safety
/// `argv` is NULL or holds `argc` NUL-terminated strings.
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .filter_map(|i| {
            // SAFETY: i < argc, and argv holds argc pointers.
            let arg = unsafe { *argv.add(i) };
            (!arg.is_null()).then(|| {
                // SAFETY: each non-null entry is a NUL-terminated string.
                unsafe { CStr::from_ptr(arg) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

/// Generates an exported hook that forwards to `run_hook`, or one that returns PAM_IGNORE.
macro_rules! pam_hook {
    ($name:ident, $hook:expr) => {
        /// A PAM service function.
        ///
        /// # Safety
        /// Called by libpam with its handle and the module's arguments.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            pamh: *mut PamHandle,
            flags: c_int,
            argc: c_int,
            argv: *const *const c_char,
        ) -> c_int {
            // SAFETY: libpam's arguments, forwarded unchanged.
            unsafe { run_hook(pamh, flags, argc, argv, $hook) }
        }
    };
    ($name:ident) => {
        /// A PAM service function this module has no use for: PAM_IGNORE.
        ///
        /// # Safety
        /// Called by libpam; the arguments are not used.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            _pamh: *mut PamHandle,
            _flags: c_int,
            _argc: c_int,
            _argv: *const *const c_char,
        ) -> c_int {
            code(PamReturnCode::IGNORE)
        }
    };
}

pam_hook!(pam_sm_acct_mgmt, Hook::Account);
pam_hook!(pam_sm_open_session, Hook::OpenSession);
pam_hook!(pam_sm_close_session, Hook::CloseSession);
pam_hook!(pam_sm_authenticate);
pam_hook!(pam_sm_setcred);
pam_hook!(pam_sm_chauthtok);
