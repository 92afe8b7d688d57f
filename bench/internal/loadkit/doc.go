// Package loadkit holds what the load generators of the benchmarks share
// (bench/edgeload behind bench/edge.sh, bench/unwrapload behind
// bench/unwrap.sh, and the echo server of bench/udpflood):
//
//   - the subcommand scaffolding of a main package (Main, Command);
//   - the flags every load takes (LoadFlags) and comma-separated lists
//     (SplitList);
//   - the CPU time a run cost the relay's processes, read from
//     /proc/PID/stat, and this process (CPUMeter, ParseStat; Linux only);
//   - the loops of a load: parallel workers until a deadline (Parallel,
//     CPUMeter.Run), a TCP stream (Stream; Throughput over several) and a
//     UDP request/response flow with a window of requests (UDPFlow);
//   - the origin's servers: TCP discard and echo, UDP echo, with the
//     options of either benchmark (Echo, ServeTCP, ServeUDP, WaitForStop);
//   - the result line each load prints and its report reads back (Result,
//     ParseResult, ReadResults), and the statistics of the reports (Median,
//     Summarize, BestBaseline, SameRep). The report tables themselves stay
//     with each generator: their layouts differ.
//
// A result line is one line of space-separated key=value fields after the
// word "result":
//
//	result relay=haproxy rep=2 metric=tcp_MBps value=2100.500 unit=MB/s gen_cores=0.80 relay_cores=0.95 relay_us_per_op=452.310 op=MB errors=0
//
// The benchmark scripts keep these lines in a file and hand it to the
// load generator's report subcommand; the format is shared by both
// generators and must not change under them.
package loadkit
