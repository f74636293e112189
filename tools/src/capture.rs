//! `--pcap FILE`: a capture file that tcpdump and Wireshark read.
//!
//! The file is classic pcap with nanosecond timestamps (magic `a1b23c4d`)
//! and link type RAW (101): each record is an IPv4 packet, stamped with
//! its kernel receive time. A raw socket's packets are written as read. A
//! UDP socket hands over only the payload, so each datagram is written
//! behind an IPv4 and a UDP header rebuilt from what the kernel reported:
//! source and destination addresses and ports, TTL and TOS as received,
//! IP and UDP checksums computed. Fields the kernel does not report (IP
//! identification, flags) are zero.

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipv4_reactor::header::{checksum, Header, Protocol};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// The largest record: a whole IPv4 packet.
pub const SNAPLEN: u32 = 65_535;

const IP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// An open capture file.
pub struct Capture {
    writer: PcapWriter<BufWriter<File>>,
    /// Where a UDP datagram is assembled, reused from packet to packet.
    scratch: Vec<u8>,
    packets: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> io::Result<Capture> {
        let file = File::create(path)?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
        };
        let writer = PcapWriter::with_header(BufWriter::new(file), header).map_err(pcap_error)?;
        Ok(Capture {
            writer,
            scratch: Vec::with_capacity(2048),
            packets: 0,
        })
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes a whole IPv4 packet (header included) received at `at`.
    pub fn write_ipv4(&mut self, at: SystemTime, packet: &[u8]) -> io::Result<()> {
        let packet = &packet[..packet.len().min(SNAPLEN as usize)];
        let len = packet.len() as u32;
        self.writer
            .write_packet(&PcapPacket::new(since_epoch(at), len, packet))
            .map_err(pcap_error)?;
        self.packets += 1;
        Ok(())
    }

    /// Writes a UDP datagram with `payload` from `src` to `dst` received
    /// at `at` with `ttl` and `tos`, behind the headers it had.
    pub fn write_udp(
        &mut self,
        at: SystemTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        ttl: u8,
        tos: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        let max_payload = SNAPLEN as usize - IP_HEADER_LEN - UDP_HEADER_LEN;
        let payload = &payload[..payload.len().min(max_payload)];
        let udp_len = (UDP_HEADER_LEN + payload.len()) as u16;
        let buf = &mut self.scratch;
        buf.clear();
        buf.resize(IP_HEADER_LEN + UDP_HEADER_LEN, 0);
        buf.extend_from_slice(payload);

        // The UDP checksum covers a pseudo-header (source, destination,
        // zero, protocol, UDP length): 12 bytes, laid for the sum where the
        // IP header's last 12 bytes go, then overwritten by the header.
        buf[8..12].copy_from_slice(&src.ip().octets());
        buf[12..16].copy_from_slice(&dst.ip().octets());
        buf[16] = 0;
        buf[17] = Protocol::Udp.number();
        buf[18..20].copy_from_slice(&udp_len.to_be_bytes());
        let udp = &mut buf[IP_HEADER_LEN..IP_HEADER_LEN + UDP_HEADER_LEN];
        udp[0..2].copy_from_slice(&src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        let sum = match checksum(&buf[8..]) {
            0 => 0xffff, // zero means "no checksum" in UDP over IPv4
            sum => sum,
        };
        buf[IP_HEADER_LEN + 6..IP_HEADER_LEN + 8].copy_from_slice(&sum.to_be_bytes());

        let mut header = Header::new(*src.ip(), *dst.ip(), Protocol::Udp);
        header.ttl = ttl;
        header.tos = tos;
        header
            .set_payload_len(usize::from(udp_len))
            .map_err(io::Error::from)?;
        header
            .emit(&mut buf[..IP_HEADER_LEN])
            .map_err(io::Error::from)?;

        let len = buf.len() as u32;
        self.writer
            .write_packet(&PcapPacket::new(since_epoch(at), len, buf))
            .map_err(pcap_error)?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes the file; returns the packets it holds.
    pub fn finish(self) -> io::Result<u64> {
        let packets = self.packets;
        let mut file = self.writer.into_writer();
        file.flush()?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(packets)
    }
}

/// The kernel's receive time as a duration since the epoch (a time before
/// it, which no kernel stamp is, becomes zero).
fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn pcap_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn udp_records_carry_headers_that_check_out() {
        let dir = std::env::temp_dir().join(format!("ipv4r-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("udp.pcap");
        let mut cap = Capture::create(&path).unwrap();
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let src: SocketAddrV4 = "127.0.0.1:40000".parse().unwrap();
        let dst: SocketAddrV4 = "239.255.0.1:5000".parse().unwrap();
        cap.write_udp(at, src, dst, 3, 0x28, b"payload!").unwrap();
        assert_eq!(cap.finish().unwrap(), 1);

        let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
        let h = reader.header();
        assert_eq!(h.datalink, DataLink::RAW);
        assert_eq!(h.ts_resolution, TsResolution::NanoSecond);
        let p = reader.next_packet().unwrap().unwrap();
        assert_eq!(p.timestamp, Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(p.data.len(), 20 + 8 + 8);
        let (header, info) = Header::parse(&p.data).unwrap();
        assert!(info.checksum_ok, "IP header checksum");
        assert_eq!((header.ttl, header.tos), (3, 0x28));
        assert_eq!((header.src, header.dst), (*src.ip(), *dst.ip()));
        assert_eq!(header.total_len, 36);
        // UDP: ports, length, and a checksum that sums to zero with the
        // pseudo-header.
        let udp = &p.data[20..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 40000);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5000);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 16);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.ip().octets());
        pseudo.extend_from_slice(&dst.ip().octets());
        pseudo.extend_from_slice(&[0, 17, 0, 16]);
        pseudo.extend_from_slice(udp);
        assert_eq!(checksum(&pseudo), 0);
        assert_eq!(&udp[8..], b"payload!");
        assert!(reader.next_packet().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
