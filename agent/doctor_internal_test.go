//go:build linux

package agent

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseDKMSStatus(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []dkmsEntry
		err       string
	}{
		{"nothing", "", nil, ""},
		{"dkms 3 installed and built", "toa/0.1.0, 6.1.0-55-amd64, x86_64: built\ntoa/0.1.0, 6.1.0-56-amd64, x86_64: installed\n",
			[]dkmsEntry{{"0.1.0", "6.1.0-55-amd64", "x86_64", "built", ""}, {"0.1.0", "6.1.0-56-amd64", "x86_64", "installed", ""}}, ""},
		{"dkms 3 added", "toa/0.2.0: added\n", []dkmsEntry{{Version: "0.2.0", State: "added"}}, ""},
		{"dkms 3 warning", "toa/0.1.0, 6.1.0-56-amd64, x86_64: installed (WARNING! Diff between built and installed module!)\n",
			[]dkmsEntry{{"0.1.0", "6.1.0-56-amd64", "x86_64", "installed", "(WARNING! Diff between built and installed module!)"}}, ""},
		{"dkms 2", "toa, 0.1.0, 5.10.0-46-amd64, x86_64: installed\ntoa, 0.3.0: added\n",
			[]dkmsEntry{{"0.1.0", "5.10.0-46-amd64", "x86_64", "installed", ""}, {Version: "0.3.0", State: "added"}}, ""},
		{"weak", "toa, 0.1.0, 6.1.0-57-amd64, x86_64: installed-weak from 6.1.0-56-amd64\n",
			[]dkmsEntry{{"0.1.0", "6.1.0-57-amd64", "x86_64", "installed-weak", "from 6.1.0-56-amd64"}}, ""},
		{"other modules left out", "zfs/2.1.11, 6.1.0-56-amd64, x86_64: installed\ntoast/1: added\n", nil, ""},
		{"unreadable", "toa/0.1.0, 6.1.0-56-amd64: installed\n", nil, "cannot read"},
		{"no state", "toa/0.1.0, 6.1.0-56-amd64, x86_64\n", nil, "cannot read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDKMSStatus(tc.out, "toa")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseDKMSStatus(f *testing.F) {
	f.Add("toa/0.1.0, 6.1.0-56-amd64, x86_64: installed\n")
	f.Add("toa, 0.1.0: added")
	f.Add("toa/:\n, , ,:")
	f.Fuzz(func(t *testing.T, out string) {
		ents, err := parseDKMSStatus(out, "toa")
		if err != nil && ents != nil {
			t.Errorf("entries %v with error %v", ents, err)
		}
	})
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  []string
	}{
		{"", 10, []string{""}},
		{"one two three", 20, []string{"one two three"}},
		{"one two three", 7, []string{"one two", "three"}},
		{"a /very/long/path/name b", 6, []string{"a", "/very/", "long/p", "ath/na", "me b"}},
		{"  spaced   out  ", 20, []string{"spaced out"}},
		{"héhéhé x", 3, []string{"héh", "éhé", "x"}},
	} {
		got := wrap(tc.in, tc.width)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
		for _, l := range got {
			if utf8.RuneCountInString(l) > tc.width || !utf8.ValidString(l) {
				t.Errorf("wrap(%q, %d): line %q", tc.in, tc.width, l)
			}
		}
	}
}
