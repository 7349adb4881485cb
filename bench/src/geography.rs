//! The WAN profile's geography: which place each region stands for, the round
//! trips between them (REFERENCE: us-east-1↔eu-west-1 ≈ 80 ms,
//! us-east-1↔us-west-2 ≈ 88 ms, us-west-2↔eu-west-1 ≈ 137 ms), and the delays
//! that put those round trips on loopback links.

use std::time::Duration;

/// The place each region (`region-a`, `region-b`, `region-c`, in that order)
/// stands for in the WAN profile.
pub const PLACES: [&str; 3] = ["us-east-1", "eu-west-1", "us-west-2"];

/// The region holding the stretched etcd's leader (moved there on start):
/// us-east-1, the best connected (its nearest follower is 80 ms away).
pub const LEADER_REGION: usize = 0;

/// The region of the WAN client outside the leader's region: us-west-2.
pub const REMOTE_REGION: usize = 2;

/// The round trip between regions `a` and `b` (zero within a region).
pub fn round_trip(a: usize, b: usize) -> Duration {
    let ms = match (a.min(b), a.max(b)) {
        (0, 1) => 80,
        (0, 2) => 88,
        (1, 2) => 137,
        _ => 0,
    };
    Duration::from_millis(ms)
}

/// The round trip from region `from` to the nearest majority of the three
/// regions: its own and the nearest other one. The floor for a 2-of-3 commit
/// started there.
pub fn nearest_majority(from: usize) -> Duration {
    (0..PLACES.len())
        .filter(|&r| r != from)
        .map(|r| round_trip(from, r))
        .min()
        .unwrap_or_default()
}

/// The one-way delay put on everything member `m` of the stretched etcd sends.
///
/// etcd's Raft messages from member `i` to member `j` travel on a stream that
/// `j` opened to `i` (an HTTP GET whose response body carries them), so they
/// cross the proxy in front of `i`'s peer port, as replies. With one proxy per
/// member, the delay of a message is therefore its *sender's*, and the round
/// trip between `i` and `j` is `out(i) + out(j)`. Solving that for the three
/// round trips gives each member's share: `(rtt(m,x) + rtt(m,y) - rtt(x,y)) / 2`
/// (15.5, 64.5 and 72.5 ms), which reproduces all three exactly.
pub fn peer_outbound(m: usize) -> Duration {
    let others: Vec<usize> = (0..PLACES.len()).filter(|&r| r != m).collect();
    let (x, y) = (others[0], others[1]);
    (round_trip(m, x) + round_trip(m, y)).saturating_sub(round_trip(x, y)) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_shares_reproduce_every_round_trip() {
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    assert_eq!(peer_outbound(a) + peer_outbound(b), round_trip(a, b));
                }
            }
        }
        assert_eq!(peer_outbound(0), Duration::from_micros(15_500));
    }

    #[test]
    fn nearest_majority_is_the_nearest_other_region() {
        assert_eq!(nearest_majority(0), Duration::from_millis(80));
        assert_eq!(nearest_majority(1), Duration::from_millis(80));
        assert_eq!(nearest_majority(2), Duration::from_millis(88));
    }
}
