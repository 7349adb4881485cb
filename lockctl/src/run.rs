//! `lockctl run`: a command that runs only while the lock is held.

use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use globallock_client::{Client, ClientError};
use tokio::signal::unix::{SignalKind, signal};

/// Acquire, run `command` with the lock in its environment, and keep the lock
/// renewed until it exits. Returns the command's exit status, or `lost_code` if the
/// lock was lost (the command is then stopped with SIGTERM, SIGKILL after `grace`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    resource: &str,
    owner: &str,
    ttl: Duration,
    wait: Duration,
    grace: Duration,
    command: &[String],
    lost_code: u8,
) -> Result<ExitCode, ClientError> {
    let guard = client
        .lock(resource)
        .owner(owner)
        .ttl(ttl)
        .wait(wait)
        .acquire()
        .await?;
    let (program, args) = command.split_first().expect("clap requires a command");
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("GLOBALLOCK_RESOURCE", resource)
        .env("GLOBALLOCK_LOCK_ID", guard.lock_id())
        .env(
            "GLOBALLOCK_FENCING_TOKEN",
            guard.fencing_token().to_string(),
        )
        // Its own process group, so that on loss every process it started is
        // stopped too (workers left running would act without the lock).
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            eprintln!("lockctl: cannot run {program:?}: {error}");
            let _ = guard.release().await;
            let code = if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(code));
        }
    };
    let pid = child.id();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            status = child.wait() => {
                let code = status.map(exit_code).unwrap_or(1);
                if let Err(error) = guard.release().await {
                    eprintln!("lockctl: releasing the lock failed ({error}); it expires with its TTL");
                }
                return Ok(ExitCode::from(code));
            }
            reason = guard.lost() => {
                eprintln!(
                    "lockctl: lock on {resource:?} lost ({reason}); stopping the command (SIGTERM, SIGKILL after {grace:?})"
                );
                send(pid, libc::SIGTERM);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    send(pid, libc::SIGKILL);
                    let _ = child.kill().await;
                }
                // Whatever the command left behind in its group goes too.
                send(pid, libc::SIGKILL);
                return Ok(ExitCode::from(lost_code));
            }
            // Our own signals go to the command; we keep the lock until it exits.
            Some(()) = recv(&mut interrupt) => send(pid, libc::SIGINT),
            Some(()) = recv(&mut terminate) => send(pid, libc::SIGTERM),
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Signal the command's whole process group (its pid is the group id).
#[allow(unsafe_code)]
fn send(pid: Option<u32>, signal: i32) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) on the process group we created for our own child; the
    // group id cannot be reused while any member lives, and no memory is touched.
    unsafe {
        libc::kill(-pid, signal);
    }
}
