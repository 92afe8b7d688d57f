package listener_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// A TCP server behind a proxy that sends PROXY protocol headers.
func ExampleListen() {
	l, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{
		Protocols: []wire.Proto{wire.PPv1, wire.PPv2},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	// The proxy's side, for the example: a header, then the payload.
	go func() {
		c, _ := net.Dial("tcp", l.Addr().String())
		defer c.Close()
		io.WriteString(c, "PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nhello")
	}()

	c, err := l.Accept()
	if err != nil {
		panic(err)
	}
	defer c.Close()
	rc := c.(*listener.Conn)
	payload, _ := io.ReadAll(c)
	fmt.Println(c.RemoteAddr(), rc.Via(), rc.Target(), string(payload))
	// Output: 192.0.2.7:40000 ppv1 198.51.100.1:443 hello
}

// A UDP server behind a proxy that sends SPP: replies carry the header back.
func ExampleListenPacket() {
	pc, err := listener.ListenPacket("udp", "127.0.0.1:0", listener.Config{
		Protocols: []wire.Proto{wire.SPP},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	if err != nil {
		panic(err)
	}
	defer pc.Close()

	// The proxy's side, for the example.
	proxy, _ := net.Dial("udp", pc.LocalAddr().String())
	defer proxy.Close()
	hdr := wire.SPPHeader{
		Client: netip.MustParseAddrPort("192.0.2.7:5353"),
		Proxy:  netip.MustParseAddrPort("198.51.100.1:53"),
	}
	proxy.Write(append(wire.AppendSPP(nil, hdr), "query"...))

	buf := make([]byte, 64<<10)
	n, src, err := pc.ReadFromSource(buf)
	if err != nil {
		panic(err)
	}
	fmt.Println(src.Client, src.Via, string(buf[:n]))
	pc.WriteToSource([]byte("answer"), src)

	reply := make([]byte, 1500)
	n, _ = proxy.Read(reply)
	back, _ := wire.ParseSPP(reply[:n])
	fmt.Println(back == hdr, string(reply[wire.SPPHeaderLen:n]))
	// Output:
	// 192.0.2.7:5353 spp query
	// true answer
}

// A TCP server behind an edge that sends TOA (realip-edge's toa rules,
// LVS, EdgeOne): the kernel reads the option, through realip's toa.ko or,
// without the module, its eBPF receiver (realip-agent load with
// `receiver: ebpf`), and the listener reports client and edge. Not run
// here: it needs one of the receivers, and New's error names both when
// neither is there.
func ExampleConfig_TOAPinDir() {
	l, err := listener.Listen("tcp", ":8080", listener.Config{
		Protocols: []wire.Proto{wire.TOA},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		// Where realip-agent pinned the eBPF receiver; this is the
		// default, and toa.ko is asked first when it is loaded.
		TOAPinDir: "/sys/fs/bpf/realip/toa",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	rc := c.(*listener.Conn)
	fmt.Println(rc.Client(), rc.Proxy(), rc.Via()) // e.g. 192.0.2.7:40000 10.0.0.1:51000 toa
}
