//! Tokio glue (feature `tokio`, off by default): the crate's sockets,
//! channel and handle for async code.
//!
//! - [`AsyncPacketConn`]: a [`PacketConn`](crate::PacketConn) driven by
//!   tokio's own reactor (`AsyncFd`). A task awaits
//!   [`recv_batch`](AsyncPacketConn::recv_batch) (the same
//!   [`RecvBatch`](crate::RecvBatch): one `recvmmsg` per call, slots
//!   allocated once, nothing allocated per packet),
//!   [`send_batch`](AsyncPacketConn::send_batch), `recv_from` and
//!   `send_to`. Good for a few sockets read by tasks.
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

mod packet_conn;

pub use packet_conn::AsyncPacketConn;
