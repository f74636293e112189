//! Classic BPF socket filters (`SO_ATTACH_FILTER`), as Go's `SetBPF`.

use std::io;
use std::os::fd::BorrowedFd;

use crate::error::{invalid, Error};
use crate::sys;

/// One classic BPF instruction, as `struct sock_filter` (Go's
/// `bpf.RawInstruction`).
///
/// A program that keeps only UDP payloads whose first byte is even (the
/// filter sees the packet from the UDP header on; byte 8 is the first
/// payload byte):
///
/// ```
/// use ipv4_reactor::BpfInstruction as I;
/// let keep_even_first_byte = [
///     I::new(0x30, 0, 0, 8),          // ldb [8]
///     I::new(0x45, 1, 0, 1),          // jset #1, drop, keep
///     I::new(0x06, 0, 0, 0xffff_ffff), // keep: ret #-1
///     I::new(0x06, 0, 0, 0),          // drop: ret #0
/// ];
/// let rx = ipv4_reactor::PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// rx.attach_filter(&keep_even_first_byte)?;
/// rx.detach_filter()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInstruction {
    /// Operation code.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

impl BpfInstruction {
    /// An instruction from its four fields.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> BpfInstruction {
        BpfInstruction { code, jt, jf, k }
    }
}

/// The kernel's limit on classic BPF program length (`BPF_MAXINSNS`).
pub const BPF_MAX_INSTRUCTIONS: usize = 4096;

pub(crate) fn attach(fd: BorrowedFd<'_>, program: &[BpfInstruction]) -> io::Result<()> {
    if program.is_empty() {
        return Err(invalid("a BPF program needs at least one instruction"));
    }
    if program.len() > BPF_MAX_INSTRUCTIONS {
        return Err(invalid(format!(
            "a BPF program has at most {BPF_MAX_INSTRUCTIONS} instructions, got {}",
            program.len()
        )));
    }
    let code: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    sys::set_bpf(fd, Some(&code)).map_err(|e| {
        Error::os(
            format!("attaching a BPF program of {} instructions", program.len()),
            e,
        )
    })
}

pub(crate) fn detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set_bpf(fd, None).map_err(|e| Error::os("detaching the BPF program", e))
}
