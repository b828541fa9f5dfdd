//! Hosts' identities in the fleet (SPEC §9) against a real PostgreSQL 15: enrol, renew and
//! retire, central labels, and a host resynchronising after a failover lost its version.

use std::time::Duration;

use forcelogout_tests::daemon::wait_until;
use forcelogout_tests::query;

mod fleet_support;
use fleet_support::*;

#[test]
fn enrol_renew_and_retire_give_and_take_a_hosts_identity() {
    let Some(fleet) = Fleet::start() else { return };
    let dir = fleet.dir.path();
    let (lines, secret_file) = fleet.enrol("lab5", &["lab", "floor2"], dir);
    assert!(lines.starts_with("[fleet]\nurl = "), "{lines}");
    assert!(lines.contains("host = \"lab5\""), "{lines}");
    assert!(
        lines.contains(&format!("secret_file = \"{}\"", secret_file.display())),
        "{lines}"
    );
    let mode = std::fs::metadata(&secret_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let first = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(first.len(), 64);
    assert_eq!(
        fleet.poll_as("lab5", &first).unwrap().trim(),
        "{lab,floor2}|0"
    );

    // Enrolled already: refused without --renew, and an existing secret file is never
    // replaced (nothing changes centrally either).
    let (code, err) = refused(&fleet.admin(&["fleet", "enrol", "lab5"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--renew"), "{err}");
    let (code, err) = refused(&fleet.admin(&[
        "fleet",
        "enrol",
        "lab6",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        fleet.count("SELECT count(*) FROM FleetHosts WHERE Host = 'lab6'"),
        0
    );
    assert!(fleet.poll_as("lab5", &first).is_ok());

    // Renewed: a new secret, printed for configuration management; the old one stops working.
    let out = ok(fleet.admin(&[
        "--json", "fleet", "enrol", "lab5", "--renew", "--labels", "office",
    ]));
    let renewed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewed["Renewed"], true, "{out}");
    assert_eq!(renewed["Labels"], serde_json::json!(["office"]), "{out}");
    assert_eq!(
        renewed["SecretFile"], "/etc/forcelogout/fleet.secret",
        "{out}"
    );
    assert!(
        renewed["Url"]
            .as_str()
            .unwrap()
            .contains("user=forcelogout_link"),
        "{out}"
    );
    let second = renewed["Secret"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert!(fleet.poll_as("lab5", &first).is_err());
    assert_eq!(fleet.poll_as("lab5", &second).unwrap().trim(), "{office}|0");
    // Without --labels a renewal keeps them.
    let out = ok(fleet.admin(&["--json", "fleet", "enrol", "lab5", "--renew"]));
    let third: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(third["Labels"], serde_json::json!(["office"]), "{out}");
    let hosts = ok(fleet.admin(&["fleet", "hosts"]));
    assert!(
        hosts.contains("lab5") && hosts.contains("office"),
        "{hosts}"
    );

    // Retired: the row goes, the secret with it; its events stay.
    let third = third["Secret"].as_str().unwrap().to_string();
    fleet.pg.psql(
        "INSERT INTO LogoutEvents (Date, Timestamp, GroupName, Event, Immediate, Kick, ReplayId, \
         EventIdentifier, Host) VALUES ('2026-11-23', 't', 'alice', 'online', false, false, 1, \
         'e-lab5', 'lab5')",
    );
    ok(fleet.admin(&["fleet", "retire", "lab5"]));
    assert!(fleet.poll_as("lab5", &third).is_err());
    assert_eq!(
        fleet.count("SELECT count(*) FROM LogoutEvents WHERE Host = 'lab5'"),
        1
    );
    let (code, err) = refused(&fleet.admin(&["fleet", "retire", "lab5"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not enrolled"), "{err}");
}

#[test]
fn a_host_drops_a_version_a_failover_lost_and_takes_the_reissued_one() {
    let Some(fleet) = Fleet::start() else { return };
    let lab1 = fleet.host("lab1", &["lab"]);
    let limit = Duration::from_secs(30);
    let add = |group: &str, hosts: &str| {
        first_line(&ok(fleet.admin(&[
            "schedule", "add", "--group", group, "--daily", "--at", "18:00", "--tz", "UTC",
            "--hosts", hosts,
        ])))
    };
    let kept = add("students", "*");
    let lost = add("staff", "@lab");
    assert!(
        wait_until(limit, || lab1.has_current(&kept) && lab1.has_current(&lost)),
        "{}",
        lab1.daemon.log()
    );
    // The server loses version 2 (as an asynchronous standby promoted before it had it), and
    // numbers the next version 2 again.
    fleet.pg.psql(
        "DELETE FROM LogoutSchedules WHERE Version = 2; \
         SELECT setval('logoutschedules_version', 1)",
    );
    let reissued = add("guests", "lab1");
    assert_eq!(
        fleet.count(&format!(
            "SELECT Version FROM LogoutSchedules WHERE Id = '{reissued}'"
        )),
        2
    );
    assert!(
        wait_until(limit, || lab1.has_current(&reissued)
            && !lab1.has_current(&lost)
            && lab1.has_current(&kept)),
        "{}",
        lab1.daemon.log()
    );
    assert_eq!(lab1.versions(&lost), ["created", "deleted"]);
    assert!(
        wait_until(limit, || lab1.daemon.log().contains("resynchronised")),
        "{}",
        lab1.daemon.log()
    );
    // Labels are central: a renewal with other labels moves the host off @lab schedules.
    let lab_only = add("lab-users", "@lab");
    assert!(wait_until(limit, || lab1.has_current(&lab_only)));
    ok(fleet.admin(&[
        "fleet",
        "enrol",
        "lab1",
        "--renew",
        "--labels",
        "office",
        "--secret-file",
        lab1.stack
            .dir
            .path()
            .join("renewed.secret")
            .to_str()
            .unwrap(),
    ]));
    // The host still has the old secret: it is refused until its file is replaced.
    assert!(wait_until(limit, || {
        let status = ok(lab1.daemon.ctl(&["fleet", "status", "--json"]));
        status.contains("wrong secret")
    }));
    std::fs::rename(
        lab1.stack.dir.path().join("renewed.secret"),
        lab1.stack.dir.path().join("lab1.secret"),
    )
    .unwrap();
    assert!(
        wait_until(limit, || !lab1.has_current(&lab_only)
            && lab1.has_current(&kept)),
        "{}",
        lab1.daemon.log()
    );
    let status = ok(lab1.daemon.ctl(&["fleet", "status"]));
    assert!(status.contains("Labels:     office"), "{status}");
}

#[test]
fn the_fleet_clock_moves_with_what_hosts_act_on_and_nothing_else() {
    let Some(fleet) = Fleet::start() else { return };
    let dir = fleet.dir.path();
    let (_, lab7_file) = fleet.enrol("lab7", &["lab"], dir);
    let lab7 = std::fs::read_to_string(&lab7_file)
        .unwrap()
        .trim()
        .to_string();
    let clock = || fleet.pg.psql("SELECT Version, Key FROM FleetClock");
    let mut seen = clock();
    let mut moved = |what: &str, expected: bool| {
        let now = clock();
        assert_eq!(now != seen, expected, "{what}: {seen} then {now}");
        seen = now;
    };
    ok(fleet.admin(&[
        "schedule", "add", "--group", "staff", "--daily", "--at", "18:00", "--tz", "UTC",
    ]));
    moved("a new schedule version", true);
    assert!(clock().starts_with("1|"), "{}", clock());
    // A host's own bookkeeping (heartbeat, position, uploads) and a new host leave it.
    fleet.poll_as("lab7", &lab7).unwrap();
    fleet.pg.psql_as(
        LINK,
        &fleet.link_passfile,
        &format!("SELECT forcelogout_host_upload('lab7', '{lab7}', 0, '[]')"),
    );
    fleet.enrol("lab8", &["lab"], dir);
    moved("bookkeeping and an enrolment", false);
    ok(fleet.admin(&["fleet", "enrol", "lab7", "--renew"]));
    moved("a renewed secret", true);
    ok(fleet.admin(&["fleet", "enrol", "lab8", "--renew", "--labels", "office"]));
    moved("new labels", true);
    ok(fleet.admin(&["fleet", "retire", "lab8"]));
    moved("a retired host", true);
    refused(&fleet.admin(&["fleet", "retire", "lab8"]));
    moved("retiring a host that is not enrolled", false);
}

#[test]
fn events_a_failover_lost_go_up_again_at_the_hosts_next_upload() {
    let Some(fleet) = Fleet::start() else { return };
    let lab1 = fleet.host("lab1", &["lab"]);
    let limit = Duration::from_secs(30);
    let local = || query(&lab1.stack.db, "SELECT count(*) FROM LogoutEvents")[0][0].clone();
    let central = || {
        fleet
            .count("SELECT count(*) FROM LogoutEvents WHERE Host = 'lab1'")
            .to_string()
    };
    lab1.login_logout("nobody");
    assert!(
        wait_until(limit, || local() != "0" && central() == local()),
        "{}",
        lab1.daemon.log()
    );
    // The server loses the host's events and its position, and nothing a host acts on: the
    // fleet's clock stays, and the idle host does not learn of it from its idle poll.
    let clock = fleet.pg.psql("SELECT Key FROM FleetClock");
    fleet.pg.psql(
        "DELETE FROM LogoutEvents WHERE Host = 'lab1'; \
         UPDATE FleetHosts SET LastReplayId = 0 WHERE Host = 'lab1'",
    );
    assert_eq!(fleet.pg.psql("SELECT Key FROM FleetClock"), clock);
    lab1.login_logout("nobody");
    assert!(
        wait_until(limit, || central() == local()),
        "central {} local {}: {}",
        central(),
        local(),
        lab1.daemon.log()
    );
    assert!(
        lab1.daemon.log().contains("uploading them again"),
        "{}",
        lab1.daemon.log()
    );
}

#[test]
fn a_host_says_when_the_central_schema_is_older_than_its_link() {
    let Some(fleet) = Fleet::start() else { return };
    let lab1 = fleet.host("lab1", &["lab"]);
    let limit = Duration::from_secs(30);
    let linked = || ok(lab1.daemon.ctl(&["fleet", "status", "--json"]));
    assert!(
        wait_until(limit, || linked().contains("\"Connected\": true")),
        "{}",
        linked()
    );
    // As on a server not yet migrated by this build's `fleet init`: no clock.
    fleet.pg.psql("DROP TABLE FleetClock");
    assert!(
        wait_until(limit, || linked().contains("older forcelogout schema")),
        "{}",
        lab1.daemon.log()
    );
}
