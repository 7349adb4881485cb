//! Dialling a TLS peer for a tonic channel, checking the name it must prove.

use std::future::Future;
use std::net::SocketAddr;
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
    /// Dial these (in turn, until one connects) instead of the endpoint's host:
    /// addresses found through DNS discovery.
    addrs: Option<Arc<[SocketAddr]>>,
}

impl TlsConnector {
    /// Dial with `config`, expecting the peer to prove `name`.
    pub fn new(config: Arc<Reloading<ClientConfig>>, name: ServerName<'static>) -> Self {
        Self {
            config,
            name,
            addrs: None,
        }
    }

    /// Dial `addrs` in turn (the first that accepts the connection), whatever
    /// the endpoint's URL says, expecting the peer to prove `name`: a target
    /// found through DNS, whose identity is still checked by name.
    pub fn to_addresses(
        config: Arc<Reloading<ClientConfig>>,
        name: ServerName<'static>,
        addrs: Vec<SocketAddr>,
    ) -> Self {
        Self {
            config,
            name,
            addrs: Some(addrs.into()),
        }
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
        let addrs = self.addrs.clone();
        Box::pin(async move {
            if let Some(addrs) = addrs {
                let tcp = TcpStream::connect(&addrs[..]).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                return Ok(TokioIo::new(tls));
            }
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
