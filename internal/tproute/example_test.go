//go:build linux

package tproute_test

import (
	"fmt"
	"log"

	"github.com/realip/realip/internal/tproute"
)

// Install the routing with the defaults, mark the transparent sockets
// with the configuration's mark, and remove the routing on the way out.
func Example() {
	routes, err := tproute.Install(tproute.Config{})
	if err != nil {
		log.Fatal(err) // e.g. table 7714 holds someone else's routes
	}
	defer func() {
		if err := routes.Remove(); err != nil {
			log.Print(err)
		}
	}()
	fmt.Printf("set SO_MARK %#x on transparent sockets\n", routes.Config().Mark)
	if err := routes.Check(); err != nil {
		log.Print(err) // something deleted a rule or route
	}
}

// List what a killed agent left behind, as `realip-agent doctor` does.
func ExampleLeftovers() {
	left, err := tproute.Leftovers()
	if err != nil {
		log.Fatal(err)
	}
	for _, entry := range left {
		fmt.Println("left over:", entry)
	}
}
