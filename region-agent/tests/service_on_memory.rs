//! The agent's gRPC service driven directly (no sockets, no etcd) over the
//! in-memory store: the checks the agent makes before it touches a store, and
//! how a store's answer goes over the wire.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use globallock_proto::agent::region_agent_server::RegionAgent;
use globallock_proto::agent::{
    AdoptRequest, GrantRequest, HealthRequest, ListRequest, LockRef, ReadRequest, RenewRequest,
    Vote as WireVote,
};
use globallock_protocol::lock_id::LockId;
use tonic::{Code, Request};

mod common;
use common::{Agent, NOW_US, OFFSET, RESOURCE, agent, lock_id, proposal};

async fn read(a: &Agent) -> globallock_proto::agent::ReadResponse {
    let request = ReadRequest {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
    };
    a.service
        .read(Request::new(request))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_vote_goes_over_the_wire_with_its_holder_and_the_mark_a_token_must_exceed() {
    let a = agent();
    let first = a
        .service
        .grant(Request::new(proposal(1, NOW_US)))
        .await
        .unwrap();
    assert_eq!(
        first.metadata().get("globallock-region").unwrap(),
        "region-a",
        "every answer names its region"
    );
    let first = first.into_inner();
    assert_eq!(first.vote(), WireVote::Granted);
    assert_eq!(first.holder.as_ref().unwrap().lock_id, lock_id(1));
    assert_eq!(first.high_water_mark, NOW_US);

    let held = a
        .service
        .grant(Request::new(proposal(2, NOW_US + 5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.vote(), WireVote::Held);
    assert_eq!(held.holder.unwrap().lock_id, lock_id(1));
    assert_eq!(
        held.high_water_mark, NOW_US,
        "the holder's token is the mark"
    );

    let lock = LockRef {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(1),
        principal: String::new(),
        force: false,
    };
    let released = a.service.release(Request::new(lock)).await.unwrap();
    assert!(released.into_inner().removed);
    let low = a
        .service
        .grant(Request::new(proposal(3, NOW_US)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (low.vote(), low.holder, low.high_water_mark),
        (WireVote::TokenTooLow, None, NOW_US)
    );
}

/// Hole 9: a proposal that arrives after its coordinator's deadline (beyond the
/// clock offset the agent allows) is refused and writes nothing.
#[tokio::test]
async fn regression_hole9_a_late_proposal_is_refused_and_writes_nothing() {
    let a = agent();
    let mut late = proposal(1, NOW_US);
    late.deadline_unix_ms = NOW_US / 1_000 - OFFSET.as_millis() as u64 - 1;
    let refused = a.service.grant(Request::new(late)).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
    let state = read(&a).await;
    assert_eq!((state.holder, state.high_water_mark), (None, 0));

    // Exactly at the allowed offset: still in time.
    let mut edge = proposal(2, NOW_US);
    edge.deadline_unix_ms = NOW_US / 1_000 - OFFSET.as_millis() as u64;
    let granted = a.service.grant(Request::new(edge)).await.unwrap();
    assert_eq!(granted.into_inner().vote(), WireVote::Granted);

    // And a proposal without a deadline (0) is not refused for lateness.
    a.clock.advance(Duration::from_secs(11));
    let mut none = proposal(3, NOW_US + 1);
    none.deadline_unix_ms = 0;
    let answer = a.service.grant(Request::new(none)).await.unwrap();
    assert_eq!(answer.into_inner().vote(), WireVote::Granted);
}

#[tokio::test]
async fn proposals_for_another_ring_epoch_or_shard_are_refused_before_the_store() {
    let a = agent();
    let mut other_epoch = proposal(1, NOW_US);
    other_epoch.ring_epoch = 7;
    let refused = a
        .service
        .grant(Request::new(other_epoch))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("ring epoch 7"),
        "{}",
        refused.message()
    );

    let mut misrouted = proposal(2, NOW_US);
    misrouted.shard = "shard-9".into();
    let refused = a.service.grant(Request::new(misrouted)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(read(&a).await.holder, None);
}

#[tokio::test]
async fn an_adopted_grant_survives_the_abort_of_the_round_that_made_it() {
    let a = agent();
    let first = a.service.grant(Request::new(proposal(1, NOW_US))).await;
    assert_eq!(first.unwrap().into_inner().vote(), WireVote::Granted);
    let adopt = AdoptRequest {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(1),
        request_id: "req-1".into(),
        ring_epoch: 0,
    };
    let adopted = a.service.adopt(Request::new(adopt)).await.unwrap();
    assert!(adopted.into_inner().adopted);
    let abort = LockRef {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(1),
        principal: String::new(),
        force: true,
    };
    let aborted = a.service.abort(Request::new(abort)).await.unwrap();
    assert!(!aborted.into_inner().removed);
    assert_eq!(read(&a).await.holder.unwrap().lock_id, lock_id(1));
}

#[tokio::test]
async fn a_store_that_is_down_makes_requests_unavailable_and_health_red() {
    let a = agent();
    a.store.set_down(true);
    let refused = a
        .service
        .grant(Request::new(proposal(1, NOW_US)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("down"), "{}", refused.message());
    let health = a
        .service
        .health(Request::new(HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!health.healthy);
    assert!(!health.shards[0].healthy);

    a.store.set_down(false);
    let health = a
        .service
        .health(Request::new(HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(health.healthy, "{health:?}");
}

fn list_request(prefix: &str, start_after: &str, limit: u32) -> ListRequest {
    ListRequest {
        shard: "shard-0".into(),
        prefix: prefix.into(),
        start_after: start_after.into(),
        limit,
    }
}

#[tokio::test]
async fn a_listing_goes_over_the_wire_in_pages_and_bad_bounds_are_refused_before_the_store() {
    let a = agent();
    let granted = a.service.grant(Request::new(proposal(1, NOW_US))).await;
    assert_eq!(granted.unwrap().into_inner().vote(), WireVote::Granted);
    let mut next = proposal(2, NOW_US);
    next.resource = "billing/invoice-8".into();
    next.lock_id = LockId::new(2, "billing/invoice-8").to_string();
    let granted = a.service.grant(Request::new(next)).await;
    assert_eq!(granted.unwrap().into_inner().vote(), WireVote::Granted);

    let answer = a
        .service
        .list(Request::new(list_request("billing/", "", 1)))
        .await
        .unwrap();
    assert_eq!(
        answer.metadata().get("globallock-region").unwrap(),
        "region-a"
    );
    let listing = answer.into_inner();
    assert!(listing.more, "the page stopped at its limit");
    assert_eq!(listing.grants.len(), 1);
    assert_eq!(listing.grants[0].resource, RESOURCE);
    let holder = listing.grants[0].holder.as_ref().unwrap();
    assert_eq!(
        (
            holder.lock_id.as_str(),
            holder.fencing_token,
            holder.remaining_ms
        ),
        (lock_id(1).as_str(), NOW_US, 10_000)
    );
    let rest = a
        .service
        .list(Request::new(list_request("billing/", RESOURCE, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.grants.len(), 1);
    assert_eq!(rest.grants[0].resource, "billing/invoice-8");
    assert!(!rest.more, "nothing after the last one");

    for (bad, field) in [
        (list_request("billing/", "", 0), "limit"),
        (list_request("billing/", "", 1_001), "limit"),
        (list_request("tab\t", "", 10), "prefix"),
        (list_request(&"x".repeat(257), "", 10), "prefix"),
        (list_request("", "nul\0", 10), "start_after"),
    ] {
        let refused = a.service.list(Request::new(bad)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
    let mut unknown = list_request("", "", 10);
    unknown.shard = "shard-9".into();
    let refused = a.service.list(Request::new(unknown)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    a.store.set_down(true);
    let refused = a
        .service
        .list(Request::new(list_request("", "", 10)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

/// A lock belongs to the principal that acquired it: another principal can
/// neither renew nor release it (PERMISSION_DENIED, nothing changes), an
/// admin's forced release can, and so can its own principal.
#[tokio::test]
async fn only_the_acquiring_principal_renews_or_releases_unless_forced() {
    let a = agent();
    let mut grant = proposal(1, NOW_US);
    grant.principal = "billing".into();
    let granted = a.service.grant(Request::new(grant)).await.unwrap();
    let granted = granted.into_inner();
    assert_eq!(granted.holder.unwrap().principal, "billing");
    let lock = |principal: &str, force: bool| LockRef {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(1),
        principal: principal.into(),
        force,
    };
    let renew = |principal: &str, force: bool| RenewRequest {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(1),
        ttl_ms: 20_000,
        principal: principal.into(),
        force,
    };
    for stranger in ["batch", ""] {
        let refused = a
            .service
            .release(Request::new(lock(stranger, false)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let refused = a
            .service
            .renew(Request::new(renew(stranger, false)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    assert_eq!(read(&a).await.holder.unwrap().lock_id, lock_id(1));
    let renewed = a
        .service
        .renew(Request::new(renew("billing", false)))
        .await
        .unwrap();
    assert!(renewed.into_inner().renewed);
    let forced = a
        .service
        .release(Request::new(lock("ops", true)))
        .await
        .unwrap();
    assert!(forced.into_inner().removed);
    assert_eq!(read(&a).await.holder, None);
}

fn release_of(n: u128, principal: &str) -> LockRef {
    LockRef {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(n),
        principal: principal.into(),
        force: false,
    }
}

async fn hand_off(
    a: &Agent,
    release: LockRef,
    grant: GrantRequest,
) -> (
    Result<globallock_proto::agent::RemoveResponse, tonic::Status>,
    Result<globallock_proto::agent::GrantResponse, tonic::Status>,
) {
    use globallock_proto::agent::HandOffRequest;
    use globallock_proto::agent::hand_off_response::{GrantResult, ReleaseResult};
    let answer = a
        .service
        .hand_off(Request::new(HandOffRequest {
            release: Some(release),
            grant: Some(grant),
        }))
        .await
        .unwrap()
        .into_inner();
    let released = match answer.release_result.unwrap() {
        ReleaseResult::Released(r) => Ok(r),
        ReleaseResult::ReleaseError(e) => Err(e.to_status()),
    };
    let granted = match answer.grant_result.unwrap() {
        GrantResult::Granted(g) => Ok(g),
        GrantResult::GrantError(e) => Err(e.to_status()),
    };
    (released, granted)
}

/// A hand-off answers its release and its grant as the two calls would: the
/// next lock holds the resource after one that was released; a part that a
/// check refuses (another principal's lock, a proposal past its deadline) is
/// refused with that call's status while the other part still happens; and a
/// hand-off across two resources is refused whole.
#[tokio::test]
async fn a_hand_off_answers_each_part_as_release_and_grant_would() {
    let a = agent();
    let mut first = proposal(1, NOW_US);
    first.principal = "billing".into();
    a.service.grant(Request::new(first)).await.unwrap();

    let (released, granted) = hand_off(&a, release_of(1, "batch"), proposal(2, NOW_US + 1)).await;
    assert_eq!(released.unwrap_err().code(), Code::PermissionDenied);
    let granted = granted.unwrap();
    assert_eq!(granted.vote(), WireVote::Held);
    assert_eq!(granted.holder.unwrap().lock_id, lock_id(1));

    let (released, granted) = hand_off(&a, release_of(1, "billing"), proposal(3, NOW_US + 2)).await;
    let released = released.unwrap();
    assert!(released.removed);
    assert_eq!(released.holder.unwrap().lock_id, lock_id(1));
    let granted = granted.unwrap();
    assert_eq!(granted.vote(), WireVote::Granted);
    assert_eq!(granted.high_water_mark, NOW_US + 2);
    assert_eq!(read(&a).await.holder.unwrap().lock_id, lock_id(3));

    // The next proposal is past its coordinator's deadline: refused as Grant
    // refuses it, and the release still happens.
    let mut late = proposal(4, NOW_US + 3);
    late.deadline_unix_ms = NOW_US / 1_000 - 10_000;
    let (released, granted) = hand_off(&a, release_of(3, ""), late).await;
    assert!(released.unwrap().removed);
    assert_eq!(granted.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(read(&a).await.holder.is_none());

    let mut elsewhere = proposal(5, NOW_US + 4);
    elsewhere.resource = "billing/other".into();
    let refused = a
        .service
        .hand_off(Request::new(globallock_proto::agent::HandOffRequest {
            release: Some(release_of(3, "")),
            grant: Some(elsewhere),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}
