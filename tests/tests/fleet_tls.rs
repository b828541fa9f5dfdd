//! The fleet link's TLS and password rules (SPEC §9, issue 23 item 4) against a real
//! PostgreSQL 15 serving certificates made here with the openssl CLI (a site CA, a second CA,
//! server certificates for 127.0.0.1 only), and against a fake server that asks for a password
//! in clear text and records whether one arrives. Every connection below is the product's own:
//! `forcelogoutctl --fleet URL …`, or the daemon's link.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use forcelogout_tests::daemon::{wait_until, Daemon};
use forcelogout_tests::postgres::{unavailable, Postgres, TestCa, BIN};
use forcelogout_tests::{ctl_path, fleet_ctl, PamStack};

const ADMIN: &str = "flt_admin";

/// A central database with the schema, an administrator's login (its passfile matches any
/// host name), two CAs, and an empty home directory for the client (no ~/.postgresql, no
/// ~/.pgpass: only what a URL names is used).
struct Site {
    pg: Postgres,
    dir: tempfile::TempDir,
    site_ca: TestCa,
    other_ca: TestCa,
    passfile: PathBuf,
    home: PathBuf,
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failure's exit code and its one line.
fn refused(out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    (out.status.code().unwrap_or(-1), err)
}

impl Site {
    fn start() -> Site {
        if let Some(why) = unavailable() {
            panic!("cannot run: {why}");
        }
        let pg = Postgres::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let run = |args: &[&str]| fleet_ctl(dir.path(), &pg.superuser_url(), args);
        ok(&run(&["fleet", "init"]));
        let passfile = pg.create_login(ADMIN, "forcelogout_admin", dir.path());
        let line = std::fs::read_to_string(&passfile).unwrap();
        std::fs::write(&passfile, line.replacen("127.0.0.1:", "*:", 1)).unwrap();
        // `host` lines take TCP logins with and without TLS: each test says which it uses.
        pg.set_hba("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n");
        let site_ca = TestCa::new(dir.path(), "site CA");
        let other_ca = TestCa::new(dir.path(), "other CA");
        Site {
            pg,
            dir,
            site_ca,
            other_ca,
            passfile,
            home,
        }
    }

    /// Serves a certificate for the address 127.0.0.1 only, signed by `ca`.
    fn serve_certificate_of(&self, ca: &TestCa, stem: &str) {
        let (cert, key) = ca.issue(stem, "127.0.0.1", "IP:127.0.0.1");
        self.pg.use_certificate(&cert, &key);
    }

    /// The administrator's URL to `host` (a name or address of this server), plus `extra`.
    fn url(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} port={} dbname=fleet user={ADMIN} passfile={} {extra}",
            self.pg.port,
            self.passfile.display()
        )
    }

    /// `forcelogoutctl --fleet URL schedule list`, with HOME the empty home and `env` added.
    fn list(&self, url: &str, env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "120"])
            .arg(ctl_path())
            .arg("--db")
            .arg(self.dir.path().join("unused.db"))
            .args(["--fleet", url, "schedule", "list"])
            .env("FORCELOGOUT_CONFIG", self.dir.path().join("none.toml"))
            .env("HOME", &self.home)
            .env_remove("PGPASSFILE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.output().unwrap()
    }

    /// OpenSSL's "system store" made to be the other CA alone, for one process.
    fn system_store_is_other_ca(&self) -> Vec<(&'static str, PathBuf)> {
        let empty = self.dir.path().join("empty-cert-dir");
        std::fs::create_dir_all(&empty).unwrap();
        vec![
            ("SSL_CERT_FILE", self.other_ca.cert.clone()),
            ("SSL_CERT_DIR", empty),
        ]
    }
}

fn env_refs<'a>(env: &'a [(&'static str, PathBuf)]) -> Vec<(&'static str, &'a Path)> {
    env.iter().map(|(k, v)| (*k, v.as_path())).collect()
}

#[test]
#[ignore = "needs root: runs PostgreSQL as the postgres user"]
fn a_root_certificate_replaces_the_system_store() {
    let site = Site::start();
    // The server's certificate is signed by the other CA, which stands for a public CA: the
    // "system store" of the client processes below is that CA alone.
    site.serve_certificate_of(&site.other_ca, "server-by-other-ca");
    let system = site.system_store_is_other_ca();
    let system = env_refs(&system);
    let site_root = format!("sslrootcert={}", site.site_ca.cert.display());

    // sslrootcert names the site CA: the system store is not consulted, whatever it trusts.
    let (code, err) = refused(&site.list(
        &site.url("127.0.0.1", &format!("sslmode=verify-full {site_root}")),
        &system,
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    // `require` with a root certificate checks the chain too (libpq's rule).
    let (code, err) = refused(&site.list(
        &site.url("127.0.0.1", &format!("sslmode=require {site_root}")),
        &system,
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");

    // sslrootcert=system is the system store, and implies verify-full.
    ok(&site.list(&site.url("127.0.0.1", "sslrootcert=system"), &system));
    ok(&site.list(
        &site.url("127.0.0.1", "sslmode=verify-full sslrootcert=system"),
        &system,
    ));
    let (code, err) = refused(&site.list(&site.url("localhost", "sslrootcert=system"), &system));
    assert_eq!(
        code, 1,
        "the name must be checked with the system store: {err}"
    );
    // The real system store does not trust the other CA: the environment made the difference.
    let (code, err) = refused(&site.list(&site.url("127.0.0.1", "sslrootcert=system"), &[]));
    assert_eq!(code, 1, "{err}");
    // libpq refuses a weaker mode with the system store, before connecting.
    for weak in ["require", "verify-ca", "prefer"] {
        let (code, err) = refused(&site.list(
            &site.url("127.0.0.1", &format!("sslmode={weak} sslrootcert=system")),
            &system,
        ));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "weak sslmode \"{weak}\" may not be used with sslrootcert=system (use \"verify-full\")"
            )),
            "{err}"
        );
    }
    // Naming the CA that did sign it is trusted.
    let other_root = format!("sslrootcert={}", site.other_ca.cert.display());
    ok(&site.list(
        &site.url("127.0.0.1", &format!("sslmode=verify-full {other_root}")),
        &[],
    ));
}

#[test]
#[ignore = "needs root: runs PostgreSQL as the postgres user"]
fn verify_full_checks_the_name_and_verify_needs_a_root_certificate() {
    let site = Site::start();
    site.serve_certificate_of(&site.site_ca, "server-for-address");
    let root = format!("sslrootcert={}", site.site_ca.cert.display());

    ok(&site.list(
        &site.url("127.0.0.1", &format!("sslmode=verify-full {root}")),
        &[],
    ));
    // The certificate is for 127.0.0.1; `localhost` reaches the same server under another name.
    let (code, err) = refused(&site.list(
        &site.url("localhost", &format!("sslmode=verify-full {root}")),
        &[],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    // The name checked is `host`, not the address connected to (`hostaddr`), as in libpq.
    let (code, err) = refused(&site.list(
        &site.url(
            "db.example.invalid",
            &format!("hostaddr=127.0.0.1 sslmode=verify-full {root}"),
        ),
        &[],
    ));
    assert_eq!(code, 1, "{err}");
    // verify-ca checks the chain only.
    ok(&site.list(
        &site.url("localhost", &format!("sslmode=verify-ca {root}")),
        &[],
    ));

    // Without sslrootcert the root certificate is ~/.postgresql/root.crt; missing, libpq's
    // message, before any connection.
    let default_root = site.home.join(".postgresql/root.crt");
    for mode in ["verify-ca", "verify-full"] {
        let (code, err) =
            refused(&site.list(&site.url("127.0.0.1", &format!("sslmode={mode}")), &[]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "root certificate file \"{}\" does not exist. Either provide the file, use the \
                 system's trusted roots with sslrootcert=system, or change sslmode to disable \
                 server certificate verification.",
                default_root.display()
            )),
            "{err}"
        );
    }
    let missing = site.dir.path().join("no-such-ca.crt");
    let (code, err) = refused(&site.list(
        &site.url(
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert={}", missing.display()),
        ),
        &[],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "root certificate file \"{}\" does not exist",
            missing.display()
        )),
        "{err}"
    );
    // Put in place, the default root certificate is used.
    std::fs::create_dir(site.home.join(".postgresql")).unwrap();
    std::fs::copy(&site.site_ca.cert, &default_root).unwrap();
    ok(&site.list(&site.url("127.0.0.1", "sslmode=verify-ca"), &[]));
    ok(&site.list(&site.url("127.0.0.1", "sslmode=verify-full"), &[]));
}

#[test]
#[ignore = "needs root: runs PostgreSQL as the postgres user"]
fn a_tcp_url_without_sslmode_is_verify_full() {
    let site = Site::start();
    // A server whose certificate the site does not know.
    site.serve_certificate_of(&site.other_ca, "server-by-unknown-ca");
    let site_root = format!("sslrootcert={}", site.site_ca.cert.display());
    let other_root = format!("sslrootcert={}", site.other_ca.cert.display());

    // libpq's default (prefer) would take this server; the fleet's default refuses it.
    let (code, err) = refused(&site.list(&site.url("127.0.0.1", &site_root), &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    // With no root certificate at all, verification is still demanded.
    let (code, err) = refused(&site.list(&site.url("127.0.0.1", ""), &[]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("root certificate file"), "{err}");
    // Naming the server's CA: accepted; and the name is checked (verify-full, not verify-ca).
    ok(&site.list(&site.url("127.0.0.1", &other_root), &[]));
    let (code, err) = refused(&site.list(&site.url("localhost", &other_root), &[]));
    assert_eq!(code, 1, "{err}");
    // An unverified channel is there when asked for by name.
    ok(&site.list(&site.url("127.0.0.1", "sslmode=require"), &[]));
    ok(&site.list(&site.url("127.0.0.1", "sslmode=disable"), &[]));
}

/// What a fake server does after the client's startup message.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Script {
    /// AuthenticationCleartextPassword.
    AskCleartext,
    /// AuthenticationMD5Password.
    AskMd5,
    /// AuthenticationOk and ReadyForQuery, then silence, whatever the client asks.
    AcceptThenSilent,
    /// Nothing at all, not even an answer to the SSLRequest.
    SilentAtSslRequest,
}

/// What the fake server saw.
#[derive(Debug, Default)]
struct Seen {
    /// A startup message (protocol 3.0) arrived.
    startup: bool,
    /// The body of a PasswordMessage ('p'), if one arrived.
    password: Option<Vec<u8>>,
    /// A query arrived (after AuthenticationOk).
    query: bool,
}

/// A one-connection fake PostgreSQL server on 127.0.0.1 (std::net), answering an SSLRequest
/// with 'N' (no TLS).
struct FakeServer {
    port: u16,
    seen: std::thread::JoinHandle<Seen>,
}

impl FakeServer {
    fn start(script: Script) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || serve_once(&listener, script));
        FakeServer { port, seen }
    }

    fn finish(self) -> Seen {
        self.seen.join().unwrap()
    }
}

/// A packet with a length and no type byte (SSLRequest, StartupMessage): its body.
fn read_packet(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    s.read_exact(&mut length).ok()?;
    let mut body = vec![0; (u32::from_be_bytes(length) as usize).checked_sub(4)?];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// A typed message: its type and body.
fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut kind = [0u8];
    s.read_exact(&mut kind).ok()?;
    read_packet(s).map(|body| (kind[0], body))
}

/// Blocks until the client closes the connection (or 150 s pass).
fn wait_for_close(s: &mut TcpStream) {
    let _ = s.read_to_end(&mut Vec::new());
}

fn serve_once(listener: &TcpListener, script: Script) -> Seen {
    let mut seen = Seen::default();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    let Some(mut packet) = read_packet(&mut s) else {
        return seen;
    };
    if packet.get(..4) == Some(&[0x04, 0xd2, 0x16, 0x2f]) {
        if script == Script::SilentAtSslRequest {
            wait_for_close(&mut s);
            return seen;
        }
        s.write_all(b"N").unwrap();
        packet = match read_packet(&mut s) {
            Some(p) => p,
            None => return seen,
        };
    }
    seen.startup = packet.get(..4) == Some(&[0, 3, 0, 0]);
    let request: &[u8] = match script {
        Script::AskCleartext => &[b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        Script::AskMd5 => &[b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4],
        _ => &[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'],
    };
    s.write_all(request).unwrap();
    match read_message(&mut s) {
        Some((b'p', body)) => seen.password = Some(body),
        Some((b'Q', _)) => {
            seen.query = true;
            wait_for_close(&mut s);
        }
        _ => {}
    }
    seen
}

/// `forcelogoutctl --fleet URL schedule list` against a fake server's port.
fn list_on_fake(dir: &Path, port: u16, passfile: &Path, extra: &str) -> Output {
    Command::new("timeout")
        .args(["-s", "KILL", "180"])
        .arg(ctl_path())
        .arg("--db")
        .arg(dir.join("unused.db"))
        .args([
            "--fleet",
            &format!(
                "host=127.0.0.1 port={port} dbname=fleet user=lab1 passfile={} {extra}",
                passfile.display()
            ),
            "schedule",
            "list",
        ])
        .env("FORCELOGOUT_CONFIG", dir.join("none.toml"))
        .env("HOME", dir)
        .output()
        .unwrap()
}

fn fake_passfile(dir: &Path) -> PathBuf {
    let passfile = dir.join("lab1.pgpass");
    std::fs::write(&passfile, "*:*:*:lab1:the-secret-password\n").unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    passfile
}

#[test]
fn a_password_is_never_sent_in_clear_text_over_an_unverified_channel() {
    let psql = Path::new(BIN).join("psql");
    assert!(
        psql.exists(),
        "{} is missing (scripts/setup.sh installs postgresql-15)",
        psql.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let passfile = fake_passfile(dir.path());
    // The fake is a fair witness: libpq (psql) does send the password when asked.
    let fake = FakeServer::start(Script::AskCleartext);
    let _ = Command::new(&psql)
        .args(["-X", "-c", "SELECT 1"])
        .arg(format!(
            "host=127.0.0.1 port={} dbname=fleet user=lab1 sslmode=disable gssencmode=disable",
            fake.port
        ))
        .env("PGPASSWORD", "the-secret-password")
        .output()
        .unwrap();
    let seen = fake.finish();
    assert_eq!(
        seen.password.as_deref(),
        Some(&b"the-secret-password\0"[..]),
        "{seen:?}"
    );

    for (script, mode, asked) in [
        (
            Script::AskCleartext,
            "disable",
            "server requested a cleartext password",
        ),
        (
            Script::AskCleartext,
            "prefer",
            "server requested a cleartext password",
        ),
        (
            Script::AskMd5,
            "disable",
            "server requested a hashed password",
        ),
        (
            Script::AskMd5,
            "allow",
            "server requested a hashed password",
        ),
    ] {
        let fake = FakeServer::start(script);
        let out = list_on_fake(dir.path(), fake.port, &passfile, &format!("sslmode={mode}"));
        let seen = fake.finish();
        let (code, err) = refused(&out);
        assert!(seen.startup, "{mode}: the client never logged in: {err}");
        assert_eq!(seen.password, None, "{script:?} over sslmode={mode}: sent");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(asked), "{mode}: {err}");
        assert!(err.contains("the password was not sent"), "{mode}: {err}");
    }
}

#[test]
#[ignore = "needs root: runs PostgreSQL as the postgres user"]
fn a_cleartext_password_goes_only_over_a_verified_channel() {
    let site = Site::start();
    site.serve_certificate_of(&site.site_ca, "server-for-address");
    site.pg.add_setting("log_connections = on");
    // pg_hba's `password` method: the server asks for the password in clear text.
    site.pg
        .set_hba("local all all trust\nhost all all 127.0.0.1/32 password\n");
    let logins = || {
        site.pg
            .log()
            .matches(&format!("connection authorized: user={ADMIN} "))
            .count()
    };
    let before = logins();
    for mode in ["disable", "prefer", "require"] {
        let (code, err) =
            refused(&site.list(&site.url("127.0.0.1", &format!("sslmode={mode}")), &[]));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("server requested a cleartext password"),
            "{mode}: {err}"
        );
    }
    let root = format!("sslrootcert={}", site.site_ca.cert.display());
    ok(&site.list(&site.url("127.0.0.1", &root), &[]));
    // The server saw one login (the verified one) and no wrong or missing password.
    let log = site.pg.log();
    assert_eq!(logins() - before, 1, "{log}");
    assert!(
        !log.contains(&format!(
            "password authentication failed for user \"{ADMIN}\""
        )),
        "{log}"
    );
}

#[test]
#[ignore = "needs root: the daemon's link runs as root against PostgreSQL run as postgres"]
fn fleet_status_shows_how_the_channel_is_verified() {
    let site = Site::start();
    site.serve_certificate_of(&site.site_ca, "server-for-address");
    // Every host logs in as the one link role and proves who it is with its secret.
    let passfile = site
        .pg
        .create_login("forcelogout_link", "forcelogout_host", site.dir.path());
    let host = |name: &str, extra: &str| {
        let stack = PamStack::standard("");
        let secret_file = stack.dir.path().join("fleet.secret");
        let secret_arg = secret_file.to_str().expect("utf-8");
        ok(&fleet_ctl(
            site.dir.path(),
            &site.pg.superuser_url(),
            &["fleet", "enrol", name, "--secret-file", secret_arg],
        ));
        let daemon = Daemon::start(
            &stack.db,
            &format!(
                "[fleet]\nurl = \"host=127.0.0.1 port={} dbname=fleet user=forcelogout_link passfile={} {extra}\"\nhost = \"{name}\"\nsecret_file = \"{}\"\n",
                site.pg.port,
                passfile.display(),
                secret_file.display()
            ),
        );
        (stack, daemon)
    };
    let status = |daemon: &Daemon| ok(&daemon.ctl(&["fleet", "status"]));
    let connected = |daemon: &Daemon| {
        assert!(
            wait_until(Duration::from_secs(60), || status(daemon)
                .contains("Link:       connected since")),
            "{}\n{}",
            status(daemon),
            daemon.log()
        );
        status(daemon)
    };

    let site_ca = site.site_ca.cert.display().to_string();
    let (_verified_stack, verified) = host("lab1", &format!("sslrootcert={site_ca}"));
    let text = connected(&verified);
    assert!(
        text.contains(&format!(
            "TLS:        verify-full (root: {site_ca}; the default for a TCP host)\n"
        )),
        "{text}"
    );
    let json = ok(&verified.ctl(&["--json", "fleet", "status"]));
    assert!(json.contains("\"Tls\": \"verify-full (root: "), "{json}");

    let (_plain_stack, plain) = host("lab2", "sslmode=disable");
    let text = connected(&plain);
    assert!(
        text.contains("TLS:        none (sslmode=disable: not encrypted, unverified)\n"),
        "{text}"
    );

    let other_ca = site.other_ca.cert.display().to_string();
    let (_wrong_stack, wrong) = host(
        "lab3",
        &format!("sslmode=verify-full sslrootcert={other_ca}"),
    );
    assert!(
        wait_until(Duration::from_secs(60), || status(&wrong)
            .contains("certificate verify failed")),
        "{}\n{}",
        status(&wrong),
        wrong.log()
    );
    let text = status(&wrong);
    assert!(!text.contains("Link:       connected"), "{text}");
    assert!(
        text.contains(&format!("TLS:        verify-full (root: {other_ca})\n")),
        "{text}"
    );
    assert_eq!(
        site.pg
            .psql(
                "SELECT string_agg(Host, ',' ORDER BY Host) FROM FleetHosts \
                 WHERE LastContact IS NOT NULL"
            )
            .trim(),
        "lab1,lab2"
    );
}

#[test]
fn a_server_that_goes_silent_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let passfile = fake_passfile(dir.path());
    // Both at once: one server stops answering after the login (its kernel still acknowledges
    // every byte, so no TCP timeout fires), the other never answers the SSLRequest.
    let after_login = FakeServer::start(Script::AcceptThenSilent);
    let at_tls = FakeServer::start(Script::SilentAtSslRequest);
    let started = Instant::now();
    let (port_a, port_b) = (after_login.port, at_tls.port);
    let (dir_a, dir_b) = (dir.path().to_path_buf(), dir.path().to_path_buf());
    let (pass_a, pass_b) = (passfile.clone(), passfile.clone());
    let a = std::thread::spawn(move || list_on_fake(&dir_a, port_a, &pass_a, "sslmode=disable"));
    let b = std::thread::spawn(move || list_on_fake(&dir_b, port_b, &pass_b, "sslmode=require"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let elapsed = started.elapsed();
    assert!(
        after_login.finish().query,
        "the client never asked anything"
    );
    at_tls.finish();
    for out in [&a, &b] {
        let (code, err) = refused(out);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("the server sent nothing for 45 s after a request"),
            "{err}"
        );
    }
    // Bounded by the silence limit, not by the 180 s kill of `timeout`.
    assert!(elapsed < Duration::from_secs(150), "{elapsed:?}");
}
