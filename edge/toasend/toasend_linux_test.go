//go:build linux

package toasend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// Lab addresses: the client host dials the origin host over a veth pair.
var (
	clientV4 = netip.MustParsePrefix("192.0.2.2/24")
	originV4 = netip.MustParsePrefix("192.0.2.1/24")
	clientV6 = netip.MustParsePrefix("2001:db8::2/64")
	originV6 = netip.MustParsePrefix("2001:db8::1/64")
)

// requireSender stops the test (skip, or fail under REALIP_STRICT=1) where
// the sender cannot run.
func requireSender(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	if err := Available(); err != nil {
		testenv.SkipOrFail(t, "TOA sender not available: %v", err)
	}
}

// wireLab is a client and an origin host with servers and a capture on
// the origin's side of the link.
type wireLab struct {
	lab            *netns.Lab
	client, origin *netns.Host
	cap            *capture
}

func newWireLab(t *testing.T) *wireLab {
	t.Helper()
	lab := netns.NewLab(t)
	w := &wireLab{lab: lab, client: lab.Host("client"), origin: lab.Host("origin")}
	_, originDev := lab.Link(w.client, w.origin,
		[]netip.Prefix{clientV4, clientV6}, []netip.Prefix{originV4, originV6})
	err := w.origin.Do(func() error {
		ifi, err := net.InterfaceByName(originDev)
		if err != nil {
			return err
		}
		w.cap, err = newCapture(ifi.Index)
		return err
	})
	if err != nil {
		t.Fatalf("packet capture: %v", err)
	}
	t.Cleanup(w.cap.close)
	return w
}

// netnsFile is the namespace file a helper enters to dial from h.
func netnsFile(h *netns.Host) string { return filepath.Join("/run/netns", h.Namespace) }

// sinkServer accepts connections, reads each to its end, and closes it.
type sinkServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	got  map[string]int // bytes read, by remote address
	errs []error
}

func listenSink(t *testing.T, h *netns.Host, addr string) *sinkServer {
	t.Helper()
	s := &sinkServer{got: map[string]int{}}
	if err := h.Do(func() (err error) {
		s.ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *sinkServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			n, err := io.Copy(io.Discard, c)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got[c.RemoteAddr().String()] = int(n)
			if err != nil {
				s.errs = append(s.errs, err)
			}
		}()
	}
}

func (s *sinkServer) addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// wantOption returns the TOA option bytes for client with the given kinds.
func wantOption(client netip.AddrPort, kindV4, kindV6 uint8) []byte {
	a := client.Addr().Unmap()
	opt := []byte{kindV4, 8, 0, 0}
	if a.Is6() {
		opt = []byte{kindV6, 20, 0, 0}
	}
	binary.BigEndian.PutUint16(opt[2:], client.Port())
	return append(opt, a.AsSlice()...)
}

// flow returns the segments the client sent on the connection from local
// to remote, in order.
func flow(segs []segment, local, remote netip.AddrPort) []segment {
	var out []segment
	for _, s := range segs {
		if s.src == local && s.dst == remote {
			out = append(out, s)
		}
	}
	return out
}

// unknownOptions returns the options of a segment that Linux does not write
// itself: TOA ones, or anything else a buggy program added.
func unknownOptions(s segment) []tcpOption {
	var out []tcpOption
	for _, o := range s.options {
		switch o.kind {
		case 0, 1, 2, 3, 4, 5, 8, 19: // EOL NOP MSS WS SACK-OK SACK TS MD5
		default:
			out = append(out, o)
		}
	}
	return out
}

// checkFlow checks the client's segments of one connection: with want set,
// every SYN, the first segment after the SYNs and the first segment with
// payload carry exactly want and nothing else unusual, and no other segment
// carries any option Linux does not write itself. With want nil no segment carries one. It returns the
// handshake-completing segment.
func checkFlow(t *testing.T, segs []segment, want []byte) segment {
	t.Helper()
	dump := func() string {
		var b strings.Builder
		for _, s := range segs {
			fmt.Fprintf(&b, "\n  %v", s)
		}
		return b.String()
	}
	i := 0
	for i < len(segs) && segs[i].flags&tcpSYN != 0 {
		i++
	}
	if i == 0 || i == len(segs) {
		t.Fatalf("no SYN, or nothing after it, in the capture:%s", dump())
	}
	syns, ack, rest := segs[:i], segs[i], segs[i+1:]
	if ack.flags&tcpACK == 0 {
		t.Errorf("first segment after the SYN is no ACK: %v", ack)
	}
	for _, s := range append(slices.Clone(syns), ack) {
		opts := unknownOptions(s)
		switch {
		case want == nil && len(opts) > 0:
			t.Errorf("segment of a connection dialed without Control carries options %v:%s", opts, dump())
		case want != nil && (len(opts) != 1 || string(opts[0].raw) != string(want)):
			t.Errorf("segment %v: want exactly the TOA option %x:%s", s, want, dump())
		}
	}
	// The first segment with payload carries the option too (it may
	// complete the receiver's handshake); when the handshake ACK itself
	// had payload, that was it.
	firstData := ack.payload > 0
	data := 0
	for _, s := range rest {
		opts := unknownOptions(s)
		switch {
		case want != nil && !firstData && s.payload > 0:
			firstData = true
			if len(opts) != 1 || string(opts[0].raw) != string(want) {
				t.Errorf("first data segment %v: want exactly the TOA option %x:%s", s, want, dump())
			}
		case len(opts) > 0:
			t.Errorf("segment after the handshake carries %v:%s", opts, dump())
		}
		data += s.payload
	}
	if data+ack.payload == 0 {
		t.Errorf("no data segments captured after the handshake:%s", dump())
	}
	return ack
}

// finished reports whether the capture holds the client's FIN for every
// connection.
func finished(segs []segment, conns [][2]netip.AddrPort) bool {
	for _, c := range conns {
		if !slices.ContainsFunc(flow(segs, c[0], c[1]), func(s segment) bool { return s.flags&tcpFIN != 0 }) {
			return false
		}
	}
	return true
}

// TestWire dials from a helper in a fresh cgroup through a veth pair and
// checks with a packet capture on the origin's side what each connection
// carried: TOA on the SYN and the handshake ACK with the right kind,
// length, port and address, for IPv4 and IPv6 clients over IPv4 and IPv6
// connections, nothing on later segments, and nothing at all on sockets
// dialed without Control.
func TestWire(t *testing.T) {
	requireSender(t)
	tests := []struct {
		name           string
		kindV4, kindV6 uint8 // 0: defaults
		syncookies     string
	}{
		{name: "default-kinds"},
		// DPVS style (one kind for both), and an origin that always
		// answers with a SYN cookie: only the ACK tells it the client.
		{name: "kind254-syncookies", kindV4: 254, kindV6: 254, syncookies: "2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWireLab(t)
			if tc.syncookies != "" {
				w.origin.Sysctl("net.ipv4.tcp_syncookies", tc.syncookies)
			}
			cgPath, cg := testCgroup(t)
			srv4 := listenSink(t, w.origin, net.JoinHostPort(originV4.Addr().String(), "0"))
			srv6 := listenSink(t, w.origin, net.JoinHostPort(originV6.Addr().String(), "0"))

			kv4, kv6 := tc.kindV4, tc.kindV6
			if kv4 == 0 {
				kv4 = DefaultKindV4
			}
			if kv6 == 0 {
				kv6 = DefaultKindV6
			}
			dials := []struct {
				name   string
				srv    *sinkServer
				client string
			}{
				{"v4-conn-v4-client", srv4, "203.0.113.7:4242"},
				{"v4-conn-v6-client", srv4, "[2001:db8:77::7]:4343"},
				{"v6-conn-v4-client", srv6, "198.51.100.9:65535"},
				{"v6-conn-v6-client", srv6, "[2001:db8:77::8]:1"},
				{"v4-conn-mapped-client", srv4, "[::ffff:203.0.113.99]:80"},
				{"v4-conn-no-control", srv4, ""},
				{"v6-conn-no-control", srv6, ""},
			}
			job := helperJob{Netns: netnsFile(w.client), KindV4: tc.kindV4, KindV6: tc.kindV6}
			for _, d := range dials {
				job.Dials = append(job.Dials, dialJob{Target: d.srv.addr().String(), Client: d.client, Payload: 5000})
			}
			res := runHelper(t, cg, job)

			if res.Cgroup != cgPath {
				t.Errorf("helper's Sender attached to %q, want its own cgroup %q", res.Cgroup, cgPath)
			}
			var conns [][2]netip.AddrPort
			for i, d := range dials {
				conns = append(conns, [2]netip.AddrPort{netip.MustParseAddrPort(res.Dials[i].Local), d.srv.addr()})
			}
			if !w.cap.waitFor(5*time.Second, func(s []segment) bool { return finished(s, conns) }) {
				t.Errorf("capture did not see every connection end")
			}
			if err := w.cap.errs(); err != nil {
				t.Errorf("capture: %v", err)
			}
			segs := w.cap.segments()
			tagged := 0
			for i, d := range dials {
				t.Run(d.name, func(t *testing.T) {
					var want []byte
					if d.client != "" {
						want = wantOption(netip.MustParseAddrPort(d.client), kv4, kv6)
						tagged++
					}
					f := flow(segs, conns[i][0], conns[i][1])
					ack := checkFlow(t, f, want)
					if ack.payload != 0 {
						t.Errorf("handshake completed by a data segment (%v), want a pure ACK", ack)
					}
					for _, s := range f {
						t.Logf("%v", s)
					}
					if r := res.Dials[i]; r.CarriedSYN != (want != nil) || r.CarriedACK != (want != nil) {
						t.Errorf("Carried() = SYN %v, ACK %v; want %v", r.CarriedSYN, r.CarriedACK, want != nil)
					}
					d.srv.mu.Lock()
					got := d.srv.got[res.Dials[i].Local]
					d.srv.mu.Unlock()
					if got != 5000 {
						t.Errorf("server read %d bytes, want 5000", got)
					}
				})
			}
			if st := res.Stats; st.Armed != uint64(tagged) || st.ACK != uint64(tagged) || st.Data != uint64(tagged) ||
				st.SYN < uint64(tagged) || st.NoSpace != 0 || st.Failed != 0 {
				t.Errorf("Stats = %+v, want %d armed sockets with an option on SYN, ACK and first data segment", st, tagged)
			}
			if res.Other != (Stats{}) {
				t.Errorf("second Sender in the same cgroup touched sockets: %+v", res.Other)
			}
			// The helper closed its Senders (and exited): nothing is left.
			if ids := attached(t, cg); len(ids) != 0 {
				t.Errorf("programs still attached to the test cgroup after the helper: %v", ids)
			}
		})
	}
}

// TestHandshakeACKWithData: a blocking connect() with a write already
// waiting makes Linux send the handshake ACK together with the first data
// (it delays the pure ACK while a writer waits). The option then rides on
// that data segment, once, and on none after it. The first SYN is dropped
// (the origin's accept queue is full) so the retransmitted SYN is checked
// too.
func TestHandshakeACKWithData(t *testing.T) {
	requireSender(t)
	w := newWireLab(t)
	_, cg := testCgroup(t)

	// A listener with a one-connection accept queue, filled by a first
	// connection: the origin drops SYNs until that one is accepted.
	var ln net.Listener
	var filler net.Conn
	err := w.origin.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: originV4.Addr().As4()}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 0); err != nil {
			return err
		}
		ln, err = net.FileListener(f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	if err := w.client.Do(func() (err error) {
		filler, err = net.Dial("tcp", target.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer filler.Close()

	client := netip.MustParseAddrPort("203.0.113.50:5050")
	h := startHelper(t, cg, nil, helperJob{
		Netns:   netnsFile(w.client),
		Pending: &dialJob{Target: target.String(), Client: client.String(), Payload: 100},
	})
	if !h.waitLine("pending", 30*time.Second) {
		h.result(t)
		t.Fatal("helper never got to its pending write")
	}
	// Make room: the retransmitted SYN gets an answer.
	fillerPort := filler.LocalAddr().(*net.TCPAddr).Port
	done := make(chan int, 1)
	go func() {
		total := 0
		for range 2 { // the filler, then the helper's connection
			c, err := ln.Accept()
			if err != nil {
				break
			}
			n, _ := io.Copy(io.Discard, c)
			if c.RemoteAddr().(*net.TCPAddr).Port != fillerPort {
				total += int(n)
			}
			c.Close()
		}
		done <- total
	}()
	filler.Close()
	res := h.result(t)
	if got := <-done; got != 100 {
		t.Errorf("server read %d bytes, want 100", got)
	}
	local := netip.MustParseAddrPort(res.Dials[0].Local)
	conns := [][2]netip.AddrPort{{local, target}}
	if !w.cap.waitFor(5*time.Second, func(s []segment) bool { return finished(s, conns) }) {
		t.Errorf("capture did not see the connection end")
	}
	f := flow(w.cap.segments(), local, target)
	for _, s := range f {
		t.Logf("%v", s)
	}
	ack := checkFlow(t, f, wantOption(client, DefaultKindV4, DefaultKindV6))
	syns := slices.IndexFunc(f, func(s segment) bool { return s.flags&tcpSYN == 0 })
	if syns < 2 {
		t.Errorf("want the SYN retransmitted (first one dropped), got %d SYNs", syns)
	}
	if ack.payload != 100 {
		t.Errorf("handshake ACK carries %d bytes, want the 100 written while connecting (the kernel's delayed-ACK path)", ack.payload)
	}
	if st := res.Stats; st.Armed != 1 || st.ACK != 1 || st.SYN != uint64(syns) || st.NoSpace != 0 || st.Failed != 0 {
		t.Errorf("Stats = %+v, want 1 armed, %d SYNs, 1 ACK", st, syns)
	}
}

// TestNoRoomOnSYN: TCP-MD5 takes 20 bytes of option space and turns
// timestamps off. The SYN then has 8 bytes left: room for the IPv4 option
// but not the IPv6 one, which goes out on the handshake ACK only (the
// receiver's first source anyway), and is counted in Stats.NoSpace.
func TestNoRoomOnSYN(t *testing.T) {
	requireSender(t)
	w := newWireLab(t)
	_, cg := testCgroup(t)
	const key = "realip-md5-test-key"
	var ln net.Listener
	err := w.origin.Do(func() (err error) {
		lc := net.ListenConfig{Control: md5Control(clientV4.Addr(), key)}
		ln, err = lc.Listen(context.Background(), "tcp", net.JoinHostPort(originV4.Addr().String(), "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &sinkServer{ln: ln, got: map[string]int{}}
	srv.wg.Add(1)
	go srv.serve()
	t.Cleanup(func() { ln.Close(); srv.wg.Wait() })

	v4Client := netip.MustParseAddrPort("203.0.113.7:4242")
	v6Client := netip.MustParseAddrPort("[2001:db8:77::7]:4343")
	res := runHelper(t, cg, helperJob{Netns: netnsFile(w.client), Dials: []dialJob{
		{Target: srv.addr().String(), Client: v4Client.String(), Payload: 3000, MD5Key: key},
		{Target: srv.addr().String(), Client: v6Client.String(), Payload: 3000, MD5Key: key},
	}})
	var conns [][2]netip.AddrPort
	for _, d := range res.Dials {
		conns = append(conns, [2]netip.AddrPort{netip.MustParseAddrPort(d.Local), srv.addr()})
	}
	if !w.cap.waitFor(5*time.Second, func(s []segment) bool { return finished(s, conns) }) {
		t.Errorf("capture did not see every connection end")
	}
	segs := w.cap.segments()

	t.Run("v4-client", func(t *testing.T) {
		f := flow(segs, conns[0][0], conns[0][1])
		for _, s := range f {
			t.Logf("%v", s)
		}
		checkFlow(t, f, wantOption(v4Client, DefaultKindV4, DefaultKindV6))
		if len(f[0].optionsOfKind(19)) != 1 {
			t.Errorf("SYN is not MD5-signed: %v", f[0])
		}
		if d := res.Dials[0]; !d.CarriedSYN || !d.CarriedACK {
			t.Errorf("Carried() = %v, %v; want true, true", d.CarriedSYN, d.CarriedACK)
		}
	})
	t.Run("v6-client", func(t *testing.T) {
		f := flow(segs, conns[1][0], conns[1][1])
		for _, s := range f {
			t.Logf("%v", s)
		}
		want := wantOption(v6Client, DefaultKindV4, DefaultKindV6)
		i := slices.IndexFunc(f, func(s segment) bool { return s.flags&tcpSYN == 0 })
		if i < 1 {
			t.Fatal("no SYN, or nothing after it, in the capture")
		}
		for _, s := range f[:i] {
			if opts := unknownOptions(s); len(opts) != 0 {
				t.Errorf("SYN with no room carries %v", opts)
			}
		}
		if opts := unknownOptions(f[i]); len(opts) != 1 || string(opts[0].raw) != string(want) {
			t.Errorf("handshake ACK %v: want exactly the TOA option %x", f[i], want)
		}
		firstData := f[i].payload > 0
		for _, s := range f[i+1:] {
			opts := unknownOptions(s)
			switch {
			case !firstData && s.payload > 0:
				firstData = true
				if len(opts) != 1 || string(opts[0].raw) != string(want) {
					t.Errorf("first data segment %v: want exactly the TOA option %x", s, want)
				}
			case len(opts) != 0:
				t.Errorf("segment after the handshake carries %v", opts)
			}
		}
		if d := res.Dials[1]; d.CarriedSYN || !d.CarriedACK {
			t.Errorf("Carried() = %v, %v; want false, true", d.CarriedSYN, d.CarriedACK)
		}
	})
	if st := res.Stats; st.Armed != 2 || st.ACK != 2 || st.Data != 2 || st.SYN != 1 || st.NoSpace != 1 || st.Failed != 0 {
		t.Errorf("Stats = %+v, want 2 armed, 1 SYN, 2 ACKs, 2 first data segments, 1 no space", st)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, d := range res.Dials {
		if srv.got[d.Local] != 3000 {
			t.Errorf("server read %d bytes from %s, want 3000", srv.got[d.Local], d.Local)
		}
	}
}

// attached returns the IDs of the sockops programs attached to a cgroup.
func attached(t testing.TB, cg *os.File) []ebpf.ProgramID {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: ebpf.AttachCGroupSockOps})
	if err != nil {
		t.Fatalf("querying the cgroup's programs: %v", err)
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

// programID returns the kernel ID of s's program.
func programID(t *testing.T, s *Sender) ebpf.ProgramID {
	t.Helper()
	info, err := s.objs.ToaSockops.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program ID")
	}
	return id
}

// TestOpenClose: two Senders attach side by side to one cgroup, and Close
// detaches and unloads each (the program ID disappears from the kernel).
func TestOpenClose(t *testing.T) {
	requireSender(t)
	path, cg := testCgroup(t)

	s1, err := Open(Options{CgroupPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := Open(Options{CgroupPath: path, KindV4: 254, KindV6: 254})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	id1, id2 := programID(t, s1), programID(t, s2)
	if got := attached(t, cg); !sameIDs(got, id1, id2) {
		t.Fatalf("attached programs %v, want %v and %v", got, id1, id2)
	}
	if v4, v6 := s2.Kinds(); v4 != 254 || v6 != 254 {
		t.Errorf("Kinds() = %d, %d, want 254, 254", v4, v6)
	}

	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, cg); !sameIDs(got, id2) {
		t.Fatalf("after closing the first: attached %v, want %v", got, id2)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, cg); len(got) != 0 {
		t.Fatalf("after closing both: attached %v, want none", got)
	}
	for _, id := range []ebpf.ProgramID{id1, id2} {
		if !gone(id) {
			t.Errorf("program %d still loaded after Close", id)
		}
	}
	if err := s1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctl := s1.Control(netip.MustParseAddrPort("192.0.2.9:9"))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := ctl("tcp", "192.0.2.1:1", fdConn(fd)); !errors.Is(err, ErrClosed) {
		t.Errorf("Control on a closed Sender: %v, want ErrClosed", err)
	}
	if _, err := s1.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats on a closed Sender: %v, want ErrClosed", err)
	}
}

func sameIDs(got []ebpf.ProgramID, want ...ebpf.ProgramID) bool {
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// gone reports whether the kernel unloaded the program with this ID (it
// may take a moment after the last reference goes).
func gone(id ebpf.ProgramID) bool {
	for range 100 {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		if err == nil {
			p.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestControlTagsSocket: Control stores the client for the socket, and
// rejects what it cannot carry.
func TestControlTagsSocket(t *testing.T) {
	requireSender(t)
	path, _ := testCgroup(t)
	s, err := Open(Options{CgroupPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	client := netip.MustParseAddrPort("[2001:db8::42]:4242")
	if err := s.Control(client)("tcp6", "[2001:db8::1]:80", fdConn(fd)); err != nil {
		t.Fatal(err)
	}
	var v toaToaClient
	if err := s.objs.ToaClients.Lookup(int32(fd), &v); err != nil {
		t.Fatalf("looking up the socket's storage: %v", err)
	}
	if v.Family != 6 || v.Port != [2]uint8{0x10, 0x92} || v.Addr != client.Addr().As16() || v.Flags != 0 {
		t.Errorf("stored %+v for %v", v, client)
	}
	if err := s.Control(client)("udp", "[2001:db8::1]:80", fdConn(fd)); err == nil {
		t.Error("Control accepted a UDP socket")
	}
	if err := s.Control(netip.AddrPort{})("tcp", "[2001:db8::1]:80", fdConn(fd)); err == nil {
		t.Error("Control accepted an invalid client")
	}
}

// TestNotPermitted: an unprivileged process gets ErrNotPermitted from
// Available, with a message that says what to do.
func TestNotPermitted(t *testing.T) {
	testenv.RequireRoot(t)
	h := startHelper(t, nil, &syscall.Credential{Uid: 65534, Gid: 65534}, helperJob{Probe: true})
	res := h.result(t)
	if !slices.Contains(res.ProbeIs, "ErrNotPermitted") {
		t.Fatalf("Available as nobody = %q (wraps %v), want ErrNotPermitted", res.ProbeErr, res.ProbeIs)
	}
	if !strings.Contains(res.ProbeErr, "CAP_BPF") {
		t.Errorf("message %q does not say what is needed", res.ProbeErr)
	}
	t.Logf("Available as nobody: %s", res.ProbeErr)
}

// TestOpenNotCgroup2: a CgroupPath outside cgroup v2 is refused before
// anything is loaded.
func TestOpenNotCgroup2(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(Options{CgroupPath: dir})
	if !errors.Is(err, ErrNoCgroup2) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open(%s) = %v, want ErrNoCgroup2 naming the folder", dir, err)
	}
	_, err = Open(Options{CgroupPath: filepath.Join(dir, "missing")})
	if !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Open(missing folder) = %v, want ErrNoCgroup2", err)
	}
}

// BenchmarkDial measures dial+accept+close on loopback, in a helper inside
// a fresh cgroup: "plain" with no Sender, "attached" with a Sender
// attached but the socket not tagged (what every other socket in the
// cgroup pays), "toa" with the socket tagged through Control (the program
// runs on connect, and writes the SYN's and the ACK's option).
func BenchmarkDial(b *testing.B) {
	requireSender(b)
	_, cg := testCgroup(b)
	lab := netns.NewLab(b)
	for _, mode := range []string{"plain", "attached", "toa"} {
		b.Run(mode, func(b *testing.B) {
			// A fresh namespace per run: no TIME_WAIT sockets of
			// earlier runs in the way.
			h := lab.Host(fmt.Sprintf("bench-%d", rand.Uint32()))
			res := runHelper(b, cg, helperJob{Netns: netnsFile(h), Bench: &benchJob{Mode: mode, N: b.N}})
			b.ReportMetric(float64(res.BenchNs)/float64(b.N), "ns/op")
		})
	}
}

// BenchmarkControl measures what Control adds to a dial in user space:
// one socket storage update (a bpf syscall). "socket" is the baseline of
// making and closing the socket alone.
func BenchmarkControl(b *testing.B) {
	requireSender(b)
	path, _ := testCgroup(b)
	s, err := Open(Options{CgroupPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctl := s.Control(netip.MustParseAddrPort("[2001:db8::7]:4242"))
	for _, tag := range []bool{false, true} {
		name := "socket"
		if tag {
			name = "socket+control"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				if tag {
					if err := ctl("tcp", "192.0.2.1:80", fdConn(fd)); err != nil {
						b.Fatal(err)
					}
				}
				unix.Close(fd)
			}
		})
	}
}
