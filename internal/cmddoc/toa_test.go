package cmddoc

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/realip/realip/internal/csrc"
)

// The module's sources the toa(4) page describes.
const (
	kmodMain = "kmod/toa_main.c"
	kmodProc = "kmod/toa_proc.c"
	kmodHdr  = "kmod/toa.h"
	kmodUAPI = "kmod/toa_uapi.h"
)

func readC(t *testing.T, rel string) *csrc.File {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	f, err := csrc.Read(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func toaPage(t *testing.T) *Page {
	t.Helper()
	p, err := ReadMan("toa.4")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func keys(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Key()
	}
	return out
}

var moduleParam = regexp.MustCompile(`(?m)^\s*module_param(?:_cb|_named|_string|_array)?\(\s*(\w+)\s*,`)

// TestTOAParameters: the PARAMETERS of toa(4) are the module's parameters
// (module_param* in toa_main.c), each as "NAME=...".
func TestTOAParameters(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, kmodMain))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range moduleParam.FindAllStringSubmatch(string(src), -1) {
		want = append(want, m[1])
	}
	if len(want) == 0 {
		t.Fatalf("%s: no module_param found", kmodMain)
	}
	items, err := toaPage(t).Items("PARAMETERS")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		name, _, ok := strings.Cut(it.Tag, "=")
		if !ok {
			t.Errorf("toa.4 PARAMETERS: tag %q (line %d) is not NAME=VALUE", it.Tag, it.Line)
		}
		got = append(got, name)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("toa.4 PARAMETERS documents %q; %s defines %q", got, kmodMain, want)
	}
}

// TestTOACounters: the COUNTERS of toa(4) are the rows of
// /proc/net/toa_stats in the module's order (enum toa_counter and the row
// names of toa_proc.c).
func TestTOACounters(t *testing.T) {
	members, err := readC(t, kmodHdr).Enum("toa_counter")
	if err != nil {
		t.Fatal(err)
	}
	names, err := readC(t, kmodProc).Designated("toa_counter_names")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range members {
		if m.Name == "TOA_NR_COUNTERS" {
			continue
		}
		row, ok := names[m.Name]
		if !ok {
			t.Fatalf("%s: no row name for %s", kmodProc, m.Name)
		}
		want = append(want, row)
	}
	items, err := toaPage(t).Items("COUNTERS")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(items); !slices.Equal(got, want) {
		t.Errorf("toa.4 COUNTERS lists, in order:\n  %q\nthe module's rows are:\n  %q", got, want)
	}
}

// TestTOANetlink: GENERIC NETLINK names the family and its version and
// lists every command and attribute of toa_uapi.h with its number.
func TestTOANetlink(t *testing.T) {
	h := readC(t, kmodUAPI)
	p := toaPage(t)
	text, err := p.Text("GENERIC NETLINK")
	if err != nil {
		t.Fatal(err)
	}
	family, err := h.Define("TOA_GENL_NAME")
	if err != nil {
		t.Fatal(err)
	}
	version, err := h.Define("TOA_GENL_VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if want := family + " (version " + version + ")"; !strings.Contains(text, want) {
		t.Errorf("toa.4 GENERIC NETLINK does not say %q", want)
	}
	items, err := p.Items("GENERIC NETLINK")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, enum := range []string{"toa_cmd", "toa_attr"} {
		members, err := h.Enum(enum)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if strings.HasSuffix(m.Name, "_UNSPEC") || m.Name == "TOA_A_PAD" || strings.HasPrefix(m.Name, "__") {
				continue
			}
			want = append(want, fmt.Sprintf("%s (%d)", m.Name, m.Value))
		}
	}
	got := make([]string, len(items))
	for i, it := range items {
		got[i] = it.Tag
	}
	if !slices.Equal(got, want) {
		t.Errorf("toa.4 GENERIC NETLINK lists:\n  %q\n%s defines:\n  %q", got, kmodUAPI, want)
	}
}
