package listener

// Benchmarks comparing the plain socket ("raw"), this package ("realip") and
// go-proxyproto ("goproxyproto") in one run. The first sub-benchmark level
// names the implementation, so bench/listener.sh can turn it into a benchstat
// column and print ratios to raw. No test or benchmark here asserts on time.

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/realip/realip/wire"
)

var (
	benchTrusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	benchClient  = netip.MustParseAddrPort("192.0.2.7:40000")
	benchTarget  = netip.MustParseAddrPort("198.51.100.1:443")

	benchSinkAddr net.Addr

	// benchInFlight is the number of client goroutines in BenchmarkAccept,
	// and so the bound on connections in flight. The default keeps both
	// CPUs of a small machine busy, so ns/op is the inverse of throughput;
	// -accept.inflight=1 makes ns/op the latency of one connection.
	benchInFlight = flag.Int("accept.inflight", 16, "connections in flight in BenchmarkAccept")
)

const (
	// benchChunk is what one op of BenchmarkPassThrough moves.
	benchChunk = 128 << 10
	// benchPayload is the UDP payload size, header excluded.
	benchPayload = 64
	// benchWindow bounds the UDP datagrams in flight, well under what the
	// default socket buffers hold, so none is dropped.
	benchWindow = 16
	// benchBuf is a read buffer that holds any datagram.
	benchBuf = 64 << 10
	// benchHang bounds a wait that should end at once; reaching it means a
	// hang or a lost datagram, and fails the benchmark. It is not a measure.
	benchHang = 10 * time.Second
)

// benchProcessCPU returns the CPU time (user + system, all threads) the
// process has used so far, from /proc/self/stat; false where there is no
// such file. Its resolution is the clock tick (10 ms).
func benchProcessCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, false
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const userHZ = 100 // USER_HZ, fixed by the Linux ABI
	return time.Duration(utime+stime) * (time.Second / userHZ), true
}

// benchCPU starts counting the process's CPU time; the returned func
// reports it as cpu-ns/op. The count covers every goroutine, the clients'
// too, so it is the whole cost of an op on this machine. Unlike ns/op, it
// barely moves when other processes compete for the CPUs.
func benchCPU(b *testing.B) (report func()) {
	start, ok := benchProcessCPU()
	return func() {
		end, ok2 := benchProcessCPU()
		if ok && ok2 && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func benchV1Header() []byte {
	return []byte("PROXY TCP4 " + benchClient.Addr().String() + " " + benchTarget.Addr().String() + " " +
		strconv.Itoa(int(benchClient.Port())) + " " + strconv.Itoa(int(benchTarget.Port())) + "\r\n")
}

func benchV2Header(tb testing.TB, datagram bool) []byte {
	tb.Helper()
	h := wire.ProxyHeader{Version: 2, Source: benchClient, Destination: benchTarget, Datagram: datagram}
	b, err := wire.AppendProxyHeader(nil, &h, wire.MarshalOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func benchSPPDatagram(payload []byte) []byte {
	d := wire.AppendSPP(nil, wire.SPPHeader{Client: benchClient, Proxy: benchTarget})
	return append(d, payload...)
}

// benchTCPListener returns a loopback listener of the named implementation
// and the header its clients send (nil for raw). It is closed at cleanup.
func benchTCPListener(b *testing.B, impl string) (net.Listener, []byte) {
	b.Helper()
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var ln net.Listener
	var hdr []byte
	switch impl {
	case "raw":
		ln = inner
	case "realip", "realip-v2":
		l, err := New(inner, Config{Trusted: benchTrusted})
		if err != nil {
			inner.Close()
			b.Fatal(err)
		}
		ln, hdr = l, benchV1Header()
		if impl == "realip-v2" {
			hdr = benchV2Header(b, false)
		}
	case "goproxyproto":
		policy, err := proxyproto.TrustProxyHeaderFromRanges([]string{"127.0.0.0/8"}) // REQUIRE from loopback
		if err != nil {
			inner.Close()
			b.Fatal(err)
		}
		ln, hdr = &proxyproto.Listener{Listener: inner, ConnPolicy: policy}, benchV1Header()
	default:
		inner.Close()
		b.Fatalf("unknown implementation %q", impl)
	}
	b.Cleanup(func() { ln.Close() })
	return ln, hdr
}

// BenchmarkAccept measures one connection: a client dials and sends the
// header and one byte; the server accepts, asks RemoteAddr, reads the byte
// and closes. Clients run in *benchInFlight goroutines, each waiting for the
// server's close before the next dial (so TIME_WAIT stays on the server's
// side and ephemeral ports are not exhausted). The dial is in every
// variant's loop; the difference between variants is the server side.
func BenchmarkAccept(b *testing.B) {
	for _, impl := range []string{"raw", "realip", "realip-v2", "goproxyproto"} {
		b.Run(impl, func(b *testing.B) {
			ln, hdr := benchTCPListener(b, impl)
			wantPort := 0
			if hdr != nil {
				wantPort = int(benchClient.Port())
			}
			benchAccept(b, ln, append(hdr, 'x'), wantPort)
		})
	}
}

func benchAccept(b *testing.B, ln net.Listener, msg []byte, wantPort int) {
	addr := ln.Addr().String()
	var (
		next      atomic.Int64
		wg        sync.WaitGroup
		failOnce  sync.Once
		clientErr error
	)
	fail := func(err error) {
		failOnce.Do(func() { clientErr = err; ln.Close() })
	}
	n := int64(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := benchCPU(b)
	for range max(*benchInFlight, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var eof [1]byte
			for next.Add(1) <= n {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					fail(err)
					return
				}
				if _, err := c.Write(msg); err != nil {
					c.Close()
					fail(err)
					return
				}
				if k, err := c.Read(eof[:]); k != 0 || err != io.EOF {
					c.Close()
					fail(errors.New("client: expected EOF after the server's close, got " + errString(err)))
					return
				}
				c.Close()
			}
		}()
	}
	var one [1]byte
	var serverErr error
	for i := 0; i < b.N; i++ {
		c, err := ln.Accept()
		if err != nil {
			serverErr = err
			break
		}
		benchSinkAddr = c.RemoteAddr()
		if wantPort != 0 {
			if ta, ok := benchSinkAddr.(*net.TCPAddr); !ok || ta.Port != wantPort {
				c.Close()
				serverErr = errors.New("RemoteAddr " + benchSinkAddr.String() + " is not the header's client")
				break
			}
		}
		if _, err := io.ReadFull(c, one[:]); err != nil || one[0] != 'x' {
			c.Close()
			serverErr = errors.New("reading the payload byte: " + errString(err))
			break
		}
		c.Close()
	}
	if serverErr != nil {
		fail(serverErr)
	}
	wg.Wait() // the clients' last closes are part of the ops
	b.StopTimer()
	cpu()
	if clientErr != nil {
		b.Fatal(clientErr)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// benchPair dials ln, sends hdr and returns both ends.
func benchPair(b *testing.B, ln net.Listener, hdr []byte) (client *net.TCPConn, server net.Conn) {
	b.Helper()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if len(hdr) > 0 {
		if _, err := c.Write(hdr); err != nil {
			b.Fatal(err)
		}
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s
}

// benchWriteChunks writes n chunks to c, then closes c's write side.
func benchWriteChunks(c *net.TCPConn, n int, errc chan<- error) {
	chunk := make([]byte, benchChunk)
	for i := 0; i < n; i++ {
		if _, err := c.Write(chunk); err != nil {
			errc <- err
			return
		}
	}
	errc <- c.CloseWrite()
}

// BenchmarkPassThrough measures payload throughput after the header on one
// long-lived connection (b.N chunks of benchChunk bytes):
//
//   - discard: io.Copy(io.Discard, accepted conn);
//   - relay: io.Copy(accepted conn B, accepted conn A), which reaches
//     splice(2) through TCPConn.ReadFrom in both variants, while a client
//     writes into A and another drains B.
func BenchmarkPassThrough(b *testing.B) {
	for _, impl := range []string{"raw", "realip"} {
		b.Run(impl, func(b *testing.B) {
			b.Run("discard", func(b *testing.B) {
				ln, hdr := benchTCPListener(b, impl)
				cli, srv := benchPair(b, ln, hdr)
				errc := make(chan error, 1)
				b.SetBytes(benchChunk)
				b.ReportAllocs()
				b.ResetTimer()
				cpu := benchCPU(b)
				go benchWriteChunks(cli, b.N, errc)
				n, err := io.Copy(io.Discard, srv)
				b.StopTimer()
				cpu()
				if werr := <-errc; werr != nil {
					b.Fatal("writer:", werr)
				}
				if err != nil || n != int64(b.N)*benchChunk {
					b.Fatalf("copied %d of %d bytes: %v", n, int64(b.N)*benchChunk, err)
				}
			})
			b.Run("relay", func(b *testing.B) {
				ln, hdr := benchTCPListener(b, impl)
				cliA, srvA := benchPair(b, ln, hdr)
				cliB, srvB := benchPair(b, ln, hdr)
				cw, ok := srvB.(interface{ CloseWrite() error })
				if !ok {
					b.Fatalf("%T has no CloseWrite", srvB)
				}
				werrc, rerrc := make(chan error, 1), make(chan error, 1)
				drain := make([]byte, 256<<10)
				b.SetBytes(benchChunk)
				b.ReportAllocs()
				b.ResetTimer()
				cpu := benchCPU(b)
				go benchWriteChunks(cliA, b.N, werrc)
				go func() {
					_, err := io.Copy(srvB, srvA)
					if err == nil {
						err = cw.CloseWrite()
					}
					rerrc <- err
				}()
				// Plain Read/Write wrappers: the draining client reads in
				// large blocks instead of io.Discard's 8 KiB.
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{cliB}, drain)
				b.StopTimer()
				cpu()
				if werr := <-werrc; werr != nil {
					b.Fatal("writer:", werr)
				}
				if rerr := <-rerrc; rerr != nil {
					b.Fatal("relay:", rerr)
				}
				if err != nil || n != int64(b.N)*benchChunk {
					b.Fatalf("relayed %d of %d bytes: %v", n, int64(b.N)*benchChunk, err)
				}
			})
		})
	}
}

// benchUDPPair returns a server socket and a "proxy" socket on loopback.
func benchUDPPair(tb testing.TB) (server, proxy *net.UDPConn) {
	tb.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	server, err := net.ListenUDP("udp4", lo)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close() })
	proxy, err = net.ListenUDP("udp4", lo)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { proxy.Close() })
	return server, proxy
}

// BenchmarkUDPEcho measures one datagram round trip: the proxy socket sends
// a 64-byte payload (behind an SPP header for the SPP variants), the server
// reads and echoes it, the proxy reads the reply. Up to benchWindow
// datagrams are in flight. datagrams/s counts echoed datagrams.
//
//   - raw: ReadFromUDPAddrPort / WriteToUDPAddrPort on the *net.UDPConn;
//   - realip-spp: PacketConn.ReadFromSource / WriteToSource;
//   - realip-spp-netaddr: PacketConn.ReadFrom / WriteTo (net.PacketConn);
//   - realip-ppv2-flow: ReadFromSource / WriteToSource, FramingFirstDatagram:
//     one PROXY v2 header on the first datagram (outside the timer), bare
//     payloads after it;
//   - realip-ppv2-every: the same with FramingEveryDatagram, a PROXY v2
//     header on every datagram.
func BenchmarkUDPEcho(b *testing.B) {
	payload := bytes.Repeat([]byte{'p'}, benchPayload)
	spp := benchSPPDatagram(payload)
	variants := []struct {
		name     string
		send     []byte // every measured datagram
		first    []byte // sent once before the timer starts, if set
		replyLen int
		via      wire.Proto // what realip must report for every datagram
		serve    func(srv *net.UDPConn, pc *PacketConn) error
	}{
		{"raw", payload, nil, benchPayload, wire.None, func(srv *net.UDPConn, _ *PacketConn) error {
			buf := make([]byte, benchBuf)
			for {
				n, ap, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return err
				}
				if _, err := srv.WriteToUDPAddrPort(buf[:n], ap); err != nil {
					return err
				}
			}
		}},
		{"realip-spp", spp, nil, len(spp), wire.SPP, benchServeSource},
		{"realip-spp-netaddr", spp, nil, len(spp), wire.SPP, func(_ *net.UDPConn, pc *PacketConn) error {
			buf := make([]byte, benchBuf)
			for {
				n, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return err
				}
				if _, err := pc.WriteTo(buf[:n], addr); err != nil {
					return err
				}
			}
		}},
		{"realip-ppv2-flow", payload, append(benchV2Header(b, true), payload...), benchPayload, wire.PPv2, benchServeSource},
		{"realip-ppv2-every", append(benchV2Header(b, false), payload...), nil, benchPayload, wire.PPv2, benchServeSource},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			srv, proxy := benchUDPPair(b)
			var pc *PacketConn
			if v.name != "raw" {
				var err error
				cfg := Config{Trusted: benchTrusted}
				if v.first != nil {
					cfg.Framing = FramingFirstDatagram
				}
				pc, err = NewPacketConn(srv, cfg)
				if err != nil {
					b.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- v.serve(srv, pc) }()
			defer func() {
				srv.Close()
				if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
					b.Error("server:", err)
				}
			}()
			to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
			in := make([]byte, benchBuf)
			recv := func() {
				n, _, err := proxy.ReadFromUDPAddrPort(in)
				if err != nil || n != v.replyLen {
					b.Fatalf("reply of %d bytes, want %d: %v", n, v.replyLen, err)
				}
			}
			if err := proxy.SetReadDeadline(time.Now().Add(benchHang)); err != nil {
				b.Fatal(err)
			}
			if v.first != nil {
				if _, err := proxy.WriteToUDPAddrPort(v.first, to); err != nil {
					b.Fatal(err)
				}
				recv()
			}
			// Check one reply's header outside the timer.
			if _, err := proxy.WriteToUDPAddrPort(v.send, to); err != nil {
				b.Fatal(err)
			}
			recv()
			if v.replyLen == len(spp) {
				h, err := wire.ParseSPP(in)
				if err != nil || h.Client != benchClient || h.Proxy != benchTarget {
					b.Fatalf("reply header %+v: %v", h, err)
				}
			}

			b.ReportAllocs()
			b.ResetTimer()
			cpu := benchCPU(b)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if i&4095 == 0 {
					if err := proxy.SetReadDeadline(time.Now().Add(benchHang)); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := proxy.WriteToUDPAddrPort(v.send, to); err != nil {
					b.Fatal(err)
				}
				if i >= benchWindow {
					recv()
				}
			}
			for range min(b.N, benchWindow) {
				recv()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cpu()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "datagrams/s")
			if pc != nil {
				s := pc.Stats()
				if s.TotalRejected() != 0 || s.Accepted[v.via] != s.TotalAccepted() || s.Accepted[v.via] < uint64(b.N) {
					b.Fatalf("%d datagrams sent, stats %+v", b.N, s)
				}
			}
		})
	}
}

func benchServeSource(_ *net.UDPConn, pc *PacketConn) error {
	buf := make([]byte, benchBuf)
	for {
		n, src, err := pc.ReadFromSource(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteToSource(buf[:n], src); err != nil {
			return err
		}
	}
}

// TestUDPSourcePathDoesNotAllocate checks that serving an SPP datagram
// through ReadFromSource and WriteToSource allocates nothing. The proxy's
// send and receive run in the same function; the AddrPort methods of
// *net.UDPConn do not allocate either.
func TestUDPSourcePathDoesNotAllocate(t *testing.T) {
	srv, proxy := benchUDPPair(t)
	pc, err := NewPacketConn(srv, Config{Trusted: benchTrusted})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetReadDeadline(time.Now().Add(benchHang)); err != nil {
		t.Fatal(err)
	}
	if err := proxy.SetReadDeadline(time.Now().Add(benchHang)); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{'p'}, benchPayload)
	d := benchSPPDatagram(payload)
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, benchBuf)
	in := make([]byte, benchBuf)
	var (
		firstErr error
		src      Source
		n, got   int
	)
	check := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		_, err := proxy.WriteToUDPAddrPort(d, to)
		check(err)
		n, src, err = pc.ReadFromSource(buf)
		check(err)
		_, err = pc.WriteToSource(buf[:n], src)
		check(err)
		got, _, err = proxy.ReadFromUDPAddrPort(in)
		check(err)
	})
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if !bytes.Equal(buf[:n], payload) || src.Client != benchClient || src.Target != benchTarget || src.Via != wire.SPP {
		t.Fatalf("served %q from %+v", buf[:n], src)
	}
	if !bytes.Equal(in[:got], d) {
		t.Fatalf("reply %x, want %x", in[:got], d)
	}
	if allocs != 0 {
		t.Errorf("ReadFromSource + WriteToSource of an SPP datagram: %v allocations per datagram, want 0", allocs)
	}
}
