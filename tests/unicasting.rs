//! Scenario 1 of the crate docs: unicasting. TOS and TTL on TCP (`Conn`) and
//! UDP (`PacketConn`) sockets, what a peer sees on the wire and in control
//! messages, per-packet options, replying from the address a request
//! arrived on, and conversions. Unicast goes only to 127.0.0.0/8.

mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipv4_reactor::{Conn, ControlFlags, ControlMessage, PacketConn};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use util::{recv_one, send, send_with};

const AF11: u8 = 0x28;

fn localhost(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

fn udp_on(addr: Ipv4Addr) -> PacketConn {
    PacketConn::bind_udp(SocketAddrV4::new(addr, 0)).expect("binding UDP socket")
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn tcp_conn_tos_and_ttl_set_and_read_back() {
    let (client, _server) = tcp_pair();
    let default_ttl = client.ttl().unwrap();
    let conn = Conn::new(client);

    // The getters read the kernel: before anything is set they agree with std.
    assert_eq!(u32::from(conn.ttl().unwrap()), default_ttl);
    assert_eq!(conn.tos().unwrap(), 0);

    conn.set_tos(AF11).unwrap();
    conn.set_ttl(17).unwrap();
    assert_eq!(conn.tos().unwrap(), AF11);
    assert_eq!(conn.ttl().unwrap(), 17);

    // Cross-check with another reader of the same options.
    let sock = SockRef::from(conn.get_ref());
    assert_eq!(sock.tos_v4().unwrap(), u32::from(AF11));
    assert_eq!(sock.ttl_v4().unwrap(), 17);
    assert_eq!(conn.get_ref().ttl().unwrap(), 17);

    // And the other way round: set elsewhere, read through the crate.
    sock.set_tos_v4(0xb8).unwrap();
    sock.set_ttl_v4(200).unwrap();
    assert_eq!(conn.tos().unwrap(), 0xb8);
    assert_eq!(conn.ttl().unwrap(), 200);

    // The options survive unwrapping and wrapping again.
    let stream: TcpStream = conn.into();
    assert_eq!(stream.ttl().unwrap(), 200);
    let conn = Conn::from(OwnedFd::from(stream));
    assert_eq!(conn.tos().unwrap(), 0xb8);
}

/// Reads the TCP segments of one connection with a raw socket and checks
/// the TOS byte (and TTL) in the IP header of the client's data segments.
#[test]
fn tcp_peer_sees_the_tos_on_the_wire() {
    if !util::can_use_raw_sockets("tcp_peer_sees_the_tos_on_the_wire") {
        return;
    }
    // Open the raw socket first so that it sees every segment.
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw TCP socket");
    raw.bind(&localhost(0).into()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_port = listener.local_addr().unwrap().port();
    let mut client = Conn::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    let client_port = client.get_ref().local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();

    client.set_tos(AF11).unwrap();
    client.set_ttl(17).unwrap();
    client.get_mut().write_all(b"an important flow").unwrap();
    let mut got = [0u8; 17];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"an important flow");
    // The server set nothing: its segments are the negative control.
    server.write_all(b"ack").unwrap();
    let mut ack = [0u8; 3];
    client.get_mut().read_exact(&mut ack).unwrap();

    raw.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut client_data: Option<(u8, u8)> = None; // (tos, ttl)
    let mut server_data: Option<(u8, u8)> = None;
    let mut buf = vec![0u8; 65536];
    while (client_data.is_none() || server_data.is_none()) && Instant::now() < deadline {
        // `Read` for `&Socket`: recv(2) into initialised bytes.
        let n = match (&raw).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("raw recv: {e}"),
        };
        let Some((tos, ttl, sport, dport, payload_len)) = parse_tcp(&buf[..n]) else {
            continue;
        };
        if payload_len == 0 {
            continue;
        }
        if (sport, dport) == (client_port, server_port) {
            client_data.get_or_insert((tos, ttl));
        } else if (sport, dport) == (server_port, client_port) {
            server_data.get_or_insert((tos, ttl));
        }
    }
    let (tos, ttl) = client_data.expect("no data segment of the client was seen on the raw socket");
    // Byte 1 of the IP header; the two ECN bits are the kernel's to set.
    assert_eq!(
        tos & !0x03,
        AF11,
        "client data segment carries TOS {tos:#04x}"
    );
    assert_eq!(ttl, 17, "client data segment carries TTL {ttl}");
    let (tos, _) = server_data.expect("no data segment of the server was seen on the raw socket");
    assert_eq!(
        tos & !0x03,
        0,
        "server never set a TOS but its segment carries {tos:#04x}"
    );
}

/// (tos, ttl, source port, destination port, payload length) of an IPv4
/// TCP packet as a raw socket returns it.
fn parse_tcp(pkt: &[u8]) -> Option<(u8, u8, u16, u16, usize)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return None;
    }
    let hl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
    if hl < 20 || total < hl + 20 {
        return None;
    }
    let tcp = &pkt[hl..total];
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let thl = usize::from(tcp[12] >> 4) * 4;
    let payload_len = tcp.len().checked_sub(thl)?;
    Some((pkt[1], pkt[8], sport, dport, payload_len))
}

#[test]
fn udp_packet_conn_tos_and_ttl_set_and_read_back() {
    let conn = udp_on(Ipv4Addr::LOCALHOST);
    let default_ttl = conn.socket().ttl_v4().unwrap();
    assert_eq!(u32::from(conn.ttl().unwrap()), default_ttl);
    assert_eq!(conn.tos().unwrap(), 0);

    conn.set_tos(AF11).unwrap();
    conn.set_ttl(33).unwrap();
    assert_eq!(conn.tos().unwrap(), AF11);
    assert_eq!(conn.ttl().unwrap(), 33);
    assert_eq!(conn.socket().tos_v4().unwrap(), u32::from(AF11));
    assert_eq!(conn.socket().ttl_v4().unwrap(), 33);

    // Every TOS byte value, ECN bits included, round-trips on UDP.
    for tos in [0x00, 0x01, 0x2e << 2, 0xff] {
        conn.set_tos(tos).unwrap();
        assert_eq!(conn.tos().unwrap(), tos);
    }
    conn.set_ttl(255).unwrap();
    assert_eq!(conn.ttl().unwrap(), 255);
    conn.set_ttl(1).unwrap();
    assert_eq!(conn.ttl().unwrap(), 1);
}

#[test]
fn udp_receiver_sees_the_senders_tos_and_ttl() {
    let rx = udp_on(Ipv4Addr::LOCALHOST);
    rx.set_control_message(ControlFlags::TOS | ControlFlags::TTL, true)
        .unwrap();
    assert_eq!(rx.control_flags(), ControlFlags::TOS | ControlFlags::TTL);
    let tx = udp_on(Ipv4Addr::LOCALHOST);
    tx.set_tos(AF11).unwrap();
    tx.set_ttl(42).unwrap();

    send(&tx, b"marked", rx.local_addr().unwrap());
    let p = recv_one(&rx, "the marked datagram");
    assert_eq!(p.payload, b"marked");
    assert_eq!(p.cm.tos, Some(AF11));
    assert_eq!(p.cm.ttl, Some(42));
    assert_eq!(p.src, tx.local_addr().unwrap());
    // Only what was asked for.
    assert_eq!(p.cm.dst, None);
    assert_eq!(p.cm.ifindex, None);
    assert_eq!(p.cm.src, None);

    // Change the sender's options: the next packet shows the new values.
    tx.set_tos(0xb8).unwrap();
    tx.set_ttl(7).unwrap();
    send(&tx, b"remarked", rx.local_addr().unwrap());
    let p = recv_one(&rx, "the re-marked datagram");
    assert_eq!(p.payload, b"remarked");
    assert_eq!(p.cm.tos, Some(0xb8));
    assert_eq!(p.cm.ttl, Some(7));
}

#[test]
fn per_packet_ttl_and_tos_override_the_sockets() {
    let rx = udp_on(Ipv4Addr::LOCALHOST);
    rx.set_control_message(ControlFlags::TOS | ControlFlags::TTL, true)
        .unwrap();
    let tx = udp_on(Ipv4Addr::LOCALHOST);
    tx.set_tos(AF11).unwrap();
    tx.set_ttl(33).unwrap();
    let dst = rx.local_addr().unwrap();

    let mut cm = ControlMessage::default();
    cm.ttl = Some(7);
    cm.tos = Some(0xb8);
    send_with(&tx, b"override", &cm, dst);
    let p = recv_one(&rx, "the overriding datagram");
    assert_eq!(p.payload, b"override");
    assert_eq!(p.cm.ttl, Some(7), "per-packet TTL was not applied");
    assert_eq!(p.cm.tos, Some(0xb8), "per-packet TOS was not applied");

    // Only the TTL: the TOS falls back to the socket's.
    let mut cm = ControlMessage::default();
    cm.ttl = Some(99);
    send_with(&tx, b"ttl only", &cm, dst);
    let p = recv_one(&rx, "the TTL-only datagram");
    assert_eq!((p.cm.ttl, p.cm.tos), (Some(99), Some(AF11)));

    // Only the TOS.
    let mut cm = ControlMessage::default();
    cm.tos = Some(0x10);
    send_with(&tx, b"tos only", &cm, dst);
    let p = recv_one(&rx, "the TOS-only datagram");
    assert_eq!((p.cm.ttl, p.cm.tos), (Some(33), Some(0x10)));

    // The per-packet values did not stick to the socket.
    send(&tx, b"plain", dst);
    let p = recv_one(&rx, "the plain datagram");
    assert_eq!(p.payload, b"plain");
    assert_eq!((p.cm.ttl, p.cm.tos), (Some(33), Some(AF11)));
    assert_eq!(tx.ttl().unwrap(), 33);
    assert_eq!(tx.tos().unwrap(), AF11);
}

#[test]
fn reply_comes_from_the_address_the_request_arrived_on() {
    let server = udp_on(Ipv4Addr::UNSPECIFIED);
    server
        .set_control_message(ControlFlags::DST | ControlFlags::LOCAL, true)
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp_on(Ipv4Addr::LOCALHOST);
    client.set_control_message(ControlFlags::DST, true).unwrap();
    let alias = Ipv4Addr::new(127, 0, 0, 5);

    // A request to 127.0.0.5, answered with the control message.
    send(&client, b"request 1", SocketAddrV4::new(alias, port));
    let req = recv_one(&server, "request 1");
    assert_eq!(req.payload, b"request 1");
    assert_eq!(req.cm.dst, Some(alias), "the request's destination address");
    assert_eq!(req.cm.local, Some(alias), "the local address for a reply");
    assert_eq!(req.src, client.local_addr().unwrap());
    let cm = ControlMessage::send_from(req.cm.local.unwrap(), None);
    send_with(&server, b"reply 1", &cm, req.src);
    let reply = recv_one(&client, "reply 1");
    assert_eq!(reply.payload, b"reply 1");
    assert_eq!(
        reply.src,
        SocketAddrV4::new(alias, port),
        "reply must come from 127.0.0.5"
    );
    assert_eq!(reply.cm.dst, Some(Ipv4Addr::LOCALHOST));

    // Without the control message the kernel picks 127.0.0.1 by route: the
    // client would see a reply from an address it never wrote to.
    send(&client, b"request 2", SocketAddrV4::new(alias, port));
    let req = recv_one(&server, "request 2");
    assert_eq!(req.cm.dst, Some(alias));
    send(&server, b"reply 2", req.src);
    let reply = recv_one(&client, "reply 2");
    assert_eq!(reply.payload, b"reply 2");
    assert_eq!(reply.src, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));

    // The interface can be given too (lo).
    send(&client, b"request 3", SocketAddrV4::new(alias, port));
    let req = recv_one(&server, "request 3");
    let cm = ControlMessage::send_from(req.cm.local.unwrap(), Some(util::lo_index()));
    send_with(&server, b"reply 3", &cm, req.src);
    let reply = recv_one(&client, "reply 3");
    assert_eq!(reply.src, SocketAddrV4::new(alias, port));
}

#[test]
fn a_received_control_message_sent_back_replies_from_where_the_request_arrived() {
    // A round trip keeps each field's meaning: `src` (where the request
    // came from, 127.0.0.1) is not sent; `local` (where it arrived,
    // 127.0.0.5) and `ifindex` pick the reply's source and interface.
    let server = udp_on(Ipv4Addr::UNSPECIFIED);
    server
        .set_control_flags(
            ControlFlags::SRC | ControlFlags::DST | ControlFlags::LOCAL | ControlFlags::INTERFACE,
        )
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp_on(Ipv4Addr::LOCALHOST);
    let alias = Ipv4Addr::new(127, 0, 0, 5);

    send(&client, b"request", SocketAddrV4::new(alias, port));
    let req = recv_one(&server, "the request");
    assert_eq!(req.cm.src, Some(Ipv4Addr::LOCALHOST), "where it came from");
    assert_eq!(req.cm.local, Some(alias), "where it arrived");
    assert_eq!(req.cm.ifindex, Some(util::lo_index()));
    send_with(&server, b"reply", &req.cm, req.src);
    let reply = recv_one(&client, "the reply");
    assert_eq!(reply.payload, b"reply");
    assert_eq!(
        reply.src,
        SocketAddrV4::new(alias, port),
        "the reply leaves from the address the request arrived on, not from the request's source"
    );

    // Built from scratch: `with_local` is the same request.
    let cm = ControlMessage::new().with_local(alias);
    send_with(&server, b"reply 2", &cm, req.src);
    assert_eq!(
        recv_one(&client, "reply 2").src,
        SocketAddrV4::new(alias, port)
    );
}

/// Sends `payload` from `tx` to `rx` and checks it arrives.
fn assert_talks(tx: &PacketConn, rx: &PacketConn, payload: &[u8]) {
    send(tx, payload, rx.local_addr().unwrap());
    let p = recv_one(rx, "a datagram through a converted socket");
    assert_eq!(p.payload, payload);
    assert_eq!(p.src, tx.local_addr().unwrap());
}

#[test]
fn packet_conn_converts_from_and_to_std_socket2_and_fds() {
    let peer = udp_on(Ipv4Addr::LOCALHOST);

    // std::net::UdpSocket -> PacketConn: same descriptor, options carried over.
    let std_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    std_sock.set_ttl(21).unwrap();
    let fd = std_sock.as_raw_fd();
    let addr = std_sock.local_addr().unwrap();
    let conn = PacketConn::from(std_sock);
    assert_eq!(conn.as_raw_fd(), fd);
    assert_eq!(std::net::SocketAddr::V4(conn.local_addr().unwrap()), addr);
    assert!(!conn.strips_ip_header());
    assert_eq!(conn.ttl().unwrap(), 21);
    assert_talks(&conn, &peer, b"from std");
    conn.set_tos(AF11).unwrap();

    // PacketConn -> UdpSocket keeps what the crate set.
    let std_sock: UdpSocket = conn.into();
    assert_eq!(std_sock.as_raw_fd(), fd);
    assert_eq!(SockRef::from(&std_sock).tos_v4().unwrap(), u32::from(AF11));

    // socket2::Socket both ways.
    let conn = PacketConn::from(Socket::from(std_sock));
    assert_eq!(conn.as_raw_fd(), fd);
    assert!(!conn.strips_ip_header());
    assert_eq!(conn.tos().unwrap(), AF11);
    let sock: Socket = conn.into();
    assert_eq!(sock.as_raw_fd(), fd);

    // OwnedFd both ways.
    let conn = PacketConn::from(OwnedFd::from(sock));
    assert_eq!(conn.as_raw_fd(), fd);
    assert!(!conn.strips_ip_header());
    assert_talks(&conn, &peer, b"from an OwnedFd");
    let owned: OwnedFd = conn.into();
    assert_eq!(owned.as_raw_fd(), fd);

    // Once more through OwnedFd: every option set along the way is still
    // there, and the socket still sends and receives.
    let conn = PacketConn::from(owned);
    assert_eq!(conn.as_raw_fd(), fd);
    assert_eq!(conn.ttl().unwrap(), 21);
    assert_eq!(conn.tos().unwrap(), AF11);
    assert_talks(&conn, &peer, b"after the round trips");
    // And it still receives.
    assert_talks(&peer, &conn, b"to the converted socket");

    // IntoRawFd hands the descriptor over without closing it. Nothing in
    // safe code can take it back (PacketConn offers no `FromRawFd`, and
    // std closes no bare number), so this test leaks it on purpose, one
    // socket until the test process ends, and checks through /proc that
    // the number is still open and still the same socket.
    let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}"));
    let socket_before = link(fd).expect("the socket's /proc/self/fd entry");
    assert!(
        socket_before.to_string_lossy().starts_with("socket:["),
        "{socket_before:?}"
    );
    let raw_fd = conn.into_raw_fd();
    assert_eq!(raw_fd, fd);
    assert_eq!(
        link(raw_fd).expect("into_raw_fd must not close the descriptor"),
        socket_before,
        "the same socket behind the number"
    );
}

/// A `SOCK_RAW` socket wrapped through `From<Socket>` / `From<OwnedFd>`
/// reads as `ip4:PROTO`: the IP header is stripped.
#[test]
fn raw_socket_conversions_strip_the_ip_header() {
    if !util::can_use_raw_sockets("raw_socket_conversions_strip_the_ip_header") {
        return;
    }
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap();
    raw.bind(&SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 6), 0).into())
        .unwrap();
    let fd = raw.as_raw_fd();
    let conn = PacketConn::from(OwnedFd::from(raw));
    assert_eq!(conn.as_raw_fd(), fd);
    assert!(conn.strips_ip_header());
    let conn = PacketConn::from(Socket::from(conn));
    assert!(conn.strips_ip_header());

    // A UDP datagram to 127.0.0.6: the raw socket (bound to that address)
    // gets a copy, and recv_from returns it from the UDP header on.
    let target = udp_on(Ipv4Addr::new(127, 0, 0, 6));
    let tx = udp_on(Ipv4Addr::LOCALHOST);
    let (sport, dport) = (
        tx.local_addr().unwrap().port(),
        target.local_addr().unwrap().port(),
    );
    send(&tx, b"raw payload", target.local_addr().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "the raw socket never saw the datagram"
        );
        let Some(p) = util::recv_timeout(&conn, Duration::from_millis(500)) else {
            continue;
        };
        let d = &p.payload;
        if d.len() < 8
            || u16::from_be_bytes([d[0], d[1]]) != sport
            || u16::from_be_bytes([d[2], d[3]]) != dport
        {
            continue;
        }
        assert_eq!(
            usize::from(u16::from_be_bytes([d[4], d[5]])),
            d.len(),
            "UDP length"
        );
        assert_eq!(&d[8..], b"raw payload");
        assert_eq!(*p.src.ip(), Ipv4Addr::LOCALHOST);
        break;
    }
    let _ = recv_one(&target, "the datagram itself");
}
