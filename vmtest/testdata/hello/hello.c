// SPDX-License-Identifier: GPL-2.0
/*
 * hello - the stand-in module that proves the vmtest harness end to end:
 * built like toa.ko, loaded with a parameter, checked and unloaded in a VM.
 * warn=1 makes loading WARN, to prove the harness catches kernel warnings;
 * int3=1 makes loading execute a stray int3, the oops ("Oops: int3") that
 * text patching under multi-threaded TCG used to cause: after init it must
 * fail the run, never be booted around.
 * On the sanitizer kernel (alias debug), uaf=1, lockorder=1 and leak=1 make
 * loading read freed memory (KASAN), take two mutexes in both orders
 * (lockdep) and drop an allocation (kmemleak, after unload): vmtest/toa.sh
 * proves with them that each sanitizer's report fails the boot.
 */
#include <linux/bug.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>

static char *who = "world";
module_param(who, charp, 0444);
MODULE_PARM_DESC(who, "whom to greet (default: world)");

static bool warn;
module_param(warn, bool, 0444);
MODULE_PARM_DESC(warn, "WARN while loading (harness self-test)");

static bool int3;
module_param(int3, bool, 0444);
MODULE_PARM_DESC(int3, "execute a stray int3 while loading: an oops (harness self-test)");

static bool uaf;
module_param(uaf, bool, 0444);
MODULE_PARM_DESC(uaf, "read freed memory while loading: a KASAN report (harness self-test)");

static bool lockorder;
module_param(lockorder, bool, 0444);
MODULE_PARM_DESC(lockorder, "take two mutexes in both orders: a lockdep report (harness self-test)");

static bool leak;
module_param(leak, bool, 0444);
MODULE_PARM_DESC(leak, "lose an allocation while loading: a kmemleak report (harness self-test)");

static DEFINE_MUTEX(hello_a);
static DEFINE_MUTEX(hello_b);
static void *hello_kept[4];

/*
 * hello_sanitizers does what lockorder, uaf and leak ask for, lockdep's
 * first: any taint (KASAN's report sets one) switches lockdep off.
 */
static void hello_sanitizers(void)
{
	unsigned int i;

	if (lockorder) {
		pr_info("realip-vmtest hello: a lock inversion on request\n");
		mutex_lock(&hello_a);
		mutex_lock(&hello_b);
		mutex_unlock(&hello_b);
		mutex_unlock(&hello_a);
		mutex_lock(&hello_b);
		mutex_lock(&hello_a);
		mutex_unlock(&hello_a);
		mutex_unlock(&hello_b);
	}
	/*
	 * Twice: KFENCE takes one allocation per sampling interval (and then
	 * reports instead of KASAN), never two in a row.
	 */
	for (i = 0; uaf && i < 2; i++) {
		/* through a volatile pointer: gcc sees no use after free */
		char *volatile p = kmalloc(32, GFP_KERNEL);

		if (p) {
			kfree(p);
			pr_info("realip-vmtest hello: read after free on request: %d\n", READ_ONCE(p[3]));
		}
	}
	if (leak) {
		/*
		 * Kept until the unload frees the module's data: nothing refers
		 * to them then. Four: a stale copy of the last pointer on a
		 * cached kernel stack can still look like a reference.
		 */
		for (i = 0; i < ARRAY_SIZE(hello_kept); i++)
			hello_kept[i] = kmalloc(64, GFP_KERNEL);
		pr_info("realip-vmtest hello: leaking 4 x 64 bytes on request at unload\n");
	}
}

static int __init hello_init(void)
{
	pr_info("realip-vmtest hello: loaded, who=%s\n", who);
	WARN(warn, "realip-vmtest hello: warning on request\n");
	hello_sanitizers();
	if (int3) {
		pr_info("realip-vmtest hello: a stray int3 on request\n");
		asm volatile("int3");
	}
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("realip-vmtest hello: unloaded, who=%s\n", who);
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("realip vmtest stand-in module");
