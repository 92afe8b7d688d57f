package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

const groupPrefix = "og:"

// Limits of domain names (RFC 1035, without the trailing dot).
const (
	maxDomainLen = 253
	maxLabelLen  = 63
)

// parseHost parses an IPv4 address, IPv6 address or domain name. Its
// errors describe the problem without repeating s.
func parseHost(s string) (Origin, error) {
	switch {
	case strings.HasPrefix(s, "["):
		return Origin{}, errors.New("write an IPv6 address without brackets")
	case strings.Contains(s, ":"):
		return parseIP(s, "IPv6")
	case lastLabelNumeric(s):
		return parseIP(s, "IPv4")
	}
	name, err := checkDomain(s)
	if err != nil {
		return Origin{}, err
	}
	return Origin{Kind: OriginDomain, Name: name}, nil
}

// parseIP parses an address that looks like family ("IPv4" or "IPv6") and
// rejects those that cannot be an origin.
func parseIP(s, family string) (Origin, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil && family == "IPv4":
		return Origin{}, errors.New("not a valid IPv4 address (and a domain name cannot end in an all-digit label)")
	case err != nil && strings.Count(s, ":") == 1:
		return Origin{}, errors.New("not a valid IPv6 address (the port is a field of its own)")
	case err != nil:
		return Origin{}, errors.New("not a valid IPv6 address")
	case a.Zone() != "":
		return Origin{}, errors.New("an IPv6 zone is not allowed")
	case a.IsUnspecified():
		return Origin{}, errors.New("the unspecified address cannot be an origin")
	case a.IsMulticast():
		return Origin{}, errors.New("a multicast address cannot be an origin")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return Origin{}, errors.New("the broadcast address cannot be an origin")
	}
	return Origin{Kind: OriginIP, Addr: a}, nil
}

// lastLabelNumeric reports whether the part of s after its last dot is
// all digits, as in an IPv4 address.
func lastLabelNumeric(s string) bool {
	label := s[strings.LastIndexByte(s, '.')+1:]
	if label == "" {
		return false
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

// checkDomain checks a host name and returns it in lower case.
func checkDomain(s string) (string, error) {
	if len(s) > maxDomainLen {
		return "", fmt.Errorf("a domain name is at most %d characters", maxDomainLen)
	}
	if strings.HasSuffix(s, ".") {
		return "", errors.New("a domain name must not end with a dot")
	}
	for label := range strings.SplitSeq(s, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return strings.ToLower(s), nil
}

// checkLabel checks one dot-separated label of a domain name.
func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("empty label in domain name")
	case len(label) > maxLabelLen:
		return fmt.Errorf("domain label %q is longer than %d characters", label, maxLabelLen)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("domain label %q starts or ends with a hyphen", label)
	}
	for _, c := range label {
		if !isAlnum(c) && c != '-' {
			return fmt.Errorf("invalid character %q in domain name", c)
		}
	}
	return nil
}

func isAlnum(c rune) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// checkGroupName checks an origin group name and returns it in lower case.
func checkGroupName(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("empty origin group name")
	case len(s) > MaxGroupName:
		return "", fmt.Errorf("origin group name %q is longer than %d characters", s, MaxGroupName)
	case !isAlnum(rune(s[0])):
		return "", fmt.Errorf("origin group name %q must start with a letter or digit", s)
	}
	for _, c := range s {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return "", fmt.Errorf("invalid character %q in origin group name %q", c, s)
		}
	}
	return strings.ToLower(s), nil
}

// cutGroupPrefix returns the group name of "og:NAME" (prefix in any case).
func cutGroupPrefix(s string) (name string, ok bool) {
	if len(s) < len(groupPrefix) || !strings.EqualFold(s[:len(groupPrefix)], groupPrefix) {
		return "", false
	}
	return s[len(groupPrefix):], true
}

// parseOrigin parses the ORIGIN field of a rule; known holds the
// lower-case names of the defined groups.
func parseOrigin(s string, known map[string]bool) (Origin, error) {
	name, isGroup := cutGroupPrefix(s)
	if !isGroup {
		o, err := parseHost(s)
		if err != nil {
			return Origin{}, fmt.Errorf("invalid origin %q: %w", s, err)
		}
		return o, nil
	}
	name, err := checkGroupName(name)
	if err != nil {
		return Origin{}, err
	}
	if !known[name] {
		return Origin{}, unknownGroup(name, len(known))
	}
	return Origin{Kind: OriginGroup, Name: name}, nil
}

func unknownGroup(name string, defined int) error {
	if defined == 0 {
		return fmt.Errorf("unknown origin group %q (no origin groups are defined)", name)
	}
	return fmt.Errorf("unknown origin group %q", name)
}
