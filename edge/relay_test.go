//go:build linux

package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait of the relay tests: on loopback everything
// happens within milliseconds, so hitting it means a hang.
const waitTimeout = 5 * time.Second

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// counter is an adder for the tests.
type counter struct {
	mu sync.Mutex
	n  int64
}

func (c *counter) Add(f float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(f)
}

func (c *counter) get() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// relayed is a relay between a client and an origin over loopback.
type relayed struct {
	client, origin  *net.TCPConn // the test's ends
	conn            *relayConn
	done            chan struct{} // closed by onEnd
	toOrigin, toClt counter
}

// startRelay relays edgeClient -- edgeUpstream through table (a new one
// with a running sweeper for idle when table is nil), with client --
// edgeClient and edgeUpstream -- origin as loopback pairs.
func startRelay(t *testing.T, idle time.Duration) *relayed {
	t.Helper()
	table := newConnTable(idle)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go table.sweep(ctx)
	return startRelayIn(t, table)
}

func startRelayIn(t *testing.T, table *connTable) *relayed {
	t.Helper()
	client, edgeClient := tcpPair(t)
	edgeUp, origin := tcpPair(t)
	r := &relayed{client: client, origin: origin, done: make(chan struct{})}
	r.conn = &relayConn{client: edgeClient, upstream: edgeUp, toOrigin: &r.toOrigin, toClient: &r.toClt}
	r.conn.onEnd = func() { close(r.done) }
	if !table.add(r.conn) {
		t.Fatal("the connection table refused a connection")
	}
	go r.conn.run()
	t.Cleanup(func() {
		client.Close()
		origin.Close()
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			t.Errorf("relay still running %v after both ends closed", waitTimeout)
		}
	})
	for _, c := range []*net.TCPConn{client, origin} {
		c.SetDeadline(time.Now().Add(waitTimeout))
	}
	return r
}

func (r *relayed) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatalf("relay still running after %v", waitTimeout)
	}
}

func (r *relayed) counts() (toOrigin, toClient int64) {
	return r.toOrigin.get(), r.toClt.get()
}

// send writes msg on from and reads exactly msg on to.
func send(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(from, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if n, err := io.ReadFull(to, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got[:n], err, msg)
	}
}

// readEOF fails unless r ends with a clean EOF and no data.
func readEOF(t *testing.T, r io.Reader, what string) {
	t.Helper()
	got, err := io.ReadAll(r)
	if err != nil || len(got) != 0 {
		t.Fatalf("%s: read %q, %v; want a clean EOF", what, got, err)
	}
}

// TestRelayHalfClose: a client that closes its sending side still gets the
// origin's answer, and the other way round; the relay ends when both
// directions are done and counts the bytes of each.
func TestRelayHalfClose(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"client", "origin"} {
		t.Run(first+" closes first", func(t *testing.T) {
			t.Parallel()
			r := startRelay(t, time.Minute)
			a, b := r.client, r.origin
			if first == "origin" {
				a, b = b, a
			}
			send(t, a, b, "request")
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			readEOF(t, b, "the half-close passed on")
			// The other direction still works, more than once.
			send(t, b, a, "answer part 1;")
			send(t, b, a, "answer part 2")
			select {
			case <-r.done:
				t.Fatal("relay ended while one direction was still open")
			default:
			}
			if err := b.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			readEOF(t, a, "the second half-close passed on")
			r.wait(t)
			toOrigin, toClient := r.counts()
			wantA, wantB := int64(len("request")), int64(len("answer part 1;answer part 2"))
			if first == "origin" {
				wantA, wantB = wantB, wantA
			}
			if toOrigin != wantA || toClient != wantB {
				t.Errorf("counted %d bytes to the origin and %d to the client, want %d and %d", toOrigin, toClient, wantA, wantB)
			}
		})
	}
}

// TestRelayIdleTimeout: a connection idle both ways for the idle timeout is
// closed, both ends of it.
func TestRelayIdleTimeout(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"never used", "after an exchange", "after a half-close"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := startRelay(t, 100*time.Millisecond)
			switch name {
			case "after an exchange":
				send(t, r.client, r.origin, "ping")
				send(t, r.origin, r.client, "pong")
			case "after a half-close":
				send(t, r.client, r.origin, "ping")
				r.client.CloseWrite()
				readEOF(t, r.origin, "half-close")
			}
			r.wait(t)
			for _, c := range []struct {
				name string
				conn *net.TCPConn
			}{{"client", r.client}, {"origin", r.origin}} {
				_, err := io.ReadAll(c.conn)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s's connection still open %v after the relay ended", c.name, waitTimeout)
				}
			}
		})
	}
}

// TestRelayOneWayTrickleIsNotIdle: a connection that carries a steady
// trickle of bytes in one direction only is busy, not idle, and must not be
// closed by the idle timeout. The trickle (a byte every 5ms) is 200 times
// faster than the idle timeout (1s) and lasts 6 idle periods; only a
// stall of a second between two writes could make a correct relay
// close it. After a burst the trickle flows inside a splice that reports
// nothing to user space until its chunk is full: the sweeper must see it
// all the same.
func TestRelayOneWayTrickleIsNotIdle(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	const total = 6 * idle
	for _, dir := range []string{"download", "upload"} {
		for _, burst := range []int{0, 4 * smallBuf} {
			t.Run(fmt.Sprintf("%s after %d bytes", dir, burst), func(t *testing.T) {
				t.Parallel()
				r := startRelay(t, idle)
				from, to := r.origin, r.client
				if dir == "upload" {
					from, to = to, from
				}
				to.SetDeadline(time.Now().Add(total + waitTimeout))
				from.SetDeadline(time.Now().Add(total + waitTimeout))
				writeErr := make(chan error, 1)
				n := 0
				go func() {
					defer close(writeErr)
					if _, err := from.Write(make([]byte, burst)); err != nil {
						writeErr <- err
						return
					}
					n += burst
					for start := time.Now(); time.Since(start) < total; n++ {
						if _, err := from.Write([]byte{'.'}); err != nil {
							writeErr <- err
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
					from.CloseWrite()
				}()
				got, err := io.ReadAll(to)
				if werr := <-writeErr; werr != nil || err != nil {
					t.Fatalf("the relay cut a connection that moved a byte every 5ms (idle %v) after %d bytes: write %v, read %v", idle, len(got), werr, err)
				}
				if len(got) != n {
					t.Errorf("received %d bytes, sent %d", len(got), n)
				}
			})
		}
	}
}

// TestRelayBytes: every byte arrives, in order, and is counted, whatever
// the size of the writes: below, at and above the small-read buffer (where
// a direction switches to splice) and across several splice chunks, both
// ways at once.
func TestRelayBytes(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, smallBuf - 1, smallBuf, smallBuf + 1, 3*relayChunk + 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			r := startRelay(t, time.Minute)
			var wg sync.WaitGroup
			stream := func(from, to *net.TCPConn, msg []byte) {
				wg.Add(2)
				go func() {
					defer wg.Done()
					if _, err := from.Write(msg); err != nil {
						t.Errorf("write: %v", err)
					}
					from.CloseWrite()
				}()
				go func() {
					defer wg.Done()
					got, err := io.ReadAll(to)
					if err != nil || !bytes.Equal(got, msg) {
						t.Errorf("received %d bytes (%v), want the %d sent", len(got), err, len(msg))
					}
				}()
			}
			stream(r.client, r.origin, pattern(size, 1))
			stream(r.origin, r.client, pattern(size, 7))
			wg.Wait()
			r.wait(t)
			if toOrigin, toClient := r.counts(); toOrigin != int64(size) || toClient != int64(size) {
				t.Errorf("counted %d bytes to the origin and %d to the client, want %d each", toOrigin, toClient, size)
			}
		})
	}
}

func pattern(n, step int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * step / 3)
	}
	return b
}

// TestConnTableSweep: in one table, the sweeper resets the connections idle
// both ways and leaves the busy ones, whichever way they are busy.
func TestConnTableSweep(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	table := newConnTable(idle)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go table.sweep(ctx)
	cases := []struct {
		name string
		busy func(r *relayed) *net.TCPConn // the end that writes, nil for none
		half bool                          // the client half-closed first
	}{
		{name: "idle"},
		{name: "idle after a half-close", half: true},
		{name: "busy upload", busy: func(r *relayed) *net.TCPConn { return r.client }},
		{name: "busy download", busy: func(r *relayed) *net.TCPConn { return r.origin }},
		{name: "busy download after a half-close", half: true, busy: func(r *relayed) *net.TCPConn { return r.origin }},
	}
	relays := make([]*relayed, len(cases))
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for i, tc := range cases {
		r := startRelayIn(t, table)
		relays[i] = r
		if tc.half {
			r.client.CloseWrite()
			readEOF(t, r.origin, tc.name+": half-close")
		}
		if tc.busy == nil {
			continue
		}
		from := tc.busy(r)
		to := r.client
		if from == r.client {
			to = r.origin
		}
		writers.Add(2)
		go func() { defer writers.Done(); io.Copy(io.Discard, to) }()
		go func() {
			defer writers.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if _, err := from.Write([]byte{'.'}); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(3 * idle)
	for i, tc := range cases {
		r := relays[i]
		select {
		case <-r.done:
			if tc.busy != nil {
				t.Errorf("%s: closed as idle", tc.name)
			}
		default:
			if tc.busy == nil {
				// Give a loaded machine more time before failing.
				select {
				case <-r.done:
				case <-time.After(waitTimeout):
					t.Errorf("%s: still open %v after going idle", tc.name, waitTimeout)
				}
			}
		}
	}
	close(stop)
	for _, r := range relays {
		r.client.Close()
		r.origin.Close()
	}
	writers.Wait()
}

// TestConnTableCloseAll: closeAll (the end of a drain) closes every
// connection in the table, their relays end and leave it, and the table
// refuses connections afterwards.
func TestConnTableCloseAll(t *testing.T) {
	t.Parallel()
	table := newConnTable(time.Hour)
	var relays []*relayed
	for range 5 {
		r := startRelayIn(t, table)
		send(t, r.client, r.origin, "hello")
		relays = append(relays, r)
	}
	relays[0].client.CloseWrite() // one half-closed: still relayed, still cut
	readEOF(t, relays[0].origin, "half-close")
	if n := table.len(); n != len(relays) {
		t.Fatalf("table holds %d connections, want %d", n, len(relays))
	}
	table.closeAll()
	for i, r := range relays {
		r.wait(t)
		for _, end := range []*net.TCPConn{r.client, r.origin} {
			if _, err := io.ReadAll(end); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("relay %d: an end still open after closeAll", i)
			}
		}
	}
	if n := table.len(); n != 0 {
		t.Errorf("table holds %d connections after their relays ended, want 0", n)
	}
	if table.add(&relayConn{}) {
		t.Error("the table took a connection after closeAll")
	}
}
