//go:build linux

package agent_test

// The agent with the real eBPF receiver on this machine's kernel: pinned
// in a folder of its own under bpffs, attached to a throw-away cgroup
// that this test process joins, so that the origin's sockets (made here)
// are served by it and no other process on the machine is. Connections
// come from an edge network namespace with TOA options put on the wire by
// toacraft, from a trusted and an untrusted source.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/internal/toacraft"
	"github.com/realip/realip/toarecv"
)

// bpffsRoot is where the tests pin, in folders named pinPrefix-PID-RANDOM.
const (
	bpffsRoot = testenv.BPFFS
	pinPrefix = "realip-agent-test"
)

// The lab: the edge's trusted and untrusted addresses, the origin's.
var (
	labEdge   = netip.MustParseAddr("198.51.100.1")
	labRogue  = netip.MustParseAddr("198.51.100.66")
	labOrigin = netip.MustParseAddr("198.51.100.10")
)

// kernelEBPF is an agent's world with the real eBPF receiver.
type kernelEBPF struct {
	*agenttest.Env
	pinDir, cgroup string
	edge, origin   *netns.Host
	cr             *toacraft.Crafter
}

func newKernelEBPF(t *testing.T) *kernelEBPF {
	t.Helper()
	k := &kernelEBPF{Env: agenttest.NewEnv(t)}
	k.cgroup, _ = cgrouptest.New(t, "realip-agent")
	k.pinDir = testPinDir(t)
	if err := toarecv.Available(toarecv.Options{Cgroup: k.cgroup, PinDir: k.pinDir}); err != nil {
		testenv.SkipOrFail(t, "the eBPF TOA receiver cannot run here: %v", err)
	}
	lab := netns.NewLab(t)
	k.edge, k.origin = lab.Host("edge"), lab.Host("origin")
	lab.Link(k.edge, k.origin,
		[]netip.Prefix{netip.PrefixFrom(labEdge, 24), netip.PrefixFrom(labRogue, 24)},
		[]netip.Prefix{netip.PrefixFrom(labOrigin, 24)})
	joinCgroup(t, k.cgroup)
	cr, err := toacraft.Open(k.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cr.Close() })
	k.cr = cr
	return k
}

// testPinDir returns a pin folder of the test's own under bpffs, unpinned
// and removed at cleanup, after removing those of test binaries that died.
func testPinDir(t *testing.T) string {
	t.Helper()
	testenv.MountBPFFS(t)
	ents, _ := os.ReadDir(bpffsRoot)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), pinPrefix+"-")
		pid, _, _ := strings.Cut(rest, "-")
		if n, err := strconv.Atoi(pid); ok && err == nil && errors.Is(unix.Kill(n, 0), unix.ESRCH) {
			toarecv.Unpin(filepath.Join(bpffsRoot, e.Name()))
			os.RemoveAll(filepath.Join(bpffsRoot, e.Name()))
		}
	}
	dir := filepath.Join(bpffsRoot, fmt.Sprintf("%s-%d-%06x", pinPrefix, os.Getpid(), rand.Uint32()&0xffffff))
	t.Cleanup(func() {
		toarecv.Unpin(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the test's pins: %v", err)
		}
	})
	return dir
}

// joinCgroup moves this test process into cg until the test ends.
func joinCgroup(t *testing.T, cg string) {
	t.Helper()
	orig, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		t.Fatal(err)
	}
	if err := cgrouptest.Join(cg, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.Join(orig, os.Getpid()); err != nil {
			t.Error(err)
		}
	})
}

// newAgent returns an agent on the fake module (never loaded) and the
// real eBPF receiver.
func (k *kernelEBPF) newAgent(t *testing.T) *agent.Agent {
	t.Helper()
	opts := k.Options()
	opts.EBPF, opts.EBPFPinDir = nil, k.pinDir
	return newAgent(t, opts)
}

// write writes the configuration: the eBPF receiver on the test's cgroup.
func (k *kernelEBPF) write(trusted, kinds string, perCPU bool) {
	k.Write(fmt.Sprintf("receiver: ebpf\ncgroup: %s\ntrusted: [%s]\nkinds: [%s]\nmetrics_listen: 127.0.0.1:0\nmetrics_per_cpu: %v\n",
		k.cgroup, trusted, kinds, perCPU))
}

// dial connects from the edge's address from to the origin with a TOA
// option for client (kind 200), passes a byte both ways, and returns the
// address accept() and getpeername() gave the origin.
func (k *kernelEBPF) dial(t *testing.T, from netip.Addr, client netip.AddrPort) (accepted, peer netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := k.origin.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(labOrigin, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opt, err := toacraft.Option(200, 8, client)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), Timeout: 5 * time.Second, Control: k.cr.Control(opt)}
	var out net.Conn
	if err := k.edge.Do(func() (err error) {
		out, err = d.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	buf := []byte("x")
	if _, err := out.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(in, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	return in.RemoteAddr().(*net.TCPAddr).AddrPort(), peerOf(t, in.(*net.TCPConn))
}

func peerOf(t *testing.T, c *net.TCPConn) netip.AddrPort {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	if cerr := rc.Control(func(fd uintptr) { sa, err = unix.Getpeername(int(fd)) }); cerr != nil || err != nil {
		t.Fatalf("getpeername: %v %v", cerr, err)
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		t.Fatalf("getpeername: %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))
}

// expectClient dials from with a TOA option for client and checks that
// the origin sees client (honoured) or the edge's own address (not).
func (k *kernelEBPF) expectClient(t *testing.T, what string, from netip.Addr, client netip.AddrPort, honoured bool) {
	t.Helper()
	accepted, peer := k.dial(t, from, client)
	switch {
	case accepted != peer:
		t.Errorf("%s: accept() gave %v, getpeername() %v", what, accepted, peer)
	case honoured && accepted != client:
		t.Errorf("%s: the origin sees %v, want the client %v", what, accepted, client)
	case !honoured && accepted.Addr() != from:
		t.Errorf("%s: the origin sees %v, want the edge %v", what, accepted, from)
	}
}

// pinnedState reads the pinned receiver back: its configuration and the
// ids of its links (the same ids: nothing was detached).
func pinnedState(t *testing.T, dir string) (toarecv.Config, []link.ID) {
	t.Helper()
	p, err := toarecv.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cfg, err := p.Config()
	if err != nil {
		t.Fatal(err)
	}
	var ids []link.ID
	for _, name := range []string{"link_sockops", "link_getpeername4", "link_getpeername6"} {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatalf("link %s: %v", name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	return cfg, ids
}

func runAgent(t *testing.T, k *kernelEBPF, a *agent.Agent) (chan os.Signal, chan error) {
	t.Helper()
	sigs, done := make(chan os.Signal, 1), make(chan error, 1)
	go func() { done <- a.Run(context.Background(), k.ConfigPath, sigs) }()
	waitNotifyOrExit(t, k.Notify, done, "READY=1")
	return sigs, done
}

// waitNotifyOrExit waits for a notification, failing at once if Run ends.
func waitNotifyOrExit(t *testing.T, ch <-chan string, done chan error, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case s := <-ch:
			if strings.HasPrefix(s, want) {
				return
			}
		case err := <-done:
			t.Fatalf("Run ended before %q: %v", want, err)
		case <-deadline:
			t.Fatalf("no %q notification", want)
		}
	}
}

// TestKernelEBPFReceiver: run with receiver: ebpf attaches the real
// receiver; status and metrics show it and its counters; SIGHUP changes
// the trusted prefixes in the pinned maps without detaching (traffic
// follows); SIGTERM leaves it working; load adopts it; the module is
// refused while it is pinned; unload detaches it and removes the pins.
func TestKernelEBPFReceiver(t *testing.T) {
	k := newKernelEBPF(t)
	k.write("198.51.100.1/32", "200, 254", false)
	a := k.newAgent(t)
	sigs, done := runAgent(t, k, a)
	cfg, ids := pinnedState(t, k.pinDir)
	if !slices.Equal(cfg.Trusted, prefixes("198.51.100.1/32")) || !slices.Equal(cfg.Kinds, []uint8{200, 254}) {
		t.Fatalf("pinned configuration %+v", cfg)
	}
	client := netip.MustParseAddrPort("192.0.2.7:4000")
	k.expectClient(t, "trusted edge", labEdge, client, true)
	k.expectClient(t, "untrusted source", labRogue, client, false)
	checkKernelStatus(t, k, a, map[string]uint64{"syn_recv_sock_toa": 1, "syn_recv_sock_untrusted": 1})
	checkKernelMetrics(t, a, false)

	k.write("198.51.100.66/32", "200", true)
	sigs <- syscall.SIGHUP
	waitNotifyOrExit(t, k.Notify, done, "RELOADING=1")
	waitNotifyOrExit(t, k.Notify, done, "READY=1")
	cfg, ids2 := pinnedState(t, k.pinDir)
	if !slices.Equal(cfg.Trusted, prefixes("198.51.100.66/32")) || !slices.Equal(cfg.Kinds, []uint8{200}) || !slices.Equal(ids2, ids) {
		t.Errorf("after SIGHUP: %+v, links %v (before %v)", cfg, ids2, ids)
	}
	k.expectClient(t, "edge no longer trusted", labEdge, client, false)
	k.expectClient(t, "source now trusted", labRogue, client, true)
	checkKernelStatus(t, k, a, map[string]uint64{"syn_recv_sock_toa": 2, "syn_recv_sock_untrusted": 2})
	checkKernelMetrics(t, a, true)

	sigs <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(k.Logs.String(), "the eBPF TOA receiver stays attached") {
		t.Errorf("log:\n%s", k.Logs)
	}
	k.expectClient(t, "after the agent exited", labRogue, client, true)
	checkAdoptAndUnload(t, k, ids2)
}

// checkKernelStatus checks status against the real receiver: where it is
// attached, the counters (those in want exactly: only the test's
// connections carry TOA), entries counted, not listed.
func checkKernelStatus(t *testing.T, k *kernelEBPF, a *agent.Agent, want map[string]uint64) {
	t.Helper()
	st, err := a.Status(k.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Receiver != agent.ReceiverEBPF || st.EBPF == nil || st.EBPF.Cgroup != k.cgroup || st.EBPF.PinDir != k.pinDir ||
		len(st.EBPF.Links) != 3 || !st.Control.Available || st.Entries != nil || !st.ConfigFile.InSync {
		t.Errorf("status %+v, ebpf %+v, file %+v", st, st.EBPF, st.ConfigFile)
	}
	var names []string
	for _, c := range st.Counters {
		names = append(names, c.Name)
		if w, ok := want[c.Name]; ok && c.Value != w {
			t.Errorf("counter %s = %d, want %d", c.Name, c.Value, w)
		}
	}
	if !slices.Equal(names, toarecv.CounterNames) {
		t.Errorf("counters %q", names)
	}
	var text strings.Builder
	if err := st.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"receiver:     ebpf (kernel ", "cgroup:       " + k.cgroup + " (id ", "live (not listed: "} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("status lacks %q:\n%s", s, text.String())
		}
	}
}

// checkKernelMetrics scrapes the agent: the receiver's rows under
// toa.ko's names, and what the agent says of the receiver.
func checkKernelMetrics(t *testing.T, a *agent.Agent, perCPU bool) {
	t.Helper()
	body := agenttest.Scrape(t, "http://"+a.MetricsAddr()+"/metrics")
	want := []string{`realip_toa_receiver_info{receiver="ebpf"} 1`, "realip_toa_module_loaded 1", "realip_toa_control_up 1",
		"realip_toa_trusted_prefixes 1", "realip_toa_ip6_addresses_in_use ", "realip_toa_scrape_error 0"}
	for _, name := range toarecv.CounterNames {
		if perCPU {
			want = append(want, "realip_toa_"+name+`_total{cpu="0"} `)
		} else {
			want = append(want, "realip_toa_"+name+"_total ")
		}
	}
	for _, w := range want {
		if !strings.Contains(body, "\n"+w) {
			t.Errorf("metrics lack %q", w)
		}
	}
}

// checkAdoptAndUnload: load adopts the pinned receiver (same links), the
// module is refused while it is there, unload detaches and unpins it.
func checkAdoptAndUnload(t *testing.T, k *kernelEBPF, ids []link.ID) {
	t.Helper()
	a := k.newAgent(t)
	_, res, err := a.Start(k.ConfigPath)
	if err != nil || !res.Adopted || res.Cgroup != k.cgroup {
		t.Fatalf("load: %+v %v", res, err)
	}
	if _, ids2 := pinnedState(t, k.pinDir); !slices.Equal(ids2, ids) {
		t.Errorf("adopting replaced the links: %v, before %v", ids2, ids)
	}
	k.Write("receiver: kmod\ntrusted: [198.51.100.66/32]\n")
	if _, _, err := k.newAgent(t).Start(k.ConfigPath); !errors.Is(err, agent.ErrReceiverConflict) {
		t.Errorf("kmod while the eBPF receiver is pinned: %v", err)
	}
	removed, err := a.UnloadReceivers()
	if err != nil || !slices.Equal(removed, []agent.ReceiverKind{agent.ReceiverEBPF}) {
		t.Fatalf("unload: %v %v", removed, err)
	}
	if _, err := toarecv.OpenPinned(k.pinDir); !errors.Is(err, toarecv.ErrNotPinned) {
		t.Errorf("pins after unload: %v", err)
	}
	if _, err := os.Stat(k.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin folder after unload: %v", err)
	}
	k.expectClient(t, "after unload", labRogue, netip.MustParseAddrPort("192.0.2.7:4000"), false)
	if st, err := a.Status(""); err != nil || st.InPlace() {
		t.Errorf("status after unload: %+v %v", st, err)
	}
}
