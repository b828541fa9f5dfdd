//! A host's secret (SPEC §9, "Identity and enrolment"): 32 random bytes, written as 64 hex
//! digits in a file only the link's user may read. The central database keeps its SHA-256.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Error;

/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;

/// A new secret, as the text hosts keep and send.
pub fn new_secret() -> Result<String, Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io("generating a secret", std::io::Error::other(e.to_string())))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `text` is a secret's form (64 hex digits): a wrong file named by mistake (a
/// passfile, a key) is caught here rather than as "wrong secret" at the server.
fn is_secret(text: &str) -> bool {
    text.len() == SECRET_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the secret file: it must belong to the effective user and be readable by it alone
/// (it is the host's identity: whoever reads it may speak for the host).
pub fn read_secret(path: &Path) -> Result<String, Error> {
    let bad = |reason: String| Error::invalid("fleet.secret_file", reason);
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(bad(format!(
            "{} belongs to uid {}, not to the link's user (uid {euid})",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "{} may be read by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let secret = text.trim();
    if !is_secret(secret) {
        return Err(bad(format!(
            "{} does not hold a secret (64 hex digits, as fleet enrol writes it)",
            path.display()
        )));
    }
    Ok(secret.to_ascii_lowercase())
}

/// Writes a new secret file, mode 0600 from its creation; an existing file is never replaced.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), Error> {
    let bad = |e: std::io::Error| Error::invalid("secret-file", format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(bad)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_written_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.secret");
        let secret = new_secret().unwrap();
        assert!(is_secret(&secret));
        assert_ne!(secret, new_secret().unwrap());
        write_secret(&path, &secret).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_secret(&path).unwrap(), secret);
        // Never replaced.
        assert!(write_secret(&path, &new_secret().unwrap()).is_err());
        assert_eq!(read_secret(&path).unwrap(), secret);
    }

    #[test]
    fn an_open_or_wrong_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, format!("{}\n", new_secret().unwrap())).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let wrong = dir.path().join("wrong");
        write_secret(&wrong, "db:5432:fl:lab1:password").unwrap();
        for path in [open, wrong, dir.path().join("missing")] {
            match read_secret(&path) {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "fleet.secret_file");
                    assert!(!reason.contains('\n'));
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }
}
