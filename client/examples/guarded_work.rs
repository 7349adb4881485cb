//! Run against `make dev`:  cargo run -p globallock-client --example guarded_work -- orders/42
//!
//! Takes a lock with a guard, does "work" that sends the fencing token with each
//! write, stops as soon as the lock is lost, and releases it.

use std::time::Duration;

use globallock_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resource = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "orders/42".into());
    let endpoint =
        std::env::var("GLOBALLOCK_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:7400".into());
    let client = Client::connect([endpoint])?;

    let guard = client
        .lock(&resource)
        .ttl(Duration::from_secs(3))
        .wait(Duration::from_secs(10))
        .acquire()
        .await?;
    println!(
        "holding {resource} with fencing token {}",
        guard.fencing_token()
    );

    let work = async {
        for step in 1..=5 {
            // A real program sends guard.fencing_token() with this write, and the
            // protected resource rejects tokens lower than the highest it has seen.
            println!("step {step}: write with token {}", guard.fencing_token());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = work => println!("done; the lock was renewed in the background while it ran"),
        reason = guard.lost() => {
            println!("lock lost ({reason}): stopped before touching the resource again");
            return Ok(());
        }
    }
    guard.release().await?;
    println!("released");
    Ok(())
}
