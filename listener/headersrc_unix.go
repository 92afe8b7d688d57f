//go:build unix

package listener

import (
	"io"
	"os"
	"syscall"
)

// nonBlockingReads: a socket can be read once without waiting.
const nonBlockingReads = true

// readOnce is the function given to RawConn.Read (as s.readFn): one
// read(2), and true, so that the runtime never waits for readability.
func (s *headerSource) readOnce(fd uintptr) bool {
	s.n, s.err = syscall.Read(int(fd), s.buf)
	return true
}

// readNoWait reads once from the socket; errWouldBlock when nothing is
// there yet.
func (s *headerSource) readNoWait(p []byte) (int, error) {
	s.buf = p
	err := s.rc.Read(s.readFn)
	n, rerr := s.n, s.err
	s.buf, s.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}
