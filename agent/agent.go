//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/realip/realip/exporter"
	"github.com/realip/realip/toactl"
)

// Control is the module's netlink control interface; *toactl.Client
// implements it.
type Control interface {
	Config() (toactl.Config, error)
	SetConfig(toactl.Config) error
	Stats() ([]toactl.Stat, uint64, error)
	Entries() ([]toactl.Entry, error)
	Close() error
}

// DialToactl opens the module's netlink control interface with toactl.
func DialToactl() (Control, error) {
	c, err := toactl.Dial()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Options configure an Agent. The zero value manages the real kernel.
type Options struct {
	// Logger receives the agent's log; nil: discarded.
	Logger *slog.Logger
	// SysfsRoot is where module/toa is read; empty: "/sys".
	SysfsRoot string
	// ModulesRoot is searched for toa.ko when the configuration has no
	// module_path; empty: "/lib/modules" (or "/usr/lib/modules" when only
	// that has the running kernel's folder).
	ModulesRoot string
	// KernelRelease is the running kernel's release; empty: uname -r.
	KernelRelease string
	// Kernel loads and unloads modules; nil: SysKernel.
	Kernel Kernel
	// Dial opens the module's control interface; nil: DialToactl.
	Dial func() (Control, error)
	// Notify tells the service manager about the agent's state
	// (READY=1, RELOADING=1, STOPPING=1); nil: sd_notify when
	// NOTIFY_SOCKET is set.
	Notify func(state string)
	// EBPF drives the eBPF TOA receiver; nil: SysEBPF pinned in
	// EBPFPinDir.
	EBPF EBPF
	// EBPFPinDir is the bpffs folder of the eBPF receiver's pins when
	// EBPF is nil; empty: toarecv.DefaultPinDir (/sys/fs/bpf/realip/toa).
	EBPFPinDir string
}

// Agent runs a TOA receiver (toa.ko or the eBPF receiver), keeps its
// configuration in step with the configuration file and serves metrics.
type Agent struct {
	log      *slog.Logger
	sysfs    string
	modRoot  string
	release  string
	kernel   Kernel
	dial     func() (Control, error)
	notify   func(string)
	reg      *prometheus.Registry
	reloads  *prometheus.CounterVec
	reloadOK prometheus.Gauge
	loads    prometheus.Counter

	kmod kmodReceiver
	ebpf ebpfReceiver

	mu      sync.Mutex
	cfg     Config   // the configuration in force
	recv    receiver // the receiver in force; nil before Start
	metrics string   // the metrics server's address

	toa toaProxy

	unwrap unwrapSet // the unwrap relays
}

// New returns an agent.
func New(opts Options) (*Agent, error) {
	a := &Agent{
		log:     opts.Logger,
		sysfs:   opts.SysfsRoot,
		modRoot: opts.ModulesRoot,
		release: opts.KernelRelease,
		kernel:  opts.Kernel,
		dial:    opts.Dial,
		notify:  opts.Notify,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.sysfs == "" {
		a.sysfs = "/sys"
	}
	if a.release == "" {
		r, err := KernelRelease()
		if err != nil {
			return nil, fmt.Errorf("uname: %w", err)
		}
		a.release = r
	}
	if a.modRoot == "" {
		a.modRoot = "/lib/modules"
		if _, err := os.Stat(filepath.Join(a.modRoot, a.release)); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/lib/modules", a.release)); err == nil {
				a.modRoot = "/usr/lib/modules"
			}
		}
	}
	if a.kernel == nil {
		a.kernel = SysKernel{SysfsRoot: a.sysfs}
	}
	if a.dial == nil {
		a.dial = DialToactl
	}
	if a.notify == nil {
		a.notify = SDNotify
	}
	a.kmod = kmodReceiver{a}
	a.ebpf = ebpfReceiver{a, opts.EBPF}
	if a.ebpf.e == nil {
		a.ebpf.e = SysEBPF{Dir: opts.EBPFPinDir}
	}
	a.unwrap.log = a.log
	a.registerMetrics()
	return a, nil
}

// registerMetrics makes the agent's registry and its own metrics.
func (a *Agent) registerMetrics() {
	a.reg = prometheus.NewRegistry()
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "realip_agent_config_reloads_total",
		Help: "Configuration reloads (SIGHUP), by result (success, failure).",
	}, []string{"result"})
	a.reloads.WithLabelValues("success")
	a.reloads.WithLabelValues("failure")
	a.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "realip_agent_config_last_reload_successful",
		Help: "1 when the last configuration load or reload was applied, 0 when it was refused.",
	})
	a.loads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "realip_agent_module_loads_total",
		Help: "Times this agent process loaded toa.ko (an adopted module does not count).",
	})
	a.reg.MustRegister(a.reloads, a.reloadOK, a.loads, newReceiverCollector(a), &a.toa, newUnwrapCollector(&a.unwrap),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Registry is the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// KernelRelease is the release the agent checks modules against.
func (a *Agent) KernelRelease() string { return a.release }

// LoadResult tells what Start (or EnsureLoaded) did.
type LoadResult struct {
	Receiver ReceiverKind // the receiver in force
	Why      string       // why the agent chose it (Start)
	Adopted  bool         // it was in place already
	Path     string       // kmod: the file loaded (empty when adopted)
	Version  string       // kmod: the module's version
	Cgroup   string       // ebpf: the cgroup v2 folder it is attached to
	PinDir   string       // ebpf: where it is pinned
}

// EnsureLoaded loads toa.ko with cfg's trusted list and kinds as module
// parameters, unless a toa module is loaded already, which it adopts. It
// refuses a module file built for another kernel (*VermagicError), and an
// unsigned one when the kernel is in lockdown.
func (a *Agent) EnsureLoaded(cfg Config) (LoadResult, error) {
	res := LoadResult{Receiver: ReceiverKmod}
	st, err := ReadModuleState(a.sysfs)
	if err != nil {
		return res, err
	}
	if st.Loaded {
		if st.InitState == "going" {
			return res, errors.New("the toa module is being unloaded; retry when it is gone")
		}
		res.Adopted, res.Version = true, st.Version
		return res, nil
	}
	m, err := a.moduleToLoad(cfg)
	if err != nil {
		return res, err
	}
	res.Version = m.Info.Version
	params := cfg.ModuleParams()
	if err := a.kernel.Load(m, params); err != nil {
		if errors.Is(err, ErrAlreadyLoaded) {
			res.Adopted = true
			return res, nil
		}
		return res, err
	}
	a.loads.Inc()
	a.log.Info("loaded the toa module", "path", m.Path, "version", m.Info.Version,
		"compression", m.Compression, "params", params)
	res.Path = m.Path
	return res, nil
}

// Unload removes the module (delete_module). It returns ErrNotLoaded if
// it was not loaded.
func (a *Agent) Unload() error {
	return a.kernel.Unload(ModuleName)
}

// UnloadReceivers removes every TOA receiver in place, whichever the
// configuration names: it unloads toa.ko, and detaches and unpins the
// eBPF receiver. It returns the receivers it removed, none (and no error)
// when nothing was in place. Connections keep working and show the
// edge's address from then on.
func (a *Agent) UnloadReceivers() ([]ReceiverKind, error) {
	var removed []ReceiverKind
	var errs []error
	for _, r := range []receiver{a.kmod, a.ebpf} {
		switch err := r.unload(); {
		case err == nil:
			removed = append(removed, r.kind())
		case !errors.Is(err, ErrNotLoaded):
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// EBPFPinDir is where the agent looks for the eBPF receiver's pins.
func (a *Agent) EBPFPinDir() string { return a.ebpf.pinDir() }

// Push sets the module's trusted prefixes and kinds to cfg's over netlink
// unless they are equal already, then reads them back to check. It
// reports whether it changed anything.
func (a *Agent) Push(cfg Config) (bool, error) {
	c, err := a.dialControl()
	if err != nil {
		return false, err
	}
	defer c.Close()
	cur, err := c.Config()
	if err != nil {
		return false, fmt.Errorf("reading the module's configuration: %w", err)
	}
	if sameConfig(cur, cfg) {
		return false, nil
	}
	want := toactl.Config{Trusted: cfg.Trusted, Kinds: cfg.Kinds}
	if want.Trusted == nil {
		want.Trusted = []netip.Prefix{}
	}
	if err := c.SetConfig(want); err != nil {
		return false, fmt.Errorf("setting the module's configuration (trusted=%q kinds=%q): %w",
			cfg.TrustedString(), cfg.KindsString(), err)
	}
	got, err := c.Config()
	if err != nil {
		return true, fmt.Errorf("reading the module's configuration back: %w", err)
	}
	if !sameConfig(got, cfg) {
		return true, fmt.Errorf("the module holds trusted=%v kinds=%v after being set to trusted=%q kinds=%q",
			got.Trusted, got.Kinds, cfg.TrustedString(), cfg.KindsString())
	}
	return true, nil
}

func (a *Agent) dialControl() (Control, error) {
	c, err := a.dial()
	if errors.Is(err, toactl.ErrNotLoaded) {
		if st, serr := ReadModuleState(a.sysfs); serr == nil && st.Loaded {
			return nil, fmt.Errorf("a toa module is loaded but it is not realip's (no %s netlink family), so it cannot be configured; "+
				"unload it (`realip-agent unload`) to let the agent load realip's toa.ko", toactl.FamilyName)
		}
	}
	return c, err
}

// sameConfig compares the module's configuration with the file's, as
// sets (the module keeps kinds sorted).
func sameConfig(m toactl.Config, c Config) bool {
	return heldConfig{Trusted: m.Trusted, Kinds: m.Kinds}.matches(c)
}

func sameSet[T any](a, b []T, cmp func(T, T) int) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.EqualFunc(a, b, func(x, y T) bool { return cmp(x, y) == 0 })
}

// Config returns the configuration in force.
func (a *Agent) Config() Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Start loads the configuration file, chooses the TOA receiver, loads or
// attaches it (or adopts the one in place) and applies the
// configuration. It is Run's first step and the whole of
// `realip-agent load`.
func (a *Agent) Start(configPath string) (Config, LoadResult, error) {
	cfg, err := LoadConfig(configPath)
	if err != nil {
		a.reloadOK.Set(0)
		return Config{}, LoadResult{}, err
	}
	for _, w := range cfg.Warnings() {
		a.log.Warn(w)
	}
	c, err := a.choose(cfg)
	if err != nil {
		return Config{}, LoadResult{}, err
	}
	a.log.Info("TOA receiver chosen", "receiver", c.recv.kind(), "configured", cfg.Receiver, "why", c.why)
	res, err := c.recv.start(cfg)
	res.Receiver, res.Why = c.recv.kind(), c.why
	if err != nil {
		return Config{}, res, err
	}
	a.mu.Lock()
	a.cfg, a.recv = cfg, c.recv
	a.mu.Unlock()
	a.reloadOK.Set(1)
	return cfg, res, nil
}

// inForce is the receiver in force, nil before Start.
func (a *Agent) inForce() receiver {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recv
}

// Reload re-reads the configuration file and pushes the trusted list and
// kinds to the module without reloading it (it loads the module only if
// it is gone). A bad file changes nothing and the previous configuration
// stays in force.
func (a *Agent) Reload(configPath string) error {
	err := a.reload(configPath)
	a.countReload(err)
	return err
}

// countReload counts a reload's result in the metrics and logs a failure.
func (a *Agent) countReload(err error) {
	if err != nil {
		a.reloads.WithLabelValues("failure").Inc()
		a.reloadOK.Set(0)
		a.log.Error("configuration not applied; the previous one stays in force", "err", err)
		return
	}
	a.reloads.WithLabelValues("success").Inc()
	a.reloadOK.Set(1)
}

func (a *Agent) reload(configPath string) error {
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		a.log.Warn(w)
	}
	recv := a.inForce()
	if recv == nil {
		_, _, err := a.Start(configPath)
		return err
	}
	old := a.Config()
	a.keepRestartFields(&cfg, old, recv.kind())
	changed, err := recv.apply(cfg)
	if err != nil {
		return err
	}
	if recv.kind() == ReceiverKmod && cfg.ModulePath != old.ModulePath {
		a.log.Info("module_path changed; it is used the next time the module is loaded (the loaded module is kept)",
			"module_path", cfg.ModulePath)
	}
	if cfg.Procfs != old.Procfs || cfg.MetricsPerCPU != old.MetricsPerCPU {
		if err := a.swapTOACollector(cfg); err != nil {
			return err
		}
	}
	if err := a.unwrap.apply(cfg.Unwrap, cfg.UnwrapRouting); err != nil {
		return err
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.log.Info("configuration reloaded", "receiver", recv.kind(), "trusted", cfg.TrustedString(), "kinds", cfg.KindsString(),
		"receiver_changed", changed)
	return nil
}

// keepRestartFields keeps in cfg the values of old for the fields that
// apply only when the agent restarts (metrics_listen, receiver, cgroup),
// and logs each that changed. A receiver field that the receiver in
// force (kind) satisfies is no change.
func (a *Agent) keepRestartFields(cfg *Config, old Config, kind ReceiverKind) {
	if cfg.MetricsListen != old.MetricsListen {
		a.log.Warn("metrics_listen changed; restart the agent to move the metrics endpoint",
			"in_force", old.MetricsListen, "configured", cfg.MetricsListen)
		cfg.MetricsListen = old.MetricsListen
	}
	if cfg.Receiver != old.Receiver && cfg.Receiver != ReceiverAuto && cfg.Receiver != kind {
		a.log.Warn("receiver changed; it applies when the agent restarts (to switch receivers, run `realip-agent unload` first)",
			"in_force", old.Receiver, "configured", cfg.Receiver)
		cfg.Receiver = old.Receiver
	}
	if cfg.Cgroup != old.Cgroup {
		a.log.Warn("cgroup changed; restart the agent to attach the eBPF receiver there",
			"in_force", old.Cgroup, "configured", cfg.Cgroup)
		cfg.Cgroup = old.Cgroup
	}
}

// swapTOACollector replaces the toa_stats collector (at start, and after a
// change of procfs or metrics_per_cpu). With the eBPF receiver in force it
// reads that receiver's counters instead of procfs. The registry holds a fixed proxy,
// because an unchecked collector cannot be unregistered.
func (a *Agent) swapTOACollector(cfg Config) error {
	opts := exporter.TOAOptions{ProcRoot: cfg.Procfs, PerCPU: cfg.MetricsPerCPU, Logger: a.log}
	if recv := a.inForce(); recv != nil {
		if src := recv.stats(); src != nil {
			opts.Source, opts.SourceName = src, "the eBPF TOA receiver"
		}
	}
	c, err := exporter.NewTOACollector(opts)
	if err != nil {
		return err
	}
	a.toa.set(c)
	return nil
}

// toaProxy is the registry's toa_stats collector; it delegates to the
// collector of the configuration in force.
type toaProxy struct {
	mu sync.Mutex
	c  *exporter.TOACollector
}

func (p *toaProxy) set(c *exporter.TOACollector) {
	p.mu.Lock()
	p.c = c
	p.mu.Unlock()
}

// Describe implements prometheus.Collector: nothing, like the collector
// it stands for (its metric names depend on the file).
func (p *toaProxy) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (p *toaProxy) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	c := p.c
	p.mu.Unlock()
	if c != nil {
		c.Collect(ch)
	}
}

// Run is `realip-agent run`: Start, start the unwrap relays, serve metrics,
// and on SIGHUP reload. SIGTERM and SIGINT end it with the receiver left in
// place (the relays are closed and their routing removed), as does ctx.
func (a *Agent) Run(ctx context.Context, configPath string, sigs <-chan os.Signal) error {
	cfg, _, err := a.Start(configPath)
	if err != nil {
		return err
	}
	if err := a.swapTOACollector(cfg); err != nil {
		return err
	}
	if err := a.unwrap.apply(cfg.Unwrap, cfg.UnwrapRouting); err != nil {
		return errors.Join(err, a.unwrap.stop())
	}
	bye := func(s os.Signal) {
		if a.inForce().kind() == ReceiverEBPF {
			a.log.Info("exiting; the eBPF TOA receiver stays attached (`realip-agent unload` detaches it)", "signal", s.String())
		} else {
			a.log.Info("exiting; the toa module stays loaded (`realip-agent unload` removes it)", "signal", s.String())
		}
	}
	return a.serve(ctx, cfg, sigs, func() { a.Reload(configPath) }, bye)
}

// serve serves metrics, calls reload on SIGHUP and returns on SIGTERM,
// SIGINT or the end of ctx (calling bye with the signal), closing the
// unwrap relays and removing their routing on the way out.
func (a *Agent) serve(ctx context.Context, cfg Config, sigs <-chan os.Signal, reload func(), bye func(os.Signal)) error {
	var srvDone <-chan error
	var srv *exporter.Server
	if cfg.MetricsListen != "" {
		var err error
		srv, err = exporter.Listen(cfg.MetricsListen, a.reg, a.log)
		if err != nil {
			return errors.Join(err, a.unwrap.stop())
		}
		srvDone = srv.Done()
		a.mu.Lock()
		a.metrics = srv.Addr().String()
		a.mu.Unlock()
		a.log.Info("serving metrics", "addr", a.metrics)
	}
	stop := func() error {
		a.notify("STOPPING=1")
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}
		return a.unwrap.stop()
	}
	a.notify("READY=1")
	for {
		select {
		case <-ctx.Done():
			return stop()
		case err := <-srvDone:
			return errors.Join(fmt.Errorf("metrics server: %w", err), stop())
		case s := <-sigs:
			if s == syscall.SIGHUP {
				a.notify(reloadingState())
				reload()
				a.notify("READY=1")
				continue
			}
			bye(s)
			return stop()
		}
	}
}

// RunUnwrap is `realip-agent unwrap`: only the configuration's unwrap
// relays (no TOA receiver), with metrics; SIGHUP reloads the unwrap list,
// SIGTERM and SIGINT close the relays and remove their routing.
func (a *Agent) RunUnwrap(ctx context.Context, configPath string, sigs <-chan os.Signal) error {
	cfg, err := a.loadUnwrap(configPath)
	if err != nil {
		a.reloadOK.Set(0)
		return err
	}
	if err := a.unwrap.apply(cfg.Unwrap, cfg.UnwrapRouting); err != nil {
		return errors.Join(err, a.unwrap.stop())
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.reloadOK.Set(1)
	reload := func() {
		err := a.reloadUnwrap(configPath)
		a.countReload(err)
	}
	bye := func(s os.Signal) { a.log.Info("exiting; closing the unwrap relays", "signal", s.String()) }
	return a.serve(ctx, cfg, sigs, reload, bye)
}

// loadUnwrap reads a configuration file for RunUnwrap: it must have an
// unwrap list.
func (a *Agent) loadUnwrap(configPath string) (Config, error) {
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return cfg, err
	}
	if len(cfg.Unwrap) == 0 {
		return cfg, &ConfigError{File: configPath, Field: "unwrap", Msg: "no entries: nothing to unwrap"}
	}
	return cfg, nil
}

// reloadUnwrap applies a changed unwrap list (RunUnwrap's SIGHUP).
func (a *Agent) reloadUnwrap(configPath string) error {
	cfg, err := a.loadUnwrap(configPath)
	if err != nil {
		return err
	}
	old := a.Config()
	if cfg.MetricsListen != old.MetricsListen {
		a.log.Warn("metrics_listen changed; restart the agent to move the metrics endpoint")
		cfg.MetricsListen = old.MetricsListen
	}
	if err := a.unwrap.apply(cfg.Unwrap, cfg.UnwrapRouting); err != nil {
		return err
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.log.Info("configuration reloaded", "unwrap_entries", len(cfg.Unwrap))
	return nil
}

// MetricsAddr is the address Run serves metrics on, once it does.
func (a *Agent) MetricsAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metrics
}

// receiverCollector reports, at scrape time, the receiver in force and
// what it says of its configuration.
type receiverCollector struct {
	a                           *Agent
	up, trusted, info, recvInfo *prometheus.Desc
}

func newReceiverCollector(a *Agent) *receiverCollector {
	return &receiverCollector{
		a: a,
		up: prometheus.NewDesc("realip_toa_control_up",
			"1 when the TOA receiver's configuration could be read (toa.ko's netlink control interface answered, or the eBPF receiver's pinned maps were read), else 0.", nil, nil),
		trusted: prometheus.NewDesc("realip_toa_trusted_prefixes",
			"Trusted source prefixes in force in the TOA receiver; 0 means every source is trusted and TOA can be forged.", nil, nil),
		info: prometheus.NewDesc("realip_toa_module_info",
			"The loaded toa module's version and srcversion; always 1.", []string{"version", "srcversion"}, nil),
		recvInfo: prometheus.NewDesc("realip_toa_receiver_info",
			"The TOA receiver the agent runs: kmod (toa.ko) or ebpf (the eBPF receiver); always 1.", []string{"receiver"}, nil),
	}
}

func (c *receiverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.trusted
	ch <- c.info
	ch <- c.recvInfo
}

func (c *receiverCollector) Collect(ch chan<- prometheus.Metric) {
	if st, err := ReadModuleState(c.a.sysfs); err == nil && st.Loaded {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, st.Version, st.SrcVersion)
	}
	recv := c.a.inForce()
	if recv == nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.recvInfo, prometheus.GaugeValue, 1, string(recv.kind()))
	held, err := recv.held()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.trusted, prometheus.GaugeValue, float64(len(held.Trusted)))
}
