// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_hooks.c - where the module meets the TCP stack, through kprobes by
 * symbol name only: no read-only kernel memory is written and no symbol is
 * looked up by address.
 *
 *  - tcp_v4_syn_recv_sock / tcp_v6_syn_recv_sock (kretprobes): the child
 *    socket of a completed handshake is the return value; the segment that
 *    completed it (the handshake ACK, also with syncookies) is the second
 *    argument, the request the third, the listener the first. The option is
 *    taken from the ACK, or from the SYN when the listener saved it
 *    (TCP_SAVE_SYN).
 *  - inet_csk_listen_start, mptcp_listen (kretprobes): a TCP or MPTCP
 *    listener gets the module's getname once listen() succeeded (see
 *    toa_ops.c); so does a TCP one that predates the module, at its first
 *    TOA handshake. getpeername() and accept() on the sockets it accepts
 *    then get the client instead of the edge (toa_getname.c).
 *  - mptcp_stream_accept (kretprobe): a socket accepted on an MPTCP
 *    listener that fell back to TCP gets the module's getname again (the
 *    MPTCP layer gives it the kernel's TCP table); an MPTCP listener that
 *    predates the module is taken over.
 *  - tcp_set_ulp (kretprobe): a socket gets the kernel's getname back
 *    before kTLS or espintcp copies its ops, and again the module's when
 *    the upper layer was refused (toa_ops.c).
 *  - tcp_v4_destroy_sock (kprobe): every TCP socket, IPv4 or IPv6, passes
 *    here when it is destroyed; its entry is freed.
 */
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <net/inet_sock.h>
#include <net/request_sock.h>
#include <net/tcp.h>

#include "toa.h"

/* Enough instances for every CPU to be inside a hook a few times over. */
#define TOA_MAXACTIVE_PER_CPU 16

struct accept_data {
	struct socket *sock;
	struct socket *newsock;
};

struct syn_recv_data {
	const struct sock *listener;
	struct sk_buff *skb;
	struct request_sock *req;
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

/*
 * record handles a completed handshake on listener: child is the new
 * socket.
 */
static void record(const struct sock *listener, const struct sock *child, struct sk_buff *skb,
		   struct request_sock *req)
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
	/* Before the child is queued for accept(). */
	if (listener)
		toa_ops_adopt_listener(listener);
}

static int syn_recv_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);

	d->listener = (const struct sock *)toa_arg(regs, 0);
	d->skb = (struct sk_buff *)toa_arg(regs, 1);
	d->req = (struct request_sock *)toa_arg(regs, 2);
	return 0;
}

static int syn_recv4_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);
	struct sock *child = (struct sock *)regs_return_value(regs);

	if (child && d->skb)
		record(d->listener, child, d->skb, d->req);
	return 0;
}

static int syn_recv6_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct syn_recv_data *d = toa_ri_data(ri);
	struct sock *child = (struct sock *)regs_return_value(regs);

	/* An IPv4 segment on an IPv6 listener went through the IPv4 hook. */
	if (child && d->skb && d->skb->protocol != htons(ETH_P_IP))
		record(d->listener, child, d->skb, d->req);
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

static struct kretprobe *toa_kretprobes[] = {
	&syn_recv4_probe, &syn_recv6_probe,
};

/* listen_entry keeps the first argument: the sock (inet_csk_listen_start) or socket (mptcp_listen). */
static int listen_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	*(void **)toa_ri_data(ri) = (void *)toa_arg(regs, 0);
	return 0;
}

static int tcp_listen_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct sock *sk = *(struct sock **)toa_ri_data(ri);

	if ((long)regs_return_value(regs) == 0 && sk)
		toa_ops_listening(READ_ONCE(sk->sk_socket));
	return 0;
}

static int mptcp_listen_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	if ((long)regs_return_value(regs) == 0)
		toa_ops_listening(*(struct socket **)toa_ri_data(ri));
	return 0;
}

static int mptcp_accept_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct accept_data *d = toa_ri_data(ri);

	d->sock = (struct socket *)toa_arg(regs, 0);
	d->newsock = (struct socket *)toa_arg(regs, 1);
	return 0;
}

static int mptcp_accept_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct accept_data *d = toa_ri_data(ri);

	if ((long)regs_return_value(regs) == 0)
		toa_ops_mptcp_accepted(d->sock, d->newsock);
	return 0;
}

struct ulp_data {
	struct sock *sk;
	int restored; /* toa_ops_before_ulp's answer */
};

/*
 * ulp_entry: tcp_set_ulp(sk, name) is about to attach an upper-layer
 * protocol; the ones that copy the socket's ops (tls, espintcp) get the
 * kernel's table. Any other name skips the return half.
 */
static int ulp_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct ulp_data *d = toa_ri_data(ri);
	const char *name = (const char *)toa_arg(regs, 1);

	if (!name || (strncmp(name, "tls", TCP_ULP_NAME_MAX) && strncmp(name, "espintcp", TCP_ULP_NAME_MAX)))
		return 1;
	d->sk = (struct sock *)toa_arg(regs, 0);
	d->restored = toa_ops_before_ulp(d->sk);
	return d->restored < 0;
}

/* ulp_ret takes a socket over again when the upper layer was refused. */
static int ulp_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct ulp_data *d = toa_ri_data(ri);

	if ((long)regs_return_value(regs) != 0)
		toa_ops_ulp_failed(d->sk, d->restored);
	return 0;
}

static struct kretprobe tcp_listen_probe = {
	.kp.symbol_name = "inet_csk_listen_start",
	.entry_handler = listen_entry,
	.handler = tcp_listen_ret,
	.data_size = sizeof(void *),
};

static struct kretprobe mptcp_listen_probe = {
	.kp.symbol_name = "mptcp_listen",
	.entry_handler = listen_entry,
	.handler = mptcp_listen_ret,
	.data_size = sizeof(void *),
};

static struct kretprobe mptcp_accept_probe = {
	.kp.symbol_name = "mptcp_stream_accept",
	.entry_handler = mptcp_accept_entry,
	.handler = mptcp_accept_ret,
	.data_size = sizeof(struct accept_data),
};

static struct kretprobe *mptcp_kretprobes[] = {
	&mptcp_listen_probe, &mptcp_accept_probe,
};

static struct kretprobe ulp_probe = {
	.kp.symbol_name = "tcp_set_ulp",
	.entry_handler = ulp_entry,
	.handler = ulp_ret,
	.data_size = sizeof(struct ulp_data),
};

static struct kprobe destroy_probe = {
	.symbol_name = "tcp_v4_destroy_sock",
	.pre_handler = destroy_pre,
};

static bool mptcp_hooked;

/*
 * mptcp_hooks_init hooks MPTCP listeners where the kernel has them; where
 * it cannot, MPTCP sockets are left alone (and say so), TCP ones are still
 * served. Before anything can give a socket an MPTCP copy.
 */
static void mptcp_hooks_init(void)
{
	int err;

	if (!toa_ops_have_mptcp())
		return;
	/* A thread blocked in accept() holds an instance until it returns. */
	mptcp_accept_probe.maxactive = 1024 + TOA_MAXACTIVE_PER_CPU * 4 * num_possible_cpus();
	mptcp_listen_probe.maxactive = TOA_MAXACTIVE_PER_CPU * num_possible_cpus();
	err = register_kretprobes(mptcp_kretprobes, ARRAY_SIZE(mptcp_kretprobes));
	if (err) {
		pr_warn("kretprobes on mptcp_listen, mptcp_stream_accept: %d; MPTCP sockets (Go's default listeners) will report the edge\n",
			err);
		toa_ops_drop_mptcp();
		return;
	}
	mptcp_hooked = true;
}

static void mptcp_hooks_exit(void)
{
	if (mptcp_hooked)
		unregister_kretprobes(mptcp_kretprobes, ARRAY_SIZE(mptcp_kretprobes));
	mptcp_hooked = false;
}

/*
 * The destroy hook goes in first and comes out last, so no entry can be
 * created for a socket whose destruction would be missed; the ULP hook
 * goes in before anything can take a socket over and comes out after the
 * module's getname is gone from every table.
 */
int toa_hooks_init(void)
{
	bool shared = false; /* sockets may hold the module's ops copies */
	unsigned int i;
	int err;

	err = toa_ops_init();
	if (err)
		return err;
	err = register_kprobe(&destroy_probe);
	if (err) {
		pr_err("kprobe on %s: %d\n", destroy_probe.symbol_name, err);
		goto out_ops;
	}
	ulp_probe.maxactive = TOA_MAXACTIVE_PER_CPU * num_possible_cpus();
	err = register_kretprobe(&ulp_probe);
	if (err) {
		pr_err("kretprobe on %s: %d\n", ulp_probe.kp.symbol_name, err);
		goto out_destroy;
	}
	/* From here on sockets may hold the module's tables. */
	shared = true;
	mptcp_hooks_init();
	for (i = 0; i < ARRAY_SIZE(toa_kretprobes); i++)
		toa_kretprobes[i]->maxactive = TOA_MAXACTIVE_PER_CPU * num_possible_cpus();
	err = register_kretprobes(toa_kretprobes, ARRAY_SIZE(toa_kretprobes));
	if (err) {
		pr_err("kretprobes on tcp_v{4,6}_syn_recv_sock: %d\n", err);
		goto out_mptcp;
	}
	tcp_listen_probe.maxactive = TOA_MAXACTIVE_PER_CPU * num_possible_cpus();
	err = register_kretprobe(&tcp_listen_probe);
	if (err) {
		pr_err("kretprobe on %s: %d\n", tcp_listen_probe.kp.symbol_name, err);
		goto out_syn_recv;
	}
	return 0;

out_syn_recv:
	unregister_kretprobes(toa_kretprobes, ARRAY_SIZE(toa_kretprobes));
out_mptcp:
	mptcp_hooks_exit();
	toa_ops_exit(); /* the kernel's getname back in every copy */
	unregister_kretprobe(&ulp_probe);
out_destroy:
	unregister_kprobe(&destroy_probe);
out_ops:
	if (!shared) /* else the copies outlive the module, as at unload */
		toa_ops_free();
	return err;
}

void toa_hooks_exit(void)
{
	unregister_kretprobe(&tcp_listen_probe);
	unregister_kretprobes(toa_kretprobes, ARRAY_SIZE(toa_kretprobes));
	mptcp_hooks_exit();
	toa_ops_exit();
	unregister_kretprobe(&ulp_probe);
	unregister_kprobe(&destroy_probe);
}

/* toa_hooks_missed is how many hook runs were missed for lack of instances. */
unsigned long toa_hooks_missed(void)
{
	struct kretprobe *all[] = {
		&syn_recv4_probe, &syn_recv6_probe, &tcp_listen_probe, &mptcp_listen_probe,
		&mptcp_accept_probe, &ulp_probe,
	};
	unsigned long n = destroy_probe.nmissed;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(all); i++)
		n += all[i]->nmissed + all[i]->kp.nmissed;
	return n;
}
