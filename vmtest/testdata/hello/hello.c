// SPDX-License-Identifier: GPL-2.0
/*
 * hello - the stand-in module that proves the vmtest harness end to end:
 * built like toa.ko, loaded with a parameter, checked and unloaded in a VM.
 * warn=1 makes loading WARN, to prove the harness catches kernel warnings;
 * int3=1 makes loading execute a stray int3, the oops ("Oops: int3") that
 * text patching under multi-threaded TCG used to cause: after init it must
 * fail the run, never be booted around.
 */
#include <linux/bug.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static char *who = "world";
module_param(who, charp, 0444);
MODULE_PARM_DESC(who, "whom to greet (default: world)");

static bool warn;
module_param(warn, bool, 0444);
MODULE_PARM_DESC(warn, "WARN while loading (harness self-test)");

static bool int3;
module_param(int3, bool, 0444);
MODULE_PARM_DESC(int3, "execute a stray int3 while loading: an oops (harness self-test)");

static int __init hello_init(void)
{
	pr_info("realip-vmtest hello: loaded, who=%s\n", who);
	WARN(warn, "realip-vmtest hello: warning on request\n");
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
