//! What the agent's tests over the in-memory store share: one region, one
//! shard, a manual clock, and proposals for one resource.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses its own part

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::agent::GrantRequest;
use globallock_protocol::clock::ManualClock;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::ring::HashRing;
use region_agent::config::AgentLimits;
use region_agent::memory::MemoryStore;
use region_agent::service::AgentService;

pub const NOW_US: u64 = 1_700_000_000_000_000;
pub const RESOURCE: &str = "billing/invoice-7";
pub const OFFSET: Duration = Duration::from_secs(2);

pub struct Agent {
    pub service: AgentService<MemoryStore>,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
}

pub fn agent() -> Agent {
    let clock = ManualClock::new(NOW_US);
    let store = Arc::new(MemoryStore::new(
        "shard-0",
        clock.clone(),
        Duration::from_secs(60),
    ));
    let ring = HashRing::new(&["shard-0".to_owned()], 160).unwrap();
    let limits = AgentLimits {
        max_ttl: Duration::from_secs(300),
        max_token_lead: Duration::from_secs(60),
        late_slack: OFFSET,
    };
    let service = AgentService::new("region-a", vec![store.clone()], ring, limits, clock.clone());
    Agent {
        service,
        store,
        clock,
    }
}

pub fn lock_id(n: u128) -> String {
    LockId::new(n, RESOURCE).to_string()
}

pub fn proposal(n: u128, token: u64) -> GrantRequest {
    GrantRequest {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(n),
        owner: "billing-worker".into(),
        fencing_token: token,
        ttl_ms: 10_000,
        request_id: format!("req-{n}"),
        ring_epoch: 0,
        deadline_unix_ms: NOW_US / 1_000 + 1_000,
        principal: String::new(),
    }
}
