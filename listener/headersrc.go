package listener

import (
	"bufio"
	"errors"
	"net"
	"syscall"

	"github.com/realip/realip/wire"
)

// errWouldBlock ends a header read that would have to wait for the peer.
var errWouldBlock = errors.New("listener: header not complete yet")

// headerSource is what a header is read from. Until wait is set, each Read
// is one read(2) that returns errWouldBlock instead of waiting for the
// peer, so the accept loop can read a header that is already there without
// any risk of being held up by a slow peer. With wait set, reads are the
// connection's own (bounded by the listener's clock).
type headerSource struct {
	conn net.Conn
	rc   syscall.RawConn
	wait bool
	// prefix is read before the connection: the bytes of a parked
	// handshake (pending.go), read before it had a slot.
	prefix []byte

	// One read(2) through rc: readFn, made once per source so that a read
	// allocates no closure, reads into buf and leaves its result in n, err.
	readFn func(fd uintptr) bool
	buf    []byte
	n      int
	err    error
}

// reset points s at conn. Reads wait from the start when wait is set, or
// when conn has no file descriptor to read without waiting, or the
// platform cannot.
func (s *headerSource) reset(conn net.Conn, wait bool) {
	s.conn, s.rc, s.wait, s.prefix = conn, nil, true, nil
	if wait || conn == nil || !nonBlockingReads {
		return
	}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc, s.wait = rc, false
		}
	}
}

func (s *headerSource) Read(p []byte) (int, error) {
	if len(s.prefix) > 0 {
		n := copy(p, s.prefix)
		s.prefix = s.prefix[n:]
		return n, nil
	}
	if s.wait {
		return s.conn.Read(p)
	}
	return s.readNoWait(p)
}

// headerReader is a buffered reader over its own headerSource; the
// listener pools them, so a handshake allocates neither.
type headerReader struct {
	src headerSource
	br  *bufio.Reader
}

func newHeaderReader() *headerReader {
	r := &headerReader{}
	r.src.readFn = r.src.readOnce
	r.br = bufio.NewReaderSize(&r.src, wire.MaxV2HeaderLen)
	return r
}

// reset prepares r to read conn's header (nil: to go back to the pool),
// with reads that wait or not (see headerSource).
func (r *headerReader) reset(conn net.Conn, wait bool) {
	r.src.reset(conn, wait)
	r.br.Reset(&r.src)
}
