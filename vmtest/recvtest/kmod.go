//go:build linux

package recvtest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/toactl"
)

// The module's files.
const (
	statsFile   = "/proc/net/toa_stats"
	trustedFile = "/sys/module/toa/parameters/trusted"
	moduleDir   = "/sys/module/toa"
)

// kmod is toa.ko.
type kmod struct {
	path   string
	atStop map[string]uint64
}

func startKmod(opts Options) (*kmod, error) {
	if _, err := os.Stat(moduleDir); err == nil {
		return nil, errors.New("recvtest: toa.ko is loaded already")
	}
	f, err := os.Open(opts.Module)
	if err != nil {
		return nil, fmt.Errorf("recvtest: %w", err)
	}
	defer f.Close()
	params := "trusted=" + prefixList(opts.Trusted)
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return nil, fmt.Errorf("recvtest: finit_module(%s, %q): %w", opts.Module, params, err)
	}
	return &kmod{path: opts.Module}, nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (k *kmod) Kind() Kind    { return KindKmod }
func (k *kmod) Where() string { return "module " + k.path }

func (k *kmod) Trusted() ([]netip.Prefix, error) {
	b, err := os.ReadFile(trustedFile)
	if err != nil {
		return nil, fmt.Errorf("recvtest: %w", err)
	}
	return toactl.ParsePrefixes(strings.TrimSpace(string(b)))
}

func (k *kmod) SetTrusted(ps []netip.Prefix) error {
	if err := os.WriteFile(trustedFile, []byte(prefixList(ps)), 0); err != nil {
		return fmt.Errorf("recvtest: setting the module's trusted prefixes: %w", err)
	}
	return nil
}

// table reads /proc/net/toa_stats.
func table() (names []string, rows map[string][]uint64, cpus int, err error) {
	b, err := os.ReadFile(statsFile)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("recvtest: %w", err)
	}
	return parseStats(b)
}

// parseStats reads a toa_stats table: a header of CPU columns, then one
// row per counter, a value per CPU.
func parseStats(b []byte) (names []string, rows map[string][]uint64, cpus int, err error) {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	cpus = len(strings.Fields(lines[0]))
	if cpus == 0 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "CPU") {
		return nil, nil, 0, fmt.Errorf("recvtest: toa_stats header %q: want CPU columns", lines[0])
	}
	rows = map[string][]uint64{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != cpus+1 {
			return nil, nil, 0, fmt.Errorf("recvtest: toa_stats row %q: %d columns, the header has %d CPUs", line, len(f)-1, cpus)
		}
		vals := make([]uint64, cpus)
		for i, v := range f[1:] {
			if vals[i], err = strconv.ParseUint(v, 10, 64); err != nil {
				return nil, nil, 0, fmt.Errorf("recvtest: toa_stats row %q: %w", line, err)
			}
		}
		names = append(names, f[0])
		rows[f[0]] = vals
	}
	return names, rows, cpus, nil
}

func (k *kmod) Counters() (map[string]uint64, error) {
	_, rows, _, err := table()
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for name, vals := range rows {
		m[name] = sum(vals)
	}
	return m, nil
}

func (k *kmod) Layout() ([]string, int, error) {
	names, _, cpus, err := table()
	return names, cpus, err
}

// Entry asks the module over netlink, in the calling thread's network
// namespace (the module answers about that namespace's connections).
func (k *kmod) Entry(_ int, local, peer netip.AddrPort) (Entry, bool, error) {
	ctl, err := toactl.Dial()
	if err != nil {
		return Entry{}, false, fmt.Errorf("recvtest: %w", err)
	}
	defer ctl.Close()
	e, err := ctl.Lookup(unmap(local), unmap(peer))
	switch {
	case errors.Is(err, toactl.ErrNoEntry):
		return Entry{}, false, nil
	case err != nil:
		return Entry{}, false, fmt.Errorf("recvtest: netlink lookup: %w", err)
	}
	return Entry{Client: e.Client, Edge: e.Proxy}, true, nil
}

func (k *kmod) Stop() error {
	var err error
	if k.atStop, err = k.Counters(); err != nil {
		return err
	}
	if err := unix.DeleteModule("toa", 0); err != nil {
		return fmt.Errorf("recvtest: delete_module(toa): %w", err)
	}
	return nil
}

func (k *kmod) CountersAtStop() map[string]uint64 { return k.atStop }

// Gone: no module, no toa_stats, no netlink family.
func (k *kmod) Gone() (string, error) {
	var errs []error
	if _, err := os.Stat(moduleDir); !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("%s is still there (%v)", moduleDir, err))
	}
	if _, err := os.Stat(statsFile); !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("%s is still there (%v)", statsFile, err))
	}
	if c, err := toactl.Dial(); !errors.Is(err, toactl.ErrNotLoaded) {
		if c != nil {
			c.Close()
		}
		errs = append(errs, fmt.Errorf("the netlink family still answers (%v)", err))
	}
	return "no /sys/module/toa, no /proc/net/toa_stats, no netlink family", errors.Join(errs...)
}

// Freed reads the module's last unload line, "toa: unloaded, F of A
// entries freed", from the kernel log.
func (k *kmod) Freed() (string, uint64, error) {
	b := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, b)
	if err != nil {
		return "", 0, fmt.Errorf("recvtest: klogctl: %w", err)
	}
	var freed, alloc uint64
	found := false
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if i := strings.Index(line, "toa: unloaded, "); i >= 0 {
			if _, err := fmt.Sscanf(line[i:], "toa: unloaded, %d of %d entries freed", &freed, &alloc); err == nil {
				found = true
			}
		}
	}
	if !found {
		return "", 0, errors.New("recvtest: no unload line of toa.ko in the kernel log")
	}
	detail := fmt.Sprintf("kernel log: %d of %d entries freed", freed, alloc)
	if freed != alloc {
		return detail, alloc, fmt.Errorf("recvtest: %s", detail)
	}
	return detail, alloc, nil
}
