//! Free loopback ports.
//!
//! A port is found by binding `127.0.0.1:0` and reading what the kernel chose.
//! Ports handed out are remembered for the life of the process, so two etcd
//! members started by one test run never get the same one even after the probe
//! socket is closed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A loopback port nobody listens on now and this process has not handed out.
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if handed_out()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
}
