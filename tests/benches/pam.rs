//! `cargo build --release --workspace && cargo bench -p forcelogout_tests --bench pam`
//!
//! open+close through the real libpam for three stacks in one run, interleaved in rounds:
//! pam_permit.so alone (the baseline), plus pam_forcelogout.so (writing the store itself, and
//! with the daemon running, which records the sessions for it), and plus Debian's
//! pam_lastlog.so (a C module that writes a file per login). Then the physics: one bare
//! durable commit (WAL, synchronous=FULL) on the same disk, and the module's cost per pair as a
//! multiple of the two commits it makes. Last, session opens per second from 8 processes.
//! Everything runs in a private mount namespace (pam_lastlog writes /var/log: a private copy).

use std::process::Stdio;
use std::time::{Duration, Instant};

use forcelogout_core::sessions::{LoginFacts, ProcessFacts};
use forcelogout_core::store::{Access, RemovalReason, Store};
use forcelogout_tests::daemon::Daemon;
use forcelogout_tests::{is_root, PamStack, Transcript, USERS};

const ROUNDS: usize = 5;
const PAIRS_PER_ROUND: usize = 200;
const PARALLEL_PAIRS: usize = 100;

struct Config {
    name: &'static str,
    stack: PamStack,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn run_pairs(stack: &PamStack, setup: &str, user: &str, pairs: usize) -> Transcript {
    stack.run_with_mounts(setup, user, &[&format!("bench:{pairs}")])
}

fn main() {
    if !is_root() {
        eprintln!("the PAM benchmark needs root (private mount namespace)");
        return;
    }
    let varlog = tempfile::tempdir_in("/var/tmp").expect("tempdir on disk");
    let setup = format!("mount --bind '{}' /var/log", varlog.path().display());
    let configs = [
        Config {
            name: "pam_permit.so only",
            stack: PamStack::new(&["session required pam_permit.so"]),
        },
        Config {
            name: "+ pam_forcelogout.so",
            stack: PamStack::new(&[
                "session [success=ok ignore=bad default=bad] {module} db={db}",
                "session required pam_permit.so",
            ]),
        },
        Config {
            name: "+ forcelogout, daemon up",
            stack: PamStack::new(&["session required pam_permit.so"]),
        },
        Config {
            name: "+ pam_lastlog.so",
            stack: PamStack::new(&[
                "session required pam_lastlog.so silent",
                "session required pam_permit.so",
            ]),
        },
    ];
    // The stores live on the disk under test (/tmp is on the root filesystem here). For
    // "daemon up", the real daemon runs on that stack's store and records its sessions.
    let daemon = Daemon::start(&configs[2].stack.db, "");
    configs[2].stack.write_service(&[
        &format!(
            "session [success=ok ignore=bad default=bad] {{module}} db={{db}} config={}",
            daemon.config.display()
        ),
        "session required pam_permit.so",
    ]);
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    let mut failures = 0;
    for _ in 0..ROUNDS {
        for (i, c) in configs.iter().enumerate() {
            let t = run_pairs(&c.stack, &setup, "daemon", PAIRS_PER_ROUND);
            failures += t.pairs.iter().filter(|p| p.1 != 0 || p.2 != 0).count();
            samples[i].extend(t.pairs.iter().map(|p| p.0));
        }
    }
    println!(
        "open+close through libpam, {} pairs per stack in {ROUNDS} interleaved rounds:",
        ROUNDS * PAIRS_PER_ROUND
    );
    let mut medians = Vec::new();
    for (c, s) in configs.iter().zip(samples.iter_mut()) {
        s.sort_unstable();
        let (median, p99) = (percentile(s, 0.5), percentile(s, 0.99));
        medians.push(median);
        println!(
            "  {:<24} median {:>6} µs   p99 {:>6} µs",
            c.name, median, p99
        );
    }
    let ratio = |i: usize| medians[i] as f64 / medians[0].max(1) as f64;
    println!(
        "  ratio to pam_permit.so   forcelogout {:.1}x, with the daemon up {:.1}x, lastlog {:.1}x",
        ratio(1),
        ratio(2),
        ratio(3)
    );

    let bare_dir = configs[1]
        .stack
        .db
        .parent()
        .expect("state dir")
        .join("bare.db");
    let mut store =
        Store::open(&bare_dir, Access::Create, Duration::from_secs(5)).expect("bare store");
    store.bare_insert_commits(100).expect("warm-up");
    let commits = 1000;
    let bare = store.bare_insert_commits(commits).expect("bare commits");
    let commit_us = bare.as_micros() as f64 / commits as f64;
    println!("durability on the same disk:");
    println!("  one bare durable commit (WAL, synchronous=FULL)   {commit_us:>7.0} µs");
    println!(
        "  the module's commits per open+close               {:>7}",
        2
    );
    // The module's own two transactions (open: session row, `online`, notice cursor; close:
    // delete, `removed`, `offline`) on a long-lived connection, as the daemon runs them: they
    // touch about a dozen pages where the bare commit touches two.
    let own_db = bare_dir.with_file_name("own.db");
    let mut own = Store::open(&own_db, Access::Create, Duration::from_secs(5)).expect("store");
    let process = ProcessFacts::of_current_process();
    let login = LoginFacts {
        user: "daemon".into(),
        uid: 1,
        service: Some("fltest".into()),
        ..LoginFacts::default()
    };
    let now = chrono::Utc::now();
    let started = Instant::now();
    for _ in 0..commits {
        let key = forcelogout_core::ids::new_id().expect("id");
        own.open_session(&key, &login, &process, now).expect("open");
        own.close_session(Some(&key), &process, RemovalReason::Logout, now)
            .expect("close");
    }
    let own_pair_us = started.elapsed().as_micros() as f64 / commits as f64;
    println!("  the module's own open+close transactions, held connection {own_pair_us:>7.0} µs");
    for (label, i) in [("daemon down", 1), ("daemon up", 2)] {
        let added = medians[i].saturating_sub(medians[0]) as f64;
        println!(
            "  added time per pair, {label:<11} {added:>7.0} µs = {:>5.2}x the 2 bare commits",
            added / (2.0 * commit_us)
        );
    }
    println!(
        "  added time per pair, daemon up = {:>5.2}x the module's own transactions",
        medians[2].saturating_sub(medians[0]) as f64 / own_pair_us
    );

    for (name, c) in [
        ("pam_permit.so only", &configs[0]),
        ("+ pam_forcelogout.so", &configs[1]),
        ("+ forcelogout, daemon up", &configs[2]),
    ] {
        let started = Instant::now();
        let children: Vec<_> = USERS
            .iter()
            .map(|user| {
                c.stack
                    .harness(user, &[&format!("bench:{PARALLEL_PAIRS}")])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let mut failed = 0;
        for child in children {
            let out = child.wait_with_output().expect("wait");
            let t = Transcript::parse(&String::from_utf8_lossy(&out.stdout));
            failed += t.pairs.iter().filter(|p| p.1 != 0 || p.2 != 0).count()
                + PARALLEL_PAIRS.saturating_sub(t.pairs.len());
        }
        let wall = started.elapsed().as_secs_f64();
        failures += failed;
        println!(
            "8 parallel processes, {name:<24} {:>6.0} sessions opened and closed per second ({} failed)",
            (USERS.len() * PARALLEL_PAIRS) as f64 / wall,
            failed
        );
    }
    println!("failed PAM calls in the whole run: {failures}");
}
