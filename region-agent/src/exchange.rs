//! The agent's end of `Exchange`: many calls over one long-lived stream.
//!
//! Each call is answered by the very handler its unary RPC runs (same checks,
//! span, metrics), in a task of its own, so calls on one stream run
//! concurrently and answer in the order they finish. A call's `timeout_ms`
//! bounds its task as a unary call's `grpc-timeout` would, and a `Cancel`
//! drops it (a grant still queued for etcd is then never sent). The stream
//! ends when the caller closes its side (calls still running are dropped, as
//! a reset unary call's would be) or when the agent shuts down (calls still
//! running are answered first).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use globallock_proto::agent::region_agent_server::RegionAgent;
use globallock_proto::agent::{Answer, Call, PartError, answer, call};
use globallock_protocol::store::LockStore;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::service::AgentService;

/// The answers of one `Exchange` stream, as tonic sends them.
pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

type Answers = mpsc::UnboundedSender<Result<Answer, Status>>;

impl<S: LockStore> AgentService<S> {
    /// Serve the calls of `calls` until it ends (or this agent shuts down),
    /// answering on the returned stream.
    pub(crate) fn open_exchange(&self, calls: Streaming<Call>) -> AnswerStream {
        let (answers, out) = mpsc::unbounded_channel();
        let service = self.clone();
        tokio::spawn(async move { service.serve_exchange(calls, answers).await });
        Box::pin(UnboundedReceiverStream::new(out))
    }

    async fn serve_exchange(self, mut calls: Streaming<Call>, answers: Answers) {
        let mut tasks = JoinSet::new();
        let mut running: HashMap<u64, AbortHandle> = HashMap::new();
        let closing = self.closing();
        tokio::pin!(closing);
        let caller_left = loop {
            tokio::select! {
                biased;
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
                () = &mut closing => break false,
                next = calls.message() => match next {
                    Ok(Some(call)) => self.start(call, &mut tasks, &mut running, &answers),
                    Ok(None) | Err(_) => break true,
                },
            }
        };
        if caller_left {
            // Nobody reads the answers: drop the calls, as reset unary calls are.
            tasks.abort_all();
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Start `call` (or cancel the call it names).
    fn start(
        &self,
        call: Call,
        tasks: &mut JoinSet<u64>,
        running: &mut HashMap<u64, AbortHandle>,
        answers: &Answers,
    ) {
        let Call {
            id,
            timeout_ms,
            traceparent,
            body,
        } = call;
        let body = match body {
            Some(call::Body::Cancel(_)) => {
                if let Some(task) = running.remove(&id) {
                    task.abort();
                }
                return;
            }
            Some(body) => body,
            None => {
                let refused = Status::invalid_argument("a call needs a body: the request it makes");
                let _ = answers.send(Ok(Answer {
                    id,
                    body: Some(answer::Body::Error(PartError::from_status(&refused))),
                }));
                return;
            }
        };
        let service = self.clone();
        let answers = answers.clone();
        let task = tasks.spawn(async move {
            let work = service.answer(body, &traceparent);
            let body = if timeout_ms == 0 {
                work.await
            } else {
                let limit = Duration::from_millis(u64::from(timeout_ms));
                tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    // What tonic answers a unary call past its grpc-timeout.
                    failed(&Status::cancelled("Timeout expired"))
                })
            };
            let _ = answers.send(Ok(Answer {
                id,
                body: Some(body),
            }));
            id
        });
        running.insert(id, task);
    }

    /// `body`'s answer, from the handler of its unary call.
    fn answer<'a>(
        &'a self,
        body: call::Body,
        traceparent: &'a str,
    ) -> Pin<Box<dyn Future<Output = answer::Body> + Send + 'a>> {
        Box::pin(async move {
            match body {
                call::Body::Grant(r) => reply(
                    self.grant(traced(r, traceparent)).await,
                    answer::Body::Grant,
                ),
                call::Body::Abort(r) => reply(
                    self.abort(traced(r, traceparent)).await,
                    answer::Body::Removed,
                ),
                call::Body::Adopt(r) => reply(
                    self.adopt(traced(r, traceparent)).await,
                    answer::Body::Adopt,
                ),
                call::Body::Renew(r) => reply(
                    self.renew(traced(r, traceparent)).await,
                    answer::Body::Renew,
                ),
                call::Body::Release(r) => reply(
                    self.release(traced(r, traceparent)).await,
                    answer::Body::Removed,
                ),
                call::Body::HandOff(r) => reply(
                    self.hand_off(traced(r, traceparent)).await,
                    answer::Body::HandOff,
                ),
                call::Body::Cancel(_) => failed(&Status::invalid_argument(
                    "a cancel is not a call of its own",
                )),
            }
        })
    }
}

/// `message` as a unary request carrying the caller's trace context.
fn traced<M>(message: M, traceparent: &str) -> Request<M> {
    let mut request = Request::new(message);
    if !traceparent.is_empty()
        && let Ok(value) = traceparent.parse()
    {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

/// A handler's result as an answer's body.
fn reply<T>(result: Result<Response<T>, Status>, ok: fn(T) -> answer::Body) -> answer::Body {
    match result {
        Ok(response) => ok(response.into_inner()),
        Err(status) => failed(&status),
    }
}

fn failed(status: &Status) -> answer::Body {
    answer::Body::Error(PartError::from_status(status))
}
