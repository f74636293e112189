//! What the command-line tools of `ipv4-reactor` share: `mcast-dump`
//! (the receive side of a multicast feed), `mcast-send` (the send side) and
//! `ip-sniff` (raw IPv4 packets of one protocol).
//!
//! Install them with `cargo install --path tools`; each answers `--help`.

#![deny(missing_docs, rust_2018_idioms)]

pub mod capture;
pub mod cli;
pub mod output;
pub mod payload;
pub mod signals;
