//! Users as NSS knows them.

/// The name of the real uid, for the `Actor` column: who made the change, even under a
/// set-uid wrapper. An unnamed uid is written as `uid:N`.
pub fn real_user_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid:{}", uid.as_raw()),
    }
}

/// Whether NSS knows `name` as a user or as a group.
pub fn name_is_known(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
        || matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
}
