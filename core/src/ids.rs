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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn prefixes_are_checked() {
        assert!(validate_id_prefix("abcd").is_ok());
        assert!(validate_id_prefix("ABCD").is_ok());
        for bad in ["abc", "", "xyz1", "abcd'; --", "a%bc"] {
            assert!(validate_id_prefix(bad).is_err(), "{bad}");
        }
    }
}
