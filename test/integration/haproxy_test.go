//go:build linux

package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// uniqueIDFormat makes HAProxy's UNIQUE_ID TLV predictable: the client's
// address and the frontend's, which the test knows from its own socket.
const uniqueIDFormat = "%ci_%cp_%fi_%fp"

// sni is the TLS server name the client sends to TLS frontends; HAProxy
// passes it on as the AUTHORITY TLV.
const sni = "whoami.example"

// frontend is one HAProxy frontend with its own backend of one server.
type frontend struct {
	name    string
	bind    netip.AddrPort // on the edge's client side
	tls     bool           // terminate TLS on bind (needs a certificate)
	server  netip.AddrPort // in the origin
	options string         // the server line's options: send-proxy, ...
}

// haproxyConfig returns a configuration with one frontend/backend pair per
// fe. certPath is the PEM certificate and key for TLS frontends.
func haproxyConfig(certPath string, fes []frontend) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	log stderr format raw local0 info
	maxconn 256

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 2s
	timeout client 10s
	timeout server 10s
	unique-id-format %s
`, uniqueIDFormat)
	for _, fe := range fes {
		bind := fe.bind.String()
		if fe.tls {
			bind += " ssl crt " + certPath
		}
		fmt.Fprintf(&b, "\nfrontend fe-%s\n\tbind %s\n\tdefault_backend be-%s\n", fe.name, bind, fe.name)
		fmt.Fprintf(&b, "backend be-%s\n\tserver origin %s %s\n", fe.name, fe.server, fe.options)
	}
	return b.String()
}

// startFrontends starts HAProxy with fes in l's edge and waits until they
// all accept. The TLS frontends get a fresh self-signed certificate for sni;
// the returned pool trusts it.
func startFrontends(t *testing.T, l *lab, fes []frontend) (*netns.Proc, *x509.CertPool) {
	t.Helper()
	certPath, pool := selfSigned(t, sni)
	binds := make([]netip.AddrPort, len(fes))
	for i, fe := range fes {
		binds[i] = fe.bind
	}
	return startHAProxy(t, l, haproxyConfig(certPath, fes), binds...), pool
}

// selfSigned writes a self-signed ECDSA certificate for name and its key to
// one PEM file, as HAProxy's "crt" wants them.
func selfSigned(t *testing.T, name string) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	path := filepath.Join(t.TempDir(), "edge.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return path, pool
}

// connectFrontend connects from the client to fe (through TLS for a TLS
// frontend) and returns the connection, a reader on it, and the client's
// own address of the TCP connection.
func connectFrontend(t *testing.T, l *lab, fe frontend, pool *x509.CertPool) (net.Conn, *bufio.Reader, netip.AddrPort) {
	t.Helper()
	raw := mustDial(t, l.client, fe.bind)
	local := addrPort(raw.LocalAddr())
	c := raw
	if fe.tls {
		tc := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: pool})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake with %v: %v", fe.bind, err)
		}
		c = tc
	}
	return c, bufio.NewReader(c), local
}

// edgeBack returns the edge's origin-side address of a's family.
func edgeBack(a netip.Addr) netip.Addr {
	if a.Is4() {
		return edgeBackV4
	}
	return edgeBackV6
}

// TestHAProxySendsClientAddress puts HAProxy between a client and whoami
// and checks that whoami reports the client's own address and port for
// every way HAProxy sends the PROXY header, over every mix of IPv4 and IPv6
// on the client and origin legs.
func TestHAProxySendsClientAddress(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "haproxy")
	l := newLab(t)
	ports := map[string]uint16{"ppv1": 8001, "ppv2": 8002}
	for proto, port := range ports {
		startWhoami(t, l.origin, "-tcp", fmt.Sprintf(":%d", port), "-proto", proto, "-trust", edgeTrust)
	}
	senders := []struct {
		name    string
		options string
		via     string
		tls     bool
	}{
		{"send-proxy", "send-proxy", "ppv1", false},
		{"send-proxy-v2", "send-proxy-v2", "ppv2", false},
		{"send-proxy-v2-tlvs", "send-proxy-v2 proxy-v2-options crc32c,unique-id", "ppv2", false},
		{"send-proxy-v2-tls", "send-proxy-v2 proxy-v2-options crc32c,unique-id,authority,ssl,ssl-cipher", "ppv2", true},
	}
	legs := []struct{ front, origin netip.Addr }{
		{edgeFrontV4, originV4},
		{edgeFrontV6, originV6},
		{edgeFrontV6, originV4}, // an IPv6 client reported over IPv4
		{edgeFrontV4, originV6},
	}
	var fes []frontend
	var vias []string
	for i, s := range senders {
		for j, leg := range legs {
			fes = append(fes, frontend{
				name:    fmt.Sprintf("%s-%s-%s", s.name, family(leg.front), family(leg.origin)),
				bind:    netip.AddrPortFrom(leg.front, uint16(10000+10*i+j)),
				tls:     s.tls,
				server:  netip.AddrPortFrom(leg.origin, ports[s.via]),
				options: s.options,
			})
			vias = append(vias, s.via)
		}
	}
	_, pool := startFrontends(t, l, fes)

	for i, fe := range fes {
		t.Run(fe.name, func(t *testing.T) {
			t.Parallel()
			c, br, local := connectFrontend(t, l, fe, pool)
			w := readWhoamiLine(t, br)
			if w.client != local {
				t.Errorf("client=%v, want the client's own address %v", w.client, local)
			}
			if w.proxy.Addr() != edgeBack(fe.server.Addr()) || w.proxy.Port() == 0 {
				t.Errorf("proxy=%v, want the edge's origin-side address %v and a port", w.proxy, edgeBack(fe.server.Addr()))
			}
			if w.via != vias[i] {
				t.Errorf("via=%s, want %s", w.via, vias[i])
			}
			checkEcho(t, c, br, "ping through "+fe.name+"\n")
		})
	}
}

// TestHAProxyV2TLVs receives HAProxy's PROXY v2 headers with realip's own
// listener and checks the TLVs HAProxy adds: a CRC32C that verifies, the
// UNIQUE_ID built from unique-id-format, and, behind a TLS frontend, the
// AUTHORITY (the client's SNI) and SSL TLVs.
func TestHAProxyV2TLVs(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "haproxy")
	l := newLab(t)
	const port = 9000
	var ln *listener.Listener
	err := l.origin.Do(func() (err error) {
		ln, err = listener.Listen("tcp", fmt.Sprintf(":%d", port), listener.Config{
			Protocols: []wire.Proto{wire.PPv2},
			Trusted:   []netip.Prefix{netip.PrefixFrom(edgeBackV4, 32), netip.PrefixFrom(edgeBackV6, 128)},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	tests := []struct {
		fe       frontend
		tlvTypes []uint8 // in the order HAProxy writes them
	}{
		{frontend{name: "plain-v4", bind: netip.AddrPortFrom(edgeFrontV4, 11000),
			server: netip.AddrPortFrom(originV4, port), options: "send-proxy-v2 proxy-v2-options crc32c,unique-id"},
			[]uint8{wire.TLVCRC32C, wire.TLVUniqueID}},
		{frontend{name: "plain-v6", bind: netip.AddrPortFrom(edgeFrontV6, 11001),
			server: netip.AddrPortFrom(originV6, port), options: "send-proxy-v2 proxy-v2-options crc32c,unique-id"},
			[]uint8{wire.TLVCRC32C, wire.TLVUniqueID}},
		{frontend{name: "tls-v4", bind: netip.AddrPortFrom(edgeFrontV4, 11002), tls: true,
			server: netip.AddrPortFrom(originV4, port), options: "send-proxy-v2 proxy-v2-options crc32c,unique-id,authority,ssl,ssl-cipher"},
			[]uint8{wire.TLVCRC32C, wire.TLVAuthority, wire.TLVUniqueID, wire.TLVSSL}},
		{frontend{name: "tls-v6", bind: netip.AddrPortFrom(edgeFrontV6, 11003), tls: true,
			server: netip.AddrPortFrom(originV6, port), options: "send-proxy-v2 proxy-v2-options crc32c,unique-id,authority,ssl,ssl-cipher"},
			[]uint8{wire.TLVCRC32C, wire.TLVAuthority, wire.TLVUniqueID, wire.TLVSSL}},
	}
	fes := make([]frontend, len(tests))
	for i, tc := range tests {
		fes[i] = tc.fe
	}
	// Frontend readiness probes reach the listener too: drain them.
	accepted := make(chan *listener.Conn)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c.(*listener.Conn):
			case <-t.Context().Done():
				c.Close()
				return
			}
		}
	}()
	_, pool := startFrontends(t, l, fes)

	for _, tc := range tests { // one at a time: each takes the next accepted connection
		t.Run(tc.fe.name, func(t *testing.T) {
			c, _, local := connectFrontend(t, l, tc.fe, pool)
			sc := acceptFrom(t, accepted, local)
			defer sc.Close()
			h := sc.Header()
			if h == nil || h.Version != 2 || h.Local {
				t.Fatalf("header %+v, want a PROXY v2 header", h)
			}
			if h.Source != local || h.Destination != tc.fe.bind {
				t.Errorf("header %v -> %v, want %v -> %v", h.Source, h.Destination, local, tc.fe.bind)
			}
			if sc.Proxy().Addr() != edgeBack(tc.fe.server.Addr()) {
				t.Errorf("proxy %v, want the edge %v", sc.Proxy(), edgeBack(tc.fe.server.Addr()))
			}
			var types []uint8
			for _, tlv := range h.TLVs {
				types = append(types, tlv.Type)
			}
			if !slices.Equal(types, tc.tlvTypes) {
				t.Errorf("TLV types %#x, want %#x", types, tc.tlvTypes)
			}
			wantID := fmt.Sprintf("%s_%d_%s_%d", local.Addr(), local.Port(), tc.fe.bind.Addr(), tc.fe.bind.Port())
			if got := string(h.UniqueID()); got != wantID {
				t.Errorf("UNIQUE_ID %q, want %q", got, wantID)
			}
			if tc.fe.tls {
				if got := h.Authority(); got != sni {
					t.Errorf("AUTHORITY %q, want the SNI %q", got, sni)
				}
				ssl, ok := h.SSL()
				if !ok || !ssl.ClientSSL() {
					t.Errorf("SSL TLV %+v (ok %v), want one with the client-SSL flag", ssl, ok)
				}
				version, _ := ssl.SSLVersion()
				cipher, _ := ssl.SSLCipher()
				state := c.(*tls.Conn).ConnectionState()
				if version != "TLSv1.3" || state.Version != tls.VersionTLS13 {
					t.Errorf("SSL version TLV %q, client negotiated %s", version, tls.VersionName(state.Version))
				}
				if cipher != tls.CipherSuiteName(state.CipherSuite) {
					t.Errorf("SSL cipher TLV %q, client negotiated %s", cipher, tls.CipherSuiteName(state.CipherSuite))
				}
			} else if h.Authority() != "" {
				t.Errorf("AUTHORITY %q without TLS", h.Authority())
			}
			// The payload follows the header, unchanged.
			const payload = "after the header\n"
			if _, err := io.WriteString(c, payload); err != nil {
				t.Fatal(err)
			}
			sc.SetReadDeadline(time.Now().Add(ioTimeout))
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(sc, got); err != nil || string(got) != payload {
				t.Errorf("origin read %q, %v; want %q", got, err, payload)
			}
		})
	}
}

// acceptFrom returns the next accepted connection whose client is client,
// closing the readiness probes accepted before it.
func acceptFrom(t *testing.T, accepted <-chan *listener.Conn, client netip.AddrPort) *listener.Conn {
	t.Helper()
	timeout := time.After(ioTimeout)
	for {
		select {
		case c, ok := <-accepted:
			if !ok {
				t.Fatal("listener closed")
			}
			if c.Client() == client {
				return c
			}
			c.Close()
		case <-timeout:
			t.Fatalf("no connection from %v within %v", client, ioTimeout)
		}
	}
}

// TestHAProxyUntrustedEdge runs whoami trusting another prefix than the
// edge's: HAProxy's header is never honoured. Under -untrusted drop whoami
// still writes its line (it writes before it reads), naming the edge as
// client, and the connection closes on its first read, where the header is
// found; under -untrusted ignore the header is stripped and the echo works.
func TestHAProxyUntrustedEdge(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "haproxy")
	l := newLab(t)
	policies := []struct {
		name string
		port uint16
		proc *netns.Proc
	}{{name: "drop", port: 8001}, {name: "ignore", port: 8002}}
	for i := range policies {
		p := &policies[i]
		p.proc = startWhoami(t, l.origin, "-tcp", fmt.Sprintf(":%d", p.port), "-proto", "ppv1,ppv2",
			"-trust", "203.0.113.0/24", "-untrusted", p.name, "-v")
	}
	senders := []struct{ name, options string }{
		{"v1", "send-proxy"},
		{"v2", "send-proxy-v2 proxy-v2-options crc32c"},
	}
	type tcase struct {
		fe     frontend
		policy int
	}
	var tests []tcase
	port := uint16(12000)
	for pi, p := range policies {
		for _, s := range senders {
			for _, leg := range [][2]netip.Addr{{edgeFrontV4, originV4}, {edgeFrontV6, originV6}} {
				tests = append(tests, tcase{frontend{
					name:    fmt.Sprintf("%s-%s-%s", p.name, s.name, family(leg[0])),
					bind:    netip.AddrPortFrom(leg[0], port),
					server:  netip.AddrPortFrom(leg[1], p.port),
					options: s.options,
				}, pi})
				port++
			}
		}
	}
	fes := make([]frontend, len(tests))
	for i, tc := range tests {
		fes[i] = tc.fe
	}
	startFrontends(t, l, fes)

	for _, tc := range tests {
		t.Run(tc.fe.name, func(t *testing.T) {
			t.Parallel()
			p := policies[tc.policy]
			c, br, _ := connectFrontend(t, l, tc.fe, nil)
			w := readWhoamiLine(t, br)
			edge := edgeBack(tc.fe.server.Addr())
			if w.via != "none" || w.client != w.proxy || w.client.Addr() != edge {
				t.Errorf("line %+v, want via=none and client=proxy=the edge %v", w, edge)
			}
			if p.name == "ignore" {
				checkEcho(t, c, br, "echo despite an untrusted header\n")
				return
			}
			_, _ = io.WriteString(c, "never echoed\n") // may fail: whoami may have closed already
			readClosed(t, br)
			waitLogLine(t, p.proc, "peer="+w.proxy.String(), "reason=untrusted_header")
		})
	}
}

// TestCorruptCRC32CRefused sends whoami, from the (trusted) edge, a PROXY
// v2 header whose CRC32C TLV is wrong: the connection is closed before
// whoami writes anything. The same header with its CRC intact is honoured.
func TestCorruptCRC32CRefused(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	const port = 8002
	proc := startWhoami(t, l.origin, "-tcp", fmt.Sprintf(":%d", port), "-proto", "ppv2", "-trust", edgeTrust)
	tests := []struct {
		name         string
		origin       netip.Addr
		client, dest netip.AddrPort // what the header claims
		corrupt      bool
	}{
		{"v4-valid", originV4, netip.MustParseAddrPort("192.0.2.77:4242"), netip.MustParseAddrPort("192.0.2.1:443"), false},
		{"v4-corrupt", originV4, netip.MustParseAddrPort("192.0.2.77:4242"), netip.MustParseAddrPort("192.0.2.1:443"), true},
		{"v6-valid", originV6, netip.MustParseAddrPort("[2001:db8:1::77]:4242"), netip.MustParseAddrPort("[2001:db8:1::1]:443"), false},
		{"v6-corrupt", originV6, netip.MustParseAddrPort("[2001:db8:1::77]:4242"), netip.MustParseAddrPort("[2001:db8:1::1]:443"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &wire.ProxyHeader{Version: 2, Source: tc.client, Destination: tc.dest,
				TLVs: []wire.TLV{{Type: wire.TLVUniqueID, Value: []byte("hand-made")}}}
			raw, err := wire.AppendProxyHeader(nil, h, wire.MarshalOptions{CRC32C: true})
			if err != nil {
				t.Fatal(err)
			}
			// The CRC32C TLV comes last: type 0x03, length 4, value.
			crc := len(raw) - 4
			if raw[crc-3] != wire.TLVCRC32C || binary.BigEndian.Uint16(raw[crc-2:]) != 4 {
				t.Fatalf("no CRC32C TLV at the end of % x", raw)
			}
			if tc.corrupt {
				raw[crc+1] ^= 0x5a
				if err := wire.VerifyCRC32C(raw); !errors.Is(err, wire.ErrChecksum) {
					t.Fatalf("corrupted header verifies: %v", err)
				}
			}
			c := mustDial(t, l.edge, netip.AddrPortFrom(tc.origin, port))
			edge := addrPort(c.LocalAddr())
			const payload = "hello behind the header\n"
			if _, err := c.Write(append(raw, payload...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			if tc.corrupt {
				readClosed(t, br)
				waitLogLine(t, proc, "peer="+edge.String(), "reason=checksum")
				return
			}
			w := readWhoamiLine(t, br)
			if w.client != tc.client || w.proxy != edge || w.via != "ppv2" {
				t.Errorf("line %+v, want client=%v proxy=%v via=ppv2", w, tc.client, edge)
			}
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != payload {
				t.Errorf("echo %q, %v; want %q", got, err, payload)
			}
		})
	}
}

// waitLogLine waits until one line of p's output holds all of parts.
func waitLogLine(t *testing.T, p *netns.Proc, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		for _, line := range strings.Split(p.Output(), "\n") {
			if containsAll(line, parts) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v:\n%s", parts, ioTimeout, p.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
