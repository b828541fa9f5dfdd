//! `cargo bench -p forcelogout_core`: next-firing and schedule writes, each next to a baseline
//! measured in the same run on the same machine, printed as ratios. Not a test: nothing here
//! asserts a time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, NaiveTime, TimeZone, Utc};
use forcelogout_core::days::Days;
use forcelogout_core::schedule::{Recurrence, Schedule};
use forcelogout_core::store::{Access, Store};
use forcelogout_core::zone::Zone;

const SCHEDULES: usize = 100_000;
const WRITES: usize = 2_000;
const ROUND: usize = 200;
const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Pacific/Auckland",
    "Europe/London",
    "America/Los_Angeles",
    "UTC",
    "Africa/Cairo",
    "America/Sao_Paulo",
    "Asia/Tehran",
    "Pacific/Chatham",
    "America/St_Johns",
];

/// A small deterministic generator (xorshift) so every run measures the same schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn schedules(count: usize) -> Vec<Schedule> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|i| {
            let recurrence = match rng.next(3) {
                0 => Recurrence::Once(
                    chrono::NaiveDate::from_ymd_opt(
                        2027,
                        1 + rng.next(12) as u32,
                        1 + rng.next(28) as u32,
                    )
                    .unwrap(),
                ),
                1 => Recurrence::Daily,
                _ => Recurrence::Weekly(Days::from_bits(1 + rng.next(127) as i64).unwrap()),
            };
            Schedule {
                group: format!("group{i}"),
                recurrence,
                time: NaiveTime::from_hms_opt(rng.next(24) as u32, rng.next(60) as u32, 0).unwrap(),
                timezone: Zone::named(ZONES[rng.next(ZONES.len() as u64) as usize]).unwrap(),
                immediate: false,
                kick: true,
                message: "Lab closes at 18:00".into(),
                lockout_minutes: 0,
            }
        })
        .collect()
}

fn per_op(total: Duration, count: usize) -> f64 {
    total.as_nanos() as f64 / count as f64
}

fn main() {
    let now: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let all = schedules(SCHEDULES);

    // Baseline: one bare zone lookup per schedule, the least any correct answer must do.
    let local = NaiveDateTime::parse_from_str("2026-11-23 18:00", "%Y-%m-%d %H:%M").unwrap();
    let started = Instant::now();
    for s in &all {
        black_box(
            black_box(&s.timezone)
                .from_local_datetime(&local)
                .earliest(),
        );
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    let mut fired = 0usize;
    for s in &all {
        fired += usize::from(black_box(s.next_after(now)).is_some());
    }
    let ours = started.elapsed();

    println!("next-firing for {SCHEDULES} schedules ({fired} with a next firing):");
    println!(
        "  forcelogout next_after       {:>9.1} ms  {:>8.0} ns/schedule",
        ours.as_secs_f64() * 1e3,
        per_op(ours, SCHEDULES)
    );
    println!(
        "  baseline: one zone lookup    {:>9.1} ms  {:>8.0} ns/schedule",
        baseline.as_secs_f64() * 1e3,
        per_op(baseline, SCHEDULES)
    );
    println!(
        "  ratio                        {:>9.2}x",
        ours.as_secs_f64() / baseline.as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("forcelogout-bench-{}", std::process::id()));
    let path = dir.join("bench.db");
    let mut store = Store::open(&path, Access::Create, Duration::from_secs(5)).unwrap();
    // The bare commits in a store of their own on the same disk, so that neither phase leaves
    // the other a WAL of its making; rounds alternate, after a warm-up round.
    let mut bare_store =
        Store::open(&dir.join("bare.db"), Access::Create, Duration::from_secs(5)).unwrap();
    bare_store.bare_insert_commits(ROUND).unwrap();
    let (mut bare, mut writes) = (Duration::ZERO, Duration::ZERO);
    for round in all.chunks(ROUND).take(WRITES / ROUND) {
        bare += bare_store.bare_insert_commits(ROUND).unwrap();
        let started = Instant::now();
        for s in round {
            store.add_schedule(s, "bench", now).unwrap();
        }
        writes += started.elapsed();
    }
    let rate = |d: Duration| WRITES as f64 / d.as_secs_f64();
    println!("schedule writes, {WRITES} each in its own durable transaction (WAL, synchronous=FULL), {}:", dir.display());
    println!(
        "  forcelogout add_schedule     {:>9.0} writes/s  {:>8.0} µs/write",
        rate(writes),
        per_op(writes, WRITES) / 1e3
    );
    println!(
        "  baseline: plain INSERT       {:>9.0} writes/s  {:>8.0} µs/write",
        rate(bare),
        per_op(bare, WRITES) / 1e3
    );
    println!(
        "  ratio (time per write)       {:>9.2}x",
        writes.as_secs_f64() / bare.as_secs_f64()
    );
    drop((store, bare_store));
    let _ = std::fs::remove_dir_all(&dir);
}
