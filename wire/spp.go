package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// SPP header layout: magic(2) client addr(16) proxy addr(16) client port(2)
// proxy port(2), all big-endian; IPv4 addresses travel IPv4-mapped.
const (
	// SPPHeaderLen is the fixed size of an SPP header.
	SPPHeaderLen = 38
	// SPPMagic is the first two bytes of every SPP header.
	SPPMagic = 0x56EC

	sppClientAddr = 2
	sppProxyAddr  = 18
	sppClientPort = 34
	sppProxyPort  = 36
)

// SPPHeader is the content of an SPP header: the real client and the address
// of the proxy the client sent its datagram to. Addresses are kept unmapped
// (an IPv4 client is 1.2.3.4, not ::ffff:1.2.3.4).
type SPPHeader struct {
	Client netip.AddrPort
	Proxy  netip.AddrPort
}

// IsSPP reports whether b starts with the SPP magic. It says nothing about
// whether the rest of the header is valid.
func IsSPP(b []byte) bool {
	return len(b) >= 2 && binary.BigEndian.Uint16(b) == SPPMagic
}

// ParseSPP parses the SPP header at the start of b. The payload is
// b[SPPHeaderLen:]. It does not allocate.
func ParseSPP(b []byte) (SPPHeader, error) {
	if !IsSPP(b) {
		return SPPHeader{}, ErrNoHeader
	}
	if len(b) < SPPHeaderLen {
		return SPPHeader{}, fmt.Errorf("spp: %d of %d bytes: %w", len(b), SPPHeaderLen, ErrTruncated)
	}
	h := SPPHeader{
		Client: sppAddrPort(b, sppClientAddr, sppClientPort),
		Proxy:  sppAddrPort(b, sppProxyAddr, sppProxyPort),
	}
	if !h.Client.Addr().IsValid() || h.Client.Addr().IsUnspecified() || h.Client.Port() == 0 {
		return SPPHeader{}, fmt.Errorf("spp: client address %s is not usable: %w", h.Client, ErrMalformed)
	}
	return h, nil
}

func sppAddrPort(b []byte, addrOff, portOff int) netip.AddrPort {
	addr := netip.AddrFrom16([16]byte(b[addrOff : addrOff+16])).Unmap()
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[portOff:]))
}

// PutSPP writes h into b[:SPPHeaderLen]; b must be at least that long.
func PutSPP(b []byte, h SPPHeader) {
	_ = b[SPPHeaderLen-1]
	binary.BigEndian.PutUint16(b, SPPMagic)
	client, proxy := h.Client.Addr().As16(), h.Proxy.Addr().As16()
	copy(b[sppClientAddr:], client[:])
	copy(b[sppProxyAddr:], proxy[:])
	binary.BigEndian.PutUint16(b[sppClientPort:], h.Client.Port())
	binary.BigEndian.PutUint16(b[sppProxyPort:], h.Proxy.Port())
}

// AppendSPP appends the encoded header h to dst.
func AppendSPP(dst []byte, h SPPHeader) []byte {
	var hdr [SPPHeaderLen]byte
	PutSPP(hdr[:], h)
	return append(dst, hdr[:]...)
}
