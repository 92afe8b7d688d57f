package loadkit_test

import (
	"fmt"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
)

func ExampleResult() {
	r := loadkit.Result{Relay: "haproxy", Rep: "2", Metric: "conn_per_s", Value: 12000, Unit: "conn/s",
		CPU: &loadkit.CPUUsage{SelfCores: 0.9, Relay: true, RelayCores: 0.5, RelayCPU: 1500 * time.Millisecond},
		Ops: 36000, Op: "conn", Extra: []string{"errors=0"}}
	fmt.Println(r)
	// Output:
	// result relay=haproxy rep=2 metric=conn_per_s value=12000.000 unit=conn/s gen_cores=0.90 relay_cores=0.50 relay_us_per_op=41.667 op=conn errors=0
}

func ExampleParseResult() {
	relay, metric, s, ok := loadkit.ParseResult("result relay=nginx rep=3 metric=udp_rt_per_s value=40000.000 unit=req/s gen_cores=1.00 relay_cores=0.50 relay_us_per_op=12.500 op=req lost=7")
	fmt.Println(ok, relay, metric, s.Rep, s.Value, s.USPerOp, s.Op, s.Notes)
	// Output:
	// true nginx udp_rt_per_s 3 40000 12.5 req [lost=7]
}

func ExampleBestBaseline() {
	byRelay := map[string][]loadkit.Sample{
		"haproxy": {{Rep: "1", Value: 100}, {Rep: "2", Value: 120}, {Rep: "3", Value: 110}},
		"nginx":   {{Rep: "1", Value: 90}, {Rep: "2", Value: 130}},
	}
	best, med := loadkit.BestBaseline(byRelay, []string{"haproxy", "nginx"}, false)
	fmt.Println(best, med, loadkit.Median([]float64{90, 130}))
	// Output:
	// haproxy 110 110
}
