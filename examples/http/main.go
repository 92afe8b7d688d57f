// Command http is a net/http server behind an L4 proxy: it logs and returns
// the real client of every request.
//
//	http -listen :8080 -trust 10.0.0.0/8 [-proto ppv1,ppv2]
//
// r.RemoteAddr is already the client, so existing handlers, logs and rate
// limiters need no change; the handler below also shows how to reach the
// proxy's address and the protocol through the request's context.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// connKey keys the *listener.Conn stored in each request's context.
type connKey struct{}

func main() {
	addr := flag.String("listen", ":8080", "TCP address to listen on")
	trust := flag.String("trust", "", "comma list of trusted proxy prefixes (CIDR), required")
	proto := flag.String("proto", "ppv1,ppv2", "comma list of ppv1, ppv2")
	flag.Parse()
	if err := run(*addr, *trust, *proto); err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}

func run(addr, trust, proto string) error {
	protos, err := wire.ParseProtoList(proto)
	if err != nil {
		return err
	}
	var trusted []netip.Prefix
	for _, f := range strings.Split(trust, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-trust: %w", err)
		}
		trusted = append(trusted, p)
	}
	l, err := listener.Listen("tcp", addr, listener.Config{Protocols: protos, Trusted: trusted})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(whoami),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	log.Printf("http: serving on %s", l.Addr())
	return srv.Serve(l)
}

func whoami(w http.ResponseWriter, r *http.Request) {
	line := "client=" + r.RemoteAddr
	if c, ok := r.Context().Value(connKey{}).(*listener.Conn); ok {
		line = c.String()
	}
	log.Printf("%s %s %s", line, r.Method, r.URL.Path)
	fmt.Fprintln(w, line)
}
