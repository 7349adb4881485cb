//! A fault-injecting TCP proxy for one directed link (client side → server side),
//! controlled from tests: blackhole either direction, delay with jitter, reset
//! every connection, refuse new ones. On one machine with no `tc netem`, this is how
//! partitions and slow links are made.
//!
//! - **Blackhole** stalls a direction: bytes are held, not delivered, as a real
//!   partition holds packets. On healing they flow again (as TCP would retransmit
//!   them), unless the endpoints gave up on the connection first.
//! - **Delay** stamps each chunk on arrival and releases it at arrival + delay
//!   (+ jitter), in order, so pipelined HTTP/2 traffic is delayed, not serialised.
//! - **Reset** closes every open connection at once (RST); **refuse** closes new
//!   connections as soon as they are accepted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What happens to bytes travelling one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Direction {
    /// Hold every byte until healed.
    pub blackhole: bool,
    /// Added to every chunk.
    pub delay: Duration,
    /// Up to this much more, uniformly random per chunk (order is kept).
    pub jitter: Duration,
}

/// The faults of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Client → server (requests).
    pub upstream: Direction,
    /// Server → client (replies).
    pub downstream: Direction,
    /// Close new connections at once.
    pub refuse: bool,
}

impl Faults {
    /// Both directions blackholed: a full partition of this link.
    pub fn partition() -> Self {
        Self {
            upstream: Direction {
                blackhole: true,
                ..Direction::default()
            },
            downstream: Direction {
                blackhole: true,
                ..Direction::default()
            },
            refuse: false,
        }
    }

    /// Both directions delayed.
    pub fn delay(delay: Duration, jitter: Duration) -> Self {
        let d = Direction {
            blackhole: false,
            delay,
            jitter,
        };
        Self {
            upstream: d,
            downstream: d,
            refuse: false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Current faults; every pump watches it.
    faults: watch::Sender<Faults>,
    /// Open connections, for reset.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy. Stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Where it forwards.
    target: SocketAddr,
    /// Shared with the connection tasks.
    shared: Arc<Shared>,
    /// The accept loop.
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `target`, with no faults.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (faults, _) = watch::channel(Faults::default());
        let shared = Arc::new(Shared {
            faults,
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(Self {
            addr,
            target,
            shared,
            accept,
        })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Apply `faults` to every connection, open and future.
    pub fn set(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// No faults.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Close every open connection now.
    pub fn reset(&self) {
        for task in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if shared.faults.borrow().refuse {
            let _ = inbound.set_zero_linger();
            drop(inbound);
            continue;
        }
        let faults = shared.faults.subscribe();
        let task = tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = inbound.set_zero_linger();
            let _ = outbound.set_zero_linger();
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let up = pump(in_read, out_write, faults.clone(), |f| f.upstream);
            let down = pump(out_read, in_write, faults, |f| f.downstream);
            // When either side closes, the connection is over.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
        });
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|t| !t.is_finished());
        connections.push(task);
    }
}

/// Copy one direction, applying its faults: read chunks as they come, stamp
/// them, and write each when its time comes and the direction is not blackholed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<Faults>,
    direction: fn(&Faults) -> Direction,
) {
    let (chunks, mut pending) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut faults = faults;
        let mut last_release = Instant::now();
        while let Some((arrived, chunk)) = pending.recv().await {
            // Held while blackholed.
            loop {
                let current = direction(&faults.borrow());
                if !current.blackhole {
                    break;
                }
                if faults.changed().await.is_err() {
                    return;
                }
            }
            let current = direction(&faults.borrow());
            let jitter = if current.jitter.is_zero() {
                Duration::ZERO
            } else {
                current.jitter.mul_f64(rand::random::<f64>())
            };
            // In order: never before the previous chunk.
            let release = (arrived + current.delay + jitter).max(last_release);
            // The timer has millisecond granularity: never wait on it for nothing.
            if release > Instant::now() {
                tokio::time::sleep_until(release).await;
            }
            last_release = release;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The source closed and everything it sent was delivered: pass the close on.
        let _ = to.shutdown().await;
    };
    // The writer drains what the reader stamped, then half-closes.
    tokio::join!(reader, writer);
}
