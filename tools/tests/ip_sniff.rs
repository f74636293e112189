//! Process-level tests of `ip-sniff`: the binary Cargo built for these
//! tests, run as a child process, reading raw UDP packets on lo.
//!
//! Reading raw packets needs CAP_NET_RAW: without it a test writes
//! "SKIPPED (needs root: CAP_NET_RAW): <name>" straight to stderr (past the
//! harness's capture) and returns. CI runs as root and fails on that line.
//!
//! Network safety: every packet goes to 127.0.0.0/8. A raw socket sees
//! every packet of its protocol on the host, so each test filters on a
//! destination address of its own (`--dst 127.0.0.7x`).

mod procs;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipv4_reactor::header::Header;
use ipv4_reactor::{PacketConn, RawConn};
use pcap_file::pcap::PcapReader;
use pcap_file::{DataLink, TsResolution};
use procs::{kill_if_running, parse_json, send_signal, tool, JsonExt};

/// Bound for anything that must arrive (generous: the VM is noisy).
const DEADLINE: Duration = Duration::from_secs(3);

/// Whether this process may open raw sockets. Without CAP_NET_RAW it says
/// SKIPPED on the real stderr and the test returns; any other error fails
/// the test.
fn can_use_raw(test: &str) -> bool {
    match RawConn::new(253, Ipv4Addr::LOCALHOST) {
        Ok(_) => true,
        Err(e)
            if ipv4_reactor::Error::raw_os_error(&e) == Some(libc::EPERM)
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            let _ = io::stderr()
                .write_all(format!("SKIPPED (needs root: CAP_NET_RAW): {test}\n").as_bytes());
            false
        }
        Err(e) => panic!("{test}: creating a raw socket failed for another reason: {e}"),
    }
}

macro_rules! require_raw {
    ($name:expr) => {
        if !can_use_raw($name) {
            return;
        }
    };
}

/// A running `ip-sniff`, killed when dropped (a failing test leaves no
/// process behind).
struct Sniffer {
    child: Child,
    stderr: thread::JoinHandle<String>,
}

impl Sniffer {
    /// Starts `ip-sniff ARGS` and waits for its `listening` line.
    fn start(args: &[&str]) -> Sniffer {
        let mut child = Command::new(tool("ip-sniff"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ip-sniff");
        let stderr = child.stderr.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let stderr = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = line_tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut sniffer = Sniffer { child, stderr };
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) if line.starts_with("listening") => break,
                Ok(_) => {}
                Err(_) => {
                    kill_if_running(&mut sniffer.child);
                    panic!("ip-sniff never said 'listening' on stderr")
                }
            }
        }
        sniffer
    }

    /// Waits for the child to end (10 s at most); returns its status,
    /// stdout and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let exit_by = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < exit_by, "ip-sniff did not exit");
            thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr = std::mem::replace(&mut self.stderr, thread::spawn(String::new))
            .join()
            .unwrap();
        (status, stdout, stderr)
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Sends each of `payloads` from 127.0.0.1 with TOS 0x28 and TTL 17 to a
/// UDP receiver on `dst_ip`, and checks that the receiver got them (the
/// sniffer only copies). Returns the receiver's address and the sender's.
fn send_udp(dst_ip: Ipv4Addr, payloads: &[Vec<u8>]) -> (SocketAddrV4, SocketAddrV4) {
    // A real receiver, so the datagrams have a port to go to.
    let rx = PacketConn::bind_udp(SocketAddrV4::new(dst_ip, 0)).unwrap();
    let dst = rx.local_addr().unwrap();
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    tx.set_tos(0x28).unwrap();
    tx.set_ttl(17).unwrap();
    for p in payloads {
        tx.send_to(p, None, dst).unwrap();
    }
    let mut buf = vec![0u8; 65536];
    for p in payloads {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the UDP receiver did not get its datagram");
            rx.socket().set_read_timeout(Some(left)).unwrap();
            match rx.recv_from(&mut buf) {
                Ok(m) if buf[..m.len] == p[..] => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("receiving: {e}"),
            }
        }
    }
    (dst, tx.local_addr().unwrap())
}

#[test]
fn ip_sniff_reports_tos_and_ttl_set_by_a_sender() {
    require_raw!("ip_sniff_reports_tos_and_ttl_set_by_a_sender");
    let sniffer = Sniffer::start(&[
        "--proto",
        "udp",
        "--json",
        "--dst",
        "127.0.0.77",
        "--count",
        "3",
        "--timeout-ms",
        "5000",
    ]);
    // Same-length payloads: were another run of this test sniffing at the
    // same time, its packets would look just like ours.
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("ip_sniff test {i}").into_bytes())
        .collect();
    send_udp(Ipv4Addr::new(127, 0, 0, 77), &payloads);

    let (status, stdout, stderr) = sniffer.finish();
    assert!(status.success(), "ip-sniff failed ({status}):\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        3,
        "expected 3 JSON lines, got:\n{stdout}\nstderr:\n{stderr}"
    );
    let expected_keys = [
        "version",
        "ihl",
        "tos",
        "total_len",
        "id",
        "flags",
        "frag_off",
        "ttl",
        "protocol",
        "checksum",
        "checksum_ok",
        "src",
        "dst",
        "options",
        "payload_len",
    ];
    for (line, payload) in lines.iter().zip(&payloads) {
        let obj = parse_json(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(obj.keys(), expected_keys, "keys of {line}");
        assert_eq!(obj["version"].u64(), 4, "{line}");
        assert_eq!(obj["ihl"].u64(), 5, "{line}");
        assert_eq!(obj["tos"].u64(), 40, "{line}");
        assert_eq!(obj["ttl"].u64(), 17, "{line}");
        assert_eq!(obj["protocol"].u64(), 17, "{line}");
        assert_eq!(obj["dst"].str(), "127.0.0.77", "{line}");
        assert_eq!(obj["src"].str(), "127.0.0.1", "{line}");
        assert_eq!(obj["checksum_ok"], true, "{line}");
        assert_eq!(obj["options"].str(), "", "{line}");
        assert_eq!(obj["frag_off"].u64(), 0, "{line}");
        assert!(obj["checksum"].u64() <= 0xffff, "{line}");
        assert_eq!(obj["payload_len"].u64(), 8 + payload.len() as u64, "{line}");
        assert_eq!(
            obj["total_len"].u64(),
            20 + 8 + payload.len() as u64,
            "{line}"
        );
    }
}

/// `--pcap`: every packet shown is in the file as read, with a nanosecond
/// timestamp from the kernel inside the test's own time window.
#[test]
fn ip_sniff_pcap_holds_the_packets_with_their_receive_times() {
    require_raw!("ip_sniff_pcap_holds_the_packets_with_their_receive_times");
    let dir = std::env::temp_dir().join(format!("ipv4r-sniff-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sniff.pcap");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let sniffer = Sniffer::start(&[
        "--proto",
        "udp",
        "--dst",
        "127.0.0.78",
        "--count",
        "3",
        "--timeout-ms",
        "5000",
        "--pcap",
        path.to_str().unwrap(),
    ]);
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("ip_sniff pcap {i}").into_bytes())
        .collect();
    let (dst, src) = send_udp(Ipv4Addr::new(127, 0, 0, 78), &payloads);
    let (status, stdout, stderr) = sniffer.finish();
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(status.success(), "ip-sniff failed ({status}):\n{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stderr.contains(&format!("3 packets written to {}", path.display())),
        "{stderr}"
    );

    let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, DataLink::RAW);
    assert_eq!(reader.header().ts_resolution, TsResolution::NanoSecond);
    let mut last = Duration::ZERO;
    for payload in &payloads {
        let p = reader.next_packet().expect("a record").unwrap();
        // 10 ms of slack each side: once under a loaded test run the
        // kernel's stamp fell outside the window read with clock_gettime.
        let slack = Duration::from_millis(10);
        assert!(
            p.timestamp + slack >= before && p.timestamp <= after + slack,
            "{:?} is outside [{before:?}, {after:?}] by more than {slack:?}",
            p.timestamp
        );
        assert!(p.timestamp >= last, "timestamps go forward");
        last = p.timestamp;
        assert_eq!(p.orig_len as usize, p.data.len());
        let (h, info) = Header::parse(&p.data).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(
            (h.src, h.dst, h.ttl, h.tos),
            (*src.ip(), *dst.ip(), 17, 0x28)
        );
        let udp = &p.data[20..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), src.port());
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), dst.port());
        assert_eq!(&udp[8..], &payload[..]);
    }
    assert!(reader.next_packet().is_none(), "only the 3 packets shown");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGINT ends ip-sniff with its count line and status 0.
#[test]
fn ip_sniff_ends_on_sigint_with_status_0() {
    require_raw!("ip_sniff_ends_on_sigint_with_status_0");
    let mut sniffer = Sniffer::start(&["--proto", "udp", "--dst", "127.0.0.79", "--json"]);
    send_udp(Ipv4Addr::new(127, 0, 0, 79), &[b"one".to_vec()]);
    thread::sleep(Duration::from_millis(300));
    send_signal("ip-sniff", &mut sniffer.child, "INT");
    let (status, stdout, stderr) = sniffer.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stderr.contains("stopped by SIGINT"), "{stderr}");
    assert!(stderr.contains(": 1 packet(s) in "), "{stderr}");
}

#[test]
fn ip_sniff_rejects_bad_arguments_with_exit_code_2() {
    // Argument errors come before any socket: no privilege needed.
    for args in [
        &["--proto", "bogus"][..],
        &["--proto", "0"],
        &["--count", "-1"],
        &["--timeout-ms"],
        &["--dst", "localhost"],
        &["--frobnicate"],
    ] {
        let out = Command::new(tool("ip-sniff")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "ip-sniff {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "ip-sniff {args:?}: {err}");
        assert!(err.contains("--help"), "ip-sniff {args:?}: {err}");
        assert!(out.stdout.is_empty(), "ip-sniff {args:?} printed to stdout");
    }
}
