//! `cargo build --release --workspace && cargo bench -p forcelogout_tests --bench pam` (root)
//!
//! What a login costs, through the real libpam: each login is its own handle (start,
//! `account`, `open_session`, `close_session`, end), as one sshd connection is. Three stacks in
//! one run, interleaved in rounds: `pam_permit.so` alone (the baseline), plus
//! `pam_forcelogout.so` writing the store itself (daemon down), and plus the module with the
//! real daemon recording for it (daemon up). The module's cost is the difference to the
//! baseline, as a multiple of the durable commits a login needs (one for open, one for close),
//! each measured as a bare commit (WAL, synchronous=FULL) on the same disk in the same run;
//! then the same per call, and logins per second from 8 processes at once with the CPU each
//! login took there (the 8 processes' and the daemon's), which bounds what the machine's cores
//! could carry.
//!
//! The stores hold a few schedules, as a real one does: a daily warning for another group,
//! and a weekly kick with a lockout for another group (its window closed), so `account`
//! reads and weighs them. `FL_BENCH_ROUNDS` shortens the run while iterating.
//! The per-step breakdown runs the module's core steps one by one in this process.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use forcelogout_core::config::Config;
use forcelogout_core::policy;
use forcelogout_core::relay;
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::sessions::{LoginFacts, ProcessFacts};
use forcelogout_core::store::{Access, RemovalReason, Store};
use forcelogout_tests::daemon::Daemon;
use forcelogout_tests::{is_root, Login, PamStack, Transcript, USERS};

#[path = "pam/wtmpdb.rs"]
mod wtmpdb;

const LOGINS_PER_ROUND: usize = 100;
const PARALLEL_LOGINS: usize = 200;

/// The user logging in: not root (root is exempt from group schedules), in no schedule's group.
const USER: &str = "daemon";

fn rounds() -> usize {
    std::env::var("FL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn p99(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    let rank = ((values.len() as f64 - 1.0) * 0.99).round() as usize;
    values.get(rank).copied().unwrap_or(0)
}

fn failed(login: &Login) -> bool {
    login.rc != [0, 0, 0]
}

fn with_schedules(stack: &PamStack) {
    let mut store = Store::open(&stack.db, Access::Create, Duration::from_secs(5)).expect("store");
    let schedules = [
        ("students", RecurrenceInput::Daily, false, None),
        (
            "lab",
            RecurrenceInput::Weekly("Mon-Fri".into()),
            true,
            Some("30".to_string()),
        ),
    ];
    let now = Utc::now();
    // An hour ahead: no countdown runs, no window is open, while the benchmark runs.
    let at = (now + chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    for (group, recurrence, kick, lockout) in schedules {
        let schedule = ScheduleInput {
            group: Some(group.into()),
            recurrence: Some(recurrence),
            at: Some(at.clone()),
            timezone: Some("UTC".into()),
            kick: Some(kick),
            message: Some("The lab closes.".into()),
            lockout,
        }
        .into_new(chrono_tz::Tz::UTC)
        .expect("schedule");
        store.add_schedule(&schedule, "bench", now).expect("add");
    }
}

/// A call of a login, by name, and how to read its microseconds.
type Step = (&'static str, fn(&Login) -> u64);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    DaemonDown,
    DaemonUp,
    Peer,
}

struct Stack {
    name: &'static str,
    kind: Kind,
    stack: PamStack,
}

/// The goals a login's added cost is held to, by stack: at most this multiple of wtmpdb's,
/// and of the run's two bare commits.
fn goals(kind: Kind) -> Option<(f64, f64)> {
    match kind {
        Kind::DaemonUp => Some((0.5, 1.3)),
        Kind::DaemonDown => Some((1.0, 3.0)),
        _ => None,
    }
}

/// The stacks measured: the baseline, the module with the daemon down and up, and the peer
/// when its source is there. The daemon records for the daemon-up stack.
fn stacks() -> (Vec<Stack>, Daemon, std::path::PathBuf) {
    let module_lines = |config: &str| -> [String; 4] {
        [
            format!("account [success=ok ignore=ignore default=bad] {{module}} db={{db}}{config}"),
            "account required pam_permit.so".into(),
            format!("session [success=ok ignore=bad default=bad] {{module}} db={{db}}{config}"),
            "session required pam_permit.so".into(),
        ]
    };
    let new = |name, kind, lines: &[&str]| Stack {
        name,
        kind,
        stack: PamStack::new(lines),
    };
    let mut stacks = vec![
        new(
            "pam_permit.so only",
            Kind::Baseline,
            &[
                "account required pam_permit.so",
                "session required pam_permit.so",
            ],
        ),
        new("forcelogout, daemon down", Kind::DaemonDown, &[]),
        new("forcelogout, daemon up", Kind::DaemonUp, &[]),
    ];
    // The daemon-down stack gets a configuration without a daemon's socket at that path, so
    // that a daemon running on the host for real is not asked.
    let down_config = stacks[1].stack.dir.path().join("forcelogout.toml");
    std::fs::write(
        &down_config,
        format!(
            "socket = \"{0}/socket\"\nsession_socket = \"{0}/sessions\"\n",
            stacks[1].stack.dir.path().display()
        ),
    )
    .expect("config");
    let lines = module_lines(&format!(" config={}", down_config.display()));
    stacks[1]
        .stack
        .write_service(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    with_schedules(&stacks[1].stack);
    with_schedules(&stacks[2].stack);
    let daemon = Daemon::start(&stacks[2].stack.db, "");
    let lines = module_lines(&format!(" config={}", daemon.config.display()));
    stacks[2]
        .stack
        .write_service(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let peer = new("wtmpdb's pam_wtmpdb.so", Kind::Peer, &[]);
    match wtmpdb::build(peer.stack.dir.path()) {
        Ok(module) => {
            let lines = wtmpdb::service_lines(&module, &peer.stack.db.with_file_name("wtmp.db"));
            peer.stack
                .write_service(&lines.iter().map(String::as_str).collect::<Vec<_>>());
            stacks.push(peer);
        }
        Err(why) => println!("peer skipped: {why}"),
    }
    (stacks, daemon, down_config)
}

fn main() {
    if !is_root() {
        eprintln!("the PAM benchmark needs root (it logs users in through libpam)");
        return;
    }
    let (stacks, daemon, down_config) = stacks();

    // The durable commits a login needs, on the same disk, measured in every round beside the
    // logins (this machine's disk is shared, and its fsyncs vary from minute to minute).
    let bare_db = stacks[0].stack.db.with_file_name("bare.db");
    let mut bare = Store::open(&bare_db, Access::Create, Duration::from_secs(5)).expect("store");
    bare.bare_insert_commits(20).expect("warm-up");
    let mut commit_samples: Vec<u64> = Vec::new();
    let rounds = rounds();
    let mut samples: Vec<Vec<Login>> = vec![Vec::new(); stacks.len()];
    let mut failures = 0;
    // How long one process alone, with the daemon down, holds the store's write lock.
    let mut held_alone = Duration::ZERO;
    for _ in 0..rounds {
        for (i, s) in stacks.iter().enumerate() {
            let probe = (s.kind == Kind::DaemonDown)
                .then(|| (WriteLockProbe::start(&s.stack.db), Instant::now()));
            let t = s.stack.run(USER, &[&format!("login:{LOGINS_PER_ROUND}")]);
            if let Some((probe, started)) = probe {
                held_alone += started.elapsed().mul_f64(probe.held_fraction());
            }
            failures += t.logins.iter().filter(|l| failed(l)).count()
                + LOGINS_PER_ROUND.saturating_sub(t.logins.len());
            samples[i].extend(t.logins);
            for _ in 0..LOGINS_PER_ROUND / 2 {
                let one = bare.bare_insert_commits(1).expect("bare commit");
                commit_samples.push(one.as_micros() as u64);
            }
        }
    }
    let commit_us = median(commit_samples) as f64;
    let floor = rows_floor(&stacks[1].stack.db, &mut bare);

    println!(
        "a login through libpam (start, account, open, close, end), {} per stack in {rounds} interleaved rounds:",
        rounds * LOGINS_PER_ROUND
    );
    let column = |i: usize, f: fn(&Login) -> u64| samples[i].iter().map(f).collect::<Vec<u64>>();
    let whole = |l: &Login| l.us;
    for (i, s) in stacks.iter().enumerate() {
        println!(
            "  {:<26} median {:>6} µs   p99 {:>6} µs",
            s.name,
            median(column(i, whole)),
            p99(column(i, whole))
        );
    }
    println!("one bare durable commit on the same disk, median of the rounds' (WAL, synchronous=FULL): {commit_us:.0} µs; a login needs 2");
    println!(
        "the rows' floor: a login's rows alone (open's and close's commits, one open connection, this store): {} µs = {:.2}x the 2 bare commits beside them ({} µs); CPU {} µs",
        floor.rows,
        floor.rows as f64 / floor.pairs as f64,
        floor.pairs,
        floor.cpu
    );
    let base = median(column(0, whole)) as f64;
    let added: Vec<f64> = (0..stacks.len())
        .map(|i| median(column(i, whole)) as f64 - base)
        .collect();
    let peer = stacks.iter().position(|s| s.kind == Kind::Peer);
    for (i, stack) in stacks.iter().enumerate().skip(1) {
        let to_peer = peer.map_or("  (no peer)".to_string(), |p| {
            format!(" = {:>5.2}x wtmpdb's", added[i] / added[p])
        });
        println!(
            "  {:<26} adds {:>6.0} µs per login = {:>5.2}x the 2 bare commits{to_peer}",
            stack.name,
            added[i],
            added[i] / (2.0 * commit_us)
        );
    }
    per_call(&stacks, &column);

    // SQLite admits one writer at a time: the time a login holds the lock bounds logins per
    // second at that hold, however many processes make them.
    let held_per_login = held_alone.as_micros() as f64 / (rounds * LOGINS_PER_ROUND) as f64;
    println!(
        "  forcelogout, daemon down   one process alone holds the store's write lock {held_per_login:.0} µs per login: at most {:.0} logins per second at that hold (one writer at a time)",
        1e6 / held_per_login
    );

    // `FL_BENCH_NO_BREAKDOWN`: for running this benchmark over an older build's module and
    // daemon, whose core this process does not share.
    if std::env::var_os("FL_BENCH_NO_BREAKDOWN").is_none() {
        let measured = (added[1], added[2]);
        breakdown(&stacks[1].stack, &down_config, &daemon, measured);
    }

    let mut parallel_p99 = 0;
    for (i, s) in stacks.iter().enumerate() {
        let (failed_here, p99_here) = parallel(s, &daemon, median(column(i, whole)));
        failures += failed_here;
        if s.kind == Kind::DaemonUp {
            parallel_p99 = p99_here;
        }
    }
    println!("failed PAM calls in the whole run: {failures}");
    println!("goals:");
    for (i, stack) in stacks.iter().enumerate() {
        let Some((to_peer, to_commits)) = goals(stack.kind) else {
            continue;
        };
        let commits = added[i] / (2.0 * commit_us);
        let verdict = |reached: bool| if reached { "reached" } else { "not reached" };
        let peer_part = peer.map_or("no peer in this run".to_string(), |p| {
            let ratio = added[i] / added[p];
            format!(
                "{ratio:.2}x wtmpdb (≤ {to_peer}: {})",
                verdict(ratio <= to_peer)
            )
        });
        println!(
            "  {:<26} {peer_part}; {commits:.2}x the 2 bare commits (≤ {to_commits}: {})",
            stack.name,
            verdict(commits <= to_commits)
        );
    }
    println!(
        "  8 processes, daemon up      p99 {parallel_p99} µs (≤ 10000: {}), failed PAM calls {failures} (0: {})",
        if parallel_p99 <= 10_000 { "reached" } else { "not reached" },
        if failures == 0 { "reached" } else { "not reached" }
    );
    drop(daemon);
}

/// Each call's median added to pam_permit.so's, and its p99.
fn per_call(stacks: &[Stack], column: &dyn Fn(usize, fn(&Login) -> u64) -> Vec<u64>) {
    let steps: [Step; 3] = [
        ("account", |l| l.acct_us),
        ("open", |l| l.open_us),
        ("close", |l| l.close_us),
    ];
    println!("per call, median added to pam_permit.so's (and p99 of the call):");
    for (i, stack) in stacks.iter().enumerate().skip(1) {
        let parts: Vec<String> = steps
            .iter()
            .map(|(name, f)| {
                let added = median(column(i, *f)) as f64 - median(column(0, *f)) as f64;
                format!("{name} {added:>6.0} µs (p99 {:>5})", p99(column(i, *f)))
            })
            .collect();
        println!("  {:<26} {}", stack.name, parts.join("   "));
    }
}

/// 8 processes logging in at once on `s`: logins per second, each login's p99, the CPU per
/// login and the store's write lock. Returns the failed calls and the p99 in µs.
fn parallel(s: &Stack, daemon: &Daemon, alone_us: u64) -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The daemon works only for the daemon-up stack; its CPU is counted there.
    let daemon_pid = (s.kind == Kind::DaemonUp).then(|| daemon.pid()).flatten();
    let cpu_before = (children_cpu_us(), daemon_pid.map_or(0, process_cpu_us));
    let probe = matches!(s.kind, Kind::DaemonDown | Kind::DaemonUp)
        .then(|| WriteLockProbe::start(&s.stack.db));
    let started = Instant::now();
    let children: Vec<_> = USERS
        .iter()
        .map(|user| {
            s.stack
                .harness(user, &[&format!("login:{PARALLEL_LOGINS}")])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let (mut failed_here, mut latencies) = (0, Vec::new());
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let t = Transcript::parse(&String::from_utf8_lossy(&out.stdout));
        failed_here += t.logins.iter().filter(|l| failed(l)).count()
            + PARALLEL_LOGINS.saturating_sub(t.logins.len());
        latencies.extend(t.logins.iter().map(|l| l.us));
    }
    let wall = started.elapsed().as_secs_f64();
    let held = probe.map(WriteLockProbe::held_fraction);
    let logins = (USERS.len() * PARALLEL_LOGINS) as f64;
    let clients = (children_cpu_us() - cpu_before.0) as f64 / logins;
    let served = daemon_pid.map_or(0, process_cpu_us) - cpu_before.1;
    let served = served as f64 / logins;
    let p99_here = p99(latencies.clone());
    println!(
        "8 parallel processes, {:<26} {:>6.0} logins per second ({failed_here} failed); a login median {} µs, p99 {p99_here} µs; the machine's time per login {:.0} µs (one process alone: {alone_us} µs)",
        s.name,
        logins / wall,
        median(latencies),
        wall * 1e6 / logins
    );
    // What the machine could carry at most: its cores kept busy with nothing but logins.
    println!(
        "  CPU per login: the 8 processes {clients:.0} µs + the daemon {served:.0} µs; {cores} cores at that cost: at most {:.0} per second",
        cores as f64 * 1e6 / (clients + served)
    );
    // SQLite admits one writer at a time: the time the lock is held per login bounds
    // logins per second from any number of processes.
    if let Some(held) = held {
        let per_login = held * wall * 1e6 / logins;
        println!(
            "  the store's write lock (one writer at a time) held {:.0}% of the phase: {per_login:.0} µs per login, so at most {:.0} per second at that hold",
            held * 100.0,
            1e6 / per_login
        );
    }
    (failed_here, p99_here)
}

/// Samples, on a thread of its own, whether another process holds the store's write lock. In
/// WAL mode SQLite's one writer holds a POSIX lock on byte 120 of the `-shm` file (the unix
/// VFS's WAL_WRITE_LOCK); F_GETLK only asks, it takes nothing, so the writers never wait on it.
/// This process must have no connection to that store open meanwhile: closing the probe's
/// descriptor drops every POSIX lock the process holds on the file.
struct WriteLockProbe {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<(u64, u64)>,
}

impl WriteLockProbe {
    const WRITE_LOCK_BYTE: i64 = 120;
    const EVERY: Duration = Duration::from_micros(250);

    fn start(db: &Path) -> WriteLockProbe {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let shm = std::fs::File::open(&shm).expect("the store's -shm file");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let (mut held, mut samples) = (0, 0);
            while !stopped.load(Ordering::Relaxed) {
                let mut lock = nix::libc::flock {
                    l_type: nix::libc::F_WRLCK as i16,
                    l_whence: nix::libc::SEEK_SET as i16,
                    l_start: Self::WRITE_LOCK_BYTE,
                    l_len: 1,
                    l_pid: 0,
                };
                nix::fcntl::fcntl(shm.as_raw_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut lock))
                    .expect("F_GETLK");
                held += u64::from(lock.l_type != nix::libc::F_UNLCK as i16);
                samples += 1;
                std::thread::sleep(Self::EVERY);
            }
            (held, samples)
        });
        WriteLockProbe { stop, sampler }
    }

    /// The share of the samples that found the lock held.
    fn held_fraction(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let (held, samples) = self.sampler.join().expect("probe");
        held as f64 / samples.max(1) as f64
    }
}

/// CPU time (user and system) of this process's waited-for children so far, in µs: /proc's
/// cutime and cstime, in USER_HZ ticks (100 a second on Linux).
fn children_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command's closing parenthesis begin with field 3 (man 5 proc).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    let ticks = |field: usize| fields[field - 3].parse::<u64>().expect("ticks");
    (ticks(16) + ticks(17)) * 10_000
}

/// CPU time of every thread of process `pid` so far, in µs.
fn process_cpu_us(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .flatten()
        .filter_map(|task| schedstat_us(&task.path().join("schedstat")))
        .sum()
}

/// CPU time of the calling thread so far, in µs.
fn thread_cpu_us() -> u64 {
    schedstat_us(Path::new("/proc/thread-self/schedstat")).expect("schedstat")
}

/// A task's time on the CPU from its schedstat (the first field, in ns), in µs; `None` for a
/// task that has ended.
fn schedstat_us(path: &Path) -> Option<u64> {
    let line = std::fs::read_to_string(path).ok()?;
    let nanoseconds: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds / 1000)
}

/// The rows' floor, measured beside the same run's bare commits.
struct Floor {
    rows: u64,
    pairs: u64,
    cpu: u64,
}

/// The floor under both paths: the rows SPEC §3 has a login write (the session row and
/// `online`; its deletion, `removed` and `offline`), as the daemon's session writer writes
/// them, into the daemon-down stack's store on one open connection with its statements
/// prepared (no PAM, no socket, no NSS), against two bare commits right after each login.
fn rows_floor(db: &Path, bare: &mut Store) -> Floor {
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
    }
    // What the writer's checkpointer does off the logins' path.
    warm.checkpoint().expect("checkpoint");
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
fn breakdown(down: &PamStack, down_config: &Path, daemon: &Daemon, measured: (f64, f64)) {
    const N: usize = 200;
    let budget = Duration::from_secs(1);
    let login = login_facts();
    println!("where the time goes, median of {N} logins made step by step in this process:");
    let mut steps = Steps::new(&[
        "the configuration file, read at each of the 3 calls",
        "process facts (/proc), at open and close",
        "NSS: the user's uid, at open",
        "opening the store for writing, once (account keeps it for the session's calls)",
        "account: reading the kick schedules and deciding",
        "open: its commit (the session row, online)",
        "open: the notices (the schedules read, NSS user and groups)",
        "close: its commit (the row deleted, removed, offline)",
    ]);
    for _ in 0..N {
        let config = steps.time(0, || {
            (0..3)
                .map(|_| Config::load(down_config).expect("config"))
                .last()
                .expect("config")
        });
        let process = steps.time(1, || {
            drop(ProcessFacts::of_current_process());
            ProcessFacts::of_current_process()
        });
        steps.time(2, || drop(nix::unistd::User::from_name(USER)));
        let mut store = steps.time(3, || {
            Store::open(&down.db, Access::ReadWrite, budget)
                .expect("store")
                .for_one_call()
        });
        steps.time(4, || {
            let kicks = store.current_kick_schedules_lenient().expect("read").0;
            policy::account_decision(&kicks, USER, &config, Utc::now()).expect("decision")
        });
        let key = forcelogout_core::ids::new_id().expect("id");
        steps.time(5, || {
            store
                .open_session(&key, &login, &process, Utc::now())
                .expect("open")
        });
        steps.time(6, || {
            let schedules = store.current_schedules_lenient().expect("read").0;
            policy::notices_among(&schedules, &config, USER, Utc::now()).expect("notices")
        });
        steps.time(7, || {
            store
                .close_session(Some(&key), &process, RemovalReason::Logout, Utc::now())
                .expect("close")
        });
    }
    steps.print("daemon down", measured.0);

    let up_config = Config::load(&daemon.config).expect("config");
    let mut steps = Steps::new(&[
        "the configuration file, read at each of the 3 calls",
        "process facts (/proc), at open and close",
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
        let process = steps.time(1, || {
            drop(ProcessFacts::of_current_process());
            ProcessFacts::of_current_process()
        });
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
    steps.print("daemon up", measured.1);
}
