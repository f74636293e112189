//! The async side of a [`ChannelSink`]: [`AsyncPacketReceiver`], woken by
//! the sink when the channel goes from empty to non-empty.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use ::tokio::sync::Notify;
use crossbeam_channel::TryRecvError;

use crate::reactor::{OwnedPacket, PacketReceiver};

#[allow(unused_imports)] // for the docs
use crate::reactor::ChannelSink;

/// What an async sink and its receiver share: whether the receiver waits,
/// and how to wake it.
#[derive(Debug, Default)]
pub(crate) struct SinkWake {
    /// Set by the receiver when it found the channel empty and is about to
    /// wait; cleared by the sink that wakes it.
    waiting: AtomicBool,
    notify: Notify,
}

impl SinkWake {
    /// Called by the sink after each hand-over of packets (one per receive
    /// batch): one fence and one load, and a wake-up only when the
    /// receiver waits.
    #[inline]
    pub(crate) fn packet_sent(&self) {
        // Pairs with the fence in `AsyncPacketReceiver::recv`: either the
        // receiver's second look finds this packet, or this load sees it
        // waiting (the store-load order crossbeam's own operations do not
        // promise on every platform).
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        // One wake-up per wait, however many packets a burst brings.
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

/// Held, in one `Arc`, by every clone of an async [`ChannelSink`], after
/// its channel sender: when the last clone goes, the channel is already
/// disconnected, and the receiver is woken to see it.
#[derive(Debug)]
pub(crate) struct SinkWaker(pub(crate) Arc<SinkWake>);

impl Drop for SinkWaker {
    fn drop(&mut self) {
        // A permit: a receiver that waits, or waits later, wakes and finds
        // the channel disconnected.
        self.0.notify.notify_one();
    }
}

/// Makes the shared wake-up of a new async sink: the part each sink clone
/// holds, and the part the receiver holds.
pub(crate) fn sink_wake() -> (Arc<SinkWaker>, Arc<SinkWake>) {
    let wake = Arc::new(SinkWake::default());
    (Arc::new(SinkWaker(Arc::clone(&wake))), wake)
}

/// The receiving end of a [`ChannelSink`] made with
/// [`ChannelSink::bounded_async`], for a tokio task: packets handed over
/// by a reactor on another thread are awaited, not polled.
///
/// The sink wakes the receiver only when it waits (the channel was empty):
/// a receiver that keeps up is never woken by each packet, and a sink
/// feeding a busy receiver costs one fence and one load per receive batch.
/// [`recv`](Self::recv) and [`recv_many`](Self::recv_many) allocate
/// nothing; the buffer an [`OwnedPacket`] shares with its receive batch goes
/// back to the sink once every packet of the batch was dropped, as with the
/// blocking [`PacketReceiver`].
///
/// One task receives (the calls take `&mut self`). When every clone of
/// the sink is gone (the reactor deregistered its sockets or was dropped),
/// the packets still queued are delivered, then `recv` returns `None`.
/// Dropping the receiver makes the sink deregister its socket at the next
/// packet, as it does for a [`PacketReceiver`].
pub struct AsyncPacketReceiver {
    rx: PacketReceiver,
    wake: Arc<SinkWake>,
}

impl fmt::Debug for AsyncPacketReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPacketReceiver")
            .field("queued", &self.rx.len())
            .field("capacity", &self.rx.capacity())
            .finish()
    }
}

impl AsyncPacketReceiver {
    pub(crate) fn new(rx: PacketReceiver, wake: Arc<SinkWake>) -> AsyncPacketReceiver {
        AsyncPacketReceiver { rx, wake }
    }

    /// The next packet, waiting for one if none is queued; `None` once the
    /// channel is empty and every sink feeding it is gone.
    ///
    /// Cancel safe: a `recv` dropped before it completes has taken no
    /// packet (use it in `tokio::select!`).
    pub async fn recv(&mut self) -> Option<OwnedPacket> {
        loop {
            match self.rx.try_recv() {
                Ok(p) => return Some(p),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let notified = pin!(self.wake.notify.notified());
            self.wake.waiting.store(true, Ordering::Relaxed);
            // Pairs with the fence in `SinkWake::packet_sent`.
            fence(Ordering::SeqCst);
            match self.rx.try_recv() {
                Ok(p) => {
                    // Not waiting after all (a sink that saw the flag
                    // already left a permit: one extra look, later).
                    self.wake.waiting.store(false, Ordering::Relaxed);
                    return Some(p);
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            notified.await;
        }
    }

    /// Waits for at least one packet, then moves what is queued, up to
    /// `max` packets, to the end of `out`; returns how many it moved, 0
    /// only when `max` is 0 or the channel is empty and every sink is gone.
    /// Allocates nothing when `out` has room for them.
    ///
    /// Cancel safe, as [`recv`](Self::recv).
    pub async fn recv_many(&mut self, out: &mut Vec<OwnedPacket>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.recv().await else {
            return 0;
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.rx.try_recv() {
                Ok(p) => {
                    out.push(p);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// The next packet if one is queued, without waiting:
    /// `Err(TryRecvError::Empty)` when none is, `Err(TryRecvError::Disconnected)`
    /// when none is and every sink is gone.
    pub fn try_recv(&mut self) -> Result<OwnedPacket, TryRecvError> {
        self.rx.try_recv()
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no packet is queued now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The channel's capacity.
    pub fn capacity(&self) -> usize {
        // A bounded channel always has one.
        self.rx.capacity().unwrap_or(0)
    }
}
