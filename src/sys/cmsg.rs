//! The send-side control-message encoder: the only code in the crate that
//! writes `cmsghdr` bytes.
//!
//! As quinn-udp's `Encoder`, it writes into an aligned buffer that belongs
//! to one message and is the only thing that sets that message's
//! `msg_control` and `msg_controllen` ([`Encoder::finish`]): a header
//! half-built, or promising more bytes than were written, cannot reach
//! `sendmsg`. A message that does not fit is an error naming what did not
//! fit, never dropped in silence.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;

use super::{cmsg_align, cmsg_len, cmsg_space, CmsgBuf, CMSG_ALIGN, CMSG_HDR, PKTINFO_LEN};

/// `CMSG_SPACE(sizeof(struct in_pktinfo))`.
pub(crate) const PKTINFO_SPACE: usize = cmsg_space(PKTINFO_LEN);
/// `CMSG_SPACE(sizeof(int))`: `IP_TTL`, `IP_TOS` as senders give them.
pub(crate) const INT_SPACE: usize = cmsg_space(size_of::<libc::c_int>());
/// `CMSG_SPACE(sizeof(u16))`: `UDP_SEGMENT`.
pub(crate) const SEGMENT_SPACE: usize = cmsg_space(size_of::<u16>());

/// Control bytes of one sent message: room for the largest set any sender
/// of this crate attaches (`IP_PKTINFO`, `IP_TTL` and `IP_TOS` of a
/// `ControlMessage`; `UDP_SEGMENT` alone). The senders' needs are checked
/// against it at compile time where they are computed.
pub(crate) const SEND_CONTROL_LEN: usize = PKTINFO_SPACE + 2 * INT_SPACE;
const _: () = assert!(SEGMENT_SPACE <= SEND_CONTROL_LEN);
const _: () = assert!(SEND_CONTROL_LEN.is_multiple_of(CMSG_ALIGN));

/// One send's control buffer, aligned for `cmsghdr`.
pub(crate) type SendControl = CmsgBuf<SEND_CONTROL_LEN>;

/// Writes control messages one after the other into an aligned buffer.
pub(crate) struct Encoder<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder over a whole aligned buffer.
    pub(crate) fn new<const N: usize>(buf: &'a mut CmsgBuf<N>) -> Encoder<'a> {
        Encoder {
            buf: &mut buf.0,
            len: 0,
        }
    }

    /// An encoder over a control slot of `mmsg`, which starts at a
    /// `CMSG_ALIGN` boundary.
    pub(super) fn over_slot(buf: &'a mut [u8]) -> Encoder<'a> {
        debug_assert_eq!(buf.as_ptr() as usize % CMSG_ALIGN, 0);
        Encoder { buf, len: 0 }
    }

    /// Bytes written so far (whole `CMSG_SPACE`s).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The room the buffer has in all.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends one message of `level` and `kind` carrying `data`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when its `CMSG_SPACE` does not fit what is left of
    /// the buffer; nothing is written then.
    pub(crate) fn push(
        &mut self,
        level: libc::c_int,
        kind: libc::c_int,
        data: &[u8],
    ) -> io::Result<()> {
        let space = cmsg_space(data.len());
        let room = self.buf.len() - self.len;
        if space > room {
            return Err(crate::error::invalid(format!(
                "control data does not fit the {}-byte send control buffer: a message of \
                 level {level} type {kind} needs {space} bytes and {room} are left",
                self.buf.len()
            )));
        }
        let slot = &mut self.buf[self.len..self.len + space];
        slot.fill(0);
        // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }
        // (the layout is asserted in the parent module).
        const W: usize = size_of::<usize>();
        slot[..W].copy_from_slice(&cmsg_len(data.len()).to_ne_bytes());
        slot[W..W + 4].copy_from_slice(&level.to_ne_bytes());
        slot[W + 4..W + 8].copy_from_slice(&kind.to_ne_bytes());
        let at = cmsg_align(CMSG_HDR);
        slot[at..at + data.len()].copy_from_slice(data);
        self.len += space;
        Ok(())
    }

    /// `IP_PKTINFO`: send through interface `ifindex` (0: by route) from
    /// local address `spec_dst` (`0.0.0.0`: by route).
    pub(crate) fn ip_pktinfo(&mut self, ifindex: u32, spec_dst: Ipv4Addr) -> io::Result<()> {
        let mut data = [0u8; PKTINFO_LEN];
        // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
        data[0..4].copy_from_slice(&(ifindex as libc::c_int).to_ne_bytes());
        data[4..8].copy_from_slice(&spec_dst.octets());
        self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &data)
    }

    /// `IP_TTL` of this packet (an `int`).
    pub(crate) fn ip_ttl(&mut self, ttl: u8) -> io::Result<()> {
        let data = libc::c_int::from(ttl).to_ne_bytes();
        self.push(libc::IPPROTO_IP, libc::IP_TTL, &data)
    }

    /// `IP_TOS` of this packet (an `int`).
    pub(crate) fn ip_tos(&mut self, tos: u8) -> io::Result<()> {
        let data = libc::c_int::from(tos).to_ne_bytes();
        self.push(libc::IPPROTO_IP, libc::IP_TOS, &data)
    }

    /// `UDP_SEGMENT`: the buffer is sent as datagrams of `size` bytes (a `u16`).
    pub(crate) fn udp_segment(&mut self, size: u16) -> io::Result<()> {
        self.push(libc::IPPROTO_UDP, super::UDP_SEGMENT, &size.to_ne_bytes())
    }

    /// The bytes written so far.
    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Hands what was written to `hdr`: its control pointer and length
    /// (none at all when nothing was written, as the kernel prefers).
    pub(super) fn finish(self, hdr: &mut libc::msghdr) {
        if self.len == 0 {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        } else {
            hdr.msg_control = self.buf.as_mut_ptr().cast();
            hdr.msg_controllen = self.len as _;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_that_does_not_fit_is_an_error_and_writes_nothing() {
        let mut buf = CmsgBuf::<40>::new();
        let mut enc = Encoder::new(&mut buf);
        enc.ip_ttl(9).unwrap();
        assert_eq!(enc.len(), INT_SPACE);
        // IP_PKTINFO needs 32 bytes on 64-bit Linux; 16 are left.
        let e = enc.ip_pktinfo(1, Ipv4Addr::LOCALHOST).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let text = e.to_string();
        assert!(
            text.contains("does not fit") && text.contains(&format!("{PKTINFO_SPACE} bytes")),
            "{text}"
        );
        assert_eq!(
            enc.len(),
            INT_SPACE,
            "nothing written by the refused message"
        );
        // Exactly full is fine; one byte more is not.
        let mut exact = CmsgBuf::<{ 2 * INT_SPACE }>::new();
        let mut enc = Encoder::new(&mut exact);
        enc.ip_ttl(1).unwrap();
        enc.ip_tos(2).unwrap();
        assert!(enc.udp_segment(1000).is_err());
        assert_eq!(enc.len(), enc.capacity());
    }

    #[test]
    fn the_largest_send_set_fills_the_send_buffer_exactly() {
        let mut buf = SendControl::new();
        let mut enc = Encoder::new(&mut buf);
        enc.ip_pktinfo(1, Ipv4Addr::LOCALHOST).unwrap();
        enc.ip_ttl(64).unwrap();
        enc.ip_tos(0x28).unwrap();
        assert_eq!(enc.len(), SEND_CONTROL_LEN);
        assert!(enc.ip_ttl(1).is_err(), "a fourth message does not fit");
    }

    #[test]
    fn finish_sets_the_message_control_fields() {
        // SAFETY: all-zero bytes are a valid msghdr.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut buf = SendControl::new();
        let ptr = buf.0.as_ptr();
        let mut enc = Encoder::new(&mut buf);
        enc.udp_segment(1200).unwrap();
        enc.finish(&mut hdr);
        assert_eq!(hdr.msg_controllen as usize, SEGMENT_SPACE);
        assert_eq!(hdr.msg_control.cast_const().cast::<u8>(), ptr);

        let mut empty = SendControl::new();
        Encoder::new(&mut empty).finish(&mut hdr);
        assert!(hdr.msg_control.is_null());
        assert_eq!(hdr.msg_controllen, 0);
    }

    #[test]
    fn written_messages_walk_back_as_written() {
        let mut buf = SendControl::new();
        let mut enc = Encoder::new(&mut buf);
        enc.ip_pktinfo(7, Ipv4Addr::new(127, 0, 0, 2)).unwrap();
        enc.ip_tos(0x2e).unwrap();
        let mut seen = Vec::new();
        super::super::for_each_cmsg(enc.as_bytes(), |level, kind, data| {
            seen.push((level, kind, data.to_vec()));
        });
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].0, seen[0].1), (libc::IPPROTO_IP, libc::IP_PKTINFO));
        assert_eq!(
            super::super::parse_pktinfo(&seen[0].2),
            Some((7, Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!((seen[1].0, seen[1].1), (libc::IPPROTO_IP, libc::IP_TOS));
        assert_eq!(seen[1].2, 0x2e_i32.to_ne_bytes());
    }
}
