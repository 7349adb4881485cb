//! Calls to one region's agent.
//!
//! The hot calls (grant, abort, adopt, renew, release, hand-off) go over one
//! long-lived `Exchange` stream per agent: a call is one message each way,
//! not an HTTP/2 stream of its own with headers and trailers. Each call still
//! gets exactly the answer its unary RPC would give (the agent runs the same
//! handler), is bounded by the region deadline on both ends, and is cancelled
//! at the agent when the caller stops waiting. Reads, listings and health
//! probes stay unary.
//!
//! The stream is opened by the first call that needs it and opened again by
//! the first call after it ended (the agent shut down, the connection broke):
//! the calls waiting on an ended stream fail as the unary calls on that
//! connection would, `UNAVAILABLE`. Who the agent is was checked when the
//! connection was made (TLS, `<region>.agent.globallock`); which region it
//! serves is read once, from the stream's response metadata, and stamped on
//! every answer for the engine's check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use globallock_proto::agent::region_agent_client::RegionAgentClient;
use globallock_proto::agent::{
    AdoptRequest, AdoptResponse, Answer, Call, Cancel, GrantRequest, GrantResponse, HandOffRequest,
    HandOffResponse, HealthRequest, HealthResponse, ListRequest, ListResponse, LockRef,
    REGION_METADATA, ReadRequest, ReadResponse, RemoveResponse, RenewRequest, RenewResponse,
    answer, call,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A client of one region's agent (cheap to clone).
#[derive(Debug, Clone)]
pub struct AgentClient {
    /// Unary calls (reads, listings, probes), and where streams are opened.
    unary: RegionAgentClient<Channel>,
    /// The stream the hot calls share.
    link: Arc<Link>,
}

impl AgentClient {
    /// A client over `channel` to region `region`'s agent; each streamed call
    /// waits at most `timeout` (the agent is told so too).
    pub fn new(channel: Channel, region: &str, timeout: Duration) -> Self {
        let unary = RegionAgentClient::new(channel);
        Self {
            link: Arc::new(Link {
                client: unary.clone(),
                region: region.to_owned(),
                timeout,
                current: RwLock::new(None),
                opening: tokio::sync::Mutex::new(()),
            }),
            unary,
        }
    }

    /// Propose a grant.
    pub async fn grant(
        &mut self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        self.link
            .call(request, call::Body::Grant, |b| match b {
                answer::Body::Grant(a) => Some(a),
                _ => None,
            })
            .await
    }

    /// Abort a lock that did not win.
    pub async fn abort(
        &mut self,
        request: Request<LockRef>,
    ) -> Result<Response<RemoveResponse>, Status> {
        self.link.call(request, call::Body::Abort, removed).await
    }

    /// Adopt an earlier grant of a retried request.
    pub async fn adopt(
        &mut self,
        request: Request<AdoptRequest>,
    ) -> Result<Response<AdoptResponse>, Status> {
        self.link
            .call(request, call::Body::Adopt, |b| match b {
                answer::Body::Adopt(a) => Some(a),
                _ => None,
            })
            .await
    }

    /// Renew a grant.
    pub async fn renew(
        &mut self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        self.link
            .call(request, call::Body::Renew, |b| match b {
                answer::Body::Renew(a) => Some(a),
                _ => None,
            })
            .await
    }

    /// Release a grant.
    pub async fn release(
        &mut self,
        request: Request<LockRef>,
    ) -> Result<Response<RemoveResponse>, Status> {
        self.link.call(request, call::Body::Release, removed).await
    }

    /// Release one grant and propose the next.
    pub async fn hand_off(
        &mut self,
        request: Request<HandOffRequest>,
    ) -> Result<Response<HandOffResponse>, Status> {
        self.link
            .call(request, call::Body::HandOff, |b| match b {
                answer::Body::HandOff(a) => Some(a),
                _ => None,
            })
            .await
    }

    /// Read a resource's grant (unary).
    pub async fn read(
        &mut self,
        request: Request<ReadRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        self.unary.read(request).await
    }

    /// List a shard's grants (unary).
    pub async fn list(
        &mut self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListResponse>, Status> {
        self.unary.list(request).await
    }

    /// Probe the agent (unary).
    pub async fn health(
        &mut self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.unary.health(request).await
    }
}

fn removed(body: answer::Body) -> Option<RemoveResponse> {
    match body {
        answer::Body::Removed(a) => Some(a),
        _ => None,
    }
}

/// The stream one region's hot calls share, opened when needed.
#[derive(Debug)]
struct Link {
    client: RegionAgentClient<Channel>,
    region: String,
    timeout: Duration,
    /// The stream in use (`None` before the first call).
    current: RwLock<Option<Arc<Exchange>>>,
    /// Held while a stream is being opened, so only one is.
    opening: tokio::sync::Mutex<()>,
}

/// One open `Exchange` stream.
#[derive(Debug)]
struct Exchange {
    /// Where calls go (the request stream).
    calls: mpsc::UnboundedSender<Call>,
    /// The calls waiting for their answers, and whether the stream ended.
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    /// The region the agent said it serves when the stream opened.
    region: Option<MetadataValue<Ascii>>,
}

#[derive(Debug, Default)]
struct Waiting {
    calls: HashMap<u64, oneshot::Sender<Result<answer::Body, Status>>>,
    /// Why the stream ended (`None`: it is open).
    ended: Option<Status>,
}

impl Link {
    async fn call<M, T>(
        &self,
        request: Request<M>,
        wrap: fn(M) -> call::Body,
        unwrap: fn(answer::Body) -> Option<T>,
    ) -> Result<Response<T>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = Some(wrap(request.into_inner()));
        // A stream that ended before the call went out is replaced once.
        let mut tries = 0;
        let (exchange, sent) = loop {
            let exchange = self.exchange().await?;
            tries += 1;
            match exchange.send(&mut body, &traceparent, self.timeout) {
                Ok(sent) => break (exchange, sent),
                Err(ended) if tries >= 2 || body.is_none() => return Err(ended),
                Err(_) => self.forget(&exchange),
            }
        };
        let mut pending = Pending {
            exchange: &exchange,
            id: sent.0,
            answered: false,
        };
        let answer = sent.1.await;
        pending.answered = true;
        let body = answer.unwrap_or_else(|_| Err(Status::unavailable("the agent stream ended")))?;
        let answer = match body {
            answer::Body::Error(refused) => return Err(refused.to_status()),
            body => unwrap(body).ok_or_else(|| {
                Status::internal(format!(
                    "region {}: the agent answered a call with another call's answer",
                    self.region
                ))
            })?,
        };
        let mut response = Response::new(answer);
        if let Some(region) = &exchange.region {
            response
                .metadata_mut()
                .insert(REGION_METADATA, region.clone());
        }
        Ok(response)
    }

    /// The open stream, or a new one.
    async fn exchange(&self) -> Result<Arc<Exchange>, Status> {
        if let Some(open) = self.open_now() {
            return Ok(open);
        }
        let _opening = self.opening.lock().await;
        if let Some(open) = self.open_now() {
            return Ok(open);
        }
        let opened = tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "region {}: no stream to its agent within {} ms",
                    self.region,
                    self.timeout.as_millis()
                ))
            })??;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(opened.clone());
        Ok(opened)
    }

    fn open_now(&self) -> Option<Arc<Exchange>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|e| !e.has_ended()).cloned()
    }

    /// Drop `ended` as the stream in use (if it still is).
    fn forget(&self, ended: &Arc<Exchange>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, ended)) {
            *current = None;
        }
    }

    async fn open(&self) -> Result<Arc<Exchange>, Status> {
        let (calls, outgoing) = mpsc::unbounded_channel();
        let mut client = self.client.clone();
        let response = client
            .exchange(Request::new(UnboundedReceiverStream::new(outgoing)))
            .await?;
        metrics::counter!("globallock_region_streams_opened_total", "region" => self.region.clone())
            .increment(1);
        let region = response.metadata().get(REGION_METADATA).cloned();
        let mut answers = response.into_inner();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let reader = waiting.clone();
        tokio::spawn(async move {
            let why = loop {
                match answers.message().await {
                    Ok(Some(Answer { id, body })) => {
                        let caller = lock(&reader).calls.remove(&id);
                        if let Some(caller) = caller {
                            let body = body.ok_or_else(|| {
                                Status::internal("the agent answered without a body")
                            });
                            let _ = caller.send(body);
                        }
                    }
                    Ok(None) => break Status::unavailable("the agent ended the call stream"),
                    Err(broken) => break broken,
                }
            };
            let mut waiting = lock(&reader);
            for (_, caller) in waiting.calls.drain() {
                let _ = caller.send(Err(why.clone()));
            }
            waiting.ended = Some(why);
        });
        Ok(Arc::new(Exchange {
            calls,
            waiting,
            next_id: AtomicU64::new(1),
            region,
        }))
    }
}

type Sent = (u64, oneshot::Receiver<Result<answer::Body, Status>>);

impl Exchange {
    fn has_ended(&self) -> bool {
        lock(&self.waiting).ended.is_some() || self.calls.is_closed()
    }

    /// Send the call in `body` (taking it) unless the stream ended (then
    /// `body` is left in place when it was never sent).
    fn send(
        &self,
        body: &mut Option<call::Body>,
        traceparent: &str,
        timeout: Duration,
    ) -> Result<Sent, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if let Some(why) = &waiting.ended {
                return Err(why.clone());
            }
            waiting.calls.insert(id, answer);
        }
        let call = Call {
            id,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            traceparent: traceparent.to_owned(),
            body: body.take(),
        };
        if let Err(unsent) = self.calls.send(call) {
            lock(&self.waiting).calls.remove(&id);
            *body = unsent.0.body;
            return Err(Status::unavailable("the agent call stream is closed"));
        }
        Ok((id, answered))
    }
}

/// A call sent and not answered yet: if its caller stops waiting, the agent is
/// told to drop it.
struct Pending<'a> {
    exchange: &'a Exchange,
    id: u64,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let waiting = lock(&self.exchange.waiting).calls.remove(&self.id);
        if waiting.is_some() {
            let _ = self.exchange.calls.send(Call {
                id: self.id,
                timeout_ms: 0,
                traceparent: String::new(),
                body: Some(call::Body::Cancel(Cancel {})),
            });
        }
    }
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}
