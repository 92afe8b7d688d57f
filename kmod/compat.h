/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * compat.h - every difference between the kernels toa.ko builds for lives
 * here (the wireguard-linux-compat pattern): the rest of the module is
 * written against one API.
 *
 * Supported: 5.10 and later (Debian bullseye's 5.10, bookworm's 6.1 and
 * 6.12, sid's 7.x). The module hooks functions with kprobes by symbol name
 * and reads their arguments from pt_regs, so it does not depend on their
 * prototypes: tcp_v4_syn_recv_sock gained a seventh argument in 7.x (and in
 * stable backports such as Debian's 6.1.0-56), which changes nothing here
 * because only the first three arguments and the return value are read.
 */
#ifndef REALIP_TOA_COMPAT_H
#define REALIP_TOA_COMPAT_H

#include <linux/version.h>
#include <linux/kprobes.h>
#include <linux/ptrace.h>
#include <linux/rcupdate.h>
#include <linux/rcupdate_wait.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#error "toa.ko needs Linux 5.10 or later"
#endif

/* The n-th (0-based) integer argument of the probed function. */
static inline unsigned long toa_arg(struct pt_regs *regs, unsigned int n)
{
	return regs_get_kernel_argument(regs, n);
}

/*
 * toa_sync_tasks waits until no task can be running, or about to run, code
 * that does not sleep and that it reached through a function pointer read
 * before the call (the module's getname, on unload; where it calls the
 * kernel's, which may sleep, SRCU covers it: toa_ops.c). With preemption
 * that is what tasks RCU is for (a task preempted between loading the
 * pointer and the call holds it up); without preemption an ordinary grace
 * period is enough. Debian's amd64 kernels from 6.1 on are preemptible
 * (PREEMPT_DYNAMIC); 5.10 and the arm64 6.1 and 6.12 are not.
 */
#if defined(CONFIG_TASKS_RCU)
#define toa_sync_tasks() synchronize_rcu_tasks()
#elif defined(CONFIG_PREEMPTION)
#error "toa.ko needs CONFIG_TASKS_RCU on a preemptible kernel"
#else
#define toa_sync_tasks() synchronize_rcu()
#endif

/* The handler's view of a kretprobe's per-instance data. */
#define toa_ri_data(ri) ((void *)(ri)->data)

/*
 * proc_ops replaced file_operations for /proc files in 5.6; the module only
 * uses single_open seq files through proc_create_net_single, which exists in
 * every supported kernel, so nothing is needed here.
 */

/*
 * Generic netlink: genl_small_ops exists since 5.10. From 6.1 a family may
 * set resv_start_op; leaving it at 0 makes every command strictly validated
 * against the family policy, which is what the module wants on every
 * kernel.
 */
#define TOA_HAVE_GENL_SMALL_OPS 1

/* nla_strlcpy was renamed nla_strscpy (with a signed return) in 5.11. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 11, 0)
#define toa_nla_strscpy(dst, nla, size) ((ssize_t)nla_strlcpy(dst, nla, size))
#else
#define toa_nla_strscpy(dst, nla, size) nla_strscpy(dst, nla, size)
#endif

#endif /* REALIP_TOA_COMPAT_H */
