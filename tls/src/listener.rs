//! Accepting TLS connections: each handshake runs on its own task, bounded in
//! time, so a slow, silent or plaintext peer holds up nobody else.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::files::Reloading;

/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections accepted on a listener, as a stream (for tonic's
/// `serve_with_incoming`) or one at a time ([`TlsIncoming::accept`]). The
/// accept loop stops when this is dropped.
#[derive(Debug)]
pub struct TlsIncoming {
    connections: mpsc::Receiver<TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Accept on `listener` with the current configuration of `config` for
    /// each connection; `door` names the port in logs and metrics.
    pub fn new(
        listener: TcpListener,
        config: Arc<Reloading<ServerConfig>>,
        door: &'static str,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, config, door, tx));
        Ok(Self {
            connections: rx,
            local,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection whose handshake succeeded (`None` once the accept
    /// loop ended).
    pub async fn accept(&mut self) -> Option<TlsStream<TcpStream>> {
        self.connections.recv().await
    }
}

impl Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<Reloading<ServerConfig>>,
    door: &'static str,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(door, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(tls).await;
                }
                Ok(Err(error)) => refused(door, peer, &error.to_string()),
                Err(_) => refused(door, peer, "handshake timed out"),
            }
        });
    }
}

fn refused(door: &'static str, peer: SocketAddr, why: &str) {
    tracing::info!(door, %peer, why, "TLS handshake refused");
    metrics::counter!("globallock_tls_handshake_failures_total", "door" => door).increment(1);
}

/// `axum::serve` over TLS: HTTP doors (REST, `/metrics`) accept the
/// connections whose handshake succeeded.
impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(tls) = TlsIncoming::accept(self).await {
                if let Ok(peer) = tls.get_ref().0.peer_addr() {
                    return (tls, peer);
                }
                continue;
            }
            // The accept loop ended (it does only when this is dropped).
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
