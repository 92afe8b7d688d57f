package toactl

import (
	"strconv"
	"testing"

	"github.com/realip/realip/internal/csrc"
)

// TestMirrorsUAPI fails when a constant above drifts from kmod/toa_uapi.h,
// the module's side of the netlink interface.
func TestMirrorsUAPI(t *testing.T) {
	h, err := csrc.Read("../kmod/toa_uapi.h")
	if err != nil {
		t.Fatal(err)
	}
	defines := map[string]string{
		"TOA_GENL_NAME":    FamilyName,
		"TOA_GENL_VERSION": strconv.Itoa(familyVersion),
		"TOA_ADDR_LEN":     strconv.Itoa(addrLen),
	}
	for name, want := range defines {
		if got, err := h.Define(name); err != nil || got != want {
			t.Errorf("toa_uapi.h: %s = %q (%v); toactl has %q", name, got, err, want)
		}
	}
	enums := []struct {
		enum   string
		mirror map[string]int
	}{
		{"toa_cmd", map[string]int{
			"TOA_CMD_GET_CONFIG": cmdGetConfig, "TOA_CMD_SET_CONFIG": cmdSetConfig,
			"TOA_CMD_GET_STATS": cmdGetStats, "TOA_CMD_GET_ENTRIES": cmdGetEntries,
			"TOA_CMD_GET_ENTRY": cmdGetEntry,
		}},
		{"toa_attr", map[string]int{
			"TOA_A_VERSION": attrVersion, "TOA_A_TRUSTED": attrTrusted, "TOA_A_KINDS": attrKinds,
			"TOA_A_STATS": attrStats, "TOA_A_STAT": attrStat, "TOA_A_STAT_NAME": attrStatName,
			"TOA_A_STAT_VALUE": attrStatValue, "TOA_A_LIVE": attrLive, "TOA_A_LOCAL": attrLocal,
			"TOA_A_PROXY": attrProxy, "TOA_A_CLIENT": attrClient,
		}},
	}
	for _, e := range enums {
		members, err := h.Enum(e.enum)
		if err != nil {
			t.Fatal(err)
		}
		checkEnum(t, e.enum, members, e.mirror)
	}
}

// checkEnum compares an enum's members with their Go mirrors: every
// member the module defines (but UNSPEC, PAD and the __MAX bound) must be
// mirrored with its value, and every mirror must exist in the module.
func checkEnum(t *testing.T, enum string, members []csrc.Member, mirror map[string]int) {
	t.Helper()
	seen := make(map[string]bool)
	for _, m := range members {
		switch m.Name {
		case "TOA_CMD_UNSPEC", "TOA_A_UNSPEC", "TOA_A_PAD", "__TOA_CMD_MAX", "__TOA_A_MAX":
			continue
		}
		seen[m.Name] = true
		v, ok := mirror[m.Name]
		switch {
		case !ok:
			t.Errorf("enum %s: %s = %d has no mirror in toactl", enum, m.Name, m.Value)
		case int64(v) != m.Value:
			t.Errorf("enum %s: %s = %d in the module, %d in toactl", enum, m.Name, m.Value, v)
		}
	}
	for name := range mirror {
		if !seen[name] {
			t.Errorf("enum %s: toactl mirrors %s, which the module does not define", enum, name)
		}
	}
}
