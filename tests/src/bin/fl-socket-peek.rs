//! `fl-socket-peek PATH`: connects to the Unix socket at PATH and prints the first line it
//! receives; exit 1 with the error when the connection is refused. Tests run it as another
//! user to see what a socket lets that user do.

use std::io::BufRead;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: fl-socket-peek PATH");
        std::process::exit(2);
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => {
            let mut line = String::new();
            if let Err(e) = std::io::BufReader::new(stream).read_line(&mut line) {
                eprintln!("fl-socket-peek: reading {path}: {e}");
                std::process::exit(1);
            }
            print!("{line}");
        }
        Err(e) => {
            eprintln!("fl-socket-peek: connecting to {path}: {e}");
            std::process::exit(1);
        }
    }
}
