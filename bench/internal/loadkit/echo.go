package loadkit

import (
	"bytes"
	"errors"
	"net"
)

// WhoRequest starts a request that an Echo with Who answers with the
// address of the peer it sees, instead of echoing it.
const WhoRequest = "WHO?"

// maxPPv1Line is the longest PROXY v1 header line, CRLF included.
const maxPPv1Line = 107

// Echo is an origin's echo server: it writes back what it reads.
type Echo struct {
	// PPv1: a TCP connection starts with a PROXY v1 header line, which is
	// dropped; a connection without one is closed.
	PPv1 bool
	// Who: a TCP connection whose first read, or a datagram that, starts
	// with WhoRequest gets the peer's address ("addr:port") instead.
	Who bool
}

// TCP echoes c until EOF or an error, then closes it.
func (e Echo) TCP(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 4096)
	if e.PPv1 {
		rest, ok := skipPPv1(c, buf)
		if !ok {
			return
		}
		if len(rest) > 0 {
			if _, err := c.Write(rest); err != nil {
				return
			}
		}
	}
	first := e.Who
	for {
		n, err := c.Read(buf)
		if first && n > 0 {
			first = false
			if bytes.HasPrefix(buf[:n], []byte(WhoRequest)) {
				c.Write([]byte(c.RemoteAddr().String()))
				return
			}
		}
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// skipPPv1 reads c into buf until the end of a PROXY v1 header line and
// returns what came after the line; ok is false when the connection does
// not start with such a line, or ends first.
func skipPPv1(c *net.TCPConn, buf []byte) (rest []byte, ok bool) {
	have := 0
	for {
		n, err := c.Read(buf[have:])
		have += n
		if i := bytes.Index(buf[:have], []byte("\r\n")); i >= 0 {
			if !bytes.HasPrefix(buf[:have], []byte("PROXY ")) {
				return nil, false
			}
			return buf[i+2 : have], true
		}
		if err != nil || have > maxPPv1Line {
			return nil, false
		}
	}
}

// UDP echoes every datagram to its sender until c is closed.
func (e Echo) UDP(c *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if e.Who && bytes.HasPrefix(buf[:n], []byte(WhoRequest)) {
			c.WriteToUDPAddrPort([]byte(from.String()), from)
			continue
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// Discard reads c until EOF or an error, drops what it reads, and closes
// c.
func Discard(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}
