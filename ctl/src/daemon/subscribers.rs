//! The daemon's subscriber threads: one per hook and one for syslog, so that a hook that hangs
//! or fails holds back only itself. The main loop wakes them when the store changes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use forcelogout_core::config::Config;
use forcelogout_core::store::{Access, Store, DEFAULT_BUSY_TIMEOUT};
use forcelogout_core::subscribers::{discover_hooks, Round, Subscriber, Target};

/// A generation counter the threads wait on: bumped at every change of the store.
type Signal = Arc<(Mutex<u64>, Condvar)>;

/// Longest a caught-up subscriber sleeps without being woken (a missed wake-up costs this).
const IDLE_WAIT: Duration = Duration::from_secs(30);

pub struct Subscribers {
    db: PathBuf,
    config: Config,
    signal: Signal,
    started: HashSet<String>,
}

impl Subscribers {
    pub fn start(db: PathBuf, config: Config) -> Subscribers {
        let mut subscribers = Subscribers {
            db,
            config,
            signal: Arc::new((Mutex::new(0), Condvar::new())),
            started: HashSet::new(),
        };
        if subscribers.config.syslog {
            let socket = subscribers.config.syslog_socket.clone();
            subscribers.spawn(Target::Syslog { socket });
        }
        subscribers.rescan();
        subscribers
    }

    /// Starts a thread for each hook that appeared in the hooks directory.
    pub fn rescan(&mut self) {
        let (hooks, refused) = discover_hooks(&self.config.hooks_dir);
        for line in refused {
            if self.started.insert(line.clone()) {
                super::log(&line);
            }
        }
        for path in hooks {
            self.spawn(Target::Hook {
                path,
                time_limit: self.config.hook_timeout,
            });
        }
    }

    /// Wakes every subscriber: there may be new events.
    pub fn notify(&self) {
        let (generation, wake) = &*self.signal;
        if let Ok(mut g) = generation.lock() {
            *g += 1;
            wake.notify_all();
        }
    }

    fn spawn(&mut self, target: Target) {
        let name = target.name();
        if !self.started.insert(name.clone()) {
            return;
        }
        // The cursor is created here, not in the thread: a hook present at start-up is given
        // every event committed after the daemon's sockets appear.
        let opened = Store::open(&self.db, Access::ReadWrite, DEFAULT_BUSY_TIMEOUT)
            .and_then(|mut store| store.subscriber_cursor(&name).map(|_| store));
        let store = match opened {
            Ok(store) => store,
            Err(e) => {
                super::log(&format!("{name}: {e}"));
                self.started.remove(&name);
                return;
            }
        };
        let signal = Arc::clone(&self.signal);
        super::log(&format!("delivering events to {name}"));
        std::thread::spawn(move || run(Subscriber::new(target, store), &signal));
    }
}

fn run(mut subscriber: Subscriber, signal: &Signal) {
    let name = subscriber.target().name();
    let mut log = |line: &str| super::log(line);
    let (generation, wake) = &**signal;
    loop {
        let seen = generation.lock().map(|g| *g).unwrap_or(0);
        match subscriber.deliver(&mut log) {
            Ok(Round::CaughtUp) => {
                // Sleep until the store changes, or a while (a missed wake-up costs this).
                let Ok(guard) = generation.lock() else { return };
                let _ = wake.wait_timeout_while(guard, IDLE_WAIT, |g| *g == seen);
            }
            // Back-off: new events do not cut it short.
            Ok(Round::RetryAfter(after)) => std::thread::sleep(after),
            Ok(Round::Gone) => {
                super::log(&format!("{name}: gone from the hooks directory"));
                return;
            }
            Err(e) => {
                super::log(&format!("{name}: {e}"));
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}
