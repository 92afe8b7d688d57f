//go:build linux

package evloop

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const waitTimeout = 10 * time.Second

// recorder is a Handler that passes what it sees to the test.
type recorder struct {
	events chan uint64 // the token of every event
	sweeps atomic.Int64
}

func (r *recorder) Events(evs []unix.EpollEvent) bool {
	for i := range evs {
		r.events <- Token(&evs[i])
	}
	return true
}

func (r *recorder) Sweep() { r.sweeps.Add(1) }

// startLoop runs a loop with a recorder until the test ends.
func startLoop(t *testing.T, period time.Duration) (*Loop, *recorder) {
	t.Helper()
	r := &recorder{events: make(chan uint64, 16)}
	l := new(Loop)
	if err := l.Open(r, period, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(); close(done) }()
	t.Cleanup(func() {
		l.Post(l.Stop)
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Error("Run did not return after Stop")
		}
		l.Close()
	})
	return l, r
}

// TestCallRoundTrip: Call runs its function in the loop's goroutine, one
// command after the other, and returns once it ran.
func TestCallRoundTrip(t *testing.T) {
	l, _ := startLoop(t, time.Hour)
	var inLoop []uint64
	for range 3 {
		l.Call(func() {
			a, _ := l.NewTokens() // only the loop touches the tokens
			inLoop = append(inLoop, a)
		})
	}
	if len(inLoop) != 3 || inLoop[0] != 2 || inLoop[1] != 4 || inLoop[2] != 6 {
		t.Fatalf("tokens handed out in the loop: %v, want [2 4 6]", inLoop)
	}
}

// TestPostWakes: a command posted while the loop is parked wakes it.
func TestPostWakes(t *testing.T) {
	l, _ := startLoop(t, time.Hour)
	l.Call(func() {}) // the loop is running, and parks after this
	ran := make(chan struct{})
	l.Post(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(waitTimeout):
		t.Fatal("a posted command did not run")
	}
}

// TestEventToHandler: an event of a registered descriptor reaches the
// handler with the descriptor's token, and not the loop's own wake-ups.
func TestEventToHandler(t *testing.T) {
	l, r := startLoop(t, time.Hour)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	var tok uint64
	l.Call(func() {
		tok, _ = l.NewTokens()
		err = l.Add(efd, unix.EPOLLIN|unix.EPOLLET, tok)
	})
	if err != nil {
		t.Fatal(err)
	}
	one := [8]byte{1}
	if _, err := unix.Write(efd, one[:]); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-r.events:
		if got != tok {
			t.Fatalf("event with token %d, want %d", got, tok)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no event reached the handler")
	}
	l.Call(func() { err = l.Del(efd) })
	if err != nil {
		t.Fatalf("Del: %v", err)
	}
	select {
	case got := <-r.events:
		t.Fatalf("unexpected event with token %d", got)
	default:
	}
}

// TestSweepAndStop: the handler is swept every period while the loop
// waits, and Run returns after Stop, run as a command.
func TestSweepAndStop(t *testing.T) {
	r := &recorder{events: make(chan uint64, 16)}
	l := new(Loop)
	if err := l.Open(r, 5*time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() { l.Run(); close(done) }()
	deadline := time.Now().Add(waitTimeout)
	for r.sweeps.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sweeps in %v, want 3 at a period of 5ms", r.sweeps.Load(), waitTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	l.Call(l.Stop)
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after Stop")
	}
}
