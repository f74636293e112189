// xnet_peer: a multicast peer built on golang.org/x/net/ipv4, for the
// interoperability tests in tools/tests/interop.rs (another implementation
// of the same socket options, talking to our mcast-dump and mcast-send).
//
//	xnet_peer send GROUP:PORT IFACE COUNT TTL TOS [GAP_US]
//	xnet_peer recv GROUP:PORT IFACE COUNT TIMEOUT_MS
//
// send: binds IFACE's first IPv4 address (port 0), so that the source
// address belongs to IFACE, sets the multicast interface (IFACE), TTL, TOS
// and loopback on, then writes COUNT 64-byte payloads, each starting with a
// big-endian u64 sequence number from 0, GAP_US microseconds apart (default
// 500). It prints "sent N from ADDR:PORT" on stderr.
//
// recv: binds GROUP:PORT (PORT 0: the kernel picks one), joins GROUP on
// IFACE, asks for TTL, destination and interface control messages, prints
// "listening GROUP:PORT ifindex=N" on stderr once joined, then one JSON line
// per packet on stdout:
//
//	{"seq":0,"len":64,"ttl":1,"dst":"239.255.180.2","ifindex":1,"src":"127.0.0.1:40000"}
//
// and exits 0 after COUNT packets, or 1 when TIMEOUT_MS passes first.
//
// Network safety: the interface is always named; the tests name lo or an
// interface inside a private network namespace.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/ipv4"
)

const payloadSize = 64

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "xnet_peer: "+format+"\n", args...)
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: xnet_peer send GROUP:PORT IFACE COUNT TTL TOS [GAP_US]\n"+
		"       xnet_peer recv GROUP:PORT IFACE COUNT TIMEOUT_MS")
	os.Exit(2)
}

func number(what, s string, max int) int {
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 || v > int64(max) {
		fmt.Fprintf(os.Stderr, "xnet_peer: bad %s %q (0 to %d)\n", what, s, max)
		os.Exit(2)
	}
	return int(v)
}

func groupAddr(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp4", s)
	if err != nil || a.IP.To4() == nil || !a.IP.IsMulticast() {
		fmt.Fprintf(os.Stderr, "xnet_peer: bad GROUP:PORT %q\n", s)
		os.Exit(2)
	}
	return a
}

func iface(name string) *net.Interface {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		fail("interface %s: %v", name, err)
	}
	return ifi
}

// ifaceAddr is the first IPv4 address of ifi.
func ifaceAddr(ifi *net.Interface) net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		fail("addresses of %s: %v", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4()
		}
	}
	fail("interface %s has no IPv4 address", ifi.Name)
	return nil
}

func send(args []string) {
	if len(args) != 5 && len(args) != 6 {
		usage()
	}
	dst := groupAddr(args[0])
	if dst.Port == 0 {
		fail("send needs a port other than 0")
	}
	ifi := iface(args[1])
	count := number("COUNT", args[2], 1<<30)
	ttl := number("TTL", args[3], 255)
	tos := number("TOS", args[4], 255)
	gap := 500 * time.Microsecond
	if len(args) == 6 {
		gap = time.Duration(number("GAP_US", args[5], 10_000_000)) * time.Microsecond
	}

	src := &net.UDPAddr{IP: ifaceAddr(ifi)}
	c, err := net.ListenPacket("udp4", src.String())
	if err != nil {
		fail("binding %v: %v", src, err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	if err := p.SetMulticastInterface(ifi); err != nil {
		fail("SetMulticastInterface(%s): %v", ifi.Name, err)
	}
	if err := p.SetMulticastTTL(ttl); err != nil {
		fail("SetMulticastTTL(%d): %v", ttl, err)
	}
	if err := p.SetTOS(tos); err != nil {
		fail("SetTOS(%#x): %v", tos, err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		fail("SetMulticastLoopback(true): %v", err)
	}

	payload := make([]byte, payloadSize)
	for seq := 0; seq < count; seq++ {
		binary.BigEndian.PutUint64(payload, uint64(seq))
		if _, err := p.WriteTo(payload, nil, dst); err != nil {
			fail("writing seq %d to %v: %v", seq, dst, err)
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	fmt.Fprintf(os.Stderr, "sent %d from %v\n", count, c.LocalAddr())
}

// One received packet, one JSON line (encoding/json keeps the field order).
type packet struct {
	Seq     uint64 `json:"seq"`
	Length  int    `json:"len"`
	TTL     int    `json:"ttl"`
	Dst     string `json:"dst"`
	IfIndex int    `json:"ifindex"`
	Src     string `json:"src"`
}

func recv(args []string) {
	if len(args) != 4 {
		usage()
	}
	group := groupAddr(args[0])
	ifi := iface(args[1])
	count := number("COUNT", args[2], 1<<30)
	timeout := time.Duration(number("TIMEOUT_MS", args[3], 3_600_000)) * time.Millisecond

	// Bound to the group: only its datagrams arrive (Go sets SO_REUSEADDR
	// for a multicast address).
	c, err := net.ListenPacket("udp4", group.String())
	if err != nil {
		fail("binding %v: %v", group, err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: group.IP}); err != nil {
		fail("JoinGroup(%s, %v): %v", ifi.Name, group.IP, err)
	}
	flags := ipv4.FlagTTL | ipv4.FlagDst | ipv4.FlagInterface
	if err := p.SetControlMessage(flags, true); err != nil {
		fail("SetControlMessage: %v", err)
	}
	if err := p.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		fail("SetReadDeadline: %v", err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	fmt.Fprintf(os.Stderr, "listening %v:%d ifindex=%d\n", group.IP, port, ifi.Index)

	buf := make([]byte, 65536)
	for got := 0; got < count; got++ {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				fail("timeout after %v: %d of %d packets", timeout, got, count)
			}
			fail("reading: %v", err)
		}
		if cm == nil {
			fail("packet %d came without control messages", got)
		}
		pk := packet{Length: n, TTL: cm.TTL, IfIndex: cm.IfIndex, Src: src.String()}
		if n >= 8 {
			pk.Seq = binary.BigEndian.Uint64(buf[:8])
		}
		if cm.Dst != nil {
			pk.Dst = cm.Dst.String()
		}
		line, err := json.Marshal(pk)
		if err != nil {
			fail("encoding packet %d: %v", got, err)
		}
		fmt.Println(string(line))
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "send":
		send(os.Args[2:])
	case "recv":
		recv(os.Args[2:])
	default:
		usage()
	}
}
