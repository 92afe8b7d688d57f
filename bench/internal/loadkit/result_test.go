package loadkit

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResultString(t *testing.T) {
	relay := &CPUUsage{SelfCores: 0.456, Relay: true, RelayCores: 1.234, RelayCPU: 1500 * time.Millisecond}
	for _, tc := range []struct {
		name string
		r    Result
		want string
	}{
		{"no CPU", Result{Relay: "realip-edge", Rep: "1", Metric: "conn_p50_us", Value: 251.5, Unit: "us"},
			"result relay=realip-edge rep=1 metric=conn_p50_us value=251.500 unit=us"},
		{"this process only", Result{Relay: "direct", Rep: "2", Metric: "tcp_MBps", Value: 3000, Unit: "MB/s",
			CPU: &CPUUsage{SelfCores: 0.8}, Ops: 9000, Op: "MB", Extra: []string{"errors=0"}},
			"result relay=direct rep=2 metric=tcp_MBps value=3000.000 unit=MB/s gen_cores=0.80 errors=0"},
		{"relay without work", Result{Relay: "nginx", Rep: "3", Metric: "conn_per_s", Value: 0, Unit: "conn/s",
			CPU: relay, Op: "conn", Extra: []string{"errors=5"}},
			"result relay=nginx rep=3 metric=conn_per_s value=0.000 unit=conn/s gen_cores=0.46 relay_cores=1.23 errors=5"},
		{"relay", Result{Relay: "haproxy", Rep: "3", Metric: "udp_rt_per_s", Value: 12345.6789, Unit: "req/s",
			CPU: relay, Ops: 1000, Op: "req", Extra: []string{"lost=2", "bad=0"}},
			"result relay=haproxy rep=3 metric=udp_rt_per_s value=12345.679 unit=req/s gen_cores=0.46 relay_cores=1.23 relay_us_per_op=1500.000 op=req lost=2 bad=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.String(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestParseResult(t *testing.T) {
	for _, tc := range []struct {
		line   string
		ok     bool
		relay  string
		metric string
		want   Sample
	}{
		{"result relay=realip rep=2 metric=udp_rt_per_s value=123.5 unit=req/s gen_cores=0.30 relay_cores=0.50 relay_us_per_op=40.1 op=req lost=3 bad=0",
			true, "realip", "udp_rt_per_s", Sample{Rep: "2", Value: 123.5, USPerOp: 40.1, Op: "req", RelayCores: 0.5, GenCores: 0.3, HasCPU: true, Notes: []string{"lost=3"}}},
		{"result relay=direct rep=1 metric=tcp_MBps value=9 unit=MB/s gen_cores=0.1 errors=0",
			true, "direct", "tcp_MBps", Sample{Rep: "1", Value: 9, GenCores: 0.1}},
		{"result relay=x rep=1 metric=conn_per_s value=5 unit=conn/s bad=2 errors=1 lost=0 clients=7",
			true, "x", "conn_per_s", Sample{Rep: "1", Value: 5, Notes: []string{"errors=1", "bad=2"}}},
		{"  result   relay=x  metric=m value=-1e3 junk", true, "x", "m", Sample{Value: -1000}},
		{"result relay=x rep=1 metric=tcp_MBps value=nan? unit=MB/s", false, "", "", Sample{}},
		{"result relay=x rep=1 metric=tcp_MBps unit=MB/s", false, "", "", Sample{}},
		{"results relay=x value=1", false, "", "", Sample{}},
		{"check tcp 198.51.100.2:9001 header none: the server saw 198.51.100.1:1", false, "", "", Sample{}},
		{"", false, "", "", Sample{}},
	} {
		relay, metric, s, ok := ParseResult(tc.line)
		if ok != tc.ok || relay != tc.relay || metric != tc.metric || !sameSample(s, tc.want) {
			t.Errorf("ParseResult(%q) = %q %q %+v %v, want %q %q %+v %v", tc.line, relay, metric, s, ok, tc.relay, tc.metric, tc.want, tc.ok)
		}
	}
}

func sameSample(a, b Sample) bool {
	return a.Rep == b.Rep && a.Value == b.Value && a.USPerOp == b.USPerOp && a.Op == b.Op &&
		a.RelayCores == b.RelayCores && a.GenCores == b.GenCores && a.HasCPU == b.HasCPU && slices.Equal(a.Notes, b.Notes)
}

// TestResultRoundTrip: what a load prints, a report reads back.
func TestResultRoundTrip(t *testing.T) {
	r := Result{Relay: "realip", Rep: "4", Metric: "conn_per_s", Value: 7000.25, Unit: "conn/s",
		CPU: &CPUUsage{SelfCores: 0.9, Relay: true, RelayCores: 0.7, RelayCPU: 350 * time.Millisecond}, Ops: 14000, Op: "conn",
		Extra: []string{"errors=2", "bad=0", "clients=14002"}}
	relay, metric, s, ok := ParseResult(r.String())
	want := Sample{Rep: "4", Value: 7000.25, USPerOp: 25, Op: "conn", RelayCores: 0.7, GenCores: 0.9, HasCPU: true, Notes: []string{"errors=2"}}
	if !ok || relay != r.Relay || metric != r.Metric || !sameSample(s, want) {
		t.Errorf("%s read back as %q %q %+v %v", r, relay, metric, s, ok)
	}
}

func TestReadResults(t *testing.T) {
	in := strings.Join([]string{
		"== round 1/2",
		"result relay=b rep=1 metric=tcp_MBps value=2 unit=MB/s",
		"result relay=a rep=1 metric=tcp_MBps value=1 unit=MB/s",
		"edgeload tput: dial tcp 127.0.0.1:1: connection refused",
		"result relay=a rep=1 metric=udp_rt_per_s value=10 unit=req/s",
		"result relay=c rep=1 metric=udp_rt_per_s value=bad unit=req/s",
		"result relay=b rep=2 metric=tcp_MBps value=3 unit=MB/s",
	}, "\n")
	check := func(t *testing.T, r *Results) {
		t.Helper()
		if !slices.Equal(r.Relays, []string{"b", "a"}) {
			t.Errorf("relays %q, want b a (first appearance; c had no value)", r.Relays)
		}
		if got := Values(r.Data["tcp_MBps"]["b"], Sample.ValueOf); !slices.Equal(got, []float64{2, 3}) {
			t.Errorf("tcp_MBps of b: %v", got)
		}
		if len(r.Data) != 2 || len(r.Data["udp_rt_per_s"]) != 1 || len(r.Data["udp_rt_per_s"]["a"]) != 1 {
			t.Errorf("data %+v", r.Data)
		}
	}
	r, err := ReadResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	check(t, r)
	path := filepath.Join(t.TempDir(), "results.txt")
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err = ReadResultsFile(path); err != nil {
		t.Fatal(err)
	}
	check(t, r)
	if _, err := ReadResultsFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing file read without an error")
	}
}

func FuzzParseResult(f *testing.F) {
	f.Add("result relay=realip rep=2 metric=udp_rt_per_s value=123.5 unit=req/s gen_cores=0.30 relay_cores=0.50 relay_us_per_op=40.1 op=req lost=3 bad=0")
	f.Add("result relay=x value=1 errors=")
	f.Add("result =1 value==2")
	f.Add("check tcp 198.51.100.2:9001")
	f.Fuzz(func(t *testing.T, line string) {
		relay, metric, s, ok := ParseResult(line)
		if !ok {
			if relay != "" || metric != "" || !sameSample(s, Sample{}) {
				t.Errorf("not a result, yet %q %q %+v", relay, metric, s)
			}
			return
		}
		if f := strings.Fields(line); len(f) == 0 || f[0] != "result" {
			t.Errorf("%q taken for a result", line)
		}
		for _, n := range s.Notes {
			k, v, _ := strings.Cut(n, "=")
			if !slices.Contains(noteKeys, k) || v == "" || v == "0" {
				t.Errorf("note %q", n)
			}
		}
	})
}
