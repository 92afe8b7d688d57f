package rules_test

import (
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/realip/realip/edge/rules"
)

func Example() {
	groups, err := rules.ParseGroups(strings.NewReader("web 192.0.2.10 192.0.2.11\n"), "groups.txt")
	if err != nil {
		log.Fatal(err)
	}
	const file = `# edge rules
TCP:80;443;8000-8010   og:Web  8080  ON  PPv1   front end
udp:5000-5001 2001:DB8::10 6000-6001 off spp
`
	set, err := rules.Parse(strings.NewReader(file), "rules.txt", groups)
	if err != nil {
		log.Fatal(err)
	}

	r, originPort, ok := set.Lookup(rules.UDP, 5001)
	fmt.Println(ok, r.Line, r.Origin, originPort, r.IPMode)

	if err := set.Export(os.Stdout); err != nil {
		log.Fatal(err)
	}

	_, err = rules.Parse(strings.NewReader("tcp:3943 192.0.2.1 80 off off\nudp:80 192.0.2.1 80 off toa\n"), "bad.txt", nil)
	fmt.Println(err)
	// Output:
	// true 3 2001:db8::10 6001 spp
	// tcp:80;443;8000-8010 og:web 8080 on ppv1 front end
	// udp:5000-5001 2001:db8::10 6000-6001 off spp
	// bad.txt:1: port 3943 is reserved for tcp
	// bad.txt:2: IP passing mode toa is not available for udp
}
