//! Control-message decode cost per flag set, on buffers filled by the
//! kernel (captured from real packets over 127.0.0.1).
//!
//! cargo bench --bench decode

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ipv4_reactor::{ControlFlags, ControlMessage, PacketConn, RecvBatch};

/// Receives one packet with `flags` and returns a batch holding it.
fn captured(flags: ControlFlags) -> (RecvBatch, PacketConn) {
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    rx.set_control_flags(flags).unwrap();
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    tx.send_to(&[7u8; 64], None, rx.local_addr().unwrap())
        .unwrap();
    let mut batch = RecvBatch::new(1, 2048, flags).unwrap();
    rx.socket()
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    batch.recv_wait(&rx).unwrap();
    (batch, rx)
}

fn decode(c: &mut Criterion) {
    let sets = [
        ("none", ControlFlags::NONE),
        ("ttl", ControlFlags::TTL),
        ("tos", ControlFlags::TOS),
        ("pktinfo", ControlFlags::DST | ControlFlags::INTERFACE),
        (
            "pktinfo_ttl",
            ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::TTL,
        ),
        ("timestamp", ControlFlags::TIMESTAMP),
        ("drops", ControlFlags::DROPS),
        ("all", ControlFlags::ALL),
    ];
    let mut group = c.benchmark_group("cmsg_decode");
    for (name, flags) in sets {
        let (batch, _rx) = captured(flags);
        let control = batch.raw_control(0).to_vec();
        group.bench_function(name, |b| {
            b.iter(|| ControlMessage::decode(black_box(&control), black_box(flags)))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
