//! The daemon's Unix socket: one JSON request line (the command line to run), one JSON reply
//! line (exit code, standard output, standard error). The daemon learns who asks from the
//! kernel (SO_PEERCRED), never from the request.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Longest a client waits for the daemon; a `logout` through it only records.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 64 * 1024;

pub fn reachable(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Sends `argv` to the daemon and returns its reply.
pub fn call(socket: &Path, argv: Vec<String>) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut line = serde_json::to_string(&Request { argv })?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}
