// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * recv.bpf.c - realip's eBPF TOA receiver: the module-free peer of toa.ko.
 *
 * Option: kind(1) len(1) port(2) addr(4|16), big-endian. Length 8 carries
 * an IPv4 client, length 20 an IPv6 client; the kind must be one of the
 * configured ones (toa_config.kinds). The rules are toa.ko's
 * (kmod/toa_option.c, kmod/toa_hooks.c), counter for counter.
 *
 *   sockops PASSIVE_ESTABLISHED_CB  the segment that completed the handshake
 *                                   (the ACK, or a data segment that overtook
 *                                   it, or the only ACK with syncookies) is
 *                                   parsed; if it has no option, the SYN the
 *                                   listener saved (TCP_SAVE_SYN), if any.
 *                                   A valid option from a trusted source is
 *                                   kept in socket storage, created then
 *                                   and only then.
 *   sockops STATE_CB                the socket closes: its entry is counted
 *                                   as freed (asked for only on sockets with
 *                                   one); the kernel frees it with the socket
 *                                   (accept() of a connection reset before
 *                                   it still shows the client, as toa.ko's)
 *   cgroup/getpeername4, 6          getpeername() and accept() return the
 *                                   client: IPv4 on an IPv4 socket, IPv4
 *                                   mapped or IPv6 on an IPv6 socket.
 *
 * An IPv6 client on an IPv4 socket cannot be returned (the hook cannot
 * change the address family): the edge's address stays and the call is
 * counted as getname_toa_mismatch.
 *
 * Needs Linux 5.10+ (skops->skb_data for the handshake segment's header,
 * skops->sk, socket storage from sockops and sock_addr programs, BPF links
 * for cgroups). Regenerate the Go bindings with `go generate` (doc.go).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TOA_LEN_V4 8
#define TOA_LEN_V6 20

#define TCP_HDR_MIN 20
#define TCP_OPT_MAX 40

/* What the receiver knows about one connection that carried TOA. */
struct toa_entry {
	__u8 client[16];     /* IPv4 in the first 4 bytes, or IPv6 */
	__u8 edge[16];       /* the segment's source: IPv4 first 4 bytes, or IPv6 */
	__u16 client_port;   /* big-endian */
	__u16 edge_port;     /* big-endian */
	__u8 client_family;  /* 4 or 6 */
	__u8 edge_family;    /* 4 or 6 */
	__u8 closed;         /* the socket reached TCP_CLOSE: counted as freed */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct toa_entry);
} toa_entries SEC(".maps");

/* Accepted kinds (a 256-bit set) and whether every source is trusted. */
struct toa_config {
	__u64 kinds[4];
	__u32 trust_all; /* 1: no trusted prefixes configured (legacy) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_config);
} toa_settings SEC(".maps");

/* A trusted prefix; IPv4 is IPv4-mapped (prefixlen 96 + bits), as in toa.ko. */
struct toa_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 256); /* toa.ko's TOA_MAX_PREFIXES */
	__type(key, struct toa_prefix);
	__type(value, __u8);
} toa_trusted SEC(".maps");

/* toa.ko's counters (kmod/toa.h enum toa_counter), in its order. */
enum toa_counter {
	TOA_SYN_RECV_SOCK_TOA,
	TOA_SYN_RECV_SOCK_NO_TOA,
	TOA_GETNAME_TOA_OK,
	TOA_GETNAME_TOA_MISMATCH,
	TOA_GETNAME_TOA_BYPASS,
	TOA_GETNAME_TOA_EMPTY,
	TOA_IP6_ADDRESS_ALLOC,
	TOA_IP6_ADDRESS_FREE,
	TOA_SYN_RECV_SOCK_UNTRUSTED,
	TOA_SYN_RECV_SOCK_BAD_OPTION,
	TOA_SYN_RECV_SOCK_FROM_SYN,
	TOA_ALLOC_FAILED,
	TOA_PROBE_MISSED,
	TOA_LISTENERS_TAKEN_OVER,
	TOA_NR_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TOA_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} toa_stats SEC(".maps");

/* A copy of a TCP header's options, to parse with bounded indexes. */
struct toa_scratch {
	__u8 b[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_scratch);
} toa_buf SEC(".maps");

/* bounded_len caps an option length at 40, hiding the cap's result from
 * the compiler so the verifier keeps a range, not a constant. */
static __always_inline __u64 bounded_len(__u64 n)
{
	asm volatile("" : "+r"(n));
	return n > TCP_OPT_MAX ? TCP_OPT_MAX : n;
}

/* Parse results. */
#define TOA_NONE 0
#define TOA_FOUND 1
#define TOA_BAD (-1)

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&toa_stats, &c);

	/*
	 * Atomic although the slot is per CPU: cgroup programs run with
	 * migration, not preemption, disabled, so a close() in process
	 * context and a reset in softirq can meet on one slot.
	 */
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int kind_accepted(const struct toa_config *cfg, __u8 kind)
{
	return (cfg->kinds[(kind >> 6) & 3] >> (kind & 63)) & 1;
}

/* bad_v4 is true for 0.0.0.0, 224.0.0.0/4 and 255.255.255.255. */
static __always_inline int bad_v4(const __u8 *a)
{
	if ((a[0] & 0xf0) == 0xe0)
		return 1;
	if (!(a[0] | a[1] | a[2] | a[3]))
		return 1;
	return (a[0] & a[1] & a[2] & a[3]) == 0xff;
}

/* bad_v6 is true for ::, ff00::/8, and a mapped IPv4 address bad_v4 refuses. */
static __always_inline int bad_v6(const __u8 *a)
{
	__u8 any = 0, low = 0;
	int i;

	if (a[0] == 0xff)
		return 1;
#pragma unroll
	for (i = 0; i < 16; i++)
		any |= a[i];
	if (!any)
		return 1;
#pragma unroll
	for (i = 0; i < 10; i++)
		low |= a[i];
	if (!low && a[10] == 0xff && a[11] == 0xff)
		return bad_v4(&a[12]);
	return 0;
}

/*
 * take_option fills the client of e from the option at buf[off] of length
 * len. It returns TOA_FOUND, or TOA_BAD for a length that fits no address,
 * port 0 or an address no client has. off is a constant where it is
 * inlined, so every read has a fixed offset.
 */
static __always_inline int take_option(const __u8 *buf, int off, __u8 len,
				       struct toa_entry *e)
{
	if (len != TOA_LEN_V4 && len != TOA_LEN_V6)
		return TOA_BAD;
	__builtin_memcpy(&e->client_port, &buf[off + 2], 2);
	if (!e->client_port)
		return TOA_BAD;
	if (len == TOA_LEN_V4) {
		__builtin_memcpy(e->client, &buf[off + 4], 4);
		e->client_family = 4;
		return bad_v4(e->client) ? TOA_BAD : TOA_FOUND;
	}
	__builtin_memcpy(e->client, &buf[off + 4], 16);
	e->client_family = 6;
	return bad_v6(e->client) ? TOA_BAD : TOA_FOUND;
}

/*
 * parse_options walks n bytes of TCP options in buf. It returns TOA_FOUND
 * with e's client filled, TOA_NONE, or TOA_BAD for a cut option list or a
 * bad option of an accepted kind.
 *
 * It looks at each of the 40 byte positions in turn, fully unrolled, and
 * skips the bytes of options it does not want: every buffer offset is a
 * constant, and the lengths read from the segment only ever meet
 * comparisons. The verifier then needs no precise value for them, prunes
 * its states, and old kernels (5.10) accept the program quickly.
 */
static __always_inline int parse_options(const __u8 *buf, __u64 n,
					 const struct toa_config *cfg, struct toa_entry *e)
{
	__u32 skip = 0; /* bytes of the current option still to pass */
	__u8 kind, len;
	int i;

#pragma unroll
	for (i = 0; i < TCP_OPT_MAX; i++) {
		if (i >= n)
			break;
		if (skip) {
			skip--;
			continue;
		}
		kind = buf[i];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP)
			continue;
		if (i + 2 > n)
			return TOA_BAD;
		len = buf[i + 1];
		if (len < 2 || i + len > n)
			return TOA_BAD;
		if (kind_accepted(cfg, kind))
			return take_option(buf, i, len, e);
		skip = len - 1;
	}
	return TOA_NONE;
}

/*
 * copy_segment_options copies the options of the segment in skops (its
 * TCP header is skb_data .. skb_data_end) into buf, zero-filled to 40
 * bytes, and returns their length. The length comes from the header's data
 * offset, not from the copy, so the verifier sees one range, not one
 * value per length, and the parser's states stay few.
 */
static __always_inline __u64 copy_segment_options(struct bpf_sock_ops *skops, __u8 *buf)
{
	__u8 *data = (__u8 *)(long)skops->skb_data;
	__u8 *end = (__u8 *)(long)skops->skb_data_end;
	__u64 n;
	int i;

	if (data + TCP_HDR_MIN > end)
		return 0;
	n = (data[12] >> 4) * 4;
#pragma unroll
	for (i = 0; i < TCP_OPT_MAX; i++)
		buf[i] = data + TCP_HDR_MIN + i + 1 <= end ? data[TCP_HDR_MIN + i] : 0;
	return n > TCP_HDR_MIN ? bounded_len(n - TCP_HDR_MIN) : 0;
}

/*
 * copy_syn_options copies the options of the SYN the listener saved
 * (TCP_SAVE_SYN) into buf and returns their length, 0 without one.
 */
static __always_inline __u64 copy_syn_options(struct bpf_sock_ops *skops, __u8 *buf)
{
	__u8 hdr[TCP_HDR_MIN + TCP_OPT_MAX];
	__u64 n;
	int i;

	/* The header's length when there is a saved SYN, < 0 without. */
	if (bpf_getsockopt(skops, SOL_TCP, TCP_BPF_SYN, hdr, sizeof(hdr)) <= 0)
		return 0;
	n = (hdr[12] >> 4) * 4;
	if (n <= TCP_HDR_MIN)
		return 0;
#pragma unroll
	for (i = 0; i < TCP_OPT_MAX; i++)
		buf[i] = hdr[TCP_HDR_MIN + i];
	return bounded_len(n - TCP_HDR_MIN);
}

/* source_key is the LPM key of the segment's source (the edge), IPv4 mapped. */
static __always_inline void source_key(const struct toa_entry *e, struct toa_prefix *k)
{
	k->prefixlen = 128;
	__builtin_memset(k->addr, 0, sizeof(k->addr));
	if (e->edge_family == 4) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], e->edge, 4);
	} else {
		__builtin_memcpy(k->addr, e->edge, 16);
	}
}

static __always_inline int trusted(const struct toa_config *cfg, const struct toa_entry *e)
{
	struct toa_prefix k;

	if (cfg->trust_all)
		return 1;
	source_key(e, &k);
	return bpf_map_lookup_elem(&toa_trusted, &k) != NULL;
}

/* set_edge fills e's edge from the socket's peer; an IPv4-mapped peer is IPv4. */
static __always_inline void set_edge(struct bpf_sock_ops *skops, struct toa_entry *e)
{
	__u32 a[4];

	__builtin_memset(e->edge, 0, sizeof(e->edge));
	e->edge_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
	if (skops->family == AF_INET) {
		a[0] = skops->remote_ip4;
		__builtin_memcpy(e->edge, a, 4);
		e->edge_family = 4;
		return;
	}
	a[0] = skops->remote_ip6[0];
	a[1] = skops->remote_ip6[1];
	a[2] = skops->remote_ip6[2];
	a[3] = skops->remote_ip6[3];
	if (!a[0] && !a[1] && a[2] == bpf_htonl(0xffff)) {
		__builtin_memcpy(e->edge, &a[3], 4);
		e->edge_family = 4;
		return;
	}
	__builtin_memcpy(e->edge, a, 16);
	e->edge_family = 6;
}

/* find_option looks for the option in the handshake segment, then the saved SYN. */
static __always_inline int find_option(struct bpf_sock_ops *skops, const struct toa_config *cfg,
				       struct toa_entry *e)
{
	__u32 zero = 0;
	__u64 n;
	struct toa_scratch *s = bpf_map_lookup_elem(&toa_buf, &zero);
	int found;

	if (!s)
		return TOA_NONE;
	n = copy_segment_options(skops, s->b);
	found = parse_options(s->b, n, cfg, e);
	if (found != TOA_NONE)
		return found;
	n = copy_syn_options(skops, s->b);
	if (!n)
		return TOA_NONE;
	found = parse_options(s->b, n, cfg, e);
	if (found == TOA_FOUND)
		count(TOA_SYN_RECV_SOCK_FROM_SYN);
	return found;
}

static __always_inline void established(struct bpf_sock_ops *skops, struct bpf_sock *sk)
{
	__u32 zero = 0;
	struct toa_config *cfg = bpf_map_lookup_elem(&toa_settings, &zero);
	struct toa_entry e = {}, *stored;
	int found;

	if (!cfg)
		return;
	set_edge(skops, &e);
	found = find_option(skops, cfg, &e);
	if (found == TOA_FOUND && !trusted(cfg, &e)) {
		count(TOA_SYN_RECV_SOCK_UNTRUSTED);
		return;
	}
	if (found == TOA_BAD) {
		count(TOA_SYN_RECV_SOCK_BAD_OPTION);
		return;
	}
	if (found == TOA_NONE) {
		count(TOA_SYN_RECV_SOCK_NO_TOA);
		return;
	}
	stored = bpf_sk_storage_get(&toa_entries, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored) {
		count(TOA_ALLOC_FAILED);
		return;
	}
	*stored = e;
	count(TOA_IP6_ADDRESS_ALLOC);
	count(TOA_SYN_RECV_SOCK_TOA);
	/* Be told when it closes, to drop the entry and count the free. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/*
 * closed counts the entry of a socket that reached TCP_CLOSE as freed,
 * once. The entry stays until the socket is freed: accept() still answers
 * for a connection reset before it (the kernel's getname answers accept()
 * on a closed socket), as toa.ko does. A closed socket that connects again
 * keeps a stale entry, which the hooks never use: they answer only while
 * the socket's peer is still the entry's edge.
 */
static __always_inline void closed(struct bpf_sock *sk)
{
	struct toa_entry *e = bpf_sk_storage_get(&toa_entries, sk, 0, 0);

	if (!e || e->closed)
		return;
	e->closed = 1;
	count(TOA_IP6_ADDRESS_FREE);
}

SEC("sockops")
int toa_recv_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk; /* NULL unless a full socket */

	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		established(skops, sk);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			closed(sk);
		break;
	}
	return 1;
}

/* entry_of returns the socket's entry, counting a socket without one. */
static __always_inline struct toa_entry *entry_of(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct toa_entry *e;

	if (!sk || sk->protocol != 6 /* IPPROTO_TCP */)
		return NULL;
	e = bpf_sk_storage_get(&toa_entries, sk, 0, 0);
	if (!e)
		count(TOA_GETNAME_TOA_EMPTY);
	return e;
}

/*
 * edge_is_peer reports whether the address the kernel is about to return
 * (a, port: the socket's peer, IPv4 in a[3] when mapped) is still the
 * entry's edge, as toa.ko's entry_matches does: a socket that connected
 * elsewhere since is left alone.
 */
static __always_inline int edge_is_peer(const struct toa_entry *e, const __u32 *a, int v6, __u32 port)
{
	__u32 edge[4];

	if ((__u16)port != e->edge_port)
		return 0;
	__builtin_memcpy(edge, e->edge, 16);
	if (e->edge_family == 4)
		return v6 ? !a[0] && !a[1] && a[2] == bpf_htonl(0xffff) && a[3] == edge[0] : a[0] == edge[0];
	return v6 && a[0] == edge[0] && a[1] == edge[1] && a[2] == edge[2] && a[3] == edge[3];
}

SEC("cgroup/getpeername4")
int toa_recv_getpeername4(struct bpf_sock_addr *ctx)
{
	struct toa_entry *e = entry_of(ctx);
	__u32 a, peer[1];

	if (!e)
		return 1;
	peer[0] = ctx->user_ip4;
	if (!edge_is_peer(e, peer, 0, ctx->user_port)) {
		count(TOA_GETNAME_TOA_EMPTY);
		return 1;
	}
	if (e->client_family != 4) {
		count(TOA_GETNAME_TOA_MISMATCH);
		return 1;
	}
	__builtin_memcpy(&a, e->client, 4);
	ctx->user_ip4 = a;
	ctx->user_port = e->client_port;
	count(TOA_GETNAME_TOA_OK);
	return 1;
}

SEC("cgroup/getpeername6")
int toa_recv_getpeername6(struct bpf_sock_addr *ctx)
{
	struct toa_entry *e = entry_of(ctx);
	__u32 a[4];

	if (!e)
		return 1;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	if (!edge_is_peer(e, a, 1, ctx->user_port)) {
		count(TOA_GETNAME_TOA_EMPTY);
		return 1;
	}
	if (e->client_family == 4) {
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(0xffff);
		__builtin_memcpy(&a[3], e->client, 4);
	} else {
		__builtin_memcpy(a, e->client, 16);
	}
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = e->client_port;
	count(TOA_GETNAME_TOA_OK);
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
