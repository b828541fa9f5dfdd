//! `fl-pam-harness`: runs PAM calls through the real libpam, with a private configuration
//! directory (`pam_start_confdir`), and prints what happened, one line each:
//!
//! ```text
//! conv info "text"       a PAM_TEXT_INFO message the modules sent
//! conv error "text"      a PAM_ERROR_MSG message
//! step open rc=0 ms=3    a call, its return code and how long it took
//! loaded us=912          with --loaded: the first pam_start (it loads the stack's modules)
//! ```
//!
//! Usage: `fl-pam-harness --confdir DIR --service NAME --user USER [--tty T] [--rhost H]
//! [--silent] [--loaded] STEP...` where a STEP is `acct`, `open`, `close`, `restart` (a new handle in
//! the same process), `spawn:CMD` (start `sh -c CMD` as a child), `wait` (read a line from stdin), `sleep:MS`, `bench:N` (N open+close pairs, printing `pair us=…` each) or `login:N` (N whole
//! logins, each its own handle: start, account, open, close, end, printing
//! `login us=… acct=… open=… close=… rc=A,O,C` with each call's microseconds).
//! Each process is one PAM transaction, like one sshd connection.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::BufRead;
use std::ptr;
use std::time::Instant;

#[repr(C)]
struct PamHandleT {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_TTY: c_int = 3;
const PAM_RHOST: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

#[link(name = "pam")]
extern "C" {
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut PamHandleT,
    ) -> c_int;
    fn pam_end(pamh: *mut PamHandleT, status: c_int) -> c_int;
    fn pam_set_item(pamh: *mut PamHandleT, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut PamHandleT, flags: c_int) -> c_int;
}

/// One line of the transcript. A reader that went away is not an error: this must never panic,
/// least of all inside the conversation callback that libpam calls through C.
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints each message; answers none (the modules under test only inform).
///
/// # Safety
/// Called by libpam with `num_msg` messages in Linux-PAM's layout (an array of pointers).
unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0 || msg.is_null() || resp.is_null() {
        return PAM_BUF_ERR;
    }
    // SAFETY: libpam frees the responses with free(), so they come from calloc.
    let replies = unsafe { libc::calloc(num_msg as usize, std::mem::size_of::<PamResponse>()) }
        as *mut PamResponse;
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..num_msg as usize {
        // SAFETY: msg holds num_msg valid pointers to messages with NUL-terminated text.
        let m = unsafe { &**msg.add(i) };
        let text = if m.msg.is_null() {
            String::new()
        } else {
            // SAFETY: see above.
            unsafe { CStr::from_ptr(m.msg) }
                .to_string_lossy()
                .into_owned()
        };
        let kind = match m.msg_style {
            PAM_TEXT_INFO => "info",
            PAM_ERROR_MSG => "error",
            _ => "prompt",
        };
        emit(&format!(
            "conv {kind} {}",
            serde_json::to_string(&text).unwrap_or_default()
        ));
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

fn main() {
    let mut confdir = None;
    let mut service = None;
    let mut user = None;
    let mut items: Vec<(c_int, String)> = Vec::new();
    let mut flags = 0;
    let mut report_loading = false;
    let mut steps = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--confdir" => confdir = args.next(),
            "--service" => service = args.next(),
            "--user" => user = args.next(),
            "--tty" => items.push((PAM_TTY, args.next().unwrap_or_default())),
            "--rhost" => items.push((PAM_RHOST, args.next().unwrap_or_default())),
            "--silent" => flags |= PAM_SILENT,
            "--loaded" => report_loading = true,
            step => steps.push(step.to_string()),
        }
    }
    let (Some(confdir), Some(service), Some(user)) = (confdir, service, user) else {
        eprintln!("usage: fl-pam-harness --confdir DIR --service NAME --user USER [--tty T] [--rhost H] [--silent] [--loaded] STEP...");
        std::process::exit(2);
    };
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (confdir, service, user) = (c(&confdir), c(&service), c(&user));
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: ptr::null_mut(),
    };
    let mut pamh: *mut PamHandleT = ptr::null_mut();
    // The first handle loads the stack's modules, as each sshd connection's process does.
    let loading = Instant::now();
    // SAFETY: all strings are NUL-terminated and outlive the handle; conv lives until pam_end.
    let rc = unsafe {
        pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            confdir.as_ptr(),
            &mut pamh,
        )
    };
    if rc != PAM_SUCCESS {
        emit(&format!("step start rc={rc} ms=0"));
        std::process::exit(1);
    }
    if report_loading {
        emit(&format!("loaded us={}", loading.elapsed().as_micros()));
    }
    let item_values: Vec<(c_int, CString)> = items.iter().map(|(t, v)| (*t, c(v))).collect();
    let set_items = |pamh: *mut PamHandleT| {
        for (item_type, value) in &item_values {
            // SAFETY: pamh is live; libpam copies string items.
            unsafe { pam_set_item(pamh, *item_type, value.as_ptr().cast()) };
        }
    };
    set_items(pamh);
    let mut last = PAM_SUCCESS;
    let stdin = std::io::stdin();
    for step in &steps {
        let started = Instant::now();
        let rc = match step.as_str() {
            // SAFETY: pamh is the live handle from pam_start_confdir.
            "acct" => unsafe { pam_acct_mgmt(pamh, flags) },
            // SAFETY: as above.
            "open" => unsafe { pam_open_session(pamh, flags) },
            // SAFETY: as above.
            "close" => unsafe { pam_close_session(pamh, flags) },
            // A fresh handle in the same process: the modules' PAM data is gone.
            // SAFETY: pamh is live until this pam_end; the new handle replaces it.
            "restart" => unsafe {
                pam_end(pamh, PAM_SUCCESS);
                let rc = pam_start_confdir(
                    service.as_ptr(),
                    user.as_ptr(),
                    &conv,
                    confdir.as_ptr(),
                    &mut pamh,
                );
                set_items(pamh);
                rc
            },
            // A child process tree for the session (not waited for): `spawn:SHELL COMMAND`.
            s if s.starts_with("spawn:") => {
                match std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&s[6..])
                    .spawn()
                {
                    Ok(child) => {
                        emit(&format!("child pid={}", child.id()));
                        std::mem::forget(child);
                        PAM_SUCCESS
                    }
                    Err(_) => 1,
                }
            }
            "wait" => {
                let mut line = String::new();
                let _ = stdin.lock().read_line(&mut line);
                PAM_SUCCESS
            }
            s if s.starts_with("sleep:") => {
                let ms = s[6..].parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                PAM_SUCCESS
            }
            s if s.starts_with("bench:") => {
                for _ in 0..s[6..].parse::<usize>().unwrap_or(0) {
                    let t = Instant::now();
                    // SAFETY: pamh is the live handle from pam_start_confdir.
                    let open = unsafe { pam_open_session(pamh, flags) };
                    // SAFETY: as above.
                    let close = unsafe { pam_close_session(pamh, flags) };
                    emit(&format!(
                        "pair us={} open={open} close={close}",
                        t.elapsed().as_micros()
                    ));
                }
                PAM_SUCCESS
            }
            s if s.starts_with("login:") => {
                for _ in 0..s[6..].parse::<usize>().unwrap_or(0) {
                    let t = Instant::now();
                    let mut handle: *mut PamHandleT = ptr::null_mut();
                    // SAFETY: C strings and the conversation outlive the call; `handle` is written by it.
                    let start = unsafe {
                        pam_start_confdir(
                            service.as_ptr(),
                            user.as_ptr(),
                            &conv,
                            confdir.as_ptr(),
                            &mut handle,
                        )
                    };
                    if start != PAM_SUCCESS {
                        emit(&format!(
                            "login us=0 acct=0 open=0 close=0 rc={start},{start},{start}"
                        ));
                        continue;
                    }
                    set_items(handle);
                    let timed = |call: &dyn Fn() -> c_int| {
                        let t = Instant::now();
                        let rc = call();
                        (rc, t.elapsed().as_micros())
                    };
                    // SAFETY: `handle` is live: pam_start_confdir succeeded.
                    let (acct, acct_us) = timed(&|| unsafe { pam_acct_mgmt(handle, flags) });
                    // SAFETY: as above.
                    let (open, open_us) = timed(&|| unsafe { pam_open_session(handle, flags) });
                    // SAFETY: as above.
                    let (close, close_us) = timed(&|| unsafe { pam_close_session(handle, flags) });
                    // SAFETY: `handle` is live and not used after this.
                    unsafe { pam_end(handle, close) };
                    emit(&format!(
                        "login us={} acct={acct_us} open={open_us} close={close_us} rc={acct},{open},{close}",
                        t.elapsed().as_micros()
                    ));
                }
                PAM_SUCCESS
            }
            other => {
                eprintln!("unknown step {other}");
                std::process::exit(2);
            }
        };
        emit(&format!(
            "step {step} rc={rc} ms={}",
            started.elapsed().as_millis()
        ));
        last = rc;
    }
    // SAFETY: pamh is live and not used after this.
    unsafe { pam_end(pamh, last) };
}
