//go:build linux

package tproute

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestWithDefaults(t *testing.T) {
	defSources := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	own := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{Table: DefaultTable, Priority: DefaultPriority, Mark: DefaultMark, Sources: defSources}},
		{"set", Config{Table: 9, Priority: 8, Mark: 7, Sources: own}, Config{Table: 9, Priority: 8, Mark: 7, Sources: own}},
		{"no sources", Config{Sources: []netip.Prefix{}},
			Config{Table: DefaultTable, Priority: DefaultPriority, Mark: DefaultMark, Sources: []netip.Prefix{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.WithDefaults()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("WithDefaults() = %+v, want %+v", got, tc.want)
			}
			if !reflect.DeepEqual(got, got.WithDefaults()) {
				t.Errorf("WithDefaults is not idempotent")
			}
			if len(tc.in.Sources) > 0 && &got.Sources[0] == &tc.in.Sources[0] {
				t.Errorf("WithDefaults shares Sources with its receiver")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name    string
		c       Config
		wantErr string // "" for valid
	}{
		{"defaults", Config{}, ""},
		{"big table", Config{Table: 1 << 20}, ""},
		{"table 252", Config{Table: 252}, "table 252 is reserved"},
		{"main table", Config{Table: 254}, "table 254 is reserved"},
		{"local table", Config{Table: 255}, "table 255 is reserved"},
		{"priority after main", Config{Priority: 32766}, "priority 32766 is outside"},
		{"last priority", Config{Priority: 32765}, ""},
		{"host bits", Config{Sources: []netip.Prefix{pfx("127.0.0.1/8")}}, "did you mean 127.0.0.0/8"},
		{"twice", Config{Sources: []netip.Prefix{pfx("::1/128"), pfx("::1/128")}}, "listed twice"},
		{"invalid", Config{Sources: []netip.Prefix{{}}}, "want an IPv4 or IPv6 prefix"},
		{"mapped", Config{Sources: []netip.Prefix{pfx("::ffff:127.0.0.0/104")}}, "want an IPv4 or IPv6 prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.WithDefaults().validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestWant(t *testing.T) {
	c := Config{Sources: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("::1/128")}}.WithDefaults()
	var got []string
	for _, rt := range c.wantRoutes() {
		got = append(got, rt.String())
	}
	for _, ru := range c.wantRules() {
		got = append(got, ru.String())
	}
	want := []string{
		"IPv4 route local default oif 1 table 7714 proto 82 scope host",
		"IPv6 route local default oif 1 table 7714 proto 82 scope global",
		"IPv4 rule pref 7710 from all fwmark 0x14 lookup 7714 proto 82",
		"IPv6 rule pref 7710 from all fwmark 0x14 lookup 7714 proto 82",
		"IPv4 rule pref 7710 from 203.0.113.0/24 iif lo lookup 7714 proto 82",
		"IPv6 rule pref 7710 from ::1/128 iif lo lookup 7714 proto 82",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("wanted entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
