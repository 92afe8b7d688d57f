//go:build linux

package netns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/testenv"
)

const (
	// namePrefix starts every namespace this package creates.
	namePrefix = "realip-"
	// maxHostName keeps namespace names short and readable.
	maxHostName = 24
	// firstIndex is the interface index of the first veth end of a lab.
	firstIndex = 100
)

// Lab is a set of hosts (network namespaces) owned by one test. It is safe
// for concurrent use, but see the package documentation about t.Fatal.
type Lab struct {
	t      testing.TB
	prefix string // realip-PID-RANDOM-

	mu    sync.Mutex
	hosts []*Host
	links int
}

// NewLab returns an empty lab whose namespaces and processes are removed
// when t's cleanups run. It stops the test first (skip, or fail with
// REALIP_STRICT=1) if the machine cannot run namespace tests.
func NewLab(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	if err := reapStale(); err != nil {
		t.Logf("netns: removing namespaces of dead test runs: %v", err)
	}
	l := &Lab{t: t, prefix: uniquePrefix()}
	t.Cleanup(l.close)
	return l
}

// Require stops the test (skip, or fail with REALIP_STRICT=1) unless it runs
// as root, ip(8) is installed, and a namespace can be created and entered.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	if err := probe(); err != nil {
		testenv.SkipOrFail(t, "network namespaces are not usable here: %v", err)
	}
}

// probe creates a namespace, enters it from Go, and deletes it.
func probe() error {
	h := &Host{Namespace: uniquePrefix() + "probe"}
	if _, err := runIP("netns", "add", h.Namespace); err != nil {
		return err
	}
	err := h.Do(func() error { return nil })
	if _, delErr := runIP("netns", "del", h.Namespace); delErr != nil {
		err = errors.Join(err, delErr)
	}
	return err
}

// uniquePrefix returns realip-PID-RANDOM-: unique among running tests, and
// the PID tells reapStale whether the owner is gone.
func uniquePrefix() string {
	return fmt.Sprintf("%s%d-%06x-", namePrefix, os.Getpid(), rand.Uint32()&0xffffff)
}

// Host creates a host: a fresh namespace with lo up. name is the short name
// used in messages ([a-z0-9-], at most 24 characters, unique in the lab).
func (l *Lab) Host(name string) *Host {
	l.t.Helper()
	if err := checkName(name); err != nil {
		l.t.Fatalf("netns: %v", err)
	}
	h := &Host{Name: name, Namespace: l.prefix + name, lab: l}
	if err := l.add(h); err != nil {
		l.t.Fatalf("netns: host %s: %v", name, err)
	}
	if err := h.init(); err != nil {
		l.t.Fatalf("netns: host %s: %v", name, err)
	}
	return h
}

// add creates h's namespace and records it for cleanup.
func (l *Lab) add(h *Host) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.hosts {
		if o.Name == h.Name {
			return errors.New("a host with this name already exists in the lab")
		}
	}
	if _, err := runIP("netns", "add", h.Namespace); err != nil {
		return err
	}
	l.hosts = append(l.hosts, h)
	return nil
}

// checkName accepts short host names that are safe in file and device names.
func checkName(name string) error {
	if name == "" || len(name) > maxHostName || name[0] == '-' {
		return fmt.Errorf("bad host name %q: want 1..%d characters, not starting with '-'", name, maxHostName)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("bad host name %q: only a-z, 0-9 and '-' are allowed", name)
		}
	}
	return nil
}

// Link connects a and b with a veth pair, gives each end its addresses
// (IPv4 and/or IPv6; IPv6 ones without duplicate address detection, so they
// are usable at once), brings both ends up and waits until they pass
// traffic. It returns the interface names in a and in b (eth0, eth1, ... in
// the order the host's links were made). Interface indexes start at 100.
func (l *Lab) Link(a, b *Host, aAddrs, bAddrs []netip.Prefix) (aDev, bDev string) {
	l.t.Helper()
	if a == b || a.lab != l || b.lab != l {
		l.t.Fatalf("netns: link %s-%s: Link needs two different hosts of this lab", a.Name, b.Name)
	}
	aDev, bDev = a.nextDev(), b.nextDev()
	aIndex, bIndex := l.nextIndexes()
	_, err := runIP("-n", a.Namespace, "link", "add", aDev, "index", aIndex, "type", "veth",
		"peer", "name", bDev, "index", bIndex, "netns", b.Namespace)
	if err != nil {
		l.t.Fatalf("netns: link %s-%s: %v", a.Name, b.Name, err)
	}
	ends := []struct {
		h     *Host
		dev   string
		addrs []netip.Prefix
	}{{a, aDev, aAddrs}, {b, bDev, bAddrs}}
	for _, end := range ends {
		if err := end.h.setUp(end.dev, end.addrs); err != nil {
			l.t.Fatalf("netns: link %s-%s: %v", a.Name, b.Name, err)
		}
	}
	for _, end := range ends {
		if err := end.h.waitReady(end.dev); err != nil {
			l.t.Fatalf("netns: link %s-%s: %v", a.Name, b.Name, err)
		}
	}
	return aDev, bDev
}

// nextIndexes returns interface indexes for the two ends of a new link:
// unique in the lab, so unique in every namespace, and never equal to each
// other. The kernel treats a veth whose index equals its peer's as an
// ordinary device and may delay bringing it up by up to a second
// (linkwatch rate limiting); with different indexes it does so at once.
func (l *Lab) nextIndexes() (a, b string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := firstIndex + 2*l.links
	l.links++
	return strconv.Itoa(n), strconv.Itoa(n + 1)
}

// close runs at cleanup: it logs the hosts' state if the test failed (all
// of them first: deleting one namespace removes its links from the others),
// then kills what runs in the lab's namespaces and deletes them.
func (l *Lab) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t.Failed() {
		for _, h := range l.hosts {
			l.t.Logf("netns: state of host %s (%s):\n%s", h.Name, h.Namespace, h.dump())
		}
	}
	for _, h := range l.hosts {
		if err := remove(h.Namespace); err != nil {
			l.t.Errorf("netns: cleanup of host %s: %v", h.Name, err)
		}
	}
	l.hosts = nil
}

// remove kills every process in namespace ns (except this one) and
// deletes ns.
func remove(ns string) error {
	out, err := runIP("netns", "pids", ns)
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill pid %d in %s: %w", pid, ns, err)
		}
	}
	_, err = runIP("netns", "del", ns)
	return err
}

// reapStale removes namespaces left by test binaries that no longer run.
func reapStale() error {
	out, err := runIP("netns", "list")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !ownerGone(fields[0]) {
			continue
		}
		errs = append(errs, remove(fields[0]))
	}
	return errors.Join(errs...)
}

// ownerGone reports whether ns is one of ours and its test binary has exited.
func ownerGone(ns string) bool {
	rest, ok := strings.CutPrefix(ns, namePrefix)
	if !ok {
		return false
	}
	pidText, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}
