//! The fleet simulation's tables: what was measured, per size, and the projection to 10,000
//! hosts beside the goals.

use super::{EVENTS_PER_HOST, IDLE_WINDOW, POLL, PROJECTED_HOSTS, ROUNDS};

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Cores used: the server (postmaster and children), pgbouncer, this process (the hosts);
/// and the hosts' polls (steps) per second meanwhile.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub server: f64,
    pub pooler: f64,
    pub own: f64,
    pub polls: f64,
}

impl Cpu {
    /// Microseconds of CPU per poll, above `baseline` (the fleet with no hosts). A loaded
    /// machine polls less often than every `POLL`: the cost per poll is what scales.
    pub fn per_poll(&self, baseline: &Cpu) -> Cpu {
        let each = |now: f64, base: f64| (now - base).max(0.0) * 1e6 / self.polls.max(1.0);
        Cpu {
            server: each(self.server, baseline.server),
            pooler: each(self.pooler, baseline.pooler),
            own: each(self.own, baseline.own),
            polls: self.polls,
        }
    }
}

/// One size's measures.
pub struct Measures {
    pub hosts: usize,
    /// Per round: median and last host's seconds from the central commit to the local one,
    /// then median and longest seconds the applying step itself took.
    pub latency: Vec<[f64; 4]>,
    pub idle: Cpu,
    /// The same with the server and the pooler on a core of their own.
    pub idle_apart: Cpu,
    pub pg_connections: u64,
    pub server_connections: u64,
    pub clients: u64,
    pub events_per_second: f64,
    pub failed_steps: u64,
}

/// What pgbench measured through the same pooler, CPU per transaction.
pub struct References {
    /// `SELECT 1`: the cheapest statement there is.
    pub floor: Cpu,
    /// The link's idle read, the fleet clock, as the link sends it (a simple query).
    pub idle_read: Cpu,
}

/// Every table, with pgbench's `references` beside the hosts' figures.
pub fn print_tables(results: &[Measures], baseline: &Cpu, references: &References) {
    let floor = &references.floor;
    let read = &references.idle_read;
    println!(
        "\nlogout --hosts '*': central commit -> host's local commit, {ROUNDS} rounds \
         (medians of the rounds; the applying step's own time: poll, local commit, report)"
    );
    println!(
        "{:>6} {:>10} {:>12} {:>13} {:>14} {:>13}",
        "hosts", "median s", "last host s", "worst last s", "step median ms", "step max ms"
    );
    for m in results {
        let column = |i: usize| m.latency.iter().map(|r| r[i]).collect::<Vec<f64>>();
        let worst = column(1).into_iter().fold(0.0, f64::max);
        println!(
            "{:>6} {:>10.3} {:>12.3} {:>13.3} {:>14.1} {:>13.1}",
            m.hosts,
            median(column(0)),
            median(column(1)),
            worst,
            median(column(2)) * 1e3,
            median(column(3)) * 1e3
        );
    }
    println!(
        "\nidle fleet over {} s: polls per second; CPU per poll (µs) above the no-host \
         baseline (server {:.3} cores, pgbouncer {:.3}); server + pgbouncer cores in all; \
         connections",
        IDLE_WINDOW.as_secs(),
        baseline.server,
        baseline.pooler
    );
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>8} {:>7} {:>11} {:>11} {:>8} {:>7}",
        "hosts",
        "polls/s",
        "server",
        "pgbouncer",
        "sim",
        "cores",
        "pg backends",
        "pool server",
        "clients",
        "errors"
    );
    for m in results {
        println!(
            "{} {:>11} {:>11} {:>8} {:>7}",
            idle_columns(m.hosts, &m.idle, baseline),
            m.pg_connections,
            m.server_connections,
            m.clients,
            m.failed_steps
        );
    }
    println!(
        "{:>6} {:>8.0} {:>8.1} {:>9.1} {:>8} {:>7}   <- SELECT 1 from pgbench, the floor",
        "floor", floor.polls, floor.server, floor.pooler, "-", "-"
    );
    println!(
        "{:>6} {:>8.0} {:>8.1} {:>9.1} {:>8} {:>7}   <- the link's idle read (the fleet clock) from pgbench",
        "read", read.polls, read.server, read.pooler, "-", "-"
    );
    println!("\nthe same, the server and pgbouncer on a core of their own, the hosts on the other");
    for m in results {
        println!("{}", idle_columns(m.hosts, &m.idle_apart, baseline));
    }
    println!("\nevents uploaded, {EVENTS_PER_HOST} per host, every host writing");
    println!("{:>6} {:>12}", "hosts", "events/s");
    for m in results {
        println!("{:>6} {:>12.0}", m.hosts, m.events_per_second);
    }
    print_projection(results, baseline, references);
}

fn print_projection(results: &[Measures], baseline: &Cpu, references: &References) {
    let (floor, read) = (&references.floor, &references.idle_read);
    let Some(largest) = results.iter().max_by_key(|m| m.hosts) else {
        return;
    };
    // Every host polling every POLL, each poll at the cost measured with the most hosts.
    let each = largest.idle.per_poll(baseline);
    let polls = PROJECTED_HOSTS / POLL.as_secs_f64();
    let idle = baseline.server + baseline.pooler;
    let cores = (each.server + each.pooler) * polls / 1e6 + idle;
    let apart = largest.idle_apart.per_poll(baseline);
    let apart_cores = (apart.server + apart.pooler) * polls / 1e6 + idle;
    let floor_cores = (floor.server + floor.pooler) * polls / 1e6 + idle;
    let read_cores = (read.server + read.pooler) * polls / 1e6 + idle;
    let last = median(largest.latency.iter().map(|r| r[1]).collect());
    println!(
        "\nprojection to {PROJECTED_HOSTS:.0} hosts ({polls:.0} polls/s at {:.0} µs of server and \
         pgbouncer CPU each, as measured with {} hosts)",
        each.server + each.pooler,
        largest.hosts
    );
    println!("{:<44} {:>12} {:>10}", "measure", "value", "goal");
    println!(
        "{:<44} {:>12.3} {:>10}",
        format!("last of {} hosts, s (median of rounds)", largest.hosts),
        last,
        "<= 2"
    );
    println!(
        "{:<44} {:>12} {:>10}",
        "server connections (pooled: independent of N)", largest.pg_connections, "<= 50"
    );
    println!(
        "{:<44} {:>12.3} {:>10}",
        "central CPU idle, cores (server + pgbouncer)", cores, "<= 1"
    );
    println!(
        "{:<44} {:>12.3} {:>10}",
        "  the same, server and pgbouncer on their core", apart_cores, "<= 1"
    );
    println!(
        "{:<44} {:>12.3} {:>10}",
        "  the same with SELECT 1 as the poll (floor)", floor_cores, "<= 1"
    );
    println!(
        "{:<44} {:>12.3} {:>10}",
        "  the same, the idle read sent by pgbench", read_cores, "<= 1"
    );
}

/// A row's first columns: hosts, polls per second, CPU per poll (server, pgbouncer, the
/// simulated hosts) above `baseline`, and the central cores in all.
fn idle_columns(hosts: usize, idle: &Cpu, baseline: &Cpu) -> String {
    let each = idle.per_poll(baseline);
    format!(
        "{:>6} {:>8.0} {:>8.1} {:>9.1} {:>8.1} {:>7.3}",
        hosts,
        idle.polls,
        each.server,
        each.pooler,
        each.own,
        idle.server + idle.pooler,
    )
}
