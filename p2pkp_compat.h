/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What differs between the kernels P2PKP is built for (configs/kernel-pin.yaml:
 * 6.1 and 6.12 LTS), in one place.  p2pkp.c uses only the names below.
 */
#ifndef P2PKP_COMPAT_H
#define P2PKP_COMPAT_H

#include <linux/version.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/uio.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

/*
 * 6.3 replaced the user namespace of a mount by its idmap in every VFS call
 * that checks permissions (vfs_link, vfs_unlink, lookup_one, notify_change,
 * struct renamedata).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
typedef struct mnt_idmap p2pkp_idmap_t;

static inline p2pkp_idmap_t *p2pkp_idmap(const struct vfsmount *mnt)
{
	return mnt_idmap(mnt);
}
#else
typedef struct user_namespace p2pkp_idmap_t;

static inline p2pkp_idmap_t *p2pkp_idmap(const struct vfsmount *mnt)
{
	return mnt_user_ns(mnt);
}
#endif

/* Rename @old to @new in directory @dir (locked with lock_rename()). */
static inline int p2pkp_vfs_rename(p2pkp_idmap_t *idmap, struct inode *dir,
				   struct dentry *old, struct dentry *new)
{
	struct renamedata rd = {
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
		.old_mnt_idmap = idmap,
		.new_mnt_idmap = idmap,
#else
		.old_mnt_userns = idmap,
		.new_mnt_userns = idmap,
#endif
		.old_dir = dir,
		.old_dentry = old,
		.new_dir = dir,
		.new_dentry = new,
	};

	return vfs_rename(&rd);
}

/* The first segment of an iovec iterator (6.4 hid the field). */
static inline const struct iovec *p2pkp_iter_iov(const struct iov_iter *it)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	return iter_iov(it);
#else
	return it->iov;
#endif
}

/* Write @it at *@pos: 6.8 moved file_start_write() into vfs_iter_write(). */
static inline ssize_t p2pkp_vfs_iter_write(struct file *f, struct iov_iter *it,
					   loff_t *pos)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	return vfs_iter_write(f, it, pos, 0);
#else
	ssize_t ret;

	file_start_write(f);
	ret = vfs_iter_write(f, it, pos, 0);
	file_end_write(f);
	return ret;
#endif
}

/*
 * Zero-copy sends: an skb that referenced pages under a ubuf_info calls its
 * completion when it lets go of them (6.10 moved the callback into ops).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define P2PKP_UBUF_OPS(name, fn) \
	static const struct ubuf_info_ops name = { .complete = fn }
#define p2pkp_ubuf_ops_set(u, name)	((u)->ops = &(name))
#else
#define P2PKP_UBUF_OPS(name, fn) \
	static void (* const name)(struct sk_buff *, struct ubuf_info *, \
				   bool) = fn
#define p2pkp_ubuf_ops_set(u, name)	((u)->callback = (name))
#endif

/* 6.5 removed proto_ops.sendpage (MSG_SPLICE_PAGES replaced it). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define P2PKP_OPS_SENDPAGE
#else
#define P2PKP_OPS_SENDPAGE	.sendpage = sock_no_sendpage,
#endif

#endif /* P2PKP_COMPAT_H */
