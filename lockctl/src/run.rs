//! `lockctl run`: a command that runs only while the lock is held.
//!
//! The command never outlives its supervisor's hold on the lock:
//! - lock lost: the command's process group gets SIGTERM, then SIGKILL after
//!   `--grace`, and lockctl exits 79;
//! - lockctl dies, even by `kill -9`: on Linux the command (lockctl's direct child)
//!   gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`, set between fork and exec);
//! - Ctrl-C / SIGTERM: passed to the command, which keeps the lock until it exits;
//!   a second one sends SIGTERM and SIGKILL after `--grace`; a third, SIGKILL.
//!
//! What remains possible: PDEATHSIG reaches only the direct child. A process the
//! command started (a grandchild) survives lockctl's SIGKILL unless the command
//! itself dies with its parent; and if the whole machine stops (or lockctl and the
//! command are paused together), nothing here runs. For those the lock's TTL and
//! the fencing token are the protection: the protected resource must reject
//! writes carrying a token older than the newest it has seen.

use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use globallock_client::{Client, ClientError};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::Output;
use crate::failure::{EXIT_LOCK_LOST, Failure};

/// What to run, and how.
#[derive(Debug)]
pub struct Options<'a> {
    pub resource: &'a str,
    pub owner: &'a str,
    pub ttl: Duration,
    pub wait: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub grace: Duration,
    pub command: &'a [String],
    pub output: Output,
}

/// Acquire, run the command with the lock in its environment, and keep the lock
/// renewed until it exits. Returns the command's exit status, or 79 if the lock
/// was lost (the command is then stopped with SIGTERM, SIGKILL after `grace`).
pub async fn run(client: &Client, options: Options<'_>) -> Result<ExitCode, ClientError> {
    let Options {
        resource,
        owner,
        ttl,
        wait,
        grace,
        command,
        output,
    } = options;
    let guard = client
        .lock(resource)
        .owner(owner)
        .ttl(ttl)
        .wait(wait)
        .acquire()
        .await?;
    // Our own signals are handled (passed on) from before the command exists, so
    // none can kill lockctl (and with it, the command) by its default action.
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut spawn = tokio::process::Command::new(program);
    spawn
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
        .kill_on_drop(true);
    die_with_parent(&mut spawn);
    let mut child = match spawn.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = guard.release().await;
            let (kind, code) = if error.kind() == std::io::ErrorKind::NotFound {
                ("command-not-found", 127)
            } else {
                ("command-not-executable", 126)
            };
            return Ok(
                Failure::new(kind, code, format!("cannot run {program:?}: {error}"))
                    .with("command", program.clone())
                    .report(output),
            );
        }
    };
    let pid = child.id();
    let mut signals_seen = 0u32;
    // Set by the second Ctrl-C/SIGTERM: when the command gets SIGKILL.
    let mut kill_at: Option<Instant> = None;
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
                let message = format!(
                    "lock on {resource:?} lost ({reason}); stopping the command (SIGTERM, SIGKILL after {grace:?})"
                );
                if output == Output::Text {
                    eprintln!("lockctl: {message}");
                }
                send(pid, libc::SIGTERM);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    send(pid, libc::SIGKILL);
                    let _ = child.kill().await;
                }
                // Whatever the command left behind in its group goes too.
                send(pid, libc::SIGKILL);
                if output == Output::Json {
                    Failure::new("lock-lost", EXIT_LOCK_LOST, message)
                        .with("resource", resource)
                        .report(output);
                }
                return Ok(ExitCode::from(EXIT_LOCK_LOST));
            }
            () = sleep_until(kill_at) => {
                eprintln!("lockctl: the command did not stop within {grace:?}: SIGKILL");
                send(pid, libc::SIGKILL);
                kill_at = None;
            }
            Some(()) = recv(&mut interrupt) => {
                signals_seen += 1;
                escalate(pid, libc::SIGINT, signals_seen, grace, &mut kill_at);
            }
            Some(()) = recv(&mut terminate) => {
                signals_seen += 1;
                escalate(pid, libc::SIGTERM, signals_seen, grace, &mut kill_at);
            }
        }
    }
}

/// Our `nth` Ctrl-C or SIGTERM: the first is passed to the command (which keeps
/// the lock until it exits); the second sends SIGTERM and schedules SIGKILL after
/// `grace`, so a command that ignores both signals is still stopped; a third
/// sends SIGKILL at once.
fn escalate(
    pid: Option<u32>,
    signal: i32,
    nth: u32,
    grace: Duration,
    kill_at: &mut Option<Instant>,
) {
    match nth {
        1 => {
            send(pid, signal);
            eprintln!(
                "lockctl: passed {} to the command; the lock is held until it exits \
                 (again: SIGTERM, then SIGKILL after {grace:?})",
                if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                }
            );
        }
        2 => {
            send(pid, libc::SIGTERM);
            *kill_at = Some(Instant::now() + grace);
            eprintln!(
                "lockctl: stopping the command: SIGTERM, SIGKILL in {grace:?} (again: SIGKILL now)"
            );
        }
        _ => {
            send(pid, libc::SIGKILL);
            *kill_at = None;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Make the command die with lockctl: on Linux, the kernel sends it SIGKILL when
/// the thread that forked it exits, which for the current-thread runtime `main`
/// uses is lockctl's main thread, so: when lockctl exits or is killed, `kill -9`
/// included. Set between fork and exec; if lockctl already died in between (the
/// command would have been reparented and never get the signal), the command
/// exits at once instead.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    // Read before fork: the pid of the process that must stay the parent.
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // prctl(2), getppid(2) and _exit(2), which are async-signal-safe; it
    // allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            let death_signal = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// No parent-death signal outside Linux: the TTL and the fencing token are the
/// protection there if lockctl is killed.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut tokio::process::Command) {}

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
