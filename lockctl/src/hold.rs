//! `lockctl lock`: hold a lock until Ctrl-C or SIGTERM, renewing it meanwhile
//! (like `etcdctl lock` without a command).

use std::process::ExitCode;
use std::time::Duration;

use globallock_client::Client;
use tokio::signal::unix::{SignalKind, signal};

use crate::failure::{EXIT_LOCK_LOST, Failure};
use crate::{Output, print};

/// Acquire `resource`, print the lock (id and fencing token) at once, renew it
/// until SIGINT or SIGTERM, then release it and exit 0. Exits 79 if the lock is
/// lost first, 130/143 if a signal comes before the lock is acquired.
pub async fn hold(
    client: &Client,
    resource: &str,
    owner: &str,
    ttl: Duration,
    wait: Duration,
    output: Output,
) -> ExitCode {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return Failure::new(
            "internal",
            1,
            "cannot handle SIGINT/SIGTERM, so the lock could not be released on exit",
        )
        .report(output);
    };
    let acquire = client
        .lock(resource)
        .owner(owner)
        .ttl(ttl)
        .wait(wait)
        .acquire();
    let guard = tokio::select! {
        acquired = acquire => match acquired {
            Ok(guard) => guard,
            Err(error) => return Failure::client(&error).report(output),
        },
        // A request in flight may still be granted: that lock expires with its TTL.
        _ = interrupt.recv() => return ExitCode::from(130),
        _ = terminate.recv() => return ExitCode::from(143),
    };
    print(output, guard.lock(), ExitCode::SUCCESS);
    if output == Output::Text {
        eprintln!(
            "lockctl: holding {resource:?} (fencing token {}); Ctrl-C or SIGTERM releases it",
            guard.fencing_token()
        );
    }
    let signal_name = tokio::select! {
        reason = guard.lost() => {
            return Failure::new(
                "lock-lost",
                EXIT_LOCK_LOST,
                format!("lock on {resource:?} lost: {reason}"),
            )
            .with("resource", resource)
            .with("lock_id", guard.lock_id())
            .report(output);
        }
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    let lock_id = guard.lock_id().to_owned();
    match guard.release().await {
        Ok(()) => {
            if output == Output::Text {
                eprintln!("lockctl: {signal_name}: released {resource:?}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut failure = Failure::client(&error).with("lock_id", lock_id);
            failure.message = format!(
                "{signal_name}: releasing {resource:?} failed ({}); it expires with its TTL",
                failure.message
            );
            failure.report(output)
        }
    }
}
