// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_table.c - the entries of the connections that carried TOA, keyed by
 * their socket. Readers (getname, the destroy hook) look up under RCU;
 * writers take the bucket's lock. An entry lives from the handshake until
 * the socket is destroyed, or until the module is unloaded.
 */
#include <linux/hash.h>
#include <linux/slab.h>
#include <linux/spinlock.h>

#include "toa.h"

#define TOA_HASH_BITS 12
#define TOA_BUCKETS (1U << TOA_HASH_BITS)

struct toa_bucket {
	spinlock_t lock;
	struct hlist_head head;
};

static struct toa_bucket *toa_buckets;
static atomic_long_t toa_entries = ATOMIC_LONG_INIT(0);

static struct toa_bucket *bucket_of(const struct sock *sk)
{
	return &toa_buckets[hash_ptr(sk, TOA_HASH_BITS)];
}

int toa_table_init(void)
{
	unsigned int i;

	toa_buckets = kvcalloc(TOA_BUCKETS, sizeof(*toa_buckets), GFP_KERNEL);
	if (!toa_buckets)
		return -ENOMEM;
	for (i = 0; i < TOA_BUCKETS; i++) {
		spin_lock_init(&toa_buckets[i].lock);
		INIT_HLIST_HEAD(&toa_buckets[i].head);
	}
	return 0;
}

static void free_entry(struct rcu_head *head)
{
	kfree(container_of(head, struct toa_entry, rcu));
}

static void drop_entry(struct toa_entry *e)
{
	hlist_del_rcu(&e->node);
	atomic_long_dec(&toa_entries);
	toa_count(TOA_IP6_ADDRESS_FREE);
	call_rcu(&e->rcu, free_entry);
}

/* toa_table_exit frees every entry; the hooks are gone by then. */
void toa_table_exit(void)
{
	struct hlist_node *tmp;
	struct toa_entry *e;
	unsigned int i;

	for (i = 0; i < TOA_BUCKETS; i++) {
		spin_lock_bh(&toa_buckets[i].lock);
		hlist_for_each_entry_safe(e, tmp, &toa_buckets[i].head, node)
			drop_entry(e);
		spin_unlock_bh(&toa_buckets[i].lock);
	}
	rcu_barrier(); /* every free_entry callback has run */
	kvfree(toa_buckets);
}

/*
 * toa_table_insert stores the addresses of sk, replacing an entry a socket
 * at the same address left behind. Called from softirq (the handshake).
 */
int toa_table_insert(const struct sock *sk, const struct toa_addr *client,
		     const struct toa_addr *proxy, const struct toa_addr *local)
{
	struct toa_bucket *b = bucket_of(sk);
	struct toa_entry *e, *old;
	unsigned long flags;

	e = kmalloc(sizeof(*e), GFP_ATOMIC);
	if (!e) {
		toa_count(TOA_ALLOC_FAILED);
		return -ENOMEM;
	}
	e->sk = sk;
	e->client = *client;
	e->proxy = *proxy;
	e->local = *local;
	toa_count(TOA_IP6_ADDRESS_ALLOC);
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(old, &b->head, node) {
		if (old->sk == sk) {
			drop_entry(old);
			break;
		}
	}
	hlist_add_head_rcu(&e->node, &b->head);
	atomic_long_inc(&toa_entries);
	spin_unlock_irqrestore(&b->lock, flags);
	return 0;
}

/* toa_table_lookup copies the entry of sk into out. */
bool toa_table_lookup(const struct sock *sk, struct toa_entry *out)
{
	struct toa_entry *e;
	bool found = false;

	if (!atomic_long_read(&toa_entries))
		return false;
	rcu_read_lock();
	hlist_for_each_entry_rcu(e, &bucket_of(sk)->head, node) {
		if (e->sk == sk) {
			*out = *e;
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/* toa_table_remove forgets sk; called for every TCP socket destroyed. */
void toa_table_remove(const struct sock *sk)
{
	struct toa_bucket *b;
	struct toa_entry *e;
	unsigned long flags;

	if (!atomic_long_read(&toa_entries))
		return;
	b = bucket_of(sk);
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(e, &b->head, node) {
		if (e->sk == sk) {
			drop_entry(e);
			break;
		}
	}
	spin_unlock_irqrestore(&b->lock, flags);
}

long toa_table_count(void)
{
	return atomic_long_read(&toa_entries);
}

/*
 * toa_table_walk calls fn for the entries from position *pos on (a running
 * index over all buckets) until fn returns non-zero, which it returns with
 * *pos at the entry that stopped it; 0 when every entry was visited. Used by
 * the netlink dump, which resumes where its last message filled up.
 */
int toa_table_walk(long *pos, toa_table_visit_fn fn, void *arg)
{
	struct toa_entry *e;
	long idx = 0;
	unsigned int i;
	int ret = 0;

	rcu_read_lock();
	for (i = 0; i < TOA_BUCKETS && !ret; i++) {
		hlist_for_each_entry_rcu(e, &toa_buckets[i].head, node) {
			if (idx++ < *pos)
				continue;
			ret = fn(e, arg);
			if (ret) {
				*pos = idx - 1;
				break;
			}
		}
	}
	rcu_read_unlock();
	if (!ret)
		*pos = idx;
	return ret;
}
