//! Tokio glue (feature `tokio`, off by default): the crate's sockets,
//! channel and handle for async code.
//!
//! Four ways in, from the closest to tokio to the furthest:
//!
//! - [`AsyncPacketConn`]: a [`PacketConn`](crate::PacketConn) driven by
//!   tokio's own reactor (`AsyncFd`). A task awaits
//!   [`recv_batch`](AsyncPacketConn::recv_batch) (the same
//!   [`RecvBatch`](crate::RecvBatch): one `recvmmsg` per call, slots
//!   allocated once, nothing allocated per packet),
//!   [`send_batch`](AsyncPacketConn::send_batch), `recv_from` and
//!   `send_to`. Good for a few sockets read by tasks.
//! - [`AsyncPacketReceiver`]: the async end of a
//!   [`ChannelSink`](crate::reactor::ChannelSink), from
//!   [`ChannelSink::bounded_async`](crate::reactor::ChannelSink::bounded_async).
//!   The crate's reactor reads the sockets on a thread of its own (pinned,
//!   spinning, a [`ReactorPool`](crate::reactor::ReactorPool)), and a task
//!   awaits the packets it hands over. Good for high rates: the runtime
//!   never sees the sockets.
//! - [`run_reactor`]: the crate's reactor nested in tokio, turned by a
//!   task whenever its epoll descriptor turns readable; its sockets,
//!   sources and timers share the runtime's threads.
//! - Async and non-blocking [`Handle`](crate::reactor::Handle) calls:
//!   `register_async`, `join_group_async`, `counters_async`... and
//!   [`Handle::call_async`](crate::reactor::Handle::call_async) for any
//!   call; `try_call` and the `try_*` forms queue a call and return a
//!   [`PendingCall`](crate::reactor::PendingCall) at once.
//!
//! # Example: a task reads a multicast group on lo
//!
//! ```
//! use std::net::SocketAddrV4;
//! use std::time::Duration;
//! use ipv4_reactor::tokio::AsyncPacketConn;
//! use ipv4_reactor::{ControlFlags, Interface, PacketConn, RecvBatch};
//!
//! # #[::tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let lo = Interface::loopback();
//! let group: SocketAddrV4 = "239.255.21.1:0".parse().unwrap();
//! let rx = PacketConn::multicast_receiver(group, lo.clone())
//!     .control(ControlFlags::DST | ControlFlags::DROPS)
//!     .build()?;
//! let dst = SocketAddrV4::new(*group.ip(), rx.local_addr()?.port());
//! let rx = AsyncPacketConn::new(rx)?;
//!
//! let tx = AsyncPacketConn::new(PacketConn::multicast_sender(&lo)?)?;
//! tokio::time::sleep(Duration::from_millis(200)).await; // a fresh join takes a moment on lo
//! for i in 0..3u8 {
//!     tx.send_to(&[i; 8], None, dst).await?;
//! }
//!
//! let mut batch = RecvBatch::new(64, 2048, ControlFlags::DST | ControlFlags::DROPS)?;
//! let mut seen = 0;
//! while seen < 3 {
//!     let n = tokio::time::timeout(Duration::from_secs(5), rx.recv_batch(&mut batch)).await??;
//!     for p in batch.iter() {
//!         assert_eq!(p.cm.dst, Some(*group.ip()));
//!         assert_eq!(p.drops_before, 0);
//!     }
//!     seen += n;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Example: a reactor thread hands packets to a task
//!
//! ```
//! use std::time::Duration;
//! use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
//! use ipv4_reactor::PacketConn;
//!
//! # #[::tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let (handle, reactor) = Reactor::builder().spawn()?;
//! let (sink, mut packets) = ChannelSink::bounded_async(4096, 2048, Overflow::DropNewest)?;
//! let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
//! let dst = rx.local_addr()?;
//! let key = handle.register_async(rx, sink).await?;
//!
//! let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
//! for i in 0..10u8 {
//!     tx.send_to(&[i; 8], None, dst)?;
//! }
//! let mut got = Vec::with_capacity(16);
//! while got.len() < 10 {
//!     tokio::time::timeout(Duration::from_secs(5), packets.recv_many(&mut got, 16)).await?;
//! }
//! assert!(got.iter().enumerate().all(|(i, p)| p.payload() == [i as u8; 8]));
//! assert_eq!(handle.socket_counters_async(key).await?.recv.packets, 10);
//!
//! handle.stop();
//! reactor.join().unwrap()?;
//! # Ok(())
//! # }
//! ```
//!
//! The example `tokio_ab_feed` (`cargo run --example tokio_ab_feed
//! --features tokio`) is a tokio service consuming an A/B feed.

pub(crate) mod channel;
mod nested;
mod packet_conn;

pub use channel::AsyncPacketReceiver;
pub use nested::run_reactor;
pub use packet_conn::AsyncPacketConn;
