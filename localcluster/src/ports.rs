//! Free loopback ports.
//!
//! A port is found by binding `127.0.0.1:0` and reading what the kernel chose.
//! Between that probe and the moment etcd or an agent binds the port, another
//! test process (nextest runs tests as separate processes, two at a time) could be
//! handed the same port. So every port handed out is also reserved across
//! processes: an exclusive lock on the file `<tmp>/globallock-ports/<port>`, held
//! until this process exits (the kernel drops it then, crashes included). Within
//! the process, ports handed out are remembered for its whole life.

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// Ports this process handed out, and the lock files that reserve them.
fn handed_out() -> &'static Mutex<(HashSet<u16>, Vec<File>)> {
    static PORTS: OnceLock<Mutex<(HashSet<u16>, Vec<File>)>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// Reserve `port` for this process's lifetime; `None` if another process holds it.
fn reserve_across_processes(port: u16) -> std::io::Result<Option<File>> {
    let dir = std::env::temp_dir().join("globallock-ports");
    std::fs::create_dir_all(&dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// A loopback port nobody listens on now, that this process has not handed out,
/// and that no other process using this function holds.
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut ports = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if ports.0.contains(&port) {
            continue;
        }
        if let Some(lock) = reserve_across_processes(port)? {
            ports.0.insert(port);
            ports.1.push(lock);
            return Ok(port);
        }
    }
}
