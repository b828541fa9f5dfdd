//! The store's files on disk: its directory and file created with the modes the security
//! model needs, and an older, more open store tightened.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::path_check::on_read_only_fs;
use super::{writable, READER_GROUP};
use crate::error::Error;

/// Creates the store's directory (0750, owned by root and group `adm` when we are root, so that
/// administrators reach the readers' copy inside it) and the file (0600, root's: whoever may open
/// a file of the live store may hold a lock that stops every write, see `reader_copy`). SQLite
/// gives the WAL and shared-memory files the database's mode and owner. A store opened read-write
/// by root that others may open (one from before the readers' copy) is tightened first.
pub(super) fn prepare_files(path: &Path, create_dir: bool) -> Result<(), Error> {
    let denied = |what: &str, e: std::io::Error| -> Error {
        if e.kind() == ErrorKind::PermissionDenied || e.raw_os_error() == Some(30) {
            Error::PermissionDenied {
                context: format!("{what} {}: {e}", path.display()),
            }
        } else {
            Error::io(format!("{what} {}", path.display()), e)
        }
    };
    let as_root = nix::unistd::geteuid().is_root();
    let reader_gid = || {
        nix::unistd::Group::from_name(READER_GROUP)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() && !create_dir {
            return Err(Error::io(
                format!("{}: the store's directory is missing", path.display()),
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| denied("creating the directory of", e))?;
            if as_root {
                std::os::unix::fs::chown(dir, Some(0), reader_gid())
                    .map_err(|e| denied("setting the owner of the directory of", e))?;
            }
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| denied("setting the mode of", e))?;
            if as_root {
                std::os::unix::fs::fchown(&file, Some(0), Some(0))
                    .map_err(|e| denied("setting the owner of", e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if writable(path) {
                if as_root {
                    make_root_only(path).map_err(|e| denied("making root's alone", e))?;
                }
                Ok(())
            } else if on_read_only_fs(path) {
                Err(Error::PermissionDenied {
                    context: format!(
                        "{}: the store is on a read-only file system; it can be read, not written",
                        path.display()
                    ),
                })
            } else {
                Err(Error::PermissionDenied {
                    context: format!("{}: the store is not writable by this user", path.display()),
                })
            }
        }
        Err(e) => Err(denied("creating the store", e)),
    }
}

/// The store's files (the database, and its WAL and shared memory where they exist) readable
/// and writable by root alone: group and other bits off, owner and group root.
fn make_root_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_os_string();
        file.push(suffix);
        let meta = match std::fs::metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.uid() != 0 || meta.gid() != 0 {
            std::os::unix::fs::chown(&file, Some(0), Some(0))?;
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(meta.mode() & 0o700))?;
        }
    }
    Ok(())
}
