//! The agent's `Exchange` stream over a real socket (plaintext, in-memory
//! store): every call on it is answered as its unary call would be; a call
//! cancelled or past its timeout writes nothing; a shutdown answers the calls
//! in progress, then ends the stream and lets the server stop.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::agent::region_agent_server::{RegionAgent, RegionAgentServer};
use globallock_proto::agent::{
    Answer, Call, Cancel, HandOffRequest, LockRef, PartError, Vote as WireVote, answer, call,
};
use globallock_runtime::SharedShutdown;
use region_agent::memory::MemoryStore;
use region_agent::service::AgentService;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Request, Streaming};

mod common;
use common::{NOW_US, RESOURCE, agent, lock_id, proposal};

/// Long enough to mean "never" in the hang guards.
const HANG: Duration = Duration::from_secs(60);

/// An agent served on a free port.
struct Served {
    service: AgentService<MemoryStore>,
    store: Arc<MemoryStore>,
    client: RegionAgentClient<tonic::transport::Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn serve() -> Served {
    let common::Agent { service, store, .. } = agent();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = SharedShutdown::new(async move {
        let _ = stopped.await;
    });
    let service = service.with_shutdown(shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .add_service(RegionAgentServer::new(service.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.signal()),
    );
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        service,
        store,
        client: RegionAgentClient::new(channel),
        stop: Some(stop),
        server,
    }
}

/// One open `Exchange` stream.
struct Stream {
    calls: mpsc::UnboundedSender<Call>,
    answers: Streaming<Answer>,
    region: String,
}

impl Stream {
    async fn open(served: &Served) -> Self {
        let (calls, outgoing) = mpsc::unbounded_channel();
        let response = served
            .client
            .clone()
            .exchange(Request::new(UnboundedReceiverStream::new(outgoing)))
            .await
            .unwrap();
        let region = response
            .metadata()
            .get("globallock-region")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        Self {
            calls,
            answers: response.into_inner(),
            region,
        }
    }

    fn send(&self, id: u64, timeout_ms: u32, body: Option<call::Body>) {
        self.calls
            .send(Call {
                id,
                timeout_ms,
                traceparent: String::new(),
                body,
            })
            .unwrap();
    }

    async fn next(&mut self) -> (u64, answer::Body) {
        let answer = self.message().await.expect("the stream ended");
        (answer.id, answer.body.unwrap())
    }

    /// The next answer (`None`: the stream ended). A guard against a hang,
    /// not a timing: no test here waits on anything slow.
    async fn message(&mut self) -> Option<Answer> {
        tokio::time::timeout(HANG, self.answers.message())
            .await
            .expect("no answer and no end of stream")
            .unwrap()
    }

    /// Send call `id` and wait for its answer (the next one).
    async fn ask(&mut self, id: u64, body: call::Body) -> answer::Body {
        self.send(id, 0, Some(body));
        let (answered, body) = self.next().await;
        assert_eq!(answered, id, "answers carry their call's id");
        body
    }
}

fn lock(n: u128) -> LockRef {
    LockRef {
        shard: "shard-0".into(),
        resource: RESOURCE.into(),
        lock_id: lock_id(n),
        principal: String::new(),
        force: false,
    }
}

fn vote(body: answer::Body) -> (WireVote, Option<String>, u64) {
    let answer::Body::Grant(g) = body else {
        panic!("not a grant's answer: {body:?}");
    };
    (g.vote(), g.holder.map(|h| h.lock_id), g.high_water_mark)
}

fn refusal(body: answer::Body) -> PartError {
    let answer::Body::Error(e) = body else {
        panic!("not a refusal: {body:?}");
    };
    e
}

#[tokio::test]
async fn calls_on_one_stream_are_answered_as_their_unary_calls_would_be() {
    let served = serve().await;
    let mut stream = Stream::open(&served).await;
    assert_eq!(stream.region, "region-a", "the stream names its region");

    let granted = stream.ask(1, call::Body::Grant(proposal(1, NOW_US))).await;
    assert_eq!(vote(granted), (WireVote::Granted, Some(lock_id(1)), NOW_US));
    let held = stream
        .ask(2, call::Body::Grant(proposal(2, NOW_US + 5)))
        .await;
    assert_eq!(vote(held), (WireVote::Held, Some(lock_id(1)), NOW_US));

    let answer::Body::Removed(released) = stream.ask(3, call::Body::Release(lock(1))).await else {
        panic!("a release answers with what it removed");
    };
    assert!(released.removed);
    assert_eq!(released.holder.unwrap().lock_id, lock_id(1));
    let low = stream.ask(4, call::Body::Grant(proposal(3, NOW_US))).await;
    assert_eq!(vote(low), (WireVote::TokenTooLow, None, NOW_US));

    // A refusal is the status the unary call fails with, code and message.
    let bad = proposal(4, 0);
    let unary = served
        .service
        .grant(Request::new(bad.clone()))
        .await
        .unwrap_err();
    let streamed = refusal(stream.ask(5, call::Body::Grant(bad)).await);
    assert_eq!(streamed, PartError::from_status(&unary));
    assert_eq!(streamed.to_status().code(), Code::InvalidArgument);

    stream.send(6, 0, None);
    let (id, body) = stream.next().await;
    assert_eq!(id, 6);
    assert_eq!(refusal(body).to_status().code(), Code::InvalidArgument);

    let hand_off = HandOffRequest {
        release: Some(lock(3)),
        grant: Some(proposal(5, NOW_US + 10)),
    };
    let answer::Body::HandOff(handed) = stream.ask(7, call::Body::HandOff(hand_off)).await else {
        panic!("a hand-off answers both parts");
    };
    use globallock_proto::agent::hand_off_response::{GrantResult, ReleaseResult};
    let Some(ReleaseResult::Released(released)) = handed.release_result else {
        panic!("the release part is answered as a release");
    };
    assert!(!released.removed, "lock 3 was never granted");
    let Some(GrantResult::Granted(granted)) = handed.grant_result else {
        panic!("the grant part is answered as a grant");
    };
    assert_eq!(
        vote(answer::Body::Grant(granted)),
        (WireVote::Granted, Some(lock_id(5)), NOW_US + 10)
    );
    let answer::Body::Renew(renewed) = stream
        .ask(
            8,
            call::Body::Renew(globallock_proto::agent::RenewRequest {
                shard: "shard-0".into(),
                resource: RESOURCE.into(),
                lock_id: lock_id(5),
                ttl_ms: 20_000,
                principal: String::new(),
                force: false,
            }),
        )
        .await
    else {
        panic!("a renewal answers with the grant");
    };
    assert!(renewed.renewed);
    let answer::Body::Removed(aborted) = stream.ask(9, call::Body::Abort(lock(5))).await else {
        panic!("an abort answers with what it removed");
    };
    assert!(aborted.removed, "the abort removed the grant of lock 5");
}

#[tokio::test]
async fn a_cancelled_call_is_dropped_before_it_writes() {
    let served = serve().await;
    let mut stream = Stream::open(&served).await;
    served.store.hold_grants(true);
    stream.send(1, 0, Some(call::Body::Grant(proposal(1, NOW_US))));
    stream.send(1, 0, Some(call::Body::Cancel(Cancel {})));
    // Calls are taken in order: once this one is answered, the cancel was seen.
    let refused = refusal(stream.ask(2, call::Body::Grant(proposal(2, 0))).await);
    assert_eq!(refused.to_status().code(), Code::InvalidArgument);
    served.store.hold_grants(false);

    let next = stream
        .ask(3, call::Body::Grant(proposal(3, NOW_US + 5)))
        .await;
    assert_eq!(
        vote(next),
        (WireVote::Granted, Some(lock_id(3)), NOW_US + 5),
        "the cancelled grant never landed, and was never answered"
    );
}

#[tokio::test]
async fn a_call_past_its_timeout_is_answered_cancelled_and_writes_nothing() {
    let served = serve().await;
    let mut stream = Stream::open(&served).await;
    served.store.hold_grants(true);
    stream.send(1, 50, Some(call::Body::Grant(proposal(1, NOW_US))));
    let (id, body) = stream.next().await;
    assert_eq!(id, 1);
    assert_eq!(refusal(body).to_status().code(), Code::Cancelled);
    served.store.hold_grants(false);

    let next = stream
        .ask(2, call::Body::Grant(proposal(2, NOW_US + 5)))
        .await;
    assert_eq!(
        vote(next),
        (WireVote::Granted, Some(lock_id(2)), NOW_US + 5)
    );
}

#[tokio::test]
async fn a_shutdown_answers_the_calls_in_progress_then_ends_the_stream_and_the_server() {
    let mut served = serve().await;
    let mut stream = Stream::open(&served).await;
    served.store.hold_grants(true);
    stream.send(1, 0, Some(call::Body::Grant(proposal(1, NOW_US))));
    // Once this is answered, call 1 is in progress.
    refusal(stream.ask(2, call::Body::Grant(proposal(2, 0))).await);
    served.stop.take().unwrap().send(()).unwrap();
    served.store.hold_grants(false);

    let (id, body) = stream.next().await;
    assert_eq!(id, 1);
    assert_eq!(vote(body), (WireVote::Granted, Some(lock_id(1)), NOW_US));
    assert!(
        stream.message().await.is_none(),
        "the stream ends after its last answer"
    );
    // A guard against a hang, not a timing: the server stops once it did.
    let stopped = tokio::time::timeout(HANG, served.server).await;
    stopped.unwrap().unwrap().unwrap();
}
