//go:build linux

package rawsys

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Outcome is where Pump stopped.
type Outcome uint8

// The outcomes of Pump.
const (
	// Drained: src has nothing more for now; its next event says when it
	// has.
	Drained Outcome = iota
	// EOF: src sent its FIN, after everything before it was written.
	EOF
	// Failed: a read or a write failed (Result.Err): the connection is
	// broken both ways.
	Failed
	// Slow: dst took only part of a read (a full send buffer); Result.Rest
	// is what it did not take, in the caller's buffer.
	Slow
	// Stream: a read filled the buffer, all of it written: a long
	// transfer, which splice(2) in a goroutine moves better than a loop's
	// copies.
	Stream
)

// Result is what one Pump did.
type Result struct {
	Outcome Outcome
	Moved   int    // bytes written to dst
	Rest    []byte // Slow: the bytes read that dst did not take
	Err     error  // Failed: why
}

// Pump moves what the non-blocking socket src has to dst, through buf,
// one read and one write at a time, as an epoll loop does for ev, an
// edge-triggered event of src. A read shorter than buf has emptied the
// socket, unless the peer also closed (then the FIN is read too) or sent
// urgent data (a read stops at the urgent mark; EPOLLPRI says one is
// pending): with those in ev, reads go on until EAGAIN.
func Pump(src, dst int, buf []byte, ev uint32) Result {
	var moved int
	for {
		n, err := Read(src, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return Result{Outcome: Drained, Moved: moved}
		case err != nil:
			return Result{Outcome: Failed, Moved: moved, Err: os.NewSyscallError("read", err)}
		case n == 0:
			return Result{Outcome: EOF, Moved: moved}
		}
		w, werr := Write(dst, buf[:n])
		w = max(w, 0)
		moved += w
		switch {
		case werr != nil && werr != unix.EAGAIN:
			return Result{Outcome: Failed, Moved: moved, Err: os.NewSyscallError("write", werr)}
		case w < n:
			return Result{Outcome: Slow, Moved: moved, Rest: buf[w:n]}
		case n == len(buf):
			return Result{Outcome: Stream, Moved: moved}
		case ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLPRI) == 0:
			return Result{Outcome: Drained, Moved: moved}
		}
	}
}

// TCPConn turns the socket fd into a *net.TCPConn, which Go's poller owns
// (through a duplicate), and closes fd. net.FileConn turns TCP keep-alive
// on with Go's defaults; a caller that wants none turns it off.
func TCPConn(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d: %w", fd, err)
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("descriptor %d is not a TCP socket", fd)
	}
	return tc, nil
}

// ConnectError is why a non-blocking connect failed, if it did, given the
// first epoll event of its socket: writable with neither EPOLLERR nor
// EPOLLHUP is connected, which saves asking SO_ERROR.
func ConnectError(fd int, ev uint32) error {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return nil
	}
	soerr, err := GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return os.NewSyscallError("getsockopt", err)
	case soerr != 0:
		return os.NewSyscallError("connect", unix.Errno(soerr))
	}
	return errors.New("connect: connection closed")
}
