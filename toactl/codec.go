package toactl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"
)

// encodeAddr is the module's 18-byte address: IPv6 (IPv4 mapped), port.
func encodeAddr(ap netip.AddrPort) []byte {
	b := make([]byte, addrLen)
	a16 := ap.Addr().As16()
	copy(b, a16[:])
	binary.BigEndian.PutUint16(b[16:], ap.Port())
	return b
}

func decodeAddr(b []byte) (netip.AddrPort, error) {
	if len(b) != addrLen {
		return netip.AddrPort{}, fmt.Errorf("toactl: address of %d bytes, want %d", len(b), addrLen)
	}
	addr := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[16:])), nil
}

func encodeConfig(cfg Config) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	prefixes := make([]string, 0, len(cfg.Trusted))
	for _, p := range cfg.Trusted {
		if !p.IsValid() {
			return nil, fmt.Errorf("toactl: invalid prefix %v", p)
		}
		prefixes = append(prefixes, p.Masked().String())
	}
	ae.String(attrTrusted, strings.Join(prefixes, ","))
	if cfg.Kinds != nil {
		if len(cfg.Kinds) == 0 {
			return nil, fmt.Errorf("toactl: empty kind list")
		}
		kinds := make([]string, 0, len(cfg.Kinds))
		for _, k := range cfg.Kinds {
			if k < 2 {
				return nil, fmt.Errorf("toactl: option kind %d cannot carry an address", k)
			}
			kinds = append(kinds, strconv.Itoa(int(k)))
		}
		ae.String(attrKinds, strings.Join(kinds, ","))
	}
	return ae.Encode()
}

func decodeConfig(b []byte) (Config, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Config{}, err
	}
	var cfg Config
	var trusted, kinds string
	for ad.Next() {
		switch ad.Type() {
		case attrVersion:
			cfg.Version = ad.String()
		case attrTrusted:
			trusted = ad.String()
		case attrKinds:
			kinds = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return Config{}, err
	}
	if cfg.Trusted, err = ParsePrefixes(trusted); err != nil {
		return Config{}, err
	}
	if cfg.Kinds, err = ParseKinds(kinds); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// ParsePrefixes parses the module's comma-separated prefix list; an address
// without a length is a single host.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("toactl: prefix %q: %w", f, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("toactl: prefix %q: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ParseKinds parses a comma-separated kind list such as "200,253,254".
func ParseKinds(s string) ([]uint8, error) {
	var out []uint8
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, err := strconv.ParseUint(f, 10, 8)
		if err != nil || k < 2 {
			return nil, fmt.Errorf("toactl: option kind %q: want 2..255", f)
		}
		out = append(out, uint8(k))
	}
	return out, nil
}

func decodeStats(b []byte) ([]Stat, uint64, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, 0, err
	}
	var stats []Stat
	var live uint64
	for ad.Next() {
		switch ad.Type() {
		case attrStats:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					if nd.Type() == attrStat {
						nd.Nested(func(sd *netlink.AttributeDecoder) error {
							var s Stat
							for sd.Next() {
								switch sd.Type() {
								case attrStatName:
									s.Name = sd.String()
								case attrStatValue:
									s.Value = sd.Uint64()
								}
							}
							stats = append(stats, s)
							return nil
						})
					}
				}
				return nil
			})
		case attrLive:
			live = ad.Uint64()
		}
	}
	return stats, live, ad.Err()
}

func decodeEntry(b []byte) (Entry, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Entry{}, err
	}
	var e Entry
	for ad.Next() {
		var dst *netip.AddrPort
		switch ad.Type() {
		case attrLocal:
			dst = &e.Local
		case attrProxy:
			dst = &e.Proxy
		case attrClient:
			dst = &e.Client
		default:
			continue
		}
		if *dst, err = decodeAddr(ad.Bytes()); err != nil {
			return Entry{}, err
		}
	}
	return e, ad.Err()
}
