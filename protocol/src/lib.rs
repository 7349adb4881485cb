//! The lock protocol, with no I/O: every decision the coordinator and the region
//! agents make is computed here from events passed in, so it is tested without
//! sockets, etcd or sleeps.
//!
//! # Layout
//! - [`access`] — who is calling (certificate names, bearer tokens kept as
//!   SHA-256 digests) and what they may do (verbs per resource prefix).
//! - [`acquire`] — the acquire as a state machine: replies, aborts, time in;
//!   commands (mint, send, abort, back off, answer) out.
//! - [`quorum`] — the majority rule. Tallies of region replies for acquire, renew,
//!   release and read that decide as soon as the outcome is certain, and the
//!   same rule over a listing of a shard's grants.
//! - [`fence`] — the fencing-token ratchet (how a coordinator picks a token that
//!   regions will accept).
//! - [`validity`] — how long a caller may rely on a lock (ttl − elapsed − drift).
//! - [`expiry`] — rounding grants up to shared etcd lease buckets, never down.
//! - [`ring`] — the consistent-hash ring that routes a resource to a shard.
//! - [`membership`] — whether a region's shard may vote (serving above a floor,
//!   or quarantined), how it answers a refused proposal, and "renewal never
//!   shortens": the rules the etcd adapter applies.
//! - [`handover`] — a ring change: a shard serves a resource that moved onto it
//!   only after every lock of the old ring expired, and above a token floor.
//! - [`request`] — the rules for every input field, with errors naming the bounds.
//! - [`lock_id`] — the opaque, URL-safe lock id that also routes renew/release.
//! - [`listing`] — listing the locks held now: the opaque page token, and one
//!   page in resource order from every shard's part (whose majority rule is
//!   [`quorum::decide_list`]).
//! - [`backoff`] — jittered retry delays while waiting for a held resource.
//! - [`rate`] — per-client token buckets (a flooding client is refused, others not).
//! - [`clock`] — the only way the services read time, so tests can move it.
//! - [`audit`] — audit records, and "who held this resource, when" from them.
//! - [`store`] — what an agent needs from a shard's store ([`store::LockStore`]),
//!   and [`store::Vote`], a region's answer to a proposal, from the store to the
//!   tally; [`record`] — the grant record a store keeps.

pub mod access;
pub mod acquire;
pub mod audit;
pub mod backoff;
pub mod clock;
pub mod expiry;
pub mod fence;
pub mod handover;
pub mod listing;
pub mod lock_id;
pub mod membership;
pub mod quorum;
pub mod rate;
pub mod record;
pub mod request;
pub mod ring;
pub mod store;
pub mod validity;

/// Number of regions a lock is proposed to. The quorum rule is written for any
/// odd count, but the deployment shape (and every test) uses three.
pub const REGION_COUNT: usize = 3;
