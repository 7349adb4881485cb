//! Listing the locks held now (`ListLocks`, `GET /locks`) against three regions
//! of real etcd with two shards: one prefix, in resource order across shards, a
//! page at a time; released locks disappear; a grant only one region holds is
//! not a lock; no majority is UNAVAILABLE.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use globallock_proto::agent::GrantRequest;
use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::v1::lock_service_client::LockServiceClient;
use globallock_proto::v1::{
    AcquireResponse, DescribeRequest, ListLocksRequest, ListLocksResponse, ReleaseRequest,
};
use globallock_protocol::clock::Clock;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::ring::HashRing;
use harness::{Cluster, ClusterOptions, acquire};
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

const TTL_MS: u64 = 30_000;

/// The ring the test cluster's coordinators and agents use.
fn ring() -> HashRing {
    HashRing::new(&["shard-0".to_owned(), "shard-1".to_owned()], 160).unwrap()
}

async fn list(
    client: &mut LockServiceClient<Channel>,
    prefix: &str,
    page_size: u32,
    page_token: &str,
) -> Result<ListLocksResponse, tonic::Status> {
    client
        .list_locks(ListLocksRequest {
            prefix: prefix.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every page of a gRPC listing, followed to the end.
async fn all_pages(
    client: &mut LockServiceClient<Channel>,
    prefix: &str,
    page_size: u32,
) -> Vec<ListLocksResponse> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(client, prefix, page_size, &token).await.unwrap();
        assert!(
            page.locks.len() <= page_size as usize,
            "a page holds at most page_size locks: {page:?}"
        );
        token = page.next_page_token.clone();
        pages.push(page);
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 50, "the listing never ends");
    }
}

fn resources(pages: &[ListLocksResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.locks.iter().map(|l| l.resource.clone()))
        .collect()
}

/// GET one REST page; `path` is percent-encoded.
async fn rest_page(cluster: &Cluster, path: &str) -> Value {
    let response = cluster
        .http(cluster.rest_addrs[0], "GET", path, &[], None)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_locks_are_listed_by_prefix_in_pages_across_shards_over_grpc_and_rest()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let mut client = cluster.client(0).await?;

    let orders: Vec<String> = (1..=7)
        .map(|i| format!("orders/{i}"))
        .chain(["orders/eu west/ü".to_owned()])
        .collect();
    let ring = ring();
    let shards: BTreeSet<&str> = orders.iter().map(|r| ring.shard_for(r)).collect();
    assert_eq!(shards.len(), 2, "the orders must span both shards");
    // Under another prefix, and names that start "orders" without the "/".
    let others = ["jobs/a", "jobs/b", "orders", "ordersX"];
    let mut held: BTreeMap<String, AcquireResponse> = BTreeMap::new();
    for (i, resource) in orders.iter().map(String::as_str).chain(others).enumerate() {
        let lock = client
            .acquire(acquire(resource, &format!("owner-{i}"), TTL_MS, 0))
            .await?
            .into_inner();
        held.insert(resource.to_owned(), lock);
    }
    let mut expected: Vec<String> = orders.clone();
    expected.sort();

    // One page with every lock under the prefix, in resource order, as acquired.
    let page = list(&mut client, "orders/", 0, "").await?;
    assert_eq!(resources(std::slice::from_ref(&page)), expected);
    assert_eq!(page.next_page_token, "", "everything fit on the first page");
    for listed in &page.locks {
        let lock = &held[&listed.resource];
        assert_eq!(listed.owner, lock.owner);
        assert_eq!(listed.fencing_token, lock.fencing_token);
        assert!(
            listed.expires_in_ms > 20_000 && listed.expires_in_ms <= TTL_MS + 1_000,
            "{listed:?}"
        );
        assert!(listed.granted_regions.len() >= 2, "{listed:?}");
    }

    // Small pages: the same locks, each once, over several pages.
    let pages = all_pages(&mut client, "orders/", 3).await;
    assert!(pages.len() >= 3, "{pages:?}");
    assert_eq!(resources(&pages), expected);

    // Every prefix: everything.
    let mut everything: Vec<String> = held.keys().cloned().collect();
    everything.sort();
    assert_eq!(resources(&all_pages(&mut client, "", 4).await), everything);

    // REST: the same locks, without lock ids.
    let body = rest_page(&cluster, "/locks?prefix=orders%2F").await;
    let listed = body["locks"].as_array().unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|l| l["resource"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected);
    assert!(body.get("next_page_token").is_none(), "{body}");
    for lock in listed {
        let acquired = &held[lock["resource"].as_str().unwrap()];
        assert_eq!(lock["owner"], acquired.owner.as_str());
        assert_eq!(lock["fencing_token"], acquired.fencing_token);
        assert!(lock["expires_in_ms"].as_u64().unwrap() > 20_000, "{lock}");
        assert!(lock["granted_regions"].as_array().unwrap().len() >= 2);
        assert!(
            lock.get("lock_id").is_none(),
            "lock ids are not listed: {lock}"
        );
    }
    // REST pages, followed by their tokens; a prefix with a space and non-ASCII.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let body = rest_page(
            &cluster,
            &format!("/locks?prefix=orders/&limit=2&page_token={token}"),
        )
        .await;
        let page = body["locks"].as_array().unwrap();
        assert!(page.len() <= 2, "{body}");
        names.extend(
            page.iter()
                .map(|l| l["resource"].as_str().unwrap().to_owned()),
        );
        match body.get("next_page_token") {
            Some(next) => token = next.as_str().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(names, expected);
    let body = rest_page(&cluster, "/locks?prefix=orders%2Feu+west%2F%C3%BC").await;
    assert_eq!(body["locks"][0]["resource"], "orders/eu west/ü", "{body}");
    assert_eq!(body["locks"].as_array().unwrap().len(), 1, "{body}");

    // Released locks disappear at once.
    for resource in ["orders/2", "orders/5"] {
        client
            .release(ReleaseRequest {
                lock_id: held[resource].lock_id.clone(),
            })
            .await?;
    }
    let after: Vec<String> = expected
        .iter()
        .filter(|r| !["orders/2", "orders/5"].contains(&r.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        resources(&all_pages(&mut client, "orders/", 2).await),
        after
    );
    let body = rest_page(&cluster, "/locks?prefix=orders%2F&limit=1000").await;
    assert_eq!(
        body["locks"].as_array().unwrap().len(),
        after.len(),
        "{body}"
    );

    // Bad input names the field; nothing is read.
    for (bad, field) in [
        (list(&mut client, "orders/", 1_001, "").await, "page_size"),
        (
            list(&mut client, "orders/", 0, "not a token!").await,
            "page_token",
        ),
        (list(&mut client, "tab\there", 0, "").await, "prefix"),
    ] {
        let status = bad.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    for (path, field) in [
        ("/locks?limit=0", "limit"),
        ("/locks?limit=1001", "limit"),
        ("/locks?page_token=%2A%2A", "page_token"),
        ("/locks?prefix=a&prefix=b", "prefix"),
        ("/locks?prefx=orders", "prefx"),
    ] {
        let response = cluster
            .http(cluster.rest_addrs[0], "GET", path, &[], None)
            .await?;
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(response.json()["field"], field, "{path}: {}", response.body);
    }
    Ok(())
}

/// A grant that only one region holds (here written straight into region a's
/// agent, as a proposal that lost would leave it until its abort) is not a lock:
/// neither listed nor described. With two regions down, a listing cannot tell
/// and is UNAVAILABLE (503 over REST); with one down, it still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_grant_is_not_listed_and_no_majority_is_unavailable() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let mut client = cluster.client(0).await?;
    let held = client
        .acquire(acquire("minority/held", "alice", TTL_MS, 0))
        .await?
        .into_inner();

    let stray = "minority/stray";
    let mut agent = RegionAgentClient::new(cluster.agent_channel(0).await?);
    // A token the agent takes: its own clock's.
    let now_us = cluster.regions[0].clock.unix_micros();
    let granted = agent
        .grant(GrantRequest {
            shard: ring().shard_for(stray).to_owned(),
            resource: stray.into(),
            lock_id: LockId::new(7, stray).to_string(),
            owner: "stray".into(),
            fencing_token: now_us,
            ttl_ms: TTL_MS,
            request_id: "stray-1".into(),
            ring_epoch: 0,
            deadline_unix_ms: 0,
            principal: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(granted.vote(), globallock_proto::agent::Vote::Granted);

    let page = list(&mut client, "minority/", 0, "").await?;
    assert_eq!(resources(std::slice::from_ref(&page)), ["minority/held"]);
    assert_eq!(page.locks[0].fencing_token, held.fencing_token);
    let described = client
        .describe(DescribeRequest {
            resource: stray.into(),
        })
        .await?
        .into_inner();
    assert!(
        !described.held,
        "the listing and describe agree: {described:?}"
    );

    // One region down: a majority still answers for every shard.
    cluster.stop_region(2).await;
    let page = list(&mut client, "minority/", 0, "").await?;
    assert_eq!(resources(&[page]), ["minority/held"]);
    // Two down: no majority for any shard.
    cluster.stop_region(1).await;
    let refused = list(&mut client, "minority/", 0, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let response = cluster
        .http(
            cluster.rest_addrs[0],
            "GET",
            "/locks?prefix=minority%2F",
            &[],
            None,
        )
        .await?;
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(response.header("retry-after").is_some(), "{response:?}");
    assert!(
        response.json()["unreachable_regions"]
            .as_array()
            .is_some_and(|r| r.len() >= 2),
        "{}",
        response.body
    );
    Ok(())
}
