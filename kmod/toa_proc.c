// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_proc.c - /proc/net/toa_stats: a header line with one column per online
 * CPU, then one row per counter. The first eight rows are the ones existing
 * scripts read, in their order; realip's own rows follow. The file exists in
 * every network namespace (the counters are global), so a server inside a
 * container sees it too.
 */
#include <linux/cpumask.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>

#include "toa.h"

const char *const toa_counter_names[TOA_NR_COUNTERS] = {
	[TOA_SYN_RECV_SOCK_TOA] = "syn_recv_sock_toa",
	[TOA_SYN_RECV_SOCK_NO_TOA] = "syn_recv_sock_no_toa",
	[TOA_GETNAME_TOA_OK] = "getname_toa_ok",
	[TOA_GETNAME_TOA_MISMATCH] = "getname_toa_mismatch",
	[TOA_GETNAME_TOA_BYPASS] = "getname_toa_bypass",
	[TOA_GETNAME_TOA_EMPTY] = "getname_toa_empty",
	[TOA_IP6_ADDRESS_ALLOC] = "ip6_address_alloc",
	[TOA_IP6_ADDRESS_FREE] = "ip6_address_free",
	[TOA_SYN_RECV_SOCK_UNTRUSTED] = "syn_recv_sock_untrusted",
	[TOA_SYN_RECV_SOCK_BAD_OPTION] = "syn_recv_sock_bad_option",
	[TOA_SYN_RECV_SOCK_FROM_SYN] = "syn_recv_sock_from_syn",
	[TOA_ALLOC_FAILED] = "alloc_failed",
	[TOA_PROBE_MISSED] = "probe_missed",
	[TOA_LISTENERS_TAKEN_OVER] = "listeners_taken_over",
};

DEFINE_PER_CPU(struct toa_stats, toa_stats);

u64 toa_counter_sum(enum toa_counter c)
{
	u64 sum = 0;
	int cpu;

	if (c == TOA_PROBE_MISSED)
		return toa_hooks_missed();
	for_each_possible_cpu(cpu)
		sum += per_cpu(toa_stats, cpu).v[c];
	return sum;
}

static int toa_stats_show(struct seq_file *seq, void *v)
{
	int cpu, i;

	seq_puts(seq, "                 ");
	for_each_online_cpu(cpu)
		seq_printf(seq, "\tCPU%d", cpu);
	seq_putc(seq, '\n');
	for (i = 0; i < TOA_NR_COUNTERS; i++) {
		seq_printf(seq, "%-24s", toa_counter_names[i]);
		for_each_online_cpu(cpu) {
			u64 n = per_cpu(toa_stats, cpu).v[i];

			/* Missed probes are kept by the kprobes, not per CPU. */
			if (i == TOA_PROBE_MISSED)
				n = cpu == cpumask_first(cpu_online_mask) ? toa_hooks_missed() : 0;
			seq_printf(seq, "\t%llu", n);
		}
		seq_putc(seq, '\n');
	}
	return 0;
}

static int __net_init toa_proc_net_init(struct net *net)
{
	if (!proc_create_net_single("toa_stats", 0444, net->proc_net, toa_stats_show, NULL))
		return -ENOMEM;
	return 0;
}

static void __net_exit toa_proc_net_exit(struct net *net)
{
	remove_proc_entry("toa_stats", net->proc_net);
}

static struct pernet_operations toa_proc_ops = {
	.init = toa_proc_net_init,
	.exit = toa_proc_net_exit,
};

int toa_proc_init(void)
{
	return register_pernet_subsys(&toa_proc_ops);
}

void toa_proc_exit(void)
{
	unregister_pernet_subsys(&toa_proc_ops);
}
