//! Which hooks are in the hooks directory, and so which hook cursors exist.
//!
//! The rule: **a cursor belongs to one hook, for as long as the daemon sees that hook in the
//! directory.**
//! - A hook that appears while the daemon runs (new, put back after a removal, or another
//!   program under a removed hook's name) starts at the current end of the log: it is given
//!   the events that happen from then on, never history, as a new subscriber always has been.
//!   Whoever puts a program there chooses it for what happens next, and a hook that already
//!   got an event must not act on it twice (revoke a token again, page someone again).
//! - A hook seen gone (removed, renamed away, or no longer executable: run-parts(8) would not
//!   run it either) has its cursor forgotten at once; events while it is gone are not kept
//!   for it.
//! - A hook replaced in one step (rewritten in place, or renamed over) is the same hook,
//!   edited: it keeps its cursor, so fixing a failing hook loses none of its pending events.
//! - Across a restart of the daemon: a hook still there keeps its cursor (nothing is lost); a
//!   hook removed while the daemon was down has its cursor forgotten at start-up.
//!
//! A removal is seen when the daemon scans the directory, which it does at once when the
//! directory changes (inotify) and at start-up. A hook removed and put back faster than a
//! scan (or while the daemon is down) counts as edited: it continues from where it was, so it
//! never goes back to events it got, and a program put in its place gets at most what the old
//! one was still owed. A hook that fails the run-time checks (owner, mode) is still there: it
//! keeps its cursor and is given what it missed once fixed.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::store::Store;

const PREFIX: &str = "hook:";

/// The name of the cursor of the hook at `path`.
pub fn hook_name(path: &Path) -> String {
    format!("{PREFIX}{}", path.display())
}

/// The hooks in `dir`, as run-parts(8) would pick them: names of letters, digits, `_` and
/// `-`, executable files. Symbolic links are listed too (they are refused at each run, and
/// logged, rather than silently skipped). No directory: no hooks.
pub fn list_hooks(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(BTreeSet::new())
        }
        Err(e) => return Err(e),
    };
    let mut hooks = BTreeSet::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let proper_name = !name.is_empty()
            && name
                .as_encoded_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        let Ok(meta) = entry.metadata() else {
            continue; // gone since it was listed
        };
        let kind = meta.file_type();
        let runnable =
            kind.is_symlink() || (!kind.is_dir() && meta.permissions().mode() & 0o111 != 0);
        if proper_name && runnable {
            hooks.insert(entry.path());
        }
    }
    Ok(hooks)
}

/// The hooks as the daemon last saw them; brings the cursors in line with the directory.
pub struct Roster {
    dir: PathBuf,
    present: BTreeSet<PathBuf>,
    scanned: bool,
}

impl Roster {
    pub fn new(dir: PathBuf) -> Roster {
        Roster {
            dir,
            present: BTreeSet::new(),
            scanned: false,
        }
    }

    /// The hooks seen at the last scan, each with a cursor.
    pub fn present(&self) -> impl Iterator<Item = &PathBuf> {
        self.present.iter()
    }

    /// Looks at the directory and applies the rule to the cursors; whether a hook came or
    /// went. The first scan keeps the cursors of the hooks it finds (a restart loses nothing).
    pub fn scan(&mut self, store: &mut Store, log: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let listed = list_hooks(&self.dir)
            .map_err(|e| Error::io(format!("{}: listing the hooks", self.dir.display()), e))?;
        let first = !self.scanned;
        if first {
            self.forget_absent_cursors(store, &listed, log)?;
        }
        let gone: Vec<PathBuf> = self.present.difference(&listed).cloned().collect();
        let came: Vec<PathBuf> = listed.difference(&self.present).cloned().collect();
        for path in &gone {
            let name = hook_name(path);
            store.forget_subscriber(&name)?;
            self.present.remove(path);
            log(&format!(
                "{name}: gone from the hooks directory; its cursor is forgotten (if it comes back, it starts with new events)"
            ));
        }
        for path in &came {
            let name = hook_name(path);
            let cursor = if first {
                store.subscriber_cursor(&name)?
            } else {
                store.restart_subscriber(&name)?
            };
            self.present.insert(path.clone());
            log(&format!(
                "delivering events to {name} (those after ReplayId {cursor})"
            ));
        }
        self.scanned = true;
        Ok(!gone.is_empty() || !came.is_empty())
    }

    /// At start-up: the cursors of hooks removed while the daemon was down.
    fn forget_absent_cursors(
        &self,
        store: &mut Store,
        listed: &BTreeSet<PathBuf>,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let here: BTreeSet<String> = listed.iter().map(|p| hook_name(p)).collect();
        for name in store.subscriber_names()? {
            if name.starts_with(PREFIX) && !here.contains(&name) {
                store.forget_subscriber(&name)?;
                log(&format!(
                    "{name}: removed while the daemon was down; its cursor is forgotten"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Access, DEFAULT_BUSY_TIMEOUT};

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn cursors(store: &Store) -> Vec<String> {
        store.subscriber_names().unwrap()
    }

    #[test]
    fn cursors_follow_the_hooks_in_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let hooks = tmp.path().join("hooks.d");
        std::fs::create_dir(&hooks).unwrap();
        let mut store =
            Store::open(&tmp.path().join("db"), Access::Create, DEFAULT_BUSY_TIMEOUT).unwrap();
        let (a, b) = (hooks.join("10-a"), hooks.join("20-b"));
        executable(&a);
        executable(&b);
        std::fs::write(hooks.join("30-not-executable"), "").unwrap();
        std::fs::write(hooks.join("40.dpkg-old"), "").unwrap();
        // A cursor left by a hook removed while the daemon was down, and one kept.
        store
            .restart_subscriber(&hook_name(&hooks.join("05-old")))
            .unwrap();
        store.restart_subscriber(&hook_name(&a)).unwrap();
        store.advance_subscriber(&hook_name(&a), 0, 7).unwrap();
        let mut lines = Vec::new();
        let mut roster = Roster::new(hooks.clone());
        assert!(roster
            .scan(&mut store, &mut |l| lines.push(l.to_string()))
            .unwrap());
        assert_eq!(cursors(&store), vec![hook_name(&a), hook_name(&b)]);
        assert_eq!(
            store.existing_subscriber_cursor(&hook_name(&a)).unwrap(),
            Some(7)
        );
        assert!(
            lines[0].contains("05-old: removed while the daemon was down"),
            "{lines:?}"
        );

        // Removed: forgotten. Put back: at the end of the log, whatever it had.
        std::fs::remove_file(&a).unwrap();
        assert!(roster.scan(&mut store, &mut |_| {}).unwrap());
        assert_eq!(cursors(&store), vec![hook_name(&b)]);
        executable(&a);
        assert!(roster.scan(&mut store, &mut |_| {}).unwrap());
        assert_eq!(
            store.existing_subscriber_cursor(&hook_name(&a)).unwrap(),
            Some(0)
        );
        // An advance from the forgotten position is refused.
        assert!(!store.advance_subscriber(&hook_name(&a), 7, 8).unwrap());
        // No longer executable: as removed.
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(roster.scan(&mut store, &mut |_| {}).unwrap());
        assert_eq!(cursors(&store), vec![hook_name(&a)]);
        assert!(
            !roster.scan(&mut store, &mut |_| {}).unwrap(),
            "nothing changed"
        );
    }
}
