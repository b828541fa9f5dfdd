//! A stand-in for the daemon on the session socket: takes one connection, reads the module's
//! request and gives the answer the test chose, or none (a daemon that hangs). It lets a test
//! run every branch of the module's relay without root, which the real daemon requires of
//! its peers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forcelogout_core::relay::{Reply, Request};

/// The longest a stand-in waits for the module to connect before failing the test.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

pub struct FakeDaemon {
    thread: JoinHandle<Request>,
}

impl FakeDaemon {
    /// Listens on `socket` (bound before this returns) and answers the one request with what
    /// `answer` makes of it; `None` reads on until the module hangs up, never answering.
    pub fn answering(
        socket: &Path,
        answer: impl FnOnce(&Request) -> Option<Reply> + Send + 'static,
    ) -> FakeDaemon {
        let listener = UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let thread = std::thread::spawn(move || {
            let stream = accept_within(&listener, CONNECT_WAIT);
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let request: Request = serde_json::from_str(&line).unwrap();
            match answer(&request) {
                Some(reply) => {
                    let mut text = serde_json::to_string(&reply).unwrap();
                    text.push('\n');
                    (&stream).write_all(text.as_bytes()).unwrap();
                }
                None => {
                    // Until the module stops waiting and closes its end.
                    let mut rest = Vec::new();
                    let _ = reader.read_to_end(&mut rest);
                }
            }
            request
        });
        FakeDaemon { thread }
    }

    /// The request the module sent.
    pub fn request(self) -> Request {
        self.thread.join().unwrap()
    }
}

fn accept_within(listener: &UnixListener, wait: Duration) -> std::os::unix::net::UnixStream {
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the module never connected: {e}"),
        }
    }
}
