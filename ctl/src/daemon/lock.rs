//! One daemon per store: an exclusive `flock` on `<store>-daemon.lock`, held for the daemon's
//! life and released by the kernel when it exits, however it exits. A second daemon on the
//! same store (started by hand beside the service, or with another configuration whose
//! sockets are elsewhere) would enforce every schedule twice and take the sockets from the
//! first: it stops before it does anything, naming the daemon that holds the store.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use forcelogout_core::Error;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock a running daemon holds on its store; dropped only when the process ends.
pub struct StoreLock {
    _held: Flock<File>,
}

/// The lock file of the store at `db`: beside it, in the store's root-owned directory.
pub fn path_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-daemon.lock");
    PathBuf::from(name)
}

impl StoreLock {
    /// Takes the store at `db` for this daemon, or says which daemon has it. Never waits.
    pub fn take(db: &Path) -> Result<StoreLock, Error> {
        let path = path_of(db);
        let fail =
            |what: &str, e: std::io::Error| Error::io(format!("{}: {what}", path.display()), e);
        // Root's alone: whoever may open it may hold it, and so keep every daemon from
        // starting. No symlink is followed (the directory is root's, but it costs nothing).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|e| fail("opening the daemon's lock", e))?;
        let meta = file
            .metadata()
            .map_err(|e| fail("reading the daemon's lock", e))?;
        if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(fail(
                "the daemon's lock is not a file of this user's",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail("making the daemon's lock root's alone", e))?;
        }
        let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "its pid unknown".to_string(),
                };
                return Err(Error::io(
                    format!("{}: another daemon is enforcing this store", db.display()),
                    std::io::Error::other(holder),
                ));
            }
            Err((_, errno)) => return Err(fail("locking the store for this daemon", errno.into())),
        };
        // Who holds it, for the next one's message; the lock, not this text, decides.
        let written = held
            .set_len(0)
            .and_then(|()| held.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(*held, "{}", std::process::id()));
        written.map_err(|e| fail("writing the daemon's pid", e))?;
        Ok(StoreLock { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_store_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let first = StoreLock::take(&db).expect("first");
        let refused = StoreLock::take(&db)
            .err()
            .expect("second refused")
            .to_string();
        assert!(
            refused.ends_with(&format!(
                "another daemon is enforcing this store: pid {}",
                std::process::id()
            )),
            "{refused}"
        );
        drop(first);
        StoreLock::take(&db).expect("free again once the first is gone");
    }

    #[test]
    fn a_lock_file_others_may_open_is_made_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        std::fs::write(path_of(&db), "").unwrap();
        std::fs::set_permissions(path_of(&db), std::fs::Permissions::from_mode(0o644)).unwrap();
        let _held = StoreLock::take(&db).expect("taken");
        let mode = std::fs::metadata(path_of(&db)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_lock_file_another_user_owns_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to give the file to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        std::fs::write(path_of(&db), "").unwrap();
        std::os::unix::fs::chown(path_of(&db), Some(65534), None).unwrap();
        let refused = StoreLock::take(&db).err().expect("refused").to_string();
        assert!(refused.contains("not a file of this user's"), "{refused}");
    }
}
