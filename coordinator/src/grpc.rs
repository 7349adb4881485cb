//! The public gRPC API (`globallock.v1.LockService`): converts messages to engine
//! calls and errors to status codes (through [`crate::status`]), nothing more.

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::v1::lock_service_server::LockService;
use globallock_proto::v1::{
    AcquireRequest, AcquireResponse, DescribeRequest, DescribeResponse, ListLocksRequest,
    ListLocksResponse, ListedLock, ReleaseRequest, ReleaseResponse, RenewRequest, RenewResponse,
    ValidateRequest, ValidateResponse,
};
use globallock_telemetry::propagation::adopt_grpc_parent;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

use globallock_protocol::access::{Credentials, Verb};
use globallock_protocol::lock_id::LockId;
use globallock_protocol::request::InvalidInput;

use crate::access::{Caller, grpc_credentials};
use crate::engine::{AcquireParams, LockEngine};
use crate::error::LockError;
use crate::status::to_status;

/// The gRPC service over a shared engine.
#[derive(Debug, Clone)]
pub struct GrpcService {
    /// The engine every front door shares.
    engine: Arc<LockEngine>,
}

impl GrpcService {
    /// A service over `engine`.
    pub fn new(engine: Arc<LockEngine>) -> Self {
        Self { engine }
    }

    /// The caller, if it may `verb` on `resource`.
    #[allow(clippy::result_large_err)] // tonic's Status
    fn allow(
        &self,
        credentials: &Credentials,
        verb: Verb,
        resource: &str,
    ) -> Result<Caller, Status> {
        self.engine
            .authorize(credentials, verb, resource)
            .map_err(|e| to_status(&e))
    }

    /// The caller, if it may `verb` on the resource of `lock_id`.
    #[allow(clippy::result_large_err)] // tonic's Status
    fn allow_lock(
        &self,
        credentials: &Credentials,
        verb: Verb,
        lock_id: &str,
    ) -> Result<Caller, Status> {
        let id: LockId = lock_id
            .parse()
            .map_err(|e: InvalidInput| to_status(&LockError::Invalid(e)))?;
        self.allow(credentials, verb, id.resource())
    }
}

/// The request's span: a child of the caller's trace, when it sent one.
fn request_span<T>(method: &'static str, request: &Request<T>) -> tracing::Span {
    let span = info_span!(
        "grpc",
        rpc.method = method,
        rpc.service = "globallock.v1.LockService"
    );
    adopt_grpc_parent(&span, request.metadata());
    span
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl LockService for GrpcService {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let span = request_span("Acquire", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        let caller = self.allow(&credentials, Verb::Acquire, &r.resource)?;
        let acquired = self
            .engine
            .acquire(AcquireParams {
                resource: r.resource,
                owner: r.owner,
                ttl_ms: r.ttl_ms,
                wait_ms: r.wait_ms,
                request_id: r.request_id,
                principal: caller.principal,
            })
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(AcquireResponse {
            lock_id: acquired.lock_id,
            fencing_token: acquired.fencing_token,
            validity_ms: millis(acquired.validity),
            ttl_ms: acquired.ttl_ms,
            granted_regions: acquired.granted_regions,
            resource: acquired.resource,
            owner: acquired.owner,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let span = request_span("Renew", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        let caller = self.allow_lock(&credentials, Verb::Renew, &r.lock_id)?;
        let renewed = self
            .engine
            .renew(&r.lock_id, r.ttl_ms, &caller)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(RenewResponse {
            validity_ms: millis(renewed.validity),
            fencing_token: renewed.fencing_token,
            ttl_ms: renewed.ttl_ms,
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let span = request_span("Release", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        let caller = self.allow_lock(&credentials, Verb::Release, &r.lock_id)?;
        let released_regions = self
            .engine
            .release(&r.lock_id, &caller)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ReleaseResponse { released_regions }))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let span = request_span("Describe", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        let caller = self.allow(&credentials, Verb::Describe, &r.resource)?;
        let description = self
            .engine
            .describe(&r.resource)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(match description.holder {
            Some(h) => DescribeResponse {
                held: true,
                // The lock id is the holder's own: nobody else learns it.
                lock_id: if caller.may_see(&h.principal) {
                    h.lock_id
                } else {
                    String::new()
                },
                owner: h.owner,
                fencing_token: h.fencing_token,
                expires_in_ms: millis(h.expires_in),
            },
            None => DescribeResponse::default(),
        }))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let span = request_span("Validate", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        self.allow(&credentials, Verb::Validate, &r.resource)?;
        let (current, current_token) = self
            .engine
            .validate(&r.resource, r.fencing_token)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ValidateResponse {
            current,
            current_token,
        }))
    }

    async fn list_locks(
        &self,
        request: Request<ListLocksRequest>,
    ) -> Result<Response<ListLocksResponse>, Status> {
        let span = request_span("ListLocks", &request);
        let credentials = grpc_credentials(&request);
        let r = request.into_inner();
        // Listing a prefix needs `describe` on all of it.
        self.allow(&credentials, Verb::Describe, &r.prefix)?;
        let page = self
            .engine
            .list(&r.prefix, u64::from(r.page_size), &r.page_token)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ListLocksResponse {
            locks: page
                .locks
                .into_iter()
                .map(|lock| ListedLock {
                    resource: lock.resource,
                    owner: lock.owner,
                    fencing_token: lock.fencing_token,
                    expires_in_ms: millis(lock.expires_in),
                    granted_regions: lock.regions,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
