//! [`Conn`]: IP-level options of a stream (TCP) connection.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::options;

/// A TCP connection with IPv4 header options: Go's `ipv4.Conn`.
///
/// Marking a connection's packets, here as DiffServ assured forwarding class
/// 1, low drop precedence (AF11, TOS 0x28):
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use ipv4_reactor::Conn;
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let stream = TcpStream::connect(listener.local_addr()?)?;
/// let conn = Conn::new(stream);
/// conn.set_tos(0x28)?;
/// conn.set_ttl(16)?;
/// assert_eq!(conn.tos()?, 0x28);
/// assert_eq!(conn.ttl()?, 16);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    /// Wraps a connected (or listening) TCP socket.
    pub fn new(stream: TcpStream) -> Conn {
        Conn { stream }
    }

    /// The wrapped stream, for reading and writing.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    /// The `IP_TOS` byte on the connection's outgoing packets.
    pub fn tos(&self) -> io::Result<u8> {
        options::tos(self.as_fd())
    }

    /// Sets `IP_TOS` on the connection's outgoing packets.
    pub fn set_tos(&self, tos: u8) -> io::Result<()> {
        options::set_tos(self.as_fd(), tos)
    }

    /// The `IP_TTL` of the connection's outgoing packets.
    pub fn ttl(&self) -> io::Result<u8> {
        options::ttl(self.as_fd())
    }

    /// Sets `IP_TTL`: 1 to 255 (0 is an error).
    pub fn set_ttl(&self, ttl: u8) -> io::Result<()> {
        options::set_ttl(self.as_fd(), ttl)
    }
}

impl From<TcpStream> for Conn {
    fn from(stream: TcpStream) -> Conn {
        Conn::new(stream)
    }
}

impl From<Conn> for TcpStream {
    fn from(c: Conn) -> TcpStream {
        c.stream
    }
}

impl From<OwnedFd> for Conn {
    fn from(fd: OwnedFd) -> Conn {
        Conn::new(TcpStream::from(fd))
    }
}

impl From<Conn> for OwnedFd {
    fn from(c: Conn) -> OwnedFd {
        c.stream.into()
    }
}

impl From<socket2::Socket> for Conn {
    fn from(s: socket2::Socket) -> Conn {
        Conn::new(s.into())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}
