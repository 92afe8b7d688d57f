//go:build linux

package main

// The receiver the suite runs against, its table of cases, and the
// cgroups the suite's programs run in.

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/toarecv"
	"github.com/realip/realip/vmtest/recvtest"
)

// recvConfig is the suite's receiver: which, and where.
type recvConfig struct {
	kind   string
	cgroup string // the suite's own cgroup; empty: MOUNT/realip-multihost
	pinDir string // ebpf
	table  bool
}

func recvFlags(r *recvConfig) {
	flag.StringVar(&r.kind, "receiver", "kmod", "the TOA receiver on the origin: kmod (toa.ko, -module) or ebpf (the eBPF receiver, attached to the origin's cgroup)")
	flag.StringVar(&r.cgroup, "cgroup", "", "the suite's cgroup v2 folder, made if missing: edge, origin and this program run in cgroups below it, removed at the end (default: realip-multihost at the cgroup v2 mount)")
	flag.StringVar(&r.pinDir, "pin-dir", toarecv.DefaultPinDir, "ebpf: the bpffs folder the receiver is pinned in (whoami's -toa-pin-dir)")
	flag.BoolVar(&r.table, "table", false, "print the table of cases, with each receiver's expected result, and exit")
}

// row is one case of the suite and what each receiver must do in it. Both
// receivers run every row; where the texts differ, the receivers differ
// there on purpose and the check applies the running receiver's own
// expectation. The check lines carry the row's name.
type row struct{ name, kmod, ebpf string }

var rows = []row{
	{"receiver",
		"toa.ko loaded, trusting the edge's origin-facing addresses only; global: every socket of the guest",
		"the eBPF receiver attached to the origin's cgroup (CGROUP/origin) and pinned, trusting the edge's origin-facing addresses only; the origin's sockets only"},
	{"C IPv4 server, IPv6 client",
		"the NAT64 case: accept= and peer= report the IPv6 client (the buffer holds a sockaddr_in6), peer4= (a sockaddr_in buffer) the edge",
		"the NAT64 case: accept=, peer= and peer4= report the edge (the hook cannot change the address family)"},
	{"other services", "each program reports the client (whoami: client, proxy and via=toa)", "each program reports the client (whoami: client, proxy and via=toa)"},
	{"counters",
		"per round: syn_recv_sock_toa +n; the edge's own handshakes count too (_no_toa >= +n), _toa + _no_toa = Tcp PassiveOpens of every namespace; getname_toa_mismatch +1 (peer4 of the NAT64 case)",
		"per round: syn_recv_sock_toa +n; only the origin's sockets count, _toa + _no_toa = the origin's Tcp PassiveOpens; getname_toa_mismatch +3 (accept, peer, peer4 of the NAT64 case), getname_toa_ok 2 fewer than toa.ko's"},
	{"syncookies", "every round's connection answered with the client under tcp_syncookies=2", "every round's connection answered with the client under tcp_syncookies=2"},
	{"untrusted counted", "a forged option from the rogue host ignored, syn_recv_sock_untrusted +2", "a forged option from the rogue host ignored, syn_recv_sock_untrusted +2"},
	{"freed before load", "the rounds' connections gone: ip6_address_alloc == ip6_address_free", "the rounds' connections gone: ip6_address_alloc == ip6_address_free"},
	{"load", "N connections held, accept() and concurrent getpeername() report the client", "N connections held, accept() and concurrent getpeername() report the client"},
	{"load: entries",
		"netlink dump from the origin: an entry naming the edge per connection; ip6_address_alloc - _free = the live entries netlink counts",
		"lookup by socket: an entry with the client and the edge per connection; ip6_address_alloc - _free = the held connections (read before the detach)"},
	{"load: entries elsewhere",
		"the edge's namespace sees none of the origin's entries over netlink",
		"no netlink (entries are socket storage, not listable): the client's ends of the same connections, outside the origin's cgroup, have no entry"},
	{"stop",
		"delete_module(toa) with every connection open, getpeername() running, new connections arriving",
		"pins removed and links closed (detach) with every connection open, getpeername() running, new connections arriving"},
	{"stop: gone", "no module, no /proc/net/toa_stats, no netlink family", "no pins; none of the receiver's programs on the origin's cgroup (the kernel detaches them an RCU grace period after the last reference goes: waited for, at most 10 s); the programs freed"},
	{"stop: after", "held connections' getpeername() answers the edge, they carry data; a new connection shows the edge", "held connections' getpeername() answers the edge, they carry data; a new connection shows the edge"},
	{"freed",
		"kernel log: every entry freed (ip6_address_free == _alloc)",
		"the kernel frees the receiver's maps (the held connections' socket storage with them) once whoami, whose listener holds them, exits; no counter moves after the detach"},
	{"probe_missed", "0 in every round: no kretprobe missed", "0: the receiver has no probes"},
	{"edge metrics", "every connection the edge made to the origin carried the option", "every connection the edge made to the origin carried the option"},
}

// printTable prints the rows where the receivers differ, then those where
// they must do the same.
func printTable() {
	for _, r := range rows {
		if r.kmod != r.ebpf {
			fmt.Printf("diff %s: kmod: %s | ebpf: %s\n", r.name, r.kmod, r.ebpf)
		}
	}
	for _, r := range rows {
		if r.kmod == r.ebpf {
			fmt.Printf("same %s: %s\n", r.name, r.kmod)
		}
	}
}

// edgePrefixes are what the origin's receiver trusts (see trusted).
func edgePrefixes() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(back4.Addr(), 32), netip.PrefixFrom(back6.Addr(), 128)}
}

// suiteCgroups are the suite's cgroups: PARENT/edge (realip-edge and its
// TOA sender), PARENT/origin (the origin's programs and listeners; the
// eBPF receiver attaches here), PARENT/self (this program: the clients and
// the rogue host's sender).
type suiteCgroups struct {
	parent, edge, origin, self string
	home                       string // where this program was
	madeParent                 bool
}

func makeSuiteCgroups(parent string) (*suiteCgroups, error) {
	home, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		return nil, err
	}
	if parent == "" {
		mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
		if err != nil {
			return nil, err
		}
		parent = filepath.Join(mnt, "realip-multihost")
	}
	g := &suiteCgroups{parent: parent, home: home}
	g.edge, g.origin, g.self = filepath.Join(parent, "edge"), filepath.Join(parent, "origin"), filepath.Join(parent, "self")
	if err := os.Mkdir(parent, 0o755); err == nil {
		g.madeParent = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("cgroup %s: %w", parent, err)
	}
	for _, dir := range []string{g.edge, g.origin, g.self} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w (a suite running, or left over?)", dir, err)
		}
	}
	return g, joinCgroup(g.self)
}

// remove moves this program home and removes the cgroups (a child that
// was just stopped may take a moment to leave).
func (g *suiteCgroups) remove() error {
	err := joinCgroup(g.home)
	dirs := []string{g.edge, g.origin, g.self}
	if g.madeParent {
		dirs = append(dirs, g.parent)
	}
	for _, dir := range dirs {
		var rerr error
		for range 100 {
			if rerr = os.Remove(dir); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
				rerr = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		err = errors.Join(err, rerr)
	}
	return err
}

// startReceiver starts the origin's receiver, trusting the edge's
// origin-facing addresses only, and reads the prefixes back.
func (s *suiteRun) startReceiver() error {
	kind, err := recvtest.ParseKind(s.cfg.recv.kind)
	if err != nil {
		return err
	}
	r, err := recvtest.Start(kind, recvtest.Options{Module: s.cfg.module, Cgroup: s.cg.origin, PinDir: s.cfg.recv.pinDir, Trusted: edgePrefixes()})
	if err != nil {
		return err
	}
	s.r = r
	got, err := r.Trusted()
	s.c.check(err == nil && len(got) == 2 && got[0] != got[1] && samePrefix(got, edgePrefixes()), "receiver", "%s, trusted %v (%v)", r.Where(), got, err)
	return nil
}

func samePrefix(got, want []netip.Prefix) bool {
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g.Masked() == w.Masked()
		}
		if !found {
			return false
		}
	}
	return true
}
