//! A login in a process of its own, as sshd makes each connection's: the process's first
//! `pam_start` loads the stack's modules (`dlopen`, their libraries, their relocations), then
//! the login runs. The interleaved rounds above measure logins in processes that have loaded
//! the modules already; this adds what loading costs each connection.

use super::{median, Kind, Stack, USER};

/// Processes per stack, interleaved one by one.
const PROCESSES: usize = 40;

/// Runs `PROCESSES` processes per stack, each one login, and prints each stack's loading and
/// its first login, and what they add to the baseline's.
pub fn fresh_processes(stacks: &[Stack]) {
    let mut loaded: Vec<Vec<u64>> = vec![Vec::new(); stacks.len()];
    let mut first: Vec<Vec<u64>> = vec![Vec::new(); stacks.len()];
    for _ in 0..PROCESSES {
        for (i, s) in stacks.iter().enumerate() {
            let t = s.stack.run(USER, &["--loaded", "login:1"]);
            if let (Some(us), Some(login)) = (t.loaded_us, t.logins.first()) {
                loaded[i].push(us);
                first[i].push(us + login.us);
            }
        }
    }
    let middle = |v: Vec<u64>| if v.is_empty() { 0 } else { median(v) };
    let loaded: Vec<u64> = loaded.into_iter().map(middle).collect();
    let first: Vec<u64> = first.into_iter().map(middle).collect();
    println!(
        "a login in a process of its own (its first pam_start loads the stack's modules, as each sshd connection's process does), {PROCESSES} per stack:"
    );
    let added = |i: usize| first[i] as f64 - first[0] as f64;
    let peer = stacks.iter().position(|s| s.kind == Kind::Peer);
    for (i, s) in stacks.iter().enumerate() {
        let mut line = format!(
            "  {:<26} loading {:>5} µs, then the login: {:>6} µs",
            s.name, loaded[i], first[i]
        );
        if i > 0 {
            line.push_str(&format!("; adds {:>6.0} µs", added(i)));
            if let Some(p) = peer {
                line.push_str(&format!(" = {:>5.2}x wtmpdb's", added(i) / added(p)));
            }
        }
        println!("{line}");
    }
}
