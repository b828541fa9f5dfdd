//! One file per subcommand; this one holds what they share: which store, which configuration,
//! who is asking, and where the output goes (the terminal, or a daemon's reply).

pub mod apply;
pub mod events;
pub mod fleet;
pub mod fleet_admin;
pub mod fleet_enrol;
pub mod logout;
pub mod next;
pub mod preview;
pub mod schedule;
pub mod sessions;
pub mod unlock;

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use forcelogout_core::clock::{Clock, SystemClock};
use forcelogout_core::config::Config;
use forcelogout_core::schedule_store::{Place, ScheduleStore};
use forcelogout_core::store::{Access, ScheduleRecord, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::targeting::{Identity, Targeted};
use forcelogout_core::Error;
use serde::Serialize;

/// Where a command gets the content of a file its command line names.
pub enum FileSource {
    /// It opens the path, as the user who runs it (the terminal).
    Path,
    /// The content a client read as itself and sent with its request (`None`: it sent none).
    /// The daemon never opens a path a client names: as root it could read what the client
    /// may not, or `/dev/zero`.
    Sent(Option<String>),
}

pub struct Context {
    pub db: PathBuf,
    pub json: bool,
    pub config: Config,
    /// Who is asking: the real uid's name, or the peer of a daemon request.
    pub actor: String,
    /// For an ordinary user's request through the daemon: only what concerns this user.
    pub viewer: Option<Identity>,
    /// Whether a daemon enforces logouts (else `logout` does it itself).
    pub daemon_running: bool,
    /// `--fleet`: the central database's URL ("" for the configuration's).
    pub fleet: Option<String>,
    /// Where `apply` gets the file its command line names.
    pub file_source: FileSource,
    out: RefCell<Box<dyn Write>>,
    err: RefCell<Box<dyn Write>>,
    clock: SystemClock,
}

impl Context {
    pub fn new(db: PathBuf, json: bool, config: Config, actor: String) -> Context {
        Context {
            db,
            json,
            config,
            actor,
            viewer: None,
            daemon_running: false,
            fleet: None,
            file_source: FileSource::Path,
            out: RefCell::new(Box::new(std::io::stdout())),
            err: RefCell::new(Box::new(std::io::stderr())),
            clock: SystemClock,
        }
    }

    /// Sends the output somewhere else (a daemon's reply buffers).
    pub fn redirect(&mut self, out: Box<dyn Write>, err: Box<dyn Write>) {
        self.out = RefCell::new(out);
        self.err = RefCell::new(err);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn print(&self, text: &str) -> Result<(), Error> {
        let mut out = self.out.borrow_mut();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing to standard output", e))
    }

    pub fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(value)
            .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?;
        text.push('\n');
        self.print(&text)
    }

    /// A warning line on standard error: "forcelogoutctl: warning: …".
    pub fn warn(&self, text: &str) {
        let line = forcelogout_core::text::sanitize_line(text);
        let _ = writeln!(self.err.borrow_mut(), "forcelogoutctl: warning: {line}");
    }

    /// Writers create the store on first use; a caller who may not write it gets exit 4.
    pub fn open_for_writing(&self) -> Result<Store, Error> {
        if self.viewer.is_some() {
            return Err(self.not_an_admin());
        }
        Store::open(&self.db, Access::Create, DEFAULT_BUSY_TIMEOUT)
    }

    /// Readers never create anything: where there is no store yet they say so (one line on
    /// standard error) and list nothing, exit 0, as on a host where nothing was ever written.
    /// A member of the reader group, whom the live store refuses, reads its readers' copy.
    pub fn open_for_reading(&self) -> Result<Store, Error> {
        match Store::open_existing_for_reading(&self.db, DEFAULT_BUSY_TIMEOUT)? {
            Some(store) => Ok(store),
            None => {
                self.warn(&format!(
                    "no store at {}: nothing has been written there yet",
                    self.db.display()
                ));
                Store::open_empty_in_memory()
            }
        }
    }

    /// Where `schedule`, `next`, `logout` and `events` work: with `--fleet` the central
    /// database, else this host's store. Known before anything is opened, so that bad input is
    /// refused without creating a store or contacting a server.
    pub fn place(&self) -> Place {
        match self.fleet {
            Some(_) => Place::Fleet,
            None => Place::Host,
        }
    }

    /// The store of this command's place, to write schedules: this host's (created on first
    /// use; exit 4 for a caller who may not write it), or the central database.
    pub fn schedules_for_writing(&self) -> Result<Box<dyn ScheduleStore>, Error> {
        Ok(match self.place() {
            Place::Host => Box::new(self.open_for_writing()?),
            Place::Fleet => Box::new(fleet::connect(self)?),
        })
    }

    /// The store of this command's place, to read schedules and events.
    pub fn schedules_for_reading(&self) -> Result<Box<dyn ScheduleStore>, Error> {
        Ok(match self.place() {
            Place::Host => Box::new(self.open_for_reading()?),
            Place::Fleet => Box::new(fleet::connect(self)?),
        })
    }

    /// Whether the asker may see this schedule: everyone may see what targets them.
    pub fn may_see(&self, record: &ScheduleRecord) -> bool {
        match &self.viewer {
            None => true,
            Some(v) => {
                v.targeted_by(&record.schedule.group, &self.config.exempt_groups) == Targeted::Yes
            }
        }
    }

    pub fn not_an_admin(&self) -> Error {
        Error::PermissionDenied {
            context: self.not_an_admin_text(),
        }
    }

    pub fn not_an_admin_text(&self) -> String {
        format!(
            "only root and members of the group '{}' may change schedules or log users out",
            self.config.admin_group
        )
    }
}

/// The same schedule as each store returns it, for the renderers' tests.
#[cfg(test)]
pub(crate) mod samples {
    use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
    use forcelogout_core::schedule_store::ScheduleVersion;
    use forcelogout_core::store::{ScheduleEvent, ScheduleRecord};

    pub const ID: &str = "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5";

    pub fn record() -> ScheduleRecord {
        let schedule = ScheduleInput {
            group: Some("students".into()),
            recurrence: Some(RecurrenceInput::Daily),
            at: Some("18:00".into()),
            timezone: Some("Europe/Berlin".into()),
            kick: Some(true),
            message: Some("Lab closes".into()),
            lockout: Some("15".into()),
        }
        .into_new(&forcelogout_core::zone::Zone::utc())
        .expect("a valid schedule");
        ScheduleRecord {
            date: "2026-12-07".into(),
            id: ID.into(),
            update_time: "2026-12-07T19:13:44.123456Z".into(),
            event: ScheduleEvent::Created,
            actor: "root".into(),
            schedule,
            due_at: None,
        }
    }

    /// As this host's store returns it.
    pub fn host() -> ScheduleVersion {
        ScheduleVersion::of_host(record())
    }

    /// As the central database returns it: with its selector and fleet version.
    pub fn fleet() -> ScheduleVersion {
        ScheduleVersion {
            record: record(),
            hosts: Some("@lab".into()),
            version: Some(7),
        }
    }
}
