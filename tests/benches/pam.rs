//! `cargo build --release --workspace && cargo bench -p forcelogout_tests --bench pam` (root)
//!
//! What a login costs, through the real libpam: each login is its own handle (start,
//! `account`, `open_session`, `close_session`, end), as one sshd connection is. The stacks, in
//! one run, interleaved in short rounds: `pam_permit.so` alone (the baseline), plus
//! `pam_forcelogout.so` writing the store itself (daemon down), plus the module with the real
//! daemon recording for it (daemon up), and, when `FL_BENCH_WTMPDB_SRC` names wtmpdb's source
//! tree, wtmpdb's `pam_wtmpdb.so` as the peer (see `pam/wtmpdb.rs`; "peer skipped" otherwise).
//! A stack's cost is the difference to the baseline, as a multiple of the peer's and of the
//! two durable commits a login needs (one for open, one for close), each measured as a bare
//! commit (WAL, synchronous=FULL) on the same disk in every round; beside them the rows' floor
//! (a login's rows on one open connection). Then the same per call; a login in a process of
//! its own, whose first `pam_start` loads the modules, as each sshd connection's process does
//! (`pam/fresh.rs`); where the time goes step by step (`pam/breakdown.rs`); and logins from 8
//! processes at once: their p99, and the CPU each login took there (the 8 processes' and the
//! daemon's).
//!
//! The stores hold a few schedules, as a real one does: a daily warning for another group,
//! and a weekly kick with a lockout for another group (its window closed), so `account`
//! reads and weighs them. `FL_BENCH_ROUNDS` (12 rounds of 25 logins per stack by default)
//! shortens the run while iterating.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use forcelogout_core::schedule::{RecurrenceInput, ScheduleInput};
use forcelogout_core::store::{Access, Store};
use forcelogout_tests::daemon::Daemon;
use forcelogout_tests::{is_root, Login, PamStack, Transcript, USERS};

#[path = "pam/breakdown.rs"]
mod breakdown;
#[path = "pam/fresh.rs"]
mod fresh;
#[path = "pam/wtmpdb.rs"]
mod wtmpdb;

use breakdown::{breakdown, rows_floor};

/// Short rounds, many of them: the disk is shared, and its load changes from second to second.
const LOGINS_PER_ROUND: usize = 25;
const PARALLEL_LOGINS: usize = 200;

/// The user logging in: not root (root is exempt from group schedules), in no schedule's group.
const USER: &str = "daemon";

fn rounds() -> usize {
    std::env::var("FL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12)
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
        .into_new(&forcelogout_core::zone::Zone::utc())
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

    let rounds = rounds();
    let bare_db = stacks[0].stack.db.with_file_name("bare.db");
    let mut bare = Store::open(&bare_db, Access::Create, Duration::from_secs(5)).expect("store");
    let measured = run_rounds(&stacks, rounds, &mut bare);
    let (samples, commit_samples, held_alone, mut failures) = measured;
    let commit_us = median(commit_samples) as f64;
    let floor = rows_floor(&stacks[1].stack.db, &mut bare);
    drop(bare);

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

    fresh::fresh_processes(&stacks);

    // `FL_BENCH_NO_BREAKDOWN`: for running this benchmark over an older build's module and
    // daemon, whose core this process does not share.
    if std::env::var_os("FL_BENCH_NO_BREAKDOWN").is_none() {
        let measured = (added[1], added[2]);
        breakdown(&stacks[1].stack, &down_config, &daemon, measured);
    }

    let (mut parallel_p99, mut up_failed) = (0, 0);
    for (i, s) in stacks.iter().enumerate() {
        let (failed_here, p99_here) = parallel(s, &daemon, median(column(i, whole)));
        failures += failed_here;
        if s.kind == Kind::DaemonUp {
            (parallel_p99, up_failed) = (p99_here, failed_here);
        }
    }
    println!("failed PAM calls in the whole run (all stacks): {failures}");
    print_goals(&stacks, &added, 2.0 * commit_us, parallel_p99, up_failed);
    drop(daemon);
}

/// What the interleaved rounds measured: each stack's logins, the bare commits beside them, how
/// long the daemon-down stack held the write lock, and the failed calls.
type Rounds = (Vec<Vec<Login>>, Vec<u64>, Duration, usize);

/// The stacks' logins in `rounds` interleaved rounds, with bare commits on `bare` beside them.
fn run_rounds(stacks: &[Stack], rounds: usize, bare: &mut Store) -> Rounds {
    // The durable commits a login needs, on the same disk, measured in every round beside the
    // logins (this machine's disk is shared, and its fsyncs vary from minute to minute).
    bare.bare_insert_commits(20).expect("warm-up");
    let mut commit_samples: Vec<u64> = Vec::new();
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
    (samples, commit_samples, held_alone, failures)
}

/// Each goal, and whether this run reached it.
fn print_goals(
    stacks: &[Stack],
    added: &[f64],
    two_commits: f64,
    parallel_p99: u64,
    failures: usize,
) {
    let peer = stacks.iter().position(|s| s.kind == Kind::Peer);
    let verdict = |reached: bool| if reached { "reached" } else { "not reached" };
    println!("goals:");
    for (i, stack) in stacks.iter().enumerate() {
        let Some((to_peer, to_commits)) = goals(stack.kind) else {
            continue;
        };
        let commits = added[i] / two_commits;
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
        "  8 processes, daemon up      p99 {parallel_p99} µs (≤ 10000: {}), its failed PAM calls {failures} (0: {})",
        verdict(parallel_p99 <= 10_000),
        verdict(failures == 0)
    );
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
