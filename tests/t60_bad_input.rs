//! Every bad-input row of REFERENCE.md section 6 that applies to gRPC: a clear
//! INVALID_ARGUMENT (or NOT_FOUND) naming the field, nothing changed anywhere, and
//! the connection still usable afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use bytes::{Buf, BufMut};
use globallock_proto::v1::{AcquireRequest, DescribeRequest, ReleaseRequest, RenewRequest};
use harness::{Cluster, ClusterOptions, acquire};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

fn expect_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "message should name {field}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_rejected_naming_the_field_and_change_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut client = cluster.client(0).await?;

    let long = "x".repeat(257);
    for resource in [
        "",
        long.as_str(),
        "nul\0byte",
        "bell\u{7}",
        "a/../b",
        "..",
        "./x",
    ] {
        let status = client
            .acquire(acquire(resource, "o", 5_000, 0))
            .await
            .unwrap_err();
        expect_invalid(&status, "resource");
    }
    for owner in ["", "tab\towner", &"o".repeat(129)] {
        let status = client
            .acquire(acquire("r", owner, 5_000, 0))
            .await
            .unwrap_err();
        expect_invalid(&status, "owner");
    }
    for ttl in [0, 1, 999, 300_001, u64::MAX] {
        let status = client.acquire(acquire("r", "o", ttl, 0)).await.unwrap_err();
        expect_invalid(&status, "ttl_ms");
        assert!(
            status.message().contains("1000") && status.message().contains("300000"),
            "{}",
            status.message()
        );
    }
    let status = client
        .acquire(acquire("r", "o", 5_000, 60_001))
        .await
        .unwrap_err();
    expect_invalid(&status, "wait_ms");
    let mut bad_id = acquire("r", "o", 5_000, 0);
    bad_id.request_id = "has space".into();
    expect_invalid(&client.acquire(bad_id).await.unwrap_err(), "request_id");

    // Renew with an out-of-bounds TTL is rejected too (0 means "the granted TTL").
    let held = client
        .acquire(acquire("r", "owner", 5_000, 0))
        .await?
        .into_inner();
    let status = client
        .renew(RenewRequest {
            lock_id: held.lock_id.clone(),
            ttl_ms: 300_001,
        })
        .await
        .unwrap_err();
    expect_invalid(&status, "ttl_ms");

    // Malformed lock ids are INVALID_ARGUMENT; well-formed unknown ones NOT_FOUND.
    for lock_id in ["", "nope", "zz.cg", &format!("{}.", "0".repeat(32))] {
        let status = client
            .renew(RenewRequest {
                lock_id: lock_id.into(),
                ttl_ms: 5_000,
            })
            .await
            .unwrap_err();
        expect_invalid(&status, "lock_id");
        let status = client
            .release(ReleaseRequest {
                lock_id: lock_id.into(),
            })
            .await
            .unwrap_err();
        expect_invalid(&status, "lock_id");
    }
    // Someone else's lock: same resource, guessed id. Refused; the holder untouched.
    let forged = globallock_protocol::lock_id::LockId::new(42, "r").to_string();
    let status = client
        .release(ReleaseRequest {
            lock_id: forged.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .renew(RenewRequest {
            lock_id: forged,
            ttl_ms: 5_000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // None of the above changed anything: the only lock is still held by "owner",
    // and no rejected resource was ever locked.
    let described = client
        .describe(DescribeRequest {
            resource: "r".into(),
        })
        .await?
        .into_inner();
    assert!(described.held);
    assert_eq!(described.owner, "owner");
    assert_eq!(described.fencing_token, held.fencing_token);
    let status = client
        .describe(DescribeRequest {
            resource: "a/../b".into(),
        })
        .await
        .unwrap_err();
    expect_invalid(&status, "resource");
    Ok(())
}

/// Sends raw bytes as the request body, to hand the server malformed protobuf.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.chunk().to_vec();
        src.advance(bytes.len());
        Ok(Some(bytes))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_and_the_connection_stays_usable()
-> anyhow::Result<()> {
    use prost::Message;

    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let channel = cluster.coordinator_channel(0)?;
    let mut raw = tonic::client::Grpc::new(channel.clone());
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/globallock.v1.LockService/Acquire");

    let mut valid_then_garbage = AcquireRequest {
        resource: "x".into(),
        owner: "o".into(),
        ttl_ms: 5_000,
        ..Default::default()
    }
    .encode_to_vec();
    valid_then_garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
    // Field 1 (resource) with invalid UTF-8.
    let bad_utf8 = vec![0x0a, 0x02, 0xc3, 0x28];
    // A length prefix pointing past the end.
    let truncated = vec![0x0a, 0x7f, b'a'];
    for body in [valid_then_garbage, bad_utf8, truncated, vec![0xff; 16]] {
        raw.ready().await?;
        let status = raw
            .unary::<Vec<u8>, Vec<u8>, RawCodec>(
                tonic::Request::new(body.clone()),
                path.clone(),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{body:?}: {status:?}");
    }

    // The same connection still serves well-formed requests.
    let mut client = globallock_proto::v1::lock_service_client::LockServiceClient::new(channel);
    let granted = client
        .acquire(acquire("x", "o", 5_000, 0))
        .await?
        .into_inner();
    assert!(granted.fencing_token > 0);
    Ok(())
}

/// A grant proposal sent straight to region A's agent, as a coordinator would.
fn proposal(lock_id: &str, token: u64, ttl_ms: u64) -> globallock_proto::agent::GrantRequest {
    globallock_proto::agent::GrantRequest {
        shard: "shard-0".into(),
        resource: "agent/limits".into(),
        lock_id: lock_id.into(),
        owner: "coordinator-test".into(),
        fencing_token: token,
        ttl_ms,
        request_id: format!("req-{lock_id}"),
        ring_epoch: 0,
        deadline_unix_ms: 0,
        principal: String::new(),
    }
}

/// A client of region A's agent (as a coordinator would call it), and the time.
async fn region_a_agent(
    cluster: &Cluster,
) -> anyhow::Result<(
    globallock_proto::agent::region_agent_client::RegionAgentClient<tonic::transport::Channel>,
    u64,
)> {
    let agent = globallock_proto::agent::region_agent_client::RegionAgentClient::new(
        cluster.agent_channel(0).await?,
    );
    let now_us = globallock_protocol::clock::Clock::unix_micros(
        &globallock_protocol::clock::SystemClock::new(),
    );
    Ok((agent, now_us))
}

/// Holes 4 and 8: an agent refuses a TTL that could outlive its quarantine after
/// data loss (it accepted up to 24 h before), and a fencing token far above its
/// own wall clock (it accepted any nonzero token), and grants within its bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_agents_refuse_ttls_beyond_their_quarantine_and_runaway_tokens()
-> anyhow::Result<()> {
    let options = ClusterOptions::default();
    let quarantine_ms = options.quarantine_ms;
    let cluster = Cluster::start(options).await?;
    let (mut agent, now_us) = region_a_agent(&cluster).await?;
    let id = |n: u128| globallock_protocol::lock_id::LockId::new(n, "agent/limits").to_string();

    let long = agent
        .grant(proposal(&id(1), now_us, quarantine_ms))
        .await
        .unwrap_err();
    expect_invalid(&long, "ttl_ms");
    assert!(long.message().contains("quarantine"), "{}", long.message());

    let year_us = 365 * 24 * 3600 * 1_000_000;
    let runaway = agent
        .grant(proposal(&id(2), now_us + year_us, 5_000))
        .await
        .unwrap_err();
    assert_eq!(runaway.code(), Code::OutOfRange, "{runaway:?}");
    assert!(
        runaway.message().contains("fencing_token") && runaway.message().contains("clock"),
        "{}",
        runaway.message()
    );

    // Nothing was written: the resource is free and its mark untouched.
    let read = cluster.agent_read(0, "agent/limits").await?;
    assert_eq!((read.holder, read.high_water_mark), (None, 0));
    let ok = agent
        .grant(proposal(&id(3), now_us, 5_000))
        .await?
        .into_inner();
    assert_eq!(ok.high_water_mark, now_us);
    Ok(())
}

/// Hole 9: a proposal that reaches an agent after its coordinator stopped
/// waiting (its deadline, plus the slack the agent allows, has passed) is
/// refused with DEADLINE_EXCEEDED and writes nothing; one in time is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_hole9_a_grant_arriving_after_its_deadline_is_refused_not_applied()
-> anyhow::Result<()> {
    let options = ClusterOptions::default();
    let offset_ms = options.late_proposal_slack_ms;
    let cluster = Cluster::start(options).await?;
    let (mut agent, now_us) = region_a_agent(&cluster).await?;
    let id = |n: u128| globallock_protocol::lock_id::LockId::new(n, "agent/limits").to_string();
    let now_ms = now_us / 1_000;
    let late = globallock_proto::agent::GrantRequest {
        deadline_unix_ms: now_ms - offset_ms - 5_000,
        ..proposal(&id(1), now_us, 5_000)
    };
    let refused = agent.grant(late).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("after its coordinator's deadline"),
        "{}",
        refused.message()
    );
    let read = cluster.agent_read(0, "agent/limits").await?;
    assert_eq!((read.holder, read.high_water_mark), (None, 0));

    // Within the allowed offset (a coordinator clock a little behind): granted.
    let in_time = globallock_proto::agent::GrantRequest {
        deadline_unix_ms: now_ms - offset_ms / 2,
        ..proposal(&id(2), now_us, 5_000)
    };
    let granted = agent.grant(in_time).await?.into_inner();
    assert_eq!(
        granted.vote(),
        globallock_proto::agent::Vote::Granted,
        "{granted:?}"
    );
    Ok(())
}

/// Hole 8 end to end: a coordinator whose wall clock ran a year ahead gets no
/// lock (every region refuses its tokens, and the answer says why), and leaves
/// no mark behind that later holders would have to climb above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_coordinator_with_a_runaway_clock_gets_no_lock_and_leaves_no_mark()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let now_us = globallock_protocol::clock::Clock::unix_micros(
        &globallock_protocol::clock::SystemClock::new(),
    );
    let ahead = globallock_protocol::clock::ManualClock::new(now_us + 365 * 24 * 3600 * 1_000_000);
    let index = cluster.start_coordinator_with_clock(ahead).await?;
    let mut runaway = cluster.client(index).await?;
    let refused = runaway
        .acquire(acquire("ledger/runaway", "future", 5_000, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("fencing_token"),
        "{}",
        refused.message()
    );
    for r in 0..3 {
        assert_eq!(
            cluster
                .agent_read(r, "ledger/runaway")
                .await?
                .high_water_mark,
            0
        );
    }
    let mut client = cluster.client(0).await?;
    let granted = client
        .acquire(acquire("ledger/runaway", "present", 5_000, 0))
        .await?
        .into_inner();
    assert!(granted.fencing_token <= now_us + 3_600 * 1_000_000);
    Ok(())
}
