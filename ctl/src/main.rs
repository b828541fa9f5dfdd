//! `forcelogoutctl`: the administration CLI (see the library for the program's structure).

fn main() -> std::process::ExitCode {
    forcelogoutctl::main_ctl()
}
