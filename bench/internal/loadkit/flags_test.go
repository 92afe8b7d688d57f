package loadkit

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{",", nil},
		{"127.0.0.1:9000", []string{"127.0.0.1:9000"}},
		{"1,2,,3", []string{"1", "2", "3"}},
		{" a , b ,", []string{"a", "b"}},
	} {
		if got := SplitList(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLoadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want LoadFlags
	}{
		{"defaults", nil, LoadFlags{Dur: 3 * time.Second, Label: "relay", Rep: "0"}},
		{"all", []string{"-addr", "127.0.0.1:1", "-dur", "250ms", "-pids", "1,2", "-label", "nginx", "-rep", "4"},
			LoadFlags{Addr: "127.0.0.1:1", Dur: 250 * time.Millisecond, PIDs: "1,2", Label: "nginx", Rep: "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			var f LoadFlags
			f.Register(fs, "where to", "the thing")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if f != tc.want {
				t.Errorf("parsed %+v, want %+v", f, tc.want)
			}
		})
	}
}

func TestLoadFlagsUsage(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var f LoadFlags
	f.Register(fs, "relay address to load, required", "the relay")
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	for _, want := range []string{"relay address to load, required", "comma-separated PIDs of the relay, to measure its CPU time",
		"relay name printed in the result", "repetition number printed in the result", "how long to run (default 3s)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
}
