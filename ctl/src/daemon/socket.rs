//! The daemon's Unix socket: one JSON request line (the command line to run, and for `apply`
//! the file's content), one JSON reply line (exit code, standard output, standard error). The
//! daemon learns who asks from the kernel (SO_PEERCRED), never from the request, and never
//! opens a path a request names.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    /// The content of the file `apply -f FILE` names, read by the client as itself. Absent in
    /// the requests of older clients (the daemon then refuses `apply`) and of other commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Longest a client waits for the daemon; a `logout` through it only records.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line the daemon reads from a caller who is not an administrator.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest file a client sends with `apply`.
pub const MAX_INPUT: u64 = 1024 * 1024;
/// Longest request line the daemon reads from an administrator: the command line and a file of
/// `MAX_INPUT` bytes, with room for JSON's escapes of its quotes and line ends.
pub const MAX_ADMIN_REQUEST: usize = MAX_REQUEST + 2 * MAX_INPUT as usize;

pub fn reachable(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Sends the request to the daemon and returns its reply.
pub fn call(socket: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    if line.len() > MAX_ADMIN_REQUEST {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the request is longer than the daemon reads ({} KiB)",
                MAX_ADMIN_REQUEST / 1024
            ),
        ));
    }
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let sent = stream.write_all(line.as_bytes());
    let mut reply = String::new();
    // A daemon that refuses the connection (too many from this user) answers before it reads
    // and closes: its reply is there to read even when the request could not be sent.
    let read = BufReader::new(stream).read_line(&mut reply);
    match (sent, read) {
        (_, Ok(n)) if n > 0 && reply.ends_with('\n') => {
            serde_json::from_str(&reply).map_err(std::io::Error::other)
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the daemon closed the connection without a reply",
        )),
    }
}
