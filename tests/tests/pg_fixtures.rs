//! The fleet's server fixtures themselves: pgbouncer passes queries in transaction mode, a
//! streaming standby receives what the primary commits and takes over when promoted, and a
//! restored backup lacks what was committed after it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use forcelogout_tests::pg_cluster::{pgbouncer_unavailable, Pgbouncer, PoolMode};
use forcelogout_tests::postgres::{unavailable, Postgres, BIN};
use forcelogout_tests::{ctl_path, fleet_ctl};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `psql URL -c SQL` with the passfile in the URL.
fn psql_url(url: &str, sql: &str) -> Output {
    Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(Path::new(BIN).join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(url)
        .args(["-c", sql])
        .output()
        .expect("psql")
}

#[test]
#[ignore = "needs root: the servers run as the postgres user"]
fn pgbouncer_passes_queries_in_transaction_mode() {
    if let Some(why) = pgbouncer_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let pg = Postgres::start_with("max_connections = 100");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(fleet_ctl(
        dir.path(),
        &pg.superuser_url(),
        &["fleet", "init"],
    ));
    let passfile = pg.create_login("pool_admin", "forcelogout_admin", dir.path());
    let bouncer = Pgbouncer::start(&pg, PoolMode::Transaction, 4, 50);
    let url = bouncer.url("pool_admin", &passfile);
    assert_eq!(ok(psql_url(&url, "SELECT 40 + 2")), "42");
    assert_eq!(ok(psql_url(&url, "SHOW max_connections")), "100");
    // Our own client (SCRAM, then its queries) through the pooler, as an administrator.
    let listed = Command::new(ctl_path())
        .arg("--db")
        .arg(dir.path().join("unused.db"))
        .args(["--fleet", &url, "schedule", "list"])
        .env("FORCELOGOUT_CONFIG", dir.path().join("none.toml"))
        .output()
        .expect("forcelogoutctl");
    ok(listed);
    let pools = bouncer.admin("SHOW POOLS");
    let pool = pools
        .iter()
        .find(|p| p["database"] == "fleet" && p["user"] == "pool_admin")
        .unwrap_or_else(|| panic!("no pool for pool_admin: {pools:?}"));
    assert_eq!(pool["pool_mode"], "transaction");
    let counts = bouncer.pools();
    assert!((1..=4).contains(&counts.server_connections()), "{counts:?}");
    // A wrong password is refused by the pooler.
    let wrong = dir.path().join("wrong.pgpass");
    std::fs::write(&wrong, "127.0.0.1:*:fleet:pool_admin:not-it\n").expect("passfile");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert!(!psql_url(&bouncer.url("pool_admin", &wrong), "SELECT 1")
        .status
        .success());
}

#[test]
#[ignore = "needs root: the servers run as the postgres user"]
fn a_standby_receives_a_row_and_is_promoted() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let primary = Postgres::start();
    primary.psql("CREATE TABLE t (x int)");
    let standby = Postgres::standby_of(&primary);
    assert_ne!(standby.port, primary.port);
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").trim(), "t");
    primary.psql("INSERT INTO t VALUES (1)");
    assert!(
        standby.wait_for(Duration::from_secs(60), "SELECT count(*) FROM t", "1"),
        "the row did not reach the standby: {}",
        standby.log()
    );
    assert!(standby.try_psql("INSERT INTO t VALUES (2)").is_none());
    primary.kill_hard();
    assert!(!primary.is_ready());
    standby.promote();
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").trim(), "f");
    standby.psql("INSERT INTO t VALUES (2)");
    assert_eq!(
        standby
            .psql("SELECT string_agg(x::text, ',' ORDER BY x) FROM t")
            .trim(),
        "1,2"
    );
}

#[test]
#[ignore = "needs root: the servers run as the postgres user"]
fn a_restored_backup_lacks_what_came_after_it() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut pg = Postgres::start();
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let backup = pg.backup();
    pg.psql("INSERT INTO t VALUES (2)");
    assert_eq!(pg.psql("SELECT count(*) FROM t").trim(), "2");
    let port = pg.port;
    pg.restore(backup);
    assert_eq!(pg.port, port);
    assert_eq!(
        pg.psql("SELECT string_agg(x::text, ',') FROM t").trim(),
        "1"
    );
    // It is a primary: it takes writes.
    pg.psql("INSERT INTO t VALUES (3)");
    assert_eq!(pg.psql("SELECT count(*) FROM t").trim(), "2");
}
