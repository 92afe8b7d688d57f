//go:build linux

package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestIsLocalResource: the edge's own shortages are told from what an
// origin does, however the error is wrapped.
func TestIsLocalResource(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{os.NewSyscallError("socket", syscall.EMFILE), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.ENFILE)}, true},
		{fmt.Errorf("dial udp: %w", os.NewSyscallError("connect", syscall.ENOBUFS)), true},
		{os.NewSyscallError("socket", syscall.ENOMEM), true},
		{os.NewSyscallError("connect", syscall.ECONNREFUSED), false},
		{os.NewSyscallError("connect", syscall.ETIMEDOUT), false},
		{errors.New("i/o timeout"), false},
		{nil, false},
	} {
		if got := isLocalResource(tc.err); got != tc.want {
			t.Errorf("isLocalResource(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestFileCaps: the bounds an open-file limit holds, two descriptors per
// connection, one per flow, an eighth of the limit (32 to fileMargin) left
// over.
func TestFileCaps(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		limit                 uint64
		sockets, conns, flows int
		tcp, udp              bool
		wantConns, wantFlows  int
	}{
		{"unknown limit", 0, 1, 50000, 10000, true, true, 50000, 10000},
		{"room enough", 1 << 20, 10, 50000, 10000, true, true, 50000, 10000},
		{"256 descriptors, TCP only", 256, 1, 50000, 10000, true, false, 111, 10000},
		{"256 descriptors, UDP only", 256, 2, 50000, 10000, false, true, 50000, 222},
		{"both shrink in proportion", 4096 + 512, 0, 1000, 3000, true, true, 1000 * 4032 / 5000, 3000 * 4032 / 5000},
		{"not even the sockets fit", 40, 100, 50000, 10000, true, true, 1, 1},
		{"headroom capped at fileMargin", 1<<20 - 1, 0, 1 << 20, 0, true, false, (1<<20 - 1 - fileMargin) / 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := fileCaps(tc.limit, tc.sockets, tc.conns, tc.flows, tc.tcp, tc.udp)
			if c != tc.wantConns || f != tc.wantFlows {
				t.Errorf("fileCaps(%d, %d, %d, %d, %v, %v) = %d, %d; want %d, %d",
					tc.limit, tc.sockets, tc.conns, tc.flows, tc.tcp, tc.udp, c, f, tc.wantConns, tc.wantFlows)
			}
		})
	}
}

// lockedBuffer is a log sink for tests.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestServerFileLimit: the connection bound follows the open-file limit
// the process got, and both the failed raise and the lowered bound are
// logged once, not on every reload (SIGHUP).
func TestServerFileLimit(t *testing.T) {
	var logs lockedBuffer
	opts := Options{
		RulesPath: filepath.Join(t.TempDir(), "rules.txt"),
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
	}
	port := freePort(t, "tcp")
	if err := os.WriteFile(opts.RulesPath, []byte(fmt.Sprintf("tcp:%d 127.0.0.1 9 off off\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.fileLimit = func(int) (uint64, error) { return 256, errors.New("setrlimit: operation not permitted") }
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s.Shutdown(ctx)
	})
	for range 3 {
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := s.maxConns.Load(), int64(111); got != want {
		t.Errorf("connection bound %d under a limit of 256, want %d", got, want)
	}
	if n := logs.count("cannot raise the open-file limit"); n != 1 {
		t.Errorf("the failed raise was logged %d times over 4 loads, want once", n)
	}
	if n := logs.count("holds fewer connections"); n != 1 {
		t.Errorf("the lowered bound was logged %d times over 4 loads, want once", n)
	}
}

// TestAcceptBackoff: serveTCP's waits after failed accepts double from
// 5 ms to 1 s, and an accept that succeeds in between does not start them
// over (a process out of descriptors accepts now and then as connections
// close); a second without failure does.
func TestAcceptBackoff(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		fails []time.Duration // when accept fails, from the start
		want  []time.Duration // the wait after each
	}{
		{"doubles to the cap", []time.Duration{0, 5 * ms, 15 * ms, 35 * ms, 75 * ms, 155 * ms, 315 * ms, 635 * ms, 1275 * ms, 2275 * ms},
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}},
		// Failures right after each wait, with successes in between: the
		// waits still grow.
		{"successes in between", []time.Duration{0, 6 * ms, 17 * ms, 38 * ms},
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms}},
		{"a quiet second starts over", []time.Duration{0, 5 * ms, 15 * ms, 1100 * ms},
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 5 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			var b acceptBackoff
			for i, at := range tc.fails {
				if got := b.failed(start.Add(at)); got != tc.want[i] {
					t.Fatalf("failure %d at %v: wait %v, want %v", i, at, got, tc.want[i])
				}
			}
		})
	}
}
