//! Dialling a TLS peer for a tonic channel, checking the name it must prove.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::files::Reloading;

/// A tonic connector (`Endpoint::connect_with_connector_lazy`) that dials the
/// endpoint's host and port over TLS with the current client configuration,
/// and accepts the peer only if its certificate is valid for `name` (which
/// need not be the address dialled: a region's agent proves its region).
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Arc<Reloading<ClientConfig>>,
    name: ServerName<'static>,
}

impl TlsConnector {
    /// Dial with `config`, expecting the peer to prove `name`.
    pub fn new(config: Arc<Reloading<ClientConfig>>, name: ServerName<'static>) -> Self {
        Self { config, name }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        let name = self.name.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("no host in {uri}"),
                )
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
