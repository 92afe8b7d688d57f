//go:build linux

package toasend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// tcpOption is one TCP option: its kind and its whole bytes (kind and
// length included; just the kind for NOP and EOL).
type tcpOption struct {
	kind uint8
	raw  []byte
}

// segment is a TCP segment seen on the wire.
type segment struct {
	src, dst netip.AddrPort
	flags    uint8
	seq, ack uint32
	payload  int
	options  []tcpOption
}

func (s segment) String() string {
	var f []string
	for _, b := range []struct {
		bit  uint8
		name string
	}{{tcpSYN, "S"}, {tcpACK, "."}, {tcpPSH, "P"}, {tcpFIN, "F"}, {tcpRST, "R"}} {
		if s.flags&b.bit != 0 {
			f = append(f, b.name)
		}
	}
	var opts []string
	for _, o := range s.options {
		opts = append(opts, fmt.Sprintf("%d:%x", o.kind, o.raw))
	}
	return fmt.Sprintf("%v > %v [%s] seq %d ack %d len %d opts [%s]",
		s.src, s.dst, strings.Join(f, ""), s.seq, s.ack, s.payload, strings.Join(opts, " "))
}

// optionsOfKind returns the segment's options of the given kind.
func (s segment) optionsOfKind(kind uint8) []tcpOption {
	var out []tcpOption
	for _, o := range s.options {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// capture reads every frame an interface sends or receives through an
// AF_PACKET socket and keeps the TCP segments.
type capture struct {
	fd   int
	done chan struct{}
	stop chan struct{}

	mu   sync.Mutex
	segs []segment
	bad  []error
}

// newCapture starts capturing on the interface with index ifindex. It must
// be called in the namespace the interface lives in.
func newCapture(ifindex int) (*capture, error) {
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET socket to interface %d: %w", ifindex, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	c := &capture{fd: fd, done: make(chan struct{}), stop: make(chan struct{})}
	go c.run()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) run() {
	defer close(c.done)
	buf := make([]byte, 1<<17) // GSO frames from a veth can be up to 64 KiB
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.bad = append(c.bad, err)
			c.mu.Unlock()
			return
		}
		seg, ok, err := parseFrame(buf[:n])
		c.mu.Lock()
		if err != nil {
			c.bad = append(c.bad, err)
		} else if ok {
			c.segs = append(c.segs, seg)
		}
		c.mu.Unlock()
	}
}

// segments returns what was captured so far, in order.
func (c *capture) segments() []segment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]segment(nil), c.segs...)
}

// errs returns the frames that could not be parsed and read errors.
func (c *capture) errs() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.bad...)
}

// waitFor polls until pred holds for the captured segments or timeout.
func (c *capture) waitFor(timeout time.Duration, pred func([]segment) bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if pred(c.segments()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *capture) close() {
	close(c.stop)
	<-c.done
	unix.Close(c.fd)
}

// parseFrame parses an Ethernet frame. ok is false for frames that are not
// TCP over IPv4 or IPv6 (ARP, neighbour discovery, ...).
func parseFrame(b []byte) (seg segment, ok bool, err error) {
	const ethLen = 14
	if len(b) < ethLen {
		return seg, false, fmt.Errorf("short Ethernet frame (%d bytes)", len(b))
	}
	etherType := binary.BigEndian.Uint16(b[12:14])
	b = b[ethLen:]
	var tcp []byte
	switch etherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return seg, false, fmt.Errorf("bad IPv4 header")
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || total > len(b) {
			return seg, false, fmt.Errorf("bad IPv4 lengths: ihl %d total %d frame %d", ihl, total, len(b))
		}
		if b[9] != unix.IPPROTO_TCP {
			return seg, false, nil
		}
		src, _ := netip.AddrFromSlice(b[12:16])
		dst, _ := netip.AddrFromSlice(b[16:20])
		seg.src, seg.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		tcp = b[ihl:total]
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return seg, false, fmt.Errorf("bad IPv6 header")
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+plen > len(b) {
			return seg, false, fmt.Errorf("bad IPv6 payload length %d in a %d-byte packet", plen, len(b))
		}
		if b[6] != unix.IPPROTO_TCP { // the lab sends no extension headers
			return seg, false, nil
		}
		seg.src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), 0)
		seg.dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), 0)
		tcp = b[40 : 40+plen]
	default:
		return seg, false, nil
	}
	if err := parseTCP(&seg, tcp); err != nil {
		return seg, false, err
	}
	return seg, true, nil
}

// parseTCP fills seg's TCP fields from a TCP header and payload.
func parseTCP(seg *segment, b []byte) error {
	if len(b) < 20 {
		return fmt.Errorf("short TCP header (%d bytes)", len(b))
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > len(b) {
		return fmt.Errorf("bad TCP data offset %d", off)
	}
	seg.src = netip.AddrPortFrom(seg.src.Addr(), binary.BigEndian.Uint16(b[0:2]))
	seg.dst = netip.AddrPortFrom(seg.dst.Addr(), binary.BigEndian.Uint16(b[2:4]))
	seg.seq = binary.BigEndian.Uint32(b[4:8])
	seg.ack = binary.BigEndian.Uint32(b[8:12])
	seg.flags = b[13]
	seg.payload = len(b) - off
	opts := b[20:off]
	for len(opts) > 0 {
		switch kind := opts[0]; kind {
		case 0: // end of list: the rest is padding
			seg.options = append(seg.options, tcpOption{kind: 0, raw: []byte{0}})
			return nil
		case 1:
			seg.options = append(seg.options, tcpOption{kind: 1, raw: []byte{1}})
			opts = opts[1:]
		default:
			if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
				return fmt.Errorf("bad TCP option kind %d in %x", kind, b[20:off])
			}
			n := int(opts[1])
			seg.options = append(seg.options, tcpOption{kind: kind, raw: append([]byte(nil), opts[:n]...)})
			opts = opts[n:]
		}
	}
	return nil
}
