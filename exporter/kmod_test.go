package exporter

import (
	"strings"
	"testing"

	"github.com/realip/realip/internal/csrc"
)

// TestHelpCoversModuleRows fails when toaRowHelp drifts from the rows
// kmod/toa_proc.c prints: every row of realip's module needs a help text,
// and a help text for a row the module does not print is stale.
func TestHelpCoversModuleRows(t *testing.T) {
	h, err := csrc.Read("../kmod/toa.h")
	if err != nil {
		t.Fatal(err)
	}
	counters, err := h.Enum("toa_counter")
	if err != nil {
		t.Fatal(err)
	}
	p, err := csrc.Read("../kmod/toa_proc.c")
	if err != nil {
		t.Fatal(err)
	}
	names, err := p.Designated("toa_counter_names")
	if err != nil {
		t.Fatal(err)
	}
	rows := make(map[string]bool)
	for _, c := range counters {
		if c.Name == "TOA_NR_COUNTERS" {
			continue
		}
		row, ok := names[c.Name]
		if !ok {
			t.Errorf("toa_proc.c: counter %s has no name in toa_counter_names", c.Name)
			continue
		}
		rows[row] = true
		if toaRowHelp[row] == "" {
			t.Errorf("row %q (%s) has no help text in toaRowHelp", row, c.Name)
		}
		if !strings.HasSuffix(toaRowHelp[row], ".") {
			t.Errorf("help of row %q is not a sentence: %q", row, toaRowHelp[row])
		}
	}
	for row := range toaRowHelp {
		if !rows[row] {
			t.Errorf("toaRowHelp describes %q, which kmod/toa_proc.c does not print", row)
		}
	}
}
