//! The public gRPC API (`globallock.v1.LockService`): converts messages to engine
//! calls and errors to status codes (through [`crate::status`]), nothing more.

use std::sync::Arc;
use std::time::Duration;

use globallock_proto::v1::lock_service_server::LockService;
use globallock_proto::v1::{
    AcquireRequest, AcquireResponse, DescribeRequest, DescribeResponse, ReleaseRequest,
    ReleaseResponse, RenewRequest, RenewResponse, ValidateRequest, ValidateResponse,
};
use globallock_telemetry::propagation::adopt_grpc_parent;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

use crate::engine::{AcquireParams, LockEngine};
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
        let r = request.into_inner();
        let acquired = self
            .engine
            .acquire(AcquireParams {
                resource: r.resource,
                owner: r.owner,
                ttl_ms: r.ttl_ms,
                wait_ms: r.wait_ms,
                request_id: r.request_id,
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
        let r = request.into_inner();
        let renewed = self
            .engine
            .renew(&r.lock_id, r.ttl_ms)
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
        let r = request.into_inner();
        let released_regions = self
            .engine
            .release(&r.lock_id)
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
        let r = request.into_inner();
        let description = self
            .engine
            .describe(&r.resource)
            .instrument(span)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(match description.holder {
            Some(h) => DescribeResponse {
                held: true,
                owner: h.owner,
                fencing_token: h.fencing_token,
                expires_in_ms: millis(h.expires_in),
                lock_id: h.lock_id,
            },
            None => DescribeResponse::default(),
        }))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let span = request_span("Validate", &request);
        let r = request.into_inner();
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
}
