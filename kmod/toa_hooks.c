// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_hooks.c - where the module meets the TCP stack, through kprobes by
 * symbol name only: no read-only kernel memory is written and no symbol is
 * looked up by address.
 *
 *  - tcp_v4_syn_recv_sock / tcp_v6_syn_recv_sock (kretprobes): the child
 *    socket of a completed handshake is the return value; the segment that
 *    completed it (the handshake ACK, also with syncookies) is the second
 *    argument, the request the third. The option is taken from the ACK, or
 *    from the SYN when the listener saved it (TCP_SAVE_SYN).
 *  - inet_getname / inet6_getname (kretprobes): getpeername() and accept()
 *    get the client instead of the edge.
 *  - tcp_v4_destroy_sock (kprobe): every TCP socket, IPv4 or IPv6, passes
 *    here when it is destroyed; its entry is freed.
 */
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <linux/compat.h>
#include <asm/syscall.h>
#include <net/inet_sock.h>
#include <net/request_sock.h>
#include <net/tcp.h>

#include "toa.h"

/* Enough instances for every CPU to be inside a hook a few times over. */
#define TOA_MAXACTIVE_PER_CPU 16

struct syn_recv_data {
	struct sk_buff *skb;
	struct request_sock *req;
};

struct getname_data {
	struct socket *sock;
	struct sockaddr *uaddr;
	int peer;
};

static void addr_from_v4(struct toa_addr *a, __be32 ip, __be16 port)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_INET;
	a->addr.s6_addr16[5] = htons(0xffff);
	a->addr.s6_addr32[3] = ip;
	a->port = port;
}

static void addr_from_v6(struct toa_addr *a, const struct in6_addr *ip, __be16 port)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_INET6;
	a->addr = *ip;
	a->port = port;
}

/* segment_addrs returns the source (proxy) and destination of skb. */
static void segment_addrs(const struct sk_buff *skb, struct toa_addr *src, struct toa_addr *dst)
{
	const struct tcphdr *th = tcp_hdr(skb);

	if (skb->protocol == htons(ETH_P_IP)) {
		addr_from_v4(src, ip_hdr(skb)->saddr, th->source);
		addr_from_v4(dst, ip_hdr(skb)->daddr, th->dest);
	} else {
		addr_from_v6(src, &ipv6_hdr(skb)->saddr, th->source);
		addr_from_v6(dst, &ipv6_hdr(skb)->daddr, th->dest);
	}
}

/*
 * saved_syn_option looks for the option in the SYN the listener saved, if
 * it did (TCP_SAVE_SYN): the saved data is the network and TCP headers.
 */
static int saved_syn_option(const struct request_sock *req, const struct toa_config *cfg,
			    struct toa_addr *client)
{
	const struct saved_syn *syn = req->saved_syn;
	const struct tcphdr *th;
	int len;

	if (!syn || syn->tcp_hdrlen < sizeof(*th))
		return 0;
	th = (const struct tcphdr *)(syn->data + syn->mac_hdrlen + syn->network_hdrlen);
	len = th->doff * 4 - (int)sizeof(*th);
	if (len <= 0 || sizeof(*th) + len > syn->tcp_hdrlen)
		return 0;
	return toa_parse_options((const u8 *)(th + 1), len, cfg, client);
}

/* record handles a completed handshake: child is the new socket. */
static void record(const struct sock *child, struct sk_buff *skb, struct request_sock *req)
{
	const struct toa_config *cfg;
	struct toa_addr client, proxy, local;
	int found;

	segment_addrs(skb, &proxy, &local);
	rcu_read_lock();
	cfg = toa_config_get();
	if (!cfg) {
		rcu_read_unlock();
		return;
	}
	found = toa_parse_skb(skb, cfg, &client);
	if (found == 0 && req) {
		found = saved_syn_option(req, cfg, &client);
		if (found > 0)
			toa_count(TOA_SYN_RECV_SOCK_FROM_SYN);
	}
	if (found > 0 && !toa_config_trusts(cfg, &proxy.addr)) {
		rcu_read_unlock();
		toa_count(TOA_SYN_RECV_SOCK_UNTRUSTED);
		return;
	}
	rcu_read_unlock();
	if (found < 0) {
		toa_count(TOA_SYN_RECV_SOCK_BAD_OPTION);
		return;
	}
	if (found == 0) {
		toa_count(TOA_SYN_RECV_SOCK_NO_TOA);
		/* A socket at this address whose destruction was missed must not lend its client. */
		toa_table_remove(child);
		return;
	}
	if (toa_table_insert(child, &client, &proxy, &local) == 0)
		toa_count(TOA_SYN_RECV_SOCK_TOA);
}

static int syn_recv_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);

	d->skb = (struct sk_buff *)toa_arg(regs, 1);
	d->req = (struct request_sock *)toa_arg(regs, 2);
	return 0;
}

static int syn_recv4_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);
	struct sock *child = (struct sock *)regs_return_value(regs);

	if (child && d->skb)
		record(child, d->skb, d->req);
	return 0;
}

static int syn_recv6_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);
	struct sock *child = (struct sock *)regs_return_value(regs);

	/* An IPv4 segment on an IPv6 listener went through the IPv4 hook. */
	if (child && d->skb && d->skb->protocol != htons(ETH_P_IP))
		record(child, d->skb, d->req);
	return 0;
}

/*
 * user_room returns the size of the caller's address buffer when the
 * running system call is getpeername(), accept() or accept4(), else 0.
 */
static int user_room(void)
{
	struct pt_regs *regs = task_pt_regs(current);
	unsigned long args[6];
	int nr, len = 0;

	if (!regs || (current->flags & PF_KTHREAD) || in_compat_syscall())
		return 0;
	nr = syscall_get_nr(current, regs);
	switch (nr) {
	case __NR_getpeername:
#ifdef __NR_accept
	case __NR_accept:
#endif
	case __NR_accept4:
		break;
	default:
		return 0;
	}
	syscall_get_arguments(current, regs, args);
	if (!args[1] || !args[2])
		return 0;
	if (copy_from_user_nofault(&len, (int __user *)args[2], sizeof(len)))
		return 0;
	return len;
}

static int getname_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct getname_data *d = toa_ri_data(ri);
	struct sock *sk;

	d->sock = (struct socket *)toa_arg(regs, 0);
	d->uaddr = (struct sockaddr *)toa_arg(regs, 1);
	d->peer = (int)toa_arg(regs, 2);
	/*
	 * Decide here whether the call can need a rewrite: returning non-zero
	 * skips the return half of the probe, so getsockname(), other
	 * protocols and TCP sockets without an entry (nearly every call on a
	 * busy machine) cost one lookup and no return trampoline, and use no
	 * kretprobe instance (a call that finds none free is missed).
	 */
	sk = d->sock ? d->sock->sk : NULL;
	if (!d->peer || !d->uaddr || !sk || sk->sk_protocol != IPPROTO_TCP) {
		toa_count(TOA_GETNAME_TOA_BYPASS);
		return 1;
	}
	if (!toa_table_has(sk)) {
		toa_count(TOA_GETNAME_TOA_EMPTY);
		return 1;
	}
	return 0;
}

static int put_sin(struct sockaddr *uaddr, const struct toa_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)uaddr;

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = a->port;
	sin->sin_addr.s_addr = a->addr.s6_addr32[3];
	return sizeof(*sin);
}

static int put_sin6(struct sockaddr *uaddr, const struct toa_addr *a)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)uaddr;

	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = a->port;
	sin6->sin6_addr = a->addr; /* IPv4 clients are already mapped */
	return sizeof(*sin6);
}

/*
 * entry_matches checks that the entry still describes sk: its peer must be
 * the proxy the option came from. It guards against an entry left by a
 * socket whose destruction was missed (a reset racing the handshake) being
 * read for a new socket at the same address.
 */
static bool entry_matches(const struct sock *sk, const struct toa_entry *e)
{
	if (sk->sk_dport != e->proxy.port)
		return false;
	if (e->proxy.family == AF_INET)
		return sk->sk_daddr == e->proxy.addr.s6_addr32[3];
#if IS_ENABLED(CONFIG_IPV6)
	return ipv6_addr_equal(&sk->sk_v6_daddr, &e->proxy.addr);
#else
	return false;
#endif
}

static int getname_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct getname_data *d = toa_ri_data(ri);
	long ret = (long)regs_return_value(regs);
	struct toa_entry e;
	struct sock *sk;

	if (ret < 0)
		return 0;
	sk = d->sock->sk; /* getname_entry checked sock, sk, peer and uaddr */
	if (!sk || !toa_table_lookup(sk, &e) || !entry_matches(sk, &e)) {
		toa_count(TOA_GETNAME_TOA_EMPTY);
		return 0;
	}
	if (d->uaddr->sa_family == AF_INET6) {
		ret = put_sin6(d->uaddr, &e.client);
	} else if (e.client.family == AF_INET) {
		ret = put_sin(d->uaddr, &e.client);
	} else if (user_room() >= (int)sizeof(struct sockaddr_in6)) {
		/* An IPv6 client on an IPv4 socket, and room for it (NAT64). */
		ret = put_sin6(d->uaddr, &e.client);
	} else {
		toa_count(TOA_GETNAME_TOA_MISMATCH);
		return 0;
	}
	regs_set_return_value(regs, ret);
	toa_count(TOA_GETNAME_TOA_OK);
	return 0;
}

static int destroy_pre(struct kprobe *kp, struct pt_regs *regs)
{
	toa_table_remove((const struct sock *)toa_arg(regs, 0));
	return 0;
}

static struct kretprobe syn_recv4_probe = {
	.kp.symbol_name = "tcp_v4_syn_recv_sock",
	.entry_handler = syn_recv_entry,
	.handler = syn_recv4_ret,
	.data_size = sizeof(struct syn_recv_data),
};

static struct kretprobe syn_recv6_probe = {
	.kp.symbol_name = "tcp_v6_syn_recv_sock",
	.entry_handler = syn_recv_entry,
	.handler = syn_recv6_ret,
	.data_size = sizeof(struct syn_recv_data),
};

static struct kretprobe getname4_probe = {
	.kp.symbol_name = "inet_getname",
	.entry_handler = getname_entry,
	.handler = getname_ret,
	.data_size = sizeof(struct getname_data),
};

static struct kretprobe getname6_probe = {
	.kp.symbol_name = "inet6_getname",
	.entry_handler = getname_entry,
	.handler = getname_ret,
	.data_size = sizeof(struct getname_data),
};

static struct kretprobe *toa_kretprobes[] = {
	&syn_recv4_probe, &syn_recv6_probe, &getname4_probe, &getname6_probe,
};

static struct kprobe destroy_probe = {
	.symbol_name = "tcp_v4_destroy_sock",
	.pre_handler = destroy_pre,
};

/*
 * The destroy hook goes in first and comes out last, so no entry can be
 * created for a socket whose destruction would be missed.
 */
int toa_hooks_init(void)
{
	unsigned int i;
	int err;

	err = register_kprobe(&destroy_probe);
	if (err) {
		pr_err("toa: kprobe on %s: %d\n", destroy_probe.symbol_name, err);
		return err;
	}
	for (i = 0; i < ARRAY_SIZE(toa_kretprobes); i++)
		toa_kretprobes[i]->maxactive = TOA_MAXACTIVE_PER_CPU * num_possible_cpus();
	err = register_kretprobes(toa_kretprobes, ARRAY_SIZE(toa_kretprobes));
	if (err) {
		pr_err("toa: kretprobes (tcp_v{4,6}_syn_recv_sock, inet{,6}_getname): %d\n", err);
		unregister_kprobe(&destroy_probe);
		return err;
	}
	return 0;
}

void toa_hooks_exit(void)
{
	unregister_kretprobes(toa_kretprobes, ARRAY_SIZE(toa_kretprobes));
	unregister_kprobe(&destroy_probe);
}

/* toa_hooks_missed is how many hook runs were missed for lack of instances. */
unsigned long toa_hooks_missed(void)
{
	unsigned long n = destroy_probe.nmissed;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_kretprobes); i++)
		n += toa_kretprobes[i]->nmissed + toa_kretprobes[i]->kp.nmissed;
	return n;
}
