//! The fleet (SPEC §9) against a real PostgreSQL 15 started by the test: the central schema
//! and its two roles (what a host's secret allows), schedules going down to exactly the selected
//! hosts, logouts everywhere, events going up exactly once through an outage and a SIGKILL.
//! Enrolment and failover are in `fleet_identity.rs`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::postgres::Postgres;
use forcelogout_tests::{ctl_path, query, PamStack};

mod fleet_support;
use fleet_support::*;

fn dump(pg: &Postgres) -> String {
    let schema = Command::new("timeout")
        .args(["-s", "KILL", "60", "runuser", "-u", "postgres", "--"])
        .arg(Path::new(forcelogout_tests::postgres::BIN).join("pg_dump"))
        .args(["-s", "-h"])
        .arg(&pg.socket_dir)
        .args(["-p", &pg.port.to_string(), "-U", "postgres", "fleet"])
        .output()
        .expect("pg_dump");
    let roles = pg.psql(
        "SELECT r.rolname, r.rolcanlogin, coalesce(string_agg(g.rolname, ',' ORDER BY g.rolname), '') \
         FROM pg_roles r LEFT JOIN pg_auth_members m ON m.member = r.oid \
         LEFT JOIN pg_roles g ON g.oid = m.roleid GROUP BY 1, 2 ORDER BY 1",
    );
    // pg_dump's \restrict lines carry a random key per run.
    let schema: Vec<String> = ok(schema)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(str::to_string)
        .collect();
    format!(
        "{}\n{roles}\n{}",
        schema.join("\n"),
        pg.psql("TABLE FleetSchema")
    )
}

#[test]
fn init_is_idempotent_and_the_roles_hold() {
    let Some(fleet) = Fleet::start() else { return };
    let pg = &fleet.pg;
    let before = dump(pg);
    let again = ok(fleet.ctl_url(&pg.superuser_url(), &["fleet", "init"]));
    assert!(again.contains("is current"), "{again}");
    let after = dump(pg);
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "a second init changed the database: {changed:?}"
    );

    let dir = fleet.dir.path();
    let (_, lab1_file) = fleet.enrol("lab1", &["lab"], dir);
    let (_, lab2_file) = fleet.enrol("lab2", &["lab"], dir);
    let lab1 = std::fs::read_to_string(&lab1_file)
        .unwrap()
        .trim()
        .to_string();
    let lab2 = std::fs::read_to_string(&lab2_file)
        .unwrap()
        .trim()
        .to_string();
    let link = |sql: &str| pg.psql_as(LINK, &fleet.link_passfile, sql);
    let refusal = |sql: &str, expected: &str| {
        let out = link(sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}: accepted");
        assert!(err.contains(expected), "{sql}: {err}");
    };
    // The host login touches no table but the clock: it can neither issue logouts nor
    // rewrite or read history nor speak for another host.
    for table in [
        "logoutschedules",
        "logoutevents",
        "fleethosts",
        "fleetschema",
    ] {
        refusal(
            &format!("SELECT count(*) FROM {table}"),
            &format!("permission denied for table {table}"),
        );
    }
    refusal(
        "INSERT INTO LogoutSchedules (Date, Id, GroupName, UpdateTime, Schedule, Time, Timezone, \
         Immediate, Kick, Event, Actor) VALUES ('2026-11-23', 'x', '*', 't', 'Daily', '10:00', \
         'UTC', true, true, 'created', 'evil')",
        "permission denied for table logoutschedules",
    );
    refusal(
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId, \
         EventIdentifier, Host) VALUES ('2026-11-23', 't', 'alice', 'online', false, false, 1, \
         'e1', 'lab2')",
        "permission denied for table logoutevents",
    );
    refusal(
        "UPDATE FleetHosts SET LastReplayId = 99",
        "permission denied for table fleethosts",
    );
    refusal(
        "DELETE FROM LogoutEvents",
        "permission denied for table logoutevents",
    );
    refusal(
        "SELECT forcelogout_host_auth('lab1', 'x')",
        "permission denied for function forcelogout_host_auth",
    );
    // The functions know each host by its secret: a wrong one, or another host's, is refused
    // by PostgreSQL itself (SQLSTATE 28000).
    assert_eq!(fleet.poll_as("lab1", &lab1).unwrap().trim(), "{lab}|0");
    for (host, secret) in [
        ("lab1", "0".repeat(64)),
        ("lab1", lab2.clone()),
        ("lab2", lab1.clone()),
        ("lab3", lab1.clone()),
    ] {
        let err = fleet.poll_as(host, &secret).unwrap_err();
        assert!(
            err.contains("not enrolled or wrong secret"),
            "{host}: {err}"
        );
    }
    // The idle poll checks the secret the same way.
    let peek = |host: &str, secret: &str| {
        link(&format!(
            "SELECT Labels, LastReplayId FROM forcelogout_host_peek('{host}', '{secret}')"
        ))
    };
    assert_eq!(text(&ok_output(peek("lab1", &lab1))).trim(), "{lab}|0");
    for (host, secret) in [("lab1", lab2.as_str()), ("lab2", lab1.as_str())] {
        let refused = peek(host, secret);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("not enrolled or wrong secret"),
            "{host}: {err}"
        );
    }
    // The fleet's clock is the one table the link may read (a key and a time, nothing of any
    // host's), and it may not move it.
    assert_eq!(
        text(&ok_output(link("SELECT count(*) FROM FleetClock"))).trim(),
        "1"
    );
    refusal(
        "UPDATE FleetClock SET Key = gen_random_uuid()",
        "permission denied for table fleetclock",
    );
    // An upload is stored under the authenticated host, whatever the rows say.
    let upload = |secret: &str, identifier: &str| {
        link(&format!(
            "SELECT forcelogout_host_upload('lab1', '{secret}', '[{{\"Date\": \"2026-11-23\", \
             \"Timestamp\": \"t\", \"GroupName\": \"alice\", \"Event\": \"online\", \
             \"Immediate\": false, \"Kick\": false, \"ReplayId\": 5, \
             \"EventIdentifier\": \"{identifier}\", \"Host\": \"lab2\"}}]')"
        ))
    };
    assert_eq!(text(&ok_output(upload(&lab1, "e1"))).trim(), "5");
    assert!(!upload(&lab2, "e2").status.success());
    assert_eq!(
        pg.psql("SELECT Host, ReplayId FROM LogoutEvents").trim(),
        "lab1|5"
    );
    assert_eq!(
        pg.psql("SELECT LastReplayId FROM FleetHosts WHERE Host = 'lab1'")
            .trim(),
        "5"
    );
    // An upload from a host that believes the server has more of its events than it has
    // stores nothing and answers the server's position.
    let upload_after = |after: i64, identifier: &str| {
        link(&format!(
            "SELECT forcelogout_host_upload('lab1', '{lab1}', {after}, '[{{\"Date\": \
             \"2026-11-23\", \"Timestamp\": \"t\", \"GroupName\": \"alice\", \
             \"Event\": \"online\", \"Immediate\": false, \"Kick\": false, \
             \"ReplayId\": 9, \"EventIdentifier\": \"{identifier}\"}}]')"
        ))
    };
    assert_eq!(text(&ok_output(upload_after(8, "e9"))).trim(), "5");
    assert_eq!(pg.psql("SELECT count(*) FROM LogoutEvents").trim(), "1");
    assert_eq!(text(&ok_output(upload_after(5, "e9"))).trim(), "9");
    assert_eq!(
        pg.psql("SELECT string_agg(EventIdentifier, ',' ORDER BY ReplayId) FROM LogoutEvents")
            .trim(),
        "e1,e9"
    );
    // The administrator writes schedules, and cannot rewrite events either.
    let admin = |sql: &str| pg.psql_as(ADMIN, &fleet.admin_passfile, sql);
    assert!(!admin("DELETE FROM LogoutEvents").status.success());
    assert!(!admin("UPDATE LogoutSchedules SET Actor = 'x'")
        .status
        .success());

    // The commands: each failure one line, with its exit code.
    let (code, err) =
        refused(&fleet.ctl_url("host=127.0.0.1 password=secret", &["schedule", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fleet url"), "{err}");
    let (code, err) = refused(&fleet.ctl_url("host=127.0.0.1 sslmode=sometimes", &["next"]));
    assert_eq!(code, 2, "{err}");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, err) = refused(&fleet.ctl_url(
        &format!("host=127.0.0.1 port={closed_port} dbname=fleet user={ADMIN} sslmode=disable"),
        &["schedule", "list"],
    ));
    assert_eq!(code, 1, "{err}");
    let wrong = dir.join("wrong.pgpass");
    std::fs::write(&wrong, "*:*:*:*:not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, err) = refused(&fleet.ctl_url(&pg.tcp_url(ADMIN, &wrong), &["schedule", "list"]));
    assert_eq!(code, 4, "{err}");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, err) = refused(&fleet.ctl_url(&pg.tcp_url(ADMIN, &wrong), &["schedule", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    let (code, err) =
        refused(&fleet.ctl_url(&fleet.link_url(), &["logout", "games", "--hosts", "*"]));
    assert_eq!(code, 4, "the host role issued a logout: {err}");
    let (code, err) = refused(&fleet.admin(&["logout", "games", "--hosts", "@"]));
    assert_eq!(code, 2, "{err}");
    // Without --fleet, --hosts means nothing.
    let out = Command::new(ctl_path())
        .args(["--db"])
        .arg(dir.join("local.db"))
        .args(["logout", "games", "--hosts", "*"])
        .output()
        .unwrap();
    assert_eq!(refused(&out).0, 2);
}

#[test]
fn schedules_reach_exactly_the_selected_hosts_and_a_logout_kicks_everywhere() {
    let Some(fleet) = Fleet::start() else { return };
    let lab1 = fleet.host("lab1", &["lab", "floor2"]);
    let lab2 = fleet.host("lab2", &["lab"]);
    let office = fleet.host("office1", &["office"]);
    let limit = Duration::from_secs(30);
    assert!(
        fleet
            .pg
            .wait_for(limit, "SELECT count(*) FROM FleetHosts", "3"),
        "{}",
        lab1.daemon.log()
    );

    let id = first_line(&ok(fleet.admin(&[
        "schedule",
        "add",
        "--group",
        "students",
        "--daily",
        "--at",
        "18:00",
        "--tz",
        "Europe/Berlin",
        "--hosts",
        "@lab",
    ])));
    assert!(
        wait_until(limit, || lab1.has_current(&id) && lab2.has_current(&id)),
        "{}",
        lab1.daemon.log()
    );
    // The office host saw the version go by and took nothing.
    assert!(fleet.pg.wait_for(
        limit,
        "SELECT count(*) FROM FleetHosts WHERE Host = 'office1' AND ScheduleVersion >= 1",
        "1"
    ));
    assert!(office.versions(&id).is_empty());

    // A local change of a fleet schedule is refused, naming the Id.
    let out = lab1.daemon.ctl(&["schedule", "delete", &id]);
    let (code, err) = refused(&out);
    assert_eq!(code, 2);
    assert!(
        err.contains(&id) && err.contains("changed centrally"),
        "{err}"
    );
    // `apply` of an empty file (allowed to delete every local schedule) leaves it alone.
    let empty = lab1.stack.dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    ok(lab1
        .daemon
        .ctl(&["apply", "--delete-all", "-f", empty.to_str().unwrap()]));
    assert!(lab1.has_current(&id));

    ok(fleet.admin(&["schedule", "update", &id[..8], "--at", "18:30"]));
    assert!(wait_until(limit, || lab1.versions(&id).len() == 2
        && lab2.versions(&id).len() == 2));
    assert_eq!(
        query(
            &lab2.stack.db,
            &format!("SELECT Time FROM LogoutSchedulesCurrent WHERE Id = '{id}'")
        ),
        vec![vec!["18:30"]]
    );
    ok(fleet.admin(&["schedule", "delete", &id]));
    assert!(wait_until(limit, || !lab1.has_current(&id) && !lab2.has_current(&id)));
    assert_eq!(lab1.versions(&id), ["created", "updated", "deleted"]);
    assert!(office.versions(&id).is_empty());
    // The same Id everywhere, and listed centrally.
    let listed = ok(fleet.admin(&["schedule", "list", "--history", "--json"]));
    assert!(listed.contains(&id), "{listed}");

    // A real session on two different hosts, one logout through --fleet.
    let mut sessions: Vec<_> = [&lab1, &office]
        .iter()
        .map(|h| {
            let mut s = h.stack.spawn("games", &["open", "wait", "close"]);
            assert_eq!(s.until("open"), 0);
            s
        })
        .collect();
    let out = ok(fleet.admin(&[
        "logout",
        "games",
        "--hosts",
        "*",
        "--kick",
        "--in",
        "1s",
        "--lockout",
        "30m",
    ]));
    assert!(out.contains("on hosts *"), "{out}");
    assert!(out.contains("logins refused until "), "{out}");
    let kicked = |h: &Host| {
        query(
            &h.stack.db,
            "SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'",
        )[0][0]
            == "1"
    };
    assert!(
        wait_until(Duration::from_secs(40), || kicked(&lab1) && kicked(&office)),
        "{}\n{}",
        lab1.daemon.log(),
        office.daemon.log()
    );
    // The lockout travelled with it: each host refuses the user's next login (PAM account).
    for h in [&lab1, &office] {
        assert_eq!(
            query(
                &h.stack.db,
                "SELECT Lockout FROM LogoutSchedulesCurrent WHERE Immediate = 1"
            ),
            vec![vec!["30"]]
        );
        assert_eq!(h.stack.run("games", &["acct"]).rc("acct"), 6);
    }
    for s in &mut sessions {
        s.proceed_if_alive();
    }
    // The kicks reach the central log, with each host's name.
    assert!(
        fleet.pg.wait_for(
            limit,
            "SELECT string_agg(Host, ',' ORDER BY Host) FROM LogoutEvents WHERE Reason = 'kick'",
            "lab1,office1"
        ),
        "{}",
        lab1.daemon.log()
    );
    let events = ok(fleet.admin(&["events", "--host", "office1", "--event", "removed"]));
    assert!(
        events.contains("office1") && !events.contains("lab1"),
        "{events}"
    );
    let hosts = ok(fleet.admin(&["fleet", "hosts", "--json"]));
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts.as_array().unwrap().len(), 3);
    let status = ok(lab2.daemon.ctl(&["fleet", "status"]));
    assert!(status.contains("connected since"), "{status}");
}

#[test]
fn an_outage_loses_nothing_and_a_host_started_meanwhile_enforces() {
    let Some(fleet) = Fleet::start() else { return };
    let lab1 = fleet.host("lab1", &["lab"]);
    let mut lab2 = fleet.host("lab2", &["lab"]);
    let limit = Duration::from_secs(30);
    for _ in 0..3 {
        lab1.login_logout("games");
        lab2.login_logout("news");
    }
    let uploaded = |h: &Host| {
        format!(
            "SELECT count(*) FROM LogoutEvents WHERE Host = '{}'",
            h.name
        )
    };
    assert!(fleet.pg.wait_for(
        limit,
        &uploaded(&lab1),
        &lab1.replay_ids().len().to_string()
    ));

    // A logout for lab2 twenty seconds ahead; lab2 has it, then its daemon goes down.
    let mut session = lab2.stack.spawn("games", &["open", "wait", "close"]);
    assert_eq!(session.until("open"), 0);
    let id = first_line(&ok(fleet.admin(&[
        "logout", "games", "--hosts", "lab2", "--kick", "--in", "20s",
    ])));
    assert!(wait_until(limit, || lab2.has_current(&id)));
    lab2.daemon.kill9();

    // The database goes away; logins go on and are recorded locally.
    fleet.pg.stop();
    for _ in 0..5 {
        lab1.login_logout("games");
        lab1.login_logout("mail");
    }
    // lab2's daemon starts while the database is down and enforces what it has.
    lab2.daemon.restart();
    let kicked = || {
        query(
            &lab2.stack.db,
            "SELECT count(*) FROM LogoutEvents WHERE Event = 'removed' AND Reason = 'kick'",
        )[0][0]
            == "1"
    };
    assert!(
        wait_until(Duration::from_secs(60), kicked),
        "{}",
        lab2.daemon.log()
    );
    session.proceed_if_alive();
    let status = ok(lab1.daemon.ctl(&["fleet", "status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["Connected"], false, "{status}");
    assert!(status["WaitingToUpload"].as_i64().unwrap() > 0, "{status}");

    // Back: every event arrives once, each host's in its ReplayId order.
    fleet.pg.restart();
    for host in [&lab1, &lab2] {
        let local = host.replay_ids();
        assert!(
            fleet.pg.wait_for(
                Duration::from_secs(60),
                &uploaded(host),
                &local.len().to_string()
            ),
            "{}",
            host.daemon.log()
        );
        let central = fleet.pg.psql(&format!(
            "SELECT ReplayId FROM LogoutEvents WHERE Host = '{}' ORDER BY ReplayId",
            host.name
        ));
        assert_eq!(central.lines().collect::<Vec<_>>(), local);
        // Uploaded in order: no event arrived in a later transaction than a newer one.
        assert_eq!(
            fleet.count(&format!(
                "SELECT count(*) FROM (SELECT ReplayId, UploadedAt, lag(UploadedAt) OVER (ORDER BY ReplayId) AS before \
                 FROM LogoutEvents WHERE Host = '{}') x WHERE UploadedAt < before",
                host.name
            )),
            0
        );
    }
    assert_eq!(
        fleet.count("SELECT count(*) - count(DISTINCT EventIdentifier) FROM LogoutEvents"),
        0
    );
}

#[test]
fn a_daemon_killed_in_the_middle_of_an_upload_leaves_no_duplicate_and_no_gap() {
    let Some(fleet) = Fleet::start() else { return };
    // A store with many events waiting, as after a long outage.
    let stack = PamStack::standard("");
    stack.ctl(&["prune", "--older-than", "1"]);
    const TOTAL: i64 = 50_000;
    {
        let store = rusqlite::Connection::open(&stack.db).unwrap();
        store
            .execute_batch(&format!(
                "PRAGMA busy_timeout = 5000; BEGIN; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TOTAL}) \
                 INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, EventIdentifier, Host) \
                 SELECT '2026-11-23', '2026-11-23T10:00:00.000000Z', 'user' || (i % 50), \
                 CASE i % 2 WHEN 0 THEN 'online' ELSE 'offline' END, lower(hex(randomblob(16))), 'lab9' FROM n; \
                 COMMIT;"
            ))
            .unwrap();
    }
    let (lines, _) = fleet.enrol("lab9", &[], stack.dir.path());
    let mut daemon = Daemon::start(&stack.db, &lines);
    let count = || fleet.count("SELECT count(*) FROM LogoutEvents");
    assert!(
        wait_until(Duration::from_secs(60), || count() > 0),
        "{}",
        daemon.log()
    );
    daemon.kill9();
    let at_kill = count();
    assert!(at_kill < TOTAL, "the upload finished before the kill");
    daemon.restart();
    assert!(
        wait_until(Duration::from_secs(120), || count() == TOTAL),
        "{} of {TOTAL}\n{}",
        count(),
        daemon.log()
    );
    assert_eq!(
        fleet.count("SELECT count(DISTINCT ReplayId) FROM LogoutEvents WHERE Host = 'lab9'"),
        TOTAL
    );
    assert_eq!(
        fleet.count("SELECT max(ReplayId) - min(ReplayId) + 1 FROM LogoutEvents"),
        TOTAL
    );
    assert_eq!(
        fleet.count("SELECT LastReplayId FROM FleetHosts WHERE Host = 'lab9'"),
        TOTAL
    );
}

#[test]
fn tls_is_verified_as_libpq_users_expect() {
    let Some(fleet) = Fleet::start() else { return };
    let ca = fleet.pg.enable_tls();
    let other_ca = fleet.dir.path().join("other-ca.crt");
    // A CA that did not sign the server's certificate: replace it with a fresh self-signed one.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(fleet.dir.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    let url = |host: &str, mode: &str, root: Option<&Path>| {
        let mut url = format!(
            "host={host} port={} dbname=fleet user={ADMIN} passfile={} sslmode={mode}",
            fleet.pg.port,
            fleet.admin_passfile.display()
        );
        if let Some(root) = root {
            url.push_str(&format!(" sslrootcert={}", root.display()));
        }
        url
    };
    // The passfile names 127.0.0.1; the name `localhost` needs its own line.
    let mut lines = std::fs::read_to_string(&fleet.admin_passfile).unwrap();
    lines.push_str(&lines.replace("127.0.0.1:", "localhost:"));
    std::fs::write(&fleet.admin_passfile, lines).unwrap();
    let list = |url: String| fleet.ctl_url(&url, &["schedule", "list"]);
    // The server takes TCP logins over TLS only, so each success below was encrypted.
    ok(list(url("localhost", "verify-full", Some(&ca))));
    ok(list(url("127.0.0.1", "verify-ca", Some(&ca))));
    ok(list(url("127.0.0.1", "require", None)));
    ok(list(url("127.0.0.1", "prefer", None)));
    // The certificate is for `localhost`, not for the address; and another CA is not trusted.
    let (code, err) = refused(&list(url("127.0.0.1", "verify-full", Some(&ca))));
    assert_eq!(code, 1, "{err}");
    let (code, err) = refused(&list(url("localhost", "verify-full", Some(&other_ca))));
    assert_eq!(code, 1, "{err}");
    let (code, err) = refused(&list(url("localhost", "verify-ca", Some(&other_ca))));
    assert_eq!(code, 1, "{err}");
    // Without TLS the server's pg_hba.conf has no line for us: a refused login.
    let (code, err) = refused(&list(url("127.0.0.1", "disable", None)));
    assert_eq!(code, 4, "{err}");
}
