package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
)

// PROXY protocol framing constants (HAProxy's doc/proxy-protocol.txt).
const (
	// MaxV1HeaderLen is the longest valid v1 line, CRLF included.
	MaxV1HeaderLen = 107
	// V2FixedLen is the signature, version/command, family and length.
	V2FixedLen = 16
	// MaxV2HeaderLen is the longest v2 header accepted: the fixed part plus
	// go-proxyproto's limit on the length field.
	MaxV2HeaderLen = V2FixedLen + 4096
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// TLV type codes defined by the PROXY protocol v2 specification.
const (
	TLVALPN      = 0x01
	TLVAuthority = 0x02
	TLVCRC32C    = 0x03
	TLVNoop      = 0x04
	TLVUniqueID  = 0x05
	TLVSSL       = 0x20
	TLVNetNS     = 0x30
)

// TLV is one type-length-value record of a PROXY v2 header.
type TLV struct {
	Type  uint8
	Value []byte
}

// ProxyHeader is a parsed PROXY protocol header.
type ProxyHeader struct {
	// Version is 1 or 2.
	Version int
	// Local is set for a v2 LOCAL command, a v1 UNKNOWN line, and headers
	// whose addresses are not IP (AF_UNSPEC, AF_UNIX): the receiver must use
	// the socket's own addresses.
	Local bool
	// Datagram is set when a v2 header declares a datagram (UDP) transport.
	Datagram bool
	// Source is the client, Destination the address the client connected to.
	// Both are unmapped; both are invalid when Local is set.
	Source, Destination netip.AddrPort
	// TLVs holds the v2 TLVs in order (CRC32C included, already verified).
	TLVs []TLV
}

// Detect tells which PROXY header b starts with: 1 or 2 with decided set,
// 0 with decided set when b cannot start a header, or decided unset when b is
// a strict prefix of a signature and more bytes are needed to tell.
func Detect(b []byte) (version int, decided bool) {
	for v, sig := range [...][]byte{1: sigV1, 2: sigV2} {
		if sig == nil {
			continue
		}
		n := min(len(b), len(sig))
		if n > 0 && bytes.Equal(b[:n], sig[:n]) {
			if n == len(sig) {
				return v, true
			}
			return 0, false
		}
	}
	return 0, len(b) > 0
}

// ReadProxyHeader reads exactly one PROXY header (v1 or v2) from br and no
// byte after it: whatever the peer sent behind the header stays buffered in
// br. It waits until the whole header arrived, so callers bound it with a
// read deadline on the underlying connection. br must be able to buffer
// MaxV2HeaderLen bytes. A stream that does not start with a signature yields
// ErrNoHeader without consuming anything; an I/O error (a timeout, say) is
// returned wrapped, so errors.Is/As still see it.
func ReadProxyHeader(br *bufio.Reader) (*ProxyHeader, error) {
	if br.Size() < MaxV2HeaderLen {
		return nil, fmt.Errorf("proxy: reader buffer %d < %d bytes", br.Size(), MaxV2HeaderLen)
	}
	version, err := detectStream(br)
	if err != nil {
		return nil, err
	}
	var raw []byte
	if version == 1 {
		raw, err = peekV1(br)
	} else {
		raw, err = peekV2(br)
	}
	if err != nil {
		return nil, err
	}
	if version == 2 {
		if err := VerifyCRC32C(raw); err != nil {
			return nil, err
		}
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("proxy v%d: %v: %w", version, err, ErrMalformed)
	}
	return fromLibrary(h)
}

// detectStream peeks until the first bytes of br decide whether a header is
// present.
func detectStream(br *bufio.Reader) (int, error) {
	for want := 1; ; {
		b, err := peekAtLeast(br, want)
		if v, decided := Detect(b); decided {
			if v == 0 {
				return 0, ErrNoHeader
			}
			return v, nil
		}
		if err != nil {
			return 0, streamError(err, len(b), "signature")
		}
		want = len(b) + 1
	}
}

// peekAtLeast waits for n buffered bytes (or an error) and returns all that
// is buffered, without consuming it.
func peekAtLeast(br *bufio.Reader, n int) ([]byte, error) {
	b, err := br.Peek(n)
	if err == nil && br.Buffered() > len(b) {
		b, err = br.Peek(br.Buffered())
	}
	return b, err
}

// peekV1 returns the v1 line, CRLF included, once it is buffered.
func peekV1(br *bufio.Reader) ([]byte, error) {
	for want := len(sigV1); ; {
		b, err := peekAtLeast(br, want)
		b = b[:min(len(b), MaxV1HeaderLen)]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' {
				return nil, fmt.Errorf("proxy v1: line does not end in CRLF: %w", ErrMalformed)
			}
			return b[:i+1], nil
		}
		if len(b) >= MaxV1HeaderLen {
			return nil, fmt.Errorf("proxy v1: no CRLF within %d bytes: %w", MaxV1HeaderLen, ErrMalformed)
		}
		if err != nil {
			return nil, streamError(err, len(b), "v1 line")
		}
		want = len(b) + 1
	}
}

// peekV2 returns the whole v2 header once it is buffered.
func peekV2(br *bufio.Reader) ([]byte, error) {
	fixed, err := br.Peek(V2FixedLen)
	if err != nil {
		return nil, streamError(err, len(fixed), "v2 fixed part")
	}
	total := V2FixedLen + int(binary.BigEndian.Uint16(fixed[14:]))
	if total > MaxV2HeaderLen {
		return nil, fmt.Errorf("proxy v2: header of %d bytes exceeds %d: %w", total, MaxV2HeaderLen, ErrMalformed)
	}
	raw, err := br.Peek(total)
	if err != nil {
		return nil, streamError(err, len(raw), "v2 header")
	}
	return raw, nil
}

// streamError turns a read error in the middle of a header into ErrTruncated
// (the peer closed) or keeps it as is (a timeout, a reset), with context.
func streamError(err error, have int, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if have == 0 {
			return fmt.Errorf("proxy: connection closed before any byte: %w", ErrTruncated)
		}
		return fmt.Errorf("proxy: connection closed after %d bytes of the %s: %w", have, what, ErrTruncated)
	}
	return fmt.Errorf("proxy: reading the %s after %d bytes: %w", what, have, err)
}

// ParseProxyDatagram parses the PROXY v2 header at the start of a UDP
// datagram and returns it with the payload behind it (aliasing b). A v1
// header is rejected: v1 has no datagram form.
//
// It is kept small enough to be inlined, so that a caller that does not
// keep the header has it on its stack: a header of the common form (IPv4
// or IPv6 addresses, TCP or UDP, no TLVs) then costs no allocation.
func ParseProxyDatagram(b []byte) (h *ProxyHeader, payload []byte, err error) {
	h = new(ProxyHeader)
	if payload, err = parseDatagramInto(h, b); err != nil {
		h = nil // and payload is nil
	}
	return h, payload, err
}

// parseDatagramInto is ParseProxyDatagram filling in h, which does not
// escape: headers of the common form are read in place (parsePlainV2),
// others by go-proxyproto.
func parseDatagramInto(h *ProxyHeader, b []byte) ([]byte, error) {
	total, err := datagramHeaderLen(b)
	if err != nil {
		return nil, err
	}
	if parsePlainV2(h, b[:total]) {
		return b[total:], nil
	}
	ph, err := parseV2Full(b[:total])
	if err != nil {
		return nil, err
	}
	*h = *ph
	return b[total:], nil
}

// datagramHeaderLen checks that b starts with a whole PROXY v2 header and
// returns its length.
func datagramHeaderLen(b []byte) (int, error) {
	switch v, decided := Detect(b); {
	case !decided:
		return 0, fmt.Errorf("proxy v2: %d bytes of signature: %w", len(b), ErrTruncated)
	case v == 0:
		return 0, ErrNoHeader
	case v == 1:
		return 0, fmt.Errorf("proxy v1 header in a datagram: %w", ErrMalformed)
	}
	if len(b) < V2FixedLen {
		return 0, fmt.Errorf("proxy v2: %d bytes: %w", len(b), ErrTruncated)
	}
	total := V2FixedLen + int(binary.BigEndian.Uint16(b[14:]))
	if total > len(b) {
		return 0, fmt.Errorf("proxy v2: header claims %d bytes, datagram has %d: %w", total, len(b), ErrTruncated)
	}
	if total > MaxV2HeaderLen {
		return 0, fmt.Errorf("proxy v2: header of %d bytes exceeds %d: %w", total, MaxV2HeaderLen, ErrMalformed)
	}
	return total, nil
}

// parseV2Full parses the complete v2 header raw with go-proxyproto, after
// checking its CRC32C TLV if it has one.
func parseV2Full(raw []byte) (*ProxyHeader, error) {
	if err := VerifyCRC32C(raw); err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)))
	if err != nil {
		return nil, fmt.Errorf("proxy v2: %v: %w", err, ErrMalformed)
	}
	return fromLibrary(h)
}

// Bytes 12 and 13 of the v2 headers parsePlainV2 reads: version 2 with the
// PROXY command, and the address family (high nibble: 1 inet, 2 inet6)
// with the transport (low nibble: 1 stream, 2 datagram).
const (
	v2CmdProxy  = 0x21
	v2FamInet   = 0x1
	v2FamInet6  = 0x2
	v2TransDgrm = 0x2
)

// parsePlainV2 fills in h from the complete v2 header raw and reports true
// when raw is of the form a proxy sends with every datagram: the PROXY
// command, IPv4 or IPv6 addresses of TCP or UDP, and nothing behind them
// (no TLV, so no checksum either). It reads what go-proxyproto would,
// with no allocation; for any other header it returns false and leaves h
// alone, for the full parser to judge.
func parsePlainV2(h *ProxyHeader, raw []byte) bool {
	if raw[12] != v2CmdProxy {
		return false
	}
	family, transport := raw[13]>>4, raw[13]&0xf
	if (family != v2FamInet && family != v2FamInet6) || transport < 1 || transport > 2 {
		return false
	}
	if len(raw) != V2FixedLen+v2AddrLen[family] {
		return false
	}
	var src, dst netip.Addr
	ports := raw[V2FixedLen+8:]
	if family == v2FamInet {
		src = netip.AddrFrom4([4]byte(raw[V2FixedLen:]))
		dst = netip.AddrFrom4([4]byte(raw[V2FixedLen+4:]))
	} else {
		src = netip.AddrFrom16([16]byte(raw[V2FixedLen:])).Unmap()
		dst = netip.AddrFrom16([16]byte(raw[V2FixedLen+16:])).Unmap()
		ports = raw[V2FixedLen+32:]
	}
	*h = ProxyHeader{
		Version:     2,
		Datagram:    transport == v2TransDgrm,
		Source:      netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports)),
		Destination: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:])),
	}
	return true
}

// fromLibrary converts go-proxyproto's header into a ProxyHeader.
func fromLibrary(h *proxyproto.Header) (*ProxyHeader, error) {
	ph := &ProxyHeader{
		Version:  int(h.Version),
		Datagram: h.TransportProtocol.IsDatagram(),
	}
	tlvs, err := h.TLVs()
	if err != nil {
		return nil, fmt.Errorf("proxy v2 TLVs: %v: %w", err, ErrMalformed)
	}
	for _, t := range tlvs {
		ph.TLVs = append(ph.TLVs, TLV{Type: uint8(t.Type), Value: t.Value})
	}
	if h.Command.IsLocal() || h.TransportProtocol.IsUnspec() || h.TransportProtocol.IsUnix() {
		ph.Local = true
		return ph, nil
	}
	src, okSrc := addrPortOf(h.SourceAddr)
	dst, okDst := addrPortOf(h.DestinationAddr)
	if !okSrc || !okDst {
		return nil, fmt.Errorf("proxy v%d: addresses %v -> %v: %w", h.Version, h.SourceAddr, h.DestinationAddr, ErrMalformed)
	}
	ph.Source, ph.Destination = src, dst
	return ph, nil
}

// SocketAddrPort returns the address of a TCP or UDP socket as an
// AddrPort with IPv4 unmapped, as realip reports every address; the zero
// AddrPort when a is nil or not an IP address and port (other net.Addr
// types are read from their String form).
func SocketAddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.AddrPort{}
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ap := SocketAddrPort(a)
	return ap, ap.Addr().IsValid()
}
