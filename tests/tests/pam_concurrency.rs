//! Many logins at once from separate processes, as sshd forks them, while a reader holds a
//! long read transaction: no call fails, and the events are exactly those expected.

use std::process::Stdio;

use forcelogout_tests::{PamStack, Transcript, USERS};

const PAIRS_PER_PROCESS: usize = 25;

#[test]
fn parallel_processes_open_and_close_with_a_long_reader() {
    // `ignore=bad`: a module that stepped aside because of an error fails the call, so
    // "zero failed calls" really means the module recorded every session.
    let stack = PamStack::new(&[
        "session [success=ok ignore=bad default=bad] {module} db={db} timeout=10000",
    ]);
    stack.ctl(&[
        "schedule", "add", "--group", "nobody", "--daily", "--at", "10:00", "--tz", "UTC",
    ]);

    let reader = rusqlite::Connection::open(&stack.db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM LogoutSchedules", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 1);

    let bench = format!("bench:{PAIRS_PER_PROCESS}");
    let children: Vec<_> = USERS
        .iter()
        .map(|user| {
            stack
                .harness(user, &[&bench])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failures = 0;
    let mut pairs = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let t = Transcript::parse(&String::from_utf8_lossy(&out.stdout));
        pairs += t.pairs.len();
        failures += t
            .pairs
            .iter()
            .filter(|(_, open, close)| *open != 0 || *close != 0)
            .count();
    }
    // The reader's snapshot is unchanged by all those commits.
    let still: i64 = reader
        .query_row("SELECT count(*) FROM LogoutEvents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, 0);
    reader.execute_batch("COMMIT").unwrap();

    assert_eq!(pairs, USERS.len() * PAIRS_PER_PROCESS);
    assert_eq!(failures, 0);
    let counts = stack
        .query("SELECT GroupName, Event, count(*) FROM LogoutEvents GROUP BY 1, 2 ORDER BY 1, 2");
    let mut expected: Vec<Vec<String>> = Vec::new();
    let mut users = USERS.to_vec();
    users.sort();
    for user in users {
        for event in ["offline", "online", "removed"] {
            expected.push(vec![
                user.to_string(),
                event.to_string(),
                PAIRS_PER_PROCESS.to_string(),
            ]);
        }
    }
    assert_eq!(counts, expected);
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSessions"),
        vec![vec!["0"]]
    );
    // ReplayIds are strictly increasing with no duplicates.
    assert_eq!(
        stack.query(
            "SELECT count(DISTINCT ReplayId), min(ReplayId), max(ReplayId) FROM LogoutEvents"
        ),
        vec![vec!["600", "1", "600"]]
    );
}
