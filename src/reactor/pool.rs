//! Several reactors, one thread each, with groups sharded across them.

use std::io;
use std::net::Ipv4Addr;
use std::thread;

use super::{Handle, Handler, Key, ReactorBuilder};
use crate::packet_conn::PacketConn;

/// The most reactors a [`ReactorPool`] runs (one thread each), and one past
/// the largest CPU number that [`ReactorBuilder::pin_to_cpu`] can pin to
/// (`CPU_SETSIZE`).
pub const MAX_POOL_REACTORS: usize = 1024;

/// Several reactors, each on its own thread, with groups sharded across
/// them: the way past one core (`SO_REUSEPORT` does not spread multicast:
/// every socket on the port gets every packet).
#[derive(Debug)]
pub struct ReactorPool {
    handles: Vec<Handle>,
    threads: Vec<thread::JoinHandle<io::Result<()>>>,
}

impl ReactorPool {
    /// Starts `n` reactors with the same settings (0 is taken as 1); with
    /// [`ReactorBuilder::pin_to_cpu`] set to `c`, reactor `i` is pinned to
    /// CPU `c + i`.
    ///
    /// Errors: `InvalidInput`, before any thread starts, for more than
    /// [`MAX_POOL_REACTORS`] reactors or, when pinned, a CPU `c + n - 1` of
    /// [`MAX_POOL_REACTORS`] or more; otherwise the first reactor that fails
    /// to start, after the ones already started were stopped and joined.
    pub fn spawn(n: usize, builder: ReactorBuilder) -> io::Result<ReactorPool> {
        let n = n.max(1);
        if n > MAX_POOL_REACTORS {
            return Err(crate::error::invalid(format!(
                "a pool of {n} reactors is too many: at most {MAX_POOL_REACTORS} (one thread each)"
            )));
        }
        if let Some(c) = builder.pin_cpu {
            match c.checked_add(n - 1) {
                Some(last) if last < MAX_POOL_REACTORS => {}
                _ => {
                    return Err(crate::error::invalid(format!(
                        "a pool of {n} reactors pinned from CPU {c} needs CPUs up to {c} + {}: CPU numbers stop below {MAX_POOL_REACTORS}",
                        n - 1
                    )))
                }
            }
        }
        let mut pool = ReactorPool {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let mut b = builder.clone();
            b.pin_cpu = builder.pin_cpu.map(|c| c + i);
            match b.spawn() {
                Ok((handle, join)) => {
                    pool.handles.push(handle);
                    pool.threads.push(join);
                }
                Err(e) => {
                    // Do not leave the ones already running without a handle.
                    let _ = pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// The handles, one per reactor.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The reactor a group belongs to: a stable hash of the address, so the
    /// same group always lands on the same reactor.
    pub fn shard_of(&self, group: Ipv4Addr) -> usize {
        // Multiplicative hash; the high bits depend on every bit of the group.
        let x = u32::from(group).wrapping_mul(0x9E37_79B1);
        ((u64::from(x) * self.handles.len() as u64) >> 32) as usize
    }

    /// Registers a socket for `group` on the reactor the group belongs to;
    /// returns the shard and the key.
    pub fn register(
        &self,
        group: Ipv4Addr,
        conn: PacketConn,
        handler: impl Handler,
    ) -> io::Result<(usize, Key)> {
        let shard = self.shard_of(group);
        let key = self.handles[shard].register(conn, handler)?;
        Ok((shard, key))
    }

    /// Stops every reactor and waits for their threads; returns the first
    /// error any of them ended with.
    pub fn shutdown(self) -> io::Result<()> {
        for h in &self.handles {
            h.stop();
        }
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
