//! [`RawConn`]: whole IPv4 packets, header included (`SOCK_RAW` with
//! `IP_HDRINCL`), as Go's `ipv4.RawConn`.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::control::ControlMessage;
use crate::error::Error;
use crate::header::{Header, HeaderError, MAX_HEADER_LEN};
use crate::meta::RecvMeta;
use crate::packet_conn::PacketConn;
use crate::sys;

/// A raw IPv4 socket that reads and writes whole packets, IP header
/// included. Needs CAP_NET_RAW.
///
/// Every option of [`PacketConn`] (multicast interface, joins, source
/// filters, control messages, ICMP and BPF filters) is available through
/// `Deref`; those that shape the headers the kernel builds (TTL, TOS) do
/// not apply to packets written with a header of their own. To read packets in the [`Reactor`](crate::reactor::Reactor),
/// register [`into_packet_conn`](Self::into_packet_conn): its packets
/// arrive header first, to be parsed with [`Header::parse`].
///
/// ```no_run
/// use std::net::Ipv4Addr;
/// use ipv4_reactor::header::{Header, Protocol};
/// use ipv4_reactor::{icmp, RawConn};
///
/// let raw = RawConn::new(Protocol::Icmp.into(), Ipv4Addr::LOCALHOST)?;
/// let echo = icmp::build_echo_request(1, 1, b"ping");
/// let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Icmp);
/// h.ttl = 8;
/// raw.write_to(&h, &echo, None)?;
///
/// let mut buf = [0u8; 1500];
/// let p = raw.read_from(&mut buf)?;
/// println!("{}: {} bytes, truncated: {}", p.header, p.payload.len(), p.meta.truncated());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct RawConn {
    conn: PacketConn,
}

impl RawConn {
    /// A raw socket for IP protocol `protocol` (e.g. 1 for ICMP, 17 for
    /// UDP, 253 for experiments) with `IP_HDRINCL` on, bound to `local`
    /// (`0.0.0.0` for any). It receives a copy of every packet of that
    /// protocol addressed to this host.
    pub fn new(protocol: u8, local: Ipv4Addr) -> io::Result<RawConn> {
        let socket = crate::packet_conn::raw_socket(protocol, local, true)?;
        Ok(RawConn {
            conn: PacketConn::from_raw_with_header(socket),
        })
    }

    /// Reads one packet into `buf`: its parsed header, its payload (within
    /// `buf`, as long as the header's total length says, or what fit) and
    /// what came with it ([`RecvMeta`]: the bytes read, header included,
    /// the sender, the control messages asked for, the truncation flags). A
    /// malformed header is an error of kind `InvalidData` naming what is
    /// wrong; a bad checksum is not an error (see
    /// [`header::ParseInfo`](crate::header::ParseInfo)), and a payload cut
    /// to fit `buf` shows in [`RecvMeta::truncated`]. A `buf` too short for
    /// the IP header itself (under 20 bytes, or under the header's length
    /// with options) is an error of kind `InvalidInput` saying the packet
    /// was truncated: the kernel cut it and it is lost.
    pub fn read_from<'b>(&self, buf: &'b mut [u8]) -> io::Result<RawPacket<'b>> {
        let meta = self.conn.recv_from(buf)?;
        let buf: &'b [u8] = buf;
        let packet = &buf[..meta.len];
        let (header, info) = match Header::parse(packet) {
            Ok(v) => v,
            // A packet cut to fit the buffer is reported by its flags, not
            // as a malformed header.
            Err(HeaderError::TotalLenBeyondBuffer { .. }) if meta.truncated() => {
                let view = crate::header::HeaderView::new_checked(packet)?;
                let header = Header::from_view(&view);
                let hl = view.header_len();
                return Ok(RawPacket {
                    header,
                    payload: &packet[hl..],
                    meta,
                });
            }
            // A buffer too short for the header itself: the packet was cut
            // by the kernel, not malformed (and is lost).
            Err(HeaderError::Truncated { .. } | HeaderError::IhlBeyondBuffer { .. })
                if meta.truncated() =>
            {
                let needed = crate::packet_conn::header_beyond(packet).unwrap_or(MAX_HEADER_LEN);
                return Err(crate::packet_conn::header_cut_error(buf.len(), needed));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(RawPacket {
            header,
            payload: &buf[info.payload_range()],
            meta,
        })
    }

    /// Writes `header` and `payload` as one packet, header as given: the
    /// header's total length is set from the payload, and a zero checksum,
    /// ID or source address is filled by the kernel.
    ///
    /// With `cm`: `ttl` and `tos` replace the header's fields; `dst`
    /// picks the route (the header's destination is still sent as
    /// written); `ifindex` picks the interface and `local` fills a zero
    /// header source. Without `cm`, the route is the header's destination.
    /// Returns the bytes written, header included.
    ///
    /// Socket options that shape headers the kernel builds (`set_ttl`,
    /// `set_tos`, `set_multicast_ttl`) do not apply here: the header is
    /// yours.
    pub fn write_to(
        &self,
        header: &Header,
        payload: &[u8],
        cm: Option<&ControlMessage>,
    ) -> io::Result<usize> {
        let mut h = header.clone();
        h.set_payload_len(payload.len())?;
        if let Some(cm) = cm {
            h.ttl = cm.ttl.unwrap_or(h.ttl);
            h.tos = cm.tos.unwrap_or(h.tos);
        }
        let mut hbuf = [0u8; MAX_HEADER_LEN];
        let hl = h.emit(&mut hbuf)?;
        let dst = cm.and_then(|c| c.dst).unwrap_or(h.dst);
        let control = |enc: &mut sys::cmsg::Encoder<'_>| match cm {
            Some(cm) => {
                // TTL and TOS went into the header itself.
                let send = ControlMessage {
                    ifindex: cm.ifindex,
                    local: cm.local,
                    ..ControlMessage::default()
                };
                send.encode(enc)
            }
            None => Ok(()),
        };
        sys::sendmsg_vectored(
            self.conn.as_raw_fd(),
            &[IoSlice::new(&hbuf[..hl]), IoSlice::new(payload)],
            Some(SocketAddrV4::new(dst, 0)),
            control,
            0,
        )
        .map_err(|e| Error::os(format!("writing a raw packet to {dst}"), e))
    }

    /// The socket as a [`PacketConn`] whose reads keep the IP header, for
    /// the reactor.
    pub fn into_packet_conn(self) -> PacketConn {
        self.conn
    }
}

/// One packet read by [`RawConn::read_from`]: its header, its payload
/// (borrowed from the read buffer) and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawPacket<'a> {
    /// The packet's IP header, parsed and checked.
    pub header: Header,
    /// The payload, after the header and its options: as long as the
    /// header's total length says, or what fit when the packet was cut
    /// ([`RecvMeta::truncated`]).
    pub payload: &'a [u8],
    /// The bytes read (header included), the sender, the control messages
    /// the socket asked for and the truncation flags.
    pub meta: RecvMeta,
}

impl Deref for RawConn {
    type Target = PacketConn;
    fn deref(&self) -> &PacketConn {
        &self.conn
    }
}

impl AsFd for RawConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

impl AsRawFd for RawConn {
    fn as_raw_fd(&self) -> RawFd {
        self.conn.as_raw_fd()
    }
}

impl From<RawConn> for OwnedFd {
    fn from(c: RawConn) -> OwnedFd {
        c.conn.into()
    }
}

impl From<RawConn> for PacketConn {
    fn from(c: RawConn) -> PacketConn {
        c.conn
    }
}
