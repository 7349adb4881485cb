//! The fencing-token ratchet.
//!
//! Safety does not live here: every region stores a per-resource high-water mark
//! and grants only a token strictly above it, inside the same etcd transaction
//! that writes the grant. Because any two majorities share a region, a later
//! holder's token is above an earlier holder's (see `docs/safety.md`).
//!
//! What lives here is how a stateless coordinator picks a token regions will
//! accept on the first try: the larger of the wall clock in microseconds (which
//! keeps tokens of successive holders ordered across coordinators without any
//! coordination) and one above the highest mark it has seen for the resource (which
//! repairs a clock that is behind after one rejected round).

use std::collections::HashMap;

/// Tokens stay below 2^53 so they survive JSON numbers and JavaScript clients.
pub const MAX_TOKEN: u64 = (1 << 53) - 1;

/// Remembered marks beyond this many resources are forgotten (they are only hints).
const MAX_REMEMBERED: usize = 65_536;

/// The token space is used up for a resource (a mark reached [`MAX_TOKEN`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fencing tokens for this resource are exhausted (mark {mark} reached the maximum {MAX_TOKEN})"
)]
pub struct TokensExhausted {
    /// The mark that was too high.
    pub mark: u64,
}

/// Picks fencing tokens for proposals.
#[derive(Debug, Default)]
pub struct TokenRatchet {
    /// Highest mark seen per resource (a hint, bounded in size).
    marks: HashMap<String, u64>,
    /// Highest token this ratchet proposed, for any resource.
    last_proposed: u64,
}

impl TokenRatchet {
    /// A ratchet that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token to propose next for `resource`, given the wall clock.
    pub fn propose(&mut self, resource: &str, unix_micros: u64) -> Result<u64, TokensExhausted> {
        let floor = self.marks.get(resource).copied().unwrap_or(0);
        let token = unix_micros
            .max(floor.saturating_add(1))
            .max(self.last_proposed.saturating_add(1));
        if token > MAX_TOKEN {
            return Err(TokensExhausted { mark: token - 1 });
        }
        self.last_proposed = token;
        Ok(token)
    }

    /// Remember that a region reported `mark` for `resource`.
    pub fn observe(&mut self, resource: &str, mark: u64) {
        if self.marks.len() >= MAX_REMEMBERED && !self.marks.contains_key(resource) {
            self.marks.clear();
        }
        let entry = self.marks.entry(resource.to_owned()).or_insert(0);
        *entry = (*entry).max(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_clock_when_it_is_ahead() {
        let mut ratchet = TokenRatchet::new();
        assert_eq!(ratchet.propose("r", 1_000), Ok(1_000));
        assert_eq!(ratchet.propose("r", 2_000), Ok(2_000));
    }

    #[test]
    fn never_proposes_twice_the_same_token_even_if_the_clock_stalls_or_jumps_back() {
        let mut ratchet = TokenRatchet::new();
        assert_eq!(ratchet.propose("r", 5_000), Ok(5_000));
        assert_eq!(ratchet.propose("r", 5_000), Ok(5_001));
        assert_eq!(ratchet.propose("r", 10), Ok(5_002));
    }

    #[test]
    fn climbs_above_an_observed_mark() {
        let mut ratchet = TokenRatchet::new();
        ratchet.observe("r", 9_000_000);
        assert_eq!(ratchet.propose("r", 1_000), Ok(9_000_001));
        // Lower marks seen later do not lower the floor.
        ratchet.observe("r", 5);
        assert_eq!(ratchet.propose("r", 1_000), Ok(9_000_002));
    }

    #[test]
    fn refuses_to_leave_the_json_safe_range() {
        let mut ratchet = TokenRatchet::new();
        ratchet.observe("r", MAX_TOKEN);
        assert_eq!(
            ratchet.propose("r", 1),
            Err(TokensExhausted { mark: MAX_TOKEN })
        );
    }

    #[test]
    fn max_token_is_exactly_two_to_the_53_minus_one() {
        assert_eq!(MAX_TOKEN, 9_007_199_254_740_991);
        // The largest integer a JSON/JavaScript double represents exactly.
        assert_eq!(MAX_TOKEN as f64 as u64, MAX_TOKEN);
        assert_ne!(
            (MAX_TOKEN + 2) as f64 as u64,
            MAX_TOKEN + 2,
            "2^53 + 1 is the first integer a double cannot hold"
        );
    }

    #[test]
    fn a_proposal_of_exactly_max_token_is_allowed_and_one_above_is_refused() {
        let mut ratchet = TokenRatchet::new();
        assert_eq!(ratchet.propose("r", MAX_TOKEN), Ok(MAX_TOKEN));
        // The next token would be MAX_TOKEN + 1, whatever the clock says.
        assert_eq!(
            ratchet.propose("r", 1),
            Err(TokensExhausted { mark: MAX_TOKEN })
        );
        let mut ratchet = TokenRatchet::new();
        assert_eq!(
            ratchet.propose("r", MAX_TOKEN + 1),
            Err(TokensExhausted { mark: MAX_TOKEN })
        );
    }

    #[test]
    fn observing_one_resource_keeps_the_marks_of_others() {
        let mut ratchet = TokenRatchet::new();
        ratchet.observe("a", 9_000_000);
        ratchet.observe("b", 5_000_000);
        assert_eq!(ratchet.propose("a", 1), Ok(9_000_001));
    }

    #[test]
    fn at_capacity_observing_a_known_resource_forgets_nothing() {
        let mut ratchet = TokenRatchet::new();
        for i in 0..MAX_REMEMBERED {
            ratchet.observe(&format!("r{i}"), 9_000_000);
        }
        assert_eq!(ratchet.marks.len(), MAX_REMEMBERED);
        ratchet.observe("r0", 9_500_000);
        assert_eq!(ratchet.marks.len(), MAX_REMEMBERED);
        assert_eq!(ratchet.propose("r1", 1), Ok(9_000_001));
        assert_eq!(ratchet.propose("r0", 1), Ok(9_500_001));
    }

    #[test]
    fn at_capacity_observing_a_new_resource_forgets_the_old_marks() {
        let mut ratchet = TokenRatchet::new();
        for i in 0..MAX_REMEMBERED {
            ratchet.observe(&format!("r{i}"), 9_000_000);
        }
        ratchet.observe("new", 7_000_000);
        assert_eq!(ratchet.marks.len(), 1, "memory stays bounded");
        assert_eq!(ratchet.propose("new", 1), Ok(7_000_001));
        // The forgotten mark is only a hint: the ratchet still never goes back.
        assert_eq!(ratchet.propose("r1", 1), Ok(7_000_002));
    }
}
