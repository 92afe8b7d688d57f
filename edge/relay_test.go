package edge

import (
	"errors"
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

// relayed is a relay between a client and an origin over loopback.
type relayed struct {
	client, origin  *net.TCPConn // the test's ends
	done            chan struct{}
	mu              sync.Mutex
	toOrigin, toClt int64
}

// startRelay runs relay(edgeClient, edgeUpstream, idle) in a goroutine,
// with client -- edgeClient and edgeUpstream -- origin as loopback pairs.
func startRelay(t *testing.T, idle time.Duration) *relayed {
	t.Helper()
	client, edgeClient := tcpPair(t)
	edgeUp, origin := tcpPair(t)
	r := &relayed{client: client, origin: origin, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		relay(edgeClient, edgeUp, idle, func(toOrigin bool, n int64) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if toOrigin {
				r.toOrigin += n
			} else {
				r.toClt += n
			}
		})
	}()
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
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.toOrigin, r.toClt
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
// closed by the idle timeout. The trickle (a byte every 5ms) is 50 times
// faster than the idle timeout (250ms) and lasts 6 idle periods; only a
// stall of a quarter second between two writes could make a correct relay
// close it.
//
// It fails with relay.go as written: pipe updates `last` only when io.Copy
// returns, and io.Copy over a *net.TCPConn (splice) keeps going until the
// 1 MiB chunk is full, EOF, or the read deadline. A trickle never fills a
// chunk, so `last` stays at the start of the copy; when the silent
// direction's deadline fires (at about the same time as the busy one's),
// it sees no progress for `idle` and aborts a connection that is moving
// bytes.
func TestRelayOneWayTrickleIsNotIdle(t *testing.T) {
	t.Parallel()
	const idle = 250 * time.Millisecond
	const total = 6 * idle
	for _, dir := range []string{"download", "upload"} {
		t.Run(dir, func(t *testing.T) {
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
