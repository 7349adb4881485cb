//! What every server binary (coordinator, region agent) does at start and stop.
//!
//! - [`shutdown_signal`] — completes on the first Ctrl-C or SIGTERM; a second one
//!   exits at once.
//! - [`exit`] — the sysexits codes the binaries use.
//! - [`settings`] — loading a TOML file with environment overrides, and bounds
//!   checks that name the setting.
//! - [`ServiceAllocator`] — the memory allocator of every service binary.

pub mod settings;

/// The memory allocator every service binary declares as its global allocator
/// (`#[global_allocator] static ALLOCATOR: ServiceAllocator = ServiceAllocator;`):
/// mimalloc. In `perf`, glibc's `malloc` and `free` took about a fifth of an
/// agent's and a coordinator's CPU; with mimalloc, in six interleaved rounds of
/// `make bench`'s uncontended cells, the coordinator's CPU per acquire+release
/// cycle fell by about a sixth and the agents' by about a tenth
/// (docs/benchmark.md).
pub use mimalloc::MiMalloc as ServiceAllocator;

use std::time::Duration;

use tracing::{info, warn};

/// Exit codes (sysexits.h).
pub mod exit {
    /// Bad command-line usage.
    pub const USAGE: i32 = 64;
    /// A service we need is unavailable (e.g. the port is taken).
    pub const UNAVAILABLE: i32 = 69;
    /// Internal software error.
    pub const SOFTWARE: i32 = 70;
    /// The operating system refused something (threads, file descriptors).
    pub const OSERR: i32 = 71;
    /// Configuration error.
    pub const CONFIG: i32 = 78;
}

/// Completes on the first Ctrl-C or SIGTERM. A second signal exits the process
/// at once with status 130, for when draining hangs.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    info!("shutdown requested; draining (signal again to force exit)");
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Run `drain` for at most `deadline`; log if it had to be cut short.
pub async fn drain_within<F: std::future::Future>(
    deadline: Duration,
    drain: F,
) -> Option<F::Output> {
    match tokio::time::timeout(deadline, drain).await {
        Ok(output) => Some(output),
        Err(_) => {
            warn!(
                ?deadline,
                "drain deadline passed; exiting with requests in flight"
            );
            None
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// An error and all its causes, `outer: inner: innermost`, for one log or
/// status line (the typed chain is kept everywhere else).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Most worker threads a server may be configured with.
pub const MAX_WORKER_THREADS: u64 = 1_024;

/// Check a `worker_threads` setting: absent, or 1 to [`MAX_WORKER_THREADS`].
pub fn check_worker_threads(
    worker_threads: Option<u64>,
) -> Result<Option<usize>, settings::InvalidSetting> {
    match worker_threads {
        None => Ok(None),
        Some(n) => {
            settings::within("worker_threads", n, 1, MAX_WORKER_THREADS)?;
            Ok(usize::try_from(n).ok())
        }
    }
}

/// The async runtime a server runs on. `Some(1)`: one thread runs every task
/// and all I/O, so no request is handed from thread to thread (the cheapest
/// per request where many services share a few cores, as `make dev`'s ten do
/// on one machine). `Some(n)`: `n` worker threads. `None`: one per core.
pub fn build_runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// [`build_runtime`], or exit 71 (EX_OSERR) saying why.
pub fn runtime_or_exit(program: &str, worker_threads: Option<usize>) -> tokio::runtime::Runtime {
    build_runtime(worker_threads).unwrap_or_else(|error| {
        eprintln!("{program}: cannot start the async runtime: {error}");
        std::process::exit(exit::OSERR);
    })
}

/// The configuration, or exit 78 (EX_CONFIG) naming the file and every cause.
pub fn config_or_exit<C, E: std::error::Error>(
    program: &str,
    path: &std::path::Path,
    loaded: Result<C, E>,
) -> C {
    match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "{program}: invalid configuration {}: {}",
                path.display(),
                error_chain(&error)
            );
            std::process::exit(exit::CONFIG);
        }
    }
}

/// Bind every address in `listen` (in order), run `serve(listeners, shutdown)`
/// until Ctrl-C/SIGTERM, drain for at most `drain`, and return the exit code.
pub async fn serve_until_signal<E, Fut>(
    program: &str,
    listen: &[std::net::SocketAddr],
    drain: Duration,
    serve: impl FnOnce(
        Vec<tokio::net::TcpListener>,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Fut,
) -> i32
where
    E: std::error::Error + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
{
    let mut listeners = Vec::with_capacity(listen.len());
    for address in listen {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                eprintln!("{program}: cannot listen on {address}: {error}");
                return exit::UNAVAILABLE;
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Box::pin(async {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(serve(listeners, stop));
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown_signal() => {
            let _ = stop_tx.send(());
            match drain_within(drain, &mut server).await {
                Some(result) => result,
                None => return exit::SOFTWARE,
            }
        }
    };
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(error)) => {
            eprintln!("{program}: {}", error_chain(&error));
            exit::SOFTWARE
        }
        Err(panic) => {
            eprintln!("{program}: server task failed: {panic}");
            exit::SOFTWARE
        }
    }
}

/// One shutdown signal shared by several servers in a process: each call to
/// [`SharedShutdown::signal`] gives a future that completes once `shutdown` has.
#[derive(Debug, Clone)]
pub struct SharedShutdown {
    /// Turns true when the shutdown future completed.
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl SharedShutdown {
    /// Share `shutdown` (it is driven by a task of its own).
    pub fn new(shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (tx, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Self { stopped }
    }

    /// A future that completes when the shared shutdown has.
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_worker_thread_is_a_single_threaded_runtime_and_more_are_multi_threaded() {
        let flavor = |n| {
            build_runtime(n)
                .unwrap()
                .block_on(async { tokio::runtime::Handle::current().runtime_flavor() })
        };
        assert_eq!(flavor(Some(1)), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(2)), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(None), RuntimeFlavor::MultiThread);
        let workers = build_runtime(Some(3)).unwrap().metrics().num_workers();
        assert_eq!(workers, 3);
    }

    #[test]
    fn worker_threads_outside_the_bounds_name_the_setting() {
        assert_eq!(check_worker_threads(None).unwrap(), None);
        assert_eq!(check_worker_threads(Some(1)).unwrap(), Some(1));
        for n in [0, MAX_WORKER_THREADS + 1] {
            let error = check_worker_threads(Some(n)).unwrap_err();
            assert!(error.to_string().starts_with("worker_threads: "), "{error}");
        }
    }
}
