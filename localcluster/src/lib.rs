//! Real processes on one machine, for `make dev` and the tests.
//!
//! # Layout
//! - [`etcd`] — etcd clusters (one or three members) on free loopback ports.
//! - [`process`] — child processes that are killed when their handle drops.
//! - [`ports`] — free loopback ports.
//! - [`processes`] — a whole cluster as real processes (etcd, agents,
//!   coordinators), each killable, pausable and restartable by pid.
//! - [`proxy`] — a fault-injecting TCP proxy per directed link (blackhole, delay,
//!   reset, refuse).
//!
//! The `devcluster` binary (what `make dev` runs) puts these together into three
//! regions, each with its shards' etcd clusters and a region agent, plus one
//! coordinator.

pub mod certs;
pub mod etcd;
pub mod ports;
pub mod process;
pub mod processes;
pub mod proxy;

pub use certs::{CertError, DevCa, Role};
pub use etcd::{EtcdCluster, EtcdError, EtcdMember, MemberPorts};
pub use ports::free_port;
pub use process::{ManagedProcess, ProcessError};
pub use processes::{
    ClusterError, ClusterTls, CoordinatorSpec, Layout, ProcessCluster, RegionEtcdTls, channel,
};
pub use proxy::{Direction, FaultProxy, Faults};
