//! Session writes recorded by the daemon for the PAM module, as wtmpdb's daemon does for its
//! module: the daemon keeps one connection to the store, so a login costs one durable commit
//! instead of opening the store, parsing its schema and checkpointing the WAL on close. The
//! module writes the store itself when the daemon is absent, declines or is slow; the session
//! key it chooses makes a late second attempt harmless, and the daemon writes nothing after
//! the deadline the module gives, after which the module no longer waits for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;
use crate::sessions::{LoginFacts, ProcessFacts};
use crate::store::{Closed, Opened, RemovalReason, Store};

/// Longest request or reply line read.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The store the module was configured with: the daemon records only into its own.
    pub db: PathBuf,
    /// The daemon writes nothing once this has passed: the module has stopped waiting.
    pub deadline: DateTime<Utc>,
    /// The time of the PAM call, which the rows carry.
    pub now: DateTime<Utc>,
    pub process: ProcessFacts,
    pub action: Action,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Action {
    Open {
        session_key: String,
        login: LoginFacts,
        /// The module will show notices: the daemon sends their texts.
        notices: bool,
    },
    Close {
        session_key: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Opened {
        opened: Opened,
        notices: Vec<String>,
    },
    Closed(Closed),
    /// Nothing was written, for this reason: the module writes the store itself.
    Declined(String),
}

/// Sends `request` to the daemon on `socket` and waits at most `budget` for its reply. A
/// missing daemon, a full listen queue or a slow daemon is an error at once or within the
/// budget, never a longer wait.
pub fn call(socket: &Path, request: &Request, budget: Duration) -> std::io::Result<Reply> {
    if budget.is_zero() {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
    }
    let stream = connect_without_waiting(socket)?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(budget))?;
    stream.set_read_timeout(Some(budget))?;
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// A non-blocking connect: a Unix socket whose listen queue is full makes a blocking connect
/// wait without a bound; this one fails with EAGAIN instead.
fn connect_without_waiting(socket: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket as new_socket, AddressFamily, SockFlag, SockType};
    let fd: OwnedFd = new_socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let address = nix::sys::socket::UnixAddr::new(socket)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
    Ok(UnixStream::from(fd))
}

/// The daemon's side of one connection: only root may record sessions (the socket's mode
/// says so too; the kernel's word on the peer is checked again here).
pub fn answer(
    stream: UnixStream,
    store: &mut Store,
    config: &Config,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let reply = if peer.uid() != 0 {
        Reply::Declined(format!("uid {} may not record sessions", peer.uid()))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => serve(store, config, request, clock, log),
            Err(e) => Reply::Declined(format!("not a session request: {e}")),
        }
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

/// Carries out one request on the daemon's store, exactly as the module would itself.
pub fn serve(
    store: &mut Store,
    config: &Config,
    request: Request,
    clock: &dyn Fn() -> DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Reply {
    if !same_file(&request.db, store.path()) {
        return Reply::Declined(format!(
            "this daemon records into {}, not {}",
            store.path().display(),
            request.db.display()
        ));
    }
    let in_time = || clock() < request.deadline;
    if !in_time() {
        return Reply::Declined("the module stopped waiting".into());
    }
    let outcome = match request.action {
        Action::Open {
            session_key,
            login,
            notices,
        } => store
            .open_session(
                &session_key,
                &login,
                &request.process,
                request.now,
                &in_time,
            )
            .and_then(|opened| match opened {
                None => Ok(Reply::Declined("the module stopped waiting".into())),
                Some(opened) => {
                    let notices = if notices {
                        crate::login::notices_for(store, config, &login.user, request.now, log)?
                    } else {
                        Vec::new()
                    };
                    Ok(Reply::Opened { opened, notices })
                }
            }),
        Action::Close { session_key } => store
            .close_session(
                session_key.as_deref(),
                &request.process,
                RemovalReason::Logout,
                request.now,
            )
            .map(Reply::Closed),
    };
    outcome.unwrap_or_else(|e: Error| Reply::Declined(e.to_string()))
}

/// The same file by device and inode, whatever path names it.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Access;
    use chrono::TimeZone;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
    }

    fn open_request(db: &Path, key: &str, deadline: DateTime<Utc>) -> Request {
        Request {
            db: db.to_path_buf(),
            deadline,
            now: t(0),
            process: ProcessFacts {
                pid: 4242,
                boot_id: "boot".into(),
                host: "host".into(),
                ..ProcessFacts::default()
            },
            action: Action::Open {
                session_key: key.into(),
                login: LoginFacts {
                    user: "alice".into(),
                    uid: 1000,
                    ..LoginFacts::default()
                },
                notices: true,
            },
        }
    }

    fn sessions(store: &Store) -> usize {
        store.live_sessions().unwrap().len()
    }

    fn events(store: &Store) -> Vec<String> {
        let all = crate::store::EventFilter::default();
        store
            .events(&all, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    #[test]
    fn a_repeated_open_is_recorded_once_and_a_late_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let mut store = Store::open(&db, Access::Create, Duration::from_secs(1)).unwrap();
        let config = Config::default();
        let log = |_: &str| {};
        let clock = || t(0);

        let reply = serve(
            &mut store,
            &config,
            open_request(&db, "k1", t(1)),
            &clock,
            &log,
        );
        assert!(matches!(reply, Reply::Opened { ref opened, .. } if opened.online));
        // The module gave up and wrote it itself, or the same request came twice.
        let reply = serve(
            &mut store,
            &config,
            open_request(&db, "k1", t(1)),
            &clock,
            &log,
        );
        assert!(matches!(reply, Reply::Opened { ref opened, .. } if !opened.online));
        assert_eq!(sessions(&store), 1);
        assert_eq!(events(&store), ["online"]);

        // Past its deadline before it is read, and past it once the write lock is held.
        let late = serve(
            &mut store,
            &config,
            open_request(&db, "k2", t(0)),
            &clock,
            &log,
        );
        assert!(matches!(late, Reply::Declined(_)));
        let calls = std::cell::Cell::new(0);
        let slow_clock = || {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                t(0)
            } else {
                t(5)
            }
        };
        let late = serve(
            &mut store,
            &config,
            open_request(&db, "k3", t(1)),
            &slow_clock,
            &log,
        );
        assert!(matches!(late, Reply::Declined(_)));
        assert_eq!(sessions(&store), 1);

        // Another store than the daemon's.
        let other = dir.path().join("other.db");
        Store::open(&other, Access::Create, Duration::from_secs(1)).unwrap();
        let reply = serve(
            &mut store,
            &config,
            open_request(&other, "k4", t(1)),
            &clock,
            &log,
        );
        assert!(matches!(reply, Reply::Declined(ref why) if why.contains("other.db")));
        assert_eq!(sessions(&store), 1);

        let close = |key: &str| Request {
            action: Action::Close {
                session_key: Some(key.into()),
            },
            ..open_request(&db, key, t(1))
        };
        let reply = serve(&mut store, &config, close("k1"), &clock, &log);
        assert!(matches!(reply, Reply::Closed(ref c) if c.removed && c.offline));
        let reply = serve(&mut store, &config, close("k1"), &clock, &log);
        assert!(matches!(reply, Reply::Closed(ref c) if !c.removed));
        assert_eq!(events(&store), ["online", "removed", "offline"]);
        assert_eq!(sessions(&store), 0);
    }
}
