//! One acquire is one trace: from the client's span through the coordinator to
//! each region's agent and its etcd call, with the right parent/child links,
//! received by an OTLP/gRPC receiver inside this test. Its own test binary: it
//! installs this process's tracing subscriber.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{Cluster, ClusterOptions, eventually};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A span as received.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver that keeps every span.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                            Value::IntValue(i) => Some((kv.key.clone(), i.to_string())),
                            Value::BoolValue(b) => Some((kv.key.clone(), b.to_string())),
                            _ => None,
                        })
                        .collect();
                    spans.push(Received {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_acquire_is_one_trace_across_coordinator_agents_and_etcd() -> anyhow::Result<()> {
    // The receiver, on a free port.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // This process exports its spans there (the in-process coordinator and agents
    // included), through the same pipeline the binaries use.
    let provider = globallock_telemetry::pipeline("globallock-test", &endpoint).unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.library_client(0)?;
    let root = tracing::info_span!("client.checkout");
    let trace_id = globallock_telemetry::propagation::trace_id(&root).unwrap();
    let root_id = {
        let parent = globallock_telemetry::propagation::traceparent(&root).unwrap();
        parent.split('-').nth(2).unwrap().to_owned()
    };
    let lock = client
        .acquire(
            "orders/traced",
            "tracer",
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .instrument(root.clone())
        .await?;
    assert!(lock.fencing_token > 0);
    drop(root);

    // Every region's agent handles the proposal (the third maybe after the
    // answer): wait for all of them to arrive.
    let spans = eventually(Duration::from_secs(20), "every span of the acquire", || {
        let provider = provider.clone();
        let receiver = receiver.clone();
        let trace_id = trace_id.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            let spans: Vec<Received> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            // Spans arrive in batches, in no particular order: wait for all.
            let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
            let complete = count("grpc") >= 1
                && count("acquire") >= 1
                && count("region_call") >= 3
                && count("agent.grant") == 3
                && count("grant") == 3;
            complete.then_some(spans)
        }
    })
    .await;
    let find = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();

    // client → coordinator's gRPC span → acquire
    let grpc = find("grpc")
        .into_iter()
        .find(|s| s.parent == root_id)
        .expect("coordinator span under the client's");
    assert_eq!(
        grpc.attributes.get("rpc.method").map(String::as_str),
        Some("Acquire")
    );
    let acquire = find("acquire")
        .into_iter()
        .find(|s| s.parent == grpc.span_id)
        .expect("acquire under gRPC");
    assert_eq!(
        acquire.attributes.get("resource").map(String::as_str),
        Some("orders/traced")
    );

    // acquire → one region_call per region → that region's agent → its etcd call
    let mut regions_seen = Vec::new();
    for agent in find("agent.grant") {
        let call = by_id
            .get(agent.parent.as_str())
            .expect("agent span has its region_call parent");
        assert_eq!(call.name, "region_call");
        assert_eq!(
            call.attributes.get("region"),
            agent.attributes.get("region"),
            "crossed regions"
        );
        let mut up = call.parent.as_str();
        while by_id.get(up).is_some_and(|s| s.name != "acquire") {
            up = by_id[up].parent.as_str();
        }
        assert_eq!(up, acquire.span_id, "region_call must descend from acquire");
        let etcd = find("grant")
            .into_iter()
            .find(|s| s.parent == agent.span_id)
            .expect("etcd span under the agent");
        assert!(etcd.attributes.contains_key("shard"));
        regions_seen.push(agent.attributes["region"].clone());
    }
    regions_seen.sort();
    assert_eq!(regions_seen, ["region-a", "region-b", "region-c"]);
    Ok(())
}
