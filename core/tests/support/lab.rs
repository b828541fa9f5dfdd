//! A throwaway lab for one test: a temp directory holding the store's directory, a
//! configuration whose session socket is a path in it (so no real daemon is ever asked), the
//! user running the test (whom NSS knows, root or not), and a fixed clock.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use forcelogout_core::login::{HookContext, ModuleArgs};
use forcelogout_core::schedule::{Recurrence, Schedule};
use forcelogout_core::store::{Access, EventFilter, LiveSession, ScheduleRecord, Store};

/// The instant of every hook in these tests.
pub fn now() -> DateTime<Utc> {
    at("2026-11-23T10:30:00Z")
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The user running the test, as NSS names them.
    pub user: String,
    pub uid: u32,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with_config("")
    }

    /// A lab whose configuration also holds `extra` (TOML lines).
    pub fn with_config(extra: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .expect("the user running the tests is known to NSS");
        let lab = Lab {
            dir,
            user: me.name,
            uid: me.uid.as_raw(),
        };
        let config = format!(
            "session_socket = {:?}\n{extra}\n",
            lab.socket().display().to_string()
        );
        std::fs::write(lab.config(), config).unwrap();
        lab
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state/fl.db")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("forcelogout.toml")
    }

    /// Where the configuration says the daemon listens; nothing does unless a test binds it.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sessions")
    }

    /// `db= config= debug timeout=10000`: the debug lines say who recorded each write, and a
    /// stand-in daemon on a loaded machine has five seconds to answer.
    pub fn args(&self) -> ModuleArgs {
        ModuleArgs {
            db: self.db(),
            config: self.config(),
            debug: true,
            timeout: Duration::from_secs(10),
            ..ModuleArgs::default()
        }
    }

    pub fn ctx(&self) -> HookContext {
        self.ctx_with(self.args())
    }

    pub fn ctx_with(&self, args: ModuleArgs) -> HookContext {
        HookContext {
            args,
            silent: false,
            now: now(),
        }
    }

    pub fn store(&self) -> Store {
        Store::open(&self.db(), Access::Create, Duration::from_secs(5)).unwrap()
    }

    /// An immediate kick of this user that took effect at 10:00 and locks them out for an
    /// hour: at `now()` the window is open until 11:00.
    pub fn lockout(&self, message: &str) -> ScheduleRecord {
        self.lockout_of(&self.user, message)
    }

    /// The same lockout, of `group`.
    pub fn lockout_of(&self, group: &str, message: &str) -> ScheduleRecord {
        let schedule = Schedule {
            group: group.into(),
            immediate: true,
            lockout_minutes: 60,
            ..self.schedule("2026-11-23", "10:00", true, message)
        };
        self.store()
            .add_immediate_logout(
                &schedule,
                "root",
                at("2026-11-23T09:59:00Z"),
                at("2026-11-23T10:00:00Z"),
            )
            .unwrap()
    }

    /// A one-off logout (`kick` or a warning) of this user at `time` UTC on `date`.
    pub fn logout_at(&self, date: &str, time: &str, kick: bool, message: &str) -> ScheduleRecord {
        self.store()
            .add_schedule(
                &self.schedule(date, time, kick, message),
                "root",
                at("2026-11-01T00:00:00Z"),
            )
            .unwrap()
    }

    fn schedule(&self, date: &str, time: &str, kick: bool, message: &str) -> Schedule {
        Schedule {
            group: self.user.clone(),
            recurrence: Recurrence::Once(NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap()),
            time: NaiveTime::parse_from_str(time, "%H:%M").unwrap(),
            timezone: forcelogout_core::zone::Zone::utc(),
            immediate: false,
            kick,
            message: message.into(),
            lockout_minutes: 0,
        }
    }

    pub fn sessions(&self) -> Vec<LiveSession> {
        self.store().live_sessions().unwrap()
    }

    /// Each event as `event user session-key reason`, in order.
    pub fn events(&self) -> Vec<String> {
        self.store()
            .events(&EventFilter::default(), 1000)
            .unwrap()
            .into_iter()
            .map(|e| {
                let mut line = format!("{} {}", e.event, e.group_name);
                for part in [e.session_key, e.reason].into_iter().flatten() {
                    line.push(' ');
                    line.push_str(&part);
                }
                line
            })
            .collect()
    }
}
