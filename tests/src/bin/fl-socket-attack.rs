//! `fl-socket-attack MODE SOCKET [N]`: a hostile client of the daemon's control socket, run by
//! the tests as an unprivileged user. It prints what it achieved, one line each, until killed:
//!
//! ```text
//! slow SOCKET N    N connections, each sending one byte every 1.5 s; reconnects when cut:
//!                  "cut after MS" each time the daemon ends one
//! idle SOCKET N    N connections held open, sending nothing; reconnects when closed:
//!                  "held H refused R" each second (R: connections the daemon closed)
//! flood SOCKET N   N threads sending `sessions` requests as fast as they are answered:
//!                  "answered A refused R" each second
//! cap SOCKET N     N idle connections, then one more with a request: "reply MS LINE", exit
//! ask SOCKET JSON  one request line: "reply MS LINE", exit
//! ```

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, socket, arg] = &args[..] else {
        eprintln!("usage: fl-socket-attack slow|idle|flood|cap|ask SOCKET N|JSON");
        std::process::exit(2);
    };
    let n = || arg.parse::<usize>().expect("N");
    match mode.as_str() {
        "slow" => slow(socket, n()),
        "idle" => idle(socket, n()),
        "flood" => flood(socket, n()),
        "cap" => cap(socket, n()),
        "ask" => println!("{}", ask(&connect(socket), arg)),
        _ => {
            eprintln!("fl-socket-attack: unknown mode {mode}");
            std::process::exit(2);
        }
    }
}

fn connect(socket: &str) -> UnixStream {
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return stream,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn slow(socket: &str, n: usize) {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let socket = socket.to_string();
            std::thread::spawn(move || loop {
                let mut stream = connect(&socket);
                let since = Instant::now();
                while stream.write_all(b" ").is_ok() {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                println!("cut after {}", since.elapsed().as_millis());
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// Whether the daemon has closed (or answered on) a connection that sent nothing.
fn closed(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn idle(socket: &str, n: usize) {
    let open = |socket: &str| {
        let stream = connect(socket);
        stream.set_nonblocking(true).expect("nonblocking");
        stream
    };
    let mut held: Vec<UnixStream> = (0..n).map(|_| open(socket)).collect();
    let mut refused = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        for stream in &mut held {
            if closed(stream) {
                refused += 1;
                *stream = open(socket);
            }
        }
        println!("held {} refused {refused}", held.len());
    }
}

fn flood(socket: &str, n: usize) {
    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    for _ in 0..n {
        let (socket, answered, refused) = (socket.to_string(), answered.clone(), refused.clone());
        std::thread::spawn(move || loop {
            let reply = ask(&connect(&socket), r#"{"argv":["sessions"]}"#);
            let counter = if reply.contains(r#""code":0"#) {
                &answered
            } else {
                &refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "answered {} refused {}",
            answered.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed)
        );
    }
}

fn cap(socket: &str, n: usize) {
    let _held: Vec<UnixStream> = (0..n).map(|_| connect(socket)).collect();
    println!("{}", ask(&connect(socket), r#"{"argv":["sessions"]}"#));
}

/// Sends `line`, reads the reply line (however the request fared): "reply MS LINE".
fn ask(stream: &UnixStream, line: &str) -> String {
    let since = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = (&*stream).write_all(format!("{line}\n").as_bytes());
    let mut reply = String::new();
    let _ = BufReader::new(stream).read_line(&mut reply);
    format!("reply {} {}", since.elapsed().as_millis(), reply.trim_end())
}
