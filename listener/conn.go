package listener

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/wire"
)

// ErrUntrustedHeader is returned by the first Read of a connection from an
// untrusted peer that sent a header, under UntrustedDrop; the connection is
// closed.
var ErrUntrustedHeader = errors.New("listener: header from an untrusted peer")

// Conn is a connection whose client address is known. RemoteAddr returns
// the client; LocalAddr the socket's own address.
type Conn struct {
	raw     net.Conn
	l       *Listener
	client  netip.AddrPort
	proxy   netip.AddrPort
	via     wire.Proto
	header  *wire.ProxyHeader
	pending []byte // bytes that arrived with the header, served first
	sniff   bool   // untrusted peer: look for a header on the first read

	// The connection's own storage, so that a Conn is one allocation:
	// remote (RemoteAddr's value) points into remoteIP, and pending into
	// early when those bytes fit.
	remote   net.TCPAddr
	remoteIP [16]byte
	early    [earlyBytes]byte
}

// earlyBytes is how much payload behind a header a Conn keeps without an
// allocation of its own: a first request line or a TLS ClientHello's
// start; more is copied out of the shared reader.
const earlyBytes = 64

func newConn(raw net.Conn, l *Listener, client, proxy netip.AddrPort, via wire.Proto) *Conn {
	c := &Conn{raw: raw, l: l, client: client, proxy: proxy, via: via}
	c.remote = net.TCPAddr{IP: c.ipSlice(client.Addr()), Port: int(client.Port()), Zone: client.Addr().Zone()}
	return c
}

// ipSlice returns a in remoteIP, 4 bytes long for IPv4 as
// net.TCPAddrFromAddrPort does, nil for the zero Addr.
func (c *Conn) ipSlice(a netip.Addr) net.IP {
	switch {
	case a.Is4():
		b := a.As4()
		return c.remoteIP[:copy(c.remoteIP[:], b[:]):4]
	case a.Is6():
		b := a.As16()
		return c.remoteIP[:copy(c.remoteIP[:], b[:]):16]
	}
	return nil
}

// keepBuffered moves what br holds beyond the header into the connection,
// so the reader can go back to the pool.
func (c *Conn) keepBuffered(br *bufio.Reader) {
	n := br.Buffered()
	if n == 0 {
		c.pending = nil
		return
	}
	b, _ := br.Peek(n)
	if n <= len(c.early) {
		c.pending = c.early[:copy(c.early[:], b)]
		return
	}
	c.pending = append([]byte(nil), b...)
}

// Client returns the real client: the header's source, or the socket's
// peer when no header was honoured.
func (c *Conn) Client() netip.AddrPort { return c.client }

// Proxy returns the socket's peer: the proxy when a header was honoured.
func (c *Conn) Proxy() netip.AddrPort { return c.proxy }

// Target returns the address the client connected to on the proxy, as the
// header told it; invalid without a header.
func (c *Conn) Target() netip.AddrPort {
	if c.header == nil {
		return netip.AddrPort{}
	}
	return c.header.Destination
}

// Via returns the protocol that carried the client address (wire.None when
// the peer itself is the client).
func (c *Conn) Via() wire.Proto { return c.via }

// Header returns the PROXY header read from the connection (including a
// LOCAL one), or nil. Its TLVs hold ALPN, AUTHORITY, UNIQUE_ID, SSL and
// custom values.
func (c *Conn) Header() *wire.ProxyHeader { return c.header }

// NetConn returns the underlying connection. Reading from it directly skips
// bytes that arrived together with the header.
func (c *Conn) NetConn() net.Conn { return c.raw }

// RemoteAddr returns the client as a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return &c.remote }

// LocalAddr returns the socket's local address.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// String describes the connection as "client=... proxy=... via=...".
func (c *Conn) String() string {
	return fmt.Sprintf("client=%s proxy=%s via=%s", c.client, c.proxy, c.via)
}

// Read reads payload; the header is never part of it.
func (c *Conn) Read(b []byte) (int, error) {
	if c.sniff {
		if err := c.sniffHeader(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.raw.Read(b)
}

// WriteTo writes the payload to w until EOF, through the socket's own
// WriteTo (splice) once the bytes that came with the header are out.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if c.sniff {
		if err := c.sniffHeader(); err != nil {
			return 0, err
		}
	}
	var total int64
	if len(c.pending) > 0 {
		n, err := w.Write(c.pending)
		total += int64(n)
		c.pending = c.pending[n:]
		if err != nil {
			return total, err
		}
		c.pending = nil
	}
	var n int64
	var err error
	if wt, ok := c.raw.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.Copy(w, onlyReader{c.raw})
	}
	return total + n, err
}

// ReadFrom copies from r into the connection, through the socket's own
// ReadFrom (sendfile, splice) when it has one.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.raw.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(onlyWriter{c.raw}, r)
}

// Write writes to the connection.
func (c *Conn) Write(b []byte) (int, error) { return c.raw.Write(b) }

// Close closes the connection.
func (c *Conn) Close() error { return c.raw.Close() }

// CloseWrite shuts down the writing side, if the connection supports it.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead shuts down the reading side, if the connection supports it.
func (c *Conn) CloseRead() error {
	if cr, ok := c.raw.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// sniffHeader runs once, on the first read of a connection from an
// untrusted peer, under the caller's deadlines: a header found there is
// dropped with the connection or stripped, as the policy says.
func (c *Conn) sniffHeader() error {
	c.sniff = false
	hr := c.l.readers.Get().(*headerReader)
	hr.reset(c.raw, true) // the caller's read: it waits, under its deadlines
	defer c.l.putReader(hr)

	_, err := wire.ReadProxyHeader(hr.br) // validated and stripped, never honoured
	c.keepBuffered(hr.br)
	if err != nil {
		switch reason := reasonOf(err); reason {
		case ReasonMissing, ReasonTruncated:
			// No header, or the peer closed within a signature's first
			// bytes: its bytes are plain payload.
			return nil
		case ReasonReadError, ReasonTimeout:
			// The caller's own deadline or a reset: report it as a read would.
			return err
		}
	}
	if c.l.pol.Untrusted == UntrustedIgnore && err == nil {
		c.l.stats.ignoredHeaders.Add(1)
		return nil
	}
	reason := ReasonUntrusted
	if err != nil && c.l.pol.Untrusted == UntrustedIgnore {
		reason = reasonOf(err)
	}
	c.l.stats.rejected[reason].Add(1)
	c.l.pol.Logger.Debug("realip: header from untrusted peer dropped", "peer", c.proxy, "reason", reason.String(), "err", err)
	c.pending = nil
	c.raw.Close()
	return fmt.Errorf("%w %s (%s)", ErrUntrustedHeader, c.proxy, reason)
}

// onlyReader and onlyWriter hide other methods so io.Copy cannot recurse
// into the wrappers.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
