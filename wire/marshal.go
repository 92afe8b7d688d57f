package wire

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// MarshalOptions tunes AppendProxyHeader.
type MarshalOptions struct {
	// CRC32C appends a CRC32C TLV (v2 only) computed over the final header.
	CRC32C bool
}

// AppendProxyHeader appends the wire form of h to dst. Version 1 carries no
// TLVs; a Local header is written as LOCAL (v2) or UNKNOWN (v1).
func AppendProxyHeader(dst []byte, h *ProxyHeader, opt MarshalOptions) ([]byte, error) {
	lib, err := toLibrary(h, opt)
	if err != nil {
		return dst, err
	}
	raw, err := lib.Format()
	if err != nil {
		return dst, fmt.Errorf("proxy v%d: format: %w", h.Version, err)
	}
	if opt.CRC32C {
		off, found, err := findTLV(raw, TLVCRC32C)
		if err != nil || !found {
			return dst, fmt.Errorf("proxy v2: CRC32C TLV missing after format: %v", err)
		}
		binary.BigEndian.PutUint32(raw[off:], crc32cZeroed(raw, off))
	}
	return append(dst, raw...), nil
}

func toLibrary(h *ProxyHeader, opt MarshalOptions) (*proxyproto.Header, error) {
	if h.Version != 1 && h.Version != 2 {
		return nil, fmt.Errorf("proxy: version %d", h.Version)
	}
	if h.Version == 1 && (len(h.TLVs) > 0 || opt.CRC32C || h.Datagram) {
		return nil, fmt.Errorf("proxy v1 carries no TLVs and no datagrams")
	}
	lib := &proxyproto.Header{Version: byte(h.Version), Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if !h.Local {
		if err := setAddrs(lib, h); err != nil {
			return nil, err
		}
	}
	tlvs := make([]proxyproto.TLV, 0, len(h.TLVs)+1)
	for _, t := range h.TLVs {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2Type(t.Type), Value: t.Value})
	}
	if opt.CRC32C {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_CRC32C, Value: make([]byte, 4)})
	}
	if len(tlvs) > 0 {
		if err := lib.SetTLVs(tlvs); err != nil {
			return nil, fmt.Errorf("proxy v2: TLVs: %w", err)
		}
	}
	return lib, nil
}

func setAddrs(lib *proxyproto.Header, h *ProxyHeader) error {
	src, dst := h.Source, h.Destination
	if !src.IsValid() || !dst.IsValid() {
		return fmt.Errorf("proxy: source %v and destination %v must both be set", src, dst)
	}
	if src.Addr().Is4() != dst.Addr().Is4() {
		// One family for both ends, as the format requires: map the IPv4 one.
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	lib.Command = proxyproto.PROXY
	v4 := src.Addr().Is4()
	switch {
	case v4 && h.Datagram:
		lib.TransportProtocol = proxyproto.UDPv4
	case v4:
		lib.TransportProtocol = proxyproto.TCPv4
	case h.Datagram:
		lib.TransportProtocol = proxyproto.UDPv6
	default:
		lib.TransportProtocol = proxyproto.TCPv6
	}
	if h.Datagram {
		lib.SourceAddr, lib.DestinationAddr = net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst)
	} else {
		lib.SourceAddr, lib.DestinationAddr = net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst)
	}
	return nil
}

// TLV returns the value of the first TLV of type t.
func (h *ProxyHeader) TLV(t uint8) ([]byte, bool) {
	for _, tlv := range h.TLVs {
		if tlv.Type == t {
			return tlv.Value, true
		}
	}
	return nil, false
}

// ALPN returns the ALPN TLV (the negotiated application protocol), if any.
func (h *ProxyHeader) ALPN() string { v, _ := h.TLV(TLVALPN); return string(v) }

// Authority returns the AUTHORITY TLV (the host name, e.g. TLS SNI), if any.
func (h *ProxyHeader) Authority() string { v, _ := h.TLV(TLVAuthority); return string(v) }

// UniqueID returns the UNIQUE_ID TLV, if any.
func (h *ProxyHeader) UniqueID() []byte { v, _ := h.TLV(TLVUniqueID); return v }

// SSL returns the SSL TLV with its sub-TLVs (TLS version, cipher, client
// certificate facts), if the header has a well-formed one.
func (h *ProxyHeader) SSL() (tlvparse.PP2SSL, bool) {
	v, ok := h.TLV(TLVSSL)
	if !ok {
		return tlvparse.PP2SSL{}, false
	}
	ssl, err := tlvparse.SSL(proxyproto.TLV{Type: proxyproto.PP2_TYPE_SSL, Value: v})
	return ssl, err == nil
}
