package loadkit

import (
	"io"
	"net"
	"testing"
	"time"
)

// serve runs handle behind a TCP listener on loopback for the test and
// returns its address.
func serve(t *testing.T, handle func(*net.TCPConn)) *net.TCPAddr {
	t.Helper()
	ln, err := ServeTCP("127.0.0.1:0", handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr)
}

// exchange connects to addr, writes each of parts (a pause between them,
// so that they can arrive as separate reads), half-closes, and returns
// all it reads until the server closes.
func exchange(t *testing.T, addr *net.TCPAddr, parts ...string) (local string, reply string) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, p := range parts {
		if i > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	return c.LocalAddr().String(), string(b)
}

func TestEchoTCP(t *testing.T) {
	const who = "<peer>" // stands for the client's own address
	for _, tc := range []struct {
		name  string
		echo  Echo
		parts []string
		want  string
	}{
		{"plain", Echo{}, []string{"hello ", "world"}, "hello world"},
		{"plain echoes WHO?", Echo{}, []string{"WHO?"}, "WHO?"},
		{"nothing", Echo{}, nil, ""},
		{"who", Echo{Who: true}, []string{"WHO?"}, who},
		{"who with more", Echo{Who: true}, []string{"WHO? and more"}, who},
		{"who only first", Echo{Who: true}, []string{"abc", "WHO?"}, "abcWHO?"},
		{"ppv1", Echo{PPv1: true}, []string{"PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\n", "payload"}, "payload"},
		{"ppv1 and payload in one", Echo{PPv1: true}, []string{"PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\npayload"}, "payload"},
		{"ppv1 split", Echo{PPv1: true}, []string{"PROXY TCP6 2001:db8::1 ", "2001:db8::2 1 2\r", "\nxy"}, "xy"},
		{"ppv1 missing", Echo{PPv1: true}, []string{"GET / HTTP/1.0\r\n\r\n"}, ""},
		{"ppv1 unterminated", Echo{PPv1: true}, []string{"PROXY TCP4 192.0.2.1"}, ""},
		{"ppv1 too long", Echo{PPv1: true}, []string{"PROXY " + string(make([]byte, 120)), "\r\nx"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, got := exchange(t, serve(t, tc.echo.TCP), tc.parts...)
			want := tc.want
			if want == who {
				want = local
			}
			if got != want {
				t.Errorf("reply %q, want %q", got, want)
			}
		})
	}
}

func TestDiscard(t *testing.T) {
	if _, got := exchange(t, serve(t, Discard), "lots", "of", "bytes"); got != "" {
		t.Errorf("discard replied %q", got)
	}
}

func TestEchoUDP(t *testing.T) {
	for _, tc := range []struct {
		name string
		echo Echo
		req  string
		want string // "<peer>": the client's address
	}{
		{"plain", Echo{}, "ping", "ping"},
		{"plain echoes WHO?", Echo{}, "WHO?", "WHO?"},
		{"who", Echo{Who: true}, "WHO?x", "<peer>"},
		{"who, other datagram", Echo{Who: true}, "xWHO?", "xWHO?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := ServeUDP("127.0.0.1:0", 2, tc.echo.UDP)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			want := tc.want
			if want == "<peer>" {
				want = c.LocalAddr().String()
			}
			buf := make([]byte, 100)
			for try := 0; ; try++ {
				c.Write([]byte(tc.req))
				c.SetReadDeadline(time.Now().Add(time.Second))
				n, err := c.Read(buf)
				if err == nil {
					if got := string(buf[:n]); got != want {
						t.Errorf("reply %q, want %q", got, want)
					}
					return
				}
				if try == 4 {
					t.Fatalf("no reply: %v", err)
				}
			}
		})
	}
}
