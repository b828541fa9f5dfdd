//! What the fleet's tests share: a central PostgreSQL with the schema and its logins, and
//! enrolled hosts, each with its own store, PAM stack and daemon.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use forcelogout_tests::daemon::Daemon;
use forcelogout_tests::postgres::{unavailable, Postgres};
use forcelogout_tests::{fleet_ctl, query, PamStack};
pub const ADMIN: &str = "flt_admin";
/// The login every host shares (its identity is its secret).
pub const LINK: &str = "forcelogout_link";

/// A running central database with the schema, an administrator's login and the hosts' one.
pub struct Fleet {
    pub pg: Postgres,
    pub admin_passfile: PathBuf,
    pub link_passfile: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A host: its own store and PAM stack, its own daemon, configuration, name and labels.
pub struct Host {
    pub name: String,
    pub stack: PamStack,
    pub daemon: Daemon,
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The output, after checking that the command succeeded.
pub fn ok_output(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

/// The one line of an error, and the exit code.
pub fn refused(out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    (out.status.code().unwrap_or(-1), err)
}

impl Fleet {
    pub fn start() -> Option<Fleet> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let pg = Postgres::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = Fleet {
            admin_passfile: PathBuf::new(),
            link_passfile: PathBuf::new(),
            pg,
            dir,
        };
        ok(fleet.ctl_url(&fleet.pg.superuser_url(), &["fleet", "init"]));
        let admin_passfile = fleet
            .pg
            .create_login(ADMIN, "forcelogout_admin", fleet.dir.path());
        let link_passfile = fleet
            .pg
            .create_login(LINK, "forcelogout_host", fleet.dir.path());
        Some(Fleet {
            admin_passfile,
            link_passfile,
            ..fleet
        })
    }

    /// The URL hosts use: the shared link login.
    pub fn link_url(&self) -> String {
        self.pg.tcp_url(LINK, &self.link_passfile)
    }

    /// `fleet enrol NAME --labels ... --secret-file DIR/NAME.secret`: the host's [fleet]
    /// lines, as printed, and its secret file.
    pub fn enrol(&self, name: &str, labels: &[&str], dir: &Path) -> (String, PathBuf) {
        let secret_file = dir.join(format!("{name}.secret"));
        let lines = ok(self.admin(&[
            "fleet",
            "enrol",
            name,
            "--labels",
            &labels.join(","),
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--host-url",
            &self.link_url(),
        ]));
        (lines, secret_file)
    }

    /// `forcelogout_host_poll` called by the link login with this name and secret: its
    /// output, or the error.
    pub fn poll_as(&self, host: &str, secret: &str) -> Result<String, String> {
        let out = self.pg.psql_as(
            LINK,
            &self.link_passfile,
            &format!(
                "SELECT Labels, LastReplayId FROM forcelogout_host_poll('{host}', '{secret}', \
                 0, NULL, 0, 'test', 10) LIMIT 1"
            ),
        );
        if out.status.success() {
            Ok(text(&out))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `forcelogoutctl --fleet URL ARGS` with no configuration file.
    pub fn ctl_url(&self, url: &str, args: &[&str]) -> Output {
        fleet_ctl(self.dir.path(), url, args)
    }

    /// `forcelogoutctl --fleet` as the administrator's login.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.ctl_url(&self.pg.tcp_url(ADMIN, &self.admin_passfile), args)
    }

    /// An enrolled host with a running daemon, configured with the lines `fleet enrol` printed.
    pub fn host(&self, name: &str, labels: &[&str]) -> Host {
        let stack = PamStack::standard("");
        let (lines, _) = self.enrol(name, labels, stack.dir.path());
        let daemon = Daemon::start(&stack.db, &format!("immediate_warning = \"1s\"\n{lines}"));
        Host {
            name: name.to_string(),
            stack,
            daemon,
        }
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.pg.psql(sql).trim().parse().expect("a count")
    }
}

impl Host {
    /// Current fleet schedules of this host's store with this Id: (Event of the last version,
    /// whether it is current).
    pub fn has_current(&self, id: &str) -> bool {
        query(
            &self.stack.db,
            &format!(
                "SELECT count(*) FROM LogoutSchedulesCurrent c WHERE Id = '{id}' AND EXISTS \
                 (SELECT 1 FROM FleetMarks m JOIN LogoutSchedules s ON s.rowid = m.ScheduleRowid \
                 WHERE s.Id = c.Id AND s.UpdateTime = c.UpdateTime AND s.Event = c.Event)"
            ),
        )[0][0]
            == "1"
    }

    pub fn versions(&self, id: &str) -> Vec<String> {
        query(
            &self.stack.db,
            &format!("SELECT Event FROM LogoutSchedules WHERE Id = '{id}' ORDER BY rowid"),
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }

    pub fn replay_ids(&self) -> Vec<String> {
        query(
            &self.stack.db,
            "SELECT ReplayId FROM LogoutEvents ORDER BY ReplayId",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }

    /// One login and logout through the real PAM stack.
    pub fn login_logout(&self, user: &str) {
        let t = self.stack.run(user, &["open", "close"]);
        assert_eq!(t.rc("open"), 0);
    }
}

pub fn first_line(out: &str) -> String {
    out.lines().next().unwrap_or_default().to_string()
}
