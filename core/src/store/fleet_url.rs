//! A fleet URL (SPEC §9): a libpq `key=value` string or `postgresql://` URI, parsed into the
//! Rust client's configuration plus what this crate does itself for the keys only libpq knows
//! (TLS in `fleet_tls`, the password file here), and the connection settings that let the
//! link notice a server that stalls.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode, SslNegotiation};

use super::fleet::{FleetDb, FleetTls};
use super::fleet_host::HostDb;
use super::fleet_tls::TlsSettings;
use crate::error::Error;

/// Keys libpq knows that the Rust client does not: this crate handles them itself.
/// `sslnegotiation` is here because the link negotiates TLS itself (`fleet_channel`).
const LIBPQ_ONLY: [&str; 6] = [
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
];

/// Unacknowledged data older than this ends the connection (TCP_USER_TIMEOUT): a server or
/// network that went away during a request is noticed in this time, not in the kernel's
/// retransmission time (about 15 minutes).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Keepalives on an idle connection: the first after 10 s of silence, then every 5 s, and
/// 3 unanswered end it (a dead server behind an idle LISTEN is noticed in about 25 s).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// A parsed connection string: the client's own configuration, plus what this crate does for
/// the keys only libpq knows (TLS verification, client certificates, the password file).
#[derive(Clone, Debug)]
pub struct FleetUrl {
    config: postgres::Config,
    tls: TlsSettings,
    passfile: Option<PathBuf>,
}

impl FleetUrl {
    /// Parses `text` (a libpq `key=value` string or a `postgresql://` URI). A password in it is
    /// refused: secrets live in a 0600 file (`passfile=`, `PGPASSFILE`, `sslkey=`), never on a
    /// command line or in a configuration file others may read. `default_user` is used when
    /// the string names no user.
    pub fn parse(text: &str, default_user: &str) -> Result<FleetUrl, Error> {
        let bad = |reason: String| Error::invalid("fleet url", reason);
        let (rest, extracted) = split_libpq_only(text).map_err(bad)?;
        let mut config = postgres::Config::from_str(&rest)
            .map_err(|e| bad(crate::text::sanitize_line(&e.to_string())))?;
        if config.get_password().is_some() {
            return Err(bad(
                "a password does not belong in the URL; put it in a 0600 passfile (passfile=PATH)"
                    .into(),
            ));
        }
        if config.get_user().is_none() {
            config.user(default_user);
        }
        let named = !config.get_hosts().is_empty();
        let local = hosts_are_local(&mut config).map_err(bad)?;
        set_link_timeouts(&mut config);
        let mut passfile = None;
        let mut tls_keys = Vec::new();
        for (key, value) in extracted {
            match key.as_str() {
                "passfile" => passfile = Some(PathBuf::from(value)),
                "sslnegotiation" if value == "postgres" => {}
                "sslnegotiation" => {
                    return Err(bad(format!(
                        "sslnegotiation {value:?}: the link negotiates TLS with an SSLRequest \
                         (sslnegotiation=postgres)"
                    )))
                }
                _ => tls_keys.push((key, value)),
            }
        }
        let tls = TlsSettings::from_keys(tls_keys, local).map_err(bad)?;
        if tls.checks_name() && !named {
            // libpq's rule: verify-full compares the certificate with `host`, never `hostaddr`.
            return Err(bad(
                "host name must be specified for a verified SSL connection (verify-full)".into(),
            ));
        }
        Ok(FleetUrl {
            config,
            tls,
            passfile,
        })
    }

    /// The login role.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// `host:port` (or the socket directory), for messages.
    pub fn endpoint(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => match self.config.get_hostaddrs().first() {
                Some(addr) => addr.to_string(),
                None => "?".into(),
            },
        };
        format!("{host}:{}", self.port())
    }

    fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    /// How connections to this URL are protected, in one line for `fleet status` and the
    /// link's log: e.g. "verify-full (root: /etc/forcelogout/fleet-ca.crt)" or
    /// "none (sslmode=disable: not encrypted, unverified)".
    pub fn channel(&self) -> String {
        self.tls.describe(&self.endpoint())
    }

    /// Opens a connection; every failure is one line: a bad file is exit 2, a refused login
    /// exit 4, an unreachable server exit 1.
    pub fn connect(&self) -> Result<FleetDb, Error> {
        let tls = self.tls()?;
        self.connect_with(&tls)
    }

    /// The TLS side of connections to this URL, built once and reused for every reconnect
    /// (building an OpenSSL context reads the root certificates: tens of milliseconds). A
    /// `verify-*` mode without a usable root certificate fails here, with libpq's message.
    pub fn tls(&self) -> Result<FleetTls, Error> {
        self.tls.build()
    }

    /// Opens a connection with a `tls()` built before.
    pub fn connect_with(&self, tls: &FleetTls) -> Result<FleetDb, Error> {
        FleetDb::open(&self.client_config(tls)?, tls.clone(), self.endpoint())
    }

    /// Opens a host link's connection (through a pooler, possibly) with a `tls()` built before.
    pub fn connect_host(&self, tls: &FleetTls) -> Result<HostDb, Error> {
        HostDb::open(&self.client_config(tls)?, tls.clone(), self.endpoint())
    }

    /// The client's configuration for a connection: TLS as `tls` does it, the password.
    fn client_config(&self, tls: &FleetTls) -> Result<postgres::Config, Error> {
        let mut config = self.config.clone();
        if tls.is_local() {
            config.ssl_mode(SslMode::Disable);
        } else {
            // The client hands every TCP connection to `FleetTls`, which sends the SSLRequest
            // itself and watches the authentication (see fleet_channel): "direct" here means
            // only "do not negotiate, call the connector".
            config.ssl_mode(SslMode::Require);
            config.ssl_negotiation(SslNegotiation::Direct);
        }
        // The password is given to the client whatever the channel: `FleetTls` refuses,
        // before anything is sent, a server that asks for it in clear text (or as MD5) over a
        // channel whose certificate was not verified. SCRAM never reveals it.
        if let Some(password) = self.password()? {
            config.password(password);
        }
        Ok(config)
    }

    /// The password from the password file (libpq's format and lookup: `passfile=`, else
    /// `$PGPASSFILE`, else `~/.pgpass`), which must be readable by its owner only.
    fn password(&self) -> Result<Option<String>, Error> {
        let (path, explicit) = match &self.passfile {
            Some(p) => (p.clone(), true),
            None => match std::env::var_os("PGPASSFILE") {
                Some(p) if !p.is_empty() => (PathBuf::from(p), true),
                _ => match home_dir() {
                    Some(home) => (home.join(".pgpass"), false),
                    None => return Ok(None),
                },
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
            Err(e) => {
                return Err(Error::invalid(
                    "fleet url",
                    format!("passfile {}: {e}", path.display()),
                ))
            }
        };
        check_private(&path, "passfile")?;
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        let port = self.port().to_string();
        let user = self.user().to_string();
        let dbname = self.config.get_dbname().unwrap_or(&user).to_string();
        Ok(find_password(&text, [&host, &port, &dbname, &user]))
    }
}

/// Fills in the default host (Debian's socket directory) and tells whether the hosts are Unix
/// sockets (`true`) or TCP (`false`); a list of both is refused, since the two kinds of
/// channel are protected differently. A `hostaddr` without a `host` names the host for TLS too.
fn hosts_are_local(config: &mut postgres::Config) -> Result<bool, String> {
    if config.get_hosts().is_empty() {
        let addrs: Vec<String> = config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        if addrs.is_empty() {
            config.host("/var/run/postgresql");
        }
        for addr in addrs {
            config.host(&addr);
        }
    }
    let unix = config
        .get_hosts()
        .iter()
        .filter(|h| matches!(h, Host::Unix(_)))
        .count();
    if unix > 0 && (unix < config.get_hosts().len() || !config.get_hostaddrs().is_empty()) {
        return Err("the URL names both Unix sockets and TCP hosts; name one kind".into());
    }
    Ok(unix > 0)
}

/// The link's guards against a server or network that stalls: the connect timeout (5 s unless
/// the URL says), TCP_USER_TIMEOUT and keepalives (unless the URL says). The statement and
/// lock timeouts are set on each administrator's connection (`FleetDb::open`; the host link
/// sets nothing in its sessions, which a pooler shares); a server that goes silent
/// after a request is noticed by the channel (`fleet_channel`).
fn set_link_timeouts(config: &mut postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config.application_name("forcelogout");
    config.keepalives(true);
    config.keepalives_idle(KEEPALIVE_IDLE);
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
}

/// The home directory as libpq finds it (`pqGetHomeDirectory`): `$HOME` when set, else the
/// effective user's entry in the password database (for the root daemon: /root).
pub(super) fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|user| user.dir),
    }
}

/// A secret file must be readable by its owner only (libpq's rule, made an error).
pub(super) fn check_private(path: &Path, key: &str) -> Result<(), Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::invalid("fleet url", format!("{key} {}: {e}", path.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::invalid(
            "fleet url",
            format!(
                "{key} {} may be read by others (mode {:o}); chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

/// The first line of a `.pgpass` text matching host, port, database and user (`*` matches
/// anything; `\:` and `\\` are escapes).
fn find_password(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() == 5
            && fields[..4]
                .iter()
                .zip(wanted)
                .all(|(f, w)| f == "*" || f == w)
        {
            return fields.pop();
        }
    }
    None
}

/// Takes the libpq-only keys out of a connection string or URI; returns the rest and them.
#[allow(clippy::type_complexity)]
fn split_libpq_only(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let text = text.trim();
    if text.starts_with("postgresql://") || text.starts_with("postgres://") {
        return split_uri(text);
    }
    let mut extracted = Vec::new();
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        skip_spaces(&mut chars);
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        skip_spaces(&mut chars);
        if chars.next() != Some('=') {
            return Err(format!("{key:?} has no value (key=value)"));
        }
        skip_spaces(&mut chars);
        let value = read_value(&mut chars, &key)?;
        if LIBPQ_ONLY.contains(&key.as_str()) {
            extracted.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), extracted))
}

#[allow(clippy::type_complexity)]
fn split_uri(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut extracted = Vec::new();
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_string(), extracted));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if LIBPQ_ONLY.contains(&key) {
            extracted.push((key.to_string(), percent_decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, extracted))
}

pub(super) type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

pub(super) fn skip_spaces(chars: &mut Chars<'_>) {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
}

/// A value of a `key=value` string: quoted (`'…'`, with `\` escapes) or up to a space.
pub(super) fn read_value(chars: &mut Chars<'_>, key: &str) -> Result<String, String> {
    let mut value = String::new();
    if chars.peek() == Some(&'\'') {
        chars.next();
        loop {
            match chars.next() {
                Some('\\') => value.extend(chars.next()),
                Some('\'') => return Ok(value),
                Some(c) => value.push(c),
                None => return Err(format!("the value of {key} has no closing quote")),
            }
        }
    }
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            break;
        }
        chars.next();
        if c == '\\' {
            value.extend(chars.next());
        } else {
            value.push(c);
        }
    }
    Ok(value)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text:?}: a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_only_keys_are_taken_out() {
        let (rest, found) = split_libpq_only(
            "host=db port=5433 sslmode=verify-full passfile='/etc/fl pass' user=lab1",
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5433' user='lab1'");
        assert_eq!(
            found,
            [
                ("sslmode".to_string(), "verify-full".to_string()),
                ("passfile".to_string(), "/etc/fl pass".to_string())
            ]
        );
        let (rest, found) = split_libpq_only(
            "postgresql://lab1@db:5433/fl?sslmode=require&passfile=%2Fetc%2Fpw&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://lab1@db:5433/fl?connect_timeout=3");
        assert_eq!(found[1], ("passfile".to_string(), "/etc/pw".to_string()));
    }

    #[test]
    fn bad_urls_are_one_line_errors() {
        for url in [
            "host=db password=secret",
            "postgresql://lab1:secret@db/fl",
            "host=db sslmode=sometimes",
            "host='db",
            "nonsense",
            "host=db frobnicate=1",
            "host=db,/run/postgresql",
            "host=db sslnegotiation=direct",
            "hostaddr=10.0.0.1 sslmode=verify-full",
        ] {
            match FleetUrl::parse(url, "lab1") {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "fleet url", "{url}");
                    assert!(!reason.contains('\n'), "{url}: {reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let url = FleetUrl::parse("host=127.0.0.1 port=6543 dbname=fl", "lab1").unwrap();
        assert_eq!(url.user(), "lab1");
        assert_eq!(url.endpoint(), "127.0.0.1:6543");
        let url = FleetUrl::parse("hostaddr=10.0.0.1 sslmode=require", "lab1").unwrap();
        assert_eq!(url.endpoint(), "10.0.0.1:5432");
    }

    #[test]
    fn the_link_has_its_timeouts_and_keepalives() {
        let url = FleetUrl::parse("host=db", "lab1").unwrap();
        assert_eq!(url.config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(url.config.get_keepalives());
        assert_eq!(url.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(url.config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let url = FleetUrl::parse("host=db tcp_user_timeout=7", "lab1").unwrap();
        assert_eq!(
            url.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(7))
        );
    }

    #[test]
    fn passfile_lines_match_like_libpq() {
        let text =
            "# comment\nother:5432:*:*:no\n127.0.0.1:6543:fl:lab1:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            find_password(text, ["127.0.0.1", "6543", "fl", "lab1"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            find_password(text, ["db", "5432", "fl", "x"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(find_password("a:b:c:d:e\n", ["x", "b", "c", "d"]), None);
    }
}
