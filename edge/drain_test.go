//go:build linux

package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestShutdownDrain: Shutdown waits for a relayed connection that ends
// within its context and then returns nil; a straggler still open when the
// context ends is closed by the edge (its client reads EOF) and Shutdown
// says the drain timed out. Either way nothing is left in the table.
func TestShutdownDrain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		straggler bool
	}{{"connection ends in time", false}, {"straggler cut", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, port := startEchoEdge(t, Options{})
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitTimeout))
			send(t, c, c, "before shutdown")

			drain := 200 * time.Millisecond
			if !tc.straggler {
				drain = waitTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- s.Shutdown(ctx) }()
			if !tc.straggler {
				// The connection still works while draining, then ends.
				send(t, c, c, "while draining")
				c.(*net.TCPConn).CloseWrite()
				readEOF(t, c, "the origin's close")
			}
			select {
			case err := <-shut:
				if tc.straggler != errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Shutdown did not return")
			}
			if tc.straggler {
				if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
					t.Error("the straggler is still open after Shutdown")
				}
			}
			deadline := time.Now().Add(waitTimeout)
			for s.tcpConns.len() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections left in the table", s.tcpConns.len())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
