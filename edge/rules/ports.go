package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// reservedPorts are the forwarding ports EdgeOne keeps for itself, by
// protocol, in ascending order.
var reservedPorts = [...][]uint16{
	TCP: {3943, 3944, 6088, 36000, 56000},
	UDP: {4789, 4790, 6080, 61708},
}

// reservedIn returns the reserved ports of proto within r.
func reservedIn(proto Proto, r PortRange) []uint16 {
	var hit []uint16
	for _, p := range reservedPorts[proto] {
		if r.Contains(p) {
			hit = append(hit, p)
		}
	}
	return hit
}

// parseNumber parses a port number: decimal digits without a leading zero.
// It accepts out-of-range values so the caller can name the limit.
func parseNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// parsePort parses one port in 1..limit; what names it in errors.
func parsePort(s, what string, limit int) (uint16, error) {
	n, ok := parseNumber(s)
	if !ok {
		return 0, fmt.Errorf("invalid %s %q", what, s)
	}
	if n < 1 || n > limit {
		return 0, fmt.Errorf("%s %d is out of range 1-%d", what, n, limit)
	}
	return uint16(n), nil
}

// parsePortRange parses "a" or "a-b" with both ends in 1..limit and a <= b.
func parsePortRange(s, what string, limit int) (PortRange, error) {
	first, last, isRange := strings.Cut(s, "-")
	if isRange && (first == "" || last == "") {
		return PortRange{}, fmt.Errorf("invalid %s range %q", what, s)
	}
	lo, err := parsePort(first, what, limit)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{lo, lo}, nil
	}
	hi, err := parsePort(last, what, limit)
	if err != nil {
		return PortRange{}, err
	}
	if lo > hi {
		return PortRange{}, fmt.Errorf("invalid %s range %q: start is greater than end", what, s)
	}
	return PortRange{lo, hi}, nil
}

// parseForwardPorts parses the ';'-separated PORTS field of a rule.
func parseForwardPorts(proto Proto, s string) ([]PortRange, error) {
	if s == "" {
		return nil, errors.New("missing forwarding ports after \"" + proto.String() + ":\"")
	}
	var ports []PortRange
	for item := range strings.SplitSeq(s, ";") {
		if item == "" {
			return nil, fmt.Errorf("empty entry in port list %q", s)
		}
		pr, err := parsePortRange(item, "port", MaxForwardPort)
		if err != nil {
			return nil, err
		}
		if err := checkReserved(proto, pr); err != nil {
			return nil, err
		}
		ports = append(ports, pr)
	}
	return ports, nil
}

// checkReserved rejects a port or range that holds a reserved port.
func checkReserved(proto Proto, pr PortRange) error {
	hit := reservedIn(proto, pr)
	switch {
	case len(hit) == 0:
		return nil
	case !pr.IsRange():
		return fmt.Errorf("port %d is reserved for %s", pr.Lo, proto)
	case len(hit) == 1:
		return fmt.Errorf("port range %s includes reserved %s port %d", pr, proto, hit[0])
	}
	list := make([]string, len(hit))
	for i, p := range hit {
		list[i] = strconv.Itoa(int(p))
	}
	return fmt.Errorf("port range %s includes reserved %s ports %s", pr, proto, strings.Join(list, ", "))
}

// parseOriginPort parses ORIGINPORT and checks it fits the forwarding ports.
func parseOriginPort(s string, fwd []PortRange) (PortRange, error) {
	op, err := parsePortRange(s, "origin port", MaxOriginPort)
	if err != nil {
		return PortRange{}, err
	}
	if !op.IsRange() {
		return op, nil
	}
	if len(fwd) != 1 {
		return PortRange{}, fmt.Errorf("origin port range %s needs a single forwarding port range, not a list", op)
	}
	if !fwd[0].IsRange() {
		return PortRange{}, fmt.Errorf("origin port range %s needs a forwarding port range, not the single port %d", op, fwd[0].Lo)
	}
	if op.Len() != fwd[0].Len() {
		return PortRange{}, fmt.Errorf("origin port range %s has %d ports but forwarding range %s has %d",
			op, op.Len(), fwd[0], fwd[0].Len())
	}
	return op, nil
}
