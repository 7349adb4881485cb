//! The consistent-hash ring that routes a resource to a shard.
//!
//! Built only from the shard names in configuration, with a hash that is fixed
//! here (FNV-1a 64 finished by the splitmix64 mixer), so every coordinator and
//! every agent computes the same shard for a resource on any platform and in any
//! version. Each shard owns `vnodes` points; a resource belongs to the first point
//! at or after its hash. Adding a shard moves only the resources that now fall on
//! the new shard's points: about 1/(N+1) of them.

/// Points per shard unless configured otherwise.
pub const DEFAULT_VNODES: u32 = 160;

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// No shards at all.
    #[error("the ring needs at least one shard")]
    Empty,
    /// The same shard named twice.
    #[error("shard {0:?} is listed twice")]
    Duplicate(String),
    /// A shard with an empty name.
    #[error("shard names must not be empty")]
    EmptyName,
    /// Zero points per shard.
    #[error("vnodes must be at least 1")]
    NoVnodes,
}

/// A consistent-hash ring over shard names.
#[derive(Debug, Clone)]
pub struct HashRing {
    /// (point, index into `shards`), sorted by point.
    points: Vec<(u64, usize)>,
    /// Shard names in configuration order.
    shards: Vec<String>,
}

impl HashRing {
    /// Build a ring over `shards` with `vnodes` points each.
    pub fn new(shards: &[String], vnodes: u32) -> Result<Self, RingError> {
        if shards.is_empty() {
            return Err(RingError::Empty);
        }
        if vnodes == 0 {
            return Err(RingError::NoVnodes);
        }
        let mut seen = std::collections::HashSet::new();
        for shard in shards {
            if shard.is_empty() {
                return Err(RingError::EmptyName);
            }
            if !seen.insert(shard.as_str()) {
                return Err(RingError::Duplicate(shard.clone()));
            }
        }
        let mut points = Vec::with_capacity(shards.len() * vnodes as usize);
        for (index, shard) in shards.iter().enumerate() {
            for vnode in 0..vnodes {
                points.push((hash(format!("{shard}#{vnode}").as_bytes()), index));
            }
        }
        // Ties (astronomically rare) are broken by shard name, so the order does
        // not depend on the order of the configuration list.
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| shards[a.1].cmp(&shards[b.1])));
        Ok(Self {
            points,
            shards: shards.to_vec(),
        })
    }

    /// The shard that owns `resource`.
    pub fn shard_for(&self, resource: &str) -> &str {
        let h = hash(resource.as_bytes());
        let at = self.points.partition_point(|(point, _)| *point < h);
        let (_, index) = self.points[at % self.points.len()];
        &self.shards[index]
    }

    /// The shard names, in configuration order.
    pub fn shards(&self) -> &[String] {
        &self.shards
    }
}

/// The ring's hash: FNV-1a 64 with a splitmix64 finish (FNV alone clusters short,
/// similar keys such as `shard-1#7`).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_ORDERS_42: u64 = 14_326_212_944_499_332_778;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shard-{i}")).collect()
    }

    fn ring(n: usize) -> HashRing {
        HashRing::new(&names(n), DEFAULT_VNODES).expect("valid ring")
    }

    #[test]
    fn hash_is_pinned() {
        // If this changes, every deployed resource moves shard: never change it.
        assert_eq!(hash(b"orders/42"), PINNED_ORDERS_42);
        assert_ne!(hash(b"orders/42"), hash(b"orders/43"));
    }

    #[test]
    fn routing_does_not_depend_on_config_order() {
        let forward = ring(5);
        let mut reversed_names = names(5);
        reversed_names.reverse();
        let reversed = HashRing::new(&reversed_names, DEFAULT_VNODES).expect("valid");
        for i in 0..2_000 {
            let r = format!("resource-{i}");
            assert_eq!(forward.shard_for(&r), reversed.shard_for(&r));
        }
    }

    #[test]
    fn load_is_roughly_even() {
        let ring = ring(4);
        let mut counts = std::collections::HashMap::new();
        let total = 40_000;
        for i in 0..total {
            *counts
                .entry(ring.shard_for(&format!("r/{i}")).to_owned())
                .or_insert(0) += 1;
        }
        for (shard, count) in counts {
            let share = f64::from(count) / f64::from(total);
            assert!((0.18..0.32).contains(&share), "{shard} got {share}");
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one_and_only_to_it() {
        for n in [1usize, 2, 3, 5, 8] {
            let before = ring(n);
            let after = ring(n + 1);
            let new_shard = format!("shard-{n}");
            let total = 20_000u32;
            let mut moved = 0u32;
            for i in 0..total {
                let r = format!("account/{i}");
                let (a, b) = (before.shard_for(&r), after.shard_for(&r));
                if a != b {
                    assert_eq!(b, new_shard, "{r} moved between two old shards");
                    moved += 1;
                }
            }
            let share = f64::from(moved) / f64::from(total);
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - ideal).abs() < ideal * 0.25,
                "n={n}: moved {share:.3}, ideal {ideal:.3}"
            );
        }
    }

    #[test]
    fn rejects_bad_configs() {
        assert_eq!(HashRing::new(&[], 8).unwrap_err(), RingError::Empty);
        assert_eq!(
            HashRing::new(&names(2), 0).unwrap_err(),
            RingError::NoVnodes
        );
        let dup = vec!["a".to_owned(), "a".to_owned()];
        assert_eq!(
            HashRing::new(&dup, 8).unwrap_err(),
            RingError::Duplicate("a".into())
        );
    }

    #[test]
    fn a_resource_hashing_exactly_onto_a_point_belongs_to_that_points_shard() {
        // A point is the hash of "<shard>#<vnode>", so a resource with that very
        // name lands exactly on it, and "at or after" means it is that shard's.
        let ring = ring(3);
        for shard in names(3) {
            for vnode in 0..DEFAULT_VNODES {
                let resource = format!("{shard}#{vnode}");
                assert_eq!(ring.shard_for(&resource), shard, "{resource}");
            }
        }
    }

    #[test]
    fn shards_lists_the_configured_names_in_configuration_order() {
        let configured = vec!["zeta".to_owned(), "alpha".to_owned(), "mu".to_owned()];
        let ring = HashRing::new(&configured, 4).expect("valid");
        assert_eq!(ring.shards(), configured.as_slice());
    }
}
