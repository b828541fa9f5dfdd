//! Where a login's time goes: its steps one by one through the same core code the module
//! runs, in the benchmark's process; and the floor under them, the rows alone.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use forcelogout_core::config::Config;
use forcelogout_core::policy;
use forcelogout_core::relay;
use forcelogout_core::sessions::{host_name, LoginFacts, ProcessFacts};
use forcelogout_core::store::{Access, RemovalReason, Store};
use forcelogout_tests::daemon::Daemon;
use forcelogout_tests::PamStack;

use super::{median, thread_cpu_us, USER};

/// The rows' floor, measured beside the same run's bare commits.
pub struct Floor {
    pub rows: u64,
    pub pairs: u64,
    pub cpu: u64,
}

/// The floor under both paths: the rows SPEC §3 has a login write (the session row and
/// `online`; its deletion, `removed` and `offline`), as the daemon's session writer writes
/// them, into the daemon-down stack's store on one open connection with its statements
/// prepared (no PAM, no socket, no NSS), against two bare commits right after each login.
pub fn rows_floor(db: &Path, bare: &mut Store) -> Floor {
    const N: usize = 200;
    let login = login_facts();
    let process = ProcessFacts::of_current_process();
    let mut warm = Store::open(db, Access::ReadWrite, Duration::from_secs(1))
        .expect("store")
        .for_session_writer()
        .expect("writer");
    let (mut rows, mut rows_cpu, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..N {
        let key = forcelogout_core::ids::new_id().expect("id");
        let cpu = thread_cpu_us();
        let started = Instant::now();
        warm.open_session(&key, &login, &process, Utc::now())
            .expect("open");
        warm.close_session(Some(&key), &process, RemovalReason::Logout, Utc::now())
            .expect("close");
        rows.push(started.elapsed().as_micros() as u64);
        rows_cpu.push(thread_cpu_us() - cpu);
        let two = bare.bare_insert_commits(2).expect("bare commits");
        pairs.push(two.as_micros() as u64);
        if rows.len() % 12 == 0 {
            // What the daemon's checkpointer does beside the writer, off the logins' path.
            warm.checkpoint().expect("checkpoint");
        }
    }
    Floor {
        rows: median(rows),
        pairs: median(pairs),
        cpu: median(rows_cpu),
    }
}

fn login_facts() -> LoginFacts {
    LoginFacts {
        user: USER.into(),
        uid: 1,
        service: Some("fltest".into()),
        ..LoginFacts::default()
    }
}

/// The process facts a login's hooks use, as the module gets them: read at open, and at
/// close (same process, same handle) the same with the host name asked again.
fn process_facts_of_a_login() -> ProcessFacts {
    let at_open = ProcessFacts::of_current_process();
    drop(ProcessFacts {
        host: host_name(),
        ..at_open.clone()
    });
    at_open
}

/// Medians of `N` runs of a login's steps, each timed in turn, in µs.
struct Steps {
    names: Vec<&'static str>,
    samples: Vec<Vec<u64>>,
}

impl Steps {
    fn new(names: &[&'static str]) -> Steps {
        Steps {
            names: names.to_vec(),
            samples: vec![Vec::new(); names.len()],
        }
    }

    /// Times `f` as step `i`.
    fn time<T>(&mut self, i: usize, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let value = f();
        self.samples[i].push(started.elapsed().as_micros() as u64);
        value
    }

    /// Prints each step's median, their sum, and what the measured `total` has besides.
    fn print(self, path: &str, total: f64) {
        let medians: Vec<u64> = self.samples.into_iter().map(median).collect();
        let sum: u64 = medians.iter().sum();
        println!("  {path}: a login adds {total:.0} µs, of which");
        for (name, us) in self.names.iter().zip(&medians) {
            println!("    {us:>6} µs  {name}");
        }
        println!(
            "    {:>6.0} µs  the rest: libpam loading and calling the module, the socket, this process's caches",
            total - sum as f64
        );
    }
}

/// Where a login's time goes, on both paths: each step the module takes, in its order, through
/// the same core code, in this process, `N` logins; the rest of the measured total is what
/// happens outside these steps (libpam's loading of the module, its calls).
pub fn breakdown(down: &PamStack, down_config: &Path, daemon: &Daemon, measured: (f64, f64)) {
    const N: usize = 200;
    let budget = Duration::from_secs(1);
    let login = login_facts();
    println!("where the time goes, median of {N} logins made step by step in this process:");
    let mut steps = Steps::new(&[
        "the configuration file, read at each of the 3 calls",
        "process facts: read in /proc at open, kept for close",
        "NSS: the user's uid, at open",
        "opening the store for writing, once (account keeps it for the session's calls)",
        "account: reading the kick schedules and deciding",
        "open: its commit (the session row, online)",
        "open: the notices (the schedules read, NSS user and groups)",
        "close: its commit (the row deleted, removed, offline)",
    ]);
    for _ in 0..N {
        let config = steps.time(0, || {
            for _ in 0..2 {
                drop(Config::load(down_config).expect("config"));
            }
            Config::load(down_config).expect("config")
        });
        let process = steps.time(1, process_facts_of_a_login);
        steps.time(2, || drop(nix::unistd::User::from_name(USER)));
        let mut store = steps.time(3, || {
            Store::open(&down.db, Access::ReadWrite, budget)
                .expect("store")
                .for_one_call()
        });
        steps.time(4, || {
            let kicks = store.current_kick_schedules_lenient().expect("read").0;
            policy::account_decision(&kicks, USER, &config, Utc::now(), &policy::whole_row)
                .expect("decision")
        });
        let key = forcelogout_core::ids::new_id().expect("id");
        steps.time(5, || {
            store
                .open_session(&key, &login, &process, Utc::now())
                .expect("open")
        });
        steps.time(6, || {
            let schedules = store.current_schedules_lenient().expect("read").0;
            policy::notices_among(&schedules, &config, USER, Utc::now(), &policy::whole_row)
                .expect("notices")
        });
        steps.time(7, || {
            store
                .close_session(Some(&key), &process, RemovalReason::Logout, Utc::now())
                .expect("close")
        });
    }
    steps.print("daemon down", measured.0);
    daemon_up(daemon, measured.1);
}

/// The daemon-up path's steps: the module's own, and its three round trips to the daemon.
fn daemon_up(daemon: &Daemon, measured: f64) {
    const N: usize = 200;
    let budget = Duration::from_secs(1);
    let login = login_facts();
    let up_config = Config::load(&daemon.config).expect("config");
    let mut steps = Steps::new(&[
        "the configuration file, read at each of the 3 calls",
        "process facts: read in /proc at open, kept for close",
        "NSS: the user's uid, at open",
        "account: the round trip, the daemon deciding",
        "open: the round trip, the daemon's notices and one commit",
        "close: the round trip and one commit",
    ]);
    let ask = |process: &ProcessFacts, action: relay::Action| {
        let request = relay::Request {
            db: daemon.db.clone(),
            deadline: Utc::now() + chrono::Duration::seconds(1),
            now: Utc::now(),
            process: process.clone(),
            action,
        };
        relay::call(&up_config.session_socket, &request, budget).expect("daemon")
    };
    for _ in 0..N {
        steps.time(0, || {
            for _ in 0..3 {
                drop(Config::load(&daemon.config).expect("config"));
            }
        });
        let process = steps.time(1, process_facts_of_a_login);
        steps.time(2, || drop(nix::unistd::User::from_name(USER)));
        let account = relay::Action::Account { user: USER.into() };
        steps.time(3, || drop(ask(&ProcessFacts::default(), account)));
        let key = forcelogout_core::ids::new_id().expect("id");
        let open = relay::Action::Open {
            session_key: key.clone(),
            login: login.clone(),
            notices: true,
        };
        steps.time(4, || drop(ask(&process, open)));
        let close = relay::Action::Close {
            session_key: Some(key),
        };
        steps.time(5, || drop(ask(&process, close)));
    }
    steps.print("daemon up", measured);
}
