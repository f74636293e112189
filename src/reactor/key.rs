//! Keys of registered sockets: a slot and a generation, so that a key
//! kept after its socket was deregistered (by the user, by a handler panic,
//! by a sink whose receiver is gone) never reaches the socket registered
//! next in the same slot.

use std::fmt;

/// Identifies a socket registered in a reactor. A key outlives its socket
/// harmlessly: once the socket is deregistered, every call with the key
/// fails with "not registered", even after another socket took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    slot: usize,
    generation: u64,
}

impl Key {
    pub(super) fn new(slot: usize, generation: u64) -> Key {
        Key { slot, generation }
    }

    /// The registration's generation (unique per reactor).
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(super) fn generation(self) -> u64 {
        self.generation
    }

    /// The socket's slot in the reactor (reused after deregistration; the
    /// key itself is not).
    pub fn index(self) -> usize {
        self.slot
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "socket #{} (registration {})",
            self.slot, self.generation
        )
    }
}
