//! Random identifiers: schedule Ids, EventIdentifier, SessionKey. 128 bits from the kernel,
//! written as a version-4 UUID so that other tools recognise them.

use crate::error::Error;

pub fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "reading random bytes for an id",
            std::io::Error::other(e.to_string()),
        )
    })?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// What a person may type to name a schedule: a whole Id or a unique prefix of at least 4
/// characters, like git's abbreviated hashes.
pub fn validate_id_prefix(text: &str) -> Result<String, Error> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.len() < 4
        || lower.len() > 36
        || !lower.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(Error::invalid(
            "id",
            format!("{:?} is not a schedule id (its first 4 or more characters, as `schedule list` shows)", crate::text::sanitize_line(text)),
        ));
    }
    Ok(lower)
}

/// A whole Id as a file names it (`apply`): a UUID in its 36-character text form.
pub fn validate_full_id(text: &str) -> Result<String, Error> {
    let lower = text.trim().to_ascii_lowercase();
    let shaped = lower.len() == 36
        && lower.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !shaped {
        return Err(Error::invalid(
            "id",
            format!(
                "{:?} is not a whole schedule id (a UUID such as `export` writes)",
                crate::text::sanitize_line(text)
            ),
        ));
    }
    Ok(lower)
}

/// An Id as a map key, compact: the 16 bytes of an Id in the form forcelogout writes them
/// (a lower-case hyphenated UUID), else the text itself (a row written by hand).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKey {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl IdKey {
    pub fn of(id: &str) -> IdKey {
        let canonical = id.len() == 36
            && id.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) if canonical => IdKey::Uuid(*uuid.as_bytes()),
            _ => IdKey::Text(id.into()),
        }
    }
}

/// forcelogout's namespace for name-based ids (RFC 9562 version 5), itself a random UUID.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f6c_7f3e_2a51_4c2b_9d0e_41a7_c3d8_5b90);

/// The Id for `name`: the same on every host and in every version, so a file applied on
/// many hosts gives its entries the same Ids everywhere.
pub fn derived_id(name: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_are_compact_only_for_the_form_forcelogout_writes() {
        let id = new_id().unwrap();
        assert!(matches!(IdKey::of(&id), IdKey::Uuid(_)));
        assert_ne!(IdKey::of(&id), IdKey::of(&new_id().unwrap()));
        // Upper case or braces name another Id in the table: they stay apart, as text.
        let upper = id.to_ascii_uppercase();
        assert_eq!(IdKey::of(&upper), IdKey::Text(upper.clone().into()));
        assert_ne!(IdKey::of(&upper), IdKey::of(&id));
        assert_eq!(IdKey::of("nightly"), IdKey::Text("nightly".into()));
    }

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(validate_id_prefix(&a).is_ok());
    }

    #[test]
    fn derived_ids_are_stable_whole_ids() {
        let a = derived_id("students 18:00");
        assert_eq!(a, derived_id("students 18:00"));
        assert_ne!(a, derived_id("students 18:01"));
        assert_eq!(&a[14..15], "5");
        assert_eq!(validate_full_id(&a).unwrap(), a);
        // The value is part of the file format: it must never change between versions.
        // (Checked against Python's uuid.uuid5 with the same namespace.)
        assert_eq!(derived_id(""), "4f01eaa4-0b12-5ac7-a78b-ee8caf6cfeb8");
    }

    #[test]
    fn whole_ids_are_checked() {
        assert!(validate_full_id(&new_id().unwrap()).is_ok());
        for bad in [
            "abcd",
            "6ef0b3c3-3ba7-5b2d-9c2e-9c1d4d2ba10",
            "6ef0b3c3x3ba7-5b2d-9c2e-9c1d4d2ba10d",
            "",
        ] {
            assert!(validate_full_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_id_prefix("abcd").is_ok());
        assert!(validate_id_prefix("ABCD").is_ok());
        for bad in ["abc", "", "xyz1", "abcd'; --", "a%bc"] {
            assert!(validate_id_prefix(bad).is_err(), "{bad}");
        }
    }
}
