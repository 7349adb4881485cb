//! Where things live in a shard's etcd keyspace.
//!
//! Resource names are hex-encoded into keys, so no name (with `/`, `..`, or
//! another prefix inside it) can reach a key outside its own slot.

/// The keys of one shard, all under one prefix.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// Common prefix, e.g. `/globallock/`.
    prefix: String,
}

impl KeyLayout {
    /// Keys under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The current grant of a resource (attached to a lease bucket).
    pub fn lock(&self, resource: &str) -> String {
        format!("{}lock/{}", self.prefix, hex::encode(resource))
    }

    /// The prefix of every grant key.
    pub fn lock_prefix(&self) -> String {
        format!("{}lock/", self.prefix)
    }

    /// The resource a grant key belongs to (the inverse of [`KeyLayout::lock`]).
    pub fn resource_of_lock(&self, key: &[u8]) -> Option<String> {
        let hex_name = key.strip_prefix(self.lock_prefix().as_bytes())?;
        String::from_utf8(hex::decode(hex_name).ok()?).ok()
    }

    /// The fencing-token high-water mark of a resource (never expires).
    pub fn fence(&self, resource: &str) -> String {
        format!("{}fence/{}", self.prefix, hex::encode(resource))
    }

    /// The prefix of every fencing-token mark.
    pub fn fence_prefix(&self) -> String {
        format!("{}fence/", self.prefix)
    }

    /// The resource a mark key belongs to (the inverse of [`KeyLayout::fence`]).
    pub fn resource_of_fence(&self, key: &[u8]) -> Option<String> {
        let hex_name = key.strip_prefix(self.fence_prefix().as_bytes())?;
        String::from_utf8(hex::decode(hex_name).ok()?).ok()
    }

    /// The shard's mark floor: every mark the sweeper deleted was at most this.
    /// A resource without a mark accepts only tokens above it, so collecting
    /// marks never lets a token go back.
    pub fn mark_floor(&self) -> String {
        format!("{}mark-floor", self.prefix)
    }

    /// The tombstone of an aborted lock id (expires after the tombstone TTL).
    pub fn tombstone(&self, lock_id: &str) -> String {
        format!("{}aborted/{lock_id}", self.prefix)
    }

    /// The shard's incarnation marker: written once when the shard is bootstrapped
    /// or rejoins after amnesia; its value is the token floor. Every grant requires
    /// it, so a shard whose data was wiped cannot grant.
    pub fn incarnation(&self) -> String {
        format!("{}incarnation", self.prefix)
    }

    /// A key read to prove the shard answers linearizable reads.
    pub fn health(&self) -> String {
        format!("{}health", self.prefix)
    }
}

/// A fencing token as stored: fixed-width decimal, so etcd's byte-wise value
/// comparison orders tokens numerically.
pub fn encode_token(token: u64) -> String {
    format!("{token:020}")
}

/// The inverse of [`encode_token`].
pub fn decode_token(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_encoding_orders_like_numbers() {
        let tokens = [0u64, 9, 10, 99, 100, 1_700_000_000_000_000, u64::MAX];
        for pair in tokens.windows(2) {
            assert!(encode_token(pair[0]) < encode_token(pair[1]));
        }
        for t in tokens {
            assert_eq!(decode_token(encode_token(t).as_bytes()), Some(t));
        }
    }

    #[test]
    fn grant_keys_keep_the_order_and_the_prefixes_of_resource_names() {
        let keys = KeyLayout::new("/globallock/");
        let names = ["", "a", "a/b", "a0", "b", "naïve", "ü", "\u{10ffff}"];
        for pair in names.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(keys.lock(pair[0]) < keys.lock(pair[1]), "{pair:?}");
        }
        assert!(keys.lock("a/b").starts_with(&keys.lock("a/")));
        assert!(!keys.lock("ab").starts_with(&keys.lock("a/")));
        for name in names {
            assert_eq!(
                keys.resource_of_lock(keys.lock(name).as_bytes()).as_deref(),
                Some(name)
            );
        }
        assert_eq!(keys.resource_of_lock(b"/globallock/lock/zz"), None);
        assert_eq!(keys.resource_of_lock(b"/globallock/fence/61"), None);
    }

    #[test]
    fn names_cannot_escape_their_slot() {
        let keys = KeyLayout::new("/globallock");
        let key = keys.lock("../../fence/x");
        assert!(key.starts_with("/globallock/lock/"));
        assert!(!key["/globallock/lock/".len()..].contains('/'));
    }
}
