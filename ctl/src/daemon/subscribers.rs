//! The daemon's subscriber threads: one per hook and one for syslog, so that a hook that hangs
//! or fails holds back only itself; and a scanner that keeps the hooks, and their cursors, in
//! line with the hooks directory (the rule is `forcelogout_core::subscribers::roster`'s). The
//! scanner looks when inotify says the directory changed and when the main loop asks; the main
//! loop wakes the delivery threads when the store changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use forcelogout_core::config::Config;
use forcelogout_core::store::{Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::subscribers::{Roster, Round, Subscriber, Target};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// A generation counter threads wait on: bumped at every change worth a look.
type Signal = Arc<(Mutex<u64>, Condvar)>;

/// Longest a caught-up subscriber sleeps without being woken (a missed wake-up costs this).
const IDLE_WAIT: Duration = Duration::from_secs(30);

pub struct Subscribers {
    /// Wakes the delivery threads.
    deliveries: Signal,
    /// Asks the scanner for a look at the hooks directory.
    scans: Signal,
}

impl Subscribers {
    pub fn start(db: PathBuf, config: Config) -> Subscribers {
        let deliveries = Signal::default();
        if config.syslog {
            let socket = config.syslog_socket.clone();
            spawn_delivery(&db, Target::Syslog { socket }, &deliveries);
        }
        let mut scanner = Scanner {
            db,
            hook_timeout: config.hook_timeout,
            roster: Roster::new(config.hooks_dir.clone()),
            store: None,
            threads: HashSet::new(),
            last_error: None,
            deliveries: Arc::clone(&deliveries),
        };
        // The first scan here, before any socket: a hook present at start-up is given every
        // event committed after the daemon's sockets appear (and those since its cursor).
        scanner.scan();
        let scans = Signal::default();
        watch(&config.hooks_dir, &scans);
        let asked = Arc::clone(&scans);
        std::thread::spawn(move || scanner.serve(&asked));
        Subscribers { deliveries, scans }
    }

    /// Asks for a look at the hooks directory (done by the scanner, off the main loop).
    pub fn rescan(&mut self) {
        bump(&self.scans);
    }

    /// Wakes every subscriber: there may be new events.
    pub fn notify(&self) {
        bump(&self.deliveries);
    }
}

fn bump(signal: &Signal) {
    let (generation, wake) = &**signal;
    if let Ok(mut g) = generation.lock() {
        *g += 1;
        wake.notify_all();
    }
}

/// Asks for a scan whenever an entry of the hooks directory is created, removed, renamed,
/// rewritten or has its owner or mode changed, so a hook's arrival, removal or fix is seen
/// at once, not at the next event. Without the directory, the main loop's requests (at each
/// change of the store) still find hooks.
fn watch(dir: &Path, scans: &Signal) {
    let changes = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR;
    let watching = Inotify::init(InitFlags::IN_CLOEXEC)
        .and_then(|inotify| inotify.add_watch(dir, changes).map(|_| inotify));
    let Ok(inotify) = watching else {
        return;
    };
    let scans = Arc::clone(scans);
    std::thread::spawn(move || loop {
        match inotify.read_events() {
            Ok(_) => bump(&scans),
            Err(nix::Error::EINTR) => {}
            Err(e) => {
                super::log(&format!("watching the hooks directory: {e}"));
                return;
            }
        }
    });
}

/// Keeps the hooks' cursors in line with the directory and a delivery thread for each hook
/// it has seen (a thread stays when its hook goes: it waits, and serves it again if it comes
/// back, so one name never has two threads).
struct Scanner {
    db: PathBuf,
    hook_timeout: Duration,
    roster: Roster,
    store: Option<Store>,
    threads: HashSet<PathBuf>,
    last_error: Option<String>,
    deliveries: Signal,
}

impl Scanner {
    fn serve(mut self, scans: &Signal) {
        let (requests, wake) = &**scans;
        let mut done = 0;
        loop {
            let Ok(guard) = requests.lock() else { return };
            let Ok(guard) = wake.wait_while(guard, |r| *r == done) else {
                return;
            };
            done = *guard;
            drop(guard);
            self.scan();
        }
    }

    fn scan(&mut self) {
        if let Err(e) = self.apply_roster() {
            // Once per change: the main loop asks at every change of the store.
            let line = format!("hooks: {e}");
            if self.last_error.as_ref() != Some(&line) {
                super::log(&line);
                self.last_error = Some(line);
            }
        } else {
            self.last_error = None;
        }
        let new: Vec<PathBuf> = self
            .roster
            .present()
            .filter(|path| !self.threads.contains(*path))
            .cloned()
            .collect();
        for path in new {
            let target = Target::Hook {
                path: path.clone(),
                time_limit: self.hook_timeout,
            };
            if spawn_delivery(&self.db, target, &self.deliveries) {
                self.threads.insert(path);
            }
        }
        // A hook may have come, gone or been fixed: each thread looks again.
        bump(&self.deliveries);
    }

    fn apply_roster(&mut self) -> Result<(), forcelogout_core::error::Error> {
        let store = match &mut self.store {
            Some(store) => store,
            None => self.store.insert(Store::open(
                &self.db,
                Access::ReadWrite,
                DEFAULT_BUSY_TIMEOUT,
            )?),
        };
        self.roster
            .scan(store, &mut |line| super::log(line))
            .map(|_| ())
    }
}

/// Starts the delivery thread for `target`, with a store connection of its own; whether it
/// did (else a later scan tries again).
fn spawn_delivery(db: &Path, target: Target, deliveries: &Signal) -> bool {
    let name = target.name();
    let store = match Store::open(db, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT) {
        Ok(store) => store,
        Err(e) => {
            super::log(&format!("{name}: {e}"));
            return false;
        }
    };
    let deliveries = Arc::clone(deliveries);
    std::thread::spawn(move || run(Subscriber::new(target, store), &deliveries));
    true
}

fn run(mut subscriber: Subscriber, deliveries: &Signal) {
    let name = subscriber.target().name();
    let mut log = |line: &str| super::log(line);
    let (generation, wake) = &**deliveries;
    loop {
        let seen = generation.lock().map(|g| *g).unwrap_or(0);
        match subscriber.deliver(&mut log) {
            // Nothing to do until something changes: sleep until woken, or a while (a missed
            // wake-up costs this).
            Ok(Round::CaughtUp | Round::Gone | Round::Refused) => {
                let Ok(guard) = generation.lock() else { return };
                let _ = wake.wait_timeout_while(guard, IDLE_WAIT, |g| *g == seen);
            }
            // Back-off: new events do not cut it short.
            Ok(Round::RetryAfter(after)) => std::thread::sleep(after),
            Err(e) => {
                super::log(&format!("{name}: {e}"));
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}
