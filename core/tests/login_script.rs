//! The PAM module's logic (`forcelogout_core::login`) driven through a scripted handle instead
//! of libpam: each test lists the calls the hook must make, in order, with their answers, and
//! checks the verdict and the store. They run as any user, on temp stores, in milliseconds.

mod support;

use std::time::Duration;

use forcelogout_core::config::Config;
use forcelogout_core::login::{
    self, Kept, LogLevel, ModuleArgs, PamHandler, PamItem, Verdict, RUNTIME_MAX_DATA,
    SESSION_KEY_DATA,
};
use forcelogout_core::policy::{AccountDecision, Refusal};
use forcelogout_core::relay::{self, Action, Reply};
use forcelogout_core::sessions::{host_name, ProcessFacts};
use forcelogout_core::store::{Access, Closed, Opened, RemovalReason, Store};
use forcelogout_core::Error;

use support::daemon::FakeDaemon;
use support::lab::{at, now, Lab};
use support::script::{Expect, ScriptedHandler, Text};

const NO_DAEMON: &str = "recorded by this process (no daemon)";

fn user(lab: &Lab) -> Expect {
    Expect::User(Ok(lab.user.clone()))
}

fn debug(parts: &[&str]) -> Expect {
    Expect::Log(LogLevel::Debug, Text::containing(parts))
}

fn error_log(parts: &[&str]) -> Expect {
    Expect::Log(LogLevel::Error, Text::containing(parts))
}

/// The calls of every `open_session` that gets as far as the write: the user, the items, the
/// logind session, the key left in the handle, and the debug line naming who recorded it.
fn open_steps(lab: &Lab, recorded_by: &str) -> Vec<Expect> {
    vec![
        user(lab),
        Expect::Item(PamItem::Service, Some("sshd".into())),
        Expect::Item(PamItem::Tty, Some("pts/1".into())),
        Expect::Item(PamItem::RemoteHost, Some("192.0.2.7".into())),
        Expect::Env("XDG_SESSION_ID", Some("7".into())),
        Expect::SetData(SESSION_KEY_DATA, Text::any()),
        debug(&[
            "opened session ",
            &format!(" of {} ", lab.user),
            recorded_by,
        ]),
    ]
}

/// Opens a session written by this process; `then` are the calls after the debug line (the
/// notices). Returns the key the module left in the handle.
fn open(lab: &Lab, ctx: &login::HookContext, then: Vec<Expect>) -> String {
    let mut steps = open_steps(lab, NO_DAEMON);
    steps.extend(then);
    let mut h = ScriptedHandler::new(steps);
    assert_eq!(login::open_session(&mut h, ctx), Verdict::Success);
    h.stored(SESSION_KEY_DATA).unwrap()
}

/// Closes with `key` as the handle's data; the debug line says what the close did.
fn close(lab: &Lab, key: Option<&str>, did: &str) {
    let mut h = ScriptedHandler::new(vec![
        Expect::Data(SESSION_KEY_DATA, key.map(str::to_string)),
        debug(&["close_session: session ", did, NO_DAEMON]),
    ]);
    assert_eq!(login::close_session(&mut h, &lab.ctx()), Verdict::Success);
}

fn missing_store(lab: &Lab, fail_closed: bool) -> ModuleArgs {
    ModuleArgs {
        db: lab.dir.path().join("missing/fl.db"),
        fail_closed,
        ..lab.args()
    }
}

fn not_sqlite(lab: &Lab, fail_closed: bool) -> ModuleArgs {
    std::fs::write(
        lab.db(),
        "this is not a database, but it is long enough to look like one\n",
    )
    .unwrap();
    ModuleArgs {
        fail_closed,
        ..lab.args()
    }
}

const FAIL_CLOSED_TEXT: &str =
    "Login refused: the logout policy could not be checked (fail=closed).";

// account: the store cannot be read

#[test]
fn account_fail_open_lets_the_stack_decide_when_the_stores_directory_is_missing() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(missing_store(&lab, false));
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&[
            "account: ",
            "missing/fl.db",
            "the store's directory is missing",
        ]),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::Ignore);
    assert!(
        !lab.dir.path().join("missing").exists(),
        "account created it"
    );
}

#[test]
fn account_fail_closed_refuses_and_says_why_when_the_stores_directory_is_missing() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(missing_store(&lab, true));
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&["account: ", "the store's directory is missing"]),
        Expect::Error(Text::exact(FAIL_CLOSED_TEXT)),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

#[test]
fn account_fail_open_lets_the_stack_decide_when_the_store_is_not_sqlite() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(not_sqlite(&lab, false));
    let mut h = ScriptedHandler::new(vec![user(&lab), error_log(&["account: ", "fl.db"])]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::Ignore);
}

#[test]
fn account_fail_closed_refuses_when_the_store_is_not_sqlite() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(not_sqlite(&lab, true));
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&["account: ", "fl.db"]),
        Expect::Error(Text::exact(FAIL_CLOSED_TEXT)),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

#[test]
fn account_fail_closed_under_pam_silent_refuses_without_a_word_to_the_user() {
    let lab = Lab::new();
    let ctx = login::HookContext {
        silent: true,
        ..lab.ctx_with(missing_store(&lab, true))
    };
    // The log line stays: the administrator must learn why.
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&["account: ", "the store's directory is missing"]),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

#[test]
fn account_fail_closed_refuses_when_pam_cannot_name_the_user() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(ModuleArgs {
        fail_closed: true,
        ..lab.args()
    });
    let mut h = ScriptedHandler::new(vec![
        Expect::User(Err(Error::invalid("user", "PAM_USER_UNKNOWN"))),
        error_log(&["account: ", "PAM_USER_UNKNOWN"]),
        Expect::Error(Text::exact(FAIL_CLOSED_TEXT)),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

// account: lockouts

#[test]
fn account_outside_any_lockout_allows_the_login_from_a_store_never_written() {
    let lab = Lab::new();
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&[&format!(
            "account of {} decided by this process (no daemon)",
            lab.user
        )]),
    ]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
    assert!(!lab.db().exists(), "a read created the store");
}

#[test]
fn account_during_a_lockout_refuses_with_its_message_and_a_notice_in_the_log() {
    let lab = Lab::new();
    let record = lab.lockout("Incident in the lab");
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by this process (no daemon)"]),
        Expect::Log(
            LogLevel::Notice,
            Text::exact(format!(
                "refusing login of {0}: schedule {1} locks out {0} until 2026-11-23T11:00:00.000000Z",
                lab.user, record.id
            )),
        ),
        Expect::Error(Text::exact(
            "Incident in the lab\nLogins are closed until 11:00 UTC.",
        )),
    ]);
    assert_eq!(
        login::account(&mut h, &lab.ctx()),
        Verdict::PermissionDenied
    );
}

#[test]
fn account_during_a_lockout_under_pam_silent_refuses_with_no_conversation() {
    let lab = Lab::new();
    lab.lockout("Incident in the lab");
    let ctx = login::HookContext {
        silent: true,
        ..lab.ctx()
    };
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by"]),
        Expect::Log(LogLevel::Notice, Text::containing(&["refusing login of"])),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

#[test]
fn account_allows_the_login_once_the_lockout_window_has_closed() {
    let lab = Lab::new();
    lab.lockout("Incident in the lab");
    let ctx = login::HookContext {
        now: at("2026-11-23T11:00:00Z"),
        ..lab.ctx()
    };
    let mut h = ScriptedHandler::new(vec![user(&lab), debug(&["decided by"])]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::Success);
}

#[test]
fn a_lockout_of_someone_else_does_not_refuse_this_user() {
    let lab = Lab::new();
    lab.lockout_of("forcelogout-someone-else", "Incident in the lab");
    let mut h = ScriptedHandler::new(vec![user(&lab), debug(&["decided by"])]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
}

#[test]
fn an_invalid_schedule_row_is_logged_and_skipped_even_under_fail_closed() {
    let lab = Lab::new();
    drop(lab.store());
    // Written by hand past the CLI: a daily kick at 10:00 locking out for an hour (open at
    // 10:30), in a zone that does not exist. One bad row must not refuse every login.
    rusqlite::Connection::open(lab.db())
        .unwrap()
        .execute(
            "INSERT INTO LogoutSchedules (Date, Id, GroupName, UpdateTime, Schedule, Time, \
             Timezone, Immediate, Kick, Event, Message, Actor, Lockout) VALUES ('2026-11-23', \
             'bad', ?1, '2026-11-23T09:00:00.000000Z', 'Daily', '10:00', 'Mars/Olympus', 0, 1, \
             'created', 'Closed', 'root', 60)",
            [&lab.user],
        )
        .unwrap();
    let ctx = lab.ctx_with(ModuleArgs {
        fail_closed: true,
        ..lab.args()
    });
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&["ignoring an invalid schedule row", "Mars/Olympus"]),
        debug(&["decided by"]),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::Success);
}

#[test]
fn a_configuration_that_cannot_be_read_is_logged_and_the_defaults_used() {
    let lab = Lab::new();
    std::fs::write(lab.config(), "no_such_key = 1\n").unwrap();
    lab.lockout("Incident in the lab");
    // No debug: with the defaults, the daemon asked is the host's (none here, or one that
    // declines a store not its own); either way the lockout is read and enforced.
    let ctx = lab.ctx_with(ModuleArgs {
        debug: false,
        ..lab.args()
    });
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        error_log(&["forcelogout.toml", "no_such_key", "; using the defaults"]),
        Expect::Log(LogLevel::Notice, Text::containing(&["refusing login of"])),
        Expect::Error(Text::containing(&["Logins are closed until 11:00 UTC."])),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
}

// account: the runtime limit left for logind

/// A kick at 12:30, two hours after `now()`: logind's limit is that plus the minute of grace.
const LIMIT: &str = "7260";

fn lab_with_a_kick_coming(limit_session_runtime: bool) -> Lab {
    let lab = Lab::with_config(&format!("limit_session_runtime = {limit_session_runtime}"));
    lab.logout_at("2026-11-23", "12:30", true, "");
    // A warning sooner must not count: it ends no session.
    lab.logout_at("2026-11-23", "11:00", false, "");
    lab
}

#[test]
fn a_runtime_limit_is_left_for_logind_when_a_kick_is_coming() {
    let lab = lab_with_a_kick_coming(true);
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by"]),
        Expect::Data(RUNTIME_MAX_DATA, None),
        Expect::SetData(RUNTIME_MAX_DATA, Text::exact(LIMIT)),
        debug(&[&format!("runtime limit {LIMIT} s for logind")]),
    ]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
    assert_eq!(h.stored(RUNTIME_MAX_DATA).as_deref(), Some(LIMIT));
}

#[test]
fn no_runtime_limit_is_touched_unless_the_configuration_asks() {
    let lab = lab_with_a_kick_coming(false);
    let mut h = ScriptedHandler::new(vec![user(&lab), debug(&["decided by"])]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
}

#[test]
fn a_lower_runtime_limit_already_set_is_kept() {
    let lab = lab_with_a_kick_coming(true);
    for lower in ["60", LIMIT, " 7000 "] {
        let mut h = ScriptedHandler::new(vec![
            user(&lab),
            debug(&["decided by"]),
            Expect::Data(RUNTIME_MAX_DATA, Some(lower.into())),
        ]);
        assert_eq!(
            login::account(&mut h, &lab.ctx()),
            Verdict::Success,
            "{lower}"
        );
    }
}

#[test]
fn a_higher_or_infinite_runtime_limit_is_lowered() {
    let lab = lab_with_a_kick_coming(true);
    for higher in ["86400", "infinity", "7261"] {
        let mut h = ScriptedHandler::new(vec![
            user(&lab),
            debug(&["decided by"]),
            Expect::Data(RUNTIME_MAX_DATA, Some(higher.into())),
            Expect::SetData(RUNTIME_MAX_DATA, Text::exact(LIMIT)),
            debug(&["runtime limit"]),
        ]);
        assert_eq!(
            login::account(&mut h, &lab.ctx()),
            Verdict::Success,
            "{higher}"
        );
    }
}

#[test]
fn a_runtime_limit_that_is_not_plain_seconds_is_left_alone() {
    let lab = lab_with_a_kick_coming(true);
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by"]),
        Expect::Data(RUNTIME_MAX_DATA, Some("2h".into())),
        debug(&["leaving the runtime limit \"2h\" as it is"]),
    ]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
}

#[test]
fn a_runtime_limit_that_cannot_be_set_is_logged_and_the_login_allowed() {
    let lab = lab_with_a_kick_coming(true);
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by"]),
        Expect::Data(RUNTIME_MAX_DATA, None),
        Expect::SetDataFails(
            RUNTIME_MAX_DATA,
            Text::exact(LIMIT),
            Error::invalid("pam_set_data", "PAM_BUF_ERR"),
        ),
        error_log(&["account: setting the runtime limit: ", "PAM_BUF_ERR"]),
    ]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
}

// open_session and close_session

#[test]
fn open_registers_the_session_with_its_facts_and_leaves_its_key_in_the_handle() {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    let sessions = lab.sessions();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.key, key);
    assert_eq!((s.user.as_str(), s.uid), (lab.user.as_str(), lab.uid));
    assert_eq!(s.service.as_deref(), Some("sshd"));
    assert_eq!(s.tty.as_deref(), Some("pts/1"));
    assert_eq!(s.remote_host.as_deref(), Some("192.0.2.7"));
    assert_eq!(s.logind_session.as_deref(), Some("7"));
    assert_eq!(s.pid, std::process::id());
    assert_eq!(lab.events(), [format!("online {} {key}", lab.user)]);
}

#[test]
fn the_key_left_at_open_closes_exactly_that_session() {
    let lab = Lab::new();
    let first = open(&lab, &lab.ctx(), Vec::new());
    // One handle from open to close, as libpam keeps it; another session of the same user
    // (same process, too) stays.
    let mut h = ScriptedHandler::new(open_steps(&lab, NO_DAEMON));
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    let second = h.stored(SESSION_KEY_DATA).unwrap();
    h.then(vec![
        Expect::Data(SESSION_KEY_DATA, Some(second.clone())),
        debug(&[&format!(
            "session Some({second:?}) removed: true, offline: false"
        )]),
    ]);
    assert_eq!(login::close_session(&mut h, &lab.ctx()), Verdict::Success);
    drop(h);
    let left: Vec<String> = lab.sessions().into_iter().map(|s| s.key).collect();
    assert_eq!(left, std::slice::from_ref(&first));
    let u = &lab.user;
    assert_eq!(
        lab.events(),
        [
            format!("online {u} {first}"),
            format!("removed {u} {second} logout"),
        ]
    );
    close(&lab, Some(&first), "removed: true, offline: true");
    assert!(lab.sessions().is_empty());
    assert_eq!(
        lab.events()[2..],
        [
            format!("removed {u} {first} logout"),
            format!("offline {u}")
        ]
    );
}

#[test]
fn close_without_the_key_finds_the_session_this_process_opened() {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    close(
        &lab,
        None,
        &format!("Some({key:?}) removed: true, offline: true"),
    );
    assert!(lab.sessions().is_empty());
}

#[test]
fn a_second_close_is_a_no_op() {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    close(&lab, Some(&key), "removed: true, offline: true");
    let events = lab.events();
    close(&lab, Some(&key), "removed: false, offline: false");
    close(&lab, None, "session None removed: false, offline: false");
    assert_eq!(lab.events(), events);
}

#[test]
fn a_key_pam_would_not_keep_still_leaves_a_session_that_close_can_find() {
    let lab = Lab::new();
    let mut steps = open_steps(&lab, NO_DAEMON);
    steps.truncate(5);
    steps.push(Expect::SetDataFails(
        SESSION_KEY_DATA,
        Text::any(),
        Error::invalid("pam_set_data", "PAM_BUF_ERR"),
    ));
    steps.push(error_log(&["open_session: ", "PAM_BUF_ERR"]));
    let mut h = ScriptedHandler::new(steps);
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Ignore);
    drop(h);
    assert_eq!(lab.sessions().len(), 1);
    close(&lab, None, "removed: true, offline: true");
    assert!(lab.sessions().is_empty());
}

#[test]
fn open_and_close_with_an_unwritable_store_are_logged_and_ignored() {
    let lab = Lab::new();
    let ctx = lab.ctx_with(missing_store(&lab, true));
    let mut steps = open_steps(&lab, NO_DAEMON);
    steps.truncate(5);
    // No key is left: the session was never recorded.
    steps.push(error_log(&[
        "open_session: ",
        "the store's directory is missing",
    ]));
    steps.push(Expect::Data(SESSION_KEY_DATA, None));
    steps.push(error_log(&[
        "close_session: ",
        "the store's directory is missing",
    ]));
    let mut h = ScriptedHandler::new(steps);
    assert_eq!(login::open_session(&mut h, &ctx), Verdict::Ignore);
    assert_eq!(login::close_session(&mut h, &ctx), Verdict::Ignore);
    assert_eq!(h.stored(SESSION_KEY_DATA), None);
}

#[test]
fn open_for_a_user_unknown_to_nss_is_logged_ignored_and_writes_nothing() {
    let lab = Lab::new();
    let mut h = ScriptedHandler::new(vec![
        Expect::User(Ok("forcelogout-no-such-user".into())),
        error_log(&[
            "open_session: ",
            "forcelogout-no-such-user is not known to NSS",
        ]),
    ]);
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Ignore);
    assert!(!lab.db().exists(), "the store was written");
}

// open_session: notices

/// Logs out the user's one session with a kick carrying `message`, as the daemon does.
fn kicked(lab: &Lab, key: &str, message: &str) {
    let record = lab.logout_at("2026-11-23", "10:00", true, message);
    let due = at("2026-11-23T10:00:00Z");
    let removals = [(key.to_string(), RemovalReason::Kick, None)];
    lab.store()
        .finish_countdown(&record, due, &removals, "host", now())
        .unwrap();
}

#[test]
fn the_last_forced_logouts_message_is_shown_at_the_next_open_once() {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    kicked(&lab, &key, "The lab closes for cleaning.");
    let shown = Expect::Info(Text::exact(
        "You were logged out by the administrator:\nThe lab closes for cleaning.",
    ));
    open(&lab, &lab.ctx(), vec![shown]);
    open(&lab, &lab.ctx(), Vec::new());
}

#[test]
fn logouts_within_notice_ahead_are_announced_soonest_first() {
    let lab = Lab::with_config("notice_ahead = \"3h\"");
    lab.logout_at("2026-11-23", "12:30", true, "Maintenance.");
    lab.logout_at("2026-11-23", "11:00", false, "");
    // Past notice_ahead, and past already: not announced.
    lab.logout_at("2026-11-23", "13:31", true, "Too far off.");
    lab.logout_at("2026-11-23", "10:29", true, "Gone.");
    open(
        &lab,
        &lab.ctx(),
        vec![
            Expect::Info(Text::exact(
                "You will be asked to log out at 2026-11-23 11:00 UTC, in 30 min.",
            )),
            Expect::Info(Text::exact(
                "You will be logged out at 2026-11-23 12:30 UTC, in 2 h 00 min.\nMaintenance.",
            )),
        ],
    );
}

/// A kick that left a message, and a logout coming: what a quiet or silent open must not say.
fn lab_with_notices_pending() -> Lab {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    kicked(&lab, &key, "The lab closes for cleaning.");
    lab.logout_at("2026-11-23", "12:30", true, "Maintenance.");
    lab
}

#[test]
fn quiet_opens_say_nothing_to_the_user() {
    let lab = lab_with_notices_pending();
    let ctx = lab.ctx_with(ModuleArgs {
        quiet: true,
        ..lab.args()
    });
    open(&lab, &ctx, Vec::new());
    assert_eq!(lab.sessions().len(), 1);
}

#[test]
fn pam_silent_opens_say_nothing_to_the_user() {
    let lab = lab_with_notices_pending();
    let ctx = login::HookContext {
        silent: true,
        ..lab.ctx()
    };
    open(&lab, &ctx, Vec::new());
    assert_eq!(lab.sessions().len(), 1);
}

#[test]
fn the_message_a_quiet_or_silent_open_did_not_show_waits_for_the_next_open_that_speaks() {
    let lab = lab_with_notices_pending();
    let quiet = lab.ctx_with(ModuleArgs {
        quiet: true,
        ..lab.args()
    });
    let silent = login::HookContext {
        silent: true,
        ..lab.ctx()
    };
    open(&lab, &quiet, Vec::new());
    open(&lab, &silent, Vec::new());
    let shown = Expect::Info(Text::exact(
        "You were logged out by the administrator:\nThe lab closes for cleaning.",
    ));
    let coming = || Expect::Info(Text::containing(&["Maintenance."]));
    open(&lab, &lab.ctx(), vec![shown, coming()]);
    // Shown once: the next open that speaks has only the logout coming.
    open(&lab, &lab.ctx(), vec![coming()]);
}

// The relay to the daemon, and the fallback to the store

/// A scripted handle that also keeps what the hooks leave in it (`PamHandler::kept`), as
/// libpam's handle does from `account` to `pam_end`.
struct Keeping {
    script: ScriptedHandler,
    kept: Option<Kept>,
}

impl Keeping {
    fn new(steps: Vec<Expect>) -> Keeping {
        Keeping {
            script: ScriptedHandler::new(steps),
            kept: None,
        }
    }
}

impl PamHandler for Keeping {
    fn user(&self) -> Result<String, Error> {
        self.script.user()
    }
    fn item(&self, item: PamItem) -> Option<String> {
        self.script.item(item)
    }
    fn env(&self, name: &str) -> Option<String> {
        self.script.env(name)
    }
    fn data(&self, name: &str) -> Option<String> {
        self.script.data(name)
    }
    fn set_data(&mut self, name: &str, value: &str) -> Result<(), Error> {
        self.script.set_data(name, value)
    }
    fn info(&mut self, text: &str) {
        self.script.info(text)
    }
    fn error(&mut self, text: &str) {
        self.script.error(text)
    }
    fn log(&self, level: LogLevel, text: &str) {
        self.script.log(level, text)
    }
    fn kept(&mut self) -> Option<&mut Kept> {
        self.kept.as_mut()
    }
    fn keep(&mut self, kept: Kept) {
        if let Some(before) = self.kept.replace(kept) {
            before.release();
        }
    }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        if let Some(kept) = self.kept.take() {
            kept.release();
        }
    }
}

#[test]
fn one_handle_from_open_to_close_finds_the_session_with_what_open_kept() {
    let lab = Lab::new();
    let mut h = Keeping::new(open_steps(&lab, NO_DAEMON));
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    let key = h.script.stored(SESSION_KEY_DATA).unwrap();
    assert!(h.kept.is_some(), "open kept nothing in the handle");
    // The key is gone (another module replaced the data): close finds the session by the
    // process facts open kept, as the store holds them.
    h.script.then(vec![
        Expect::Data(SESSION_KEY_DATA, None),
        debug(&[&format!(
            "session Some({key:?}) removed: true, offline: true, {NO_DAEMON}"
        )]),
    ]);
    assert_eq!(login::close_session(&mut h, &lab.ctx()), Verdict::Success);
    drop(h);
    assert!(lab.sessions().is_empty());
    let u = &lab.user;
    assert_eq!(
        lab.events(),
        [
            format!("online {u} {key}"),
            format!("removed {u} {key} logout"),
            format!("offline {u}"),
        ]
    );
}

#[test]
fn the_daemon_gets_at_close_the_facts_open_read_with_the_host_named_again() {
    let lab = Lab::new();
    let daemon = FakeDaemon::answering(&lab.socket(), |r| Some(opened(r, None)));
    let mut steps = open_steps(&lab, "recorded by the daemon");
    steps.push(Expect::Info(Text::exact("A notice from the daemon.")));
    let mut h = Keeping::new(steps);
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    let at_open = daemon.request().process;
    std::fs::remove_file(lab.socket()).unwrap();
    let key = h.script.stored(SESSION_KEY_DATA).unwrap();
    let answer = Closed {
        session_key: Some(key.clone()),
        removed: true,
        offline: true,
    };
    let daemon = FakeDaemon::answering(&lab.socket(), move |_| Some(Reply::Closed(answer)));
    h.script.then(vec![
        Expect::Data(SESSION_KEY_DATA, Some(key)),
        debug(&["removed: true, offline: true, recorded by the daemon"]),
    ]);
    assert_eq!(login::close_session(&mut h, &lab.ctx()), Verdict::Success);
    let at_close = daemon.request().process;
    let what = |p: &ProcessFacts| {
        (
            p.pid,
            p.process_session,
            p.cgroup.clone(),
            p.login_key.clone(),
            p.boot_id.clone(),
            p.pid_start_time,
        )
    };
    assert_eq!(what(&at_close), what(&at_open));
    assert_eq!(at_close.pid, std::process::id());
    assert_eq!(at_close.host, host_name());
}

fn opened(request: &relay::Request, message: Option<&str>) -> Reply {
    let Action::Open { session_key, .. } = &request.action else {
        panic!("not an open: {request:?}");
    };
    Reply::Opened {
        opened: Opened {
            session_key: session_key.clone(),
            online: true,
            last_logout_message: message.map(str::to_string),
        },
        notices: vec!["A notice from the daemon.".into()],
    }
}

#[test]
fn the_daemon_records_the_open_and_sends_the_notices() {
    let lab = Lab::new();
    let daemon = FakeDaemon::answering(&lab.socket(), |r| {
        Some(opened(r, Some("Kicked \u{1b}[31mred")))
    });
    let mut steps = open_steps(&lab, "(online: true), recorded by the daemon");
    steps.push(Expect::Info(Text::exact(
        "You were logged out by the administrator:\nKicked red",
    )));
    steps.push(Expect::Info(Text::exact("A notice from the daemon.")));
    let mut h = ScriptedHandler::new(steps);
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    let request = daemon.request();
    assert_eq!(request.db, lab.db());
    assert_eq!(request.now, now());
    // Half the timeout: the other half is for writing the store itself.
    assert_eq!(request.deadline, now() + chrono::Duration::seconds(5));
    let Action::Open {
        session_key,
        login,
        notices,
    } = request.action
    else {
        panic!("not an open");
    };
    assert_eq!(Some(session_key), h.stored(SESSION_KEY_DATA));
    assert_eq!(
        (login.user, login.tty),
        (lab.user.clone(), Some("pts/1".into()))
    );
    assert!(notices);
    assert!(!lab.db().exists(), "the module wrote the store as well");
}

#[test]
fn a_quiet_module_asks_the_daemon_for_no_notices() {
    let lab = Lab::new();
    let daemon = FakeDaemon::answering(&lab.socket(), |r| Some(opened(r, None)));
    let ctx = lab.ctx_with(ModuleArgs {
        quiet: true,
        ..lab.args()
    });
    // The daemon sent a notice anyway: a quiet module shows none.
    let mut h = ScriptedHandler::new(open_steps(&lab, "recorded by the daemon"));
    assert_eq!(login::open_session(&mut h, &ctx), Verdict::Success);
    assert!(matches!(
        daemon.request().action,
        Action::Open { notices: false, .. }
    ));
}

#[test]
fn an_open_the_daemon_queued_is_left_to_it() {
    let lab = Lab::new();
    let daemon = FakeDaemon::answering(&lab.socket(), |_| {
        Some(Reply::Queued {
            notices: vec!["Soon.".into()],
        })
    });
    let mut steps = open_steps(&lab, "recorded by the daemon, later");
    steps.insert(
        5,
        Expect::Log(
            LogLevel::Notice,
            Text::exact(format!(
                "the store is busy: the daemon records the session of {} when it can",
                lab.user
            )),
        ),
    );
    steps.push(Expect::Info(Text::exact("Soon.")));
    let mut h = ScriptedHandler::new(steps);
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    let Action::Open { session_key, .. } = daemon.request().action else {
        panic!("not an open");
    };
    assert_eq!(Some(session_key), h.stored(SESSION_KEY_DATA));
    assert!(!lab.db().exists(), "the module wrote the store as well");
}

/// Opens against a daemon that answers `reply` (or never), and checks the module wrote the
/// session itself under the key it had sent, so a late write by the daemon changes nothing.
fn falls_back(timeout: Duration, reply: Option<Reply>, why: &str) {
    let lab = Lab::new();
    let daemon = FakeDaemon::answering(&lab.socket(), move |_| reply);
    let ctx = lab.ctx_with(ModuleArgs {
        timeout,
        ..lab.args()
    });
    let recorded = format!("recorded by this process ({why})");
    let mut h = ScriptedHandler::new(open_steps(&lab, &recorded));
    assert_eq!(login::open_session(&mut h, &ctx), Verdict::Success);
    let Action::Open { session_key, .. } = daemon.request().action else {
        panic!("not an open");
    };
    let keys: Vec<String> = lab.sessions().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, [session_key]);
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_declining_daemon_leaves_the_write_to_the_module() {
    let reply = Reply::Declined("this daemon records into /elsewhere".into());
    let why = "the daemon declined: this daemon records into /elsewhere";
    falls_back(TIMEOUT, Some(reply), why);
}

#[test]
fn a_daemon_that_does_not_answer_in_time_leaves_the_write_to_the_module() {
    let why = "the daemon did not answer in time";
    falls_back(Duration::from_millis(600), None, why);
}

#[test]
fn a_daemon_answering_out_of_turn_leaves_the_write_to_the_module() {
    let reply = Reply::Closed(Closed {
        session_key: None,
        removed: false,
        offline: false,
    });
    falls_back(TIMEOUT, Some(reply), "the daemon answered out of turn");
}

#[test]
fn account_decided_by_the_daemon_reads_no_store() {
    let lab = Lab::new();
    let until = at("2026-11-23T11:00:00Z");
    let refusal = Refusal {
        schedule_id: "s1".into(),
        group: lab.user.clone(),
        until,
        message: "Closed, says the daemon.".into(),
    };
    let daemon = FakeDaemon::answering(&lab.socket(), move |_| {
        Some(Reply::Account(AccountDecision {
            refusal: Some(refusal),
            next_kick: None,
        }))
    });
    // The store's directory is missing: reading it would fail, closed.
    let ctx = lab.ctx_with(missing_store(&lab, true));
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&[&format!("account of {} decided by the daemon", lab.user)]),
        Expect::Log(
            LogLevel::Notice,
            Text::containing(&["schedule s1 locks out"]),
        ),
        Expect::Error(Text::exact("Closed, says the daemon.")),
    ]);
    assert_eq!(login::account(&mut h, &ctx), Verdict::PermissionDenied);
    assert!(matches!(
        daemon.request().action,
        Action::Account { user } if user == lab.user
    ));
}

#[test]
fn closes_the_daemon_records_or_queues_are_left_to_it() {
    let lab = Lab::new();
    let key = open(&lab, &lab.ctx(), Vec::new());
    for (reply, recorded_by) in [
        (
            Reply::Closed(Closed {
                session_key: Some(key.clone()),
                removed: true,
                offline: true,
            }),
            "removed: true, offline: true, recorded by the daemon",
        ),
        (
            Reply::Queued {
                notices: Vec::new(),
            },
            "recorded by the daemon, later (the store is busy)",
        ),
    ] {
        let daemon = FakeDaemon::answering(&lab.socket(), move |_| Some(reply));
        let mut h = ScriptedHandler::new(vec![
            Expect::Data(SESSION_KEY_DATA, Some(key.clone())),
            debug(&[recorded_by]),
        ]);
        assert_eq!(login::close_session(&mut h, &lab.ctx()), Verdict::Success);
        let request = daemon.request();
        assert!(matches!(request.action, Action::Close { session_key: Some(k) } if k == key));
        std::fs::remove_file(lab.socket()).unwrap();
    }
    // The daemon did the writes (here: a stand-in that wrote nothing).
    assert_eq!(lab.sessions().len(), 1);
}

/// The real reading and writing sides of the daemon on the lab's store, for one request.
fn serve_one_request(lab: &Lab) -> impl FnOnce() {
    let listener = std::os::unix::net::UnixListener::bind(lab.socket()).unwrap();
    let reader = Store::open(&lab.db(), Access::ReadOnly, Duration::from_secs(2)).unwrap();
    let writes = Store::open(&lab.db(), Access::ReadWrite, Duration::from_secs(2)).unwrap();
    let mut writer = relay::SessionWriter::new(writes.for_session_writer().unwrap());
    let config = Config::load(&lab.config()).unwrap();
    let (queue, queued) = std::sync::mpsc::sync_channel(relay::QUEUE_BOUND);
    let log = |line: &str| eprintln!("daemon: {line}");
    let reading = std::thread::spawn(move || {
        let schedules = relay::ScheduleCache::default();
        relay::take_requests(&listener, &reader, &schedules, &config, &now, &log, &queue).unwrap();
    });
    // Ends once the reading side has gone and nothing is held.
    let writing =
        std::thread::spawn(move || while writer.record_queued(&queued, &now, &log).is_ok() {});
    move || {
        reading.join().unwrap();
        writing.join().unwrap();
    }
}

#[test]
fn the_real_daemon_records_for_root_and_declines_anyone_else() {
    let lab = Lab::new();
    drop(lab.store());
    let served = serve_one_request(&lab);
    // Anyone else is refused, and writes the store itself: the daemon's refusal ("uid N may
    // not record sessions") reaches the module, or, when the daemon refused and hung up before
    // the module had sent its request, a broken pipe does.
    let recorded_by = match lab.uid {
        0 => "recorded by the daemon",
        _ => "recorded by this process (the daemon ",
    };
    let mut h = ScriptedHandler::new(open_steps(&lab, recorded_by));
    assert_eq!(login::open_session(&mut h, &lab.ctx()), Verdict::Success);
    served();
    let key = h.stored(SESSION_KEY_DATA).unwrap();
    let keys: Vec<String> = lab.sessions().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, std::slice::from_ref(&key));
    assert_eq!(lab.events(), [format!("online {} {key}", lab.user)]);
}

// The scripted handle itself: a test that passes with it means what it says.

#[test]
#[should_panic(expected = "PAM call out of script: got info(\"Hello\"), expected step 2: Error")]
fn the_script_refuses_a_call_out_of_order() {
    let mut h = ScriptedHandler::new(vec![
        Expect::Data(SESSION_KEY_DATA, None),
        Expect::Error(Text::exact("Hello")),
    ]);

    assert_eq!(h.data(SESSION_KEY_DATA), None);
    h.info("Hello");
}

#[test]
#[should_panic(expected = "unexpected PAM call log(Debug, \"late\") after the last step")]
fn the_script_refuses_a_call_after_its_last_step() {
    let h = ScriptedHandler::new(Vec::new());

    h.log(LogLevel::Debug, "late");
}

#[test]
#[should_panic(expected = "the script has 1 steps never used: [Info(exactly \"Welcome\")]")]
fn the_script_fails_a_test_that_left_steps_unused() {
    let lab = Lab::new();
    let mut h = ScriptedHandler::new(vec![
        user(&lab),
        debug(&["decided by"]),
        Expect::Info(Text::exact("Welcome")),
    ]);
    assert_eq!(login::account(&mut h, &lab.ctx()), Verdict::Success);
}
