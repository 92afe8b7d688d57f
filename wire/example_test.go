package wire_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"strings"

	"github.com/realip/realip/wire"
)

func ExampleParseSPP() {
	h := wire.SPPHeader{
		Client: netip.MustParseAddrPort("192.0.2.7:40000"),
		Proxy:  netip.MustParseAddrPort("198.51.100.1:6666"),
	}
	datagram := append(wire.AppendSPP(nil, h), "payload"...)

	got, err := wire.ParseSPP(datagram)
	fmt.Println(got.Client, got.Proxy, string(datagram[wire.SPPHeaderLen:]), err)
	// Output: 192.0.2.7:40000 198.51.100.1:6666 payload <nil>
}

func ExampleReadProxyHeader() {
	stream := "PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\nGET / HTTP/1.1\r\n"
	br := bufio.NewReaderSize(strings.NewReader(stream), wire.MaxV2HeaderLen)

	h, err := wire.ReadProxyHeader(br)
	if err != nil {
		panic(err)
	}
	rest, _ := br.ReadString('\n')
	fmt.Println(h.Version, h.Source, h.Destination)
	fmt.Printf("%q\n", rest)
	// Output:
	// 1 [2001:db8::7]:40000 [2001:db8::1]:443
	// "GET / HTTP/1.1\r\n"
}

func ExampleAppendProxyHeader() {
	h := &wire.ProxyHeader{
		Version:     2,
		Source:      netip.MustParseAddrPort("192.0.2.7:40000"),
		Destination: netip.MustParseAddrPort("198.51.100.1:443"),
		TLVs:        []wire.TLV{{Type: wire.TLVAuthority, Value: []byte("example.com")}},
	}
	b, err := wire.AppendProxyHeader(nil, h, wire.MarshalOptions{CRC32C: true})
	fmt.Println(len(b), err, wire.VerifyCRC32C(b))
	// Output: 49 <nil> <nil>
}
