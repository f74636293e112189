//! IPv4 socket options, multicast, per-packet control messages, batched I/O
//! and a mio reactor for high-rate UDP feeds, on Linux.
//!
//! This crate gives Rust programs what Go's `golang.org/x/net/ipv4` gives Go
//! programs, without that package's Linux bugs, plus what a market-data
//! consumer needs beyond it. It is **Linux only**: on any other target it
//! does not compile.
//!
//! The guide below follows the four scenarios of Go's package doc.
//!
//! # Unicasting
//!
//! A TCP connection that carries an important flow can mark every packet's
//! type-of-service byte. [`Conn`] wraps a `TcpStream` for that; here the
//! packets are labelled DiffServ AF11 (assured forwarding class 1, low drop
//! precedence), which is TOS `0x28`:
//!
//! ```
//! use std::io::Write;
//! use std::net::{TcpListener, TcpStream};
//! use ipv4_reactor::Conn;
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = Conn::new(TcpStream::connect(listener.local_addr()?)?);
//! client.set_tos(0x28)?;
//! client.get_mut().write_all(b"an important flow")?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The same TOS and TTL options exist on datagram sockets ([`PacketConn`]),
//! UDP and raw `ip4:PROTO` alike.
//!
//! # Multicasting
//!
//! A receiver listens on a port, then joins groups on named interfaces.
//! Joining affects only the IP and link layers: the port does not matter to
//! the join. Interfaces are always named ([`Interface`]): by name, index or
//! address. Per-packet control messages tell which group a packet was sent
//! to and where it arrived; each is switched on with a [`ControlFlags`]
//! flag. Everything below stays on the loopback interface.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//! use ipv4_reactor::{ControlFlags, Interface, PacketConn};
//!
//! let lo = Interface::loopback();
//! let group = Ipv4Addr::new(239, 255, 10, 1);
//!
//! // Listen on a port, join the group on lo, ask for the destination,
//! // the arrival interface and the TTL of each packet.
//! let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
//! rx.set_multicast_all(false)?;
//! rx.join_group(&lo, group)?;
//! rx.set_control_message(ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::TTL, true)?;
//! rx.socket().set_read_timeout(Some(Duration::from_secs(2)))?;
//! let port = rx.local_addr()?.port();
//!
//! // Send through lo, with a multicast TTL of 2.
//! let tx = PacketConn::multicast_sender(&lo)?;
//! tx.set_multicast_ttl(2)?;
//! # std::thread::sleep(Duration::from_millis(200));
//! tx.send_to(b"tick", None, SocketAddrV4::new(group, port))?;
//!
//! let mut buf = [0u8; 1500];
//! let meta = rx.recv_from(&mut buf)?;
//! assert_eq!(&buf[..meta.len], b"tick");
//! assert_eq!(meta.cm.dst, Some(group)); // the group it was sent to
//! assert_eq!(meta.cm.ifindex, Some(1)); // arrived on lo
//! assert_eq!(meta.cm.ttl, Some(2));
//! assert_eq!(meta.src, tx.local_addr()?); // where it came from
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A market-data receiver is better built with
//! [`PacketConn::multicast_receiver`]: it binds the group address (so other
//! groups on the port stay out), sets `SO_REUSEADDR`, turns
//! `IP_MULTICAST_ALL` off and can size the receive buffer.
//!
//! # More multicasting
//!
//! One socket may join several groups, on one or several interfaces, and
//! tell them apart by the destination of each packet. Several sockets may
//! listen on one port with `SO_REUSEADDR` and each gets every packet of the
//! groups it joined. Groups can be left and joined again at any time.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use ipv4_reactor::{Interface, PacketConn};
//!
//! let lo = Interface::loopback();
//! let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
//! rx.join_group(&lo, Ipv4Addr::new(239, 255, 0, 248))?;
//! rx.join_group(&lo, Ipv4Addr::new(239, 255, 0, 249))?;
//! rx.leave_group(&lo, Ipv4Addr::new(239, 255, 0, 248))?;
//! rx.join_group(&lo, Ipv4Addr::new(239, 255, 0, 250))?;
//! // Leaving a group twice is an error, not a silent no-op.
//! assert!(rx.leave_group(&lo, Ipv4Addr::new(239, 255, 0, 248)).is_err());
//!
//! // Two receivers on one port, each joined on lo.
//! let group: SocketAddrV4 = "239.255.0.251:0".parse().unwrap();
//! let a = PacketConn::multicast_receiver(group, lo.clone()).build()?;
//! let port = a.local_addr()?.port();
//! let b = PacketConn::multicast_receiver(SocketAddrV4::new(*group.ip(), port), lo).build()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Source-specific multicasting
//!
//! With IGMPv3 a receiver can pick its sources. In *include* mode it joins a
//! (source, group) pair per wanted source; in *exclude* mode it joins the
//! group and then blocks the unwanted sources. Leaving the group drops its
//! source filters. On `lo`, every `127.x.y.z` address is local, so senders
//! bound to 127.0.0.2 and 127.0.0.3 are two distinct sources.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ipv4_reactor::{Interface, PacketConn};
//!
//! let lo = Interface::loopback();
//! let ssm_group = Ipv4Addr::new(232, 7, 8, 9);
//! let rx = PacketConn::bind_udp("0.0.0.0:0".parse().unwrap())?;
//!
//! // Include mode: only 127.0.0.2.
//! rx.join_source_group(&lo, ssm_group, Ipv4Addr::new(127, 0, 0, 2))?;
//! rx.leave_source_group(&lo, ssm_group, Ipv4Addr::new(127, 0, 0, 2))?;
//!
//! // Exclude mode: everyone but 127.0.0.3.
//! rx.join_group(&lo, ssm_group)?;
//! rx.block_source(&lo, ssm_group, Ipv4Addr::new(127, 0, 0, 3))?;
//! rx.unblock_source(&lo, ssm_group, Ipv4Addr::new(127, 0, 0, 3))?;
//! rx.leave_group(&lo, ssm_group)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Source-specific multicast needs IGMPv3 on the network, and a strict
//! `rp_filter` drops feeds whose source routes back through another
//! interface.
//!
//! # Batches
//!
//! A feed at hundreds of thousands of packets a second wants one system
//! call per batch, not per packet. [`RecvBatch`] receives up to N packets
//! per `recvmmsg` into slots allocated once, each with its own control
//! buffer, and reports per packet what a consumer must never miss: a cut
//! payload, lost control data, the socket's kernel drops since the previous
//! packet. [`SendBatch`] sends N per `sendmmsg`. Neither allocates per call.
//!
//! ```
//! use ipv4_reactor::{ControlFlags, Message, PacketConn, RecvBatch, SendBatch};
//!
//! let flags = ControlFlags::DROPS | ControlFlags::TTL;
//! let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
//! rx.set_control_flags(flags)?;
//! rx.set_nonblocking(true)?;
//! let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
//! let payloads: Vec<[u8; 8]> = (0..10u64).map(u64::to_be_bytes).collect();
//! let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, rx.local_addr().unwrap())).collect();
//! SendBatch::new(64)?.send_all(&tx, &msgs)?;
//!
//! let mut batch = RecvBatch::new(64, 2048, flags)?;
//! let n = batch.recv(&rx)?;
//! for p in batch.iter() {
//!     assert!(!p.truncated() && !p.control_truncated());
//!     assert_eq!(p.drops_before, 0);
//! }
//! assert_eq!(n, 10);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The reactor
//!
//! [`reactor::Reactor`] owns packet sockets on one thread, drains each in
//! batches with a fairness budget and hands every packet to a handler
//! (borrowed, no copy) or to a [`reactor::ChannelSink`] (copied once into a
//! buffer per receive batch, for another thread); a [`reactor::Handle`] steers it from
//! other threads. See the [`reactor`] module for the whole chapter.
//!
//! # Optional features
//!
//! Both are off by default, and the default dependency tree has neither.
//!
//! - `tokio`: the `tokio` module (`AsyncPacketConn`, `run_reactor`), the
//!   async side of [`reactor::ChannelSink`] and [`reactor::Handle`] calls
//!   that can be awaited.
//! - `serde`: `Serialize` and `Deserialize` for what the crate measures, so
//!   that a service can export it: [`ControlMessage`], [`ControlFlags`],
//!   [`RecvMeta`], [`RecvFlags`], [`RecvCounters`],
//!   [`reactor::SocketCounters`], [`reactor::ReactorCounters`],
//!   [`reactor::FeedCounters`], [`feed::SeqCounters`],
//!   [`feed::LineCounters`], [`feed::FeedEvent`], [`feed::Delivery`],
//!   [`feed::Verdict`], [`RejoinReport`], [`Interface`] and
//!   [`InterfaceInfo`]. Keys are the Rust field names; addresses are
//!   strings (`"127.0.0.1"`, `"127.0.0.1:5000"`), times and durations
//!   serde's own forms (`{"secs_since_epoch": .., "nanos_since_epoch": ..}`,
//!   `{"secs": .., "nanos": ..}`), enums externally tagged
//!   (`{"GapOpened": {"from": 4, "to": 4}}`). [`ControlFlags`] is a list of
//!   flag names (`["TTL", "DST"]`), its bits in compact formats. Counters
//!   read from input without a field (written by an older version) read
//!   it as zero.
//!
//! # Errors
//!
//! Every call returns `std::io::Result`. Bad arguments (a unicast group, a
//! multicast source, an unknown interface, TTL 0) fail before any system
//! call; kernel errors carry what was being done. Both carry an [`Error`]
//! inside the `io::Error`; see [`Error::of`].

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
// `unsafe` lives in `sys` alone, which allows it for itself.
#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "ipv4-reactor supports Linux only: it is built on Linux socket options, recvmmsg and sendmmsg"
);

mod batch;
mod conn;
mod control;
mod cpu;
pub mod error;
pub mod feed;
pub mod header;
pub mod icmp;
mod interface;
mod membership;
mod meta;
pub mod netns;
mod options;
mod packet_conn;
mod raw_conn;
pub mod reactor;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

pub use batch::{Message, Packet, Packets, RecvBatch, RecvCounters, SendBatch};
pub use conn::Conn;
pub use control::{ControlFlags, ControlMessage};
pub use cpu::pin_current_thread;
pub use error::{Error, Limit};
pub use interface::{Interface, InterfaceInfo};
pub use membership::RejoinReport;
pub use meta::{RecvFlags, RecvMeta};
pub use options::BPF_MAX_INSTRUCTIONS;
pub use packet_conn::{PacketConn, ReceiverBuilder};
pub use raw_conn::{RawConn, RawPacket};
/// One classic BPF instruction (`struct sock_filter`), for
/// [`PacketConn::attach_filter`]: socket2's type, re-exported.
pub use socket2::SockFilter;

/// Every Rust snippet of README.md, compiled and run as a doc-test by
/// `cargo test`, so that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
