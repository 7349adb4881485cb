//! The coordinator's end of the call stream to an agent (`coordinator::link`),
//! against a real agent service on a socket (in-memory store): a call the
//! coordinator stops waiting for is dropped at the agent before it writes, and
//! a stream that ended (the agent restarted) is replaced by the next call.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coordinator::link::AgentClient;
use globallock_proto::agent::region_agent_server::RegionAgentServer;
use globallock_proto::agent::{GrantRequest, Vote};
use globallock_protocol::clock::ManualClock;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::ring::HashRing;
use globallock_runtime::SharedShutdown;
use harness::eventually;
use region_agent::config::AgentLimits;
use region_agent::memory::MemoryStore;
use region_agent::service::AgentService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Request;
use tonic::transport::{Endpoint, Server};

const NOW_US: u64 = 1_700_000_000_000_000;
const RESOURCE: &str = "billing/invoice-7";
/// Long enough to mean "never" (a guard against a hang, not a timing).
const HANG: Duration = Duration::from_secs(60);

/// An agent serving `store` on `listener` until `stop` is sent.
fn serve(
    store: Arc<MemoryStore>,
    listener: TcpListener,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let clock = ManualClock::new(NOW_US);
    let ring = HashRing::new(&["shard-0".to_owned()], 160).unwrap();
    let limits = AgentLimits {
        max_ttl: Duration::from_secs(300),
        max_token_lead: Duration::from_secs(60),
        late_slack: Duration::from_secs(2),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = SharedShutdown::new(async move {
        let _ = stopped.await;
    });
    let service = AgentService::new("region-a", vec![store], ring, limits, clock)
        .with_shutdown(shutdown.clone());
    let server = tokio::spawn(
        Server::builder()
            .add_service(RegionAgentServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.signal()),
    );
    (stop, server)
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(
        "shard-0",
        ManualClock::new(NOW_US),
        Duration::from_secs(60),
    ))
}

fn client(address: SocketAddr) -> AgentClient {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    AgentClient::new(channel, "region-a", Duration::from_secs(30))
}

fn proposal(n: u128, token: u64) -> GrantRequest {
    GrantRequest {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: LockId::new(n, RESOURCE).to_string(),
        owner: "billing-worker".into(),
        fencing_token: token,
        ttl_ms: 10_000,
        request_id: format!("req-{n}"),
        ring_epoch: 0,
        deadline_unix_ms: 0,
        principal: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_coordinator_stops_waiting_for_is_dropped_at_the_agent() {
    let store = store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut agent = client(listener.local_addr().unwrap());
    let (_stop, _server) = serve(store.clone(), listener);
    store.hold_grants(true);

    let mut call = Box::pin(agent.grant(Request::new(proposal(1, NOW_US))));
    // Drive the call until the agent's store holds it.
    tokio::time::timeout(HANG, async {
        while store.grants_waiting() == 0 {
            tokio::select! {
                answer = &mut call => panic!("answered while the store held it: {answer:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await
    .expect("the call never reached the store");
    drop(call);
    eventually(
        HANG,
        "the agent drops the call its caller gave up",
        || async { (store.grants_waiting() == 0).then_some(()) },
    )
    .await;
    store.hold_grants(false);

    let next = agent
        .grant(Request::new(proposal(2, NOW_US + 5)))
        .await
        .unwrap();
    assert_eq!(
        next.metadata().get("globallock-region").unwrap(),
        "region-a",
        "a streamed answer names the region the stream was opened with"
    );
    let next = next.into_inner();
    assert_eq!(
        (next.vote(), next.holder.unwrap().lock_id),
        (Vote::Granted, LockId::new(2, RESOURCE).to_string()),
        "the dropped grant never landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ended_is_replaced_by_the_next_call() {
    let store = store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut agent = client(address);
    let (stop, server) = serve(store.clone(), listener);
    let first = agent
        .grant(Request::new(proposal(1, NOW_US)))
        .await
        .unwrap();
    assert_eq!(first.into_inner().vote(), Vote::Granted);

    // The agent shuts down (ending the stream) and comes back at the same address.
    stop.send(()).unwrap();
    tokio::time::timeout(HANG, server)
        .await
        .expect("the agent did not stop")
        .unwrap()
        .unwrap();
    let listener = TcpListener::bind(address).await.unwrap();
    let (_stop, _server) = serve(store.clone(), listener);

    // Calls on the old stream fail as calls on a broken connection do; the
    // next ones go over a new stream.
    let answer = eventually(HANG, "a call over a new stream", || {
        let mut agent = agent.clone();
        async move {
            agent
                .grant(Request::new(proposal(1, NOW_US)))
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    assert_eq!(
        (answer.vote(), answer.holder.unwrap().lock_id),
        (Vote::Granted, LockId::new(1, RESOURCE).to_string()),
        "the repeated proposal is offered its own grant"
    );
}
