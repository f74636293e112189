//! [`AsyncPacketConn`]: a [`PacketConn`] driven by tokio's reactor.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;

use crate::batch::{Message, RecvBatch, SendBatch};
use crate::control::ControlMessage;
use crate::meta::RecvMeta;
use crate::packet_conn::PacketConn;

/// A [`PacketConn`] registered with the current tokio runtime: the batch
/// and single-packet calls of the socket, as futures that wait for
/// readiness instead of returning `WouldBlock`.
///
/// Each call tries the socket first and waits only when the kernel has
/// nothing queued (or no room to send), so a busy socket is read without
/// waiting; a `WouldBlock` clears tokio's readiness and the next call
/// waits for a new event. Nothing here allocates: [`recv_batch`] fills the
/// slots of the caller's [`RecvBatch`] as [`RecvBatch::recv`] does, with
/// the same per-packet control messages, truncation flags and drop counts.
///
/// The socket is put in non-blocking mode. Every future is cancel safe:
/// dropped before it completes, it has received or sent nothing.
///
/// [`recv_batch`]: AsyncPacketConn::recv_batch
///
/// ```
/// use ipv4_reactor::tokio::AsyncPacketConn;
/// use ipv4_reactor::{ControlFlags, PacketConn, RecvBatch};
///
/// # #[::tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let rx = AsyncPacketConn::new(PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?)?;
/// let tx = AsyncPacketConn::new(PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?)?;
/// tx.send_to(b"quote", None, rx.local_addr()?).await?;
///
/// let mut batch = RecvBatch::new(64, 2048, ControlFlags::NONE)?;
/// let n = rx.recv_batch(&mut batch).await?;
/// assert_eq!(n, 1);
/// assert_eq!(batch.get(0).unwrap().payload, b"quote");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncPacketConn {
    fd: AsyncFd<PacketConn>,
}

impl AsyncPacketConn {
    /// Puts `conn` in non-blocking mode and registers it with the current
    /// tokio runtime (the one this is called from: inside a task, a
    /// `block_on` or a runtime's `enter` guard).
    ///
    /// # Errors
    ///
    /// Called outside a tokio runtime: an error of kind `Other` that says
    /// so, and `conn` is closed. Failing to set non-blocking mode or to
    /// register with the runtime: the kernel's error.
    ///
    /// # Panics
    ///
    /// Tokio panics, as for any of its sockets, when the runtime was built
    /// without its I/O driver (`Builder::enable_io` or `enable_all`;
    /// `#[tokio::main]` has it).
    pub fn new(conn: PacketConn) -> io::Result<AsyncPacketConn> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "AsyncPacketConn::new was called outside a tokio runtime: call it from a task, a block_on or under a runtime's enter guard",
            ));
        }
        conn.set_nonblocking(true)?;
        Ok(AsyncPacketConn {
            fd: crate::sys::async_fd::register(conn)?,
        })
    }

    /// The socket, for its options (joins, flags, counters).
    pub fn get_ref(&self) -> &PacketConn {
        self.fd.get_ref()
    }

    /// Deregisters the socket from the runtime and gives it back (still
    /// non-blocking).
    pub fn into_inner(self) -> PacketConn {
        self.fd.into_inner()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.get_ref().local_addr()
    }

    /// Waits until packets are queued, then receives what is queued, up to
    /// the number of slots, in one `recvmmsg`: returns how many packets
    /// arrived (at least 1), readable through `batch` as after
    /// [`RecvBatch::recv`].
    ///
    /// Errors: what [`RecvBatch::recv`] returns, except `WouldBlock`
    /// (waited for) and `Interrupted` (tried again).
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| batch.recv(fd.get_ref())) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                // WouldBlock: readiness cleared, wait for the next event.
                Err(_would_block) => {}
            }
        }
    }

    /// The poll form of [`recv_batch`](Self::recv_batch), for hand-written
    /// futures and streams: `Ready(Ok(n))` with `n >= 1` packets in
    /// `batch`, or `Pending` with `cx`'s waker registered.
    pub fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        batch: &mut RecvBatch,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| batch.recv(fd.get_ref())) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    /// Waits for room, then sends the first `min(msgs.len(), capacity)`
    /// messages in one `sendmmsg` and returns how many the kernel took
    /// (at least 1; 0 only for no messages). See [`SendBatch::send`].
    pub async fn send_batch(
        &self,
        batch: &mut SendBatch,
        msgs: &[Message<'_>],
    ) -> io::Result<usize> {
        if msgs.is_empty() {
            return Ok(0);
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| batch.send(fd.get_ref(), msgs)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// Sends every message, waiting for room whenever the socket's buffer
    /// is full. When a message is refused after others went out (a message
    /// too long, an unreachable destination), it returns the count sent so
    /// far; the error comes back from the next call, which starts at the
    /// refused message (as [`SendBatch::send_all`]).
    pub async fn send_batch_all(
        &self,
        batch: &mut SendBatch,
        msgs: &[Message<'_>],
    ) -> io::Result<usize> {
        let mut sent = 0;
        while sent < msgs.len() {
            match self.send_batch(batch, &msgs[sent..]).await {
                Ok(n) => sent += n,
                Err(_) if sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Waits for a packet and receives it into `buf`; see
    /// [`PacketConn::recv_from`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().recv_from(buf)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// Waits for room and sends `buf` to `dst`, with the per-packet options
    /// of `cm` if given; see [`PacketConn::send_to`].
    pub async fn send_to(
        &self,
        buf: &[u8],
        cm: Option<&ControlMessage>,
        dst: SocketAddrV4,
    ) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| fd.get_ref().send_to(buf, cm, dst)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }
}

impl AsRawFd for AsyncPacketConn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
