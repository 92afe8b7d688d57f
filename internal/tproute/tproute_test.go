//go:build linux

package tproute

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"golang.org/x/sys/unix"
)

// host returns a fresh namespace (lo up, nothing else) for one test.
func host(t *testing.T) *netns.Host {
	t.Helper()
	return netns.NewLab(t).Host("tp")
}

// install runs Install inside h. The routing is removed when the test ends.
func install(t *testing.T, h *netns.Host, c Config) (*Routes, error) {
	t.Helper()
	var r *Routes
	err := h.Do(func() (err error) {
		r, err = Install(c)
		return err
	})
	if r != nil {
		t.Cleanup(func() { _ = r.Remove() })
	}
	return r, err
}

// mustInstall is install that stops the test on error.
func mustInstall(t *testing.T, h *netns.Host, c Config) *Routes {
	t.Helper()
	r, err := install(t, h, c)
	if err != nil {
		t.Fatalf("Install(%+v): %v", c, err)
	}
	return r
}

// crash leaves r's routing in place and drops r, as a killed agent would.
func crash(t *testing.T, r *Routes) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.conn.Close(); err != nil {
		t.Fatal(err)
	}
	r.conn = nil
	if err := unix.Close(r.claim); err != nil { // the kernel frees a dead process's
		t.Fatal(err)
	}
	r.claim = -1
}

// ip runs ip(8) inside h and returns its output.
func ip(t *testing.T, h *netns.Host, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Command(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// leftovers runs Leftovers inside h.
func leftovers(t *testing.T, h *netns.Host) []string {
	t.Helper()
	var got []string
	err := h.Do(func() (err error) {
		got, err = Leftovers()
		return err
	})
	if err != nil {
		t.Fatalf("Leftovers: %v", err)
	}
	return got
}

// state is everything ip(8) shows of h's policy routing: rules and every
// table, both families.
func state(t *testing.T, h *netns.Host) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule", "show"}, {"-6", "rule", "show"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		fmt.Fprintf(&b, "# ip %s\n%s", strings.Join(args, " "), ip(t, h, args...))
	}
	return b.String()
}

// expected is what `ip rule show`, `ip -6 rule show`, `ip route show table
// T` and `ip -6 route show table T` print in a fresh namespace once the
// routing of c (defaults applied) is installed.
func expected(c Config) [4]string {
	var v4, v6 strings.Builder
	v4.WriteString("0:\tfrom all lookup local\n")
	v6.WriteString("0:\tfrom all lookup local\n")
	mark := fmt.Sprintf("%d:\tfrom all fwmark %#x lookup %d proto 82\n", c.Priority, c.Mark, c.Table)
	v4.WriteString(mark)
	v6.WriteString(mark)
	for _, p := range c.Sources {
		from := p.String()
		if p.IsSingleIP() {
			from = p.Addr().String()
		}
		line := fmt.Sprintf("%d:\tfrom %s iif lo lookup %d proto 82\n", c.Priority, from, c.Table)
		if p.Addr().Is4() {
			v4.WriteString(line)
		} else {
			v6.WriteString(line)
		}
	}
	v4.WriteString("32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n")
	v6.WriteString("32766:\tfrom all lookup main\n")
	return [4]string{v4.String(), v6.String(),
		"local default dev lo proto 82 scope host\n",
		"local default dev lo proto 82 metric 1024 pref medium\n"}
}

// shown is what ip(8) prints that expected predicts.
func shown(t *testing.T, h *netns.Host, table uint32) [4]string {
	t.Helper()
	tb := fmt.Sprint(table)
	return [4]string{ip(t, h, "-4", "rule", "show"), ip(t, h, "-6", "rule", "show"),
		ip(t, h, "-4", "route", "show", "table", tb), ip(t, h, "-6", "route", "show", "table", tb)}
}

// trimLines drops the spaces some versions of ip(8) print at line ends.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// checkShown fails the test unless ip(8) shows exactly the routing of c.
func checkShown(t *testing.T, h *netns.Host, c Config) {
	t.Helper()
	c = c.WithDefaults()
	got, want := shown(t, h, c.Table), expected(c)
	for i, what := range []string{"ip -4 rule", "ip -6 rule", "ip -4 route table", "ip -6 route table"} {
		if trimLines(got[i]) != want[i] {
			t.Errorf("%s shows:\n%s\nwant:\n%s", what, got[i], want[i])
		}
	}
}

func TestInstallShows(t *testing.T) {
	tests := []struct {
		name string
		c    Config
	}{
		{"defaults", Config{}},
		{"custom", Config{Table: 100000, Priority: 200, Mark: 0xabc, Sources: []netip.Prefix{
			netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:5::/48"),
			netip.MustParsePrefix("::1/128")}}},
		{"no sources", Config{Table: 42, Sources: []netip.Prefix{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			r := mustInstall(t, h, tc.c)
			checkShown(t, h, tc.c)
			if err := r.Check(); err != nil {
				t.Errorf("Check right after Install: %v", err)
			}
			c := tc.c.WithDefaults()
			if got, want := len(leftovers(t, h)), 2+2+len(c.Sources); got != want {
				t.Errorf("Leftovers lists %d entries, want %d", got, want)
			}
		})
	}
}

func TestRemoveKeepsOthers(t *testing.T) {
	h := host(t)
	c := Config{}.WithDefaults()
	p, p1 := fmt.Sprint(c.Priority), fmt.Sprint(c.Priority+1)
	ip(t, h, "-4", "rule", "add", "from", "192.0.2.0/24", "lookup", "100", "pref", p1)
	ip(t, h, "-6", "rule", "add", "from", "2001:db8:1::/48", "lookup", "100", "pref", p1)
	ip(t, h, "-4", "rule", "add", "fwmark", "0x99", "lookup", "100", "pref", p) // same priority, other table
	ip(t, h, "-4", "route", "add", "unreachable", "192.0.2.0/24", "table", "100")
	ip(t, h, "-6", "route", "add", "unreachable", "2001:db8:1::/48", "table", "100")
	ip(t, h, "-4", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "100")
	before := state(t, h)

	r := mustInstall(t, h, c)
	if err := r.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := r.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if after := state(t, h); after != before {
		t.Errorf("after Install and Remove:\n%s\nbefore:\n%s", after, before)
	}
	if got := leftovers(t, h); len(got) != 0 {
		t.Errorf("Leftovers after Remove: %q", got)
	}
	if err := r.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Errorf("Check after Remove = %v, want an error saying it was removed", err)
	}
}

func TestInstallRefusesForeign(t *testing.T) {
	c := Config{}.WithDefaults()
	tb, p := fmt.Sprint(c.Table), fmt.Sprint(c.Priority)
	tests := []struct {
		name  string
		setup []string // ip(8) arguments
		want  []string // in the error
	}{
		{"IPv4 route in the table", []string{"-4", "route", "add", "unreachable", "198.51.100.0/24", "table", tb},
			[]string{"table 7714", "IPv4 route unreachable 198.51.100.0/24", "proto 3"}},
		{"IPv6 route in the table", []string{"-6", "route", "add", "blackhole", "2001:db8:9::/48", "table", tb},
			[]string{"table 7714", "IPv6 route blackhole 2001:db8:9::/48"}},
		{"rule at the priority", []string{"-4", "rule", "add", "fwmark", "0x99", "lookup", tb, "pref", p},
			[]string{"table 7714", "priority 7710", "IPv4 rule pref 7710 from all fwmark 0x99 lookup 7714 proto 0"}},
		{"rule elsewhere using the table", []string{"-6", "rule", "add", "from", "2001:db8:9::/48", "lookup", tb, "pref", "100"},
			[]string{"table 7714", "IPv6 rule pref 100 from 2001:db8:9::/48 lookup 7714 proto 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			crash(t, mustInstall(t, h, Config{Table: 500, Priority: 600})) // leftovers: must stay too
			ip(t, h, tc.setup...)
			before := state(t, h)
			r, err := install(t, h, c)
			if err == nil {
				t.Fatalf("Install succeeded (%v) with %q in place", r, tc.setup)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Install error %q does not contain %q", err, w)
				}
			}
			if after := state(t, h); after != before {
				t.Errorf("Install changed the routing:\n%s\nbefore:\n%s", after, before)
			}
		})
	}
}

func TestInstallAfterCrash(t *testing.T) {
	tests := []struct {
		name          string
		first, second Config
	}{
		{"same config", Config{}, Config{}},
		{"other numbers", Config{Table: 500, Priority: 600, Mark: 7}, Config{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			crash(t, mustInstall(t, h, tc.first))
			r := mustInstall(t, h, tc.second)
			checkShown(t, h, tc.second)
			if first := tc.first.WithDefaults(); first.Table != tc.second.WithDefaults().Table {
				if got := ip(t, h, "-6", "route", "show", "table", fmt.Sprint(first.Table)); got != "" {
					t.Errorf("the first run's table still holds:\n%s", got)
				}
			}
			if err := r.Remove(); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if got := leftovers(t, h); len(got) != 0 {
				t.Errorf("Leftovers after Remove: %q", got)
			}
		})
	}
}

func TestCheckReports(t *testing.T) {
	c := Config{}.WithDefaults()
	tb, p, m := fmt.Sprint(c.Table), fmt.Sprint(c.Priority), fmt.Sprintf("%#x", c.Mark)
	tests := []struct {
		name string
		cmd  []string // ip(8) arguments, run behind the back of Routes
		want string   // in Check's error
	}{
		{"IPv4 mark rule deleted", []string{"-4", "rule", "del", "pref", p, "fwmark", m, "lookup", tb},
			"missing: IPv4 rule pref 7710 from all fwmark 0x14 lookup 7714 proto 82"},
		{"IPv6 source rule deleted", []string{"-6", "rule", "del", "pref", p, "from", "::1", "iif", "lo", "lookup", tb},
			"missing: IPv6 rule pref 7710 from ::1/128 iif lo lookup 7714 proto 82"},
		{"IPv4 route deleted", []string{"-4", "route", "del", "local", "default", "dev", "lo", "table", tb},
			"missing: IPv4 route local default oif 1 table 7714 proto 82"},
		{"IPv6 route deleted", []string{"-6", "route", "del", "local", "::/0", "dev", "lo", "table", tb},
			"missing: IPv6 route local default oif 1 table 7714 proto 82"},
		{"foreign route added", []string{"-4", "route", "add", "unreachable", "192.0.2.0/24", "table", tb},
			"IPv4 route unreachable 192.0.2.0/24 oif 0 table 7714 proto 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			r := mustInstall(t, h, c)
			if err := r.Check(); err != nil {
				t.Fatalf("Check right after Install: %v", err)
			}
			if err := h.Do(func() error { return Verify(c) }); err != nil {
				t.Fatalf("Verify right after Install: %v", err)
			}
			ip(t, h, tc.cmd...)
			// Outside h: Routes keeps working in the namespace of Install.
			err := r.Check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tc.want)
			}
			err = h.Do(func() error { return Verify(c) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %v, want an error containing %q", err, tc.want)
			}
			if err := r.Remove(); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if got := leftovers(t, h); len(got) != 0 {
				t.Errorf("Leftovers after Remove: %q", got)
			}
		})
	}
}

// TestVerifyNothing checks what doctor sees where no agent ever ran: every
// entry missing, and a configuration that cannot be installed refused.
func TestVerifyNothing(t *testing.T) {
	h := host(t)
	c := Config{}.WithDefaults()
	var want []string
	for _, rt := range c.wantRoutes() {
		want = append(want, rt.String())
	}
	for _, ru := range c.wantRules() {
		want = append(want, ru.String())
	}
	err := h.Do(func() error { return Verify(Config{}) })
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Verify = %v, want it to name %v", err, w)
		}
	}
	err = h.Do(func() error { return Verify(Config{Table: 254}) })
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("Verify(table 254) = %v, want the config refused", err)
	}
}

// TestInstallFailureLeavesNothing makes Install fail half way (the IPv4
// route is in when the IPv6 one is refused, IPv6 being disabled on lo) and
// checks that it takes back what it added.
func TestInstallFailureLeavesNothing(t *testing.T) {
	h := host(t)
	h.Sysctl("net.ipv6.conf.all.disable_ipv6", "1")
	h.Sysctl("net.ipv6.conf.lo.disable_ipv6", "1")
	before := state(t, h)
	_, err := install(t, h, Config{})
	if err == nil || !strings.Contains(err.Error(), "tproute: add IPv6 route local default") {
		t.Fatalf("Install with IPv6 disabled = %v, want an error adding the IPv6 route", err)
	}
	if after := state(t, h); after != before {
		t.Errorf("failed Install left:\n%s\nbefore:\n%s", after, before)
	}
	if got := leftovers(t, h); len(got) != 0 {
		t.Errorf("Leftovers after a failed Install: %q", got)
	}
}

// TestClaim: while one Routes holds a namespace's routing, Install there
// fails with ErrClaimed and changes nothing (it would otherwise remove the
// live routing as leftovers); other namespaces are not affected, and the
// claim is free again after Remove.
func TestClaim(t *testing.T) {
	h, other := host(t), host(t)
	first := mustInstall(t, h, Config{})
	before := state(t, h)
	if r, err := install(t, h, Config{Table: 500, Priority: 600}); !errors.Is(err, ErrClaimed) {
		t.Fatalf("second Install in the namespace: %v, %v; want ErrClaimed", r, err)
	}
	if after := state(t, h); after != before {
		t.Errorf("a refused Install changed the routing:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := first.Check(); err != nil {
		t.Errorf("the first routing after a refused Install: %v", err)
	}
	mustInstall(t, other, Config{}) // another namespace: its own claim
	if err := first.Remove(); err != nil {
		t.Fatal(err)
	}
	mustInstall(t, h, Config{Table: 500, Priority: 600})
}
