//! What one receive returns besides the data: [`RecvMeta`] (length,
//! source, control messages) and its [`RecvFlags`] (truncation).

use std::net::SocketAddrV4;

use crate::control::ControlMessage;

/// What one [`PacketConn::recv_from`](crate::PacketConn::recv_from) returned
/// besides the bytes it wrote into the buffer (quinn-udp's `RecvMeta`).
///
/// ```
/// use ipv4_reactor::{ControlFlags, PacketConn};
///
/// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// rx.set_control_flags(ControlFlags::TTL)?;
/// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// tx.send_to(b"hello", None, rx.local_addr()?)?;
///
/// let mut buf = [0u8; 1500];
/// let meta = rx.recv_from(&mut buf)?;
/// assert_eq!(&buf[..meta.len], b"hello");
/// assert_eq!(meta.src, tx.local_addr()?);
/// assert_eq!(meta.cm.ttl, Some(tx.ttl()?));
/// assert!(!meta.truncated() && !meta.control_truncated());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RecvMeta {
    /// The bytes written at the start of the buffer: the payload (on a raw
    /// `ip4:PROTO` socket, what follows the IP header, which is removed);
    /// on a [`RawConn`](crate::RawConn), the whole packet, header included.
    /// At most the buffer's length: see [`RecvFlags::truncated`].
    pub len: usize,
    /// Where the packet came from: the sender's address and port (port 0 on
    /// raw sockets; `0.0.0.0:0` in the rare case the kernel gives no
    /// address). Always filled, whatever the control flags.
    pub src: SocketAddrV4,
    /// The control messages the socket's
    /// [`control_flags`](crate::PacketConn::control_flags) asked for, each
    /// `Some` when asked for and delivered.
    pub cm: ControlMessage,
    /// Truncation of the payload or of the control messages.
    pub flags: RecvFlags,
}

impl RecvMeta {
    /// Whether the packet was longer than the buffer and was cut.
    pub fn truncated(&self) -> bool {
        self.flags.truncated
    }

    /// Whether control messages were lost for lack of room: `cm` is
    /// incomplete.
    pub fn control_truncated(&self) -> bool {
        self.flags.control_truncated
    }
}

/// What the kernel said about one received packet besides its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct RecvFlags {
    /// The payload was longer than the buffer and was cut (`MSG_TRUNC`).
    pub truncated: bool,
    /// Some control messages did not fit the control buffer and were lost
    /// (`MSG_CTRUNC`): the `ControlMessage` is incomplete.
    pub control_truncated: bool,
}

impl RecvFlags {
    pub(crate) fn from_msg_flags(flags: libc::c_int) -> RecvFlags {
        RecvFlags {
            truncated: flags & libc::MSG_TRUNC != 0,
            control_truncated: flags & libc::MSG_CTRUNC != 0,
        }
    }
}
