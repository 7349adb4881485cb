//! The fault proxy on its own: passes bytes, delays them in order, blackholes and
//! heals, refuses, resets. Prints its own overhead with zero delay.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use globallock_localcluster::{Direction, FaultProxy, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut got = vec![0u8; message.len()];
    stream.read_exact(&mut got).await?;
    Ok(got)
}

#[tokio::test]
async fn passes_delays_in_order_blackholes_heals_refuses_and_resets() {
    let proxy = FaultProxy::start(echo().await).await.unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");

    // Zero-delay overhead, printed (a figure, not an assertion).
    let started = Instant::now();
    for _ in 0..200 {
        round_trip(&mut stream, b"ping").await.unwrap();
    }
    println!(
        "proxy overhead: {:?} per round trip (200 round trips, zero delay)",
        started.elapsed() / 200
    );

    // Delay: each direction adds 100 ms; pipelined chunks are not serialised.
    proxy.set(Faults::delay(Duration::from_millis(100), Duration::ZERO));
    let started = Instant::now();
    for i in 0..5u8 {
        stream.write_all(&[i]).await.unwrap();
    }
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4], "order kept");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200),
        "two delayed legs: {elapsed:?}"
    );

    // Blackhole the replies: nothing comes back until healed, then it all does.
    proxy.set(Faults {
        downstream: Direction {
            blackhole: true,
            ..Direction::default()
        },
        ..Faults::default()
    });
    stream.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let waited =
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await;
    assert!(waited.is_err(), "a blackholed reply must not arrive");
    proxy.heal();
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"held");

    // Reset: the open connection dies.
    proxy.reset();
    let mut one = [0u8; 1];
    let after_reset = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(b"x").await;
        stream.read(&mut one).await
    })
    .await
    .unwrap();
    assert!(matches!(after_reset, Ok(0) | Err(_)), "{after_reset:?}");

    // Refuse: new connections are closed at once.
    proxy.set(Faults {
        refuse: true,
        ..Faults::default()
    });
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut one))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    proxy.heal();
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"back").await.unwrap(), b"back");
}
