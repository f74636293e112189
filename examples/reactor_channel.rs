// cargo run --example reactor_channel
//
// The reactor's channel path: a reactor on its own thread receives two
// multicast feeds on the loopback interface and hands the packets of each
// receive batch, copied once into a buffer of the batch's own, to a
// consumer thread through a channel sink. The buffer goes back to the sink
// when the consumer has dropped the batch's packets, so nothing is
// allocated per packet. The main thread steers the reactor
// through its Handle: registers, joins a third group while traffic flows,
// reads counters and stops it. Nothing leaves the machine.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};

const PER_GROUP: u64 = 5_000;

fn main() -> std::io::Result<()> {
    let lo = Interface::loopback();
    let groups = [
        Ipv4Addr::new(239, 255, 61, 1),
        Ipv4Addr::new(239, 255, 61, 2),
        Ipv4Addr::new(239, 255, 61, 3),
    ];

    let (handle, reactor_thread) = Reactor::builder().spawn()?;
    // One channel for everything, 4096 packets deep; a full channel drops
    // the newest packet and counts it rather than stall the reactor.
    let (sink, packets) = ChannelSink::bounded(4096, 2048, Overflow::DropNewest)?;

    // One socket on port P joined to the first two groups; the third is
    // joined later through the handle.
    let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    rx.set_multicast_all(false)?;
    rx.set_recv_buffer_size(4 << 20)?;
    rx.join_group(&lo, groups[0])?;
    rx.join_group(&lo, groups[1])?;
    rx.set_control_flags(ControlFlags::DST | ControlFlags::DROPS)?;
    let port = rx.local_addr()?.port();
    let key = handle.register(rx, sink.clone())?;
    handle.join_group(key, &lo, groups[2])?;
    println!("registered {key} on port {port}, joined {groups:?} on lo");

    let consumer = std::thread::spawn(move || {
        let mut per_group = [0u64; 3];
        while let Ok(p) = packets.recv_timeout(Duration::from_millis(500)) {
            if let Some(i) = groups.iter().position(|g| Some(*g) == p.cm().dst) {
                per_group[i] += 1;
            }
            // `p` drops here: its buffer returns to the pool.
        }
        per_group
    });

    let tx = PacketConn::multicast_sender(&lo)?;
    std::thread::sleep(Duration::from_millis(300));
    for seq in 0..PER_GROUP {
        for g in groups {
            tx.send_to(&seq.to_be_bytes(), None, SocketAddrV4::new(g, port))?;
        }
        if seq % 256 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    let per_group = consumer.join().expect("consumer panicked");
    let c = handle.socket_counters(key)?;
    println!("consumer got {per_group:?} packets per group (sent {PER_GROUP} to each)");
    println!(
        "reactor: {} packets, {:.1} per recvmmsg, {} kernel drops, {} dropped at the full channel; the sink made {} batch buffers",
        c.recv.packets,
        c.recv.average_batch(),
        c.recv.kernel_drops,
        c.overflow_drops,
        sink.buffers_allocated()
    );
    handle.stop();
    reactor_thread.join().expect("reactor panicked")?;
    Ok(())
}
