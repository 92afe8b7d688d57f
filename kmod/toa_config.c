// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_config.c - the trusted source prefixes and accepted option kinds,
 * parsed from "198.51.100.0/24,2001:db8::/32" and "200,253,254" strings and
 * replaced as a whole under RCU, so the packet path reads them lock-free.
 */
#include <linux/inet.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <net/ipv6.h>

#include "toa.h"

static struct toa_config __rcu *toa_cfg;
static DEFINE_SPINLOCK(toa_cfg_lock);

static int parse_prefix(char *s, struct toa_prefix *p)
{
	char *slash = strchr(s, '/');
	struct in6_addr full;
	unsigned int bits, max;
	const char *end;

	if (slash)
		*slash = '\0';
	memset(p, 0, sizeof(*p));
	if (in4_pton(s, -1, (u8 *)&p->addr.s6_addr32[3], -1, &end) && *end == '\0') {
		p->addr.s6_addr16[5] = htons(0xffff);
		max = 32;
	} else if (in6_pton(s, -1, p->addr.s6_addr, -1, &end) && *end == '\0') {
		max = 128;
	} else {
		return -EINVAL;
	}
	bits = max;
	if (slash && (kstrtouint(slash + 1, 10, &bits) || bits > max))
		return -EINVAL;
	p->bits = bits + (128 - max);
	/* ipv6_addr_prefix clears its destination first: never pass it twice. */
	full = p->addr;
	ipv6_addr_prefix(&p->addr, &full, p->bits);
	return 0;
}

static int parse_trusted(struct toa_config *cfg, char *list, unsigned int cap)
{
	char *item;

	while ((item = strsep(&list, ",")) != NULL) {
		item = strim(item);
		if (*item == '\0')
			continue;
		if (cfg->nprefixes >= cap)
			return -E2BIG;
		if (parse_prefix(item, &cfg->prefixes[cfg->nprefixes]))
			return -EINVAL;
		cfg->nprefixes++;
	}
	return 0;
}

static int parse_kinds(struct toa_config *cfg, char *list)
{
	unsigned int kind;
	char *item;
	int n = 0;

	while ((item = strsep(&list, ",")) != NULL) {
		item = strim(item);
		if (*item == '\0')
			continue;
		/* Kinds 0 (end) and 1 (no-op) cannot carry an address. */
		if (kstrtouint(item, 10, &kind) || kind < 2 || kind > 255)
			return -EINVAL;
		set_bit(kind, cfg->kinds);
		n++;
	}
	return n ? 0 : -EINVAL;
}

/* count_items returns an upper bound of the comma-separated items of s. */
static unsigned int count_items(const char *s)
{
	unsigned int n = 1;

	for (; *s; s++)
		n += *s == ',';
	return n;
}

/*
 * toa_config_parse builds a configuration; it returns an ERR_PTR on a bad
 * string (-EINVAL) or too many prefixes (-E2BIG).
 */
struct toa_config *toa_config_parse(const char *trusted, const char *kinds)
{
	unsigned int cap = min_t(unsigned int, count_items(trusted), TOA_MAX_PREFIXES + 1);
	struct toa_config *cfg;
	char *t, *k;
	int err;

	if (strlen(trusted) >= TOA_MAX_CONFIG_STR || strlen(kinds) >= TOA_MAX_CONFIG_STR)
		return ERR_PTR(-E2BIG);
	cfg = kzalloc(struct_size(cfg, prefixes, cap), GFP_KERNEL);
	t = kstrdup(trusted, GFP_KERNEL);
	k = kstrdup(kinds, GFP_KERNEL);
	err = -ENOMEM;
	if (cfg && t && k) {
		err = parse_trusted(cfg, t, min_t(unsigned int, cap, TOA_MAX_PREFIXES));
		if (!err)
			err = parse_kinds(cfg, k);
	}
	kfree(t);
	kfree(k);
	if (err) {
		kfree(cfg);
		return ERR_PTR(err);
	}
	return cfg;
}

/* toa_config_swap installs cfg (taking ownership) and frees the old one. */
int toa_config_swap(struct toa_config *cfg)
{
	struct toa_config *old;

	spin_lock(&toa_cfg_lock);
	old = rcu_replace_pointer(toa_cfg, cfg, lockdep_is_held(&toa_cfg_lock));
	spin_unlock(&toa_cfg_lock);
	if (old)
		kfree_rcu(old, rcu);
	if (!cfg->nprefixes)
		pr_warn("no trusted prefixes: TOA options from every source are honoured, so anyone can forge client addresses\n");
	return 0;
}

const struct toa_config *toa_config_get(void)
{
	return rcu_dereference(toa_cfg);
}

bool toa_config_trusts(const struct toa_config *cfg, const struct in6_addr *src)
{
	unsigned int i;

	if (!cfg->nprefixes)
		return true;
	for (i = 0; i < cfg->nprefixes; i++)
		if (ipv6_prefix_equal(src, &cfg->prefixes[i].addr, cfg->prefixes[i].bits))
			return true;
	return false;
}

int toa_config_format_trusted(const struct toa_config *cfg, char *buf, size_t size)
{
	size_t off = 0;
	unsigned int i;

	buf[0] = '\0';
	for (i = 0; i < cfg->nprefixes && off < size; i++) {
		const struct toa_prefix *p = &cfg->prefixes[i];
		const char *sep = i ? "," : "";

		if (ipv6_addr_v4mapped(&p->addr))
			off += scnprintf(buf + off, size - off, "%s%pI4/%u", sep,
					 &p->addr.s6_addr32[3], p->bits - 96);
		else
			off += scnprintf(buf + off, size - off, "%s%pI6c/%u", sep,
					 &p->addr, p->bits);
	}
	return off;
}

int toa_config_format_kinds(const struct toa_config *cfg, char *buf, size_t size)
{
	size_t off = 0;
	unsigned int kind;

	buf[0] = '\0';
	for_each_set_bit(kind, cfg->kinds, 256)
		off += scnprintf(buf + off, size - off, "%s%u", off ? "," : "", kind);
	return off;
}

int toa_config_init(const char *trusted, const char *kinds)
{
	struct toa_config *cfg = toa_config_parse(trusted, kinds);

	if (IS_ERR(cfg)) {
		pr_err("bad configuration (trusted=\"%s\" kinds=\"%s\"): %ld\n",
		       trusted, kinds, PTR_ERR(cfg));
		return PTR_ERR(cfg);
	}
	return toa_config_swap(cfg);
}

void toa_config_exit(void)
{
	struct toa_config *old;

	spin_lock(&toa_cfg_lock);
	old = rcu_replace_pointer(toa_cfg, NULL, lockdep_is_held(&toa_cfg_lock));
	spin_unlock(&toa_cfg_lock);
	synchronize_rcu();
	kfree(old);
}
