// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_ops.c - how getpeername() and accept() reach the module: TCP and MPTCP
 * listening sockets are given a copy of their proto_ops whose getname is
 * toa_getname4/6; every socket accept() creates from such a listener
 * inherits the copy (accept() hands the new socket its listener's ops). No
 * kernel memory but a socket's own ops pointer is written, and calls on
 * every other socket on the machine do not pass through the module at all
 * (a kretprobe on inet_getname, which this replaces, cost every
 * getpeername() on the machine a trap and a return trampoline).
 *
 * A listener is taken over when its listen() succeeded (toa_ops_listening)
 * or, for one that was listening before the module was loaded, at its
 * first TOA handshake (toa_ops_adopt_listener) or, for MPTCP, its first
 * accept() (toa_ops_mptcp_accepted). An accept() that was already blocked
 * on such a listener at that moment hands out that one connection with the
 * kernel's getname: the edge's address, as without the module.
 *
 * Unloading cannot find every socket that holds a copy (the accepted ones
 * are not tracked), so the copies are made harmless instead of freed: their
 * getname is set back to the kernel's, which makes them byte for byte the
 * original table, and they are left allocated (up to four tables per load,
 * a few hundred bytes each). A later load of the module takes over sockets
 * that hold such a copy as it does sockets that hold the original.
 *
 * Code that copies a socket's ops into its own table would copy the
 * module's getname and outlive it: the kTLS and espintcp upper-layer
 * protocols do that (tls_build_proto for IPv6). Such a socket gets the
 * kernel's table back before the upper layer sees it (toa_ops_before_ulp);
 * getpeername() on a kTLS socket then reports the edge, which is why
 * servers read the address at accept(), before they enable kTLS.
 */
#include <linux/net.h>
#include <linux/netdevice.h>
#include <linux/kmemleak.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <net/sock.h>
#include <net/inet_connection_sock.h>
#include <net/inet_common.h>
#include <net/ipv6.h>

#include "toa.h"

/* The kernel's original table of one kind of socket and the module's copy. */
struct toa_ops_pair {
	const struct proto_ops *orig;
	struct proto_ops *copy;
};

/*
 * The tables taken over: TCP, and MPTCP, which Go (1.24 on) listens with
 * by default; a connection from a client without MPTCP, such as an edge,
 * falls back to plain TCP and its socket is then given the TCP table by
 * the MPTCP layer, at accept().
 */
static const struct {
	int family;
	int protocol;
	bool required;
} toa_ops_kinds[] = {
	{ AF_INET, IPPROTO_TCP, true },
	{ AF_INET6, IPPROTO_TCP, false },
	{ AF_INET, IPPROTO_MPTCP, false },
	{ AF_INET6, IPPROTO_MPTCP, false },
};

#define TOA_OPS_N ARRAY_SIZE(toa_ops_kinds)

static struct toa_ops_pair toa_ops_pairs[TOA_OPS_N];

/*
 * The kernel's getname may sleep (lock_sock: always from 6.12, with a
 * cgroup BPF getpeername program before), which tasks RCU counts as a
 * quiescent state; a call that passes through to it is therefore also an
 * SRCU reader, which toa_ops_exit waits for. The module's own answer never
 * sleeps and is covered by toa_sync_tasks alone.
 */
DEFINE_STATIC_SRCU(toa_getname_srcu);

static int pass_through(int (*getname)(struct socket *, struct sockaddr *, int),
			struct socket *sock, struct sockaddr *uaddr, int peer)
{
	int idx, ret;

	idx = srcu_read_lock(&toa_getname_srcu);
	ret = getname(sock, uaddr, peer);
	srcu_read_unlock(&toa_getname_srcu, idx);
	return ret;
}

static int toa_getname4(struct socket *sock, struct sockaddr *uaddr, int peer)
{
	int len;

	if (toa_getname_answer(sock, uaddr, peer, &len))
		return len;
	return pass_through(inet_getname, sock, uaddr, peer);
}

#if IS_ENABLED(CONFIG_IPV6)
static int toa_getname6(struct socket *sock, struct sockaddr *uaddr, int peer)
{
	int len;

	if (toa_getname_answer(sock, uaddr, peer, &len))
		return len;
	return pass_through(inet6_getname, sock, uaddr, peer);
}
#endif

/*
 * kernel_stream_ops returns the ops of a new kernel socket: the IPv6 and
 * MPTCP tables are not exported to modules, so they are read off a socket.
 * NULL when the kind is not available (ipv6.disable=1, net.mptcp.enabled=0
 * in the initial namespace, a kernel without MPTCP).
 */
static const struct proto_ops *kernel_stream_ops(int family, int protocol)
{
	const struct proto_ops *ops;
	struct socket *sock;

	if (sock_create_kern(&init_net, family, SOCK_STREAM, protocol, &sock))
		return NULL;
	ops = sock->ops;
	sock_release(sock);
	return ops;
}

/* module_getname is the module's getname for a table whose getname is orig. */
static int (*module_getname(int (*orig)(struct socket *, struct sockaddr *, int)))
	(struct socket *, struct sockaddr *, int)
{
	if (orig == inet_getname)
		return toa_getname4;
#if IS_ENABLED(CONFIG_IPV6)
	if (orig == inet6_getname)
		return toa_getname6;
#endif
	return NULL;
}

static int pair_init(struct toa_ops_pair *p, int family, int protocol, bool required)
{
	const char *name = protocol == IPPROTO_MPTCP ? "MPTCP" : "TCP";
	const char *fam = family == AF_INET ? "IPv4" : "IPv6";

	p->orig = kernel_stream_ops(family, protocol);
	if (!p->orig) {
		if (required)
			pr_err("cannot create a kernel %s/%s socket\n", name, fam);
		return required ? -EAFNOSUPPORT : 0;
	}
	if (!module_getname(p->orig->getname)) {
		/* Not inet_getname: this kernel's sockets of that kind are not ours to answer. */
		pr_warn("%s/%s sockets have their own getname (%ps); their accept() and getpeername() report the edge\n",
			name, fam, p->orig->getname);
		p->orig = NULL;
		return required ? -EOPNOTSUPP : 0;
	}
	p->copy = kmemdup(p->orig, sizeof(*p->orig), GFP_KERNEL);
	if (!p->copy)
		return -ENOMEM;
	kmemleak_not_leak(p->copy); /* outlives the module on purpose (toa_ops_exit) */
	p->copy->getname = module_getname(p->orig->getname);
	return 0;
}

int toa_ops_init(void)
{
	unsigned int i;
	int err = 0;

	for (i = 0; i < TOA_OPS_N && !err; i++)
		err = pair_init(&toa_ops_pairs[i], toa_ops_kinds[i].family, toa_ops_kinds[i].protocol,
				toa_ops_kinds[i].required);
	if (err)
		toa_ops_free();
	return err;
}

/* toa_ops_have_mptcp reports whether MPTCP sockets are taken over. */
bool toa_ops_have_mptcp(void)
{
	unsigned int i;

	for (i = 0; i < TOA_OPS_N; i++)
		if (toa_ops_kinds[i].protocol == IPPROTO_MPTCP && toa_ops_pairs[i].copy)
			return true;
	return false;
}

/* toa_ops_free frees the copies; only while no socket can hold one. */
void toa_ops_free(void)
{
	unsigned int i;

	for (i = 0; i < TOA_OPS_N; i++) {
		kfree(toa_ops_pairs[i].copy);
		toa_ops_pairs[i].copy = NULL;
	}
}

/*
 * toa_ops_exit makes every copy the kernel's table again and waits until no
 * task can still be running the module's getname; the copies stay
 * allocated, since sockets keep pointing at them. The waits, in order:
 * tasks that read the module's getname before the store are running it
 * or inside pass_through's SRCU section (nothing before that section
 * sleeps); then those sections end; then the few instructions after them.
 */
void toa_ops_exit(void)
{
	unsigned int i;

	for (i = 0; i < TOA_OPS_N; i++) {
		struct toa_ops_pair *p = &toa_ops_pairs[i];

		if (p->copy)
			WRITE_ONCE(p->copy->getname, p->orig->getname);
	}
	toa_sync_tasks();
	synchronize_srcu(&toa_getname_srcu);
	toa_sync_tasks();
}

static bool is_copy(const struct proto_ops *ops)
{
	unsigned int i;

	for (i = 0; i < TOA_OPS_N; i++)
		if (ops && ops == toa_ops_pairs[i].copy)
			return true;
	return false;
}

/*
 * adopt gives sock the module's copy of its ops if it holds one of the
 * kernel's tables or a copy left by an earlier load of the module (the same
 * bytes). It returns 1 when it did, 0 when sock already had the copy, -1
 * when sock is not a kind the module takes over.
 */
static int adopt(struct socket *sock)
{
	const struct proto_ops *ops = READ_ONCE(sock->ops);
	unsigned int i;

	if (!ops)
		return -1;
	for (i = 0; i < TOA_OPS_N; i++) {
		struct toa_ops_pair *p = &toa_ops_pairs[i];

		if (!p->copy)
			continue;
		if (ops == p->copy)
			return 0;
		if (ops != p->orig && (ops->family != p->orig->family ||
				       memcmp(ops, p->orig, sizeof(*ops))))
			continue;
		return cmpxchg(&sock->ops, ops, (const struct proto_ops *)p->copy) == ops ? 1 : -1;
	}
	return -1;
}

/*
 * adopt_listener takes over a listening socket: not one of the kernel's own
 * (nfsd, dlm, ...: they identify peers by address, and were not asked
 * about TOA), nor one with an upper-layer protocol.
 */
static void adopt_listener(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (!sk || sk->sk_kern_sock)
		return;
	if (sk->sk_protocol == IPPROTO_TCP && inet_csk(sk)->icsk_ulp_ops)
		return;
	if (adopt(sock) > 0)
		toa_count(TOA_LISTENERS_TAKEN_OVER);
}

/*
 * toa_ops_adopt_listener takes over the socket of listener, a TCP listening
 * sock on which a handshake just completed (softirq, or the socket's owner
 * processing its backlog). close() detaches the socket under
 * sk_callback_lock; with bottom halves off this is also an RCU reader, and
 * sockets are freed only after a grace period.
 */
void toa_ops_adopt_listener(const struct sock *listener)
{
	struct sock *sk = (struct sock *)listener;
	struct socket *sock;

	sock = READ_ONCE(sk->sk_socket);
	if (!sock || is_copy(READ_ONCE(sock->ops)))
		return;
	read_lock_bh(&sk->sk_callback_lock);
	sock = READ_ONCE(sk->sk_socket);
	if (sock)
		adopt_listener(sock);
	read_unlock_bh(&sk->sk_callback_lock);
}

/*
 * toa_ops_listening takes over sock, whose listen() just succeeded (under
 * its socket lock, which an upper-layer protocol's setup also takes).
 */
void toa_ops_listening(struct socket *sock)
{
	if (sock)
		adopt_listener(sock);
}

/*
 * toa_ops_mptcp_accepted handles an accept() on the MPTCP listener sock
 * that returned newsock: a listener older than the module is taken over
 * (from its next accept() on), and newsock, which the MPTCP layer gave the
 * kernel's TCP table if the client fell back to TCP, gets the copy.
 */
void toa_ops_mptcp_accepted(struct socket *sock, struct socket *newsock)
{
	if (sock)
		adopt_listener(sock);
	if (newsock)
		adopt(newsock);
}

/*
 * toa_ops_before_ulp gives sk's socket the kernel's table back before an
 * upper-layer protocol that copies it (kTLS, espintcp) is attached, so it
 * never builds its own table from the module's copy. It returns the index
 * of the table given back, or -1.
 */
int toa_ops_before_ulp(struct sock *sk)
{
	struct socket *sock = sk ? READ_ONCE(sk->sk_socket) : NULL;
	int i;

	if (!sock)
		return -1;
	for (i = 0; i < (int)TOA_OPS_N; i++) {
		struct toa_ops_pair *p = &toa_ops_pairs[i];

		if (p->copy && cmpxchg(&sock->ops, (const struct proto_ops *)p->copy, p->orig) == p->copy)
			return i;
	}
	return -1;
}

/* toa_ops_ulp_failed takes sk's socket over again after a refused ULP. */
void toa_ops_ulp_failed(struct sock *sk, int i)
{
	struct socket *sock = READ_ONCE(sk->sk_socket);
	struct toa_ops_pair *p;

	if (!sock || i < 0 || i >= (int)TOA_OPS_N)
		return;
	p = &toa_ops_pairs[i];
	cmpxchg(&sock->ops, p->orig, (const struct proto_ops *)p->copy);
}

/*
 * toa_ops_drop_mptcp stops taking MPTCP sockets over; only before any
 * hook that could have given one a copy is in place.
 */
void toa_ops_drop_mptcp(void)
{
	unsigned int i;

	for (i = 0; i < TOA_OPS_N; i++) {
		if (toa_ops_kinds[i].protocol != IPPROTO_MPTCP)
			continue;
		kfree(toa_ops_pairs[i].copy);
		toa_ops_pairs[i].copy = NULL;
	}
}
