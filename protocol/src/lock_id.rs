//! Lock ids: opaque to callers, but they carry the resource so that any stateless
//! coordinator can route a renew or release without a lookup.
//!
//! Format: `<32 lowercase hex digits of a random nonce>.<resource in unpadded
//! base64url>`. Both parts are URL-path-safe, so a lock id can sit in
//! `/locks/{lock_id}` as is.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::request::{self, InvalidInput};

/// A parsed lock id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockId {
    /// Random part: makes every proposal's id unique.
    nonce: u128,
    /// The resource the lock is on.
    resource: String,
}

impl LockId {
    /// The id of a new proposal on `resource`.
    pub fn new(nonce: u128, resource: impl Into<String>) -> Self {
        Self {
            nonce,
            resource: resource.into(),
        }
    }

    /// The locked resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:032x}.{}",
            self.nonce,
            URL_SAFE_NO_PAD.encode(self.resource.as_bytes())
        )
    }
}

impl FromStr for LockId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || {
            InvalidInput::new(
                "lock_id",
                "is not a lock id returned by Acquire (expected <32 hex digits>.<base64url resource>)",
            )
        };
        let (nonce, resource) = s.split_once('.').ok_or_else(malformed)?;
        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed());
        }
        let nonce = u128::from_str_radix(nonce, 16).map_err(|_| malformed())?;
        let bytes = URL_SAFE_NO_PAD.decode(resource).map_err(|_| malformed())?;
        let resource = String::from_utf8(bytes).map_err(|_| malformed())?;
        request::resource(&resource).map_err(|_| malformed())?;
        Ok(Self { nonce, resource })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_valid_resource() {
        for resource in ["orders/42", "with space", "naïve/ünïcødé", "a?b#c%d"] {
            let id = LockId::new(0xdead_beef, resource);
            let text = id.to_string();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            );
            assert_eq!(text.parse::<LockId>(), Ok(id));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "zz.b3JkZXJz",
            &format!("{:032x}.***", 1),
            &format!("{:032x}.", 1),
        ] {
            assert!(bad.parse::<LockId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lock_id_carries_its_resource_through_text_and_back() {
        let id = LockId::new(7, "orders/42");
        assert_eq!(id.resource(), "orders/42");
        let parsed: LockId = id.to_string().parse().expect("round trip");
        assert_eq!(parsed.resource(), "orders/42");
    }

    #[test]
    fn the_nonce_must_be_exactly_32_lowercase_hex_digits() {
        let resource = URL_SAFE_NO_PAD.encode("orders/42");
        let ok = format!("{}.{resource}", "0".repeat(32));
        assert!(ok.parse::<LockId>().is_ok());
        for nonce in [
            "1".to_owned(),
            "0".repeat(31),
            "0".repeat(33),
            "A".repeat(32),
            format!("+{}", "0".repeat(31)),
        ] {
            let text = format!("{nonce}.{resource}");
            let err = text.parse::<LockId>().expect_err(&text);
            assert_eq!(err.field, "lock_id");
        }
    }
}
