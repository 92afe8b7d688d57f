//go:build linux

package edge

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/realip/realip/edge/toasend"
)

type fakeTOA struct {
	st       toasend.Stats
	attached bool
	err      error
}

func (f fakeTOA) stats() (toasend.Stats, bool, error) { return f.st, f.attached, f.err }

// TestTOACollector checks how the sender's state reaches /metrics: no
// series without a toa rule, the up gauge alone when the counters cannot
// be read, every counter under its name otherwise.
func TestTOACollector(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  fakeTOA
		want string
	}{
		{name: "no toa rule", src: fakeTOA{}, want: ""},
		{name: "closed", src: fakeTOA{attached: true, err: toasend.ErrClosed}, want: `
# HELP realip_edge_toa_writer_up 1 when the edge's TOA writer counters could be read, else 0.
# TYPE realip_edge_toa_writer_up gauge
realip_edge_toa_writer_up 0
`},
		{name: "attached", src: fakeTOA{attached: true, st: toasend.Stats{Armed: 5, SYN: 6, ACK: 5, Data: 4, NoSpace: 1, Failed: 2}}, want: `
# HELP realip_edge_toa_errors_total Errors writing the TOA option or arming a socket.
# TYPE realip_edge_toa_errors_total counter
realip_edge_toa_errors_total 2
# HELP realip_edge_toa_no_space_total Segments that had no room left for the TOA option.
# TYPE realip_edge_toa_no_space_total counter
realip_edge_toa_no_space_total 1
# HELP realip_edge_toa_options_written_total TOA options written, by segment (syn, ack, data: the first data segment).
# TYPE realip_edge_toa_options_written_total counter
realip_edge_toa_options_written_total{segment="ack"} 5
realip_edge_toa_options_written_total{segment="data"} 4
realip_edge_toa_options_written_total{segment="syn"} 6
# HELP realip_edge_toa_sockets_armed_total Edge sockets that connected with a client address to send as TOA.
# TYPE realip_edge_toa_sockets_armed_total counter
realip_edge_toa_sockets_armed_total 5
# HELP realip_edge_toa_writer_up 1 when the edge's TOA writer counters could be read, else 0.
# TYPE realip_edge_toa_writer_up gauge
realip_edge_toa_writer_up 1
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTOACollector(tc.src.stats)
			if tc.want == "" {
				if n := testutil.CollectAndCount(c); n != 0 {
					t.Fatalf("%d series, want none", n)
				}
				return
			}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want)); err != nil {
				t.Fatal(err)
			}
		})
	}
	problems, err := testutil.CollectAndLint(newTOACollector(fakeTOA{attached: true}.stats))
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}
