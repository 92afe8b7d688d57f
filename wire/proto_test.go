package wire

import (
	"strings"
	"testing"
)

// TestParseProto: every name parses back to its Proto, in any case and
// with spaces around; "off" (a rules-file keyword of the edge, not a
// protocol name) and unknown names do not.
func TestParseProto(t *testing.T) {
	for p := range numProtos {
		for _, s := range []string{p.String(), " " + strings.ToUpper(p.String()) + " "} {
			if got, err := ParseProto(s); err != nil || got != p {
				t.Errorf("ParseProto(%q) = %v, %v; want %v", s, got, err, p)
			}
		}
	}
	for _, s := range []string{"off", "", "ppv3"} {
		if got, err := ParseProto(s); err == nil {
			t.Errorf("ParseProto(%q) = %v, want an error", s, got)
		}
	}
}
