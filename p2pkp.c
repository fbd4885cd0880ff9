// SPDX-License-Identifier: GPL-2.0
/*
 * P2PKP: in-kernel one-to-many file transfer over UDP.
 *
 * A socket family whose write() sends a whole file (named by its absolute
 * path) to every connect()ed peer and whose read() stores one whole file
 * (at the absolute path given in the buffer) from a sender.  All the work
 * runs in the calling process, with its credentials; the data travels in
 * UDP datagrams of kernel sockets, with flow control, selective
 * retransmission and a SHA-256 digest checked before the file is renamed
 * into place.  The wire format is described in docs/protocol.md.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/namei.h>
#include <linux/mount.h>
#include <linux/uio.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/random.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/seq_file_net.h>
#include <linux/proc_fs.h>
#include <linux/bitmap.h>
#include <linux/ktime.h>
#include <linux/uaccess.h>
#include <linux/sockptr.h>
#include <linux/poll.h>
#include <linux/statfs.h>
#include <linux/math64.h>
#include <net/sock.h>
#include <net/udp.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <crypto/sha2.h>

#include "p2pkp.h"

/* Wire format (all integers big-endian), see docs/protocol.md. */
#define P2PKP_MAGIC		0x5032504bU	/* "P2PK" */
#define P2PKP_VERSION		1

enum {
	P2PKP_T_START = 1,
	P2PKP_T_START_ACK,
	P2PKP_T_BUSY,
	P2PKP_T_DATA,
	P2PKP_T_ACK,
	P2PKP_T_END,
	P2PKP_T_DONE,
	P2PKP_T_DONE_ACK,
	P2PKP_T_ABORT,
	P2PKP_T_MAX = P2PKP_T_ABORT,
};

#define P2PKP_F_ACKREQ		0x0001	/* DATA: answer with an ACK at once */
#define P2PKP_F_ECHO		0x0002	/* hdr.echo holds a peer timestamp */

struct p2pkp_hdr {
	__be32 magic;
	u8 version;
	u8 type;
	__be16 flags;
	__be64 id;
	__be32 ts;		/* sender's clock, microseconds */
	__be32 echo;		/* ts of the datagram answered (F_ECHO) */
} __packed;

struct p2pkp_start {
	__be64 size;
	__be64 count;
	__be32 chunk;
	__be32 reserved;
} __packed;

struct p2pkp_start_ack {
	__be32 window;
	__be32 reserved;
} __packed;

struct p2pkp_data {
	__be64 index;
	/* followed by the payload */
} __packed;

/* Limits of the protocol. */
#define P2PKP_WIN		512	/* max window (chunks) = SACK bits */
#define P2PKP_ACK_EVERY		16	/* receiver ACKs every N chunks */
#define P2PKP_MAX_SIZE		BIT_ULL(40)	/* 1 TiB */
#define P2PKP_RCVBUF		(4 << 20)
#define P2PKP_PEER_RCVBUF	BIT(20)
#define P2PKP_SNDBUF		BIT(20)
#define P2PKP_RTO_MIN_US	40000U
#define P2PKP_RTO_INIT_US	200000U
#define P2PKP_RTO_MAX_US	2000000U
#define P2PKP_LINGER_MS		1000
#define P2PKP_BLOCK_CHUNKS	64
#define P2PKP_GSO_CHUNKS	32	/* DATA datagrams per UDP_SEGMENT send */
#define P2PKP_RTO_BURST		64	/* timed-out chunks resent per RTO */
#define P2PKP_DGRAM_MAX		2048
#define P2PKP_RX_BUDGET		256
#define P2PKP_TIMEOUT_DEF	15000U
#define P2PKP_TIMEOUT_MIN	100U
#define P2PKP_TIMEOUT_MAX	3600000U
#define P2PKP_ACK_MIN_US	500U	/* receiver: min gap between ACKs */
#define P2PKP_ACK_MAX_US	20000U	/* ... srtt/4 but at most this */
#define P2PKP_ACCEPT_MS		5000U	/* START accepted, no DATA/END yet */
#define P2PKP_CREDIT_MAX	65536U	/* ACK bytes owed to a sender, max */
#define P2PKP_RL_PER_SEC	100U	/* replies to other sources, per s */
#define P2PKP_RL_BURST		20U

struct p2pkp_ack {
	__be64 cum;		/* chunks received in order */
	__be32 nbits;		/* P2PKP_WIN */
	__be32 reserved;
	u8 bitmap[P2PKP_WIN / 8];	/* bit i (LSB first): chunk cum + i */
} __packed;

struct p2pkp_end {
	__be64 size;
	u8 digest[P2PKP_DIGEST_SIZE];
} __packed;

struct p2pkp_status {		/* DONE and ABORT */
	__be32 status;		/* DONE: 0 or -errno; ABORT: errno */
	__be32 reserved;
} __packed;

#define P2PKP_PKT_MAX	(sizeof(struct p2pkp_hdr) + sizeof(struct p2pkp_ack))
#define P2PKP_DATA_HLEN	(sizeof(struct p2pkp_hdr) + sizeof(struct p2pkp_data))

static const u16 p2pkp_body_len[P2PKP_T_MAX + 1] = {
	[P2PKP_T_START]		= sizeof(struct p2pkp_start),
	[P2PKP_T_START_ACK]	= sizeof(struct p2pkp_start_ack),
	[P2PKP_T_BUSY]		= 0,
	[P2PKP_T_DATA]		= sizeof(struct p2pkp_data),
	[P2PKP_T_ACK]		= sizeof(struct p2pkp_ack),
	[P2PKP_T_END]		= sizeof(struct p2pkp_end),
	[P2PKP_T_DONE]		= sizeof(struct p2pkp_status),
	[P2PKP_T_DONE_ACK]	= 0,
	[P2PKP_T_ABORT]		= sizeof(struct p2pkp_status),
};

/* Counters, per socket and per network namespace. */
enum {
	P2PKP_ST_FILES_SENT,
	P2PKP_ST_FILES_RECEIVED,
	P2PKP_ST_FILES_FAILED,
	P2PKP_ST_BYTES_SENT,
	P2PKP_ST_BYTES_RECEIVED,
	P2PKP_ST_DGRAMS_SENT,
	P2PKP_ST_DGRAMS_RECEIVED,
	P2PKP_ST_DGRAMS_RETRANS,
	P2PKP_ST_DGRAMS_DROPPED,
	P2PKP_ST_DROP_SHORT,
	P2PKP_ST_DROP_MAGIC,
	P2PKP_ST_DROP_VERSION,
	P2PKP_ST_DROP_TYPE,
	P2PKP_ST_DROP_LENGTH,
	P2PKP_ST_DROP_FIELD,
	P2PKP_ST_DROP_XFER,
	P2PKP_ST_DROP_PEER,
	P2PKP_ST_DROP_WINDOW,
	P2PKP_ST_DROP_DUP,
	P2PKP_ST_BUSY_SENT,
	P2PKP_ST_XFER_ABANDONED,
	P2PKP_ST_XFER_ABORTED,
	P2PKP_ST_PEERS_FAILED,
	P2PKP_ST_REFUSED_SIZE,
	P2PKP_ST_REFUSED_SPACE,
	P2PKP_ST_XFER_UNCONFIRMED,
	P2PKP_ST_REPLIES_LIMITED,
	P2PKP_ST_ACKS_SENT,
	P2PKP_ST_RATE_WAITS,
	P2PKP_ST_GSO_SENDS,
	P2PKP_NSTATS,
};

static const char * const p2pkp_stat_names[P2PKP_NSTATS] = {
	"files_sent", "files_received", "files_failed",
	"bytes_sent", "bytes_received",
	"dgrams_sent", "dgrams_received", "dgrams_retrans", "dgrams_dropped",
	"drop_short", "drop_magic", "drop_version", "drop_type",
	"drop_length", "drop_field", "drop_xfer", "drop_peer",
	"drop_window", "drop_dup", "busy_sent", "xfers_abandoned",
	"xfers_aborted", "peers_failed", "refused_size", "refused_space",
	"xfers_unconfirmed", "replies_limited", "acks_sent", "rate_waits",
	"gso_sends",
};

enum { P2PKP_IDLE, P2PKP_SENDING, P2PKP_WAITING, P2PKP_RECEIVING };
static const char * const p2pkp_state_names[] = {
	"idle", "sending", "waiting", "receiving",
};

/* Sender's view of one peer during a write(). */
enum { PS_IDLE, PS_START, PS_DATA, PS_END, PS_DONE, PS_FAILED };
static const char * const p2pkp_pstate_names[] = {
	"idle", "start", "data", "end", "done", "failed",
};

/* A kernel UDP socket whose callbacks wake the owning P2PKP socket. */
struct p2pkp_ksock {
	struct socket *sock;
	void (*saved_data_ready)(struct sock *sk);
	void (*saved_error_report)(struct sock *sk);
};

struct p2pkp_peer {
	struct sockaddr_storage addr;
	int addrlen;
	struct p2pkp_ksock ks;
	int state;			/* PS_* */
	int status;			/* 0 or -errno */
	u64 cum;			/* chunks acked in order */
	u64 next;			/* next chunk never sent */
	u64 high;			/* 1 + highest SACKed chunk */
	u32 win;			/* window from START_ACK */
	u32 srtt, rttvar, rto;		/* microseconds */
	bool rtt_valid;
	u64 last_rx;			/* ns: last valid datagram */
	u64 last_ctl;			/* ns: last START/END sent */
	u64 rto_ns;			/* ns: last timeout retransmission */
	u64 rack_ns;			/* ns: latest send time acknowledged */
	u64 sent, retrans;
	u32 peer_ts;			/* ts of the peer's last datagram */
	u64 peer_ts_ns;			/* ns: when it arrived (0: none) */
	DECLARE_BITMAP(sack, P2PKP_WIN);	/* relative to cum */
	u64 sent_ns[P2PKP_WIN];		/* by chunk % P2PKP_WIN */
};

struct p2pkp_sock {
	struct sock sk;			/* must be first */
	struct list_head node;		/* in p2pkp_list */
	struct mutex lock;		/* serialises calls on the socket */
	spinlock_t cfg_lock;		/* peers[], npeers, bound: for /proc */
	wait_queue_head_t wq;		/* woken by the UDP sockets */
	atomic_t events;
	int state;			/* P2PKP_IDLE.. */
	u32 timeout_ms;
	u64 rate;			/* sender: bytes/s, 0 = no cap */
	/* sender */
	struct p2pkp_peer *peers[P2PKP_MAX_PEERS];
	int npeers;
	/* receiver */
	bool bound;
	struct p2pkp_ksock rx;
	struct sockaddr_storage local;
	int local_len;
	u8 *rxbuf;			/* P2PKP_DGRAM_MAX */
	int pend_len;			/* > 0: rxbuf holds a datagram to handle */
	struct sockaddr_storage pend_addr;
	int pend_alen;
	u32 rl_tokens;			/* replies to non-active sources */
	u64 rl_ns;
	/* last finished transfer, to answer late START/END */
	bool last_valid;
	u64 last_id;
	struct sockaddr_storage last_addr;
	int last_status;
	struct p2pkp_transfer_info info;
	atomic64_t stats[P2PKP_NSTATS];
};

struct p2pkp_net {
	atomic64_t stats[P2PKP_NSTATS];
};

static int family = P2PKP_FAMILY_DEFAULT;
module_param(family, int, 0444);
MODULE_PARM_DESC(family, "address family number (default 12)");

static unsigned long long max_file_size = P2PKP_MAX_SIZE;
module_param(max_file_size, ullong, 0644);
MODULE_PARM_DESC(max_file_size,
		 "largest file a receiver accepts, bytes (default and max 1 TiB)");

static unsigned int p2pkp_net_id __read_mostly;
static LIST_HEAD(p2pkp_list);
static DEFINE_MUTEX(p2pkp_list_lock);

static inline struct p2pkp_sock *p2pkp_sk(struct sock *sk)
{
	return (struct p2pkp_sock *)sk;
}

static void p2pkp_stat(struct p2pkp_sock *ps, int idx, u64 n)
{
	struct p2pkp_net *pn = net_generic(sock_net(&ps->sk), p2pkp_net_id);

	atomic64_add(n, &ps->stats[idx]);
	atomic64_add(n, &pn->stats[idx]);
}

static void p2pkp_drop(struct p2pkp_sock *ps, int reason)
{
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_DROPPED, 1);
	p2pkp_stat(ps, reason, 1);
}

static u32 p2pkp_now_us(void)
{
	return (u32)ktime_to_us(ktime_get());
}

static u32 p2pkp_timeout_ns_to_jiffies(u64 ns)
{
	return nsecs_to_jiffies(ns) + 1;
}

/*
 * A transfer cannot be resumed, so only a real signal may end it: a job
 * control stop (SIGSTOP, SIGTSTP, a ptrace attach...) waits until the call
 * returns, as for a task in an uninterruptible disk wait.
 */
static bool p2pkp_stop_only(void)
{
	sigset_t pend;

	spin_lock_irq(&current->sighand->siglock);
	sigorsets(&pend, &current->pending.signal,
		  &current->signal->shared_pending.signal);
	sigandnsets(&pend, &pend, &current->blocked);
	spin_unlock_irq(&current->sighand->siglock);
	sigdelsetmask(&pend, sigmask(SIGSTOP) | sigmask(SIGTSTP) |
		      sigmask(SIGTTIN) | sigmask(SIGTTOU));
	return sigisemptyset(&pend);
}

static bool p2pkp_interrupted(void)
{
	return signal_pending(current) && !p2pkp_stop_only();
}

/*
 * Sleep until a kernel socket has news, a signal or @timeout (jiffies).
 * With a stop pending (see above), sleep killable and look again soon.
 */
static long p2pkp_wait(struct p2pkp_sock *ps, int seen, long timeout)
{
	if (signal_pending(current))
		return wait_event_killable_timeout(ps->wq,
				atomic_read(&ps->events) != seen,
				min_t(long, timeout, HZ / 10 + 1));
	return wait_event_interruptible_timeout(ps->wq,
						atomic_read(&ps->events) != seen,
						timeout);
}

/* ---- addresses ---------------------------------------------------- */

static int p2pkp_check_addr(const struct sockaddr *a, int len)
{
	if (len < (int)sizeof(sa_family_t))
		return -EINVAL;
	switch (a->sa_family) {
	case AF_INET:
		return len < (int)sizeof(struct sockaddr_in) ? -EINVAL :
			(int)sizeof(struct sockaddr_in);
	case AF_INET6:
		return len < (int)sizeof(struct sockaddr_in6) ? -EINVAL :
			(int)sizeof(struct sockaddr_in6);
	default:
		return -EAFNOSUPPORT;
	}
}

/* Copy the meaningful fields only (no padding, no flowinfo). */
static int p2pkp_copy_addr(struct sockaddr_storage *dst,
			   const struct sockaddr *src)
{
	memset(dst, 0, sizeof(*dst));
	if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src;
		struct sockaddr_in *d = (struct sockaddr_in *)dst;

		d->sin_family = AF_INET;
		d->sin_port = s->sin_port;
		d->sin_addr = s->sin_addr;
		return sizeof(*d);
	}
	if (src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)dst;

		d->sin6_family = AF_INET6;
		d->sin6_port = s->sin6_port;
		d->sin6_addr = s->sin6_addr;
		d->sin6_scope_id = s->sin6_scope_id;
		return sizeof(*d);
	}
	return 0;
}

static bool p2pkp_addr_eq(const struct sockaddr_storage *a,
			  const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;

		return x->sin6_port == y->sin6_port &&
		       ipv6_addr_equal(&x->sin6_addr, &y->sin6_addr);
	}
	return false;
}

static __be16 p2pkp_addr_port(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_port;
	return ((const struct sockaddr_in6 *)a)->sin6_port;
}

/* ---- kernel UDP sockets --------------------------------------------- */

static void p2pkp_wake(struct sock *sk)
{
	struct p2pkp_sock *ps;

	read_lock_bh(&sk->sk_callback_lock);
	ps = sk->sk_user_data;
	if (ps) {
		atomic_inc(&ps->events);
		wake_up_interruptible(&ps->wq);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void p2pkp_data_ready(struct sock *sk)
{
	p2pkp_wake(sk);
}

static void p2pkp_error_report(struct sock *sk)
{
	p2pkp_wake(sk);
}

static int p2pkp_ksock_open(struct p2pkp_sock *ps, struct p2pkp_ksock *ks,
			    int fam, int rcvbuf)
{
	struct sock *sk;
	int err;

	err = sock_create_kern(sock_net(&ps->sk), fam, SOCK_DGRAM, IPPROTO_UDP,
			       &ks->sock);
	if (err)
		return err;
	sk = ks->sock->sk;
	sock_set_rcvbuf(sk, rcvbuf);
	lock_sock(sk);
	sk->sk_userlocks |= SOCK_SNDBUF_LOCK;
	WRITE_ONCE(sk->sk_sndbuf, P2PKP_SNDBUF);
	release_sock(sk);

	write_lock_bh(&sk->sk_callback_lock);
	ks->saved_data_ready = sk->sk_data_ready;
	ks->saved_error_report = sk->sk_error_report;
	sk->sk_user_data = ps;
	sk->sk_data_ready = p2pkp_data_ready;
	sk->sk_error_report = p2pkp_error_report;
	write_unlock_bh(&sk->sk_callback_lock);
	return 0;
}

static void p2pkp_ksock_close(struct p2pkp_ksock *ks)
{
	struct sock *sk;

	if (!ks->sock)
		return;
	sk = ks->sock->sk;
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = NULL;
	sk->sk_data_ready = ks->saved_data_ready;
	sk->sk_error_report = ks->saved_error_report;
	write_unlock_bh(&sk->sk_callback_lock);
	sock_release(ks->sock);
	ks->sock = NULL;
}

/* ---- datagrams ---------------------------------------------------- */

static size_t p2pkp_hdr_fill(void *buf, u8 type, u16 flags, u64 id,
			     u32 echo)
{
	struct p2pkp_hdr *h = buf;

	h->magic = cpu_to_be32(P2PKP_MAGIC);
	h->version = P2PKP_VERSION;
	h->type = type;
	h->flags = cpu_to_be16(flags);
	h->id = cpu_to_be64(id);
	h->ts = cpu_to_be32(p2pkp_now_us());
	h->echo = cpu_to_be32(echo);
	return sizeof(*h);
}

/* Send hdr+body (+payload) on @sock, to @to if not connected. */
static int p2pkp_xmit(struct p2pkp_sock *ps, struct socket *sock,
		      struct sockaddr_storage *to, int tolen,
		      const void *pkt, size_t len, const void *payload,
		      size_t plen, int flags)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL | flags };
	struct kvec iov[2] = {
		{ .iov_base = (void *)pkt, .iov_len = len },
		{ .iov_base = (void *)payload, .iov_len = plen },
	};
	int ret;

	if (to) {
		msg.msg_name = to;
		msg.msg_namelen = tolen;
	}
	ret = kernel_sendmsg(sock, &msg, iov, plen ? 2 : 1, len + plen);
	if (ret < 0)
		return ret;
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_SENT, 1);
	return 0;
}

/*
 * Validate the fixed header and the exact length of a received datagram.
 * Returns the type, or 0 when it was dropped (and counted).
 */
static int p2pkp_parse(struct p2pkp_sock *ps, const u8 *buf, int len)
{
	const struct p2pkp_hdr *h = (const void *)buf;
	int body;

	if (len < (int)sizeof(*h)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_SHORT);
		return 0;
	}
	if (be32_to_cpu(h->magic) != P2PKP_MAGIC) {
		p2pkp_drop(ps, P2PKP_ST_DROP_MAGIC);
		return 0;
	}
	if (h->version != P2PKP_VERSION) {
		p2pkp_drop(ps, P2PKP_ST_DROP_VERSION);
		return 0;
	}
	if (h->type < P2PKP_T_START || h->type > P2PKP_T_MAX) {
		p2pkp_drop(ps, P2PKP_ST_DROP_TYPE);
		return 0;
	}
	body = len - (int)sizeof(*h);
	if (h->type == P2PKP_T_DATA ?
	    (body < p2pkp_body_len[h->type] ||
	     body > p2pkp_body_len[h->type] + P2PKP_CHUNK_SIZE) :
	    body != p2pkp_body_len[h->type]) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return 0;
	}
	return h->type;
}

static int p2pkp_errno_ok(s32 status)
{
	return status < 0 && status >= -MAX_ERRNO;
}

/* ---- sender ------------------------------------------------------- */

struct p2pkp_tx {
	struct file *file;
	u64 size, count, id;
	u64 start_ns;
	u8 *blk;			/* P2PKP_BLOCK_CHUNKS chunks */
	u64 blk_first, blk_n;
	u8 *one;			/* one chunk, for retransmissions */
	u64 one_idx;			/* the chunk in @one, U64_MAX: none */
	u8 *rbuf;			/* received datagram */
	u64 hashed;			/* bytes hashed in order */
	bool digest_done;
	struct sha256_state sha;
	u8 digest[P2PKP_DIGEST_SIZE];
	/* rate cap: token bucket of DATA payload bytes */
	u64 rate, burst, tokens, tok_ns;
	u64 pace_ns;			/* > 0: no tokens, retry after this */
	u64 cur[P2PKP_MAX_PEERS];	/* retransmission cursor per peer */
	u32 rto_left[P2PKP_MAX_PEERS];	/* timeout retransmissions allowed */
	/* a run of DATA datagrams sent with one UDP_SEGMENT call */
	bool no_gso;			/* the route refused it: one by one */
	struct kvec gvec[2 * P2PKP_GSO_CHUNKS];
	u8 ghdr[P2PKP_GSO_CHUNKS][P2PKP_DATA_HLEN];
};

static u32 p2pkp_chunk_len(u64 size, u64 count, u64 c)
{
	if (c + 1 < count)
		return P2PKP_CHUNK_SIZE;
	return size - c * P2PKP_CHUNK_SIZE;
}

static int p2pkp_read_full(struct file *f, u8 *buf, size_t len, loff_t pos)
{
	size_t done = 0;
	ssize_t r;

	while (done < len) {
		r = kernel_read(f, buf + done, len - done, &pos);
		if (r < 0)
			return r;
		if (r == 0)
			return -EIO;	/* the file shrank under us */
		done += r;
	}
	return 0;
}

/* A short write is retried so that its cause (ENOSPC, EDQUOT...) shows. */
static int p2pkp_write_full(struct file *f, const u8 *buf, size_t len,
			    loff_t pos)
{
	size_t done = 0;
	ssize_t w;

	while (done < len) {
		w = kernel_write(f, buf + done, len - done, &pos);
		if (w < 0)
			return w;
		if (w == 0)
			return -EIO;
		done += w;
	}
	return 0;
}

/* Return chunk @c, reading a whole block for new data (hashing in order). */
static const u8 *p2pkp_get_chunk(struct p2pkp_tx *tx, u64 c, bool retrans,
				 int *err)
{
	u64 pos, bytes, n;

	if (c >= tx->blk_first && c < tx->blk_first + tx->blk_n)
		return tx->blk + (c - tx->blk_first) * P2PKP_CHUNK_SIZE;
	pos = c * P2PKP_CHUNK_SIZE;
	if (retrans) {
		if (tx->one_idx == c)
			return tx->one;	/* several peers miss it: read once */
		tx->one_idx = U64_MAX;
		*err = p2pkp_read_full(tx->file, tx->one,
				       p2pkp_chunk_len(tx->size, tx->count, c),
				       pos);
		if (*err)
			return NULL;
		tx->one_idx = c;
		return tx->one;
	}
	n = min_t(u64, P2PKP_BLOCK_CHUNKS, tx->count - c);
	bytes = min_t(u64, n * P2PKP_CHUNK_SIZE, tx->size - pos);
	tx->blk_n = 0;
	*err = p2pkp_read_full(tx->file, tx->blk, bytes, pos);
	if (*err)
		return NULL;
	tx->blk_first = c;
	tx->blk_n = n;
	if (!tx->digest_done && tx->hashed >= pos && tx->hashed < pos + bytes) {
		sha256_update(&tx->sha, tx->blk + (tx->hashed - pos),
			      pos + bytes - tx->hashed);
		tx->hashed = pos + bytes;
	}
	return tx->blk;
}

static int p2pkp_tx_digest(struct p2pkp_tx *tx)
{
	u32 n;
	int err;

	if (tx->digest_done)
		return 0;
	tx->one_idx = U64_MAX;		/* @one is reused below */
	while (tx->hashed < tx->size) {
		n = min_t(u64, P2PKP_CHUNK_SIZE, tx->size - tx->hashed);
		err = p2pkp_read_full(tx->file, tx->one, n, tx->hashed);
		if (err)
			return err;
		sha256_update(&tx->sha, tx->one, n);
		tx->hashed += n;
	}
	sha256_final(&tx->sha, tx->digest);
	tx->digest_done = true;
	return 0;
}

static void p2pkp_peer_fail(struct p2pkp_sock *ps, struct p2pkp_peer *p,
			    int status)
{
	if (p->state == PS_DONE || p->state == PS_FAILED)
		return;
	WRITE_ONCE(p->state, PS_FAILED);
	WRITE_ONCE(p->status, status);
	p2pkp_stat(ps, P2PKP_ST_PEERS_FAILED, 1);
}

static bool p2pkp_peer_active(const struct p2pkp_peer *p)
{
	return p->state >= PS_START && p->state <= PS_END;
}

/* Send a control datagram (no payload) to a connected peer. */
static int p2pkp_tx_ctl(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			struct p2pkp_peer *p, u8 type, const void *body,
			size_t blen)
{
	u8 pkt[P2PKP_PKT_MAX];
	size_t n = p2pkp_hdr_fill(pkt, type, 0, tx->id, 0);
	int err;

	memcpy(pkt + n, body, blen);
	err = p2pkp_xmit(ps, p->ks.sock, NULL, 0, pkt, n + blen, NULL, 0,
			 MSG_DONTWAIT);
	if (!err)
		p->sent++;
	return err;
}

static void p2pkp_rtt_sample(struct p2pkp_peer *p, const struct p2pkp_hdr *h)
{
	u32 r;

	if (!(be16_to_cpu(h->flags) & P2PKP_F_ECHO))
		return;
	r = p2pkp_now_us() - be32_to_cpu(h->echo);
	if (r > 60 * USEC_PER_SEC)
		return;
	if (!p->rtt_valid) {
		p->srtt = r;
		p->rttvar = r / 2;
		p->rtt_valid = true;
	} else {
		u32 d = r > p->srtt ? r - p->srtt : p->srtt - r;

		p->rttvar = (3 * p->rttvar + d) / 4;
		p->srtt = (7 * p->srtt + r) / 8;
	}
	p->rto = clamp_t(u32, p->srtt + max_t(u32, 4 * p->rttvar, 10000),
			 P2PKP_RTO_MIN_US, P2PKP_RTO_MAX_US);
}

static void p2pkp_tx_ack(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			 struct p2pkp_peer *p, const struct p2pkp_hdr *h)
{
	const struct p2pkp_ack *a = (const void *)(h + 1);
	u64 cum = be64_to_cpu(a->cum);
	u32 i;

	if (be32_to_cpu(a->nbits) != P2PKP_WIN || cum > p->next ||
	    cum > tx->count) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	p2pkp_rtt_sample(p, h);
	if (cum < p->cum)
		return;		/* reordered, stale */
	/* newly acknowledged chunks: the latest time one of them was sent */
	for (i = 0; p->cum + i < p->next && i < P2PKP_WIN; i++) {
		u64 c = p->cum + i;

		if (test_bit(i, p->sack))
			continue;
		if (c < cum || (c - cum < P2PKP_WIN &&
				(a->bitmap[(c - cum) / 8] & (1U << ((c - cum) % 8)))))
			p->rack_ns = max(p->rack_ns, p->sent_ns[c % P2PKP_WIN]);
	}
	p->cum = cum;
	bitmap_zero(p->sack, P2PKP_WIN);
	p->high = cum;
	for (i = 0; i < P2PKP_WIN && cum + i < p->next; i++) {
		if (a->bitmap[i / 8] & (1U << (i % 8))) {
			__set_bit(i, p->sack);
			p->high = cum + i + 1;
		}
	}
	if (p->cum == tx->count && p->state == PS_DATA) {
		p->state = PS_END;
		p->last_ctl = 0;
	}
}

static void p2pkp_tx_input(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			   struct p2pkp_peer *p)
{
	const struct p2pkp_hdr *h = (const void *)tx->rbuf;
	int budget = P2PKP_RX_BUDGET;

	while (budget-- && p2pkp_peer_active(p)) {
		struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
		struct kvec vec = { tx->rbuf, P2PKP_DGRAM_MAX };
		const void *body = h + 1;
		int n, type;
		s32 st;

		n = kernel_recvmsg(p->ks.sock, &msg, &vec, 1, P2PKP_DGRAM_MAX,
				   MSG_DONTWAIT);
		if (n == -EAGAIN || n == -EINTR || n == -ERESTARTSYS)
			return;
		if (n < 0) {		/* ICMP error: ECONNREFUSED, ... */
			p2pkp_peer_fail(ps, p, n);
			return;
		}
		p2pkp_stat(ps, P2PKP_ST_DGRAMS_RECEIVED, 1);
		if (msg.msg_flags & MSG_TRUNC) {
			p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
			continue;
		}
		type = p2pkp_parse(ps, tx->rbuf, n);
		if (!type)
			continue;
		if (be64_to_cpu(h->id) != tx->id) {
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
			continue;
		}
		/* echoed in DATA: the receiver's RTT, for its ACK pacing */
		p->peer_ts = be32_to_cpu(h->ts);
		p->peer_ts_ns = ktime_get_ns();
		switch (type) {
		case P2PKP_T_START_ACK: {
			const struct p2pkp_start_ack *sa = body;
			u32 w = be32_to_cpu(sa->window);

			if (!w) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			p->last_rx = ktime_get_ns();
			if (p->state != PS_START)
				continue;
			p2pkp_rtt_sample(p, h);
			p->win = min_t(u32, w, P2PKP_WIN);
			p->state = tx->count ? PS_DATA : PS_END;
			p->last_ctl = 0;
			break;
		}
		case P2PKP_T_BUSY:
			p->last_rx = ktime_get_ns();
			break;
		case P2PKP_T_ACK:
			p->last_rx = ktime_get_ns();
			if (p->state == PS_DATA || p->state == PS_END)
				p2pkp_tx_ack(ps, tx, p, h);
			break;
		case P2PKP_T_DONE:
			st = (s32)be32_to_cpu(((const struct p2pkp_status *)body)->status);
			if (st && !p2pkp_errno_ok(st)) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			p->last_rx = ktime_get_ns();
			if (!st && p->state != PS_END) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			p2pkp_tx_ctl(ps, tx, p, P2PKP_T_DONE_ACK, NULL, 0);
			if (st) {
				p2pkp_peer_fail(ps, p, st);
			} else {
				p->cum = tx->count;
				WRITE_ONCE(p->state, PS_DONE);
			}
			break;
		case P2PKP_T_ABORT:
			p2pkp_peer_fail(ps, p, -ECONNRESET);
			break;
		default:
			p2pkp_drop(ps, P2PKP_ST_DROP_TYPE);
			break;
		}
	}
}

/* Fill the DATA header of chunk @c to @p; the chunk counts as sent now. */
static void p2pkp_data_hdr(struct p2pkp_tx *tx, struct p2pkp_peer *p,
			   u8 *pkt, u64 c, u16 flags, u64 now)
{
	struct p2pkp_data *d = (void *)(pkt + sizeof(struct p2pkp_hdr));
	u32 echo = 0;

	if (p->peer_ts_ns) {
		/* the peer's ts plus how long we held it: it sees the RTT */
		echo = p->peer_ts + (u32)div_u64(now - p->peer_ts_ns,
						 NSEC_PER_USEC);
		flags |= P2PKP_F_ECHO;
	}
	p2pkp_hdr_fill(pkt, P2PKP_T_DATA, flags, tx->id, echo);
	d->index = cpu_to_be64(c);
	p->sent_ns[c % P2PKP_WIN] = now;
}

/* A send error that is only a loss: the chunk goes again later. */
static bool p2pkp_soft_err(int err)
{
	return err == -EAGAIN || err == -ENOBUFS || err == -ENOMEM ||
	       err == -EINTR || err == -ERESTARTSYS;
}

static void p2pkp_data_sent(struct p2pkp_sock *ps, struct p2pkp_peer *p,
			    u32 n, u64 bytes, bool retrans)
{
	p->sent += n;
	p2pkp_stat(ps, P2PKP_ST_BYTES_SENT, bytes);
	if (retrans) {
		p->retrans += n;
		p2pkp_stat(ps, P2PKP_ST_DGRAMS_RETRANS, n);
	}
}

static int p2pkp_tx_data_one(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     struct p2pkp_peer *p, u64 c, const u8 *data,
			     u16 flags, bool retrans)
{
	u8 pkt[P2PKP_DATA_HLEN];
	u32 plen = p2pkp_chunk_len(tx->size, tx->count, c);
	int err;

	p2pkp_data_hdr(tx, p, pkt, c, flags, ktime_get_ns());
	err = p2pkp_xmit(ps, p->ks.sock, NULL, 0, pkt, sizeof(pkt), data,
			 plen, 0);
	if (p2pkp_soft_err(err))
		return 0;	/* like a loss: retransmitted later */
	if (err) {
		p2pkp_peer_fail(ps, p, err);
		return 0;
	}
	p2pkp_data_sent(ps, p, 1, plen, retrans);
	return 0;
}

/* ACK at once for the file's last chunk, the window's last and its middle. */
static u16 p2pkp_new_flags(const struct p2pkp_tx *tx,
			   const struct p2pkp_peer *p, u64 c)
{
	if (c + 1 == tx->count || c + 1 == p->cum + p->win ||
	    c + 1 == p->cum + p->win / 2)
		return P2PKP_F_ACKREQ;
	return 0;
}

/* Payload bytes of chunks @c .. @c + @n - 1. */
static u64 p2pkp_run_len(const struct p2pkp_tx *tx, u64 c, u32 n)
{
	return min_t(u64, (u64)n * P2PKP_CHUNK_SIZE,
		     tx->size - c * P2PKP_CHUNK_SIZE);
}

/*
 * Send new chunks @c .. @c + @n - 1, all in tx->blk, to @p with one
 * UDP_SEGMENT send: routed and queued once and the NIC kicked once, then
 * cut into @n datagrams (every one with its own header) by the stack or
 * the NIC.  A route that cannot (no checksum offload: EIO; path MTU below
 * one datagram: EINVAL, EMSGSIZE) turns batching off for this file.
 */
static void p2pkp_tx_data_run(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			      struct p2pkp_peer *p, u64 c, u32 n)
{
	union {
		struct cmsghdr cm;
		u8 buf[CMSG_SPACE(sizeof(u16))];
	} ctl = {};
	struct msghdr msg = {
		.msg_control = &ctl,
		.msg_controllen = sizeof(ctl),
		.msg_flags = MSG_NOSIGNAL,
	};
	const u8 *data = tx->blk + (c - tx->blk_first) * P2PKP_CHUNK_SIZE;
	u64 now = ktime_get_ns();
	u64 bytes = p2pkp_run_len(tx, c, n);
	u32 i;
	int err;

	if (n > 1 && !tx->no_gso) {
		for (i = 0; i < n; i++) {
			u8 *hdr = tx->ghdr[i];

			p2pkp_data_hdr(tx, p, hdr, c + i,
				       p2pkp_new_flags(tx, p, c + i), now);
			tx->gvec[2 * i].iov_base = hdr;
			tx->gvec[2 * i].iov_len = P2PKP_DATA_HLEN;
			tx->gvec[2 * i + 1].iov_base =
				(void *)data + i * P2PKP_CHUNK_SIZE;
			tx->gvec[2 * i + 1].iov_len =
				p2pkp_chunk_len(tx->size, tx->count, c + i);
		}
		ctl.cm.cmsg_level = SOL_UDP;
		ctl.cm.cmsg_type = UDP_SEGMENT;
		ctl.cm.cmsg_len = CMSG_LEN(sizeof(u16));
		*(u16 *)CMSG_DATA(&ctl.cm) = P2PKP_DATA_HLEN + P2PKP_CHUNK_SIZE;
		err = kernel_sendmsg(p->ks.sock, &msg, tx->gvec, 2 * n,
				     n * P2PKP_DATA_HLEN + bytes);
		if (err >= 0) {
			p2pkp_stat(ps, P2PKP_ST_DGRAMS_SENT, n);
			p2pkp_stat(ps, P2PKP_ST_GSO_SENDS, 1);
			p2pkp_data_sent(ps, p, n, bytes, false);
			return;
		}
		if (p2pkp_soft_err(err))
			return;		/* like a loss */
		if (err != -EIO && err != -EINVAL && err != -EMSGSIZE) {
			p2pkp_peer_fail(ps, p, err);
			return;
		}
		tx->no_gso = true;
	}
	for (i = 0; i < n && p->state == PS_DATA; i++)
		p2pkp_tx_data_one(ps, tx, p, c + i,
				  data + i * P2PKP_CHUNK_SIZE,
				  p2pkp_new_flags(tx, p, c + i), false);
}

/*
 * Rate cap: may @len more DATA bytes go now?  If not, tx->pace_ns says
 * how long until they may.  Tokens accrue at tx->rate up to tx->burst.
 */
static bool p2pkp_pace(struct p2pkp_sock *ps, struct p2pkp_tx *tx, u32 len)
{
	u64 now, add;

	if (!tx->rate)
		return true;
	now = ktime_get_ns();
	add = mul_u64_u64_div_u64(now - tx->tok_ns, tx->rate, NSEC_PER_SEC);
	if (tx->tokens + add >= tx->burst) {
		tx->tokens = tx->burst;
		tx->tok_ns = now;
	} else if (add) {
		tx->tokens += add;
		tx->tok_ns += mul_u64_u64_div_u64(add, NSEC_PER_SEC, tx->rate);
	}
	if (tx->tokens >= len) {
		tx->tokens -= len;
		return true;
	}
	tx->pace_ns = mul_u64_u64_div_u64(len - tx->tokens, NSEC_PER_SEC,
					  tx->rate) + 1;
	p2pkp_stat(ps, P2PKP_ST_RATE_WAITS, 1);
	return false;
}

/*
 * Is chunk @c of @p lost by the SACK rule?  (RACK-like, RFC 8985: a chunk
 * sent at least srtt/4 + 1 ms after it was acknowledged, and it is older
 * than 1.25 srtt + 1 ms.)  Once resent, it needs new evidence: a chunk
 * sent after the retransmission must be acknowledged, else only the RTO.
 */
static bool p2pkp_sack_due(const struct p2pkp_peer *p, u64 c, u64 now)
{
	u64 sent = p->sent_ns[c % P2PKP_WIN];
	u64 reo = (u64)(p->rtt_valid ? p->srtt / 4 + 1000 :
			P2PKP_RTO_INIT_US) * NSEC_PER_USEC;
	u64 srtt = (u64)(p->rtt_valid ? p->srtt : 0) * NSEC_PER_USEC;

	return sent + reo <= p->rack_ns && now - sent > srtt + reo;
}

/*
 * First chunk >= @c that peer @p needs again now, or U64_MAX.  Chunks due
 * only by timeout count when @rto_ok (at most P2PKP_RTO_BURST per RTO).
 */
static u64 p2pkp_lost(const struct p2pkp_peer *p, u64 c, u64 now,
		      bool rto_ok)
{
	if (p->state != PS_DATA)
		return U64_MAX;
	for (c = max(c, p->cum); c < p->next; c++) {
		if (test_bit(c - p->cum, p->sack))
			continue;
		if (p2pkp_sack_due(p, c, now) ||
		    (rto_ok && now - p->sent_ns[c % P2PKP_WIN] >
		     (u64)p->rto * NSEC_PER_USEC))
			return c;
	}
	return U64_MAX;
}

/*
 * Retransmit in one pass in chunk order over all peers: a chunk several
 * peers miss is read once and sent to each of them.
 */
static int p2pkp_tx_retrans(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	DECLARE_BITMAP(backoff, P2PKP_MAX_PEERS);
	u64 c, now = ktime_get_ns();
	const u8 *data;
	int i, err = 0;

	bitmap_zero(backoff, P2PKP_MAX_PEERS);
	for (i = 0; i < ps->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		/*
		 * After a timeout only the first P2PKP_RTO_BURST chunks go
		 * again, once per RTO (which doubles): a dead peer does not
		 * get its whole window every RTO; its ACKs, if it lives,
		 * bring the rest back through the SACK rule.
		 */
		tx->rto_left[i] = now - p->rto_ns >= (u64)p->rto * NSEC_PER_USEC ?
				  P2PKP_RTO_BURST : 0;
		tx->cur[i] = p2pkp_lost(p, 0, now, tx->rto_left[i]);
	}
	for (;;) {
		c = U64_MAX;
		for (i = 0; i < ps->npeers; i++)
			c = min(c, tx->cur[i]);
		if (c == U64_MAX)
			break;
		data = p2pkp_get_chunk(tx, c, true, &err);
		if (!data)
			break;
		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];
			bool rto;

			if (tx->cur[i] != c)
				continue;
			if (!p2pkp_pace(ps, tx,
					p2pkp_chunk_len(tx->size, tx->count, c)))
				goto out;
			rto = !p2pkp_sack_due(p, c, now);
			if (rto) {
				__set_bit(i, backoff);
				p->rto_ns = now;
				tx->rto_left[i]--;
			}
			p2pkp_tx_data_one(ps, tx, p, c, data,
					  rto ? P2PKP_F_ACKREQ : 0, true);
			tx->cur[i] = p2pkp_lost(p, c + 1, now, tx->rto_left[i]);
		}
	}
out:
	for_each_set_bit(i, backoff, P2PKP_MAX_PEERS)
		ps->peers[i]->rto = min(ps->peers[i]->rto * 2,
					P2PKP_RTO_MAX_US);
	return err;
}

static bool p2pkp_may_send(const struct p2pkp_tx *tx,
			   const struct p2pkp_peer *p)
{
	return p->state == PS_DATA && p->next < tx->count &&
	       p->next < p->cum + p->win;
}

/* Retransmit what is lost, then send new chunks within every window. */
static int p2pkp_tx_data(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	int i, err = 0;
	u64 c, end;
	u32 n;

	tx->pace_ns = 0;
	err = p2pkp_tx_retrans(ps, tx);
	if (err || tx->pace_ns)
		return err;

	for (;;) {
		c = U64_MAX;
		for (i = 0; i < ps->npeers; i++)
			if (p2pkp_may_send(tx, ps->peers[i]))
				c = min(c, ps->peers[i]->next);
		if (c == U64_MAX)
			break;
		if (p2pkp_interrupted())
			return -EINTR;
		if (!p2pkp_get_chunk(tx, c, false, &err))
			return err;
		/* every peer gets the run of this block it may have */
		end = tx->blk_first + tx->blk_n;
		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			if (!p2pkp_may_send(tx, p) || p->next < tx->blk_first ||
			    p->next >= end)
				continue;
			n = min_t(u64, end, p->cum + p->win) - p->next;
			n = min_t(u32, n, P2PKP_GSO_CHUNKS);
			if (tx->rate)	/* a run must fit in the bucket */
				n = clamp_t(u32, div_u64(tx->burst,
							 P2PKP_CHUNK_SIZE),
					    1, n);
			if (!p2pkp_pace(ps, tx, p2pkp_run_len(tx, p->next, n)))
				return 0;
			p2pkp_tx_data_run(ps, tx, p, p->next, n);
			p->next += n;
		}
		cond_resched();
	}
	return 0;
}

static void p2pkp_tx_control(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     struct p2pkp_peer *p, u64 now)
{
	if (p->state != PS_START && p->state != PS_END)
		return;
	if (p->last_ctl && now - p->last_ctl < (u64)p->rto * NSEC_PER_USEC)
		return;
	if (p->last_ctl)
		p->rto = min(p->rto * 2, P2PKP_RTO_MAX_US);
	p->last_ctl = now;
	if (p->state == PS_START) {
		struct p2pkp_start st = {
			.size = cpu_to_be64(tx->size),
			.count = cpu_to_be64(tx->count),
			.chunk = cpu_to_be32(P2PKP_CHUNK_SIZE),
		};

		p2pkp_tx_ctl(ps, tx, p, P2PKP_T_START, &st, sizeof(st));
	} else {
		struct p2pkp_end end = { .size = cpu_to_be64(tx->size) };

		memcpy(end.digest, tx->digest, sizeof(end.digest));
		p2pkp_tx_ctl(ps, tx, p, P2PKP_T_END, &end, sizeof(end));
	}
}

static void p2pkp_drain(struct socket *sock, u8 *buf)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec vec = { buf, P2PKP_DGRAM_MAX };
	int n = 0;

	while (n++ < 4096 &&
	       kernel_recvmsg(sock, &msg, &vec, 1, P2PKP_DGRAM_MAX,
			      MSG_DONTWAIT) >= 0)
		;
}

static int p2pkp_send_file(struct p2pkp_sock *ps, struct file *f)
{
	u64 timeout_ns = (u64)ps->timeout_ms * NSEC_PER_MSEC;
	struct p2pkp_tx *tx;
	int i, err = 0, first = 0;

	tx = kzalloc(sizeof(*tx), GFP_KERNEL);
	if (!tx)
		return -ENOMEM;
	tx->blk = kvmalloc(P2PKP_BLOCK_CHUNKS * P2PKP_CHUNK_SIZE, GFP_KERNEL);
	tx->one = kmalloc(P2PKP_CHUNK_SIZE, GFP_KERNEL);
	tx->rbuf = kmalloc(P2PKP_DGRAM_MAX, GFP_KERNEL);
	if (!tx->blk || !tx->one || !tx->rbuf) {
		err = -ENOMEM;
		goto out;
	}
	tx->file = f;
	tx->size = i_size_read(file_inode(f));
	if (tx->size > P2PKP_MAX_SIZE) {
		err = -EFBIG;
		goto out;
	}
	tx->count = DIV_ROUND_UP_ULL(tx->size, P2PKP_CHUNK_SIZE);
	tx->one_idx = U64_MAX;
	tx->rate = READ_ONCE(ps->rate);
	/* ~16 ms of sending, at least two chunks */
	tx->burst = max_t(u64, tx->rate / 64, 2 * P2PKP_CHUNK_SIZE);
	tx->tokens = tx->burst;
	tx->tok_ns = ktime_get_ns();
	do {
		tx->id = get_random_u64();
	} while (!tx->id);
	sha256_init(&tx->sha);
	tx->start_ns = ktime_get_ns();

	for (i = 0; i < ps->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		p2pkp_drain(p->ks.sock, tx->rbuf);
		sock_error(p->ks.sock->sk);	/* forget old ICMP errors */
		p->status = 0;
		p->cum = 0;
		p->next = 0;
		p->high = 0;
		p->win = 0;
		p->rto = P2PKP_RTO_INIT_US;
		p->rtt_valid = false;
		p->last_rx = tx->start_ns;
		p->last_ctl = 0;
		p->rto_ns = 0;
		p->rack_ns = 0;
		p->sent = 0;
		p->retrans = 0;
		p->peer_ts_ns = 0;
		bitmap_zero(p->sack, P2PKP_WIN);
		WRITE_ONCE(p->state, PS_START);
	}
	WRITE_ONCE(ps->state, P2PKP_SENDING);

	for (;;) {
		int seen = atomic_read(&ps->events);
		u64 now, wait_ns = U64_MAX;
		int active = 0;

		for (i = 0; i < ps->npeers; i++)
			p2pkp_tx_input(ps, tx, ps->peers[i]);
		if (p2pkp_interrupted()) {
			err = -EINTR;
			break;
		}
		now = ktime_get_ns();
		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			if (!p2pkp_peer_active(p))
				continue;
			if (now - p->last_rx > timeout_ns) {
				p2pkp_peer_fail(ps, p, -ETIMEDOUT);
				continue;
			}
			if (p->state == PS_END) {
				err = p2pkp_tx_digest(tx);
				if (err)
					break;
			}
			p2pkp_tx_control(ps, tx, p, now);
			active++;
			wait_ns = min(wait_ns, (u64)p->rto * NSEC_PER_USEC);
			wait_ns = min(wait_ns, p->last_rx + timeout_ns - now);
		}
		if (err || !active)
			break;
		err = p2pkp_tx_data(ps, tx);
		if (err)
			break;
		if (tx->pace_ns)	/* rate cap: sleep until tokens */
			wait_ns = min(wait_ns, tx->pace_ns);
		/* a signal is looked at on the next round */
		p2pkp_wait(ps, seen, p2pkp_timeout_ns_to_jiffies(wait_ns));
	}

	if (err) {
		struct p2pkp_status ab = {
			.status = cpu_to_be32(err == -EINTR ? EINTR : EIO),
		};

		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			if (!p2pkp_peer_active(p))
				continue;
			p2pkp_tx_ctl(ps, tx, p, P2PKP_T_ABORT, &ab, sizeof(ab));
			p2pkp_peer_fail(ps, p, err);
		}
	} else {
		for (i = 0; i < ps->npeers; i++) {
			if (ps->peers[i]->state == PS_FAILED) {
				first = ps->peers[i]->status;
				break;
			}
		}
		err = first;
	}

	memset(&ps->info, 0, sizeof(ps->info));
	memcpy(&ps->info.peer, &ps->peers[0]->addr, sizeof(ps->info.peer));
	ps->info.id = tx->id;
	ps->info.size = tx->size;
	ps->info.duration_ns = ktime_get_ns() - tx->start_ns;
	if (tx->digest_done)
		memcpy(ps->info.digest, tx->digest, sizeof(ps->info.digest));
	ps->info.status = err;
	p2pkp_stat(ps, err ? P2PKP_ST_FILES_FAILED : P2PKP_ST_FILES_SENT, 1);
	WRITE_ONCE(ps->state, P2PKP_IDLE);
out:
	kfree(tx->rbuf);
	kfree(tx->one);
	kvfree(tx->blk);
	kfree(tx);
	return err;
}

static int p2pkp_sendmsg(struct socket *sock, struct msghdr *msg, size_t len)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	size_t n = min_t(size_t, len, P2PKP_PATH_MAX + 1);
	struct path pp;
	struct file *f;
	char *path;
	int err;

	if (msg->msg_flags & MSG_OOB)
		return -EOPNOTSUPP;
	if (!len)
		return -EINVAL;
	path = kmalloc(n + 1, GFP_KERNEL);
	if (!path)
		return -ENOMEM;
	if (copy_from_iter(path, n, &msg->msg_iter) != n) {
		err = -EFAULT;
		goto out;
	}
	path[n] = '\0';
	n = strnlen(path, n);
	if (n > P2PKP_PATH_MAX) {
		err = -ENAMETOOLONG;
		goto out;
	}
	if (!n || path[0] != '/') {
		err = -EINVAL;
		goto out;
	}
	err = mutex_lock_interruptible(&ps->lock);
	if (err) {
		err = -EINTR;
		goto out;
	}
	if (!ps->npeers) {
		err = -EDESTADDRREQ;
		goto unlock;
	}
	/* no open() of FIFOs or devices: it could block or have effects */
	err = kern_path(path, LOOKUP_FOLLOW, &pp);
	if (err)
		goto unlock;
	if (!d_is_reg(pp.dentry))
		err = -EINVAL;
	path_put(&pp);
	if (err)
		goto unlock;
	f = filp_open(path, O_RDONLY | O_LARGEFILE, 0);
	if (IS_ERR(f)) {
		err = PTR_ERR(f);
		goto unlock;
	}
	if (!S_ISREG(file_inode(f)->i_mode))
		err = -EINVAL;
	else
		err = p2pkp_send_file(ps, f);
	filp_close(f, NULL);
unlock:
	mutex_unlock(&ps->lock);
out:
	kfree(path);
	return err ? err : (int)min_t(size_t, len, INT_MAX);
}

/* ---- receiver ----------------------------------------------------- */

enum { RS_IDLE, RS_RECV, RS_LINGER };

struct p2pkp_rx {
	const char *path;		/* final absolute path */
	const char *base;		/* its last component */
	char *tmp;			/* temporary path */
	struct file *file;		/* the temporary file */
	int state;			/* RS_* */
	bool finished;
	int result;			/* 0 or -errno for read() */
	u64 id, size, count, cum;
	struct sockaddr_storage from;
	int fromlen;
	u64 start_ns, last_rx, linger_end;
	u32 unacked;
	bool ooo_acked;
	bool confirmed;			/* DATA or END seen from the sender */
	u32 echo;			/* ts of the last DATA */
	u32 srtt;			/* us, from DATA echoes; 0: unknown */
	u64 last_ack_ns;
	u32 credit;			/* bytes of ACK the sender has paid for */
	struct path dir;		/* destination directory (statfs) */
	struct sha256_state sha;
	DECLARE_BITMAP(ring, P2PKP_WIN);	/* by chunk % P2PKP_WIN */
	u8 chunk[P2PKP_CHUNK_SIZE];
};

/* Token bucket for replies to sources other than the confirmed sender. */
static bool p2pkp_rx_rl(struct p2pkp_sock *ps)
{
	u64 now = ktime_get_ns();
	u64 add = div64_u64((now - ps->rl_ns) * P2PKP_RL_PER_SEC, NSEC_PER_SEC);

	if (add) {
		ps->rl_tokens = min_t(u64, ps->rl_tokens + add, P2PKP_RL_BURST);
		ps->rl_ns += add * (NSEC_PER_SEC / P2PKP_RL_PER_SEC);
		if (ps->rl_tokens == P2PKP_RL_BURST)
			ps->rl_ns = now;
	}
	if (!ps->rl_tokens)
		return false;
	ps->rl_tokens--;
	return true;
}

/*
 * Send a reply.  Only the sender of the accepted transfer, once it has
 * sent DATA or END, is answered freely (its ACKs are bounded by credit,
 * see p2pkp_rx_send_ack); any other source (spoofable) is answered at most
 * P2PKP_RL_PER_SEC times a second, and never with more bytes than it sent.
 */
static void p2pkp_rx_reply(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			   struct sockaddr_storage *to, int tolen, u8 type,
			   u64 id, u32 echo, const void *body, size_t blen)
{
	u8 pkt[P2PKP_PKT_MAX];
	size_t n;

	if (!(rx->state != RS_IDLE && rx->confirmed &&
	      p2pkp_addr_eq(to, &rx->from)) && !p2pkp_rx_rl(ps)) {
		p2pkp_stat(ps, P2PKP_ST_REPLIES_LIMITED, 1);
		return;
	}
	n = p2pkp_hdr_fill(pkt, type, P2PKP_F_ECHO, id, echo);
	memcpy(pkt + n, body, blen);
	p2pkp_xmit(ps, ps->rx.sock, to, tolen, pkt, n + blen, NULL, 0,
		   MSG_DONTWAIT);
}

/* Gap between two ACKs: srtt/4 within P2PKP_ACK_MIN_US..P2PKP_ACK_MAX_US. */
static u64 p2pkp_rx_ack_ivl(const struct p2pkp_rx *rx)
{
	return (u64)clamp_t(u32, rx->srtt / 4, P2PKP_ACK_MIN_US,
			    P2PKP_ACK_MAX_US) * NSEC_PER_USEC;
}

static void p2pkp_rx_send_ack(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	struct p2pkp_ack a = {
		.cum = cpu_to_be64(rx->cum),
		.nbits = cpu_to_be32(P2PKP_WIN),
	};
	u32 i, cost = sizeof(struct p2pkp_hdr) + sizeof(a);

	rx->last_ack_ns = ktime_get_ns();
	/* an ACK is larger than a short DATA/END: never amplify */
	if (rx->credit < cost) {
		p2pkp_stat(ps, P2PKP_ST_REPLIES_LIMITED, 1);
		return;
	}
	rx->credit -= cost;
	for (i = 1; i < P2PKP_WIN && rx->cum + i < rx->count; i++)
		if (test_bit((rx->cum + i) % P2PKP_WIN, rx->ring))
			a.bitmap[i / 8] |= 1U << (i % 8);
	p2pkp_rx_reply(ps, rx, &rx->from, rx->fromlen, P2PKP_T_ACK, rx->id,
		       rx->echo, &a, sizeof(a));
	p2pkp_stat(ps, P2PKP_ST_ACKS_SENT, 1);
	rx->unacked = 0;
}

static void p2pkp_rx_send_status(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
				 struct sockaddr_storage *to, int tolen,
				 u8 type, u64 id, u32 echo, s32 status)
{
	struct p2pkp_status st = { .status = cpu_to_be32(status) };

	p2pkp_rx_reply(ps, rx, to, tolen, type, id, echo, &st, sizeof(st));
}

/* Unlink the temporary file (if still there) and close it. */
static void p2pkp_rx_discard(struct p2pkp_rx *rx)
{
	struct dentry *d, *parent;
	struct vfsmount *mnt;

	if (!rx->file)
		return;
	d = dget(rx->file->f_path.dentry);
	mnt = rx->file->f_path.mnt;
	parent = dget_parent(d);
	if (!mnt_want_write(mnt)) {
		inode_lock_nested(d_inode(parent), I_MUTEX_PARENT);
		if (d->d_parent == parent && !d_unhashed(d) &&
		    d_really_is_positive(d))
			vfs_unlink(mnt_user_ns(mnt), d_inode(parent), d, NULL);
		inode_unlock(d_inode(parent));
		mnt_drop_write(mnt);
	}
	dput(parent);
	dput(d);
	filp_close(rx->file, NULL);
	rx->file = NULL;
}

/* Give the verified temporary file its mode and final name. */
static int p2pkp_rx_commit(struct p2pkp_rx *rx)
{
	struct dentry *d = rx->file->f_path.dentry;
	struct vfsmount *mnt = rx->file->f_path.mnt;
	struct user_namespace *uns = mnt_user_ns(mnt);
	struct inode *inode = d_inode(d);
	struct dentry *parent, *newd;
	struct iattr ia = {};
	int err;

	err = mnt_want_write(mnt);
	if (err)
		return err;
	inode_lock(inode);
	ia.ia_valid = ATTR_MODE | ATTR_CTIME;
	ia.ia_mode = ((0666 & ~current_umask()) & S_IALLUGO) |
		     (inode->i_mode & ~S_IALLUGO);
	err = notify_change(uns, d, &ia, NULL);
	inode_unlock(inode);
	if (err)
		goto out;

	parent = dget_parent(d);
	lock_rename(parent, parent);
	if (d->d_parent != parent || d_unhashed(d)) {
		err = -ENOENT;
	} else {
		newd = lookup_one(uns, rx->base, parent, strlen(rx->base));
		if (IS_ERR(newd)) {
			err = PTR_ERR(newd);
		} else {
			struct renamedata rd = {
				.old_mnt_userns = uns,
				.old_dir = d_inode(parent),
				.old_dentry = d,
				.new_mnt_userns = uns,
				.new_dir = d_inode(parent),
				.new_dentry = newd,
			};

			err = vfs_rename(&rd);
			dput(newd);
		}
	}
	unlock_rename(parent, parent);
	dput(parent);
out:
	mnt_drop_write(mnt);
	return err;
}

static void p2pkp_rx_remember(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			      int status, const u8 *digest)
{
	ps->last_valid = true;
	ps->last_id = rx->id;
	ps->last_addr = rx->from;
	ps->last_status = status;
	memset(&ps->info, 0, sizeof(ps->info));
	memcpy(&ps->info.peer, &rx->from, sizeof(ps->info.peer));
	ps->info.id = rx->id;
	ps->info.size = rx->size;
	ps->info.duration_ns = ktime_get_ns() - rx->start_ns;
	if (digest)
		memcpy(ps->info.digest, digest, P2PKP_DIGEST_SIZE);
	ps->info.status = status;
}

/* Abandon the transfer in progress (keep waiting for another one). */
static void p2pkp_rx_abandon(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			     int stat)
{
	p2pkp_rx_discard(rx);
	p2pkp_stat(ps, stat, 1);
	rx->state = RS_IDLE;
	WRITE_ONCE(ps->state, P2PKP_WAITING);
}

/* A failure that ends the read(): tell the sender, leave nothing. */
static void p2pkp_rx_fail(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			  int err, u32 echo)
{
	p2pkp_rx_discard(rx);
	p2pkp_rx_remember(ps, rx, err, NULL);
	p2pkp_rx_send_status(ps, rx, &rx->from, rx->fromlen, P2PKP_T_DONE,
			     rx->id, echo, err);
	p2pkp_stat(ps, P2PKP_ST_FILES_FAILED, 1);
	rx->result = err;
	rx->finished = true;
}

static int p2pkp_rx_open_tmp(struct p2pkp_rx *rx)
{
	size_t dirlen = rx->base - rx->path;
	struct file *f;
	int n;

	n = snprintf(rx->tmp, PATH_MAX, "%.*s.%s.p2pkp-%016llx", (int)dirlen,
		     rx->path, rx->base, rx->id);
	if (n >= PATH_MAX)
		return -ENAMETOOLONG;
	f = filp_open(rx->tmp, O_CREAT | O_EXCL | O_RDWR | O_LARGEFILE |
		      O_NOFOLLOW, 0600);
	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!S_ISREG(file_inode(f)->i_mode)) {
		filp_close(f, NULL);
		return -EINVAL;
	}
	rx->file = f;
	return 0;
}

/* Hash the chunks that became contiguous (read back from the file). */
static int p2pkp_rx_advance(struct p2pkp_rx *rx)
{
	while (rx->cum < rx->count &&
	       test_bit(rx->cum % P2PKP_WIN, rx->ring)) {
		u32 len = p2pkp_chunk_len(rx->size, rx->count, rx->cum);
		int err;

		__clear_bit(rx->cum % P2PKP_WIN, rx->ring);
		err = p2pkp_read_full(rx->file, rx->chunk, len,
				      rx->cum * P2PKP_CHUNK_SIZE);
		if (err)
			return err;
		sha256_update(&rx->sha, rx->chunk, len);
		rx->cum++;
	}
	return 0;
}

/*
 * Would @size bytes fit in the destination file system (what the caller
 * may use, f_bavail)?  A check, not a reservation.  File systems without
 * a block count (f_blocks 0, e.g. an unlimited tmpfs) are not checked.
 */
static int p2pkp_rx_space(struct p2pkp_rx *rx, u64 size)
{
	struct kstatfs st;
	u64 avail;

	if (!size || vfs_statfs(&rx->dir, &st) || !st.f_blocks || !st.f_bsize)
		return 0;
	if (st.f_bavail > div64_u64(U64_MAX, st.f_bsize))
		return 0;
	avail = st.f_bavail * st.f_bsize;
	return size > avail ? -ENOSPC : 0;
}

/* Refuse a START (the read keeps waiting); the sender fails with @err. */
static void p2pkp_rx_refuse(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			    const struct p2pkp_hdr *h,
			    struct sockaddr_storage *from, int fromlen,
			    int err, int stat)
{
	p2pkp_stat(ps, stat, 1);
	p2pkp_rx_send_status(ps, rx, from, fromlen, P2PKP_T_DONE,
			     be64_to_cpu(h->id), be32_to_cpu(h->ts), err);
}

static void p2pkp_rx_start(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			   const struct p2pkp_hdr *h,
			   struct sockaddr_storage *from, int fromlen)
{
	const struct p2pkp_start *st = (const void *)(h + 1);
	u64 id = be64_to_cpu(h->id);
	u32 echo = be32_to_cpu(h->ts);
	u64 size = be64_to_cpu(st->size);
	u64 count = be64_to_cpu(st->count);
	bool same = id == rx->id && p2pkp_addr_eq(from, &rx->from);
	struct p2pkp_start_ack sa = { .window = cpu_to_be32(P2PKP_WIN) };
	int err;

	if (be32_to_cpu(st->chunk) != P2PKP_CHUNK_SIZE ||
	    size > P2PKP_MAX_SIZE ||
	    count != DIV_ROUND_UP_ULL(size, P2PKP_CHUNK_SIZE)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	if (rx->state == RS_RECV && same) {
		rx->last_rx = ktime_get_ns();
		p2pkp_rx_reply(ps, rx, from, fromlen, P2PKP_T_START_ACK, id, echo,
			       &sa, sizeof(sa));
		return;
	}
	if (rx->state == RS_LINGER && same) {
		p2pkp_rx_send_status(ps, rx, from, fromlen, P2PKP_T_DONE, id, echo,
				     rx->result);
		return;
	}
	if (rx->state == RS_RECV && p2pkp_addr_eq(from, &rx->from) &&
	    !(ps->last_valid && id == ps->last_id)) {
		/*
		 * One address:port is one sender socket, which runs one
		 * write() at a time: its old transfer is over (ABORT lost).
		 */
		p2pkp_rx_abandon(ps, rx, P2PKP_ST_XFER_ABORTED);
	}
	if (rx->state == RS_LINGER && p2pkp_addr_eq(from, &rx->from)) {
		/* our sender moved on: it got DONE; keep this for next read */
		rx->finished = true;
		ps->pend_len = sizeof(*h) + sizeof(*st);
		ps->pend_addr = *from;
		ps->pend_alen = fromlen;
		return;
	}
	if (rx->state != RS_IDLE) {
		p2pkp_stat(ps, P2PKP_ST_BUSY_SENT, 1);
		p2pkp_rx_reply(ps, rx, from, fromlen, P2PKP_T_BUSY, id, echo,
			       NULL, 0);
		return;
	}
	if (ps->last_valid && id == ps->last_id &&
	    p2pkp_addr_eq(from, &ps->last_addr)) {
		p2pkp_rx_send_status(ps, rx, from, fromlen, P2PKP_T_DONE, id, echo,
				     ps->last_status);
		return;
	}
	if (size > READ_ONCE(max_file_size)) {
		p2pkp_rx_refuse(ps, rx, h, from, fromlen, -EFBIG,
				P2PKP_ST_REFUSED_SIZE);
		return;
	}
	err = p2pkp_rx_space(rx, size);
	if (err) {
		p2pkp_rx_refuse(ps, rx, h, from, fromlen, err,
				P2PKP_ST_REFUSED_SPACE);
		return;
	}
	/* accept */
	rx->id = id;
	rx->from = *from;
	rx->fromlen = fromlen;
	rx->size = size;
	rx->count = count;
	rx->cum = 0;
	rx->unacked = 0;
	rx->ooo_acked = false;
	rx->confirmed = false;
	rx->srtt = 0;
	rx->last_ack_ns = 0;
	rx->credit = P2PKP_PKT_MAX;	/* one ACK in advance */
	bitmap_zero(rx->ring, P2PKP_WIN);
	sha256_init(&rx->sha);
	rx->start_ns = ktime_get_ns();
	rx->last_rx = rx->start_ns;
	err = p2pkp_rx_open_tmp(rx);
	if (err) {
		p2pkp_rx_fail(ps, rx, err, echo);
		return;
	}
	rx->state = RS_RECV;
	WRITE_ONCE(ps->state, P2PKP_RECEIVING);
	p2pkp_rx_reply(ps, rx, from, fromlen, P2PKP_T_START_ACK, id, echo,
		       &sa, sizeof(sa));
}

static void p2pkp_rx_data(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			  const struct p2pkp_hdr *h, int len)
{
	const struct p2pkp_data *d = (const void *)(h + 1);
	const u8 *payload = (const u8 *)(d + 1);
	u32 plen = len - sizeof(*h) - sizeof(*d);
	u64 idx = be64_to_cpu(d->index);
	bool ackreq = be16_to_cpu(h->flags) & P2PKP_F_ACKREQ;
	int err;

	if (idx >= rx->count) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	if (plen != p2pkp_chunk_len(rx->size, rx->count, idx)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return;
	}
	rx->last_rx = ktime_get_ns();
	rx->confirmed = true;
	rx->echo = be32_to_cpu(h->ts);
	if (be16_to_cpu(h->flags) & P2PKP_F_ECHO) {
		u32 r = p2pkp_now_us() - be32_to_cpu(h->echo);

		if (r < 60 * USEC_PER_SEC)
			rx->srtt = rx->srtt ? (7 * rx->srtt + r) / 8 : r;
	}
	if (idx < rx->cum || test_bit(idx % P2PKP_WIN, rx->ring)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_DUP);
		/* our ACK was lost, or a duplicate: ACK soon (paced) */
		rx->unacked++;
		if (ackreq)
			p2pkp_rx_send_ack(ps, rx);
		return;
	}
	if (idx >= rx->cum + P2PKP_WIN) {
		p2pkp_drop(ps, P2PKP_ST_DROP_WINDOW);
		return;
	}
	err = p2pkp_write_full(rx->file, payload, plen,
			       idx * P2PKP_CHUNK_SIZE);
	if (err) {
		p2pkp_rx_fail(ps, rx, err, rx->echo);
		return;
	}
	p2pkp_stat(ps, P2PKP_ST_BYTES_RECEIVED, plen);
	if (idx == rx->cum) {
		sha256_update(&rx->sha, payload, plen);
		rx->ooo_acked = false;	/* the next gap gets its own ACK */
		rx->cum++;
		err = p2pkp_rx_advance(rx);
		if (err) {
			p2pkp_rx_fail(ps, rx, err, rx->echo);
			return;
		}
	} else {
		__set_bit(idx % P2PKP_WIN, rx->ring);
		if (!rx->ooo_acked) {
			rx->ooo_acked = true;
			ackreq = true;
		}
	}
	/*
	 * At once when asked, on a new gap and at the end; otherwise every
	 * P2PKP_ACK_EVERY chunks but at most once per p2pkp_rx_ack_ivl()
	 * (the rest is sent by p2pkp_recv_file when that gap has passed).
	 */
	if (ackreq || rx->cum == rx->count ||
	    (++rx->unacked >= P2PKP_ACK_EVERY &&
	     ktime_get_ns() - rx->last_ack_ns >= p2pkp_rx_ack_ivl(rx)))
		p2pkp_rx_send_ack(ps, rx);
}

static void p2pkp_rx_end(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			 const struct p2pkp_hdr *h)
{
	const struct p2pkp_end *e = (const void *)(h + 1);
	u32 echo = be32_to_cpu(h->ts);
	u8 digest[P2PKP_DIGEST_SIZE];
	int err;

	if (be64_to_cpu(e->size) != rx->size) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	rx->last_rx = ktime_get_ns();
	rx->confirmed = true;
	if (rx->cum < rx->count) {
		rx->echo = echo;
		p2pkp_rx_send_ack(ps, rx);
		return;
	}
	sha256_final(&rx->sha, digest);
	if (memcmp(digest, e->digest, sizeof(digest))) {
		err = -EBADMSG;
		p2pkp_rx_discard(rx);
	} else {
		err = p2pkp_rx_commit(rx);
		if (err)
			p2pkp_rx_discard(rx);
		else
			filp_close(rx->file, NULL);
		rx->file = NULL;
	}
	p2pkp_rx_remember(ps, rx, err, digest);
	p2pkp_stat(ps, err ? P2PKP_ST_FILES_FAILED : P2PKP_ST_FILES_RECEIVED,
		   1);
	rx->result = err;
	rx->state = RS_LINGER;
	rx->linger_end = ktime_get_ns() + P2PKP_LINGER_MS * NSEC_PER_MSEC;
	p2pkp_rx_send_status(ps, rx, &rx->from, rx->fromlen, P2PKP_T_DONE, rx->id,
			     echo, err);
}

static void p2pkp_rx_handle(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			    struct sockaddr_storage *from, int fromlen,
			    int len)
{
	const struct p2pkp_hdr *h = (const void *)ps->rxbuf;
	int type = p2pkp_parse(ps, ps->rxbuf, len);
	bool match;
	u64 id;

	if (!type)
		return;
	if (type == P2PKP_T_START) {
		p2pkp_rx_start(ps, rx, h, from, fromlen);
		return;
	}
	id = be64_to_cpu(h->id);
	match = rx->state != RS_IDLE && id == rx->id;
	if (match && !p2pkp_addr_eq(from, &rx->from)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_PEER);
		return;
	}
	if (match)
		rx->credit = min_t(u32, rx->credit + len, P2PKP_CREDIT_MAX);
	switch (type) {
	case P2PKP_T_DATA:
		if (match && rx->state == RS_RECV)
			p2pkp_rx_data(ps, rx, h, len);
		else if (match || (ps->last_valid && id == ps->last_id))
			p2pkp_drop(ps, P2PKP_ST_DROP_DUP);
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	case P2PKP_T_END:
		if (match && rx->state == RS_RECV) {
			p2pkp_rx_end(ps, rx, h);
		} else if (match || (ps->last_valid && id == ps->last_id &&
				     p2pkp_addr_eq(from, &ps->last_addr))) {
			p2pkp_rx_send_status(ps, rx, from, fromlen, P2PKP_T_DONE,
					     id, be32_to_cpu(h->ts),
					     match ? rx->result :
					     ps->last_status);
		} else {
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		}
		break;
	case P2PKP_T_DONE_ACK:
		if (match && rx->state == RS_LINGER)
			rx->finished = true;
		break;
	case P2PKP_T_ABORT:
		if (match && rx->state == RS_RECV)
			p2pkp_rx_abandon(ps, rx, P2PKP_ST_XFER_ABORTED);
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	default:
		p2pkp_drop(ps, P2PKP_ST_DROP_TYPE);
		break;
	}
}

/* Next datagram for the receiver: the one kept back, else the socket's. */
static int p2pkp_rx_next(struct p2pkp_sock *ps, struct sockaddr_storage *from,
			 int *fromlen)
{
	struct msghdr msg = {
		.msg_name = from,
		.msg_namelen = sizeof(*from),
		.msg_flags = MSG_DONTWAIT,
	};
	struct kvec vec = { ps->rxbuf, P2PKP_DGRAM_MAX };
	int n;

	if (ps->pend_len) {
		n = ps->pend_len;
		ps->pend_len = 0;
		*from = ps->pend_addr;
		*fromlen = ps->pend_alen;
		return n;
	}
	n = kernel_recvmsg(ps->rx.sock, &msg, &vec, 1, P2PKP_DGRAM_MAX,
			   MSG_DONTWAIT);
	if (n < 0)
		return n;
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_RECEIVED, 1);
	if (msg.msg_flags & MSG_TRUNC) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return 0;
	}
	if (!n) {
		/* An empty datagram is shorter than any header. */
		p2pkp_drop(ps, P2PKP_ST_DROP_SHORT);
		return 0;
	}
	*fromlen = msg.msg_namelen;
	return n;
}

static int p2pkp_recv_file(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	u64 timeout_ns = (u64)ps->timeout_ms * NSEC_PER_MSEC;
	u64 accept_ns = min_t(u64, timeout_ns,
			      (u64)P2PKP_ACCEPT_MS * NSEC_PER_MSEC);
	int err = 0;

	rx->state = RS_IDLE;
	WRITE_ONCE(ps->state, P2PKP_WAITING);
	while (!rx->finished) {
		int seen = atomic_read(&ps->events);
		struct sockaddr_storage from;
		int budget, fromlen = 0, n = 0;
		long wait = MAX_SCHEDULE_TIMEOUT;
		u64 now;

		for (budget = P2PKP_RX_BUDGET; budget && !rx->finished;
		     budget--) {
			n = p2pkp_rx_next(ps, &from, &fromlen);
			if (n == -EAGAIN || n == -EINTR || n == -ERESTARTSYS)
				break;
			if (n <= 0)
				continue;
			p2pkp_rx_handle(ps, rx, &from, fromlen, n);
		}
		if (rx->finished)
			break;
		now = ktime_get_ns();
		/* queue drained: ACK what is pending, paced */
		if (rx->state == RS_RECV && rx->unacked &&
		    now - rx->last_ack_ns >= p2pkp_rx_ack_ivl(rx))
			p2pkp_rx_send_ack(ps, rx);
		if (rx->state == RS_IDLE ? signal_pending(current) :
		    p2pkp_interrupted()) {
			err = -EINTR;
			break;
		}
		if (rx->state == RS_RECV) {
			u64 end = rx->last_rx + timeout_ns;

			/* a START nobody follows up holds the read briefly */
			if (!rx->confirmed)
				end = min(end, rx->start_ns + accept_ns);
			if (now >= end) {
				p2pkp_rx_abandon(ps, rx, rx->confirmed ?
						 P2PKP_ST_XFER_ABANDONED :
						 P2PKP_ST_XFER_UNCONFIRMED);
				continue;
			}
			if (rx->unacked)
				end = min(end, rx->last_ack_ns +
					  p2pkp_rx_ack_ivl(rx));
			wait = p2pkp_timeout_ns_to_jiffies(end > now ?
							   end - now : 0);
		} else if (rx->state == RS_LINGER) {
			if (now >= rx->linger_end)
				break;
			wait = p2pkp_timeout_ns_to_jiffies(rx->linger_end -
							   now);
		}
		if (!budget)
			continue;	/* more queued: no sleep */
		p2pkp_wait(ps, seen, wait);	/* signals: next round */
	}
	if (err && rx->state == RS_RECV) {
		p2pkp_rx_send_status(ps, rx, &rx->from, rx->fromlen,
				     P2PKP_T_ABORT, rx->id, 0, EINTR);
		p2pkp_rx_discard(rx);
		p2pkp_rx_remember(ps, rx, err, NULL);
	} else if (err && rx->state == RS_IDLE) {
		/* nothing accepted yet: restartable (SIGSTOP, SA_RESTART) */
		err = -ERESTARTSYS;
	}
	WRITE_ONCE(ps->state, P2PKP_IDLE);
	return err ? err : rx->result;
}

/* The destination path is in the caller's buffer: read, not written. */
static int p2pkp_user_path(struct msghdr *msg, size_t len, char *path)
{
	struct iov_iter *it = &msg->msg_iter;
	const char __user *up;
	long n;

	if (iter_is_ubuf(it)) {
		up = it->ubuf;
	} else if (iter_is_iovec(it) && it->nr_segs) {
		up = it->iov->iov_base;
		len = min_t(size_t, len, it->iov->iov_len);
	} else {
		return -EINVAL;
	}
	n = strncpy_from_user(path, up, min_t(size_t, len,
					      P2PKP_PATH_MAX + 1));
	if (n < 0)
		return -EFAULT;
	if (n > P2PKP_PATH_MAX)
		return -ENAMETOOLONG;
	path[n] = '\0';
	if (!n || path[0] != '/' || path[n - 1] == '/')
		return -EINVAL;
	return 0;
}

/*
 * Fail early when the caller cannot create files in the directory; on
 * success @rx->dir holds the directory (for the free-space check).
 */
static int p2pkp_check_dir(char *path, const char *base, struct p2pkp_rx *rx)
{
	char saved = *base;
	struct path dir;
	int err;

	*(char *)base = '\0';
	err = kern_path(path, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, &rx->dir);
	*(char *)base = saved;
	if (err)
		return err;
	err = path_permission(&rx->dir, MAY_WRITE | MAY_EXEC);
	if (err)
		return err;
	/* a directory at the final name would fail the rename at the end */
	if (!kern_path(path, 0, &dir)) {
		if (d_is_dir(dir.dentry))
			err = -EISDIR;
		path_put(&dir);
	}
	return err;
}

static int p2pkp_recvmsg(struct socket *sock, struct msghdr *msg, size_t len,
			 int flags)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	struct p2pkp_rx *rx;
	char *path;
	int err;

	if (flags & MSG_OOB)
		return -EOPNOTSUPP;
	rx = kvzalloc(sizeof(*rx), GFP_KERNEL);
	path = kmalloc(P2PKP_PATH_MAX + 1, GFP_KERNEL);
	if (rx)
		rx->tmp = kmalloc(PATH_MAX, GFP_KERNEL);
	if (!rx || !path || !rx->tmp) {
		err = -ENOMEM;
		goto out;
	}
	err = p2pkp_user_path(msg, len, path);
	if (err)
		goto out;
	rx->path = path;
	rx->base = strrchr(path, '/') + 1;
	if (!strcmp(rx->base, ".") || !strcmp(rx->base, "..")) {
		err = -EINVAL;
		goto out;
	}
	err = p2pkp_check_dir(path, rx->base, rx);
	if (err)
		goto out;
	err = mutex_lock_interruptible(&ps->lock);
	if (err) {
		err = -EINTR;
		goto out;
	}
	if (!ps->bound) {
		err = -EDESTADDRREQ;
		goto unlock;
	}
	err = p2pkp_recv_file(ps, rx);
	if (!err) {
		if (msg->msg_name) {
			memcpy(msg->msg_name, &rx->from, rx->fromlen);
			msg->msg_namelen = rx->fromlen;
		}
		err = (int)min_t(u64, rx->size, INT_MAX);
	}
unlock:
	mutex_unlock(&ps->lock);
out:
	if (rx) {
		path_put(&rx->dir);	/* NULL-safe when never looked up */
		kfree(rx->tmp);
	}
	kvfree(rx);
	kfree(path);
	return err;
}

/* ---- socket calls -------------------------------------------------- */

static void p2pkp_free_peers(struct p2pkp_peer **peers, int n)
{
	while (n--) {
		p2pkp_ksock_close(&peers[n]->ks);
		kvfree(peers[n]);
	}
}

static int p2pkp_clear_peers(struct p2pkp_sock *ps)
{
	struct p2pkp_peer *old[P2PKP_MAX_PEERS];
	int n;

	spin_lock_bh(&ps->cfg_lock);
	n = ps->npeers;
	memcpy(old, ps->peers, n * sizeof(old[0]));
	ps->npeers = 0;
	spin_unlock_bh(&ps->cfg_lock);
	p2pkp_free_peers(old, n);
	return 0;
}

static int p2pkp_connect(struct socket *sock, struct sockaddr *uaddr,
			 int alen, int flags)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	struct sockaddr_storage addr;
	struct p2pkp_peer *p;
	int i, err, len;

	if (alen < (int)sizeof(sa_family_t))
		return -EINVAL;
	if (uaddr->sa_family == AF_UNSPEC) {
		if (mutex_lock_interruptible(&ps->lock))
			return -EINTR;
		err = p2pkp_clear_peers(ps);
		mutex_unlock(&ps->lock);
		return err;
	}
	len = p2pkp_check_addr(uaddr, alen);
	if (len < 0)
		return len;
	len = p2pkp_copy_addr(&addr, uaddr);
	if (!p2pkp_addr_port(&addr))
		return -EINVAL;

	if (mutex_lock_interruptible(&ps->lock))
		return -EINTR;
	err = -EISCONN;
	if (ps->bound)
		goto unlock;
	err = -EEXIST;
	for (i = 0; i < ps->npeers; i++)
		if (p2pkp_addr_eq(&addr, &ps->peers[i]->addr))
			goto unlock;
	err = -ENOSPC;
	if (ps->npeers >= P2PKP_MAX_PEERS)
		goto unlock;
	err = -ENOMEM;
	p = kvzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		goto unlock;
	p->addr = addr;
	p->addrlen = len;
	err = p2pkp_ksock_open(ps, &p->ks, addr.ss_family, P2PKP_PEER_RCVBUF);
	if (err)
		goto free;
	err = kernel_connect(p->ks.sock, (struct sockaddr *)&addr, len, 0);
	if (err)
		goto close;
	spin_lock_bh(&ps->cfg_lock);
	ps->peers[ps->npeers++] = p;
	spin_unlock_bh(&ps->cfg_lock);
	mutex_unlock(&ps->lock);
	return 0;
close:
	p2pkp_ksock_close(&p->ks);
free:
	kvfree(p);
unlock:
	mutex_unlock(&ps->lock);
	return err;
}

static int p2pkp_bind(struct socket *sock, struct sockaddr *uaddr, int alen)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	struct sockaddr_storage addr;
	u8 *buf;
	int err, len;

	len = p2pkp_check_addr(uaddr, alen);
	if (len < 0)
		return len;
	len = p2pkp_copy_addr(&addr, uaddr);

	if (mutex_lock_interruptible(&ps->lock))
		return -EINTR;
	err = -EINVAL;
	if (ps->bound)
		goto unlock;
	err = -EISCONN;
	if (ps->npeers)
		goto unlock;
	err = -ENOMEM;
	buf = kmalloc(P2PKP_DGRAM_MAX, GFP_KERNEL);
	if (!buf)
		goto unlock;
	err = p2pkp_ksock_open(ps, &ps->rx, addr.ss_family, P2PKP_RCVBUF);
	if (err)
		goto free;
	err = kernel_bind(ps->rx.sock, (struct sockaddr *)&addr, len);
	if (err)
		goto close;
	err = kernel_getsockname(ps->rx.sock, (struct sockaddr *)&addr);
	if (err < 0)
		goto close;
	spin_lock_bh(&ps->cfg_lock);
	ps->local_len = p2pkp_copy_addr(&ps->local, (struct sockaddr *)&addr);
	ps->rxbuf = buf;
	ps->bound = true;
	spin_unlock_bh(&ps->cfg_lock);
	mutex_unlock(&ps->lock);
	return 0;
close:
	p2pkp_ksock_close(&ps->rx);
free:
	kfree(buf);
unlock:
	mutex_unlock(&ps->lock);
	return err;
}

static int p2pkp_getname(struct socket *sock, struct sockaddr *uaddr,
			 int peer)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	int len = -ENOTCONN;

	spin_lock_bh(&ps->cfg_lock);
	if (peer) {
		if (ps->npeers) {
			len = ps->peers[0]->addrlen;
			memcpy(uaddr, &ps->peers[0]->addr, len);
		}
	} else if (ps->bound) {
		len = ps->local_len;
		memcpy(uaddr, &ps->local, len);
	} else {
		len = sizeof(struct sockaddr_in);
		memset(uaddr, 0, len);
		uaddr->sa_family = AF_INET;
	}
	spin_unlock_bh(&ps->cfg_lock);
	return len;
}

static int p2pkp_setsockopt(struct socket *sock, int level, int optname,
			    sockptr_t optval, unsigned int optlen)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	u64 rate;
	u32 v;

	if (level != SOL_P2PKP)
		return -ENOPROTOOPT;
	switch (optname) {
	case P2PKP_PEER_TIMEOUT:
		if (optlen < sizeof(v))
			return -EINVAL;
		if (copy_from_sockptr(&v, optval, sizeof(v)))
			return -EFAULT;
		if (v < P2PKP_TIMEOUT_MIN || v > P2PKP_TIMEOUT_MAX)
			return -EINVAL;
		WRITE_ONCE(ps->timeout_ms, v);
		return 0;
	case P2PKP_RATE:
		if (optlen < sizeof(rate))
			return -EINVAL;
		if (copy_from_sockptr(&rate, optval, sizeof(rate)))
			return -EFAULT;
		WRITE_ONCE(ps->rate, rate);
		return 0;
	default:
		return -ENOPROTOOPT;
	}
}

static int p2pkp_get_results(struct p2pkp_sock *ps, char __user *optval,
			     int len, int __user *optlen)
{
	struct p2pkp_peer_result r;
	int i, n;

	if (mutex_lock_interruptible(&ps->lock))
		return -EINTR;
	n = min_t(int, ps->npeers, len / (int)sizeof(r));
	for (i = 0; i < n; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		memset(&r, 0, sizeof(r));
		memcpy(&r.addr, &p->addr, sizeof(r.addr));
		r.state = p->state == PS_DONE ? P2PKP_PEER_DONE :
			  p->state == PS_FAILED ? P2PKP_PEER_FAILED :
			  P2PKP_PEER_IDLE;
		r.status = p->status;
		r.bytes_acked = p->state == PS_IDLE ? 0 :
				min_t(u64, p->cum * P2PKP_CHUNK_SIZE,
				      ps->info.size);
		r.datagrams_sent = p->sent;
		r.datagrams_retransmitted = p->retrans;
		if (copy_to_user(optval + i * sizeof(r), &r, sizeof(r))) {
			mutex_unlock(&ps->lock);
			return -EFAULT;
		}
	}
	mutex_unlock(&ps->lock);
	return put_user(n * (int)sizeof(r), optlen);
}

static int p2pkp_getsockopt(struct socket *sock, int level, int optname,
			    char __user *optval, int __user *optlen)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	struct p2pkp_transfer_info info;
	int len;
	u32 v;

	if (level != SOL_P2PKP)
		return -ENOPROTOOPT;
	if (get_user(len, optlen))
		return -EFAULT;
	if (len < 0)
		return -EINVAL;
	switch (optname) {
	case P2PKP_PEER_TIMEOUT:
		if (len < (int)sizeof(v))
			return -EINVAL;
		v = READ_ONCE(ps->timeout_ms);
		if (copy_to_user(optval, &v, sizeof(v)) ||
		    put_user((int)sizeof(v), optlen))
			return -EFAULT;
		return 0;
	case P2PKP_RATE: {
		u64 rate = READ_ONCE(ps->rate);

		if (len < (int)sizeof(rate))
			return -EINVAL;
		if (copy_to_user(optval, &rate, sizeof(rate)) ||
		    put_user((int)sizeof(rate), optlen))
			return -EFAULT;
		return 0;
	}
	case P2PKP_PEER_RESULTS:
		return p2pkp_get_results(ps, optval, len, optlen);
	case P2PKP_LAST_TRANSFER:
		if (len < (int)sizeof(info))
			return -EINVAL;
		if (mutex_lock_interruptible(&ps->lock))
			return -EINTR;
		info = ps->info;
		mutex_unlock(&ps->lock);
		if (copy_to_user(optval, &info, sizeof(info)) ||
		    put_user((int)sizeof(info), optlen))
			return -EFAULT;
		return 0;
	default:
		return -ENOPROTOOPT;
	}
}

static __poll_t p2pkp_poll(struct file *file, struct socket *sock,
			   poll_table *wait)
{
	/* read() and write() block until the whole file is done. */
	return EPOLLIN | EPOLLRDNORM | EPOLLOUT | EPOLLWRNORM;
}

static int p2pkp_release(struct socket *sock)
{
	struct sock *sk = sock->sk;
	struct p2pkp_sock *ps;

	if (!sk)
		return 0;
	ps = p2pkp_sk(sk);
	mutex_lock(&p2pkp_list_lock);
	list_del(&ps->node);
	mutex_unlock(&p2pkp_list_lock);

	p2pkp_clear_peers(ps);
	spin_lock_bh(&ps->cfg_lock);
	ps->bound = false;
	spin_unlock_bh(&ps->cfg_lock);
	p2pkp_ksock_close(&ps->rx);
	kfree(ps->rxbuf);
	ps->rxbuf = NULL;

	sock_orphan(sk);
	sock->sk = NULL;
	sock_put(sk);
	return 0;
}

static const struct proto_ops p2pkp_ops = {
	.family		= P2PKP_FAMILY_DEFAULT,	/* not used by the core */
	.owner		= THIS_MODULE,
	.release	= p2pkp_release,
	.bind		= p2pkp_bind,
	.connect	= p2pkp_connect,
	.socketpair	= sock_no_socketpair,
	.accept		= sock_no_accept,
	.getname	= p2pkp_getname,
	.poll		= p2pkp_poll,
	.ioctl		= sock_no_ioctl,
	.listen		= sock_no_listen,
	.shutdown	= sock_no_shutdown,
	.setsockopt	= p2pkp_setsockopt,
	.getsockopt	= p2pkp_getsockopt,
	.sendmsg	= p2pkp_sendmsg,
	.recvmsg	= p2pkp_recvmsg,
	.mmap		= sock_no_mmap,
	.sendpage	= sock_no_sendpage,
};

static struct proto p2pkp_proto = {
	.name		= "P2PKP",
	.owner		= THIS_MODULE,
	.obj_size	= sizeof(struct p2pkp_sock),
};

static int p2pkp_create(struct net *net, struct socket *sock, int protocol,
			int kern)
{
	struct p2pkp_sock *ps;
	struct sock *sk;

	if (sock->type != SOCK_DGRAM)
		return -ESOCKTNOSUPPORT;
	if (protocol != 0)
		return -EPROTONOSUPPORT;
	sk = sk_alloc(net, family, GFP_KERNEL, &p2pkp_proto, kern);
	if (!sk)
		return -ENOMEM;
	sock->ops = &p2pkp_ops;
	sock_init_data(sock, sk);

	ps = p2pkp_sk(sk);
	memset((char *)ps + sizeof(ps->sk), 0, sizeof(*ps) - sizeof(ps->sk));
	mutex_init(&ps->lock);
	spin_lock_init(&ps->cfg_lock);
	init_waitqueue_head(&ps->wq);
	ps->timeout_ms = P2PKP_TIMEOUT_DEF;

	mutex_lock(&p2pkp_list_lock);
	list_add_tail(&ps->node, &p2pkp_list);
	mutex_unlock(&p2pkp_list_lock);
	return 0;
}

static struct net_proto_family p2pkp_family_ops = {
	.family	= P2PKP_FAMILY_DEFAULT,
	.create	= p2pkp_create,
	.owner	= THIS_MODULE,
};

/* ---- /proc/net/p2pkp ------------------------------------------------ */

static void p2pkp_show_stats(struct seq_file *seq, atomic64_t *stats)
{
	int i;

	for (i = 0; i < P2PKP_NSTATS; i++)
		seq_printf(seq, " %s=%lld", p2pkp_stat_names[i],
			   (long long)atomic64_read(&stats[i]));
	seq_putc(seq, '\n');
}

static int p2pkp_proc_show(struct seq_file *seq, void *v)
{
	struct net *net = seq_file_single_net(seq);
	struct p2pkp_net *pn = net_generic(net, p2pkp_net_id);
	struct p2pkp_sock *ps;
	int i;

	seq_printf(seq, "p2pkp version=%d family=%d\n", P2PKP_VERSION, family);
	mutex_lock(&p2pkp_list_lock);
	list_for_each_entry(ps, &p2pkp_list, node) {
		unsigned long ino = sock_i_ino(&ps->sk);

		if (!net_eq(sock_net(&ps->sk), net))
			continue;
		spin_lock_bh(&ps->cfg_lock);
		seq_printf(seq, "sock inode=%lu role=%s state=%s", ino,
			   ps->bound ? "receiver" :
			   ps->npeers ? "sender" : "unbound",
			   p2pkp_state_names[READ_ONCE(ps->state)]);
		if (ps->bound)
			seq_printf(seq, " local=%pISpc",
				   (struct sockaddr *)&ps->local);
		else
			seq_puts(seq, " local=-");
		seq_printf(seq, " peers=%d timeout_ms=%u", ps->npeers,
			   READ_ONCE(ps->timeout_ms));
		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			seq_printf(seq, " peer%d=%pISpc", i,
				   (struct sockaddr *)&p->addr);
		}
		spin_unlock_bh(&ps->cfg_lock);
		p2pkp_show_stats(seq, ps->stats);
		spin_lock_bh(&ps->cfg_lock);
		for (i = 0; i < ps->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			seq_printf(seq, "peer inode=%lu index=%d addr=%pISpc state=%s status=%d\n",
				   ino, i, (struct sockaddr *)&p->addr,
				   p2pkp_pstate_names[READ_ONCE(p->state)],
				   READ_ONCE(p->status));
		}
		spin_unlock_bh(&ps->cfg_lock);
	}
	mutex_unlock(&p2pkp_list_lock);
	seq_puts(seq, "total");
	p2pkp_show_stats(seq, pn->stats);
	return 0;
}

static int __net_init p2pkp_net_init(struct net *net)
{
	if (!proc_create_net_single("p2pkp", 0444, net->proc_net,
				    p2pkp_proc_show, NULL))
		return -ENOMEM;
	return 0;
}

static void __net_exit p2pkp_net_exit(struct net *net)
{
	remove_proc_entry("p2pkp", net->proc_net);
}

static struct pernet_operations p2pkp_net_ops = {
	.init	= p2pkp_net_init,
	.exit	= p2pkp_net_exit,
	.id	= &p2pkp_net_id,
	.size	= sizeof(struct p2pkp_net),
};

/* ---- module --------------------------------------------------------- */

static int __init p2pkp_init(void)
{
	int err;

	if (family <= 0 || family >= NPROTO) {
		pr_err("family=%d is out of range 1..%d\n", family,
		       NPROTO - 1);
		return -EINVAL;
	}
	p2pkp_family_ops.family = family;

	err = proto_register(&p2pkp_proto, 0);
	if (err)
		return err;
	err = register_pernet_subsys(&p2pkp_net_ops);
	if (err)
		goto unreg_proto;
	err = sock_register(&p2pkp_family_ops);
	if (err) {
		pr_err("family %d is in use (sock_register: %d)\n", family,
		       err);
		goto unreg_net;
	}
	pr_info("loaded, family %d, wire version %d\n", family,
		P2PKP_VERSION);
	return 0;

unreg_net:
	unregister_pernet_subsys(&p2pkp_net_ops);
unreg_proto:
	proto_unregister(&p2pkp_proto);
	return err;
}

static void __exit p2pkp_exit(void)
{
	sock_unregister(family);
	unregister_pernet_subsys(&p2pkp_net_ops);
	proto_unregister(&p2pkp_proto);
}

module_init(p2pkp_init);
module_exit(p2pkp_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("P2PKP: in-kernel one-to-many file transfer over UDP");
MODULE_AUTHOR("P2PKP project");
MODULE_ALIAS_NETPROTO(P2PKP_FAMILY_DEFAULT);
