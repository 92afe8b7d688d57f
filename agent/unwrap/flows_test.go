//go:build linux

package unwrap

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/ilist"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// flowStep is one operation on a flowTable: op on the flow of client at
// the time at (from the start), and the clients it must hand back (flows
// evicted or expired, comma-separated) or, for lookup and reply, "hit" or
// "miss".
type flowStep struct {
	op     string // insert, lookup, reply, expire, remove, drain
	client string
	at     time.Duration
	want   string
}

// flowTableCase is a sequence of steps on a table of max flows and the
// order of the flows it leaves, from most to least recently active.
type flowTableCase struct {
	name  string
	max   int
	steps []flowStep
	order string
}

func TestUDPFlowTable(t *testing.T) {
	const idle = time.Second
	for _, tc := range flowTableCases() {
		t.Run(tc.name, func(t *testing.T) {
			ft := newFlowTable(tc.max)
			flows := map[string]*udpFlow{}
			start := time.Now()
			for i, st := range tc.steps {
				if got := runFlowStep(ft, flows, st, start.Add(st.at), idle); got != st.want {
					t.Fatalf("step %d %s %s: got %q, want %q", i, st.op, st.client, got, st.want)
				}
			}
			if got := flowOrder(t, ft); got != tc.order {
				t.Errorf("order %q, want %q", got, tc.order)
			}
		})
	}
}

// flowTableCases are the cases of TestUDPFlowTable (idle is a second).
func flowTableCases() []flowTableCase {
	return []flowTableCase{
		{"lookup", 4, []flowStep{
			{"lookup", "a", 0, "miss"},
			{"insert", "a", 0, ""},
			{"lookup", "a", 1, "hit"},
			{"lookup", "b", 1, "miss"},
		}, "a"},
		{"evict least recently active", 3, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 1, ""},
			{"insert", "c", 2, ""},
			{"lookup", "a", 3, "hit"},
			{"insert", "d", 4, "b"},
			{"insert", "e", 5, "c"},
		}, "e,d,a"},
		{"a reply keeps a flow", 2, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 1, ""},
			{"reply", "a", 2, "hit"},
			{"insert", "c", 3, "b"},
			{"reply", "b", 4, "miss"},
		}, "c,a"},
		{"expire", 8, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 400 * time.Millisecond, ""},
			{"insert", "c", 800 * time.Millisecond, ""},
			{"lookup", "a", 900 * time.Millisecond, "hit"},
			{"expire", "", 1500 * time.Millisecond, "b"},
			{"expire", "", 1900 * time.Millisecond, "c,a"},
			{"expire", "", 1900 * time.Millisecond, ""},
		}, ""},
		{"remove once", 4, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 0, ""},
			{"remove", "a", 0, "a"},
			{"remove", "a", 0, ""},
			{"lookup", "a", 0, "miss"},
		}, "b"},
		{"drain", 4, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 0, ""},
			{"insert", "c", 0, ""},
			{"drain", "", 0, "c,b,a"},
			{"reply", "b", 0, "miss"},
		}, ""},
		{"client with a flow", 3, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 1, ""},
			{"insert", "a", 2, "kept a"},
			{"insert", "c", 3, ""},
		}, "c,a,b"},
		{"max one", 1, []flowStep{
			{"insert", "a", 0, ""},
			{"insert", "b", 0, "a"},
			{"insert", "c", 0, "b"},
		}, "c"},
	}
}

// runFlowStep applies st to ft and describes the outcome as flowStep.want.
func runFlowStep(ft *flowTable, flows map[string]*udpFlow, st flowStep, now time.Time, idle time.Duration) string {
	client := flowClient(st.client)
	switch st.op {
	case "insert":
		f := &udpFlow{client: client}
		cur, evicted := ft.insert(f, flowSource(client), now)
		if cur != f { // the client's flow stays, f is not added
			return "kept " + flowNames(cur)
		}
		flows[st.client] = f
		return flowNames(evicted)
	case "lookup":
		if f := ft.lookup(client, flowSource(client), now); f != nil {
			return "hit"
		}
		return "miss"
	case "reply":
		if rt, ok := ft.reply(flows[st.client], now); ok && rt.src.Client == client {
			return "hit"
		}
		return "miss"
	case "expire":
		return flowNames(ft.expire(now, idle, nil)...)
	case "remove":
		if ft.remove(flows[st.client]) {
			return st.client
		}
		return ""
	case "drain":
		return flowNames(ft.drain()...)
	}
	panic("unknown step " + st.op)
}

// flowOrder walks the LRU list both ways, checks that it agrees with the
// map, and returns the clients from the front.
func flowOrder(t *testing.T, ft *flowTable) string {
	t.Helper()
	var fwd, back []*udpFlow
	for f := ft.lru.Front(); f != nil; f = ilist.Next(f) {
		fwd = append(fwd, f)
	}
	for f := ft.lru.Back(); f != nil; f = ilist.Prev(f) {
		back = append([]*udpFlow{f}, back...)
	}
	if flowNames(fwd...) != flowNames(back...) || len(fwd) != ft.len() {
		t.Fatalf("list %q, reversed %q, %d in the map", flowNames(fwd...), flowNames(back...), ft.len())
	}
	for _, f := range fwd {
		if ft.byClient[f.client] != f || f.gone {
			t.Fatalf("flow %s listed but not in the map", f.client)
		}
	}
	return flowNames(fwd...)
}

// flowClient maps a one-letter name to a client address, and back in
// flowNames.
func flowClient(name string) netip.AddrPort {
	if name == "" {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), uint16(name[0]))
}

func flowNames(fs ...*udpFlow) string {
	var names []string
	for _, f := range fs {
		if f != nil {
			names = append(names, string(rune(f.client.Port())))
		}
	}
	return strings.Join(names, ",")
}

func flowSource(client netip.AddrPort) route {
	return route{src: listener.Source{Client: client, Proxy: netip.MustParseAddrPort("192.0.2.1:4000"), Via: wire.SPP}}
}

// TestUDPFlowTableSource: the latest datagram's source is the one replies
// use (the edge may send a client's datagrams from a new address).
func TestUDPFlowTableSource(t *testing.T) {
	ft := newFlowTable(2)
	client := flowClient("a")
	f := &udpFlow{client: client}
	now := time.Now()
	ft.insert(f, flowSource(client), now)
	moved := flowSource(client)
	moved.src.Proxy = netip.MustParseAddrPort("192.0.2.9:4001")
	if ft.lookup(client, moved, now) != f {
		t.Fatal("lookup missed")
	}
	if rt, ok := ft.reply(f, now); !ok || rt != moved {
		t.Errorf("reply route %+v, %v; want %+v", rt, ok, moved)
	}
	// A flow opened meanwhile by another read loop takes the new route too.
	again := flowSource(client)
	again.src.Proxy = netip.MustParseAddrPort("192.0.2.9:4002")
	if cur, _ := ft.insert(&udpFlow{client: client}, again, now); cur != f {
		t.Fatal("a second flow of the client was added")
	}
	if rt, ok := ft.reply(f, now); !ok || rt != again {
		t.Errorf("reply route %+v, %v; want %+v", rt, ok, again)
	}
}
