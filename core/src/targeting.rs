//! Who a schedule hits (SPEC §3): a user is targeted when GroupName is the user's name, a group
//! the user is in (NSS: local, LDAP, SSSD alike), or `*`. uid 0 and members of the exempt
//! groups are spared unless the schedule names the user itself.

use std::ffi::CString;

use crate::error::Error;

/// A user as NSS knows them, with every group they are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targeted {
    /// The schedule applies to this user.
    Yes,
    /// It does not name the user or any of their groups.
    No,
    /// It would, but the user is exempt (uid 0 or an exempt group) and not named.
    Exempt,
}

impl Identity {
    /// Resolves a user and their groups through NSS; `None` for a name NSS does not know.
    pub fn lookup(name: &str) -> Result<Option<Identity>, Error> {
        let user = match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => user,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::io(format!("looking up user {name}"), e.into())),
        };
        let c_name =
            CString::new(name).map_err(|_| Error::invalid("user", "contains a NUL byte"))?;
        let gids = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(|e| Error::io(format!("looking up the groups of {name}"), e.into()))?;
        let groups = gids
            .into_iter()
            .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
            .map(|g| g.name)
            .collect();
        Ok(Some(Identity {
            name: user.name,
            uid: user.uid.as_raw(),
            groups,
        }))
    }

    pub fn targeted_by(&self, group_name: &str, exempt_groups: &[String]) -> Targeted {
        if group_name == self.name {
            return Targeted::Yes;
        }
        let covered = group_name == "*" || self.groups.iter().any(|g| g == group_name);
        if !covered {
            return Targeted::No;
        }
        if self.uid == 0 || self.groups.iter().any(|g| exempt_groups.contains(g)) {
            Targeted::Exempt
        } else {
            Targeted::Yes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32, groups: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            uid,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn names_groups_and_everyone() {
        let alice = user("alice", 1000, &["alice", "students"]);
        let exempt = vec!["sudo".to_string()];
        assert_eq!(alice.targeted_by("alice", &exempt), Targeted::Yes);
        assert_eq!(alice.targeted_by("students", &exempt), Targeted::Yes);
        assert_eq!(alice.targeted_by("*", &exempt), Targeted::Yes);
        assert_eq!(alice.targeted_by("staff", &exempt), Targeted::No);
    }

    #[test]
    fn root_and_exempt_groups_are_spared_unless_named() {
        let exempt = vec!["sudo".to_string()];
        let root = user("root", 0, &["root"]);
        assert_eq!(root.targeted_by("*", &exempt), Targeted::Exempt);
        assert_eq!(root.targeted_by("root", &exempt), Targeted::Yes);
        let admin = user("ann", 1001, &["ann", "sudo", "students"]);
        assert_eq!(admin.targeted_by("students", &exempt), Targeted::Exempt);
        assert_eq!(admin.targeted_by("ann", &exempt), Targeted::Yes);
    }

    #[test]
    fn nss_lookup_of_real_users() {
        let root = Identity::lookup("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert!(root.groups.iter().any(|g| g == "root"));
        assert!(Identity::lookup("no-such-user-forcelogout")
            .unwrap()
            .is_none());
    }
}
