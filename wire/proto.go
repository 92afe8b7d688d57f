package wire

import (
	"fmt"
	"strings"
)

// Proto names the way a client address travelled from the edge to the origin.
type Proto uint8

// The protocols realip understands. None means no client address was passed:
// the peer of the socket is the client.
const (
	None Proto = iota
	PPv1
	PPv2
	SPP
	TOA
	numProtos
)

// NumProtos is the number of Proto values, for arrays indexed by Proto.
const NumProtos = int(numProtos)

var protoNames = [numProtos]string{"none", "ppv1", "ppv2", "spp", "toa"}

// String returns the lower-case name used in flags, rules and logs.
func (p Proto) String() string {
	if p < numProtos {
		return protoNames[p]
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto parses a protocol name, case-insensitively.
func ParseProto(s string) (Proto, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	for p, name := range protoNames {
		if s == name {
			return Proto(p), nil
		}
	}
	return None, fmt.Errorf("unknown protocol %q (want one of ppv1, ppv2, spp, toa, none)", s)
}

// ParseProtoList parses a comma-separated list such as "ppv1,ppv2".
func ParseProtoList(s string) ([]Proto, error) {
	var out []Proto
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		p, err := ParseProto(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty protocol list %q", s)
	}
	return out, nil
}
