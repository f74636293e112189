//! Helpers shared by the tokio tests (feature `tokio`): the counting global
//! allocator of tests/util, sockets on lo, a runtime.
//!
//! Network safety: unicast UDP on 127.0.0.1, multicast sent through lo only.

#![allow(dead_code)] // each test file uses its own share

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipv4_reactor::PacketConn;

/// The counting allocator and its counted sections are the other tests'
/// (`tests/util/counting_alloc.rs`).
#[path = "../util/counting_alloc.rs"]
mod counting_alloc;

#[allow(unused_imports)] // tokio_handle counts nothing
pub use counting_alloc::{Counter, CountingAlloc};

pub const PATIENCE: Duration = Duration::from_secs(5);

pub fn udp() -> PacketConn {
    PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on 127.0.0.1")
}

/// A current-thread runtime with I/O and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}
