//go:build linux

package toarecv

import (
	"strings"
	"testing"

	"github.com/realip/realip/internal/csrc"
)

// TestCountersMatchModule: the program's counters, CounterNames and
// toa.ko's counters are one list, so both receivers report the same rows.
func TestCountersMatchModule(t *testing.T) {
	for _, file := range []string{"recv.bpf.c", "../kmod/toa.h"} {
		f, err := csrc.Read(file)
		if err != nil {
			t.Fatal(err)
		}
		members, err := f.Enum("toa_counter")
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var names []string
		for _, m := range members {
			if m.Name == "TOA_NR_COUNTERS" {
				continue
			}
			names = append(names, strings.ToLower(strings.TrimPrefix(m.Name, "TOA_")))
		}
		if strings.Join(names, ",") != strings.Join(CounterNames, ",") {
			t.Errorf("%s counters:\n%v\nCounterNames:\n%v", file, names, CounterNames)
		}
	}
}
