// SPDX-License-Identifier: GPL-2.0
/*
 * crashme - test-only module that provokes real kernel crash signatures
 *
 * Writing an action name to /proc/crashme runs it in the writer's context:
 *
 *   warn         WARN_ON(1)
 *   null         NULL pointer dereference (oops, kills the writer)
 *   bug          list_add() on a corrupted list: CONFIG_BUG_ON_DATA_CORRUPTION
 *                turns it into "kernel BUG at lib/list_debug.c" (oops)
 *   gpf          dereference a non-canonical address (general protection fault)
 *   pagefault    dereference an unmapped kernel address
 *   atomicsleep  msleep() with preemption disabled ("scheduling while atomic")
 *   hung SECS    sleep SECS seconds in TASK_UNINTERRUPTIBLE (hung task report
 *                once kernel.hung_task_timeout_secs < SECS)
 *   spin SECS    spin SECS seconds with preemption disabled inside an RCU
 *                read-side section (soft lockup once SECS > 2 *
 *                kernel.watchdog_thresh, RCU stall once SECS >
 *                rcupdate.rcu_cpu_stall_timeout)
 *   doublefree   kfree() the same object twice (SLAB_FREELIST_HARDENED: BUG in
 *                mm/slub.c; KASAN: double-free report)
 *
 * Silent on the stock kernel, reported by a debug kernel (KASAN, UBSAN, kmemleak, lockdep):
 *
 *   uaf          read a kmalloc()ed object after kfree()
 *   oob          read one byte past a 32-byte kmalloc()ed object
 *   leak         kmalloc() 64 bytes and lose the pointer
 *   lockorder    take two mutexes in A-B order, then in B-A order (no real deadlock)
 *   ubsan SECS   read int[4] at index 4 + SECS (a stack slot past the array)
 *
 * It exists only to produce real console logs for the crash parser's tests.
 */

#include <linux/bug.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#define CRASHME_MAX_SECS 120

static struct proc_dir_entry *crashme_entry;

/* Opaque to the compiler so the bad dereferences are really emitted. */
static unsigned long crashme_bad_addr;

static int crashme_read_bad(unsigned long addr)
{
	WRITE_ONCE(crashme_bad_addr, addr);
	return READ_ONCE(*(int *)READ_ONCE(crashme_bad_addr));
}

static noinline void crashme_list_corrupt(void)
{
	struct list_head head, other, entry;

	INIT_LIST_HEAD(&head);
	INIT_LIST_HEAD(&other);
	/* head.next points to a node whose prev is not head: corrupted. */
	WRITE_ONCE(head.next, &other);
	list_add(&entry, &head);
}

static noinline void crashme_spin(unsigned int secs)
{
	ktime_t end = ktime_add_ms(ktime_get(), secs * MSEC_PER_SEC);

	rcu_read_lock();
	preempt_disable();
	while (ktime_before(ktime_get(), end))
		cpu_relax();
	preempt_enable();
	rcu_read_unlock();
}

static noinline void crashme_hung(unsigned int secs)
{
	/* msleep() sleeps in TASK_UNINTERRUPTIBLE: a D-state task. */
	msleep(secs * MSEC_PER_SEC);
}

static DEFINE_MUTEX(crashme_lock_a);
static DEFINE_MUTEX(crashme_lock_b);

/* Opaque to the compiler so the bad accesses are really emitted. */
static char *crashme_bad_ptr;
static unsigned int crashme_bad_index;

static noinline int crashme_slab(const char *action)
{
	char *p = kmalloc(32, GFP_KERNEL);
	int val = 0;

	if (!p)
		return -ENOMEM;
	memset(p, 0x5a, 32);
	WRITE_ONCE(crashme_bad_ptr, p);
	if (!strcmp(action, "oob")) {
		val = READ_ONCE(READ_ONCE(crashme_bad_ptr)[32]);
		kfree(p);
	} else if (!strcmp(action, "uaf")) {
		kfree(p);
		val = READ_ONCE(READ_ONCE(crashme_bad_ptr)[0]);
	} else {
		kfree(p);
		kfree(READ_ONCE(crashme_bad_ptr));
	}
	pr_info("crashme: %s read %d\n", action, val);
	return 0;
}

static noinline int crashme_leak(void)
{
	void *p = kmalloc(64, GFP_KERNEL);

	if (!p)
		return -ENOMEM;
	pr_info("crashme: leaking 64 bytes\n");
	return 0;
}

static noinline void crashme_lock_order(void)
{
	mutex_lock(&crashme_lock_a);
	mutex_lock(&crashme_lock_b);
	mutex_unlock(&crashme_lock_b);
	mutex_unlock(&crashme_lock_a);

	mutex_lock(&crashme_lock_b);
	mutex_lock(&crashme_lock_a);
	mutex_unlock(&crashme_lock_a);
	mutex_unlock(&crashme_lock_b);
}

static noinline int crashme_ubsan(unsigned int extra)
{
	int arr[4] = { 1, 2, 3, 4 };

	WRITE_ONCE(crashme_bad_index, 4 + extra);
	return arr[READ_ONCE(crashme_bad_index)];
}

static noinline void crashme_atomic_sleep(void)
{
	preempt_disable();
	msleep(20);
	preempt_enable();
}

static int crashme_run(const char *action, unsigned int secs)
{
	if (!strcmp(action, "warn")) {
		WARN_ON(1);
	} else if (!strcmp(action, "null")) {
		pr_info("crashme: dereferencing NULL: %d\n", crashme_read_bad(0));
	} else if (!strcmp(action, "bug")) {
		crashme_list_corrupt();
	} else if (!strcmp(action, "gpf")) {
		pr_info("crashme: non-canonical read: %d\n",
			crashme_read_bad(0xdead000000000100UL));
	} else if (!strcmp(action, "pagefault")) {
		pr_info("crashme: unmapped read: %d\n",
			crashme_read_bad(0xffffffffff000000UL));
	} else if (!strcmp(action, "atomicsleep")) {
		crashme_atomic_sleep();
	} else if (!strcmp(action, "hung")) {
		crashme_hung(secs);
	} else if (!strcmp(action, "spin")) {
		crashme_spin(secs);
	} else if (!strcmp(action, "oob") || !strcmp(action, "uaf") ||
		   !strcmp(action, "doublefree")) {
		return crashme_slab(action);
	} else if (!strcmp(action, "leak")) {
		return crashme_leak();
	} else if (!strcmp(action, "lockorder")) {
		crashme_lock_order();
	} else if (!strcmp(action, "ubsan")) {
		pr_info("crashme: ubsan read %d\n", crashme_ubsan(secs));
	} else {
		return -EINVAL;
	}
	return 0;
}

static ssize_t crashme_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	char buf[32];
	char action[16];
	unsigned int secs = 0;
	int ret;

	if (count == 0 || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';

	ret = sscanf(buf, "%15s %u", action, &secs);
	if (ret < 1)
		return -EINVAL;
	if (secs > CRASHME_MAX_SECS)
		return -ERANGE;

	pr_info("crashme: action %s secs %u\n", action, secs);
	ret = crashme_run(action, secs);
	return ret ? ret : count;
}

static const struct proc_ops crashme_ops = {
	.proc_write = crashme_write,
	.proc_lseek = noop_llseek,
};

static int __init crashme_init(void)
{
	crashme_entry = proc_create("crashme", 0200, NULL, &crashme_ops);
	if (!crashme_entry)
		return -ENOMEM;
	return 0;
}

static void __exit crashme_exit(void)
{
	proc_remove(crashme_entry);
}

module_init(crashme_init);
module_exit(crashme_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Test-only module provoking real crash signatures");
