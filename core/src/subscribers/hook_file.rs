//! A hook opened for one run and checked through the descriptor that is then executed, so that
//! what was checked is what runs: renaming, swapping or relinking names in the directory
//! between the check and the run changes nothing.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Why a hook is not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Not there, or no longer a hook (not executable): as if removed.
    Missing,
    /// There, but not safe to run as root: why, for the log.
    Refused(String),
}

/// A hook's file, open (`O_PATH`: nothing is read, a FIFO or device is never opened) and
/// checked.
pub struct HookFile {
    file: File,
}

impl HookFile {
    /// Opens `path` and checks it, and its directory, as the daemon requires of a program it
    /// runs as root: the directory owned by root and not writable by group or others; the hook
    /// not a symbolic link (refused, not followed: its target and every directory on the way
    /// would need the same checks), a regular executable file owned by root and not writable
    /// by group or others.
    pub fn open(path: &Path) -> Result<HookFile, Unfit> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Unfit::Missing);
        };
        let dir = open_checked_dir(dir)?;
        // Looked up in the directory just checked (openat through /proc: the name resolves
        // in that directory even if it has been renamed or replaced since).
        let in_dir = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        let file = open_path(&in_dir, OFlag::O_NOFOLLOW).map_err(|e| missing_or(e, path))?;
        let meta = file
            .metadata()
            .map_err(|e| Unfit::Refused(format!("{}: {e}", path.display())))?;
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            return Err(Unfit::Refused(format!(
                "{} is a symbolic link: not run (put the program itself there, or a script that calls it)",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(Unfit::Refused(format!(
                "{} is not a regular file: not run",
                path.display()
            )));
        }
        if mode & 0o111 == 0 {
            return Err(Unfit::Missing);
        }
        refuse_unless_root_only(path, "", meta.uid(), mode)?;
        Ok(HookFile { file })
    }

    /// The path that executes exactly the checked file: this process's descriptor for it
    /// through /proc. Not /proc/self: a script's interpreter opens the path it is given,
    /// and in the child the descriptor is closed at exec (it is close-on-exec, so no other
    /// child of the daemon inherits it); the daemon's own entry stays open until the hook
    /// has ended. A script therefore sees this path as `$0`.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }
}

fn open_checked_dir(dir: &Path) -> Result<File, Unfit> {
    let file = open_path(dir, OFlag::O_DIRECTORY).map_err(|e| missing_or(e, dir))?;
    let meta = file
        .metadata()
        .map_err(|e| Unfit::Refused(format!("{}: {e}", dir.display())))?;
    refuse_unless_root_only(
        dir,
        "the hooks directory ",
        meta.uid(),
        meta.permissions().mode(),
    )?;
    Ok(file)
}

fn open_path(path: &Path, flags: OFlag) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_PATH | flags).bits())
        .open(path)
}

fn missing_or(e: std::io::Error, path: &Path) -> Unfit {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => Unfit::Missing,
        _ => Unfit::Refused(format!("{}: {e}", path.display())),
    }
}

fn refuse_unless_root_only(path: &Path, what: &str, uid: u32, mode: u32) -> Result<(), Unfit> {
    if uid != 0 {
        return Err(Unfit::Refused(format!(
            "{what}{} is owned by uid {uid}, not root: not run",
            path.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(Unfit::Refused(format!(
            "{what}{} is writable by group or others (mode {:o}): not run",
            path.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn program(path: &Path, says: &str, mode: u32) {
        std::fs::write(path, format!("#!/bin/sh\necho {says}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refused(path: &Path) -> String {
        match HookFile::open(path) {
            Err(Unfit::Refused(why)) => why,
            Err(Unfit::Missing) => panic!("{}: missing", path.display()),
            Ok(_) => panic!("{}: accepted", path.display()),
        }
    }

    #[test]
    #[ignore = "needs root: only files owned by root pass the checks"]
    fn what_was_checked_is_what_runs_and_unsafe_hooks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("10-hook");
        program(&hook, "checked", 0o755);
        let opened = HookFile::open(&hook).unwrap();
        // Swapped after the check: another program renamed over the name.
        let other = dir.path().join("other");
        program(&other, "swapped", 0o755);
        std::fs::rename(&other, &hook).unwrap();
        let out = Command::new(opened.exec_path()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "checked\n");

        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(refused(&hook).contains("writable by group or others (mode 775)"));
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&hook, Some(1), None).unwrap();
        assert!(refused(&hook).contains("owned by uid 1, not root"));
        std::os::unix::fs::chown(&hook, Some(0), None).unwrap();
        let link = dir.path().join("20-link");
        std::os::unix::fs::symlink(&hook, &link).unwrap();
        assert!(refused(&link).contains("is a symbolic link"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(refused(&hook).starts_with("the hooks directory "));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(HookFile::open(&hook).is_ok());

        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(HookFile::open(&hook), Err(Unfit::Missing)));
        assert!(matches!(
            HookFile::open(&dir.path().join("30-absent")),
            Err(Unfit::Missing)
        ));
    }
}
