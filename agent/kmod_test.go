//go:build linux

package agent

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/realip/realip/internal/csrc"
)

// TestDefaultsMatchModule fails when the agent's defaults and limits drift
// from the module's (kmod/) or from what the packages install: the default
// kinds are kept in toa_main.c, here, in the packaged agent.yaml and in the
// packaged modprobe.d/toa.conf.
func TestDefaultsMatchModule(t *testing.T) {
	cfg := DefaultConfig()
	want := cfg.KindsString()
	main, err := csrc.Read("../kmod/toa_main.c")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := main.Define("TOA_DEFAULT_KINDS"); err != nil || got != want {
		t.Errorf("kmod/toa_main.c: TOA_DEFAULT_KINDS = %q (%v); the agent's default is %q", got, err, want)
	}
	h, err := csrc.Read("../kmod/toa.h")
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]int{"TOA_MAX_PREFIXES": maxPrefixes, "TOA_MAX_CONFIG_STR": maxConfigStr} {
		if got, err := h.Define(name); err != nil || got != strconv.Itoa(v) {
			t.Errorf("kmod/toa.h: %s = %q (%v); the agent has %d", name, got, err, v)
		}
	}
	packaged, err := LoadConfig("../packaging/config/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := packaged.KindsString(); got != want {
		t.Errorf("packaging/config/agent.yaml: kinds %s; the default is %s", got, want)
	}
	conf, err := os.ReadFile("../packaging/config/modprobe.d/toa.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^options toa .*\bkinds=(\S+)`).FindSubmatch(conf)
	switch {
	case m == nil:
		t.Errorf("packaging/config/modprobe.d/toa.conf: no `options toa ... kinds=` line")
	case string(m[1]) != want:
		t.Errorf("packaging/config/modprobe.d/toa.conf: kinds=%s; the default is %s", m[1], want)
	}
}
