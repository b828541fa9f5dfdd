//! `forcelogoutd`: the enforcement daemon, started by `forcelogoutctl daemon` with its arguments
//! (see the library for why it is a program of its own).

fn main() -> std::process::ExitCode {
    forcelogoutctl::main_daemon()
}
