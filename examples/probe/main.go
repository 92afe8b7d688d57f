// Command probe is a tiny client for trying realip: it sends one line over
// TCP or UDP, prints the local address it used and the first line of the
// answer, so the two can be compared with what the server reports.
//
//	probe -tcp 192.0.2.1:80
//	probe -udp [2001:db8:1::1]:53
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	tcp := flag.String("tcp", "", "TCP address to connect to")
	udp := flag.String("udp", "", "UDP address to send to")
	timeout := flag.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	flag.Parse()
	local, answer, err := probe(*tcp, *udp, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	fmt.Printf("local=%s answer=%s\n", local, answer)
}

func probe(tcpAddr, udpAddr string, timeout time.Duration) (string, string, error) {
	network, addr := "tcp", tcpAddr
	if udpAddr != "" {
		network, addr = "udp", udpAddr
	}
	if addr == "" || tcpAddr != "" && udpAddr != "" {
		return "", "", errors.New("give exactly one of -tcp and -udp")
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello from probe\n")); err != nil {
		return "", "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return "", "", fmt.Errorf("no answer from %s %s: %w", network, addr, err)
	}
	return c.LocalAddr().String(), strings.TrimSpace(line), nil
}
