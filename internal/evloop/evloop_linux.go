//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Handler is what a Loop runs for its user, in the loop.
type Handler interface {
	// Events handles ready events (never the loop's own wake-up): one
	// call per run of them in a batch, so one per batch unless the
	// batch held a wake-up. It reports whether the loop may park without
	// polling again as far as these events go (see Loop.turn): true
	// unless a level-triggered socket may still have something.
	Events(evs []unix.EpollEvent) bool
	// Sweep runs once a period, busy or not.
	Sweep()
}

// Tokens name what an epoll event is about (Token, Loop.Add): 0 is the
// loop's eventfd, the rest are handed out by NewTokens.
const wakeToken = 0

// Loop is one epoll loop.
type Loop struct {
	h        Handler
	log      *slog.Logger
	ep, wake int
	epf      *os.File        // owns ep; its poller wakes the loop
	rc       syscall.RawConn // epf's
	next     uint64          // last token handed out
	now      time.Time       // after the last epoll_wait
	swept    time.Time
	period   time.Duration
	stopping bool

	mu   sync.Mutex
	cmds []func()
}

// Open opens l, a zero Loop (users embed one, so that its clock is a
// field of theirs), to run h and sweep every period; log takes its
// errors. Run runs it; Close closes it once Run has returned (or never
// ran).
func (l *Loop) Open(h Handler, period time.Duration, log *slog.Logger) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return fmt.Errorf("evloop: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return fmt.Errorf("evloop: epoll: %w", err)
	}
	epf := os.NewFile(uintptr(ep), "epoll")
	rc, err := epf.SyscallConn()
	if err != nil {
		epf.Close()
		unix.Close(wake)
		return fmt.Errorf("evloop: epoll: %w", err)
	}
	l.h, l.log, l.ep, l.wake, l.epf, l.rc, l.period = h, log, ep, wake, epf, rc, period
	l.now = time.Now()
	l.swept = l.now
	return nil
}

// Close closes the loop's descriptors.
func (l *Loop) Close() {
	l.epf.Close()
	unix.Close(l.wake)
}

// setToken puts tok into ev.
func setToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

// Token is the token of ev.
func Token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// NewTokens returns a fresh even token and the odd one after it, for a
// user with two sockets to one thing (and a way to tell them apart).
func (l *Loop) NewTokens() (uint64, uint64) {
	l.next += 2
	return l.next, l.next + 1
}

// Now is the loop's clock: the time after its last wait.
func (l *Loop) Now() time.Time { return l.now }

// Period is the loop's sweep period.
func (l *Loop) Period() time.Duration { return l.period }

// Stop makes Run return once the current batch is done; call it in the
// loop (a command).
func (l *Loop) Stop() { l.stopping = true }

// Add registers fd for events, reported with tok.
func (l *Loop) Add(fd int, events uint32, tok uint64) error {
	ev := unix.EpollEvent{Events: events}
	setToken(&ev, tok)
	return epollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev)
}

// Del unregisters fd; a closed descriptor has left the epoll set by itself.
func (l *Loop) Del(fd int) error {
	return epollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, nil)
}

// Call runs fn in the loop and waits for it.
func (l *Loop) Call(fn func()) {
	done := make(chan struct{})
	l.Post(func() { fn(); close(done) })
	<-done
}

// Post has the loop run fn soon.
func (l *Loop) Post(fn func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, fn)
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.wake, one[:]) // EAGAIN only when the counter is full: a wake-up is pending
}

func (l *Loop) runCommands() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

// Run waits for the epoll set through Go's poller (the epoll descriptor
// is itself pollable), so that a loop parks like any goroutine instead of
// holding a thread in epoll_wait, which the scheduler would take its
// processor from and hand back at a cost on every wake-up. The deadline
// of the wait is the next sweep. Run returns after Stop.
func (l *Loop) Run() {
	events := make([]unix.EpollEvent, 128)
	turn := func(fd uintptr) bool { return l.turn(int(fd), events) }
	l.epf.SetReadDeadline(l.now.Add(l.period))
	for !l.stopping {
		err := l.rc.Read(turn)
		l.now = time.Now()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.log.Error("evloop: epoll wait", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		l.sweepIfDue()
	}
}

// turn handles what is ready until the loop may park (false) or stops
// (true). It runs inside the epoll descriptor's RawRead, so that a
// wake-up Go's poller records while the loop is busy is kept for the
// park; leaving RawRead would forget it.
//
// After a batch the loop normally polls once more before it parks, as
// level-triggered sockets read only in part are reported again only then.
// It parks at once when the batch was not full and every event in it left
// its socket empty: anything that arrives later wakes the epoll set's
// waiters, Go's poller among them, so nothing is missed, and a
// request/response exchange costs one epoll_pwait less per wake-up.
func (l *Loop) turn(ep int, events []unix.EpollEvent) bool {
	for !l.stopping {
		n, err := epollPoll(ep, events)
		l.now = time.Now()
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			l.log.Error("evloop: epoll_pwait", "err", os.NewSyscallError("epoll_pwait", err))
			time.Sleep(10 * time.Millisecond)
			return false
		case n == 0:
			return false
		}
		settled := l.dispatch(events[:n]) && n < len(events)
		l.sweepIfDue()
		if settled {
			return l.stopping
		}
	}
	return true
}

// dispatch runs the commands of a wake-up and hands the other events to
// the handler, in order; it reports whether they all settled (see turn).
func (l *Loop) dispatch(evs []unix.EpollEvent) bool {
	settled := true
	start := 0
	for i := range evs {
		if Token(&evs[i]) == wakeToken {
			settled = l.handle(evs[start:i]) && settled
			l.runCommands()
			start = i + 1
		}
	}
	return l.handle(evs[start:]) && settled
}

func (l *Loop) handle(evs []unix.EpollEvent) bool {
	return len(evs) == 0 || l.h.Events(evs)
}

// sweepIfDue sweeps once a period, busy or not.
func (l *Loop) sweepIfDue() {
	if l.now.Sub(l.swept) >= l.period {
		l.swept = l.now
		l.h.Sweep()
		l.epf.SetReadDeadline(l.now.Add(l.period))
	}
}

// The loop's epoll calls never wait, so they are raw system calls, as the
// loops' socket calls are (package internal/rawsys says why).

func epollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// epollPoll collects the ready events without waiting.
func epollPoll(ep int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}
