//! The module's side of the session socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Reply, Request, MAX_LINE};

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
