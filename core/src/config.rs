//! `/etc/forcelogout/forcelogout.toml` (SPEC §7). Every value has a default, so the product
//! runs with no file at all; unknown keys and bad values are refused with the key's name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/forcelogout/forcelogout.toml";
pub const CONFIG_ENV: &str = "FORCELOGOUT_CONFIG";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Members may do through the daemon what root does.
    pub admin_group: String,
    /// Members (and uid 0) are never logged out or locked out unless a schedule names them.
    pub exempt_groups: Vec<String>,
    /// How long before a scheduled logout the countdown starts.
    pub scheduled_warning: Duration,
    /// How long after it is issued an immediate logout takes effect.
    pub immediate_warning: Duration,
    /// At login, announce logouts due within this long.
    pub notice_ahead: Duration,
    /// Log out sessions idle this long; `None` is off.
    pub idle_timeout: Option<Duration>,
    /// A logout missed while the daemon was down still fires if it is younger than this.
    pub catch_up: Duration,
    /// Events older than this many days are pruned by the daemon; `None` keeps everything.
    pub retention_days: Option<u32>,
    pub hooks_dir: PathBuf,
    /// Longest a hook may run for one event before it is killed and retried.
    pub hook_timeout: Duration,
    /// Send each event to syslog as one structured line.
    pub syslog: bool,
    pub syslog_socket: PathBuf,
    pub socket: PathBuf,
    /// At `account`, leave pam_systemd a runtime limit (RuntimeMaxSec=) that ends the session
    /// a minute after the next kick that targets the user, in case the daemon is down then.
    pub limit_session_runtime: bool,
    /// Root-only socket on which the daemon records PAM sessions for the module (one
    /// long-lived connection and its one commit, instead of a store opened per login).
    pub session_socket: PathBuf,
    /// Show countdowns on users' desktops too (SPEC §10): a notification on the session bus.
    pub desktop_notifications: bool,
    /// `[fleet]`: the central PostgreSQL this host follows (SPEC §9); `None`: an island.
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]` of the configuration: where the central database is, and who this host is.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// A libpq connection string or URI; no password in it (`passfile=` or a client key).
    pub url: String,
    /// This host's name in the fleet (default: the host name). Its labels are central, set
    /// with `fleet enrol --labels`.
    pub host: String,
    /// The file holding the host's secret (`fleet enrol` makes it): 0600, owned by the user
    /// the link runs as.
    pub secret_file: PathBuf,
    /// The section still has `labels`, which is no longer read (labels are central): the link
    /// says so in its log instead of the whole configuration being refused, so that an
    /// upgraded host goes on enforcing.
    pub obsolete_labels: bool,
}

/// Where `fleet enrol` tells hosts to keep their secret, unless it is told otherwise.
pub const DEFAULT_SECRET_FILE: &str = "/etc/forcelogout/fleet.secret";

/// A host's `[fleet]` section, as `fleet enrol` prints it for the host's configuration.
pub fn fleet_section_text(url: &str, host: &str, secret_file: &Path) -> String {
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    format!(
        "[fleet]\nurl = {}\nhost = {}\nsecret_file = {}\n",
        quote(url),
        quote(host),
        quote(&secret_file.to_string_lossy())
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFleet {
    url: String,
    host: Option<String>,
    secret_file: Option<PathBuf>,
    /// No longer read: labels are central now. Taken only to say so.
    labels: Option<toml::Value>,
}

/// A fleet host name or label: what a `Hosts` selector can name (no `*`, `@`, blanks).
pub fn validate_fleet_name(field: &str, name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::invalid(
            field,
            format!("{name:?} is not a host name or label (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// The session socket's name beside `socket` when the file does not name it.
const SESSION_SOCKET_NAME: &str = "sessions";

impl Default for Config {
    fn default() -> Config {
        Config {
            admin_group: "forcelogout".into(),
            exempt_groups: vec!["sudo".into(), "wheel".into()],
            scheduled_warning: Duration::from_secs(5 * 60),
            immediate_warning: Duration::from_secs(60),
            notice_ahead: Duration::from_secs(12 * 3600),
            idle_timeout: None,
            catch_up: Duration::from_secs(10 * 60),
            retention_days: None,
            hooks_dir: PathBuf::from("/etc/forcelogout/hooks.d"),
            hook_timeout: Duration::from_secs(10),
            syslog: true,
            limit_session_runtime: false,
            syslog_socket: PathBuf::from("/dev/log"),
            socket: PathBuf::from("/run/forcelogout/socket"),
            session_socket: PathBuf::from("/run/forcelogout").join(SESSION_SOCKET_NAME),
            desktop_notifications: true,
            fleet: None,
        }
    }
}

/// The file's shape: every key optional, none unknown.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    admin_group: Option<String>,
    exempt_groups: Option<Vec<String>>,
    scheduled_warning: Option<String>,
    immediate_warning: Option<String>,
    notice_ahead: Option<String>,
    idle_timeout: Option<String>,
    catch_up: Option<String>,
    retention_days: Option<u32>,
    hooks_dir: Option<PathBuf>,
    hook_timeout: Option<String>,
    syslog: Option<bool>,
    syslog_socket: Option<PathBuf>,
    socket: Option<PathBuf>,
    session_socket: Option<PathBuf>,
    limit_session_runtime: Option<bool>,
    desktop_notifications: Option<bool>,
    fleet: Option<FileFleet>,
}

impl Config {
    /// Reads the file at `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_named(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// A configuration's text, its errors named `config:LINE...`.
    pub fn parse(text: &str) -> Result<Config, Error> {
        Config::parse_named("config", text)
    }

    /// A configuration's text, read from `name`. A syntax error is `NAME:LINE:COL: what`; a
    /// wrong key, type or value is `NAME:LINE: key `KEY`: what`.
    pub fn parse_named(name: &str, text: &str) -> Result<Config, Error> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let place = TomlPlace::of(text, &e);
            match (place.is_meaning, place.key, place.header) {
                (true, Some(key), _) => {
                    Error::invalid(format!("{name}:{}: key `{key}`", place.line), place.message)
                }
                (true, None, Some(table)) => {
                    Error::invalid(format!("{name}:{}: {table}", place.line), place.message)
                }
                _ => Error::invalid(
                    format!("{name}:{}:{}", place.line, place.column),
                    place.message,
                ),
            }
        })?;
        Config::from_file(file).map_err(|e| match e {
            Error::Invalid { field, reason } => {
                let line = line_of_key(text, &field).unwrap_or(1);
                Error::invalid(format!("{name}:{line}: key `{field}`"), reason)
            }
            other => other,
        })
    }

    fn from_file(file: FileConfig) -> Result<Config, Error> {
        let defaults = Config::default();
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            Some(text) => parse_duration(&text).map_err(|reason| Error::invalid(key, reason)),
            None => Ok(default),
        };
        let config = Config {
            admin_group: match file.admin_group {
                Some(g) => {
                    crate::schedule::validate_group(&g).map_err(|e| rename(e, "admin_group"))?
                }
                None => defaults.admin_group,
            },
            exempt_groups: match file.exempt_groups {
                Some(groups) => groups
                    .iter()
                    .map(|g| {
                        crate::schedule::validate_group(g).map_err(|e| rename(e, "exempt_groups"))
                    })
                    .collect::<Result<_, _>>()?,
                None => defaults.exempt_groups,
            },
            scheduled_warning: duration(
                "scheduled_warning",
                file.scheduled_warning,
                defaults.scheduled_warning,
            )?,
            immediate_warning: duration(
                "immediate_warning",
                file.immediate_warning,
                defaults.immediate_warning,
            )?,
            notice_ahead: duration("notice_ahead", file.notice_ahead, defaults.notice_ahead)?,
            idle_timeout: match file.idle_timeout.as_deref() {
                None | Some("off") | Some("0") => None,
                Some(text) => {
                    Some(parse_duration(text).map_err(|r| Error::invalid("idle_timeout", r))?)
                }
            },
            catch_up: duration("catch_up", file.catch_up, defaults.catch_up)?,
            retention_days: file.retention_days,
            hooks_dir: file.hooks_dir.unwrap_or(defaults.hooks_dir),
            hook_timeout: duration("hook_timeout", file.hook_timeout, defaults.hook_timeout)?,
            syslog: file.syslog.unwrap_or(defaults.syslog),
            syslog_socket: file.syslog_socket.unwrap_or(defaults.syslog_socket),
            limit_session_runtime: file
                .limit_session_runtime
                .unwrap_or(defaults.limit_session_runtime),
            session_socket: match (file.session_socket, &file.socket) {
                (Some(path), _) => path,
                (None, Some(socket)) => socket.with_file_name(SESSION_SOCKET_NAME),
                (None, None) => defaults.session_socket,
            },
            socket: file.socket.unwrap_or(defaults.socket),
            desktop_notifications: file
                .desktop_notifications
                .unwrap_or(defaults.desktop_notifications),
            fleet: file.fleet.map(fleet_section).transpose()?,
        };
        Ok(config)
    }

    /// The file named by `FORCELOGOUT_CONFIG`, else the default path.
    pub fn default_path() -> PathBuf {
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }
}

fn fleet_section(file: FileFleet) -> Result<FleetConfig, Error> {
    if file.url.trim().is_empty() {
        return Err(Error::invalid("fleet.url", "is empty"));
    }
    let host = match file.host {
        Some(host) => host,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let secret_file = file
        .secret_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRET_FILE));
    if !secret_file.is_absolute() {
        return Err(Error::invalid(
            "fleet.secret_file",
            format!("{} is not an absolute path", secret_file.display()),
        ));
    }
    Ok(FleetConfig {
        url: file.url,
        host: validate_fleet_name("fleet.host", &host)?,
        secret_file,
        obsolete_labels: file.labels.is_some(),
    })
}

/// Where a TOML error is, for a one-line message an editor can jump to.
pub(crate) struct TomlPlace {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The key on the error's line (`key = ...`), if it has one.
    pub key: Option<String>,
    /// The table header on the error's line (`[fleet]`), if it is one.
    pub header: Option<String>,
    /// The error's own first line.
    pub message: String,
    /// A right syntax with a wrong key, type or value (serde's), not a syntax error.
    pub is_meaning: bool,
}

impl TomlPlace {
    pub fn of(text: &str, error: &toml::de::Error) -> TomlPlace {
        let offset = error.span().map_or(0, |span| span.start).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let line_text = text[line_start..].lines().next().unwrap_or("");
        let message = error.message().lines().next().unwrap_or("invalid TOML");
        let is_meaning = [
            "unknown field",
            "invalid type",
            "invalid value",
            "missing field",
            "data did not match",
            "invalid length",
        ]
        .iter()
        .any(|start| message.starts_with(start));
        TomlPlace {
            line,
            column,
            key: key_of_line(line_text),
            header: Some(line_text.trim())
                .filter(|l| l.starts_with('['))
                .map(crate::text::sanitize_line),
            message: crate::text::sanitize_line(message),
            is_meaning,
        }
    }
}

/// `key` of a `key = value` line.
fn key_of_line(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#'))
        .then(|| crate::text::sanitize_line(key))
}

/// The line of `key` (`fleet.url`: the `url` line), for a value refused after parsing.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|line| key_of_line(line).as_deref() == Some(last))
        .map(|i| i + 1)
}

fn rename(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}

/// `90s`, `5m`, `2h`, `1d`, or combinations such as `1h30m`; at most 30 days. A number needs
/// its unit: `--in 5` read as seconds beside `--lockout 5` read as minutes was a trap, so a
/// bare number is refused (naming the units) rather than guessed; `0` is zero in any unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let shown = crate::text::sanitize_line(text);
    let bad = || format!("{shown:?} is not a duration (e.g. 30s, 5m, 1h, 1h30m, 2d)");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "{shown:?} is negative; a duration counts forward (e.g. 30s, 5m, 1h)"
        ));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = trimmed.parse().map_err(|_| bad())?;
        if n == 0 {
            return Ok(Duration::ZERO);
        }
        return Err(format!(
            "{shown:?} has no unit; write {n}s, {n}m or {n}h (seconds, minutes, hours)"
        ));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    check_limit(Duration::from_secs(total), text)
}

fn check_limit(d: Duration, text: &str) -> Result<Duration, String> {
    const MAX: Duration = Duration::from_secs(30 * 86_400);
    if d > MAX {
        Err(format!("{text:?} is longer than 30 days"))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_defaults() {
        let config = Config::load(Path::new("/nonexistent/forcelogout.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn values_are_read() {
        let config = Config::parse(
            "admin_group = \"lab-admins\"\nexempt_groups = [\"sudo\", \"ops\"]\n\
             scheduled_warning = \"10m\"\nimmediate_warning = \"0\"\nnotice_ahead = \"1d\"\n\
             idle_timeout = \"45m\"\ncatch_up = \"2m\"\nretention_days = 400\n\
             limit_session_runtime = true\n",
        )
        .unwrap();
        assert_eq!(config.admin_group, "lab-admins");
        assert_eq!(config.exempt_groups, ["sudo", "ops"]);
        assert_eq!(config.scheduled_warning, Duration::from_secs(600));
        assert_eq!(config.immediate_warning, Duration::ZERO);
        assert_eq!(config.notice_ahead, Duration::from_secs(86_400));
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(2700)));
        assert_eq!(config.retention_days, Some(400));
        assert!(config.limit_session_runtime);
        assert!(!Config::default().limit_session_runtime);
    }

    #[test]
    fn the_session_socket_sits_beside_the_socket_unless_named() {
        assert_eq!(
            Config::default().session_socket,
            Path::new("/run/forcelogout/sessions")
        );
        let moved = Config::parse("socket = \"/run/lab/ctl.sock\"\n").unwrap();
        assert_eq!(moved.session_socket, Path::new("/run/lab/sessions"));
        let named =
            Config::parse("socket = \"/run/lab/ctl.sock\"\nsession_socket = \"/run/pam/rec\"\n")
                .unwrap();
        assert_eq!(named.session_socket, Path::new("/run/pam/rec"));
    }

    #[test]
    fn bad_files_name_the_key() {
        for (text, key) in [
            ("scheduled_warnings = \"5m\"", "key `scheduled_warnings`"),
            ("scheduled_warning = \"5 minutes\"", "scheduled_warning"),
            ("immediate_warning = \"-1s\"", "immediate_warning"),
            ("idle_timeout = \"forever\"", "idle_timeout"),
            ("admin_group = \"two words\"", "admin_group"),
            ("exempt_groups = [\"ok\", \"a;b\"]", "exempt_groups"),
            ("catch_up = \"99d\"", "catch_up"),
            ("retention_days = -3", "key `retention_days`"),
            ("not toml at all", "config:1:"),
        ] {
            match Config::parse(text) {
                Err(Error::Invalid { field, .. }) => {
                    assert!(field.contains(key), "{text}: {field}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_line() {
        let text = "admin_group = \"ops\"\n\nidle_timeout = 5\n";
        let e = Config::parse_named("/etc/f.toml", text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/f.toml:3: key `idle_timeout`: "), "{e}");
        let e = Config::parse_named("f", "a = \"x\"\nb = [1,\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:3:1: "), "{e}");
        let e = Config::parse_named("f", "\nnotice_ahead = \"90\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2: key `notice_ahead`: "), "{e}");
    }

    #[test]
    fn the_fleet_section() {
        let config = Config::parse(
            "[fleet]\nurl = \"host=db.example.org dbname=forcelogout\"\nhost = \"lab1\"\n",
        )
        .unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.host, "lab1");
        assert_eq!(fleet.secret_file, Path::new(DEFAULT_SECRET_FILE));
        assert!(Config::default().fleet.is_none());
        let config =
            Config::parse("[fleet]\nurl = \"x\"\nsecret_file = \"/etc/fl/lab1.secret\"\n").unwrap();
        assert_eq!(
            config.fleet.unwrap().secret_file,
            Path::new("/etc/fl/lab1.secret")
        );
        let printed = fleet_section_text(
            "host=db sslrootcert='/etc/a b.crt' user=forcelogout_link",
            "lab1",
            Path::new("/etc/forcelogout/fleet.secret"),
        );
        let fleet = Config::parse(&printed).unwrap().fleet.unwrap();
        assert_eq!(
            fleet.url,
            "host=db sslrootcert='/etc/a b.crt' user=forcelogout_link"
        );
        assert_eq!(fleet.host, "lab1");
        for (text, key) in [
            ("[fleet]\nurl = \"\"", "fleet.url"),
            ("[fleet]\nurl = \"x\"\nhost = \"a b\"", "fleet.host"),
            (
                "[fleet]\nurl = \"x\"\nsecret_file = \"fleet.secret\"",
                "fleet.secret_file",
            ),
            ("[fleet]\nurl = \"x\"\nlabel = []", "key `label`"),
        ] {
            match Config::parse(text) {
                Err(Error::Invalid { field, .. }) => {
                    assert!(field.contains(key), "{text}: {field}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("90")
            .unwrap_err()
            .contains("90s, 90m or 90h"));
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        for bad in ["", "m", "5x", "1.5h", "5m3", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn desktop_notifications_are_on_unless_turned_off() {
        assert!(Config::default().desktop_notifications);
        let config = Config::parse("desktop_notifications = false\n").unwrap();
        assert!(!config.desktop_notifications);
    }
}
