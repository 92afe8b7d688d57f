// Command whoami is the smallest server that shows what realip sees: behind
// an L4 proxy it reports the real client of every TCP connection and UDP
// datagram.
//
//	whoami -tcp :8080 -udp :9000 -proto ppv1,ppv2,spp -trust 10.0.0.0/8
//
// -udp-framing says how the proxy frames PROXY v2 over UDP: "every" (a
// header on every datagram, the specification and the safe default) or
// "first" (on the first datagram of a flow only, as EdgeOne and
// realip-edge by default send it). It is never guessed per datagram.
//
// -proto toa needs a TOA receiver, as the kernel reads the option: realip's
// toa.ko loaded, or else realip's eBPF receiver attached (realip-agent load
// with receiver: ebpf) to a cgroup whoami runs in, and pinned in
// -toa-pin-dir (default /sys/fs/bpf/realip/toa). Either way the line shows
// the client, the edge (proxy) and via=toa. It cannot be combined with
// ppv1/ppv2 on the same TCP listener.
//
// On each TCP connection it writes one line, "client=IP:PORT proxy=IP:PORT
// via=PROTO", then echoes what it reads until EOF. Each UDP datagram is
// answered with that line (through the wrapper, so SPP replies carry the
// header). via=none means no header was honoured and client is the socket's
// peer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

type options struct {
	tcp, udp  string
	protos    []wire.Proto
	trusted   []netip.Prefix
	optional  bool
	untrusted listener.UntrustedAction
	framing   listener.Framing
	timeout   time.Duration
	pinDir    string
	verbose   bool
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "whoami:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "whoami:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	o := &options{}
	proto := fs.String("proto", "ppv1,ppv2,spp", "comma list of ppv1, ppv2, spp, toa")
	trust := fs.String("trust", "", "comma list of trusted proxy prefixes (CIDR), required; 0.0.0.0/0,::/0 trusts everyone")
	untrusted := fs.String("untrusted", "drop", "header from an untrusted peer: drop or ignore")
	framing := fs.String("udp-framing", "every", "how the proxy frames PROXY v2 over UDP: every (a header on every datagram) or first (on the first datagram of a flow, as EdgeOne)")
	fs.StringVar(&o.tcp, "tcp", "", "TCP address to listen on")
	fs.StringVar(&o.udp, "udp", "", "UDP address to listen on")
	fs.BoolVar(&o.optional, "optional", false, "let trusted peers omit the header")
	fs.DurationVar(&o.timeout, "header-timeout", listener.DefaultHeaderTimeout, "how long a TCP peer may take to send its header")
	fs.StringVar(&o.pinDir, "toa-pin-dir", "", "with -proto toa and no toa.ko: the bpffs folder of the pinned eBPF TOA receiver (default /sys/fs/bpf/realip/toa)")
	fs.BoolVar(&o.verbose, "v", false, "log every rejected connection or datagram, untrusted ones included")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.protos, err = wire.ParseProtoList(*proto); err != nil {
		return nil, fmt.Errorf("-proto: %w", err)
	}
	if o.trusted, err = parsePrefixes(*trust); err != nil {
		return nil, fmt.Errorf("-trust: %w", err)
	}
	switch *untrusted {
	case "drop":
		o.untrusted = listener.UntrustedDrop
	case "ignore":
		o.untrusted = listener.UntrustedIgnore
	default:
		return nil, fmt.Errorf("-untrusted %q: want drop or ignore", *untrusted)
	}
	if o.framing, err = listener.ParseFraming(*framing); err != nil {
		return nil, fmt.Errorf("-udp-framing: %w", err)
	}
	if o.tcp == "" && o.udp == "" {
		return nil, errors.New("nothing to serve: give -tcp and/or -udp")
	}
	return o, nil
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("required: the prefixes of the proxies allowed to pass client addresses")
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// config builds the listener config for one transport from the protocols
// that transport can carry.
func (o *options) config(transport string, supported ...wire.Proto) (listener.Config, error) {
	cfg := listener.Config{Trusted: o.trusted, Optional: o.optional, Untrusted: o.untrusted, HeaderTimeout: o.timeout, Framing: o.framing, TOAPinDir: o.pinDir}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, p := range o.protos {
		for _, s := range supported {
			if p == s {
				cfg.Protocols = append(cfg.Protocols, p)
			}
		}
	}
	if len(cfg.Protocols) == 0 {
		return cfg, fmt.Errorf("-%s: none of -proto %v works over %s (it takes %v)", transport, o.protos, transport, supported)
	}
	return cfg, nil
}

func run(ctx context.Context, o *options) error {
	errc := make(chan error, 2)
	var closers []io.Closer
	if o.tcp != "" {
		cfg, err := o.config("tcp", wire.PPv1, wire.PPv2, wire.TOA)
		if err != nil {
			return err
		}
		l, err := listener.Listen("tcp", o.tcp, cfg)
		if err != nil {
			return err
		}
		closers = append(closers, l)
		fmt.Fprintf(os.Stderr, "whoami: tcp %s %v\n", l.Addr(), cfg.Protocols)
		go func() { errc <- serveTCP(l) }()
	}
	if o.udp != "" {
		cfg, err := o.config("udp", wire.SPP, wire.PPv2)
		if err != nil {
			return err
		}
		pc, err := listener.ListenPacket("udp", o.udp, cfg)
		if err != nil {
			return err
		}
		closers = append(closers, pc)
		fmt.Fprintf(os.Stderr, "whoami: udp %s %v (PROXY v2 %s)\n", pc.LocalAddr(), cfg.Protocols, cfg.Framing)
		go func() { errc <- serveUDP(pc) }()
	}
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

func serveTCP(l *listener.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// A transient error of the inner listener (EMFILE): keep going.
			fmt.Fprintln(os.Stderr, "whoami: accept:", err)
			continue
		}
		go echo(c.(*listener.Conn))
	}
}

func echo(c *listener.Conn) {
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", c); err != nil {
		return
	}
	io.Copy(c, c)
}

func serveUDP(pc *listener.PacketConn) error {
	buf := make([]byte, 64<<10)
	for {
		_, src, err := pc.ReadFromSource(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		line := fmt.Sprintf("client=%s proxy=%s via=%s\n", src.Client, src.Proxy, src.Via)
		if _, err := pc.WriteToSource([]byte(line), src); err != nil {
			fmt.Fprintln(os.Stderr, "whoami: reply:", err)
		}
	}
}
