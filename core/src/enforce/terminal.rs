//! Writing a message to a user's terminals (SPEC §5.3): sanitised text only, to a character
//! device that belongs to the session's user, opened without following links, without
//! becoming our controlling terminal, and without ever blocking on it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::fcntl::OFlag;

use crate::text::sanitize_for_terminal;

/// `/dev/…` of a PAM_TTY value (`pts/3`, `/dev/pts/3`, `tty2`), or `None` for a name that is
/// not a terminal device (sshd's `ssh`, anything with `..`).
pub fn device_path(tty: &str) -> Option<String> {
    let name = tty.strip_prefix("/dev/").unwrap_or(tty);
    let plausible = (name.starts_with("pts/") || name.starts_with("tty"))
        && !name.contains("..")
        && name.len() < 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/');
    plausible.then(|| format!("/dev/{name}"))
}

/// Writes `text` to the terminal at `path` if it is a character device owned by `uid`.
/// Returns whether anything was written.
pub fn write_to(path: &str, uid: u32, text: &str) -> bool {
    let flags = OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits())
        .open(path)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_char_device() || meta.uid() != uid {
        return false;
    }
    // Raw-mode programs (editors) do not translate \n: end lines with \r\n ourselves.
    let body = sanitize_for_terminal(text).replace('\n', "\r\n");
    let framed = format!("\r\n\u{7}*** forcelogout ***\r\n{body}\r\n");
    // Non-blocking: a terminal whose output is stopped (^S) gets what fits, never a hang.
    file.write_all(framed.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths() {
        assert_eq!(device_path("pts/3").as_deref(), Some("/dev/pts/3"));
        assert_eq!(device_path("/dev/pts/3").as_deref(), Some("/dev/pts/3"));
        assert_eq!(device_path("tty2").as_deref(), Some("/dev/tty2"));
        for bad in ["ssh", "", "pts/../sda", "/etc/passwd", "pts/3 x", ":0"] {
            assert_eq!(device_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_character_devices_of_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pts");
        std::fs::write(&file, "").unwrap();
        assert!(
            !write_to(file.to_str().unwrap(), 0, "x"),
            "a regular file is not a terminal"
        );
        assert!(!write_to("/dev/null", 12345, "x"), "not the user's device");
    }
}
