//go:build linux

// Command vmtest is realip-agent's scenario inside a VM whose kernel can
// load toa.ko (the project's machines cannot; vmtest/run.sh boots one).
// Build it static and run it as root in the guest with the module built for
// the guest's kernel:
//
//	CGO_ENABLED=0 go build -o agent-vmtest ./vmtest/agent
//	vmtest/build-module.sh 6.1 kmod /tmp/toa-6.1.ko
//	vmtest/run.sh --cmd '/test/agent-vmtest -module /test/toa.ko' 6.1 -- \
//	    agent-vmtest /tmp/toa-6.1.ko:/test/toa.ko
//
// It runs the agent (itself, re-executed as "agent ARGS...", or the binary
// given with -agent) through: run with trusted prefixes; status (text and
// JSON) and metrics showing them; TOA traffic from a second network
// namespace (an edge with a trusted and an untrusted source address, the
// options written by realip-edge's eBPF sender): options from the trusted
// source honoured by accept and getpeername, forged ones from the
// untrusted source ignored (the real peer reported), options of a kind
// the configuration leaves out not read, the agent's /metrics counting
// exactly those (realip_toa_syn_recv_sock_untrusted_total and friends),
// and status and status -json listing an entry (local, proxy, client) for
// each honoured connection while it is open and none once it is closed;
// the exposition passing Prometheus' linter (promlint, what promtool
// check metrics runs); SIGHUP with another trust list and kinds, read back
// over netlink, with the module not reloaded (same /sys/module/toa inode,
// .text address, initstate and refcount, no new "loaded" line in the
// kernel log), after which the same traffic shows the edge's addresses
// swapping roles; SIGHUP with a bad file changing nothing; SIGTERM leaving the
// module loaded; load adopting it; unload; a copy of toa.ko whose vermagic
// bytes were patched to another release refused with the promised message;
// an xz-compressed copy loaded (in the kernel or by the agent,
// whichever the kernel supports). `doctor` (doctor.go) is run on a healthy
// origin with the edge's traffic in its -watch window (every check ok,
// exit 0), with forged options from the untrusted address in the window
// (untrusted a problem with their count, exit 1), as text (80 columns),
// with an empty trust list, with no module loaded, and with module_path
// naming the module built for another kernel (each the problem it is,
// exit 1). Each check prints "PASS name: ..." or
// "FAIL name: ...", then "N passed, N failed"; the exit status is 1 if
// any failed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/cmd/realip-agent/cli"
	"github.com/realip/realip/toactl"
)

// realip-agent's documented exit statuses (its usage text) that the
// scenario checks.
const (
	exitNotLoaded = 3  // status: the module is not loaded
	exitConfig    = 78 // EX_CONFIG: bad configuration file or refused module
)

var (
	modulePath = flag.String("module", "/test/toa.ko", "toa.ko built for the running kernel")
	agentBin   = flag.String("agent", "", "realip-agent binary (default: this program, re-executed as the agent)")
	workDir    = flag.String("workdir", "/tmp/agent-vmtest", "scratch folder")
	listen     = flag.String("listen", "127.0.0.1:9788", "metrics address for the agent")
)

var (
	passed, failed int
	selfAgent      bool // the agent is this program, run as "agent ARGS..."
)

func pass(name, format string, args ...any) {
	passed++
	fmt.Printf("PASS %s: %s\n", name, fmt.Sprintf(format, args...))
}

func fail(name, format string, args ...any) {
	failed++
	fmt.Printf("FAIL %s: %s\n", name, fmt.Sprintf(format, args...))
}

func check(name string, err error, okFormat string, args ...any) bool {
	if err != nil {
		fail(name, "%v", err)
		return false
	}
	pass(name, okFormat, args...)
	return true
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(cli.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	flag.Parse()
	if *agentBin == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Println("FAIL setup:", err)
			os.Exit(1)
		}
		*agentBin = self
		selfAgent = true
	}
	s := newScenario()
	s.run()
	s.cleanup()
	fmt.Printf("agent-vmtest: %d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

// scenario is the state the steps of run share.
type scenario struct {
	release string
	mod     *agent.ModuleFile // toa.ko (-module), read by setup
	lab     *lab              // the edge namespace and the TOA sender, once set up
	child   *exec.Cmd
	childCh chan error
	logPath string
	logf    *os.File // the agent's output (logPath)

	// cfgA is the configuration file run reads: trust list A and kinds A
	// first, B after SIGHUP.
	cfgA               string
	trustedA, trustedB []string
	kindsA, kindsB     []uint8

	idTerm identity // the module's identity when the agent got SIGTERM
}

func newScenario() *scenario {
	return &scenario{
		cfgA:     filepath.Join(*workDir, "a.yaml"),
		trustedA: []string{"198.51.100.0/24", "2001:db8::/32"},
		kindsA:   []uint8{200, 254},
		trustedB: []string{"203.0.113.0/24"},
		kindsB:   []uint8{200, 253, 254},
	}
}

// agentCmd runs the agent with args and returns its exit code and output.
func (s *scenario) agentCmd(args ...string) (int, string, string) {
	cmd := s.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return code, out.String(), errb.String()
}

func (s *scenario) command(args ...string) *exec.Cmd {
	if selfAgent {
		args = append([]string{"agent"}, args...)
	}
	return exec.Command(*agentBin, args...)
}

func writeConfig(path, module string, trusted []string, kinds string, extra string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "module_path: %s\n", module)
	fmt.Fprintf(&b, "trusted: [%s]\n", strings.Join(trusted, ", "))
	fmt.Fprintf(&b, "kinds: [%s]\n", kinds)
	fmt.Fprintf(&b, "metrics_listen: %q\n", *listen)
	b.WriteString(extra)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// moduleConfig reads the module's configuration over netlink.
func moduleConfig() (toactl.Config, error) {
	c, err := toactl.Dial()
	if err != nil {
		return toactl.Config{}, err
	}
	defer c.Close()
	return c.Config()
}

func sameConfig(cfg toactl.Config, trusted []string, kinds []uint8) bool {
	var got []string
	for _, p := range cfg.Trusted {
		got = append(got, p.String())
	}
	a, b := slices.Clone(got), slices.Clone(trusted)
	slices.Sort(a)
	slices.Sort(b)
	k := slices.Clone(kinds)
	slices.Sort(k)
	return slices.Equal(a, b) && slices.Equal(cfg.Kinds, k)
}

// waitFor polls cond every 50 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readSys(name string) string {
	b, err := os.ReadFile(filepath.Join("/sys/module/toa", name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimSpace(string(b))
}

func moduleLoaded() bool {
	_, err := os.Stat("/sys/module/toa")
	return err == nil
}

// kernelLog returns the kernel log's messages (/dev/kmsg, from the start).
// It uses raw syscalls: an *os.File of a non-blocking character device
// goes to Go's poller, and its Read would wait for new records instead of
// returning EAGAIN at the end.
func kernelLog() []string {
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	var out []string
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EPIPE || err == syscall.EINTR {
			continue // records overwritten meanwhile; go on with the next
		}
		if err != nil || n <= 0 {
			return out
		}
		rec := string(buf[:n])
		if _, msg, ok := strings.Cut(rec, ";"); ok {
			msg, _, _ = strings.Cut(msg, "\n")
			out = append(out, msg)
		}
	}
}

func countLog(substr string) int {
	n := 0
	for _, l := range kernelLog() {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

const loadedLine = "toa: realip TOA "

// identity is what changes when the module is reloaded.
type identity struct {
	Inode     uint64
	Text      string
	InitState string
	RefCount  string
	Loads     int
}

func moduleIdentity() identity {
	id := identity{
		Text:      readSys("sections/.text"),
		InitState: readSys("initstate"),
		RefCount:  readSys("refcnt"),
		Loads:     countLog(loadedLine),
	}
	if st, err := os.Stat("/sys/module/toa"); err == nil {
		id.Inode = st.Sys().(*syscall.Stat_t).Ino
	}
	return id
}

func scrape() (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + *listen + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func missing(text string, wants ...string) error {
	var miss []string
	for _, w := range wants {
		if !strings.Contains(text, w) {
			miss = append(miss, w)
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("missing %q in:\n%s", miss, text)
	}
	return nil
}

func (s *scenario) childAlive() bool {
	if s.child == nil {
		return false
	}
	select {
	case err := <-s.childCh:
		s.childCh <- err
		return false
	default:
		return true
	}
}

func (s *scenario) agentLog() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func (s *scenario) cleanup() {
	if s.lab != nil {
		s.lab.close()
	}
	if s.childAlive() {
		s.child.Process.Kill()
		<-s.childCh
	}
	if moduleLoaded() {
		s.agentCmd("unload")
	}
}

// patchVermagic writes a copy of src whose vermagic names another release
// of the same length (every digit of the release changed), in place.
func patchVermagic(src, dst, release string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	fake := []byte(release)
	for i, c := range fake {
		if c >= '0' && c <= '9' {
			fake[i] = '0' + (c-'0'+1)%10
		}
	}
	if string(fake) == release {
		fake[0] ^= 1
	}
	old := []byte("vermagic=" + release + " ")
	if bytes.Count(b, old) == 0 {
		return "", fmt.Errorf("%s has no %q", src, old)
	}
	b = bytes.ReplaceAll(b, old, []byte("vermagic="+string(fake)+" "))
	return string(fake), os.WriteFile(dst, b, 0o644)
}

// compressXZ writes src as the kernel's kbuild does (xz, CRC32 check,
// 1 MiB dictionary).
func compressXZ(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 1 << 20}.NewWriter(&out)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, out.Bytes(), 0o644)
}

// run is the scenario: its steps in order. A step that returns false
// met an error after which the rest cannot run, and ends the scenario.
func (s *scenario) run() {
	defer s.closeLog()
	if !s.setup() {
		return
	}
	s.checkConfig()
	if !s.startAgent() {
		return
	}
	s.status()
	s.metrics()
	s.trafficA()
	lintScrape()
	s.doctorWatched()
	if !s.sighupNewTrust() {
		return
	}
	s.trafficB()
	s.sighupBadFile()
	s.sigterm()
	s.doctorEmptyTrust()
	s.loadAdopts()
	s.unload()
	s.doctorNoModule(filepath.Join(*workDir, "b.yaml"))
	s.refuseOtherKernel()
	s.loadThenUnload()
	s.loadXZ()
}

// setup checks the preconditions and writes the first configuration.
func (s *scenario) setup() bool {
	if os.Geteuid() != 0 {
		fail("setup", "must run as root (uid %d)", os.Geteuid())
		return false
	}
	var err error
	if s.release, err = agent.KernelRelease(); err != nil {
		fail("setup", "uname: %v", err)
		return false
	}
	if s.mod, err = agent.ReadModuleFile(*modulePath); err != nil {
		fail("setup", "%v", err)
		return false
	}
	m := s.mod
	if m.Info.Release() != s.release {
		fail("setup", "%s is built for %s, the guest runs %s: build it for the guest's kernel", *modulePath, m.Info.Release(), s.release)
		return false
	}
	if moduleLoaded() {
		fail("setup", "toa is loaded before the test")
		return false
	}
	if err := os.MkdirAll(*workDir, 0o755); err != nil {
		fail("setup", "%v", err)
		return false
	}
	pass("setup", "kernel %s, module %s (version %s, vermagic %q)", s.release, *modulePath, m.Info.Version, m.Info.Vermagic)

	if err := writeConfig(s.cfgA, *modulePath, s.trustedA, "200, 254", ""); err != nil {
		fail("setup", "%v", err)
		return false
	}
	return true
}

// checkConfig runs `check` on the first configuration.
func (s *scenario) checkConfig() {
	if code, out, errs := s.agentCmd("check", "-config", s.cfgA); code != 0 {
		fail("check", "exit %d: %s%s", code, out, errs)
	} else {
		pass("check", "%s", strings.TrimSpace(out))
	}
}

// startAgent starts `run`, which loads the module with the trust list.
func (s *scenario) startAgent() bool {
	s.logPath = filepath.Join(*workDir, "agent.log")
	var err error
	if s.logf, err = os.Create(s.logPath); err != nil {
		fail("run", "%v", err)
		return false
	}
	loadsBefore := countLog(loadedLine)
	s.child = s.command("run", "-config", s.cfgA)
	s.child.Stdout, s.child.Stderr = s.logf, s.logf
	if err := s.child.Start(); err != nil {
		fail("run", "%v", err)
		return false
	}
	s.childCh = make(chan error, 1)
	go func() { s.childCh <- s.child.Wait() }()
	var cfg toactl.Config
	ok := waitFor(30*time.Second, func() bool {
		if readSys("initstate") != "live" {
			return false
		}
		cfg, err = moduleConfig()
		return err == nil && sameConfig(cfg, s.trustedA, s.kindsA)
	})
	if !ok {
		fail("run", "module not live with trusted=%v kinds=%v within 30s (netlink: %+v, %v); agent log:\n%s", s.trustedA, s.kindsA, cfg, err, s.agentLog())
		return false
	}
	pass("run", "module live, netlink config trusted=%v kinds=%v, version %s", cfg.Trusted, cfg.Kinds, cfg.Version)
	if n := countLog(loadedLine) - loadsBefore; n != 1 {
		fail("run-load-count", "%d load lines in the kernel log, want 1", n)
	} else {
		pass("run-load-count", "one load")
	}
	if got := readSys("parameters/trusted"); got != strings.Join(s.trustedA, ",") {
		fail("module-params", "parameters/trusted = %q", got)
	} else {
		pass("module-params", "parameters/trusted=%s kinds=%s", got, readSys("parameters/kinds"))
	}
	return true
}

func (s *scenario) closeLog() {
	if s.logf != nil {
		s.logf.Close()
	}
}

// status checks `status` and `status -json` against the first trust list.
func (s *scenario) status() {
	code, out, errs := s.agentCmd("status", "-config", s.cfgA)
	if err := missing(out, "198.51.100.0/24, 2001:db8::/32", "kinds:        200, 254", ", live, refcount", ": in force", "entries: "); code != 0 || err != nil {
		fail("status", "exit %d, %v %s", code, err, errs)
	} else {
		pass("status", "text status shows the trust list")
	}
	code, out, errs = s.agentCmd("status", "-json")
	var st agent.Status
	if jerr := json.Unmarshal([]byte(out), &st); code != 0 || jerr != nil || st.Config == nil ||
		!slices.Equal(st.Config.Trusted, s.trustedA) || !st.Module.Loaded || st.Module.InitState != "live" ||
		len(st.Counters) < 8 || st.Counters[0].Name != "syn_recv_sock_toa" || st.Entries == nil {
		fail("status-json", "exit %d, %v: %s %s", code, jerr, out, errs)
	} else {
		pass("status-json", "trusted %v, %d counters, %d live entries", st.Config.Trusted, len(st.Counters), st.LiveEntries)
	}
}

// metrics checks that the agent serves toa_stats and its own metrics.
func (s *scenario) metrics() {
	var body string
	var err error
	ok := waitFor(10*time.Second, func() bool { body, err = scrape(); return err == nil })
	if !ok {
		fail("metrics", "%v", err)
	} else if err := missing(body, "realip_toa_module_loaded 1", "realip_toa_syn_recv_sock_toa_total ",
		"realip_toa_probe_missed_total ", "realip_toa_ip6_addresses_in_use ", "realip_toa_scrape_error 0",
		"realip_toa_control_up 1", "realip_toa_trusted_prefixes 2", "realip_agent_module_loads_total 1"); err != nil {
		fail("metrics", "%v", err)
	} else {
		pass("metrics", "toa_stats and agent metrics served")
	}
}

// trafficA sets up the lab and sends TOA from a trusted and an untrusted
// source, with the connections open: getpeername, the agent's metrics,
// status and status -json.
func (s *scenario) trafficA() {
	var err error
	if s.lab, err = newLab(); err != nil {
		fail("lab", "%v", err)
		return
	}
	pass("lab", "edge netns %s (%v) <-> %s (%v), eBPF TOA sender on %s",
		edgeDev, edgeAddrs, originDev, originAddrs, s.lab.sender.Cgroup())
	// kinds are 200 and 254: the sender's 253 (IPv6 clients) is not read.
	s.trafficRound(s.lab, "a", []trustCase{
		{src: edgeA, client: netip.MustParseAddrPort("192.0.2.7:4000"), want: honoured},
		{src: edgeV6, client: netip.MustParseAddrPort("192.0.2.8:4001"), want: honoured},
		{src: edgeB, client: netip.MustParseAddrPort("192.0.2.66:6660"), want: untrusted},
		{src: edgeB, client: netip.MustParseAddrPort("192.0.2.66:6661"), want: untrusted},
		{src: edgeB, client: netip.MustParseAddrPort("192.0.2.66:6662"), want: untrusted},
		{src: edgeV6, client: netip.MustParseAddrPort("[2001:db8::99]:4002"), want: otherKind},
		{src: edgeB, client: netip.MustParseAddrPort("[2001:db8::66]:6663"), want: otherKind},
	})
}

// sighupNewTrust sends SIGHUP with another trust list: the configuration
// changes, the module is not reloaded.
func (s *scenario) sighupNewTrust() bool {
	before := moduleIdentity()
	if err := writeConfig(s.cfgA, *modulePath, s.trustedB, "200, 253, 254", ""); err != nil {
		fail("sighup", "%v", err)
		return false
	}
	s.child.Process.Signal(syscall.SIGHUP)
	var cfg toactl.Config
	var err error
	ok := waitFor(10*time.Second, func() bool {
		cfg, err = moduleConfig()
		return err == nil && sameConfig(cfg, s.trustedB, s.kindsB)
	})
	after := moduleIdentity()
	switch {
	case !ok:
		fail("sighup", "netlink config %+v (%v) within 10s, want trusted=%v; agent log:\n%s", cfg, err, s.trustedB, s.agentLog())
	case after != before:
		fail("sighup", "module reloaded: before %+v after %+v", before, after)
	case !s.childAlive():
		fail("sighup", "agent exited")
	default:
		pass("sighup", "netlink config now trusted=%v kinds=%v; module not reloaded (inode %d, .text %s, %s, refcnt %s, %d load lines)",
			cfg.Trusted, cfg.Kinds, after.Inode, after.Text, after.InitState, after.RefCount, after.Loads)
	}
	if got := readSys("parameters/trusted"); got != "203.0.113.0/24" {
		fail("sighup-params", "parameters/trusted = %q", got)
	} else {
		pass("sighup-params", "parameters/trusted=%s", got)
	}
	return true
}

// trafficB checks the new trust list in force: the edge's addresses swap
// roles.
func (s *scenario) trafficB() {
	if s.lab == nil {
		return
	}
	// trusted is 203.0.113.0/24 now, and kind 253 is read.
	s.trafficRound(s.lab, "b", []trustCase{
		{src: edgeB, client: netip.MustParseAddrPort("192.0.2.77:7000"), want: honoured},
		{src: edgeB, client: netip.MustParseAddrPort("[2001:db8::77]:7001"), want: honoured},
		{src: edgeA, client: netip.MustParseAddrPort("192.0.2.78:7002"), want: untrusted},
		{src: edgeV6, client: netip.MustParseAddrPort("[2001:db8::78]:7003"), want: untrusted},
	})
}

// sighupBadFile sends SIGHUP with a bad file: nothing changes.
func (s *scenario) sighupBadFile() {
	bad := fmt.Sprintf("module_path: %s\ntrusted: [192.0.2.0/24]\nkinds: [200]\nmetrics_listen: %q\ntrusted_edges: []\n", *modulePath, *listen)
	os.WriteFile(s.cfgA, []byte(bad), 0o644)
	s.child.Process.Signal(syscall.SIGHUP)
	ok := waitFor(10*time.Second, func() bool { return strings.Contains(s.agentLog(), "configuration not applied") })
	cfg, err := moduleConfig()
	switch {
	case !ok:
		fail("sighup-bad", "no refusal in the agent log:\n%s", s.agentLog())
	case err != nil || !sameConfig(cfg, s.trustedB, s.kindsB):
		fail("sighup-bad", "module config changed: %+v %v", cfg, err)
	case !strings.Contains(s.agentLog(), "trusted_edges: unknown field"):
		fail("sighup-bad", "the error does not name the field:\n%s", s.agentLog())
	case !s.childAlive():
		fail("sighup-bad", "agent exited")
	default:
		pass("sighup-bad", "bad file refused naming the field; module keeps trusted=%v", cfg.Trusted)
	}
	body, err := scrape()
	if err == nil {
		err = missing(body, `realip_agent_config_reloads_total{result="success"} 1`,
			`realip_agent_config_reloads_total{result="failure"} 1`,
			"realip_agent_config_last_reload_successful 0", "realip_toa_trusted_prefixes 1",
			"realip_agent_module_loads_total 1")
	}
	check("metrics-reload", err, "reload counters and trust gauge follow")
}

// sigterm stops the agent, which exits and leaves the module loaded.
func (s *scenario) sigterm() {
	s.idTerm = moduleIdentity()
	s.child.Process.Signal(syscall.SIGTERM)
	select {
	case werr := <-s.childCh:
		s.childCh <- werr
		switch {
		case werr != nil:
			fail("sigterm", "agent exit: %v; log:\n%s", werr, s.agentLog())
		case !moduleLoaded() || moduleIdentity() != s.idTerm:
			fail("sigterm", "module gone or reloaded after SIGTERM")
		default:
			pass("sigterm", "agent exited 0, module still loaded (%s)", readSys("initstate"))
		}
	case <-time.After(15 * time.Second):
		fail("sigterm", "agent still running 15s after SIGTERM")
	}
}

// loadAdopts runs `load`, which adopts the module the agent left loaded.
func (s *scenario) loadAdopts() {
	cfgB := filepath.Join(*workDir, "b.yaml")
	writeConfig(cfgB, *modulePath, s.trustedB, "200, 253, 254", "")
	code, out, errs := s.agentCmd("load", "-config", cfgB)
	if code != 0 || !strings.Contains(out, "already loaded") || moduleIdentity() != s.idTerm {
		fail("load-adopts", "exit %d: %s %s", code, out, errs)
	} else {
		pass("load-adopts", "%s", strings.TrimSpace(out))
	}
}

// unload runs `unload`, then `status`, which must say not loaded.
func (s *scenario) unload() {
	code, out, errs := s.agentCmd("unload")
	if code != 0 || !waitFor(5*time.Second, func() bool { return !moduleLoaded() }) {
		fail("unload", "exit %d: %s %s; /sys/module/toa still there: %v", code, out, errs, moduleLoaded())
	} else {
		pass("unload", "%s; /sys/module/toa gone", strings.TrimSpace(out))
	}
	if code, out, _ = s.agentCmd("status"); code != exitNotLoaded {
		fail("status-not-loaded", "exit %d, want %d: %s", code, exitNotLoaded, out)
	} else {
		pass("status-not-loaded", "exit %d", code)
	}
}

// refuseOtherKernel checks that a module built for another kernel is
// refused.
func (s *scenario) refuseOtherKernel() {
	badKo := filepath.Join(*workDir, "toa-badmagic.ko")
	fake, err := patchVermagic(*modulePath, badKo, s.release)
	if err != nil {
		fail("vermagic", "%v", err)
		return
	}
	cfgC := filepath.Join(*workDir, "c.yaml")
	writeConfig(cfgC, badKo, s.trustedA, "200", "")
	loads := countLog(loadedLine)
	code, out, errs := s.agentCmd("load", "-config", cfgC)
	err = missing(errs, "refusing to load "+badKo, "built for kernel "+fake, "running kernel is "+s.release,
		"dkms install toa/"+s.mod.Info.Version+" -k "+s.release, "make -C kmod KDIR=/lib/modules/"+s.release+"/build")
	switch {
	case code != exitConfig:
		fail("vermagic", "exit %d, want %d: %s %s", code, exitConfig, out, errs)
	case err != nil:
		fail("vermagic", "%v", err)
	case moduleLoaded() || countLog(loadedLine) != loads:
		fail("vermagic", "the module was loaded")
	default:
		pass("vermagic", "refused: %s", strings.TrimSpace(errs))
	}
	s.doctorOtherKernel(cfgC, badKo, fake)
}

// loadThenUnload runs `load` (not run) with a trust list, then `unload`.
func (s *scenario) loadThenUnload() {
	writeConfig(s.cfgA, *modulePath, s.trustedA, "200, 254", "")
	code, out, errs := s.agentCmd("load", "-config", s.cfgA)
	cfg, err := moduleConfig()
	if code != 0 || err != nil || !sameConfig(cfg, s.trustedA, s.kindsA) {
		fail("load", "exit %d %s %s; netlink %+v %v", code, out, errs, cfg, err)
	} else {
		pass("load", "%s", strings.TrimSpace(out))
	}
	if code, out, errs = s.agentCmd("unload"); code != 0 || moduleLoaded() {
		fail("unload-2", "exit %d %s %s", code, out, errs)
	} else {
		pass("unload-2", "unloaded")
	}
}

// loadXZ loads and unloads an xz-compressed module, then counts the
// unload lines of the whole scenario.
func (s *scenario) loadXZ() {
	xzKo := filepath.Join(*workDir, "toa.ko.xz")
	if err := compressXZ(*modulePath, xzKo); err != nil {
		fail("load-xz", "%v", err)
		return
	}
	cfgD := filepath.Join(*workDir, "d.yaml")
	writeConfig(cfgD, xzKo, s.trustedB, "200", "")
	how := "decompressed by the agent (init_module)"
	if b, _ := os.ReadFile("/sys/module/compression"); strings.TrimSpace(string(b)) == "xz" {
		how = "decompressed by the kernel (finit_module, MODULE_INIT_COMPRESSED_FILE)"
	}
	code, out, errs := s.agentCmd("load", "-config", cfgD)
	cfg, err := moduleConfig()
	if code != 0 || err != nil || !sameConfig(cfg, s.trustedB, []uint8{200}) {
		fail("load-xz", "%s: exit %d %s %s; netlink %+v %v", how, code, out, errs, cfg, err)
	} else {
		pass("load-xz", "%s: %s", how, strings.TrimSpace(out))
	}
	if code, out, errs = s.agentCmd("unload"); code != 0 || moduleLoaded() {
		fail("unload-xz", "exit %d %s %s", code, out, errs)
	} else {
		pass("unload-xz", "unloaded")
	}
	if n := countLog("toa: unloaded, "); n < 3 {
		fail("unload-log", "%d unload lines in the kernel log, want 3", n)
	} else {
		pass("unload-log", "%d unload lines", n)
	}
}
