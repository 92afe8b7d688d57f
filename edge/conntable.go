//go:build linux

package edge

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The relayed TCP connections live in a connTable: the idle timeout and the
// end of a drain go through it instead of a read deadline per copy and a
// context.AfterFunc per connection, both of which cost more than the rest
// of a short connection's bookkeeping (timers, a lock on the server's
// context).
//
// Idleness comes from the kernel: TCP_INFO says how long ago each socket
// last sent and received data, which counts every byte however the relay
// moves it (a splice in progress reports nothing to user space until it
// returns). The sweeper ticks idleTicks times per idle timeout and asks
// only about connections due for a check: a connection is first due one
// idle timeout after it arrived, and after a check that finds it busy,
// when it could next have been idle for the whole timeout. A connection
// idle both ways is therefore reset between IdleTimeout and
// (1+1/idleTicks) x IdleTimeout after its last byte, and a busy one costs
// two getsockopt calls per idle timeout.
const idleTicks = 8

// connTable holds the relayed connections, in shards so that connections
// arriving on many CPUs do not queue on one lock.
type connTable struct {
	idle   time.Duration
	period time.Duration // of a sweep: idle / idleTicks
	tick   atomic.Uint64 // sweeps so far
	next   atomic.Uint32 // shard of the next connection, round robin
	shards []connShard
	found  []*relayConn // a sweep's connections due for a check; the sweeper's
}

// connShard is a doubly linked list of connections under a lock, padded to
// a cache line of its own.
type connShard struct {
	mu     sync.Mutex
	head   *relayConn
	n      int
	closed bool // closeAll ran: add refuses
	_      [40]byte
}

func newConnTable(idle time.Duration) *connTable {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < 64 {
		n *= 2
	}
	return &connTable{
		idle:   idle,
		period: max(idle/idleTicks, time.Millisecond),
		shards: make([]connShard, n),
	}
}

// add registers c; it returns false, registering nothing, once closeAll ran.
func (t *connTable) add(c *relayConn) bool {
	sh := &t.shards[int(t.next.Add(1))&(len(t.shards)-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.closed {
		return false
	}
	c.shard = sh
	c.due = t.tick.Load() + idleTicks
	c.next = sh.head
	if sh.head != nil {
		sh.head.prev = c
	}
	sh.head = c
	sh.n++
	return true
}

// remove unregisters c.
func (sh *connShard) remove(c *relayConn) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.prev != nil {
		c.prev.next = c.next
	} else if sh.head == c {
		sh.head = c.next
	} else {
		return // not in the list any more
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	sh.n--
}

// len returns how many connections are registered.
func (t *connTable) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// closeAll closes every registered connection and makes add refuse new
// ones; the relays of the closed connections end and unregister them.
func (t *connTable) closeAll() {
	var all []*relayConn
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.closed = true
		for c := sh.head; c != nil; c = c.next {
			all = append(all, c)
		}
		sh.mu.Unlock()
	}
	for _, c := range all {
		c.cut()
	}
}

// sweep runs the sweeper until ctx is done.
func (t *connTable) sweep(ctx context.Context) {
	tk := time.NewTicker(t.period)
	defer tk.Stop()
	for {
		select {
		case <-tk.C:
			t.sweepOnce()
		case <-ctx.Done():
			return
		}
	}
}

// sweepOnce advances the clock, resets the connections idle both ways for
// the idle timeout and schedules the next check of the others.
func (t *connTable) sweepOnce() {
	now := t.tick.Add(1)
	due := t.found[:0]
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for c := sh.head; c != nil; c = c.next {
			if c.due <= now {
				due = append(due, c)
			}
		}
		sh.mu.Unlock()
	}
	// The checks run without the locks: a connection may end meanwhile,
	// and then its check fails or its abort finds it closed.
	for _, c := range due {
		quiet, ok := idleFor(c)
		switch {
		case !ok:
			c.due = now + idleTicks // closed, or about to be
		case quiet >= t.idle:
			c.abort()
		default:
			c.due = now + uint64(max(1, (t.idle-quiet+t.period-1)/t.period))
		}
	}
	clear(due)
	t.found = due[:0]
}

// idleFor returns how long both of c's sockets have neither sent nor
// received data; ok is false when that cannot be read (a closed socket).
func idleFor(c *relayConn) (quiet time.Duration, ok bool) {
	a, ok := sockIdle(c.client)
	if !ok {
		return 0, false
	}
	b, ok := sockIdle(c.upstream)
	if !ok {
		return 0, false
	}
	return min(a, b), true
}

// sockIdle returns how long ago the socket last sent or received data, by
// the kernel's clock (milliseconds).
func sockIdle(conn *net.TCPConn) (time.Duration, bool) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond, true
}
