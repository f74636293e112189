//! `ReactorPool`: groups sharded by `shard_of` onto reactor threads, every
//! socket's packets delivered on its shard's thread, `shutdown` Ok.
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.156.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::{Context, ReactorPool};
use ipv4_reactor::{ControlFlags, Packet};
use util::{
    asm_group, lo_receiver, lo_sender, port_of, send, wait_until, within, DEADLINE, SETTLE,
};

/// Third octet of this file's groups: 239.255.156.x, x unique per test.
const TAG: u8 = 156;

/// `ReactorPool::spawn(2, ..)`: groups sharded by `shard_of` onto two
/// reactor threads, every socket's packets delivered, `shutdown` Ok.
#[test]
fn reactor_pool_shards_groups_and_shuts_down() {
    util::reactor::each_backend(|| {
        const PER_GROUP: usize = 5;
        let pool = ReactorPool::spawn(2, util::reactor::builder()).expect("pool");
        assert_eq!(pool.handles().len(), 2);

        // Four groups for each shard (shard_of is stable, so pick by it).
        let mut groups = Vec::new();
        let mut per_shard = [0; 2];
        for _ in 0..41 {
            let g = asm_group(TAG);
            let s = pool.shard_of(g);
            assert!(s < 2);
            assert_eq!(s, pool.shard_of(g), "shard_of is not stable");
            if per_shard[s] < 4 {
                per_shard[s] += 1;
                groups.push(g);
            }
            if per_shard == [4, 4] {
                break;
            }
        }
        assert_eq!(per_shard, [4, 4], "could not find 4 groups per shard");

        type Seen = Arc<Mutex<HashMap<Ipv4Addr, (Vec<Vec<u8>>, HashSet<thread::ThreadId>)>>>;
        let seen: Seen = Arc::default();
        let mut dsts = Vec::new();
        for &g in &groups {
            let rx = lo_receiver(g, ControlFlags::DST);
            let dst = SocketAddrV4::new(g, port_of(&rx));
            let seen = Arc::clone(&seen);
            let (shard, _key) = pool
                .register(g, rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                    let dst = p.cm.dst.expect("DST");
                    let mut m = seen.lock().unwrap();
                    let e = m.entry(dst).or_default();
                    e.0.push(p.payload.to_vec());
                    e.1.insert(thread::current().id());
                })
                .expect("pool register");
            assert_eq!(shard, pool.shard_of(g));
            dsts.push((shard, dst));
        }
        for h in pool.handles() {
            assert_eq!(h.counters().expect("counters").sockets, 4);
        }

        thread::sleep(SETTLE);
        let tx = lo_sender();
        for i in 0..PER_GROUP {
            for (_, dst) in &dsts {
                send(&tx, format!("{}#{i}", dst.ip()).as_bytes(), *dst);
            }
        }
        let total = PER_GROUP * groups.len();
        let all = wait_until(DEADLINE, || {
            seen.lock()
                .unwrap()
                .values()
                .map(|v| v.0.len())
                .sum::<usize>()
                >= total
        });
        thread::sleep(Duration::from_millis(100));
        let seen = seen.lock().unwrap().clone();
        assert!(all, "not every packet delivered: {seen:?}");

        let mut thread_of_shard: HashMap<usize, thread::ThreadId> = HashMap::new();
        for (shard, dst) in &dsts {
            let (payloads, threads) = seen
                .get(dst.ip())
                .unwrap_or_else(|| panic!("nothing for {dst}"));
            let want: Vec<Vec<u8>> = (0..PER_GROUP)
                .map(|i| format!("{}#{i}", dst.ip()).into_bytes())
                .collect();
            assert_eq!(payloads, &want, "packets of {dst}");
            assert_eq!(threads.len(), 1, "one group served by several threads");
            let t = *threads.iter().next().unwrap();
            assert_ne!(t, thread::current().id());
            let prev = thread_of_shard.entry(*shard).or_insert(t);
            assert_eq!(*prev, t, "shard {shard} served by two threads");
        }
        assert_ne!(
            thread_of_shard[&0], thread_of_shard[&1],
            "both shards ran on the same thread"
        );
        for h in pool.handles() {
            let c = h.counters().expect("counters");
            assert_eq!(c.total.recv.packets, (4 * PER_GROUP) as u64);
        }

        within(DEADLINE, "pool shutdown", move || pool.shutdown())
            .expect("shutdown returned an error");
    });
}
