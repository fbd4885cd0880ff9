// SPDX-License-Identifier: GPL-2.0
/*
 * P2PKP: in-kernel one-to-many file transfer over UDP.
 *
 * A socket family whose write() sends a whole file (named by its absolute
 * path) to every connect()ed peer and whose read() stores one whole file
 * (at the absolute path given in the buffer) from a sender.  The data
 * travels in UDP datagrams of kernel-made UDP sockets, with flow control,
 * selective retransmission, a return-routability cookie, an optional MAC
 * and a SHA-256 digest checked before the file gets its name.
 *
 * The system call validates, opens or creates the file with the caller's
 * credentials and starts the transfer; an engine (one work item and one
 * hrtimer per socket) runs it under the caller's credentials and memory
 * cgroup, so a signal, a stop or a freeze never has to wait for the end of
 * a transfer.  The wire format is described in docs/protocol.md.
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
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/seq_file_net.h>
#include <linux/proc_fs.h>
#include <linux/bitmap.h>
#include <linux/ktime.h>
#include <linux/hrtimer.h>
#include <linux/workqueue.h>
#include <linux/uaccess.h>
#include <linux/sockptr.h>
#include <linux/poll.h>
#include <linux/statfs.h>
#include <linux/xattr.h>
#include <linux/math64.h>
#include <linux/siphash.h>
#include <linux/cred.h>
#include <linux/memcontrol.h>
#include <linux/security.h>
#include <linux/rculist.h>
#include <linux/vmalloc.h>
#include <linux/bvec.h>
#include <linux/wait.h>
#include <net/sock.h>
#include <net/ip.h>
#include <net/dst.h>
#include <net/route.h>
#include <net/ip6_route.h>
#include <net/udp.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <crypto/sha2.h>
#include <crypto/hash.h>
#include <crypto/algapi.h>

#include "p2pkp.h"
#include "p2pkp_compat.h"

/* ---- wire format (all integers big-endian), docs/protocol.md section 2 */

#define P2PKP_MAGIC		0x5032504bU	/* "P2PK" */
#define P2PKP_VERSION		2

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
#define P2PKP_F_MAC		0x0004	/* a tag ends the datagram */
#define P2PKP_F_ACCEPTED	0x0008	/* START_ACK: the transfer is accepted */
#define P2PKP_F_GROUP		0x0010	/* START: group ext.; DATA: to a group */
#define P2PKP_F_DIGEST		0x0020	/* START: digest extension */
#define P2PKP_F_RETRANS		0x0040	/* DATA: a retransmission */

struct p2pkp_hdr {
	__be32 magic;
	u8 version;
	u8 type;
	__be16 flags;
	__be64 id;
	__be64 cookie;		/* the receiver's cookie, section 2.3 */
	__be32 ts;		/* sender's clock, microseconds */
	__be32 echo;		/* ts of the datagram answered (F_ECHO) */
} __packed;

struct p2pkp_start {
	__be64 size;
	__be32 chunk;
	__be16 epoch;
	__be16 reserved;
} __packed;

struct p2pkp_group {		/* START extension (F_GROUP) */
	u8 family;		/* 4 or 6 */
	u8 reserved;
	__be16 port;
	u8 addr[16];
} __packed;

struct p2pkp_start_ack {
	__be32 window;
	__be16 epoch;
	__be16 reserved;
	__be64 base;
} __packed;

struct p2pkp_data {
	__be16 epoch;
	u8 index[6];		/* u48 */
	/* followed by the payload */
} __packed;

/* Limits of the protocol. */
#define P2PKP_WIN		512	/* max window (chunks) = SACK bits */

struct p2pkp_ack {
	__be64 cum;		/* chunks received in order */
	__be16 epoch;
	__be16 nbits;		/* P2PKP_WIN */
	__be32 window;
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

#define P2PKP_MAC_LEN		16
#define P2PKP_HLEN		sizeof(struct p2pkp_hdr)
#define P2PKP_DATA_HLEN		(P2PKP_HLEN + sizeof(struct p2pkp_data))
/* largest control datagram: START with both extensions, or ACK; + tag */
#define P2PKP_CTL_MAX		(P2PKP_HLEN + sizeof(struct p2pkp_ack) + \
				 P2PKP_MAC_LEN)
#define P2PKP_DGRAM_MAX		(P2PKP_DATA_HLEN + P2PKP_CHUNK_MAX + \
				 P2PKP_MAC_LEN)
#define P2PKP_REPLY_MAX		2048	/* a sender's receive buffer */
/*
 * A receiver's receive buffer: one datagram, or a UDP GRO batch of them
 * (less than 64 KiB of UDP payload, at most UDP_GRO_CNT_MAX datagrams).
 */
#define P2PKP_RXBUF_LEN		65536
#define P2PKP_WBATCH		64	/* payloads written at once, at most */

static const u16 p2pkp_fixed_len[P2PKP_T_MAX + 1] = {
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

/* Flags a type may carry besides ECHO and MAC. */
static const u16 p2pkp_type_flags[P2PKP_T_MAX + 1] = {
	[P2PKP_T_START]		= P2PKP_F_GROUP | P2PKP_F_DIGEST,
	[P2PKP_T_START_ACK]	= P2PKP_F_ACCEPTED,
	[P2PKP_T_DATA]		= P2PKP_F_ACKREQ | P2PKP_F_GROUP |
				  P2PKP_F_RETRANS,
};

/* Types going from sender to receiver (ABORT goes both ways). */
#define P2PKP_S2R	(BIT(P2PKP_T_START) | BIT(P2PKP_T_DATA) | \
			 BIT(P2PKP_T_END) | BIT(P2PKP_T_DONE_ACK) | \
			 BIT(P2PKP_T_ABORT))
#define P2PKP_R2S	(BIT(P2PKP_T_START_ACK) | BIT(P2PKP_T_BUSY) | \
			 BIT(P2PKP_T_ACK) | BIT(P2PKP_T_DONE) | \
			 BIT(P2PKP_T_ABORT))

/* Engine constants, docs/protocol.md section 3.4. */
#define P2PKP_MAX_SIZE		BIT_ULL(40)	/* 1 TiB */
#define P2PKP_RCVBUF		(4 << 20)
#define P2PKP_PEER_RCVBUF	BIT(20)
#define P2PKP_SNDBUF		BIT(20)
#define P2PKP_RTO_MIN_US	40000U
#define P2PKP_RTO_INIT_US	200000U
#define P2PKP_RTO_MAX_US	2000000U
#define P2PKP_LINGER_MS		1000
#define P2PKP_BLOCK_BYTES	BIT(16)	/* new data read at once: at least */
#define P2PKP_BLOCK_MAX		BIT(20)	/* ... and at most */
#define P2PKP_GSO_CHUNKS	32	/* DATA datagrams per UDP_SEGMENT send */
#define P2PKP_RTO_BURST		64	/* timed-out chunks resent per RTO */
#define P2PKP_RTO_BURST_MEMBER	4	/* ... to a group member */
#define P2PKP_RX_BUDGET		256
#define P2PKP_TX_BUDGET		512	/* new DATA datagrams per engine round */
#define P2PKP_TIMEOUT_DEF	15000U
#define P2PKP_TIMEOUT_MIN	100U
#define P2PKP_TIMEOUT_MAX	3600000U
#define P2PKP_ACK_EVERY		16	/* receiver ACKs every N chunks */
#define P2PKP_GROUP_LAG_DEF	10000U	/* ms, P2PKP_GROUP_LAG */
#define P2PKP_GROUP_WAIT_NS	(500 * NSEC_PER_MSEC)	/* late peers */
#define P2PKP_GROUP_JOIN_NS	(50 * NSEC_PER_MSEC)	/* a join spreads */
#define P2PKP_ACKLOG_MAX	6	/* 64 members */
#define P2PKP_ACK_MIN_US	500U	/* receiver: min gap between ACKs */
#define P2PKP_ACK_MAX_US	20000U	/* ... srtt/4 but at most this */
#define P2PKP_CREDIT_MAX	65536U	/* ACK bytes owed to a sender, max */
#define P2PKP_RL_PER_SEC	100U	/* replies to unproven sources, per s */
#define P2PKP_RL_BURST		20U
#define P2PKP_TMP_TRIES		4	/* temporary names tried at commit */
/* a partial file's checkpoints (section 1.7): every 8 MiB or second */
#define P2PKP_CKPT_BYTES	(8ULL << 20)
#define P2PKP_CKPT_NS		NSEC_PER_SEC
#define P2PKP_HAVE_XATTR	"user.p2pkp.have"
/* file bytes hashed per engine round (a resumed prefix, a sender's digest) */
#define P2PKP_HASH_BUDGET	(4U << 20)
#define P2PKP_COOKIE_SECS	64	/* a cookie is valid 64..128 s */

/* Counters, per socket and per network namespace (section 5). */
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
	P2PKP_ST_DROP_AUTH,
	P2PKP_ST_DROP_LENGTH,
	P2PKP_ST_DROP_FIELD,
	P2PKP_ST_DROP_SENDER,
	P2PKP_ST_DROP_XFER,
	P2PKP_ST_DROP_PEER,
	P2PKP_ST_DROP_COOKIE,
	P2PKP_ST_DROP_WINDOW,
	P2PKP_ST_DROP_DUP,
	P2PKP_ST_BUSY_SENT,
	P2PKP_ST_COOKIES_SENT,
	P2PKP_ST_XFER_ABANDONED,
	P2PKP_ST_XFER_ABORTED,
	P2PKP_ST_PEERS_FAILED,
	P2PKP_ST_REFUSED_SIZE,
	P2PKP_ST_REFUSED_SPACE,
	P2PKP_ST_REPLIES_LIMITED,
	P2PKP_ST_ACKS_SENT,
	P2PKP_ST_RATE_WAITS,
	P2PKP_ST_GSO_SENDS,
	P2PKP_ST_ICMP_ERRORS,
	P2PKP_ST_EPOCHS,
	P2PKP_ST_GRO_RECEIVES,
	P2PKP_ST_FILE_WRITES,
	P2PKP_ST_ZC_SENDS,
	P2PKP_ST_CC_LOSSES,
	P2PKP_ST_CC_TIMEOUTS,
	P2PKP_ST_CC_UNDOS,
	P2PKP_ST_PACE_WAITS,
	P2PKP_ST_RESUMED,
	P2PKP_ST_GROUP_SENT,
	P2PKP_ST_GROUP_REPAIRS,
	P2PKP_ST_PEERS_DROPPED,
	P2PKP_ST_GROUP_JOINED,
	P2PKP_ST_REFUSED_GROUP,
	P2PKP_NSTATS,
};

static const char * const p2pkp_stat_names[P2PKP_NSTATS] = {
	"files_sent", "files_received", "files_failed",
	"bytes_sent", "bytes_received",
	"dgrams_sent", "dgrams_received", "dgrams_retrans", "dgrams_dropped",
	"drop_short", "drop_magic", "drop_version", "drop_type", "drop_auth",
	"drop_length", "drop_field", "drop_sender", "drop_xfer", "drop_peer",
	"drop_cookie", "drop_window", "drop_dup",
	"busy_sent", "cookies_sent", "xfers_abandoned", "xfers_aborted",
	"peers_failed", "refused_size", "refused_space", "replies_limited",
	"acks_sent", "rate_waits", "gso_sends", "icmp_errors", "epochs",
	"gro_receives", "file_writes", "zc_sends",
	"cc_losses", "cc_timeouts", "cc_undos", "pace_waits", "resumed",
	"group_sent", "group_repairs", "peers_dropped", "group_joined",
	"refused_group",
};

enum { P2PKP_IDLE, P2PKP_SENDING, P2PKP_WAITING, P2PKP_RECEIVING };
static const char * const p2pkp_state_names[] = {
	"idle", "sending", "waiting", "receiving",
};

/* The operation (write or read) of a socket, see p2pkp_op_begin(). */
enum { OP_NONE, OP_RUNNING, OP_DONE };

/* Sender's view of one peer during a write(). */
enum { PS_IDLE, PS_START, PS_DATA, PS_END, PS_DONE, PS_FAILED };
static const char * const p2pkp_pstate_names[] = {
	"idle", "start", "data", "end", "done", "failed",
};

/* A UDP socket made in the caller's context, whose callbacks kick us. */
struct p2pkp_ksock {
	struct socket *sock;
	struct file *file;		/* holds the caller's credentials */
	void (*saved_data_ready)(struct sock *sk);
	void (*saved_error_report)(struct sock *sk);
	void (*saved_write_space)(struct sock *sk);
};

struct p2pkp_peer {
	struct sockaddr_storage addr;
	int addrlen;
	struct p2pkp_ksock ks;
	int state;			/* PS_* */
	int status;			/* 0 or -errno */
	int soft_err;			/* ICMP error since the last datagram */
	u64 cookie;			/* the receiver's, from START_ACK */
	bool cookie_known;
	bool confirmed;			/* the receiver accepted the transfer */
	bool blocked;			/* its socket buffer was full */
	bool resync;			/* new epoch sent, not yet accepted */
	bool frag;			/* path MTU < one datagram: fragments */
	u16 epoch;			/* current epoch (section 2.2) */
	u32 chunk;			/* ... its chunk size, from the path MTU */
	u64 base;			/* ... its byte offset of chunk 0 */
	u64 count;			/* ... its number of chunks */
	u64 rs_lo, rs_hi;		/* bounds of the base a resync may get */
	u64 cum;			/* chunks acked in order */
	u64 next;			/* next chunk never sent */
	u32 win;			/* window from START_ACK / ACK */
	u32 srtt, rttvar, rto;		/* microseconds */
	bool rtt_valid;
	u64 last_rx;			/* ns: last valid datagram */
	u64 last_ctl;			/* ns: last START/END sent */
	u64 rto_ns;			/* ns: last timeout retransmission */
	u64 rack_ns;			/* ns: latest send time acknowledged */
	u64 sent, retrans;
	/* congestion control and pacing (section 3.3), in chunks */
	bool cc;			/* tx_cc at write() */
	u32 cwnd, ssthresh;
	u32 cwnd_cnt;			/* growth owed, in 1/cwnd chunks */
	u32 nsacked;			/* bits set in sack */
	u32 pipe;			/* in flight, during a round */
	u32 w_max;			/* CUBIC: cwnd before the last loss */
	u32 k_ms;			/* ... time to get back to it */
	u32 w_origin;			/* ... the curve's plateau */
	u64 w_est;			/* ... Reno estimate, 1/1024 chunks */
	u64 cc_epoch_ns;		/* ... start of the curve, 0: none */
	u64 rec_next;			/* losses below: the same event */
	u64 pace_ns;			/* ns: next DATA may leave then */
	u64 pace_rate;			/* bytes/s, 0: not paced */
	u32 undo_cwnd, undo_ssthresh, undo_w_max;	/* before a timeout */
	u64 undo_cum;			/* the timed-out chunk, U64_MAX: none */
	u32 undo_us;			/* ... when it was resent */
	u64 losses, timeouts, undos;
	/* multicast (section 1.8) */
	bool gsrc;			/* same source as the group's datagrams */
	bool member;			/* new chunks reach it through the group */
	u64 lag_ns;			/* behind the group (or catching up) since */
	u32 peer_ts;			/* ts of the peer's last datagram */
	u64 peer_ts_ns;			/* ns: when it arrived (0: none) */
	DECLARE_BITMAP(sack, P2PKP_WIN);	/* relative to cum */
	u64 sent_ns[P2PKP_WIN];		/* by chunk % P2PKP_WIN */
	DECLARE_BITMAP(rtx, P2PKP_WIN);	/* ... that send was a retransmission */
};

/* A sender allowed by a receiver (connect() on a bound socket). */
struct p2pkp_allow {
	sa_family_t family;
	__be16 port;			/* 0: any port */
	struct in6_addr addr;		/* IPv4: s6_addr32[0] */
};

/* What a system call hands to the engine: who it works for. */
struct p2pkp_ctx {
	const struct cred *cred;
	struct mem_cgroup *memcg;
};

struct p2pkp_tx;
struct p2pkp_rx;

struct p2pkp_sock {
	struct sock sk;			/* must be first */
	struct list_head node;		/* in p2pkp_net.socks (RCU) */
	u64 seqno;			/* creation order, for /proc */
	struct mutex lock;		/* system calls and the engine */
	spinlock_t cfg_lock;		/* peers[], npeers, bound: for /proc */
	struct work_struct work;	/* the engine */
	struct hrtimer timer;		/* ... woken at the next deadline */
	bool dead;			/* release() began: no more kicks */
	int state;			/* P2PKP_IDLE.. */
	u32 timeout_ms;
	u64 rate;			/* sender: bytes/s, 0 = no cap */
	u64 tx_size;			/* sender: the last write()'s file */
	u32 chunk;			/* sender: P2PKP_CHUNK, 0: no cap */
	bool fsync;			/* receiver: fsync before naming */
	bool resume;			/* P2PKP_RESUME */
	bool no_group;			/* receiver: P2PKP_NO_GROUP */
	/* sender: P2PKP_GROUP (group_len 0: none) and its options */
	struct sockaddr_storage group;
	int group_len;
	u32 mcast_ttl, group_lag_ms;
	int mcast_if;
	struct file *recv_file;		/* receiver: P2PKP_RECV_FD, or NULL */
	struct crypto_shash *mac;	/* hmac(sha256) with the key, or NULL */
	/* the write() or read() in progress, or done and not yet returned */
	int op;				/* OP_* */
	u32 op_seq;			/* bumped when an operation begins */
	char *op_path;			/* its path, to recognise a restart */
	struct file *op_file;		/* or its descriptor's file (1.6) */
	int op_result;			/* 0 or -errno, when OP_DONE */
	bool op_read;			/* a read(), not a write() */
	bool op_async;			/* a call returned without its result */
	bool op_ready;			/* read: file in place, op_result set */
	atomic_t op_waiters;		/* callers waiting for it */
	u64 op_size;			/* receiver: size of the file */
	struct sockaddr_storage op_from;	/* receiver: its sender */
	int op_fromlen;
	/* sender */
	struct p2pkp_peer *peers[P2PKP_MAX_PEERS];
	int npeers;
	struct p2pkp_tx *tx;
	/* receiver */
	bool bound;
	struct p2pkp_ksock rx;
	struct sockaddr_storage local;
	int local_len;
	u32 rcvbuf;			/* receive buffer actually set */
	siphash_key_t ckey;		/* cookie key, section 2.3 */
	struct p2pkp_allow *allow;	/* allowed senders, or NULL: anyone */
	int nallow;
	struct p2pkp_rx *rxo;		/* the armed read() */
	/*
	 * What the last receive returned, consumed one datagram at a time:
	 * rxbuf[seg_off, seg_end) in datagrams of seg_size bytes (the last
	 * may be shorter) from seg_from.  A START kept for the next read()
	 * stays there too.
	 */
	u8 *rxbuf;			/* P2PKP_RXBUF_LEN */
	u32 seg_off, seg_end, seg_size;
	bool seg_group;			/* ... came from the group's socket */
	bool g_armed;			/* the bound socket waits for g_left */
	u32 g_left;			/* ... group datagrams queued before it */
	struct sockaddr_storage seg_from;
	int seg_fromlen;
	u64 linger_end;			/* ns: drain without a read() until */
	struct p2pkp_ctx linger_ctx;	/* ... as the last read()'s caller */
	u32 rl_tokens;			/* replies to unproven sources */
	u64 rl_ns;
	/* last finished transfer, to answer late START/END */
	bool last_valid;
	u64 last_id, last_cookie;
	struct sockaddr_storage last_addr;
	int last_status;
	struct p2pkp_transfer_info info;
	atomic64_t stats[P2PKP_NSTATS];
};

struct p2pkp_net {
	spinlock_t lock;		/* socks (writers) */
	struct list_head socks;		/* by creation (seqno) */
	u64 seqno;			/* of the last socket made */
	atomic64_t stats[P2PKP_NSTATS];
};

static int family = P2PKP_FAMILY_DEFAULT;
module_param(family, int, 0444);
MODULE_PARM_DESC(family, "address family number (default 12)");

static unsigned long long max_file_size = P2PKP_MAX_SIZE;
module_param(max_file_size, ullong, 0644);
MODULE_PARM_DESC(max_file_size,
		 "largest file a receiver accepts, bytes (default and max 1 TiB)");

static bool rx_gro = true;
module_param(rx_gro, bool, 0644);
MODULE_PARM_DESC(rx_gro,
		 "receivers take datagrams in UDP GRO batches (default 1; read at bind)");

static unsigned int p2pkp_net_id __read_mostly;
static struct workqueue_struct *p2pkp_wq;

/* ---- SHA-256 of files: the fastest implementation, timed at load ---- */

/*
 * The library's generic C code (sha256_update) or the crypto API's
 * "sha256", which is the fastest driver the CPU has (SHA-NI, AVX2, SSSE3,
 * or sha256-generic): each is timed on P2PKP_SHA_CAL_BYTES at load, as the
 * RAID6 and xor code time theirs, and the faster one hashes every file
 * (section 6 of docs/protocol.md).  Under TCG the C code wins; on real
 * hardware SIMD does.
 */
enum { P2PKP_SHA_LIB, P2PKP_SHA_CRYPTO, P2PKP_SHA_N };
static const char * const p2pkp_sha_names[P2PKP_SHA_N] = { "lib", "crypto" };

static char *sha256_choice = "auto";
module_param_named(sha256, sha256_choice, charp, 0444);
MODULE_PARM_DESC(sha256,
		 "SHA-256 of files: auto (the faster, timed at load), lib or crypto");

#define P2PKP_SHA_CAL_BYTES	(64 * 1024)
#define P2PKP_SHA_CAL_ROUNDS	5

static struct crypto_shash *p2pkp_sha_tfm;	/* NULL: the library's */
static u64 p2pkp_sha_rate[P2PKP_SHA_N];		/* bytes/s, 0: not timed */
static int p2pkp_sha_used = P2PKP_SHA_LIB;
static char p2pkp_sha_driver[CRYPTO_MAX_ALG_NAME] = "none";	/* timed */

/* A running SHA-256 of a file, by the implementation chosen at load. */
struct p2pkp_sha {
	struct sha256_state lib;
	struct shash_desc *desc;	/* crypto: its state, or NULL */
};

/* Make @s ready for p2pkp_sha_init() (in process context). */
static int p2pkp_sha_alloc(struct p2pkp_sha *s)
{
	if (!p2pkp_sha_tfm)
		return 0;
	s->desc = kmalloc(sizeof(*s->desc) +
			  crypto_shash_descsize(p2pkp_sha_tfm),
			  GFP_KERNEL_ACCOUNT);
	if (!s->desc)
		return -ENOMEM;
	s->desc->tfm = p2pkp_sha_tfm;
	return 0;
}

static void p2pkp_sha_free(struct p2pkp_sha *s)
{
	kfree(s->desc);			/* NULL-safe; a digest is no secret */
	s->desc = NULL;
}

static int p2pkp_sha_init(struct p2pkp_sha *s)
{
	if (s->desc)
		return crypto_shash_init(s->desc);
	sha256_init(&s->lib);
	return 0;
}

static void p2pkp_sha_update(struct p2pkp_sha *s, const u8 *p, u32 n)
{
	/* sha256 drivers have no failing update: nothing to report */
	if (s->desc)
		crypto_shash_update(s->desc, p, n);
	else
		sha256_update(&s->lib, p, n);
}

static void p2pkp_sha_final(struct p2pkp_sha *s, u8 *out)
{
	if (s->desc)
		crypto_shash_final(s->desc, out);
	else
		sha256_final(&s->lib, out);
}

/* Bytes per second of one implementation, the best of a few rounds. */
static u64 __init p2pkp_sha_time(struct crypto_shash *tfm, const u8 *buf)
{
	u64 t, best = U64_MAX;
	u8 out[SHA256_DIGEST_SIZE];
	int i, err = 0;

	for (i = 0; i < P2PKP_SHA_CAL_ROUNDS && !err; i++) {
		t = ktime_get_ns();
		if (tfm)
			err = crypto_shash_tfm_digest(tfm, buf,
						      P2PKP_SHA_CAL_BYTES, out);
		else
			sha256(buf, P2PKP_SHA_CAL_BYTES, out);
		best = min(best, ktime_get_ns() - t);
		cond_resched();
	}
	if (err)
		return 0;
	return div64_u64((u64)P2PKP_SHA_CAL_BYTES * NSEC_PER_SEC,
			 max_t(u64, best, 1));
}

/*
 * Choose the SHA-256 of files: the sha256= parameter, or the faster one.
 * A crypto "sha256" that cannot be allocated leaves the library's (an
 * error only when sha256=crypto asked for it).
 */
static int __init p2pkp_sha_choose(void)
{
	struct crypto_shash *tfm;
	int want;
	u8 *buf;

	want = sysfs_match_string(p2pkp_sha_names, sha256_choice);
	if (want < 0 && strcmp(sha256_choice, "auto")) {
		pr_err("sha256=%s: expected auto, lib or crypto\n",
		       sha256_choice);
		return -EINVAL;
	}
	tfm = crypto_alloc_shash("sha256", 0, 0);
	if (IS_ERR(tfm)) {
		if (want == P2PKP_SHA_CRYPTO) {
			pr_err("sha256=crypto: no sha256 in the crypto API (%ld)\n",
			       PTR_ERR(tfm));
			return PTR_ERR(tfm);
		}
		tfm = NULL;
	} else {
		strscpy(p2pkp_sha_driver, crypto_shash_driver_name(tfm),
			sizeof(p2pkp_sha_driver));
	}
	buf = kvmalloc(P2PKP_SHA_CAL_BYTES, GFP_KERNEL);
	if (!buf) {
		crypto_free_shash(tfm);
		return -ENOMEM;
	}
	get_random_bytes(buf, P2PKP_SHA_CAL_BYTES);
	p2pkp_sha_rate[P2PKP_SHA_LIB] = p2pkp_sha_time(NULL, buf);
	if (tfm)
		p2pkp_sha_rate[P2PKP_SHA_CRYPTO] = p2pkp_sha_time(tfm, buf);
	kvfree(buf);
	if (want < 0)
		want = p2pkp_sha_rate[P2PKP_SHA_CRYPTO] >
		       p2pkp_sha_rate[P2PKP_SHA_LIB] ?
		       P2PKP_SHA_CRYPTO : P2PKP_SHA_LIB;
	if (want == P2PKP_SHA_CRYPTO && !p2pkp_sha_rate[P2PKP_SHA_CRYPTO]) {
		crypto_free_shash(tfm);	/* it failed its timing */
		return -EINVAL;
	}
	if (want == P2PKP_SHA_LIB) {
		crypto_free_shash(tfm);	/* NULL-safe */
		tfm = NULL;
	}
	p2pkp_sha_tfm = tfm;
	p2pkp_sha_used = want;
	return 0;
}

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

/*
 * Is @a a multicast group P2PKP sends to (section 1.8)?  IPv4 224/4 but
 * not the link-local control block 224.0.0.0/24; IPv6 ff00::/8 of scope
 * link-local (2) or wider, not reserved (0, 15) or interface-local (1).
 */
static bool p2pkp_group_addr_ok(sa_family_t fam, const u8 *addr)
{
	u8 scope;

	if (fam == AF_INET) {
		__be32 a;

		memcpy(&a, addr, sizeof(a));
		return ipv4_is_multicast(a) && !ipv4_is_local_multicast(a);
	}
	scope = addr[1] & 0xf;
	return addr[0] == 0xff && scope >= 2 && scope != 0xf;
}

/* Address and port of @a as an allow-list entry (IPv4 in s6_addr32[0]). */
static void p2pkp_allow_of(struct p2pkp_allow *e,
			   const struct sockaddr_storage *a)
{
	memset(e, 0, sizeof(*e));
	e->family = a->ss_family;
	e->port = p2pkp_addr_port(a);
	if (a->ss_family == AF_INET)
		e->addr.s6_addr32[0] =
			((const struct sockaddr_in *)a)->sin_addr.s_addr;
	else
		e->addr = ((const struct sockaddr_in6 *)a)->sin6_addr;
}

/* Does the receiver take STARTs from @from?  (Its connect() list.) */
static bool p2pkp_allowed(const struct p2pkp_sock *ps,
			  const struct sockaddr_storage *from)
{
	struct p2pkp_allow f;
	int i;

	if (!ps->nallow)
		return true;
	p2pkp_allow_of(&f, from);
	for (i = 0; i < ps->nallow; i++) {
		const struct p2pkp_allow *e = &ps->allow[i];

		if (e->family == f.family &&
		    ipv6_addr_equal(&e->addr, &f.addr) &&
		    (!e->port || e->port == f.port))
			return true;
	}
	return false;
}

/* ---- the engine: one work item and one timer per socket -------------- */

/* Run the engine soon (from any context). */
static void p2pkp_kick(struct p2pkp_sock *ps)
{
	if (!READ_ONCE(ps->dead))
		queue_work(p2pkp_wq, &ps->work);
}

static enum hrtimer_restart p2pkp_timer_fn(struct hrtimer *t)
{
	p2pkp_kick(container_of(t, struct p2pkp_sock, timer));
	return HRTIMER_NORESTART;
}

/* Run the engine again @ns from now (U64_MAX: only on news). */
static void p2pkp_arm(struct p2pkp_sock *ps, u64 ns)
{
	if (ns == U64_MAX || READ_ONCE(ps->dead))
		return;
	ns = min_t(u64, ns, (u64)P2PKP_TIMEOUT_MAX * NSEC_PER_MSEC);
	hrtimer_start_range_ns(&ps->timer, ns_to_ktime(ns), 20 * NSEC_PER_USEC,
			       HRTIMER_MODE_REL_SOFT);
}

/* Wake the callers waiting on the socket (write, read, poll). */
static void p2pkp_notify(struct p2pkp_sock *ps)
{
	struct socket_wq *wq;

	rcu_read_lock();
	wq = rcu_dereference(ps->sk.sk_wq);
	if (skwq_has_sleeper(wq))
		wake_up_interruptible_poll(&wq->wait, EPOLLIN | EPOLLRDNORM |
					   EPOLLOUT | EPOLLWRNORM | EPOLLERR);
	rcu_read_unlock();
}

/* The caller's identity, taken by the system call for the engine. */
static void p2pkp_ctx_get(struct p2pkp_ctx *c)
{
	c->cred = get_current_cred();
	c->memcg = get_mem_cgroup_from_mm(current->mm);
}

static void p2pkp_ctx_put(struct p2pkp_ctx *c)
{
	if (c->cred)
		put_cred(c->cred);
	c->cred = NULL;
	mem_cgroup_put(c->memcg);
	c->memcg = NULL;
}

struct p2pkp_ctx_saved {
	const struct cred *cred;
	struct mem_cgroup *memcg;
};

/* Work as the caller: its credentials (LSMs, file and socket checks) and
 * its memory cgroup (page cache, buffers).
 */
static void p2pkp_ctx_enter(const struct p2pkp_ctx *c,
			    struct p2pkp_ctx_saved *s)
{
	s->cred = override_creds(c->cred);
	s->memcg = set_active_memcg(c->memcg);
}

static void p2pkp_ctx_exit(struct p2pkp_ctx_saved *s)
{
	set_active_memcg(s->memcg);
	revert_creds(s->cred);
}

/* ---- UDP sockets made in the caller's context ------------------------- */

static void p2pkp_udp_ready(struct sock *sk)
{
	struct p2pkp_sock *ps;

	read_lock_bh(&sk->sk_callback_lock);
	ps = sk->sk_user_data;
	if (ps)
		p2pkp_kick(ps);
	read_unlock_bh(&sk->sk_callback_lock);
}

/* A send found the buffer full (SOCK_NOSPACE): kick once it half drained. */
static void p2pkp_udp_write_space(struct sock *sk)
{
	struct socket *sock = sk->sk_socket;

	if (sock && sock_writeable(sk) &&
	    test_and_clear_bit(SOCK_NOSPACE, &sock->flags))
		p2pkp_udp_ready(sk);
}

/*
 * A UDP socket of the caller: made as by socket(2) in the P2PKP socket's
 * network namespace (so LSM socket hooks see the caller and label the
 * socket as its), with a file holding the caller's credentials (so
 * netfilter owner matches see its uid), and buffers within the sysctl
 * limits unless the caller has CAP_NET_ADMIN.  Returns the receive buffer
 * set, or -errno.
 */
static int p2pkp_ksock_open(struct p2pkp_sock *ps, struct p2pkp_ksock *ks,
			    int fam, u32 rcvbuf, u32 sndbuf)
{
	struct net *net = sock_net(&ps->sk);
	struct socket *sock;
	struct file *file;
	struct sock *sk;
	int err;

	err = __sock_create(net, fam, SOCK_DGRAM, IPPROTO_UDP, &sock, 0);
	if (err)
		return err;
	file = sock_alloc_file(sock, 0, NULL);	/* releases sock on error */
	if (IS_ERR(file))
		return PTR_ERR(file);
	sk = sock->sk;
	if (!ns_capable_noaudit(net->user_ns, CAP_NET_ADMIN)) {
		rcvbuf = min_t(u32, rcvbuf, READ_ONCE(sysctl_rmem_max));
		sndbuf = min_t(u32, sndbuf, READ_ONCE(sysctl_wmem_max));
	}
	sock_set_rcvbuf(sk, rcvbuf);
	lock_sock(sk);
	sk->sk_userlocks |= SOCK_SNDBUF_LOCK;
	WRITE_ONCE(sk->sk_sndbuf, max_t(int, sndbuf * 2, SOCK_MIN_SNDBUF));
	release_sock(sk);

	write_lock_bh(&sk->sk_callback_lock);
	ks->saved_data_ready = sk->sk_data_ready;
	ks->saved_error_report = sk->sk_error_report;
	ks->saved_write_space = sk->sk_write_space;
	sk->sk_user_data = ps;
	sk->sk_data_ready = p2pkp_udp_ready;
	sk->sk_error_report = p2pkp_udp_ready;
	sk->sk_write_space = p2pkp_udp_write_space;
	write_unlock_bh(&sk->sk_callback_lock);
	ks->sock = sock;
	ks->file = file;
	return READ_ONCE(sk->sk_rcvbuf);
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
	sk->sk_write_space = ks->saved_write_space;
	write_unlock_bh(&sk->sk_callback_lock);
	fput(ks->file);			/* releases the socket */
	ks->sock = NULL;
	ks->file = NULL;
}

/*
 * DATA is not fragmented (section 3.1): a datagram larger than the path
 * MTU fails with EMSGSIZE (IPv4 DF and PMTUDISC_DO; IPv6 DONTFRAG), and an
 * ICMP "fragmentation needed" / "packet too big" lowers the route's MTU.
 * Only a path too narrow for a P2PKP_CHUNK_MIN chunk (an IPv4 MTU below
 * 580 bytes) gets fragments (@frag): IPv4 must carry them.
 */
static int p2pkp_set_frag(struct socket *sock, bool frag)
{
	sockptr_t dontfrag = KERNEL_SOCKPTR(&(int){ !frag });
	sockptr_t disc = KERNEL_SOCKPTR(&(int){ frag ? IP_PMTUDISC_DONT :
						       IP_PMTUDISC_DO });

	if (sock->sk->sk_family == AF_INET6)	/* IPV6_PMTUDISC_* alike */
		return sock->ops->setsockopt(sock, SOL_IPV6,
					     IPV6_MTU_DISCOVER, disc,
					     sizeof(int)) ?:
		       sock->ops->setsockopt(sock, SOL_IPV6, IPV6_DONTFRAG,
					     dontfrag, sizeof(int));
	return sock->ops->setsockopt(sock, SOL_IP, IP_MTU_DISCOVER, disc,
				     sizeof(int));
}

/*
 * UDP GRO on a receiver's socket (section 3.3): the stack may join
 * datagrams of one source and size that arrive together, and a receive
 * returns them all (P2PKP_RXBUF_LEN).
 */
static int p2pkp_set_gro(struct socket *sock, bool on)
{
	return sock->ops->setsockopt(sock, SOL_UDP, UDP_GRO,
				     KERNEL_SOCKPTR(&(int){ on }),
				     sizeof(int));
}

/*
 * The chunk a DATA datagram on @sock carries: its route's MTU less the IP,
 * UDP and P2PKP headers and the tag, at most @cap (the socket's
 * P2PKP_CHUNK, 0: P2PKP_CHUNK_MAX).  The route is looked up again if it
 * changed; without one, P2PKP_CHUNK_SIZE.  Below P2PKP_CHUNK_MIN: the
 * path is too narrow for a whole datagram.
 */
static u32 p2pkp_path_chunk(struct socket *sock, bool mac, u32 cap,
			    bool *known)
{
	struct sock *sk = sock->sk;
	bool v6 = sk->sk_family == AF_INET6;
	u32 cookie = 0, mtu = 0, hdr;
	struct dst_entry *dst;

#if IS_ENABLED(CONFIG_IPV6)
	if (v6)
		cookie = inet6_sk(sk)->dst_cookie;
#endif
	dst = sk_dst_check(sk, cookie);
	if (dst) {
		mtu = dst_mtu(dst);
		dst_release(dst);
	}
	*known = mtu;
	if (!mtu)		/* no route now: the next send finds one */
		return min_t(u32, cap ?: P2PKP_CHUNK_MAX, P2PKP_CHUNK_SIZE);
	hdr = (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) +
	      sizeof(struct udphdr) + P2PKP_DATA_HLEN +
	      (mac ? P2PKP_MAC_LEN : 0);
	return min3(mtu > hdr ? mtu - hdr : 0, cap ?: P2PKP_CHUNK_MAX,
		    (u32)P2PKP_CHUNK_MAX);
}

/*
 * Set @p's chunk for a new epoch or write: P2PKP_CHUNK_MIN in fragments
 * when the path is narrower.
 */
static int p2pkp_peer_chunk(struct p2pkp_peer *p, u32 chunk)
{
	bool frag = chunk < P2PKP_CHUNK_MIN;
	int err;

	if (frag != p->frag) {
		err = p2pkp_set_frag(p->ks.sock, frag);
		if (err)
			return err;
		p->frag = frag;
	}
	p->chunk = max_t(u32, chunk, P2PKP_CHUNK_MIN);
	return 0;
}

/* ---- cookie and MAC ------------------------------------------------- */

/*
 * The receiver's cookie for transfer @id from @a in time slot @slot
 * (section 2.3): a cookie seen once does not stay valid for ever.
 */
static u64 p2pkp_cookie_at(const struct p2pkp_sock *ps, u64 id,
			   const struct sockaddr_storage *a, u32 slot)
{
	struct {
		__be64 id;
		__be32 slot;
		struct p2pkp_allow who;
	} __packed in;
	u64 c;

	memset(&in, 0, sizeof(in));
	in.id = cpu_to_be64(id);
	in.slot = cpu_to_be32(slot);
	p2pkp_allow_of(&in.who, a);
	c = siphash(&in, sizeof(in), &ps->ckey);
	return c ? c : 1;
}

static u32 p2pkp_cookie_slot(void)
{
	return (u32)(ktime_get_seconds() / P2PKP_COOKIE_SECS);
}

/* The cookie handed out now for @id from @a. */
static u64 p2pkp_cookie(const struct p2pkp_sock *ps, u64 id,
			const struct sockaddr_storage *a)
{
	return p2pkp_cookie_at(ps, id, a, p2pkp_cookie_slot());
}

/* Was @c handed out for @id from @a in this slot or the one before? */
static bool p2pkp_cookie_ok(const struct p2pkp_sock *ps, u64 id,
			    const struct sockaddr_storage *a, u64 c)
{
	u32 slot = p2pkp_cookie_slot();

	return c == p2pkp_cookie_at(ps, id, a, slot) ||
	       c == p2pkp_cookie_at(ps, id, a, slot - 1);
}

/* Tag of a datagram: HMAC-SHA256(key, tail || head), first 16 bytes. */
static int p2pkp_mac(struct crypto_shash *tfm, const void *head, size_t hlen,
		     const void *tail, size_t tlen, u8 *tag)
{
	SHASH_DESC_ON_STACK(desc, tfm);
	u8 full[SHA256_DIGEST_SIZE];
	int err;

	desc->tfm = tfm;
	err = crypto_shash_init(desc);
	if (!err && tlen)
		err = crypto_shash_update(desc, tail, tlen);
	if (!err)
		err = crypto_shash_update(desc, head, hlen);
	if (!err)
		err = crypto_shash_final(desc, full);
	if (!err)
		memcpy(tag, full, P2PKP_MAC_LEN);
	memzero_explicit(full, sizeof(full));
	shash_desc_zero(desc);
	return err;
}

/* ---- datagrams ---------------------------------------------------- */

static size_t p2pkp_hdr_fill(const struct p2pkp_sock *ps, void *buf, u8 type,
			     u16 flags, u64 id, u64 cookie, u32 echo)
{
	struct p2pkp_hdr *h = buf;

	if (ps->mac)
		flags |= P2PKP_F_MAC;
	h->magic = cpu_to_be32(P2PKP_MAGIC);
	h->version = P2PKP_VERSION;
	h->type = type;
	h->flags = cpu_to_be16(flags);
	h->id = cpu_to_be64(id);
	h->cookie = cpu_to_be64(cookie);
	h->ts = cpu_to_be32(p2pkp_now_us());
	h->echo = cpu_to_be32(echo);
	return sizeof(*h);
}

/*
 * Send head (header + fixed body) and tail (payload, extensions) on @sock,
 * to @to if not connected, with the tag when the socket has a key.
 */
static int p2pkp_xmit(struct p2pkp_sock *ps, struct socket *sock,
		      struct sockaddr_storage *to, int tolen,
		      const void *head, size_t hlen, const void *tail,
		      size_t tlen, int flags)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL | flags };
	u8 tag[P2PKP_MAC_LEN];
	struct kvec iov[3];
	int n = 0, ret;

	iov[n].iov_base = (void *)head;
	iov[n++].iov_len = hlen;
	if (tlen) {
		iov[n].iov_base = (void *)tail;
		iov[n++].iov_len = tlen;
	}
	if (ps->mac) {
		ret = p2pkp_mac(ps->mac, head, hlen, tail, tlen, tag);
		if (ret)
			return ret;
		iov[n].iov_base = tag;
		iov[n++].iov_len = P2PKP_MAC_LEN;
	}
	if (to) {
		msg.msg_name = to;
		msg.msg_namelen = tolen;
	}
	ret = kernel_sendmsg(sock, &msg, iov, n,
			     hlen + tlen + (ps->mac ? P2PKP_MAC_LEN : 0));
	if (ret < 0)
		return ret;
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_SENT, 1);
	return 0;
}

/* Length of the START extensions announced by @flags. */
static u32 p2pkp_start_tail(u16 flags)
{
	return (flags & P2PKP_F_GROUP ? sizeof(struct p2pkp_group) : 0) +
	       (flags & P2PKP_F_DIGEST ? P2PKP_DIGEST_SIZE : 0);
}

/*
 * Validate a received datagram (section 2.7): header, direction, key, MAC,
 * flags and length.  Returns its type and the length of its tail (after
 * the fixed body, without the tag), or 0 when it was dropped (and counted).
 */
static int p2pkp_parse(struct p2pkp_sock *ps, const u8 *buf, int len,
		       bool to_receiver, u32 *tail)
{
	const struct p2pkp_hdr *h = (const void *)buf;
	u8 tag[P2PKP_MAC_LEN];
	u32 fixed, t;
	u16 flags;

	if (len < (int)P2PKP_HLEN) {
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
	if (h->type < P2PKP_T_START || h->type > P2PKP_T_MAX ||
	    !((to_receiver ? P2PKP_S2R : P2PKP_R2S) & BIT(h->type))) {
		p2pkp_drop(ps, P2PKP_ST_DROP_TYPE);
		return 0;
	}
	flags = be16_to_cpu(h->flags);
	if (!(flags & P2PKP_F_MAC) != !ps->mac) {
		p2pkp_drop(ps, P2PKP_ST_DROP_AUTH);
		return 0;
	}
	fixed = P2PKP_HLEN + p2pkp_fixed_len[h->type];
	if (ps->mac)
		len -= P2PKP_MAC_LEN;
	if (len < (int)fixed) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return 0;
	}
	t = len - fixed;
	if (ps->mac &&
	    (p2pkp_mac(ps->mac, buf, fixed, buf + fixed, t, tag) ||
	     crypto_memneq(tag, buf + len, P2PKP_MAC_LEN))) {
		p2pkp_drop(ps, P2PKP_ST_DROP_AUTH);
		return 0;
	}
	if (flags & ~(P2PKP_F_ECHO | P2PKP_F_MAC | p2pkp_type_flags[h->type])) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return 0;
	}
	if (h->type == P2PKP_T_DATA ? (!t || t > P2PKP_CHUNK_MAX) :
	    t != (h->type == P2PKP_T_START ? p2pkp_start_tail(flags) : 0)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return 0;
	}
	*tail = t;
	return h->type;
}

/*
 * DONE status from the network: 0 or a documented errno; anything else
 * in -4095..-1 becomes -EREMOTEIO (section 2.6).  Returns 1 when @st is
 * out of range (the datagram is malformed).
 */
static int p2pkp_done_status(s32 st, int *out)
{
	static const int ok[] = {
		EBADMSG, ENOSPC, EDQUOT, EFBIG, EACCES, EPERM, EROFS, EIO,
		ENAMETOOLONG, EISDIR, ENOTDIR, ENOENT, EEXIST, ELOOP, ENOMEM,
		ETXTBSY, EMLINK, EXDEV, EOPNOTSUPP, EINVAL, ECANCELED,
	};
	unsigned int i;

	if (st > 0 || st < -MAX_ERRNO)
		return 1;
	*out = st ? -EREMOTEIO : 0;
	for (i = 0; i < ARRAY_SIZE(ok); i++)
		if (st == -ok[i])
			*out = st;
	return 0;
}

/* ---- files ---------------------------------------------------------- */

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

/*
 * Write all of @it at @pos.  A short write is retried so that its cause
 * (ENOSPC, EDQUOT...) shows.
 */
static int p2pkp_write_iter(struct file *f, struct iov_iter *it, loff_t pos)
{
	struct iov_iter saved;
	size_t left;
	ssize_t w;

	while ((left = iov_iter_count(it))) {
		saved = *it;
		w = p2pkp_vfs_iter_write(f, it, &pos);
		if (w < 0)
			return w;
		if (w == 0 || w > left)
			return -EIO;
		/*
		 * Go on after what was written, whatever the file system did
		 * with the iterator (it may truncate it at a size limit).
		 */
		*it = saved;
		iov_iter_advance(it, w);
	}
	return 0;
}

/* Payload length of chunk @c of a file of @size bytes in @count chunks. */
static u32 p2pkp_chunk_len(u64 size, u64 count, u32 chunk, u64 c)
{
	if (c + 1 < count)
		return chunk;
	return size - c * chunk;
}

/* ---- sender ------------------------------------------------------- */

static bool tx_zerocopy = true;
module_param(tx_zerocopy, bool, 0644);
MODULE_PARM_DESC(tx_zerocopy,
		 "senders hand new file data to UDP by page reference (default 1; read at write)");

/*
 * Zero-copy sends (section 3.3): a block of new data and the DATA headers
 * sent with it live in one vmalloc area whose pages the skbs reference
 * (MSG_ZEROCOPY with our ubuf_info).  Nothing in an area is written again
 * once sent from: the next block gets a new area, and an area is freed when
 * the transfer has let go of it and so has the last skb (ubuf.refcnt: one
 * for the transfer, one per skb).  rmmod waits for every area.
 */
struct p2pkp_zc {
	struct ubuf_info ubuf;
	u8 *area;			/* data_size bytes of file, then headers */
	u32 data_size, used, size;
	bool sent;			/* skbs may reference it */
	struct work_struct free;
};

static atomic_t p2pkp_zc_live = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(p2pkp_zc_wait);

static void p2pkp_zc_free(struct work_struct *w)
{
	struct p2pkp_zc *zc = container_of(w, struct p2pkp_zc, free);

	vfree(zc->area);
	kfree(zc);
	if (atomic_dec_and_test(&p2pkp_zc_live))
		wake_up(&p2pkp_zc_wait);
}

static void p2pkp_zc_put(struct p2pkp_zc *zc)
{
	if (zc && refcount_dec_and_test(&zc->ubuf.refcnt))
		queue_work(p2pkp_wq, &zc->free);	/* vfree may sleep */
}

/* An skb lets go of an area's pages (any context but hard IRQ). */
static void p2pkp_zc_done(struct sk_buff *skb, struct ubuf_info *ubuf,
			  bool zerocopy_success)
{
	rcu_read_lock();		/* rmmod: synchronize_rcu() */
	p2pkp_zc_put(container_of(ubuf, struct p2pkp_zc, ubuf));
	rcu_read_unlock();
}

P2PKP_UBUF_OPS(p2pkp_zc_ops, p2pkp_zc_done);

static struct p2pkp_zc *p2pkp_zc_alloc(u32 data_size, u32 hdr_size)
{
	struct p2pkp_zc *zc = kzalloc(sizeof(*zc), GFP_KERNEL_ACCOUNT);

	if (!zc)
		return NULL;
	zc->area = __vmalloc(data_size + hdr_size, GFP_KERNEL_ACCOUNT);
	if (!zc->area) {
		kfree(zc);
		return NULL;
	}
	zc->data_size = data_size;
	zc->used = data_size;
	zc->size = data_size + hdr_size;
	p2pkp_ubuf_ops_set(&zc->ubuf, p2pkp_zc_ops);
	zc->ubuf.flags = SKBFL_ZEROCOPY_FRAG | SKBFL_DONT_ORPHAN;
	refcount_set(&zc->ubuf.refcnt, 1);
	INIT_WORK(&zc->free, p2pkp_zc_free);
	atomic_inc(&p2pkp_zc_live);
	return zc;
}

/*
 * Header room in an area of @blk bytes: a header (and tag) for each chunk
 * of every peer that lies in it, within 4..256 KiB (beyond, a block's last
 * runs copy).
 */
static u32 p2pkp_zc_hdr_size(struct p2pkp_peer **peers, int npeers,
			     u32 blk, bool mac)
{
	u32 per = P2PKP_DATA_HLEN + (mac ? P2PKP_MAC_LEN : 0);
	u64 n = 0;
	int i;

	for (i = 0; i < npeers; i++)
		n += blk / peers[i]->chunk + 2;
	return clamp_t(u64, PAGE_ALIGN(n * per), SZ_4K, SZ_256K);
}

struct p2pkp_tx {
	struct p2pkp_ctx ctx;		/* the caller of write() */
	struct file *file;
	int npeers;			/* ps->peers[0..npeers-1] take part */
	u64 size, id;
	u32 chunk_max;			/* the largest chunk of any peer */
	u64 start_ns;
	u8 *blk;			/* new data: file bytes blk_pos.. */
	u32 blk_size, blk_len;		/* ... allocated, valid */
	u64 blk_pos;
	u8 *blk_copy;			/* blk when not zero-copy */
	struct p2pkp_zc *zc;		/* blk's area when zero-copy, or NULL */
	bool zc_on;			/* tx_zerocopy at write() */
	u32 zc_hdrs;			/* header bytes of a zero-copy area */
	u8 *one;			/* one chunk, for retransmissions */
	u64 one_pos;			/* its file offset, U64_MAX: none */
	u32 one_len;
	u8 *rbuf;			/* received datagram */
	u64 hashed;			/* bytes hashed in order */
	bool digest_done;
	bool resume;			/* P2PKP_RESUME: digest in START */
	struct p2pkp_sha sha;
	u8 digest[P2PKP_DIGEST_SIZE];
	/* rate cap: token bucket of DATA payload bytes */
	u64 rate, burst, tokens, tok_ns;
	u64 pace_ns;			/* > 0: no tokens, retry after this */
	u64 wait_ns;			/* pacing: a peer may send after this */
	bool more;			/* the round's budget ran out: again */
	u64 cur[P2PKP_MAX_PEERS];	/* retransmission cursor per peer */
	u32 rto_left[P2PKP_MAX_PEERS];	/* timeout retransmissions allowed */
	/* a run of DATA datagrams sent with one UDP_SEGMENT call */
	bool no_gso;			/* the route refused it: one by one */
	bool no_zc;			/* ... and so zero-copy runs */
	struct kvec gvec[3 * P2PKP_GSO_CHUNKS];
	u8 ghdr[P2PKP_GSO_CHUNKS][P2PKP_DATA_HLEN];
	u8 gtag[P2PKP_GSO_CHUNKS][P2PKP_MAC_LEN];
	struct bio_vec zbv[MAX_SKB_FRAGS];	/* a zero-copy run's pieces */
	/* multicast (section 1.8): new chunks once to the group */
	struct p2pkp_ksock gks;		/* connected to the group */
	bool gon;			/* a group transfer */
	bool gno_gso;			/* the group's route takes no batch */
	u8 acklog;			/* ceil(log2(members)), in START */
	struct p2pkp_group gext;	/* START's group extension */
	u32 gchunk;			/* every member's chunk */
	u64 gcount;			/* ... and number of chunks */
	u64 gnext;			/* next chunk never sent to the group */
	u64 gwait_ns;			/* late peers are not waited for after */
	u64 gjoin_ns;			/* the last first member's acceptance */
	u64 gack_edge, gack_mid;	/* chunks + 1 that ask for an ACK */
};

/* File offset and length of chunk @c of @p's epoch (section 2.2). */
static u64 p2pkp_peer_off(const struct p2pkp_peer *p, u64 c)
{
	return p->base + c * p->chunk;
}

static u32 p2pkp_peer_len(const struct p2pkp_tx *tx,
			  const struct p2pkp_peer *p, u64 c)
{
	return p2pkp_chunk_len(tx->size - p->base, p->count, p->chunk, c);
}

/* Is [@pos, @pos + @len) in the block of new data? */
static bool p2pkp_in_blk(const struct p2pkp_tx *tx, u64 pos, u32 len)
{
	return pos >= tx->blk_pos && pos + len <= tx->blk_pos + tx->blk_len;
}

/*
 * Where the next block of new data goes: with zero-copy, an area no skb
 * references (the current one if nothing was sent from it, else a new one;
 * the old one lives on with its skbs); else, or if no area can be had, the
 * copy buffer.
 */
static int p2pkp_zc_next(struct p2pkp_tx *tx)
{
	struct p2pkp_zc *zc = tx->zc;

	if (!tx->zc_on)
		return 0;
	/* every skb that references an area holds a ref on it */
	if (zc && (!zc->sent || refcount_read(&zc->ubuf.refcnt) == 1)) {
		smp_acquire__after_ctrl_dep();	/* their last reads first */
		zc->used = zc->data_size;
		zc->sent = false;
		return 0;
	}
	tx->zc = NULL;
	p2pkp_zc_put(zc);
	zc = p2pkp_zc_alloc(tx->blk_size, tx->zc_hdrs);
	tx->zc = zc;
	if (zc) {
		tx->blk = zc->area;
		return 0;
	}
	if (!tx->blk_copy)
		tx->blk_copy = kvmalloc(tx->blk_size, GFP_KERNEL_ACCOUNT);
	tx->blk = tx->blk_copy;
	return tx->blk ? 0 : -ENOMEM;
}

/* Read the block of new data from @pos (hashing what is next in order). */
static int p2pkp_read_blk(struct p2pkp_tx *tx, u64 pos)
{
	u32 bytes = min_t(u64, tx->blk_size, tx->size - pos);
	int err;

	tx->blk_len = 0;
	err = p2pkp_zc_next(tx);
	if (err)
		return err;
	err = p2pkp_read_full(tx->file, tx->blk, bytes, pos);
	if (err)
		return err;
	tx->blk_pos = pos;
	tx->blk_len = bytes;
	if (!tx->digest_done && tx->hashed >= pos && tx->hashed < pos + bytes) {
		p2pkp_sha_update(&tx->sha, tx->blk + (tx->hashed - pos),
				 pos + bytes - tx->hashed);
		tx->hashed = pos + bytes;
	}
	return 0;
}

/* File bytes [@pos, @pos + @len) to send again: from the block or read. */
static const u8 *p2pkp_get_old(struct p2pkp_tx *tx, u64 pos, u32 len,
			       int *err)
{
	if (p2pkp_in_blk(tx, pos, len))
		return tx->blk + (pos - tx->blk_pos);
	if (tx->one_pos == pos && tx->one_len == len)
		return tx->one;	/* several peers miss it: read once */
	tx->one_pos = U64_MAX;
	*err = p2pkp_read_full(tx->file, tx->one, len, pos);
	if (*err)
		return NULL;
	tx->one_pos = pos;
	tx->one_len = len;
	return tx->one;
}

/* Hash the file from where it is hashed in order, at most @budget bytes. */
static int p2pkp_tx_digest_some(struct p2pkp_tx *tx, u64 budget)
{
	u64 stop = tx->size - tx->hashed > budget ? tx->hashed + budget :
		   tx->size;
	u32 n;
	int err;

	if (tx->digest_done)
		return 0;
	tx->one_pos = U64_MAX;		/* @one is reused below */
	while (tx->hashed < stop) {
		n = min_t(u64, tx->chunk_max, tx->size - tx->hashed);
		err = p2pkp_read_full(tx->file, tx->one, n, tx->hashed);
		if (err)
			return err;
		p2pkp_sha_update(&tx->sha, tx->one, n);
		tx->hashed += n;
	}
	if (tx->hashed < tx->size)
		return 0;
	p2pkp_sha_final(&tx->sha, tx->digest);
	tx->digest_done = true;
	return 0;
}

static int p2pkp_tx_digest(struct p2pkp_tx *tx)
{
	return p2pkp_tx_digest_some(tx, U64_MAX);
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

/* File bytes @p confirmed in the last write (racy reads: for /proc too). */
static u64 p2pkp_peer_acked(const struct p2pkp_sock *ps,
			    const struct p2pkp_peer *p)
{
	int state = READ_ONCE(p->state);
	u64 size = READ_ONCE(ps->tx_size);

	if (state == PS_IDLE)
		return 0;
	if (state == PS_DONE)
		return size;
	if (READ_ONCE(p->resync))
		return min(READ_ONCE(p->rs_lo), size);
	return min(READ_ONCE(p->base) +
		   READ_ONCE(p->cum) * READ_ONCE(p->chunk), size);
}

static bool p2pkp_peer_active(const struct p2pkp_peer *p)
{
	return p->state >= PS_START && p->state <= PS_END;
}

/* Send a control datagram to a connected peer. */
static int p2pkp_tx_ctl_flags(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			      struct p2pkp_peer *p, u8 type, u16 flags,
			      const void *body, size_t blen)
{
	u8 pkt[P2PKP_CTL_MAX];
	size_t n = p2pkp_hdr_fill(ps, pkt, type, flags, tx->id,
				  p->cookie_known ? p->cookie : 0, 0);
	int err;

	if (blen)
		memcpy(pkt + n, body, blen);
	err = p2pkp_xmit(ps, p->ks.sock, NULL, 0, pkt, n + blen, NULL, 0,
			 MSG_DONTWAIT);
	if (!err)
		p->sent++;
	return err;
}

static int p2pkp_tx_ctl(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			struct p2pkp_peer *p, u8 type, const void *body,
			size_t blen)
{
	return p2pkp_tx_ctl_flags(ps, tx, p, type, 0, body, blen);
}

/* Tell @p its transfer is over (ABORT with @err) and fail it with @err. */
static void p2pkp_tx_abort(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			   struct p2pkp_peer *p, int err)
{
	struct p2pkp_status ab = { .status = cpu_to_be32(-err) };

	p2pkp_tx_ctl(ps, tx, p, P2PKP_T_ABORT, &ab, sizeof(ab));
	p2pkp_peer_fail(ps, p, err);
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
	/* srtt / 2: a timer late under load is not a loss (section 3.3) */
	p->rto = clamp_t(u32, p->srtt + max3(4 * p->rttvar, p->srtt / 2, 10000U),
			 P2PKP_RTO_MIN_US, P2PKP_RTO_MAX_US);
}

/*
 * Congestion control per peer (section 3.3): CUBIC (RFC 9438) in chunks,
 * with slow start, its Reno-friendly region and fast convergence, a
 * window of one chunk after a timeout, and the undo of a timeout that an
 * ACK proves spurious.  The receiver's window stays the upper bound.
 */
static bool tx_cc = true;
module_param(tx_cc, bool, 0644);
MODULE_PARM_DESC(tx_cc,
		 "Congestion control and pacing per peer (default 1); read at each write");

#define P2PKP_CWND_INIT		10	/* chunks (RFC 6928) */
#define P2PKP_CWND_MIN		2
#define P2PKP_CUBIC_BETA	717	/* / 1024: 0.7 */
#define P2PKP_CUBIC_C		410	/* / 1024: 0.4 chunks / s^3 */
#define P2PKP_CUBIC_ALPHA	542	/* / 1024: 3 (1 - beta) / (1 + beta) */
#define P2PKP_CUBIC_T_MAX_MS	100000U	/* curve time considered, at most */
#define P2PKP_PACE_SS		20	/* / 10: pacing gain in slow start */
#define P2PKP_PACE_CA		12	/* / 10: ... and otherwise */

static void p2pkp_cc_reset(struct p2pkp_peer *p, bool cc)
{
	p->cc = cc;
	p->cwnd = p->cc ? P2PKP_CWND_INIT : P2PKP_WIN;
	p->ssthresh = P2PKP_WIN;
	p->cwnd_cnt = 0;
	p->w_max = 0;
	p->cc_epoch_ns = 0;
	p->rec_next = 0;
	p->pace_ns = 0;
	p->pace_rate = 0;
	p->undo_cum = U64_MAX;
}

/* Integer cube root of @x < 2^63. */
static u32 p2pkp_cbrt(u64 x)
{
	u32 lo = 0, hi = 1U << 21;	/* hi^3 = 2^63 > x */

	while (hi - lo > 1) {
		u32 mid = lo + (hi - lo) / 2;

		if ((u64)mid * mid * mid <= x)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* Pacing rate: the window per srtt, times 2 early in slow start, else 1.2. */
static void p2pkp_cc_pace(struct p2pkp_peer *p)
{
	u32 gain = p->cwnd < p->ssthresh / 2 ? P2PKP_PACE_SS : P2PKP_PACE_CA;

	if (!p->cc || !p->rtt_valid) {
		p->pace_rate = 0;
		return;
	}
	/* at most 512 x 65000 x 10^6 x 20: no overflow */
	p->pace_rate = div_u64((u64)p->cwnd * p->chunk * USEC_PER_SEC * gain,
			       max(p->srtt, 100U) * 10);
}

static void p2pkp_cc_set(struct p2pkp_peer *p, u32 cwnd)
{
	p->cwnd = clamp_t(u32, cwnd, 1, P2PKP_WIN);
	p2pkp_cc_pace(p);
}

/* @acked chunks newly acknowledged (in order or selectively). */
static void p2pkp_cc_ack(struct p2pkp_peer *p, u32 acked, u64 now)
{
	u64 t, d, delta, target, est;

	if (!p->cc || !acked)
		return;
	/* a window the peer's own window caps does not grow (RFC 7661) */
	if (p->cwnd >= p->win) {
		p2pkp_cc_pace(p);
		return;
	}
	if (p->cwnd < p->ssthresh) {			/* slow start */
		p2pkp_cc_set(p, min(p->cwnd + acked, p->ssthresh));
		return;
	}
	if (!p->cc_epoch_ns) {				/* a new curve */
		p->cc_epoch_ns = now;
		p->cwnd_cnt = 0;
		p->w_est = (u64)p->cwnd << 10;
		if (p->w_max > p->cwnd) {
			p->w_origin = p->w_max;
			p->k_ms = p2pkp_cbrt(div_u64((u64)(p->w_max - p->cwnd) *
						     NSEC_PER_SEC * 1024,
						     P2PKP_CUBIC_C));
		} else {
			p->w_origin = p->cwnd;
			p->k_ms = 0;
		}
	}
	/* W_cubic(t + srtt) = C (t + srtt - K)^3 + W_origin, t in ms */
	t = div_u64(now - p->cc_epoch_ns, NSEC_PER_MSEC) + p->srtt / 1000;
	t = min_t(u64, t, P2PKP_CUBIC_T_MAX_MS);
	d = t > p->k_ms ? t - p->k_ms : p->k_ms - t;
	delta = div64_u64(d * d * d * P2PKP_CUBIC_C, 1024ULL * NSEC_PER_SEC);
	if (t > p->k_ms)
		target = p->w_origin + delta;
	else
		target = delta < p->w_origin ? p->w_origin - delta : 0;
	/*
	 * Reno-friendly estimate: alpha chunks per window acknowledged, 1 once
	 * past the window before the loss (RFC 9438 4.3); a window's worth at
	 * most per ACK (a hole filled after lost ACKs acknowledges many).
	 */
	acked = min(acked, p->cwnd);
	p->w_est += div_u64((u64)((p->w_est >> 10) >= p->w_max ? 1024 :
				  P2PKP_CUBIC_ALPHA) * acked, p->cwnd);
	est = p->w_est >> 10;
	if (est > target)
		target = est;
	target = clamp_t(u64, target, p->cwnd, p->cwnd + p->cwnd / 2);
	p->cwnd_cnt += (u32)(target - p->cwnd) * acked;
	if (p->cwnd_cnt >= p->cwnd) {
		u32 inc = p->cwnd_cnt / p->cwnd;

		p->cwnd_cnt -= inc * p->cwnd;
		p2pkp_cc_set(p, min_t(u64, p->cwnd + inc, target));
	} else {
		p2pkp_cc_pace(p);
	}
}

/* Multiplicative decrease, with CUBIC's fast convergence. */
static u32 p2pkp_cc_cut(struct p2pkp_peer *p)
{
	u32 was = p->cwnd;

	p->w_max = was < p->w_max ? was * (1024 + P2PKP_CUBIC_BETA) / 2048 : was;
	p->ssthresh = max_t(u32, was * P2PKP_CUBIC_BETA / 1024, P2PKP_CWND_MIN);
	p->cc_epoch_ns = 0;
	return p->ssthresh;
}

/* Chunk @c was found lost by the SACK rule: once per window of data. */
static void p2pkp_cc_loss(struct p2pkp_sock *ps, struct p2pkp_peer *p, u64 c)
{
	if (!p->cc || c < p->rec_next)
		return;
	p->rec_next = p->next;
	p->undo_cum = U64_MAX;		/* a real loss: no undo */
	p->losses++;
	p2pkp_stat(ps, P2PKP_ST_CC_LOSSES, 1);
	p2pkp_cc_set(p, p2pkp_cc_cut(p));
}

/* Chunk @c is resent because its RTO ran out: one chunk, slow start. */
static void p2pkp_cc_timeout(struct p2pkp_sock *ps, struct p2pkp_peer *p,
			     u64 c)
{
	if (!p->cc)
		return;
	if (p->undo_cum == U64_MAX) {	/* the first of a row: keep for undo */
		p->undo_cwnd = p->cwnd;
		p->undo_ssthresh = p->ssthresh;
		p->undo_w_max = p->w_max;
		p->undo_cum = c;
		p->undo_us = p2pkp_now_us();
	}
	if (c >= p->rec_next) {		/* not a loss already reacted to */
		p2pkp_cc_cut(p);
		p->w_max = 0;		/* K = 0 from the next curve (RFC 9438) */
	}
	p->rec_next = p->next;
	p->timeouts++;
	p2pkp_stat(ps, P2PKP_ST_CC_TIMEOUTS, 1);
	p2pkp_cc_set(p, 1);
}

/*
 * An ACK past the timed-out chunk that answers a datagram sent before its
 * retransmission: the original arrived, the timeout was spurious (Eifel,
 * RFC 3522): the window before it comes back.
 */
static void p2pkp_cc_undo(struct p2pkp_sock *ps, struct p2pkp_peer *p,
			  const struct p2pkp_hdr *h, u64 cum)
{
	if (p->undo_cum == U64_MAX || cum <= p->undo_cum)
		return;
	if ((be16_to_cpu(h->flags) & P2PKP_F_ECHO) &&
	    (s32)(p->undo_us - be32_to_cpu(h->echo)) > 0) {
		p->ssthresh = max(p->ssthresh, p->undo_ssthresh);
		p->w_max = p->undo_w_max;
		p->cc_epoch_ns = 0;
		p->undos++;
		p2pkp_stat(ps, P2PKP_ST_CC_UNDOS, 1);
		p2pkp_cc_set(p, max(p->cwnd, p->undo_cwnd));
	}
	p->undo_cum = U64_MAX;
}

/*
 * May an ACK of chunk @c move rack_ns to the time @c was last sent?  Not
 * when that send was a retransmission the ACK may not answer (RFC 8985
 * 6.2 step 2): the original, queued at a busy receiver, may be what it
 * acknowledges, and every chunk sent before the retransmission would look
 * lost.  It answers it when it echoes a datagram sent no earlier (the
 * receiver echoes a retransmission that filled a hole, section 1.8).
 */
static bool p2pkp_ack_sent(const struct p2pkp_peer *p,
			   const struct p2pkp_hdr *h, u64 c)
{
	u32 sent_us = (u32)div_u64(p->sent_ns[c % P2PKP_WIN], NSEC_PER_USEC);

	if (!test_bit(c % P2PKP_WIN, p->rtx))
		return true;
	return (be16_to_cpu(h->flags) & P2PKP_F_ECHO) &&
	       (s32)(be32_to_cpu(h->echo) - sent_us) >= 0;
}

/* Chunks in flight to @p: sent, neither acknowledged nor known lost. */
static u32 p2pkp_pipe(const struct p2pkp_peer *p)
{
	u64 reo = (u64)(p->srtt / 4 + 1000) * NSEC_PER_USEC;
	u32 i, n = p->next - p->cum - p->nsacked, lost = 0;

	if (!p->rtt_valid || p->next == p->cum ||
	    (!p->nsacked &&
	     p->sent_ns[p->cum % P2PKP_WIN] + reo > p->rack_ns))
		return n;	/* nothing sent long enough before rack */
	/* lost: sent well before the latest acknowledged send (3.3) */
	for (i = 0; i < p->next - p->cum; i++)
		if (!test_bit(i, p->sack) &&
		    p->sent_ns[(p->cum + i) % P2PKP_WIN] + reo <= p->rack_ns)
			lost++;
	return n - lost;
}

/*
 * Pacing: may DATA go to @p now?  If not, tx->wait_ns says when.  A send
 * of @bytes moves p->pace_ns on by bytes / rate; idle time buys at most
 * one quantum (P2PKP_PACE_QUANTUM_NS of sending) of credit, and a run of
 * new chunks is at most a quantum long (at least 2 chunks).
 */
#define P2PKP_PACE_QUANTUM_NS	(4 * NSEC_PER_MSEC)
#define P2PKP_PACE_EARLY_NS	(NSEC_PER_MSEC / 4)	/* fewer wake-ups */

static bool p2pkp_pace_ok(struct p2pkp_tx *tx, const struct p2pkp_peer *p,
			  u64 now)
{
	if (!p->pace_rate || p->pace_ns <= now + P2PKP_PACE_EARLY_NS)
		return true;
	tx->wait_ns = min(tx->wait_ns, p->pace_ns - now);
	return false;
}

static void p2pkp_pace_sent(struct p2pkp_peer *p, u64 bytes, u64 now)
{
	u64 floor = now - min_t(u64, now, P2PKP_PACE_QUANTUM_NS);

	if (!p->pace_rate)
		return;
	p->pace_ns = max(p->pace_ns, floor) +
		     mul_u64_u64_div_u64(bytes, NSEC_PER_SEC, p->pace_rate);
}

static u32 p2pkp_pace_run(const struct p2pkp_peer *p)
{
	if (!p->pace_rate)
		return U32_MAX;
	return max_t(u64, div_u64(mul_u64_u64_div_u64(p->pace_rate,
						      P2PKP_PACE_QUANTUM_NS,
						      NSEC_PER_SEC), p->chunk),
		     2);
}

static void p2pkp_tx_ack(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			 struct p2pkp_peer *p, const struct p2pkp_hdr *h)
{
	const struct p2pkp_ack *a = (const void *)(h + 1);
	u64 cum = be64_to_cpu(a->cum), known, hi;
	u32 w = be32_to_cpu(a->window);
	u32 i;

	if (be16_to_cpu(a->epoch) != p->epoch || p->resync) {
		p2pkp_drop(ps, P2PKP_ST_DROP_XFER);	/* not this epoch */
		return;
	}
	/*
	 * A receiver in a group also stores the group's chunks: one that
	 * was late (served by unicast up to what the group sent) may have
	 * more in order than was sent to it alone.
	 */
	hi = p->next;
	if (p->gsrc && !p->epoch && !p->base && !p->resync)
		hi = max(hi, tx->gnext);
	if (be16_to_cpu(a->nbits) != P2PKP_WIN || !w || w > P2PKP_WIN ||
	    cum > hi || cum > p->count) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	if (cum > p->next) {	/* those came through the group */
		bitmap_zero(p->sack, P2PKP_WIN);
		p->nsacked = 0;
		p->cum = cum;
		p->next = cum;
	}
	p->confirmed = true;
	p2pkp_rtt_sample(p, h);
	if (cum < p->cum)
		return;		/* reordered, stale */
	p->win = w;
	known = p->cum + p->nsacked;
	/* newly acknowledged chunks: the latest time one of them was sent */
	for (i = 0; p->cum + i < p->next && i < P2PKP_WIN; i++) {
		u64 c = p->cum + i;

		if (test_bit(i, p->sack) || !p2pkp_ack_sent(p, h, c))
			continue;
		if (c < cum || (c - cum < P2PKP_WIN &&
				(a->bitmap[(c - cum) / 8] & (1U << ((c - cum) % 8)))))
			p->rack_ns = max(p->rack_ns, p->sent_ns[c % P2PKP_WIN]);
	}
	p2pkp_cc_undo(ps, p, h, cum);
	/*
	 * A receiver keeps what it selectively acknowledged: bits of an
	 * older ACK (reordered, with fewer bits) stay set, so that they are
	 * neither counted twice as newly acknowledged nor taken for losses.
	 */
	if (cum - p->cum < P2PKP_WIN)
		bitmap_shift_right(p->sack, p->sack, cum - p->cum, P2PKP_WIN);
	else
		bitmap_zero(p->sack, P2PKP_WIN);
	p->cum = cum;
	for (i = 0; i < P2PKP_WIN && cum + i < p->next; i++)
		if (a->bitmap[i / 8] & (1U << (i % 8)))
			__set_bit(i, p->sack);
	p->nsacked = bitmap_weight(p->sack, P2PKP_WIN);
	if (cum + p->nsacked > known)
		p2pkp_cc_ack(p, cum + p->nsacked - known, ktime_get_ns());
	if (p->cum == p->count && p->state == PS_DATA) {
		WRITE_ONCE(p->state, PS_END);
		p->last_ctl = 0;
	}
}

/*
 * The base of an accepting START_ACK of a START with the digest (resume,
 * section 1.7): the verified prefix of the peer's partial file, a multiple
 * of its chunk within the file, or the whole file.
 */
static bool p2pkp_tx_base_ok(const struct p2pkp_tx *tx,
			     const struct p2pkp_peer *p, u64 base)
{
	u32 rem;

	if (base > tx->size)
		return false;
	div_u64_rem(base, p->chunk, &rem);
	return !rem || base == tx->size;
}

/*
 * The accepting START_ACK of a new epoch (section 3.1): its chunks start
 * at @base, the receiver's verified prefix, which lies between what was
 * acknowledged and what was sent in the epoch before.
 */
static bool p2pkp_tx_resynced(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			      struct p2pkp_peer *p, u64 base, u32 w)
{
	u64 hi = p->rs_hi;

	/* a receiver in the group also has what the group sent since */
	if (p->gsrc && p->epoch == 1 && !p->base)
		hi = max(hi, min(tx->gnext * tx->gchunk, tx->size));
	/* below what it acked: it started over (abandoned, file emptied) */
	if (base > hi) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return false;
	}
	p->resync = false;
	p->confirmed = true;
	p->base = base;
	p->count = DIV_ROUND_UP_ULL(tx->size - base, p->chunk);
	p->cum = 0;
	p->next = 0;
	p->win = w;
	bitmap_zero(p->sack, P2PKP_WIN);
	p->nsacked = 0;
	p->rec_next = 0;		/* chunk numbers start over */
	p->undo_cum = U64_MAX;
	if (!p->count) {
		WRITE_ONCE(p->state, PS_END);
		p->last_ctl = 0;
	}
	return true;
}

/*
 * A send of @p failed with EMSGSIZE, or an ICMP error said so: if the
 * path MTU dropped below @p's datagrams, @p goes on in a new epoch with a
 * smaller chunk (section 3.1).  @sent: chunks before it have been sent.
 * Returns true if the send counts as a loss (new epoch, fragments, no
 * route known yet) or the peer failed; false: the path is as wide as ever.
 */
static bool p2pkp_tx_mtu(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			 struct p2pkp_peer *p, u64 sent)
{
	u32 chunk, old = p->chunk;
	bool known;
	int err;

	if (p->state != PS_DATA)
		return false;
	chunk = p2pkp_path_chunk(p->ks.sock, ps->mac, READ_ONCE(ps->chunk),
				 &known);
	if (!known)
		return true;	/* the route changed: try again */
	if (chunk >= old || p->frag)
		return false;
	if (!p->resync) {
		/* what the receiver verified is at most what was sent */
		p->rs_lo = min(p2pkp_peer_off(p, p->cum), tx->size);
		p->rs_hi = min(p2pkp_peer_off(p, max(p->next, sent)),
			       tx->size);
	}
	err = p2pkp_peer_chunk(p, chunk);
	if (err) {
		p2pkp_peer_fail(ps, p, err);
		return true;
	}
	if (p->chunk == old)		/* the smallest chunk, in fragments */
		return true;
	if (p->epoch == U16_MAX) {	/* cannot be: chunks only shrink */
		p2pkp_peer_fail(ps, p, -EMSGSIZE);
		return true;
	}
	p->resync = true;
	p->epoch++;
	p->last_ctl = 0;		/* its START goes at once */
	p2pkp_stat(ps, P2PKP_ST_EPOCHS, 1);
	return true;
}

/* A peer said BUSY to our confirmed START: back to START, later. */
static void p2pkp_tx_busy(struct p2pkp_tx *tx, struct p2pkp_peer *p,
			  u64 now)
{
	/* a resumable START waits in PS_START with the cookie: a new one */
	if (p->state == PS_START && p->cookie_known && !p->confirmed) {
		p->cookie_known = false;
		p->last_ctl = now;
		return;
	}
	if (p->state != PS_DATA && p->state != PS_END)
		return;
	if (p->confirmed)
		return;		/* stale: it accepted since */
	WRITE_ONCE(p->state, PS_START);
	p->cookie_known = false;
	p->resync = false;
	p->base = 0;
	p->count = DIV_ROUND_UP_ULL(tx->size, p->chunk);
	p->cum = 0;
	p->next = 0;
	bitmap_zero(p->sack, P2PKP_WIN);
	p->nsacked = 0;
	p2pkp_cc_reset(p, p->cc);
	p->last_ctl = now;	/* the next START after an RTO */
}

static void p2pkp_tx_input(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			   struct p2pkp_peer *p)
{
	const struct p2pkp_hdr *h = (const void *)tx->rbuf;
	int budget = P2PKP_RX_BUDGET;

	while (budget-- && p2pkp_peer_active(p)) {
		struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
		struct kvec vec = { tx->rbuf, P2PKP_REPLY_MAX };
		const void *body = h + 1;
		const struct p2pkp_status *stb = body;
		int n, type, st;
		u64 cookie, now;
		u32 tail;

		n = kernel_recvmsg(p->ks.sock, &msg, &vec, 1, P2PKP_REPLY_MAX,
				   MSG_DONTWAIT);
		if (n == -EAGAIN || n == -EINTR || n == -ERESTARTSYS)
			return;
		if (n < 0) {
			/* ICMP: a hint, not a verdict (section 3.1) */
			p->soft_err = n;
			p2pkp_stat(ps, P2PKP_ST_ICMP_ERRORS, 1);
			if (n == -EMSGSIZE)	/* the path MTU dropped */
				p2pkp_tx_mtu(ps, tx, p, p->next);
			continue;
		}
		p2pkp_stat(ps, P2PKP_ST_DGRAMS_RECEIVED, 1);
		if (msg.msg_flags & MSG_TRUNC) {
			p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
			continue;
		}
		type = p2pkp_parse(ps, tx->rbuf, n, false, &tail);
		if (!type)
			continue;
		if (be64_to_cpu(h->id) != tx->id) {
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
			continue;
		}
		cookie = be64_to_cpu(h->cookie);
		if (p->cookie_known && cookie != p->cookie) {
			p2pkp_drop(ps, P2PKP_ST_DROP_COOKIE);
			continue;
		}
		now = ktime_get_ns();
		/* echoed in DATA: the receiver's RTT, for its ACK pacing */
		p->peer_ts = be32_to_cpu(h->ts);
		p->peer_ts_ns = now;
		switch (type) {
		case P2PKP_T_START_ACK: {
			const struct p2pkp_start_ack *sa = body;
			u32 w = be32_to_cpu(sa->window);
			u64 base = be64_to_cpu(sa->base);
			bool acc = be16_to_cpu(h->flags) & P2PKP_F_ACCEPTED;

			/*
			 * a base only in an accepting START_ACK of a new
			 * epoch, or of a START with the digest (resume, 2.3)
			 */
			if (!w || w > P2PKP_WIN || !cookie ||
			    (base && (!acc || (!p->epoch && !tx->resume)))) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			if (be16_to_cpu(sa->epoch) != p->epoch) {
				p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
				continue;
			}
			/* checked before it counts as a sign of life */
			if (acc && tx->resume && p->state == PS_START &&
			    !p2pkp_tx_base_ok(tx, p, base)) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			/* a new epoch lives only if its base is sound */
			if (acc && p->resync && p->state == PS_DATA) {
				if (!p2pkp_tx_resynced(ps, tx, p, base, w))
					continue;
				p2pkp_rtt_sample(p, h);
			}
			p->last_rx = now;
			p->soft_err = 0;
			if (acc)
				p->confirmed = true;
			if (p->state != PS_START)
				continue;
			p2pkp_rtt_sample(p, h);
			p->cookie = cookie;
			p->cookie_known = true;
			p->win = w;
			p->last_ctl = 0;	/* confirm at once */
			/*
			 * With the digest, no DATA before the peer accepted
			 * and said from where: the rest of its partial file
			 */
			if (tx->resume && !acc)
				break;
			if (tx->resume) {	/* its epoch 0 starts at @base */
				p->base = base;
				p->count = DIV_ROUND_UP_ULL(tx->size - base,
							    p->chunk);
			}
			WRITE_ONCE(p->state, p->count ? PS_DATA : PS_END);
			break;
		}
		case P2PKP_T_BUSY:
			p->last_rx = now;	/* alive, keep trying */
			p->soft_err = 0;
			p2pkp_tx_busy(tx, p, now);
			break;
		case P2PKP_T_ACK:
			p->last_rx = now;
			p->soft_err = 0;
			if (p->state == PS_DATA || p->state == PS_END)
				p2pkp_tx_ack(ps, tx, p, h);
			break;
		case P2PKP_T_DONE:
			if (p2pkp_done_status((s32)be32_to_cpu(stb->status),
					      &st)) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			if (!st && p->state != PS_END) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				continue;
			}
			p->last_rx = now;
			p->soft_err = 0;
			p2pkp_tx_ctl(ps, tx, p, P2PKP_T_DONE_ACK, NULL, 0);
			if (st) {
				p2pkp_peer_fail(ps, p, st);
			} else {
				p->cum = p->count;
				WRITE_ONCE(p->state, PS_DONE);
			}
			break;
		case P2PKP_T_ABORT:
			p2pkp_peer_fail(ps, p, -ECONNRESET);
			break;
		}
	}
}

/* Fill the DATA header of chunk @c to @p; the chunk counts as sent now. */
static void p2pkp_data_hdr(const struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			   struct p2pkp_peer *p, u8 *pkt, u64 c, u16 flags,
			   u64 now)
{
	struct p2pkp_data *d = (void *)(pkt + P2PKP_HLEN);
	u32 echo = 0;

	if (p->peer_ts_ns) {
		/* the peer's ts plus how long we held it: it sees the RTT */
		echo = p->peer_ts + (u32)div_u64(now - p->peer_ts_ns,
						 NSEC_PER_USEC);
		flags |= P2PKP_F_ECHO;
	}
	p2pkp_hdr_fill(ps, pkt, P2PKP_T_DATA, flags, tx->id, p->cookie, echo);
	d->epoch = cpu_to_be16(p->epoch);
	put_unaligned_be48(c, d->index);
	p->sent_ns[c % P2PKP_WIN] = now;
	__assign_bit(c % P2PKP_WIN, p->rtx, flags & P2PKP_F_RETRANS);
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

/*
 * Send chunk @c to @p.  -EAGAIN: the socket buffer is full, nothing went
 * (its write_space callback runs the engine again).
 */
static int p2pkp_tx_data_one(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     struct p2pkp_peer *p, u64 c, const u8 *data,
			     u16 flags, bool retrans)
{
	u8 pkt[P2PKP_DATA_HLEN];
	u32 plen = p2pkp_peer_len(tx, p, c);
	u64 was = p->sent_ns[c % P2PKP_WIN];
	bool was_rtx = test_bit(c % P2PKP_WIN, p->rtx);
	int err;

	if (retrans)
		flags |= P2PKP_F_RETRANS;
	p2pkp_data_hdr(ps, tx, p, pkt, c, flags, ktime_get_ns());
	err = p2pkp_xmit(ps, p->ks.sock, NULL, 0, pkt, sizeof(pkt), data,
			 plen, MSG_DONTWAIT);
	if (err == -EAGAIN) {
		p->sent_ns[c % P2PKP_WIN] = was;
		__assign_bit(c % P2PKP_WIN, p->rtx, was_rtx);
		return err;
	}
	if (p2pkp_soft_err(err))
		return 0;	/* like a loss: retransmitted later */
	if (err == -EMSGSIZE && p2pkp_tx_mtu(ps, tx, p, max(p->next, c)))
		return 0;	/* like a loss: sent again, smaller */
	if (err) {
		p2pkp_peer_fail(ps, p, err);
		return 0;
	}
	p2pkp_data_sent(ps, p, 1, plen, retrans);
	return 0;
}

/*
 * ACK at once for the file's last chunk, the window's last and its middle
 * (the smaller of the receiver's and the congestion window).
 */
static u16 p2pkp_new_flags(const struct p2pkp_peer *p, u64 c)
{
	u32 w = min(p->win, p->cwnd);

	if (c + 1 == p->count || c + 1 == p->cum + w ||
	    c + 1 == p->cum + w / 2)
		return P2PKP_F_ACKREQ;
	return 0;
}

/* Payload bytes of @p's chunks @c .. @c + @n - 1. */
static u64 p2pkp_run_len(const struct p2pkp_tx *tx,
			 const struct p2pkp_peer *p, u64 c, u32 n)
{
	return min_t(u64, (u64)n * p->chunk, tx->size - p2pkp_peer_off(p, c));
}

/* Datagrams in one UDP_SEGMENT send to @p: at most 32, within 64 KiB. */
static u32 p2pkp_gso_max(const struct p2pkp_sock *ps,
			 const struct p2pkp_peer *p)
{
	u32 seg = P2PKP_DATA_HLEN + p->chunk + (ps->mac ? P2PKP_MAC_LEN : 0);

	return clamp_t(u32, 63 * 1024 / seg, 1, P2PKP_GSO_CHUNKS);
}

/* What a batched send's result means for the rest of its run. */
enum { P2PKP_RUN_SENT, P2PKP_RUN_AGAIN, P2PKP_RUN_LOST, P2PKP_RUN_SLOW };

/*
 * A path MTU that dropped below one datagram (EINVAL, EMSGSIZE) starts a
 * new epoch and the run counts as lost (sent again, smaller); a route that
 * cannot batch (no checksum offload: EIO, or those errors without a lower
 * MTU) makes the rest go one by one (SLOW); a full socket buffer sent
 * nothing (AGAIN); other soft errors are a loss, hard ones fail the peer.
 */
static int p2pkp_run_result(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			    struct p2pkp_peer *p, u64 c, int err)
{
	if (err >= 0)
		return P2PKP_RUN_SENT;
	if (err == -EAGAIN)
		return P2PKP_RUN_AGAIN;
	if (p2pkp_soft_err(err))
		return P2PKP_RUN_LOST;
	if (err != -EIO && err != -EINVAL && err != -EMSGSIZE) {
		p2pkp_peer_fail(ps, p, err);
		return P2PKP_RUN_LOST;
	}
	if (err != -EIO && p2pkp_tx_mtu(ps, tx, p, c))
		return P2PKP_RUN_LOST;
	return P2PKP_RUN_SLOW;
}

static void p2pkp_run_sent(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			   struct p2pkp_peer *p, u64 c, u32 n, bool zc)
{
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_SENT, n);
	if (n > 1)
		p2pkp_stat(ps, P2PKP_ST_GSO_SENDS, 1);
	if (zc)
		p2pkp_stat(ps, P2PKP_ST_ZC_SENDS, 1);
	p2pkp_data_sent(ps, p, n, p2pkp_run_len(tx, p, c, n), false);
}

/*
 * Add [@addr, @addr + @len) of a vmalloc area to the pieces of a zero-copy
 * run, page by page, joined to the last piece where they continue it (as
 * the skb will join them): false if that takes more than MAX_SKB_FRAGS.
 */
static bool p2pkp_bv_add(struct bio_vec *bv, u32 *nbv, const u8 *addr,
			 u32 len)
{
	while (len) {
		struct page *pg = vmalloc_to_page(addr);
		u32 off = offset_in_page(addr);
		u32 l = min_t(u32, len, PAGE_SIZE - off);
		struct bio_vec *last = *nbv ? &bv[*nbv - 1] : NULL;

		if (last && last->bv_page == pg &&
		    last->bv_offset + last->bv_len == off) {
			last->bv_len += l;
		} else {
			if (*nbv == MAX_SKB_FRAGS)
				return false;
			bvec_set_page(&bv[(*nbv)++], pg, l, off);
		}
		addr += l;
		len -= l;
	}
	return true;
}

/*
 * A zero-copy run of up to @n new chunks from @c to @p, into @msg: each
 * header and tag written once into the area's header room, each payload
 * referenced where it lies in the block, as many datagrams as the skb's
 * fragments take.  Returns how many (0: not one fits; send by copy).
 */
static u32 p2pkp_zc_run(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			struct p2pkp_peer *p, u64 c, u32 n, u64 now,
			struct msghdr *msg)
{
	struct p2pkp_zc *zc = tx->zc;
	u32 mlen = ps->mac ? P2PKP_MAC_LEN : 0;
	u32 per = P2PKP_DATA_HLEN + mlen;
	struct bio_vec *bv = tx->zbv;
	struct bio_vec keep = {};
	size_t total = 0;
	u32 i, nbv = 0;

	for (i = 0; i < n && zc->used + per <= zc->size; i++) {
		u8 *hdr = zc->area + zc->used;
		const u8 *pl = tx->blk +
			       (p2pkp_peer_off(p, c + i) - tx->blk_pos);
		u32 plen = p2pkp_peer_len(tx, p, c + i);
		u32 nb = nbv;

		if (nbv)
			keep = bv[nbv - 1];	/* a join may change it */
		if (!p2pkp_bv_add(bv, &nb, hdr, P2PKP_DATA_HLEN) ||
		    !p2pkp_bv_add(bv, &nb, pl, plen) ||
		    (mlen && !p2pkp_bv_add(bv, &nb, hdr + P2PKP_DATA_HLEN,
					   mlen))) {
			if (nbv)
				bv[nbv - 1] = keep;
			break;		/* the next run takes it */
		}
		p2pkp_data_hdr(ps, tx, p, hdr, c + i,
			       p2pkp_new_flags(p, c + i), now);
		if (mlen && p2pkp_mac(ps->mac, hdr, P2PKP_DATA_HLEN, pl, plen,
				      hdr + P2PKP_DATA_HLEN)) {
			if (nbv)
				bv[nbv - 1] = keep;
			break;
		}
		zc->used += per;
		nbv = nb;
		total += per + plen;
	}
	if (!i)
		return 0;
	zc->sent = true;		/* skbs may reference the area now */
	iov_iter_bvec(&msg->msg_iter, ITER_SOURCE, bv, nbv, total);
	msg->msg_ubuf = &zc->ubuf;
	if (i == 1)
		msg->msg_controllen = 0;	/* one datagram: no GSO */
	return i;
}

/*
 * Zero-copy runs for @p?  Only where they carry at least half the datagrams
 * of a batch that copies (p2pkp_gso_max): each datagram takes its pages
 * and a header as skb fragments, and each fragment is charged a whole page
 * against the socket's send buffer, so small chunks (1432 bytes at MTU
 * 1500: 6 to 8 per run instead of 32) go faster by copy; chunks of some
 * pages (MTU 9000 and up) do not.  A 65,000-byte chunk takes more
 * fragments than an skb has: copy.
 */
static bool p2pkp_zc_pays(const struct p2pkp_sock *ps,
			  const struct p2pkp_tx *tx, const struct p2pkp_peer *p)
{
	/* a datagram's fragments: its pages (+1 where it straddles), header */
	u32 per_run = MAX_SKB_FRAGS * PAGE_SIZE / (p->chunk + 2 * PAGE_SIZE);

	if (!tx->zc || tx->no_zc)
		return false;
	return 2 * per_run >= p2pkp_gso_max(ps, p);
}

/*
 * Add DATA datagram @i of a batched send (its header in tx->ghdr[i]) to
 * tx->gvec at *@v: header, payload @pl, and the tag when the socket has a
 * key.  Non-zero: the tag could not be made.
 */
static int p2pkp_gvec_add(struct p2pkp_sock *ps, struct p2pkp_tx *tx, u32 *v,
			  u32 i, const u8 *pl, u32 plen)
{
	tx->gvec[*v].iov_base = tx->ghdr[i];
	tx->gvec[(*v)++].iov_len = P2PKP_DATA_HLEN;
	tx->gvec[*v].iov_base = (void *)pl;
	tx->gvec[(*v)++].iov_len = plen;
	if (!ps->mac)
		return 0;
	if (p2pkp_mac(ps->mac, tx->ghdr[i], P2PKP_DATA_HLEN, pl, plen,
		      tx->gtag[i]))
		return -EIO;
	tx->gvec[*v].iov_base = tx->gtag[i];
	tx->gvec[(*v)++].iov_len = P2PKP_MAC_LEN;
	return 0;
}

/*
 * Send new chunks @c .. @c + @n - 1, all in tx->blk, to @p in as few
 * sends as it takes: zero-copy runs (p2pkp_zc_run) while the block is in a
 * zero-copy area, else one UDP_SEGMENT send with copies: either way routed
 * and queued once and the NIC kicked once per send, then cut into
 * datagrams (every one with its own header and tag) by the stack or the
 * NIC.  What is left after a send the route refused goes one by one
 * (p2pkp_run_result).  Returns how many chunks went (fewer than @n: the
 * socket buffer is full).
 */
static u32 p2pkp_tx_data_run(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     struct p2pkp_peer *p, u64 c, u32 n)
{
	union {
		struct cmsghdr cm;
		u8 buf[CMSG_SPACE(sizeof(u16))];
	} ctl = {};
	struct msghdr msg = {};
	const u8 *data = tx->blk + (p2pkp_peer_off(p, c) - tx->blk_pos);
	u32 mlen = ps->mac ? P2PKP_MAC_LEN : 0;
	u64 now = ktime_get_ns();
	u32 i, k, v = 0, done = 0;
	int r;

	ctl.cm.cmsg_level = SOL_UDP;
	ctl.cm.cmsg_type = UDP_SEGMENT;
	ctl.cm.cmsg_len = CMSG_LEN(sizeof(u16));
	*(u16 *)CMSG_DATA(&ctl.cm) = P2PKP_DATA_HLEN + p->chunk + mlen;

	while (done < n && p2pkp_zc_pays(ps, tx, p)) {
		u32 used = tx->zc->used;

		msg = (struct msghdr){
			.msg_control = &ctl,
			.msg_controllen = sizeof(ctl),
			.msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT | MSG_ZEROCOPY,
		};
		k = p2pkp_zc_run(ps, tx, p, c + done,
				 tx->no_gso ? 1 : n - done, now, &msg);
		if (!k)
			break;
		r = p2pkp_run_result(ps, tx, p, c + done,
				     sock_sendmsg(p->ks.sock, &msg));
		if (r == P2PKP_RUN_AGAIN) {
			/* no skb was made (the first one's allocation) */
			tx->zc->used = used;
			return done;
		}
		if (r == P2PKP_RUN_LOST)
			return n;	/* like a loss */
		if (r == P2PKP_RUN_SENT) {
			p2pkp_run_sent(ps, tx, p, c + done, k, true);
			done += k;
		} else {
			tx->no_zc = true;	/* the route takes no batch */
			tx->no_gso = true;
		}
	}
	if (n - done > 1 && !tx->no_gso) {
		for (i = done; i < n; i++) {
			p2pkp_data_hdr(ps, tx, p, tx->ghdr[i - done], c + i,
				       p2pkp_new_flags(p, c + i), now);
			if (p2pkp_gvec_add(ps, tx, &v, i - done,
					   data + i * p->chunk,
					   p2pkp_peer_len(tx, p, c + i)))
				return n;	/* like a loss */
		}
		msg = (struct msghdr){
			.msg_control = &ctl,
			.msg_controllen = sizeof(ctl),
			.msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT,
		};
		r = p2pkp_run_result(ps, tx, p, c + done,
				     kernel_sendmsg(p->ks.sock, &msg, tx->gvec,
						    v, (n - done) *
						    (P2PKP_DATA_HLEN + mlen) +
						    p2pkp_run_len(tx, p,
								  c + done,
								  n - done)));
		if (r == P2PKP_RUN_SENT) {
			p2pkp_run_sent(ps, tx, p, c + done, n - done, false);
			return n;
		}
		if (r == P2PKP_RUN_AGAIN)
			return done;
		if (r == P2PKP_RUN_LOST)
			return n;
		tx->no_gso = true;
	}
	for (i = done; i < n && p->state == PS_DATA && !p->resync; i++)
		if (p2pkp_tx_data_one(ps, tx, p, c + i, data + i * p->chunk,
				      p2pkp_new_flags(p, c + i), false))
			return i;
	return n;
}

/* ---- multicast, sender (section 1.8) ---------------------------------- */

/* The local address of connected socket @sk (no port). */
static void p2pkp_src_of(struct sock *sk, struct sockaddr_storage *a,
			 int *len)
{
	memset(a, 0, sizeof(*a));
	a->ss_family = sk->sk_family;
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (void *)a;

		s6->sin6_addr = inet6_sk(sk)->saddr;
		if (ipv6_addr_type(&s6->sin6_addr) & IPV6_ADDR_LINKLOCAL)
			s6->sin6_scope_id = sk->sk_bound_dev_if;
		*len = sizeof(*s6);
		return;
	}
#endif
	((struct sockaddr_in *)a)->sin_addr.s_addr = inet_sk(sk)->inet_saddr;
	*len = sizeof(struct sockaddr_in);
}

static bool p2pkp_same_src(struct sock *a, struct sock *b)
{
	struct sockaddr_storage x, y;
	int n;

	p2pkp_src_of(a, &x, &n);
	p2pkp_src_of(b, &y, &n);
	return !memcmp(&x, &y, n);
}

static int p2pkp_sockopt_int(struct socket *sock, int level, int name, int v)
{
	return sock->ops->setsockopt(sock, level, name, KERNEL_SOCKPTR(&v),
				     sizeof(v));
}

/*
 * Hop limit, no loopback, the outgoing interface (@ifindex, 0: the
 * route's) of the group's socket.
 */
static int p2pkp_mcast_opts(struct socket *sock, int ttl, int ifindex)
{
	struct ip_mreqn mr = { .imr_ifindex = ifindex };

#if IS_ENABLED(CONFIG_IPV6)
	if (sock->sk->sk_family == AF_INET6)
		return p2pkp_sockopt_int(sock, SOL_IPV6, IPV6_MULTICAST_HOPS,
					 ttl) ?:
		       p2pkp_sockopt_int(sock, SOL_IPV6, IPV6_MULTICAST_LOOP,
					 0) ?:
		       p2pkp_sockopt_int(sock, SOL_IPV6, IPV6_MULTICAST_IF,
					 ifindex);
#endif
	return p2pkp_sockopt_int(sock, SOL_IP, IP_MULTICAST_TTL, ttl) ?:
	       p2pkp_sockopt_int(sock, SOL_IP, IP_MULTICAST_LOOP, 0) ?:
	       (ifindex ? sock->ops->setsockopt(sock, SOL_IP, IP_MULTICAST_IF,
						KERNEL_SOCKPTR(&mr),
						sizeof(mr)) : 0);
}

/*
 * A write() with P2PKP_GROUP: a socket connected to the group, made as
 * the caller like the peers' (its datagrams pass the same hooks and owner
 * rules), sending from the first peer's source address; every peer gets
 * the same chunk (the smallest of the group's and the peers' paths) so
 * that one datagram serves them all.  Peers reached from another source
 * address are served by unicast (they would drop the group's datagrams).
 */
/* Is @sk's route to its peer through another host (not loopback)? */
static bool p2pkp_remote(struct sock *sk, int *ifindex)
{
	struct dst_entry *dst = sk_dst_get(sk);
	bool remote = dst && dst->dev && !(dst->dev->flags & IFF_LOOPBACK);

	if (remote && ifindex)
		*ifindex = dst->dev->ifindex;
	dst_release(dst);
	return remote;
}

static int p2pkp_tx_group_open(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	struct sockaddr_storage g = ps->group, src;
	int fam = g.ss_family, ifindex = READ_ONCE(ps->mcast_if), route = 0;
	struct sock *sk0 = NULL;
	struct socket *sock;
	int i, err, slen;
	bool known;
	u32 chunk;

	for (i = 0; i < ps->npeers; i++) {
		if (ps->peers[i]->addr.ss_family != fam)
			return -EAFNOSUPPORT;
		if (p2pkp_addr_port(&ps->peers[i]->addr) !=
		    p2pkp_addr_port(&g))
			return -EINVAL;
	}
	/* the first peer on another host: its interface and source */
	for (i = 0; i < ps->npeers && !sk0; i++)
		if (p2pkp_remote(ps->peers[i]->ks.sock->sk, &route))
			sk0 = ps->peers[i]->ks.sock->sk;
	if (!sk0)
		return 0;	/* all on this host: unicast */
	if (!ifindex)
		ifindex = route;
	err = p2pkp_ksock_open(ps, &tx->gks, fam, P2PKP_REPLY_MAX,
			       P2PKP_SNDBUF);
	if (err < 0)
		return err;
	sock = tx->gks.sock;
	p2pkp_src_of(sk0, &src, &slen);
	err = p2pkp_mcast_opts(sock, READ_ONCE(ps->mcast_ttl), ifindex) ?:
	      kernel_bind(sock, (struct sockaddr *)&src, slen) ?:
	      p2pkp_set_frag(sock, false) ?:
	      kernel_connect(sock, (struct sockaddr *)&g, ps->group_len, 0);
	if (err)
		goto close;
	chunk = p2pkp_path_chunk(sock, ps->mac, READ_ONCE(ps->chunk), &known);
	err = -EMSGSIZE;	/* no group datagram fits the path */
	if (chunk < P2PKP_CHUNK_MIN)
		goto close;
	/*
	 * The group serves the peers it reaches: sent from their source
	 * address, not on this host (no loopback of group datagrams), on a
	 * path that takes whole datagrams; the others go by unicast.
	 */
	for (i = 0; i < ps->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];
		struct sock *sk = p->ks.sock->sk;

		p->gsrc = !p->frag && p2pkp_remote(sk, NULL) &&
			  p2pkp_same_src(sk, sock->sk);
		if (p->gsrc)
			chunk = min(chunk, p->chunk);
	}
	for (i = 0; i < ps->npeers; i++) {
		if (!ps->peers[i]->gsrc)
			continue;
		err = p2pkp_peer_chunk(ps->peers[i], chunk);
		if (err)
			goto close;
	}
	tx->gchunk = chunk;
	tx->gcount = DIV_ROUND_UP_ULL(tx->size, chunk);
	tx->acklog = min_t(u32, order_base_2(ps->npeers), P2PKP_ACKLOG_MAX);
	tx->gext.family = fam == AF_INET ? 4 : 6;
	tx->gext.reserved = tx->acklog;
	tx->gext.port = p2pkp_addr_port(&g);
	if (fam == AF_INET)
		memcpy(tx->gext.addr, &((struct sockaddr_in *)&g)->sin_addr, 4);
	else
		memcpy(tx->gext.addr, &((struct sockaddr_in6 *)&g)->sin6_addr,
		       16);
	tx->gon = true;
	return 0;
close:
	p2pkp_ksock_close(&tx->gks);
	return err;
}

/* The group is given up: its members go on by unicast from where it was. */
static void p2pkp_tx_group_off(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	int i;

	for (i = 0; i < tx->npeers; i++)
		WRITE_ONCE(ps->peers[i]->member, false);
	tx->gon = false;
}

/*
 * Send the group chunks @c .. @c + @n - 1 (@data: the first one's bytes)
 * once, in one UDP_SEGMENT send where the route takes it, with cookie 0
 * and GROUP (and @flags).  Returns how many went (fewer: the socket
 * buffer is full, its write_space brings the engine back); a hard error
 * fails every peer the group serves (@*errp).
 */
static u32 p2pkp_tx_group_send(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			       u64 c, u32 n, const u8 *data, u16 flags,
			       int *errp)
{
	u64 edge = tx->gack_edge, mid = tx->gack_mid;
	union {
		struct cmsghdr cm;
		u8 buf[CMSG_SPACE(sizeof(u16))];
	} ctl = {};
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT };
	u32 mlen = ps->mac ? P2PKP_MAC_LEN : 0;
	u32 i, v = 0, done = 0;
	u64 bytes = 0;
	int err;

	if (n > 1 && tx->gno_gso) {
		for (done = 0; done < n; done++)
			if (!p2pkp_tx_group_send(ps, tx, c + done, 1,
						 data + (u64)done * tx->gchunk,
						 flags, errp) || *errp)
				break;
		return done;
	}
	for (i = 0; i < n; i++) {
		u8 *hdr = tx->ghdr[i];
		struct p2pkp_data *d = (void *)(hdr + P2PKP_HLEN);
		const u8 *pl = data + (u64)i * tx->gchunk;
		u32 plen = p2pkp_chunk_len(tx->size, tx->gcount, tx->gchunk,
					   c + i);
		u16 f = flags | P2PKP_F_GROUP;

		/* the last, the window's last and its middle: ACK at once */
		if (c + i + 1 == tx->gcount || c + i + 1 == edge ||
		    c + i + 1 == mid)
			f |= P2PKP_F_ACKREQ;
		p2pkp_hdr_fill(ps, hdr, P2PKP_T_DATA, f, tx->id, 0, 0);
		d->epoch = 0;
		put_unaligned_be48(c + i, d->index);
		bytes += plen;
		if (p2pkp_gvec_add(ps, tx, &v, i, pl, plen))
			return n;	/* like a loss */
	}
	if (n > 1) {
		ctl.cm.cmsg_level = SOL_UDP;
		ctl.cm.cmsg_type = UDP_SEGMENT;
		ctl.cm.cmsg_len = CMSG_LEN(sizeof(u16));
		*(u16 *)CMSG_DATA(&ctl.cm) = P2PKP_DATA_HLEN + tx->gchunk +
					     mlen;
		msg.msg_control = &ctl;
		msg.msg_controllen = sizeof(ctl);
	}
	err = kernel_sendmsg(tx->gks.sock, &msg, tx->gvec, v,
			     n * (P2PKP_DATA_HLEN + mlen) + bytes);
	if (err >= 0) {
		p2pkp_stat(ps, P2PKP_ST_DGRAMS_SENT, n);
		p2pkp_stat(ps, P2PKP_ST_BYTES_SENT, bytes);
		if (n > 1)
			p2pkp_stat(ps, P2PKP_ST_GSO_SENDS, 1);
		return n;
	}
	if (err == -EAGAIN)
		return 0;
	if (p2pkp_soft_err(err))
		return n;		/* like a loss */
	if (n > 1 && (err == -EIO || err == -EINVAL || err == -EMSGSIZE)) {
		tx->gno_gso = true;	/* one by one */
		return p2pkp_tx_group_send(ps, tx, c, n, data, flags, errp);
	}
	if (err == -EMSGSIZE) {
		/*
		 * The group's path narrowed: each peer goes on by unicast,
		 * where a narrower path starts a new epoch (section 3.1)
		 */
		p2pkp_tx_group_off(ps, tx);
		return n;		/* like a loss */
	}
	*errp = err;
	return 0;
}

/* A hard error on the group's socket fails the peers it serves. */
static void p2pkp_tx_group_fail(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
				int err)
{
	int i;

	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		if (!p->gsrc || !p2pkp_peer_active(p))
			continue;
		p2pkp_tx_abort(ps, tx, p, err);
		WRITE_ONCE(p->member, false);
	}
	tx->gon = false;
}

/*
 * May @p get new chunks through the group?  Not once its chunking differs
 * from the group's: a new epoch (path MTU), or a resumed base.
 */
static bool p2pkp_g_eligible(const struct p2pkp_tx *tx,
			     const struct p2pkp_peer *p)
{
	return tx->gon && p->gsrc && !p->resync && !p->epoch && !p->base;
}

/*
 * Rate cap: may @len more DATA bytes go now?  If not, tx->pace_ns says
 * how long until they may.  Tokens accrue at tx->rate (at most
 * P2PKP_RATE_MAX) up to tx->burst; the time accounted at once is at most
 * a second, so no product below can overflow.
 */
static bool p2pkp_pace(struct p2pkp_sock *ps, struct p2pkp_tx *tx, u32 len)
{
	u64 now, dt, add;

	if (!tx->rate)
		return true;
	now = ktime_get_ns();
	dt = now - tx->tok_ns;
	if (dt >= NSEC_PER_SEC) {
		tx->tokens = tx->burst;
		tx->tok_ns = now;
	} else {
		add = mul_u64_u64_div_u64(dt, tx->rate, NSEC_PER_SEC);
		if (tx->tokens + add >= tx->burst) {
			tx->tokens = tx->burst;
			tx->tok_ns = now;
		} else if (add) {
			tx->tokens += add;
			tx->tok_ns += mul_u64_u64_div_u64(add, NSEC_PER_SEC,
							  tx->rate);
		}
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
	if (p->state != PS_DATA || p->blocked || p->resync)
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

/* File offset of the chunk @p should get again next, U64_MAX: none. */
static u64 p2pkp_cur_off(const struct p2pkp_tx *tx, int i,
			 const struct p2pkp_peer *p)
{
	return tx->cur[i] == U64_MAX ? U64_MAX : p2pkp_peer_off(p, tx->cur[i]);
}

/*
 * Members a chunk must be due at for its repair to go once to the group
 * (section 1.8): 2 by default; 1 sends every member's repair to the
 * group, P2PKP_MAX_PEERS + 1 none (every repair by unicast).
 */
static unsigned int group_repair_min = 2;

static int p2pkp_set_repair_min(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 1, P2PKP_MAX_PEERS + 1);
}

static const struct kernel_param_ops p2pkp_repair_min_ops = {
	.set = p2pkp_set_repair_min,
	.get = param_get_uint,
};

module_param_cb(group_repair_min, &p2pkp_repair_min_ops, &group_repair_min,
		0644);
MODULE_PARM_DESC(group_repair_min,
		 "group members a chunk is due at before its repair goes to the group (default 2, 1..65)");

/*
 * A chunk due at group_repair_min or more group members (two by default)
 * goes once to the group (a shared repair, section 1.8); members that
 * have it count it as a duplicate.  A chunk due at fewer goes to each of
 * them by unicast.  Returns an error of reading the file; tx->pace_ns:
 * the rate cap.
 */
static int p2pkp_tx_group_repair(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
				 u64 pos, u64 now, unsigned long *backoff)
{
	DECLARE_BITMAP(due, P2PKP_MAX_PEERS);
	u64 c = U64_MAX;
	const u8 *data;
	int i, err = 0;
	bool any_rto = false;
	u32 len, sent, n = 0;

	if (!tx->gon)
		return 0;
	bitmap_zero(due, P2PKP_MAX_PEERS);
	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		if (!p->member || tx->cur[i] == U64_MAX ||
		    p2pkp_peer_off(p, tx->cur[i]) != pos)
			continue;
		if (!p2pkp_pace_ok(tx, p, now)) {
			tx->cur[i] = U64_MAX;	/* later */
			continue;
		}
		__set_bit(i, due);
		c = tx->cur[i];
		any_rto |= !p2pkp_sack_due(p, c, now);
		n++;
	}
	if (n < READ_ONCE(group_repair_min))	/* 1 or more: 0 never goes */
		return 0;
	len = p2pkp_chunk_len(tx->size, tx->gcount, tx->gchunk, c);
	data = p2pkp_get_old(tx, pos, len, &err);
	if (!data)
		return err;
	if (!p2pkp_pace(ps, tx, len))
		return 0;
	tx->gack_edge = U64_MAX;
	tx->gack_mid = U64_MAX;
	sent = p2pkp_tx_group_send(ps, tx, c, 1, data,
				   P2PKP_F_RETRANS |
				   (any_rto ? P2PKP_F_ACKREQ : 0), &err);
	if (err) {
		p2pkp_tx_group_fail(ps, tx, err);
		return 0;
	}
	for_each_set_bit(i, due, P2PKP_MAX_PEERS) {
		struct p2pkp_peer *p = ps->peers[i];

		if (!sent) {		/* buffer full: write_space */
			tx->cur[i] = U64_MAX;
			continue;
		}
		if (!p2pkp_sack_due(p, c, now)) {
			/* one timeout event per pass */
			if (!__test_and_set_bit(i, backoff))
				p2pkp_cc_timeout(ps, p, c);
			p->rto_ns = now;
			if (tx->rto_left[i])
				tx->rto_left[i]--;
		} else {
			p2pkp_cc_loss(ps, p, c);
		}
		p->sent_ns[c % P2PKP_WIN] = now;
		__set_bit(c % P2PKP_WIN, p->rtx);
		p2pkp_pace_sent(p, len, now);
		tx->cur[i] = p2pkp_lost(p, c + 1, now, tx->rto_left[i]);
	}
	if (sent) {
		p2pkp_stat(ps, P2PKP_ST_GROUP_REPAIRS, 1);
		p2pkp_stat(ps, P2PKP_ST_DGRAMS_RETRANS, 1);
	}
	return 0;
}

/*
 * Retransmit in one pass in file order over all peers: a chunk several
 * peers miss is read once and sent to each of them.
 */
static int p2pkp_tx_retrans(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	DECLARE_BITMAP(backoff, P2PKP_MAX_PEERS);
	u64 c, pos, now = ktime_get_ns();
	const u8 *data;
	int i, err = 0;

	bitmap_zero(backoff, P2PKP_MAX_PEERS);
	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		/*
		 * After a timeout only the first P2PKP_RTO_BURST chunks go
		 * again, once per RTO (which doubles): a dead peer does not
		 * get its whole window every RTO; its ACKs, if it lives,
		 * bring the rest back through the SACK rule.  A group
		 * member gets P2PKP_RTO_BURST_MEMBER: its ACKs are thinned
		 * and late under load, so most of its timeouts are
		 * spurious, and the ACK asked for brings a real loss back
		 * one RTT later (section 1.8).
		 */
		tx->rto_left[i] = 0;
		if (now - p->rto_ns >= (u64)p->rto * NSEC_PER_USEC)
			tx->rto_left[i] = p->member ? P2PKP_RTO_BURST_MEMBER :
				P2PKP_RTO_BURST;
		tx->cur[i] = p2pkp_lost(p, 0, now, tx->rto_left[i]);
	}
	for (;;) {
		pos = U64_MAX;
		for (i = 0; i < tx->npeers; i++)
			pos = min(pos, p2pkp_cur_off(tx, i, ps->peers[i]));
		if (pos == U64_MAX)
			break;
		cond_resched();
		err = p2pkp_tx_group_repair(ps, tx, pos, now, backoff);
		if (err)
			goto out;
		if (tx->pace_ns)
			goto out;
		for (i = 0; i < tx->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];
			u32 len;
			bool rto;

			if (p2pkp_cur_off(tx, i, p) != pos)
				continue;
			if (p->state != PS_DATA) {	/* failed in this pass */
				tx->cur[i] = U64_MAX;
				continue;
			}
			if (!p2pkp_pace_ok(tx, p, now)) {
				tx->cur[i] = U64_MAX;	/* later */
				continue;
			}
			c = tx->cur[i];
			len = p2pkp_peer_len(tx, p, c);
			data = p2pkp_get_old(tx, pos, len, &err);
			if (!data)
				goto out;
			if (!p2pkp_pace(ps, tx, len))
				goto out;
			rto = !p2pkp_sack_due(p, c, now);
			if (rto) {
				/* one timeout event per pass */
				if (!__test_and_set_bit(i, backoff))
					p2pkp_cc_timeout(ps, p, c);
				p->rto_ns = now;
				tx->rto_left[i]--;
			} else {
				p2pkp_cc_loss(ps, p, c);
			}
			if (p2pkp_tx_data_one(ps, tx, p, c, data,
					      rto ? P2PKP_F_ACKREQ : 0, true)) {
				p->blocked = true;	/* buffer full */
				tx->cur[i] = U64_MAX;
				continue;
			}
			p2pkp_pace_sent(p, len, now);
			tx->cur[i] = p2pkp_lost(p, c + 1, now, tx->rto_left[i]);
		}
	}
out:
	for_each_set_bit(i, backoff, P2PKP_MAX_PEERS)
		ps->peers[i]->rto = min(ps->peers[i]->rto * 2,
					P2PKP_RTO_MAX_US);
	return err;
}

/*
 * New chunks may go to @p: within its receiver's window, its congestion
 * window (p->pipe in flight) and its pacing.
 */
static bool p2pkp_may_send(struct p2pkp_tx *tx, const struct p2pkp_peer *p,
			   u64 now)
{
	/*
	 * A group transfer's peer gets new chunks by unicast only once it
	 * accepted (its receiver joined the group then), and only those
	 * the group sent before it became a member (section 1.8).
	 */
	if (p2pkp_g_eligible(tx, p) &&
	    (!p->confirmed || p->member || p->next >= tx->gnext))
		return false;
	return p->state == PS_DATA && !p->blocked && !p->resync &&
	       p->next < p->count && p->next < p->cum + p->win &&
	       p->pipe < p->cwnd && p2pkp_pace_ok(tx, p, now);
}

/*
 * A member's window for the slow-receiver policy: its receiver's, or its
 * congestion window when smaller (slow ACKs hold the group back by that).
 * Not the window of a timeout (one chunk, while it is recovered): the
 * threshold it grows back to (ssthresh, once a loss set it).
 */
static u32 p2pkp_lag_win(const struct p2pkp_peer *p)
{
	u32 w = p->cwnd;

	if (w < p->ssthresh && p->ssthresh < P2PKP_WIN)
		w = p->ssthresh;
	return min(p->win, w);
}

/*
 * The slow-receiver policy (section 1.8): the member furthest behind is
 * dropped with ECONNABORTED when it has been behind all the others by half
 * its window or more (p2pkp_lag_win: it alone holds the group back) for
 * @lag ns (P2PKP_GROUP_LAG), once it answered in that time (a silent one is
 * left to the peer timeout, ETIMEDOUT).  Its ACKs are thinned, seconds
 * apart on a slow link: the lag is not restarted between them.
 */
static void p2pkp_tx_group_lag(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			       u64 now, u64 lag)
{
	struct p2pkp_peer *slow = NULL;
	u64 second = U64_MAX;
	int i;

	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		if (!p->member)
			continue;
		if (!slow || p->cum < slow->cum) {
			if (slow)
				second = min(second, slow->cum);
			slow = p;
		} else {
			second = min(second, p->cum);
		}
		if (p != slow)
			p->lag_ns = 0;
	}
	if (!slow)
		return;
	if (second == U64_MAX || !lag ||
	    second - slow->cum < max_t(u32, p2pkp_lag_win(slow) / 2, 1)) {
		slow->lag_ns = 0;
		return;
	}
	if (!slow->lag_ns)
		slow->lag_ns = now;
	/* and it answered meanwhile: a silent one waits for the peer timeout */
	if (now - slow->lag_ns < lag || slow->last_rx < slow->lag_ns)
		return;
	p2pkp_tx_abort(ps, tx, slow, -ECONNABORTED);
	WRITE_ONCE(slow->member, false);
	p2pkp_stat(ps, P2PKP_ST_PEERS_DROPPED, 1);
}

/* Who takes new chunks from the group now; false: wait for late peers. */
static bool p2pkp_tx_members(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     u64 now)
{
	bool late = false, any = false;
	int i;

	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];
		bool ok = p2pkp_g_eligible(tx, p);

		if (p->member && (p->state != PS_DATA || !ok))
			WRITE_ONCE(p->member, false);
		/* it has every chunk the group sent: it takes the rest */
		if (!p->member && ok && p->state == PS_DATA && p->confirmed &&
		    p->next == tx->gnext) {
			WRITE_ONCE(p->member, true);
			p->lag_ns = 0;
			if (!tx->gnext)
				tx->gjoin_ns = now;
		}
		if (ok && p2pkp_peer_active(p) && !p->confirmed)
			late = true;
		any |= p->member;
	}
	if (!any)
		return false;
	/* peers that did not accept yet are waited for a little, once */
	if (!tx->gwait_ns)
		tx->gwait_ns = now + P2PKP_GROUP_WAIT_NS;
	if (!tx->gnext && late && now < tx->gwait_ns) {
		tx->wait_ns = min(tx->wait_ns, tx->gwait_ns - now);
		return false;
	}
	/*
	 * A receiver joins when it accepts; its report reaches snooping
	 * bridges a little later (IGMPv3/MLDv2 send it from a timer), and
	 * until then the group's datagrams do not reach it: the first ones
	 * wait a little after the last first member accepted.
	 */
	if (!tx->gnext && now < tx->gjoin_ns + P2PKP_GROUP_JOIN_NS) {
		tx->wait_ns = min(tx->wait_ns,
				  tx->gjoin_ns + P2PKP_GROUP_JOIN_NS - now);
		return false;
	}
	return true;
}

/*
 * A peer that accepted after the group started (section 1.8) is served by
 * unicast up to what the group sent; its receiver stores the group's
 * chunks meanwhile, as far as its window reaches.  The group does not
 * outrun that window for @lag ns (P2PKP_GROUP_LAG, 0: ever) from the first
 * time it is seen catching up: it then joins without ever taking the file
 * by unicast.  After that time the group goes on, and the peer by unicast.
 */
static bool p2pkp_tx_catching_up(struct p2pkp_tx *tx, struct p2pkp_peer *p,
				 u64 now, u64 lag)
{
	if (p->member || !p2pkp_g_eligible(tx, p) || p->state != PS_DATA ||
	    !p->confirmed || p->next >= tx->gnext)
		return false;
	if (!p->lag_ns)
		p->lag_ns = now;
	if (!lag)
		return true;
	if (now - p->lag_ns >= lag)
		return false;
	if (p->cum + p->win <= tx->gnext)	/* it holds the group now */
		tx->wait_ns = min(tx->wait_ns, p->lag_ns + lag - now);
	return true;
}

/*
 * New chunks to the group (section 1.8): each goes once, when every
 * member has room for it in its receiver's and congestion window and its
 * pacing allows, and within the window of a peer catching up; every
 * member counts it as sent to it.
 */
static int p2pkp_tx_group_data(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			       u32 *budget)
{
	u64 lag = (u64)READ_ONCE(ps->group_lag_ms) * NSEC_PER_MSEC;
	u64 now = ktime_get_ns(), lim, pos, end, run, bytes;
	u32 n, sent, room, seg, w;
	int i, err = 0;
	bool any;

	if (!p2pkp_tx_members(ps, tx, now))
		return 0;
	p2pkp_tx_group_lag(ps, tx, now, lag);
	seg = P2PKP_DATA_HLEN + tx->gchunk + (ps->mac ? P2PKP_MAC_LEN : 0);
	while (tx->gnext < tx->gcount) {
		lim = tx->gcount;
		room = clamp_t(u32, 63 * 1024 / seg, 1, P2PKP_GSO_CHUNKS);
		tx->gack_edge = U64_MAX;
		tx->gack_mid = U64_MAX;
		any = false;
		for (i = 0; i < tx->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			if (p2pkp_tx_catching_up(tx, p, now, lag))
				lim = min(lim, p->cum + p->win);
			if (!p->member)
				continue;
			if (!p2pkp_pace_ok(tx, p, now))
				return 0;
			lim = min(lim, p->cum + p->win);
			/* as p2pkp_new_flags(), for the member nearest its limit */
			w = min(p->win, p->cwnd);
			tx->gack_edge = min(tx->gack_edge, p->cum + w);
			tx->gack_mid = min(tx->gack_mid, p->cum + w / 2);
			room = min(room, p->cwnd > p->pipe ?
				   p->cwnd - p->pipe : 0);
			room = min(room, p2pkp_pace_run(p));
			any = true;
		}
		if (!any || lim <= tx->gnext || !room)
			return 0;
		pos = tx->gnext * tx->gchunk;
		if (!p2pkp_in_blk(tx, pos, p2pkp_chunk_len(tx->size,
							   tx->gcount,
							   tx->gchunk,
							   tx->gnext))) {
			err = p2pkp_read_blk(tx, pos);
			if (err)
				return err;
		}
		end = tx->blk_pos + tx->blk_len;
		run = end == tx->size ? tx->gcount - tx->gnext :
		      div_u64(end - pos, tx->gchunk);
		n = min3(run, lim - tx->gnext, (u64)min(room, *budget));
		if (tx->rate)
			n = clamp_t(u32, div_u64(tx->burst / 2, tx->gchunk),
				    1, n);
		bytes = min_t(u64, (u64)n * tx->gchunk, tx->size - pos);
		if (!p2pkp_pace(ps, tx, bytes))
			return 0;
		sent = p2pkp_tx_group_send(ps, tx, tx->gnext, n,
					   tx->blk + (pos - tx->blk_pos), 0,
					   &err);
		if (err) {
			p2pkp_tx_group_fail(ps, tx, err);
			return 0;
		}
		bytes = min_t(u64, (u64)sent * tx->gchunk, tx->size - pos);
		for (i = 0; sent && i < tx->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];
			u64 c;

			if (!p->member)
				continue;
			for (c = tx->gnext; c < tx->gnext + sent; c++) {
				p->sent_ns[c % P2PKP_WIN] = now;
				__clear_bit(c % P2PKP_WIN, p->rtx);
			}
			p->next = tx->gnext + sent;
			p->pipe += sent;
			p2pkp_pace_sent(p, bytes, now);
		}
		tx->gnext += sent;
		p2pkp_stat(ps, P2PKP_ST_GROUP_SENT, sent);
		if (sent < n)
			return 0;	/* buffer full: write_space */
		*budget -= sent;
		if (!*budget) {
			tx->more = true;
			return 0;
		}
		cond_resched();
		now = ktime_get_ns();
	}
	return 0;
}

/*
 * Retransmit what is lost, then send new chunks within every window: the
 * block of new data starts where the peer furthest behind goes on, and
 * every peer gets the run of its chunks that lie whole in it.
 */
static int p2pkp_tx_data(struct p2pkp_sock *ps, struct p2pkp_tx *tx)
{
	u32 n, sent, budget = P2PKP_TX_BUDGET;
	u64 pos, end, run;
	int i, err = 0;

	tx->pace_ns = 0;
	tx->wait_ns = U64_MAX;
	tx->more = false;
	for (i = 0; i < tx->npeers; i++)
		ps->peers[i]->blocked = false;
	err = p2pkp_tx_retrans(ps, tx);
	if (err || tx->pace_ns)
		return err;
	for (i = 0; i < tx->npeers; i++)
		ps->peers[i]->pipe = p2pkp_pipe(ps->peers[i]);
	if (tx->gon) {
		/* half the round for the group: late peers catch up too */
		u32 gbudget = budget / 2;

		err = p2pkp_tx_group_data(ps, tx, &gbudget);
		if (err || tx->pace_ns)
			return err;
		budget -= budget / 2 - gbudget;
	}

	for (;;) {
		struct p2pkp_peer *first = NULL;
		u64 now = ktime_get_ns();

		pos = U64_MAX;
		for (i = 0; i < tx->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];

			if (p2pkp_may_send(tx, p, now) &&
			    p2pkp_peer_off(p, p->next) < pos) {
				pos = p2pkp_peer_off(p, p->next);
				first = p;
			}
		}
		if (!first)
			break;
		if (!p2pkp_in_blk(tx, pos,
				  p2pkp_peer_len(tx, first, first->next))) {
			err = p2pkp_read_blk(tx, pos);
			if (err)
				return err;
		}
		end = tx->blk_pos + tx->blk_len;
		for (i = 0; i < tx->npeers; i++) {
			struct p2pkp_peer *p = ps->peers[i];
			u64 off = p2pkp_peer_off(p, p->next);

			if (!p2pkp_may_send(tx, p, now) ||
			    !p2pkp_in_blk(tx, off,
					  p2pkp_peer_len(tx, p, p->next)))
				continue;
			/* its chunks that lie whole in the block */
			run = end == tx->size ? p->count - p->next :
			      div_u64(end - off, p->chunk);
			run = min(run, p->cum + p->win - p->next);
			/* a late group peer: up to what the group sent */
			if (p2pkp_g_eligible(tx, p))
				run = min(run, tx->gnext - p->next);
			run = min_t(u64, run, p->cwnd - p->pipe);
			run = min_t(u64, run, p2pkp_pace_run(p));
			n = min_t(u64, run, p2pkp_gso_max(ps, p));
			/*
			 * A run takes at most half the bucket: one that needs
			 * it all waits until it is full, and a wake-up later
			 * than that would lose the tokens of the lateness.
			 */
			if (tx->rate)
				n = clamp_t(u32, div_u64(tx->burst / 2, p->chunk),
					    1, n);
			if (!p2pkp_pace(ps, tx,
					p2pkp_run_len(tx, p, p->next, n)))
				return 0;
			sent = p2pkp_tx_data_run(ps, tx, p, p->next, n);
			if (sent)
				p2pkp_pace_sent(p, p2pkp_run_len(tx, p, p->next,
								 sent), now);
			p->pipe += sent;
			p->next += sent;
			/* buffer full: write_space brings us back */
			if (sent < n)
				p->blocked = true;
			/*
			 * A round ends after its budget, so that the ACKs of
			 * every peer are read (and the peer timeouts judged)
			 * between rounds, however many peers and however
			 * slow the machine (p2pkp_tx_step runs again at once).
			 */
			if (sent >= budget) {
				tx->more = true;
				return 0;
			}
			budget -= sent;
		}
		cond_resched();
	}
	return 0;
}

/*
 * START until the peer hands out its cookie, then START with the cookie
 * (the confirmed START) until it accepts, and again for a new epoch; END
 * until DONE.  Each repeats every RTO, doubling it (at most 2 s).
 */
static void p2pkp_tx_control(struct p2pkp_sock *ps, struct p2pkp_tx *tx,
			     struct p2pkp_peer *p, u64 now)
{
	bool start = p->state == PS_START || !p->confirmed || p->resync;

	if (!p2pkp_peer_active(p) || (!start && p->state != PS_END))
		return;
	if (p->last_ctl && now - p->last_ctl < (u64)p->rto * NSEC_PER_USEC)
		return;
	if (p->last_ctl)
		p->rto = min(p->rto * 2, P2PKP_RTO_MAX_US);
	p->last_ctl = now;
	if (start) {
		struct {
			struct p2pkp_start st;
			u8 ext[sizeof(struct p2pkp_group) + P2PKP_DIGEST_SIZE];
		} __packed b = {
			.st.size = cpu_to_be64(tx->size),
			.st.chunk = cpu_to_be32(p->chunk),
			.st.epoch = cpu_to_be16(p->epoch),
		};
		u16 flags = 0;
		u32 n = 0;

		/* a group transfer: where its DATA goes (section 1.8) */
		if (tx->gon && p->gsrc) {
			memcpy(b.ext, &tx->gext, sizeof(tx->gext));
			n += sizeof(tx->gext);
			flags |= P2PKP_F_GROUP;
		}
		/* P2PKP_RESUME: the whole file's digest (section 2.2) */
		if (tx->resume) {
			memcpy(b.ext + n, tx->digest, P2PKP_DIGEST_SIZE);
			n += P2PKP_DIGEST_SIZE;
			flags |= P2PKP_F_DIGEST;
		}
		p2pkp_tx_ctl_flags(ps, tx, p, P2PKP_T_START, flags, &b,
				   sizeof(b.st) + n);
	}
	if (p->state == PS_END) {
		struct p2pkp_end end = { .size = cpu_to_be64(tx->size) };

		memcpy(end.digest, tx->digest, sizeof(end.digest));
		p2pkp_tx_ctl(ps, tx, p, P2PKP_T_END, &end, sizeof(end));
	}
}

static void p2pkp_drain(struct socket *sock, u8 *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec vec = { buf, len };
	int n = 0;

	while (n++ < 4096 &&
	       kernel_recvmsg(sock, &msg, &vec, 1, len, MSG_DONTWAIT) >= 0)
		;
}

static void p2pkp_tx_free(struct p2pkp_tx *tx)
{
	if (tx->file)
		fput(tx->file);
	p2pkp_ctx_put(&tx->ctx);
	p2pkp_sha_free(&tx->sha);
	kfree(tx->rbuf);
	kvfree(tx->one);
	p2pkp_zc_put(tx->zc);		/* freed with its last skb */
	kvfree(tx->blk_copy);
	p2pkp_ksock_close(&tx->gks);
	kfree(tx);
}

static void p2pkp_op_done(struct p2pkp_sock *ps, int result);

/*
 * The write() is over: @err (a local failure: EIO, ECANCELED) fails the
 * peers still in progress, after an ABORT; otherwise the result is the
 * first failed peer's status in connect() order.
 */
static void p2pkp_tx_finish(struct p2pkp_sock *ps, int err)
{
	struct p2pkp_tx *tx = ps->tx;
	int i;

	if (err) {
		for (i = 0; i < tx->npeers; i++)
			if (p2pkp_peer_active(ps->peers[i]))
				p2pkp_tx_abort(ps, tx, ps->peers[i], err);
	} else {
		for (i = 0; i < tx->npeers; i++) {
			if (ps->peers[i]->state == PS_FAILED) {
				err = ps->peers[i]->status;
				break;
			}
		}
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
	ps->tx = NULL;			/* the caller frees it */
	ps->op_size = ps->info.size;
	WRITE_ONCE(ps->state, P2PKP_IDLE);
	p2pkp_op_done(ps, err);
}

/*
 * One round of the sender's engine (under ps->lock, as the caller).
 * Returns true when the write() is over, with a local error in @errp.
 */
static bool p2pkp_tx_step(struct p2pkp_sock *ps, int *errp)
{
	struct p2pkp_tx *tx = ps->tx;
	u64 timeout_ns = (u64)READ_ONCE(ps->timeout_ms) * NSEC_PER_MSEC;
	u64 now, wait_ns = U64_MAX;
	int i, err = 0, active = 0;

	if (tx->resume && !tx->digest_done) {
		/*
		 * START carries the digest: one read of the file first, a
		 * piece per round (close and other sockets go on meanwhile)
		 */
		err = p2pkp_tx_digest_some(tx, P2PKP_HASH_BUDGET);
		if (err) {
			*errp = err;
			return true;
		}
		if (!tx->digest_done) {
			p2pkp_kick(ps);
			return false;
		}
		now = ktime_get_ns();	/* the peers' time starts now */
		for (i = 0; i < tx->npeers; i++)
			ps->peers[i]->last_rx = now;
	}
	for (i = 0; i < tx->npeers; i++)
		p2pkp_tx_input(ps, tx, ps->peers[i]);
	now = ktime_get_ns();
	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		if (!p2pkp_peer_active(p))
			continue;
		if (now - p->last_rx > timeout_ns) {
			/* an ICMP error since the last word names the cause */
			p2pkp_peer_fail(ps, p, p->soft_err ?: -ETIMEDOUT);
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
	if (!err && active) {
		err = p2pkp_tx_data(ps, tx);
		if (tx->pace_ns)	/* rate cap: wait for tokens */
			wait_ns = min(wait_ns, tx->pace_ns);
		if (tx->wait_ns != U64_MAX) {	/* pacing */
			wait_ns = min(wait_ns, tx->wait_ns);
			if (!tx->more)
				p2pkp_stat(ps, P2PKP_ST_PACE_WAITS, 1);
		}
	}
	*errp = err;
	if (err || !active)
		return true;
	if (tx->more)
		p2pkp_kick(ps);
	else
		p2pkp_arm(ps, wait_ns);
	return false;
}

/* Start sending @f (opened by the caller) to every peer. */
static int p2pkp_tx_begin(struct p2pkp_sock *ps, struct file *f)
{
	struct p2pkp_tx *tx;
	int i, err;

	tx = kzalloc(sizeof(*tx), GFP_KERNEL_ACCOUNT);
	if (!tx)
		return -ENOMEM;
	tx->size = i_size_read(file_inode(f));
	if (tx->size > P2PKP_MAX_SIZE) {
		kfree(tx);
		return -EFBIG;
	}
	/* each peer's chunk from its path MTU, within P2PKP_CHUNK */
	for (i = 0; i < ps->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];
		bool known;

		p->gsrc = false;
		WRITE_ONCE(p->member, false);
		p->lag_ns = 0;
		err = p2pkp_peer_chunk(p, p2pkp_path_chunk(p->ks.sock, ps->mac,
							   READ_ONCE(ps->chunk),
							   &known));
		if (err) {
			kfree(tx);
			return err;
		}
		tx->chunk_max = max(tx->chunk_max, p->chunk);
	}
	if (ps->group_len) {
		err = p2pkp_tx_group_open(ps, tx);
		if (err) {
			kfree(tx);
			return err;
		}
	}
	/* new data is read in blocks of 64 chunks, at least 64 KiB */
	tx->blk_size = max_t(u32, P2PKP_BLOCK_BYTES,
			     min_t(u32, 64 * tx->chunk_max,
				   P2PKP_BLOCK_MAX / tx->chunk_max *
				   tx->chunk_max));
	tx->zc_on = READ_ONCE(tx_zerocopy);
	if (!tx->zc_on)	/* else only if no area can be had */
		tx->blk_copy = kvmalloc(tx->blk_size, GFP_KERNEL_ACCOUNT);
	tx->blk = tx->blk_copy;
	tx->zc_hdrs = p2pkp_zc_hdr_size(ps->peers, ps->npeers, tx->blk_size,
					ps->mac);
	tx->one = kvmalloc(tx->chunk_max, GFP_KERNEL_ACCOUNT);
	tx->rbuf = kmalloc(P2PKP_REPLY_MAX, GFP_KERNEL_ACCOUNT);
	if ((!tx->zc_on && !tx->blk_copy) || !tx->one || !tx->rbuf) {
		p2pkp_tx_free(tx);
		return -ENOMEM;
	}
	get_file(f);
	tx->file = f;
	tx->one_pos = U64_MAX;
	tx->rate = READ_ONCE(ps->rate);
	tx->resume = READ_ONCE(ps->resume);
	/* ~16 ms of sending, at least two chunks */
	tx->burst = max_t(u64, tx->rate / 64, 2 * tx->chunk_max);
	tx->tokens = tx->burst;
	tx->tok_ns = ktime_get_ns();
	do {
		tx->id = get_random_u64();
	} while (!tx->id);
	err = p2pkp_sha_alloc(&tx->sha) ?: p2pkp_sha_init(&tx->sha);
	if (err) {
		p2pkp_tx_free(tx);
		return err;
	}
	tx->start_ns = ktime_get_ns();
	tx->npeers = ps->npeers;

	for (i = 0; i < tx->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		p2pkp_drain(p->ks.sock, tx->rbuf, P2PKP_REPLY_MAX);
		sock_error(p->ks.sock->sk);	/* forget old ICMP errors */
		p->status = 0;
		p->soft_err = 0;
		p->cookie = 0;
		p->cookie_known = false;
		p->confirmed = false;
		p->resync = false;
		p->epoch = 0;
		p->base = 0;
		p->count = DIV_ROUND_UP_ULL(tx->size, p->chunk);
		p->cum = 0;
		p->next = 0;
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
		p->nsacked = 0;
		p->losses = 0;
		p->timeouts = 0;
		p->undos = 0;
		p2pkp_cc_reset(p, READ_ONCE(tx_cc));
		WRITE_ONCE(p->state, PS_START);
	}
	p2pkp_ctx_get(&tx->ctx);
	ps->tx = tx;
	ps->tx_size = tx->size;
	WRITE_ONCE(ps->state, P2PKP_SENDING);
	p2pkp_kick(ps);
	return 0;
}

/* ---- receiver ----------------------------------------------------- */

enum { RS_IDLE, RS_RECV, RS_LINGER };

struct p2pkp_rx {
	struct p2pkp_ctx ctx;		/* the caller of read() */
	char *name;			/* last component of the path */
	struct path dir;		/* destination directory, checked */
	struct file *file;		/* O_TMPFILE, or the named fallback */
	bool named;			/* fallback: @file is named @tmpname */
	bool fd;			/* @file is the caller's (1.6) */
	bool dirty;			/* @file holds an abandoned transfer */
	bool fsync;
	bool resume;			/* P2PKP_RESUME at read() */
	bool partial;			/* @file is a kept partial file (1.7) */
	bool no_xattr;			/* its file system has no user xattrs */
	u64 ckpt_at, ckpt_ns;		/* its last checkpoint: prefix, time */
	bool hashing;			/* reading its prefix [0, base) back */
	u64 hashed;			/* ... bytes of it hashed */
	u64 keep_max;			/* what it may keep: a failed write */
	u8 want[P2PKP_DIGEST_SIZE];	/* the digest START announced */
	u64 fsize;			/* the caller's RLIMIT_FSIZE */
	char tmpname[NAME_MAX + 1];
	umode_t mode;			/* final mode (the named fallback) */
	int state;			/* RS_* */
	bool finished;
	int result;			/* 0 or -errno for read() */
	u64 id, cookie, size, cum;
	u64 base, count;		/* of the epoch: its chunk 0, chunks */
	u32 chunk, window;
	u16 epoch;
	struct sockaddr_storage from;
	int fromlen;
	u64 start_ns, last_rx, linger_end;
	u32 unacked;
	bool ooo_acked;
	u32 echo;			/* ts of the last DATA */
	u32 srtt;			/* us, from DATA echoes; 0: unknown */
	u64 last_ack_ns;
	u32 ack_every;			/* chunks between paced ACKs */
	u32 ack_mult;			/* group: paced ACKs ack_mult x 20 ms apart */
	/* a group transfer (section 1.8): the group joined */
	bool group;
	bool gdata;			/* group DATA since the last ACK */
	bool gself;			/* ... on the bound socket (wildcard) */
	struct p2pkp_ksock gks;		/* ... or on this one, bound to it */
	struct sockaddr_storage gaddr;
	int gifindex;
	u32 credit;			/* bytes of ACK the sender has paid for */
	struct p2pkp_sha sha;
	DECLARE_BITMAP(ring, P2PKP_WIN);	/* by chunk % P2PKP_WIN */
	u8 *chunkbuf;			/* P2PKP_CHUNK_MAX */
	/* payloads still in ps->rxbuf, contiguous from @wpos: one write */
	struct kvec wv[P2PKP_WBATCH];
	u32 wn;
	size_t wlen;
	loff_t wpos;
};

/* ---- multicast, receiver (section 1.8) -------------------------------- */

/* Same host address (the port differs: the group's socket is another). */
static bool p2pkp_addr_host_eq(const struct sockaddr_storage *a,
			       const struct sockaddr_storage *b)
{
	struct p2pkp_allow x, y;

	p2pkp_allow_of(&x, a);
	p2pkp_allow_of(&y, b);
	return x.family == y.family && ipv6_addr_equal(&x.addr, &y.addr);
}

/*
 * The GROUP extension of a START from @from (section 2.2): the group's
 * family is the sender's, the address a group P2PKP sends to, its port
 * this socket's, acklog at most P2PKP_ACKLOG_MAX, padding zero.
 */
static bool p2pkp_rx_group_ok(const struct p2pkp_sock *ps,
			      const struct p2pkp_group *g,
			      const struct sockaddr_storage *from)
{
	static const u8 zero[12];
	sa_family_t fam = g->family == 4 ? AF_INET : AF_INET6;

	if ((g->family != 4 && g->family != 6) || fam != from->ss_family ||
	    g->reserved > P2PKP_ACKLOG_MAX ||
	    g->port != p2pkp_addr_port(&ps->local))
		return false;
	if (fam == AF_INET && memcmp(g->addr + 4, zero, sizeof(zero)))
		return false;
	return p2pkp_group_addr_ok(fam, g->addr);
}

/* The interface of the route back to @to: where its group is joined. */
static int p2pkp_route_ifindex(struct net *net,
			       const struct sockaddr_storage *to)
{
	int ifindex = 0;

	if (to->ss_family == AF_INET) {
		struct flowi4 fl4 = {
			.daddr = ((struct sockaddr_in *)to)->sin_addr.s_addr,
		};
		struct rtable *rt = ip_route_output_key(net, &fl4);

		if (IS_ERR(rt))
			return PTR_ERR(rt);
		ifindex = rt->dst.dev->ifindex;
		ip_rt_put(rt);
		return ifindex;
	}
#if IS_ENABLED(CONFIG_IPV6)
	{
		const struct sockaddr_in6 *a = (const void *)to;
		struct flowi6 fl6 = {
			.daddr = a->sin6_addr,
			.flowi6_oif = a->sin6_scope_id,
		};
		struct dst_entry *dst = ip6_route_output(net, NULL, &fl6);
		int err = dst->error;

		if (!err)
			ifindex = dst->dev->ifindex;
		dst_release(dst);
		return err ?: ifindex;
	}
#else
	return -EAFNOSUPPORT;
#endif
}

/* Join or leave (@join false) the group on @sock. */
static int p2pkp_mc_member(struct socket *sock,
			   const struct sockaddr_storage *g, int ifindex,
			   bool join)
{
	if (g->ss_family == AF_INET) {
		struct ip_mreqn mr = {
			.imr_multiaddr = ((struct sockaddr_in *)g)->sin_addr,
			.imr_ifindex = ifindex,
		};

		return sock->ops->setsockopt(sock, SOL_IP, join ?
					     IP_ADD_MEMBERSHIP :
					     IP_DROP_MEMBERSHIP,
					     KERNEL_SOCKPTR(&mr), sizeof(mr));
	}
#if IS_ENABLED(CONFIG_IPV6)
	{
		struct ipv6_mreq mr = {
			.ipv6mr_multiaddr =
				((struct sockaddr_in6 *)g)->sin6_addr,
			.ipv6mr_ifindex = ifindex,
		};

		return sock->ops->setsockopt(sock, SOL_IPV6, join ?
					     IPV6_ADD_MEMBERSHIP :
					     IPV6_DROP_MEMBERSHIP,
					     KERNEL_SOCKPTR(&mr), sizeof(mr));
	}
#else
	return -EAFNOSUPPORT;
#endif
}

/*
 * Join the group of an accepted transfer, as the read()'s caller, on the
 * interface of the route back to its sender: a second socket bound to
 * group:port (several receiving sockets of a host may take one group),
 * or, when this socket is bound to the wildcard address (which gets the
 * group's datagrams too), this socket itself.
 */
static int p2pkp_rx_join(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			 const struct p2pkp_group *g)
{
	struct sockaddr_storage *ga = &rx->gaddr;
	struct socket *sock = ps->rx.sock;
	int ifindex, err, len;

	memset(ga, 0, sizeof(*ga));
	if (g->family == 4) {
		struct sockaddr_in *a = (void *)ga;

		a->sin_family = AF_INET;
		a->sin_port = g->port;
		memcpy(&a->sin_addr, g->addr, 4);
		len = sizeof(*a);
		rx->gself = !inet_sk(sock->sk)->inet_rcv_saddr;
	} else {
		struct sockaddr_in6 *a = (void *)ga;

		a->sin6_family = AF_INET6;
		a->sin6_port = g->port;
		memcpy(&a->sin6_addr, g->addr, 16);
		len = sizeof(*a);
		rx->gself = ipv6_addr_any(&sock->sk->sk_v6_rcv_saddr);
	}
	ifindex = p2pkp_route_ifindex(sock_net(&ps->sk), &rx->from);
	if (ifindex < 0)
		return ifindex;
	if (ga->ss_family == AF_INET6)	/* a link-scope group needs it */
		((struct sockaddr_in6 *)ga)->sin6_scope_id = ifindex;
	if (!rx->gself) {
		err = p2pkp_ksock_open(ps, &rx->gks, ga->ss_family,
				       ps->rcvbuf, P2PKP_REPLY_MAX);
		if (err < 0)
			return err;
		sock = rx->gks.sock;
		sock_set_reuseaddr(sock->sk);
		err = p2pkp_set_gro(sock, READ_ONCE(rx_gro)) ?:
		      kernel_bind(sock, (struct sockaddr *)ga, len);
		if (err)
			goto close;
	}
	err = p2pkp_mc_member(sock, ga, ifindex, true);
	if (err)
		goto close;
	rx->gifindex = ifindex;
	rx->group = true;
	p2pkp_stat(ps, P2PKP_ST_GROUP_JOINED, 1);
	return 0;
close:
	p2pkp_ksock_close(&rx->gks);
	return err;
}

/* Leave the group when the transfer ends (closing its socket leaves). */
static void p2pkp_rx_leave(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	if (!rx->group)
		return;
	if (rx->gself)
		p2pkp_mc_member(ps->rx.sock, &rx->gaddr, rx->gifindex, false);
	p2pkp_ksock_close(&rx->gks);
	rx->group = false;
}

/*
 * Token bucket for replies to sources that have not proven their address
 * (section 7).  The time accounted at once is at most a second.
 */
static bool p2pkp_rx_rl(struct p2pkp_sock *ps)
{
	u64 now = ktime_get_ns();
	u64 dt = now - ps->rl_ns;
	u64 add;

	if (dt >= NSEC_PER_SEC) {
		ps->rl_tokens = P2PKP_RL_BURST;
		ps->rl_ns = now;
	} else {
		add = div64_u64(dt * P2PKP_RL_PER_SEC, NSEC_PER_SEC);
		if (add) {
			ps->rl_tokens = min_t(u64, ps->rl_tokens + add,
					      P2PKP_RL_BURST);
			ps->rl_ns += add * (NSEC_PER_SEC / P2PKP_RL_PER_SEC);
			if (ps->rl_tokens == P2PKP_RL_BURST)
				ps->rl_ns = now;
		}
	}
	if (!ps->rl_tokens)
		return false;
	ps->rl_tokens--;
	return true;
}

/*
 * Send a reply; false if the rate limit kept it back.  Replies about the
 * accepted transfer to its sender (it proved its address with the cookie)
 * go freely (its ACKs are bounded by credit, see p2pkp_rx_send_ack); any
 * other reply, also to that sender's address about another id, goes
 * through the token bucket: P2PKP_RL_PER_SEC a second, never more bytes
 * than the datagram it answers.
 */
static void p2pkp_rx_reply(struct p2pkp_sock *ps, struct sockaddr_storage *to,
			   int tolen, u8 type, u16 flags, u64 id, u64 cookie,
			   u32 echo, const void *body, size_t blen)
{
	struct p2pkp_rx *rx = ps->rxo;
	u8 pkt[P2PKP_CTL_MAX];
	size_t n;

	if (!(rx && rx->state != RS_IDLE && id == rx->id &&
	      p2pkp_addr_eq(to, &rx->from)) && !p2pkp_rx_rl(ps)) {
		p2pkp_stat(ps, P2PKP_ST_REPLIES_LIMITED, 1);
		return;
	}
	/* echo 0: no datagram to echo (an RTT sample would be wrong) */
	n = p2pkp_hdr_fill(ps, pkt, type, flags | (echo ? P2PKP_F_ECHO : 0),
			   id, cookie, echo);
	if (blen)
		memcpy(pkt + n, body, blen);
	p2pkp_xmit(ps, ps->rx.sock, to, tolen, pkt, n + blen, NULL, 0,
		   MSG_DONTWAIT);
}

/*
 * Window for chunks of @chunk bytes: what the receive buffer holds (an
 * skb's truesize is about the next power of two above the datagram plus
 * 512 bytes of overhead), 1..512.
 */
static u32 p2pkp_rx_window(const struct p2pkp_sock *ps, u32 chunk)
{
	u32 truesize = roundup_pow_of_two(chunk + 256) + 512;

	return clamp_t(u32, ps->rcvbuf / truesize, 1, P2PKP_WIN);
}

/*
 * Gap between two paced ACKs: srtt/4 within P2PKP_ACK_MIN_US..
 * P2PKP_ACK_MAX_US.  A group's member that takes the group's DATA
 * (section 1.8) has no RTT (group DATA carries no echo) and is asked for
 * an ACK when its sender needs one (at half its window, at the end): its
 * paced ACKs are P2PKP_ACK_MAX_US times ack_mult apart.  One that takes
 * unicast DATA only (a late or resumed peer, a group given up) paces as
 * without a group.
 */
static u64 p2pkp_rx_ack_ivl(const struct p2pkp_rx *rx)
{
	u32 us = clamp_t(u32, rx->srtt / 4, P2PKP_ACK_MIN_US, P2PKP_ACK_MAX_US);

	if (rx->group && rx->gdata)
		us = P2PKP_ACK_MAX_US * rx->ack_mult;
	return (u64)us * NSEC_PER_USEC;
}

/* Bytes of one ACK: what the sender must have sent for it (credit). */
static u32 p2pkp_ack_cost(const struct p2pkp_sock *ps)
{
	return P2PKP_HLEN + sizeof(struct p2pkp_ack) +
	       (ps->mac ? P2PKP_MAC_LEN : 0);
}

static void p2pkp_rx_send_ack(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	struct p2pkp_ack a = {
		.cum = cpu_to_be64(rx->cum),
		.epoch = cpu_to_be16(rx->epoch),
		.nbits = cpu_to_be16(P2PKP_WIN),
		.window = cpu_to_be32(rx->window),
	};
	u32 i, cost = p2pkp_ack_cost(ps);

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
	p2pkp_rx_reply(ps, &rx->from, rx->fromlen, P2PKP_T_ACK, 0, rx->id,
		       rx->cookie, rx->echo, &a, sizeof(a));
	p2pkp_stat(ps, P2PKP_ST_ACKS_SENT, 1);
	rx->unacked = 0;
	rx->gdata = false;
}

static void p2pkp_rx_send_status(struct p2pkp_sock *ps,
				 struct sockaddr_storage *to, int tolen,
				 u8 type, u64 id, u64 cookie, u32 echo,
				 s32 status)
{
	struct p2pkp_status st = { .status = cpu_to_be32(status) };

	p2pkp_rx_reply(ps, to, tolen, type, 0, id, cookie, echo, &st,
		       sizeof(st));
}

/* Is @d still the named temporary file @rx made in its directory? */
static bool p2pkp_rx_ours(struct p2pkp_rx *rx, struct dentry *d)
{
	return d->d_parent == rx->dir.dentry && !d_unhashed(d) &&
	       d_really_is_positive(d) && d_inode(d) == file_inode(rx->file);
}

/* Unlink the named temporary file (fallback), through the LSM path hook. */
static void p2pkp_rx_unlink(struct p2pkp_rx *rx)
{
	struct dentry *dir = rx->dir.dentry;
	struct dentry *d = dget(rx->file->f_path.dentry);

	if (!mnt_want_write(rx->dir.mnt)) {
		inode_lock_nested(d_inode(dir), I_MUTEX_PARENT);
		if (p2pkp_rx_ours(rx, d) &&
		    !security_path_unlink(&rx->dir, d))
			vfs_unlink(p2pkp_idmap(rx->dir.mnt), d_inode(dir), d,
				   NULL);
		inode_unlock(d_inode(dir));
		mnt_drop_write(rx->dir.mnt);
	}
	dput(d);
	rx->named = false;
}

/* Link the O_TMPFILE at @d (a negative dentry in the locked directory). */
static int p2pkp_rx_link(struct p2pkp_rx *rx, struct dentry *d)
{
	return vfs_link(rx->file->f_path.dentry, p2pkp_idmap(rx->dir.mnt),
			d_inode(rx->dir.dentry), d, NULL);
}

/*
 * The temporary name of the file (in the locked directory): the named
 * fallback's, or a new hidden name the O_TMPFILE is linked at.  Returns a
 * dentry reference, or an ERR_PTR.
 */
static struct dentry *p2pkp_rx_tmpname(struct p2pkp_rx *rx, bool *linked)
{
	struct dentry *dir = rx->dir.dentry, *tmp;
	int i, err;

	if (rx->named) {
		tmp = dget(rx->file->f_path.dentry);
		if (p2pkp_rx_ours(rx, tmp))
			return tmp;
		dput(tmp);
		return ERR_PTR(-ENOENT);
	}
	for (i = 0; i < P2PKP_TMP_TRIES; i++) {
		snprintf(rx->tmpname, sizeof(rx->tmpname), ".p2pkp-%016llx",
			 get_random_u64());
		tmp = lookup_one(p2pkp_idmap(rx->dir.mnt), rx->tmpname, dir,
				 strlen(rx->tmpname));
		if (IS_ERR(tmp))
			return tmp;
		if (d_really_is_negative(tmp)) {
			err = p2pkp_rx_link(rx, tmp);
			if (err) {
				dput(tmp);
				return ERR_PTR(err);
			}
			*linked = true;
			return tmp;
		}
		dput(tmp);
	}
	return ERR_PTR(-EEXIST);
}

/* The named fallback gets the mode a new file of the caller's would have. */
static int p2pkp_rx_chmod(struct p2pkp_rx *rx)
{
	struct dentry *d = rx->file->f_path.dentry;
	struct inode *inode = d_inode(d);
	struct iattr ia = {
		.ia_valid = ATTR_MODE | ATTR_CTIME,
		.ia_mode = rx->mode | (inode->i_mode & ~S_IALLUGO),
	};
	int err;

	inode_lock(inode);
	err = notify_change(p2pkp_idmap(rx->file->f_path.mnt), d, &ia, NULL);
	inode_unlock(inode);
	return err;
}

/*
 * Give the verified file its name: fsync it (P2PKP_FSYNC); a free final
 * name gets the O_TMPFILE linked at it; an existing file (or symlink,
 * replaced, never followed) is replaced atomically by a rename from a
 * hidden temporary name; then the directory is fsynced.  The caller's
 * credentials are in force; LSM hooks run (inode_link, path_rename and
 * inode_rename, path_unlink and inode_unlink).
 */
static int p2pkp_rx_commit(struct p2pkp_rx *rx)
{
	struct dentry *dir = rx->dir.dentry, *tmp = NULL, *newd;
	p2pkp_idmap_t *idmap = p2pkp_idmap(rx->dir.mnt);
	struct inode *dinode = d_inode(dir);
	bool linked = false;
	struct file *df;
	int err;

	if (rx->fsync) {
		err = vfs_fsync(rx->file, 0);
		if (err)
			return err;
	}
	if (rx->fd) {			/* naming is the caller's */
		rx->dirty = false;
		return 0;
	}
	err = mnt_want_write(rx->dir.mnt);
	if (err)
		return err;
	/*
	 * A partial file's claim does not go with the final file: removed
	 * while the mode still lets its owner write (before the chmod)
	 */
	if (rx->partial && !rx->no_xattr) {
		err = vfs_removexattr(idmap, rx->file->f_path.dentry,
				      P2PKP_HAVE_XATTR);
		if (err && err != -ENODATA && err != -EOPNOTSUPP)
			goto drop;
	}
	if (rx->named) {
		err = p2pkp_rx_chmod(rx);
		if (err)
			goto drop;
	}
	lock_rename(dir, dir);
	newd = lookup_one(idmap, rx->name, dir, strlen(rx->name));
	if (IS_ERR(newd)) {
		err = PTR_ERR(newd);
		goto unlock;
	}
	if (!rx->named && d_really_is_negative(newd)) {
		err = p2pkp_rx_link(rx, newd);	/* no hidden name at all */
		goto put;
	}
	tmp = p2pkp_rx_tmpname(rx, &linked);
	if (IS_ERR(tmp)) {
		err = PTR_ERR(tmp);
		tmp = NULL;
		goto put;
	}
	err = security_path_rename(&rx->dir, tmp, &rx->dir, newd, 0);
	if (!err)
		err = p2pkp_vfs_rename(idmap, dinode, tmp, newd);
	if (err && linked && !security_path_unlink(&rx->dir, tmp))
		vfs_unlink(idmap, dinode, tmp, NULL);
	dput(tmp);
put:
	dput(newd);
unlock:
	unlock_rename(dir, dir);
drop:
	mnt_drop_write(rx->dir.mnt);
	if (err)
		return err;
	rx->named = false;		/* it has its final name now */
	if (!rx->fsync)
		return 0;
	/*
	 * The file has its name: a failing directory fsync cannot undo that
	 * and does not fail the read(); it is logged.
	 */
	df = dentry_open(&rx->dir, O_RDONLY | O_DIRECTORY, current_cred());
	err = IS_ERR(df) ? PTR_ERR(df) : vfs_fsync(df, 0);
	if (!IS_ERR(df))
		fput(df);
	if (err)
		pr_warn_ratelimited("fsync of a destination directory failed: %d\n",
				    err);
	return 0;
}

static void p2pkp_rx_remember(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			      int status, const u8 *digest)
{
	ps->last_valid = true;
	ps->last_id = rx->id;
	ps->last_cookie = rx->cookie;
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

/*
 * Empty the destination file after an abandoned transfer, as ftruncate()
 * on the caller's open file would (the engine cannot make a new file: it
 * would not have the caller's umask): no partial data stays on disk.
 */
static int p2pkp_rx_empty(struct p2pkp_rx *rx)
{
	struct dentry *d = rx->file->f_path.dentry;
	struct inode *inode = d_inode(d);
	struct iattr ia = {
		.ia_valid = ATTR_SIZE | ATTR_FILE | ATTR_MTIME | ATTR_CTIME,
		.ia_size = 0,
		.ia_file = rx->file,
	};
	int err;

	err = vfs_truncate(&rx->file->f_path, 0);
	/*
	 * The file read() created, whose mode has no write for the owner
	 * (umask): as ftruncate() on the caller's open file would.  Not when
	 * an LSM refused (the mode allows writing), nor for the caller's own
	 * descriptor (1.6): those keep their error.
	 */
	if (err == -EACCES && !rx->fd &&
	    inode_permission(p2pkp_idmap(rx->file->f_path.mnt), inode,
			     MAY_WRITE)) {
		sb_start_write(inode->i_sb);
		inode_lock(inode);
		err = notify_change(p2pkp_idmap(rx->file->f_path.mnt), d, &ia,
				    NULL);
		inode_unlock(inode);
		sb_end_write(inode->i_sb);
	}
	if (!err)
		rx->dirty = false;
	return err;
}

/* File bytes received in order: the epoch's base and its chunks up to cum. */
static u64 p2pkp_rx_prefix(const struct p2pkp_rx *rx)
{
	return min(rx->base + rx->cum * rx->chunk, rx->size);
}

/*
 * The partial file's claim (section 1.7): the prefix written, in order and
 * synced, as user.p2pkp.have (8 bytes, big-endian).  File systems without
 * user xattrs (tmpfs before 6.6) go without: there the file's size is the
 * claim, made true at every interruption.
 */
static void p2pkp_rx_set_have(struct p2pkp_rx *rx, u64 have)
{
	__be64 v = cpu_to_be64(have);
	struct path *path = &rx->file->f_path;
	int err;

	if (rx->no_xattr)
		return;
	err = mnt_want_write(path->mnt);
	if (!err) {
		err = vfs_setxattr(p2pkp_idmap(path->mnt), path->dentry,
				   P2PKP_HAVE_XATTR, &v, sizeof(v), 0);
		mnt_drop_write(path->mnt);
	}
	if (err == -EOPNOTSUPP)
		rx->no_xattr = true;
	else if (err)
		pr_warn_ratelimited("partial file checkpoint failed: %d\n", err);
}

/* The claim of @f: its size where there is no xattr, 0 where one is missing. */
static u64 p2pkp_rx_get_have(struct p2pkp_rx *rx, struct file *f)
{
	u64 size = i_size_read(file_inode(f));
	__be64 v;
	ssize_t n;

	n = vfs_getxattr(p2pkp_idmap(f->f_path.mnt), f->f_path.dentry,
			 P2PKP_HAVE_XATTR, &v, sizeof(v));
	if (n == -EOPNOTSUPP) {
		rx->no_xattr = true;
		return size;
	}
	rx->no_xattr = false;
	if (n != sizeof(v))
		return 0;	/* none (a new file, or cut before any) */
	return min(be64_to_cpu(v), size);
}

/*
 * Every P2PKP_CKPT_BYTES or P2PKP_CKPT_NS of a resumable transfer (after
 * the engine wrote what it gathered): the new prefix is synced, then
 * claimed and the claim synced, so a power cut loses at most what came
 * since (a claim never runs ahead of the data it names).
 */
static void p2pkp_rx_checkpoint(struct p2pkp_rx *rx)
{
	u64 prefix = p2pkp_rx_prefix(rx);
	u64 now = ktime_get_ns();
	int err;

	if (prefix <= rx->ckpt_at ||
	    (prefix - rx->ckpt_at < P2PKP_CKPT_BYTES &&
	     now - rx->ckpt_ns < P2PKP_CKPT_NS))
		return;
	err = vfs_fsync_range(rx->file, rx->ckpt_at, prefix - 1, 1);
	if (err) {
		pr_warn_ratelimited("partial file checkpoint failed: %d\n", err);
		return;
	}
	p2pkp_rx_set_have(rx, prefix);
	if (!rx->no_xattr)
		vfs_fsync(rx->file, 0);	/* the claim: a journal commit */
	rx->ckpt_at = prefix;
	rx->ckpt_ns = now;
}

/*
 * A resumable transfer is interrupted (section 1.7): its partial file
 * keeps the prefix received in order, which is written, and is fsynced;
 * what was stored beyond goes.
 */
static void p2pkp_rx_keep_prefix(struct p2pkp_rx *rx)
{
	u64 keep = min(p2pkp_rx_prefix(rx), rx->keep_max);
	int err = 0;

	if (i_size_read(file_inode(rx->file)) > keep)
		err = vfs_truncate(&rx->file->f_path, keep);
	if (!err)
		err = vfs_fsync(rx->file, 0);
	if (err)
		pr_warn_ratelimited("keeping a partial file failed: %d\n", err);
	else
		p2pkp_rx_set_have(rx, keep);
	rx->dirty = false;
}

/*
 * A read() that ends without its file (as its caller): the hidden name of
 * the fallback goes, and the caller's descriptor is emptied of a partial
 * file (1.6).  A resumable transfer's partial file stays, with its prefix.
 */
static void p2pkp_rx_discard(struct p2pkp_rx *rx)
{
	if (rx->partial) {
		if (rx->state == RS_RECV)
			p2pkp_rx_keep_prefix(rx);
	} else if (rx->named) {
		p2pkp_rx_unlink(rx);
	} else if (rx->fd && rx->dirty) {
		p2pkp_rx_empty(rx);
	}
}

/* Abandon the transfer in progress (the read() keeps waiting). */
static void p2pkp_rx_abandon(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			     int stat)
{
	rx->wn = 0;			/* not written: nothing to keep */
	if (rx->partial && rx->state == RS_RECV)
		p2pkp_rx_keep_prefix(rx);
	else if (rx->dirty && !rx->partial)
		p2pkp_rx_empty(rx);	/* else at the next accept */
	p2pkp_stat(ps, stat, 1);
	p2pkp_rx_leave(ps, rx);
	rx->state = RS_IDLE;
	WRITE_ONCE(ps->state, P2PKP_WAITING);
}

/* A failure that ends the read(): tell the sender. */
static void p2pkp_rx_fail(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			  int err, u32 echo)
{
	p2pkp_rx_remember(ps, rx, err, NULL);
	p2pkp_rx_send_status(ps, &rx->from, rx->fromlen, P2PKP_T_DONE,
			     rx->id, rx->cookie, echo, err);
	p2pkp_stat(ps, P2PKP_ST_FILES_FAILED, 1);
	p2pkp_rx_leave(ps, rx);
	rx->result = err;
	rx->finished = true;
}

/* Length of chunk @c of the receiver's epoch. */
static u32 p2pkp_rx_len(const struct p2pkp_rx *rx, u64 c)
{
	return p2pkp_chunk_len(rx->size - rx->base, rx->count, rx->chunk, c);
}

/*
 * Write the payloads p2pkp_rx_gather() collected with one write: before
 * the next receive overwrites rxbuf, before a chunk is read back, before
 * the engine sleeps, and before any other datagram (END, a new epoch) is
 * handled.  A failure fails the read().
 */
static void p2pkp_rx_flush(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	struct iov_iter it;
	u32 n;
	int err;

	if (!rx || !rx->wn)
		return;
	n = rx->wn;
	rx->wn = 0;
	if (rx->state != RS_RECV || rx->finished)
		return;
	iov_iter_kvec(&it, ITER_SOURCE, rx->wv, n, rx->wlen);
	err = p2pkp_write_iter(rx->file, &it, rx->wpos);
	p2pkp_stat(ps, P2PKP_ST_FILE_WRITES, 1);
	if (err) {
		/* counted in cum maybe, but not all written */
		rx->keep_max = min_t(u64, rx->keep_max, rx->wpos);
		p2pkp_rx_fail(ps, rx, err, rx->echo);
	}
}

/*
 * Add a payload (in ps->rxbuf) for file offset @pos to the pending write,
 * after writing what it does not continue.  Returns false if that failed
 * the read().
 */
static bool p2pkp_rx_gather(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			    const u8 *payload, u32 len, loff_t pos)
{
	if (rx->wn && (rx->wn == P2PKP_WBATCH || pos != rx->wpos + rx->wlen))
		p2pkp_rx_flush(ps, rx);
	if (rx->finished)
		return false;
	if (!rx->wn) {
		rx->wpos = pos;
		rx->wlen = 0;
	}
	rx->wv[rx->wn].iov_base = (void *)payload;
	rx->wv[rx->wn].iov_len = len;
	rx->wn++;
	rx->wlen += len;
	return true;
}

/*
 * Hash the chunks that became contiguous, read back from the file (the
 * page cache, as a rule): out-of-order chunks are not kept in memory.
 */
static int p2pkp_rx_advance(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	if (rx->cum < rx->count && test_bit(rx->cum % P2PKP_WIN, rx->ring)) {
		p2pkp_rx_flush(ps, rx);	/* what is read back is written */
		if (rx->finished)
			return 0;	/* failed */
	}
	while (rx->cum < rx->count &&
	       test_bit(rx->cum % P2PKP_WIN, rx->ring)) {
		u32 len = p2pkp_rx_len(rx, rx->cum);
		int err;

		__clear_bit(rx->cum % P2PKP_WIN, rx->ring);
		err = p2pkp_read_full(rx->file, rx->chunkbuf, len,
				      rx->base + rx->cum * rx->chunk);
		if (err)
			return err;
		p2pkp_sha_update(&rx->sha, rx->chunkbuf, len);
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

/* Largest file the receiver takes: max_file_size, the caller's limit. */
static u64 p2pkp_rx_max(const struct p2pkp_rx *rx)
{
	u64 m = min_t(u64, READ_ONCE(max_file_size), P2PKP_MAX_SIZE);

	return rx ? min(m, rx->fsize) : m;
}

/* Refuse a START (the read keeps waiting); the sender fails with @err. */
static void p2pkp_rx_refuse(struct p2pkp_sock *ps, const struct p2pkp_hdr *h,
			    struct sockaddr_storage *from, int fromlen,
			    u64 cookie, int err, int stat)
{
	p2pkp_stat(ps, stat, 1);
	p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE,
			     be64_to_cpu(h->id), cookie, be32_to_cpu(h->ts), err);
}

/*
 * The destination file, made by read() in the checked directory with the
 * caller's credentials and umask: O_TMPFILE (no name until verified) or,
 * where the file system has no O_TMPFILE, a hidden temporary name.
 */
/*
 * A new file under a hidden name .p2pkp-<16 random hex digits> (in
 * @rx->tmpname), private until verified: other users must not read a
 * partial file; its final mode is set when it is named.
 */
static struct file *p2pkp_rx_hidden(struct p2pkp_rx *rx)
{
	struct file *f = ERR_PTR(-EEXIST);
	int i;

	for (i = 0; i < P2PKP_TMP_TRIES && PTR_ERR(f) == -EEXIST; i++) {
		snprintf(rx->tmpname, sizeof(rx->tmpname), ".p2pkp-%016llx",
			 get_random_u64());
		f = file_open_root(&rx->dir, rx->tmpname,
				   O_CREAT | O_EXCL | O_RDWR | O_LARGEFILE |
				   O_NOFOLLOW, 0600);
	}
	return f;
}

static int p2pkp_rx_newfile(struct p2pkp_rx *rx)
{
	struct file *f;
	bool named = false;

	f = file_open_root(&rx->dir, ".", O_TMPFILE | O_RDWR | O_LARGEFILE,
			   0666);
	if (IS_ERR(f) && (PTR_ERR(f) == -EOPNOTSUPP ||
			  PTR_ERR(f) == -EEXIST)) {
		f = p2pkp_rx_hidden(rx);
		named = !IS_ERR(f);
	}
	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!S_ISREG(file_inode(f)->i_mode)) {
		fput(f);
		return -EINVAL;
	}
	rx->file = f;
	rx->named = named;
	rx->mode = 0666 & ~current_umask();
	return 0;
}

/*
 * The partial file of a resumable transfer (section 1.7):
 * ".p2pkp-part-NAME-" and 16 hex digits, NAME the final name and the
 * digits the first 64 bits of SHA-256(size (be64) || digest).  Only the
 * caller's path and the sender's (size, digest) go in: a peer cannot
 * choose the name, and another file gets another partial.  -ENAMETOOLONG
 * when it does not fit NAME_MAX (such a destination is not resumable).
 */
static int p2pkp_rx_partname(struct p2pkp_rx *rx, u64 size,
			     const u8 *digest, char *out, size_t len)
{
	struct p2pkp_sha sha = {};
	__be64 bsize = cpu_to_be64(size);
	u8 h[SHA256_DIGEST_SIZE];
	int err, n;

	err = p2pkp_sha_alloc(&sha) ?: p2pkp_sha_init(&sha);
	if (!err) {
		p2pkp_sha_update(&sha, (const u8 *)&bsize, sizeof(bsize));
		p2pkp_sha_update(&sha, digest, P2PKP_DIGEST_SIZE);
		p2pkp_sha_final(&sha, h);
		/* %8phN: 16 hex digits */
		n = snprintf(out, len, ".p2pkp-part-%s-%8phN", rx->name, h);
		if ((size_t)n >= len || n > NAME_MAX)
			err = -ENAMETOOLONG;
	}
	p2pkp_sha_free(&sha);
	return err;
}

/*
 * Open the partial file @name in the destination directory (as the
 * caller): a new one (mode 0600 until it is named), or an existing one
 * only if it is a regular file of one link owned by the caller, opened
 * without following a link, that nobody else has open for writing.
 * NULL: no usable partial (anything else at that name is left alone, and
 * the transfer is not resumable).
 */
static struct file *p2pkp_rx_open_partial(struct p2pkp_rx *rx,
					  const char *name)
{
	const int flags = O_RDWR | O_LARGEFILE | O_NOFOLLOW | O_NOCTTY |
			  O_NONBLOCK;
	struct file *f, *pf;
	struct inode *inode;

	f = file_open_root(&rx->dir, name, flags | O_CREAT | O_EXCL, 0600);
	if (!IS_ERR(f))
		goto check;
	if (PTR_ERR(f) != -EEXIST)
		return NULL;
	/* what is there, before opening it for writing */
	pf = file_open_root(&rx->dir, name, O_PATH | O_NOFOLLOW, 0);
	if (IS_ERR(pf))
		return NULL;
	inode = file_inode(pf);
	if (!S_ISREG(inode->i_mode) || inode->i_nlink != 1 ||
	    !vfsuid_eq_kuid(i_uid_into_vfsuid(p2pkp_idmap(pf->f_path.mnt),
					      inode), current_fsuid())) {
		fput(pf);
		return NULL;
	}
	f = file_open_root(&rx->dir, name, flags, 0);
	if (!IS_ERR(f) && file_inode(f) != inode) {
		fput(f);
		f = ERR_PTR(-ESTALE);	/* replaced in between */
	}
	fput(pf);
	if (IS_ERR(f))
		return NULL;
check:
	/*
	 * Ours alone: another read() of the same destination (or anyone)
	 * writing it would truncate or fill it under this one's feet.
	 */
	if (atomic_read(&file_inode(f)->i_writecount) != 1) {
		fput(f);
		return NULL;
	}
	return f;
}

/*
 * A confirmed START with the digest on a socket with P2PKP_RESUME (section
 * 1.7): the transfer goes into its partial file, and resumes after what
 * that file claims, once the engine has read that prefix back
 * (p2pkp_rx_hash_step).  Returns 1 when it does, 0 when the transfer goes
 * on as any other (no usable partial file), or a negative errno.
 */
static int p2pkp_rx_resume(struct p2pkp_rx *rx, const u8 *digest)
{
	char name[sizeof(rx->tmpname)];
	struct file *f;
	u64 have, base;
	u32 rem;
	int err;

	err = p2pkp_rx_partname(rx, rx->size, digest, name, sizeof(name));
	if (err == -ENAMETOOLONG)
		return 0;
	if (err)
		return err;
	if (rx->partial && !strcmp(rx->tmpname, name)) {
		f = rx->file;		/* this read() kept it: again */
	} else {
		f = p2pkp_rx_open_partial(rx, name);
		if (!f)
			return 0;
		/*
		 * The armed file goes, and so does a partial file this
		 * read() kept of another file: one read() keeps one
		 */
		if (rx->named)
			p2pkp_rx_unlink(rx);
		fput(rx->file);
		rx->file = f;
		rx->named = true;
		rx->partial = true;
		strscpy(rx->tmpname, name, sizeof(rx->tmpname));
	}
	rx->dirty = false;
	memcpy(rx->want, digest, P2PKP_DIGEST_SIZE);
	have = p2pkp_rx_get_have(rx, f);
	div_u64_rem(have, rx->chunk, &rem);
	base = have >= rx->size ? rx->size : have - rem;
	/* nothing beyond the prefix: not even bytes past the size */
	if (i_size_read(file_inode(f)) > base) {
		err = vfs_truncate(&f->f_path, base);
		if (err)
			return err;
	}
	rx->base = base;
	rx->count = DIV_ROUND_UP_ULL(rx->size - base, rx->chunk);
	rx->hashed = 0;
	rx->hashing = base > 0;
	rx->ckpt_at = base;
	rx->ckpt_ns = ktime_get_ns();
	p2pkp_rx_set_have(rx, base);	/* a new file claims 0 at once */
	return 1;
}

/*
 * Another transfer than the kept partial file's (another file, or one
 * without the digest): that partial goes (one read() keeps one), and this
 * transfer gets a new hidden file (mode 0600 until named).
 */
static int p2pkp_rx_detach(struct p2pkp_rx *rx)
{
	struct file *f = p2pkp_rx_hidden(rx);

	if (IS_ERR(f))
		return PTR_ERR(f);
	p2pkp_rx_unlink(rx);		/* the kept partial's name */
	fput(rx->file);
	rx->file = f;
	rx->named = true;
	rx->partial = false;
	rx->dirty = false;
	return 0;
}

/*
 * START_ACK to the accepted transfer's confirmed START: ACCEPTED with the
 * base, or, while its prefix is still being read back, without (the
 * sender waits, and hears that the receiver lives).
 */
static void p2pkp_rx_start_ack(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			       u32 echo)
{
	struct p2pkp_start_ack sa = {
		.window = cpu_to_be32(rx->window),
		.epoch = cpu_to_be16(rx->epoch),
	};
	u16 flags = 0;

	if (!rx->hashing) {
		flags = P2PKP_F_ACCEPTED;
		sa.base = cpu_to_be64(rx->base);
	}
	p2pkp_rx_reply(ps, &rx->from, rx->fromlen, P2PKP_T_START_ACK, flags,
		       rx->id, rx->cookie, echo, &sa, sizeof(sa));
}

/*
 * Read back and hash at most P2PKP_HASH_BUDGET bytes of the resumed
 * prefix (one engine round: close and the timers are not held up); when
 * it is all hashed, accept.  A prefix that cannot be read is dropped: the
 * transfer starts over from 0 in the same file.
 */
static void p2pkp_rx_hash_step(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	u64 stop = min_t(u64, rx->base, rx->hashed + P2PKP_HASH_BUDGET);
	u32 n;
	int err = 0;

	while (rx->hashed < stop && !err) {
		n = min_t(u64, P2PKP_CHUNK_MAX, stop - rx->hashed);
		err = p2pkp_read_full(rx->file, rx->chunkbuf, n, rx->hashed);
		if (!err) {
			p2pkp_sha_update(&rx->sha, rx->chunkbuf, n);
			rx->hashed += n;
		}
	}
	if (err) {
		err = p2pkp_sha_init(&rx->sha) ?:
		      vfs_truncate(&rx->file->f_path, 0);
		if (err) {
			p2pkp_rx_fail(ps, rx, err, 0);
			return;
		}
		rx->base = 0;
		rx->count = DIV_ROUND_UP_ULL(rx->size, rx->chunk);
		rx->ckpt_at = 0;
		p2pkp_rx_set_have(rx, 0);
	} else if (rx->hashed < rx->base) {
		return;
	}
	rx->hashing = false;
	rx->last_rx = ktime_get_ns();
	p2pkp_rx_start_ack(ps, rx, 0);	/* accepted now, not an echo */
}

/* Take the transfer of a confirmed START into the armed read(). */
static void p2pkp_rx_accept(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			    const struct p2pkp_hdr *h, u64 size, u32 chunk,
			    u16 epoch, const struct p2pkp_group *grp,
			    const u8 *digest, struct sockaddr_storage *from,
			    int fromlen)
{
	u32 echo = be32_to_cpu(h->ts);
	int err;

	rx->id = be64_to_cpu(h->id);
	rx->cookie = be64_to_cpu(h->cookie);
	rx->from = *from;
	rx->fromlen = fromlen;
	rx->size = size;
	rx->chunk = chunk;
	rx->epoch = epoch;
	rx->base = 0;
	rx->count = DIV_ROUND_UP_ULL(size, chunk);
	rx->window = p2pkp_rx_window(ps, chunk);
	rx->cum = 0;
	rx->unacked = 0;
	rx->gdata = false;
	rx->ooo_acked = false;
	rx->srtt = 0;
	rx->last_ack_ns = 0;
	rx->ack_every = P2PKP_ACK_EVERY;
	rx->ack_mult = 1;
	if (grp) {
		/*
		 * A group's N members ACK every 4 << ceil(log2(N)) chunks
		 * (16..128, at most a quarter window), each with its own
		 * random part, so that their ACKs neither pile up nor
		 * arrive together (section 1.8); the gap scales alike.
		 */
		rx->ack_every = clamp_t(u32, 4U << grp->reserved,
					P2PKP_ACK_EVERY, 128);
		rx->ack_every = min(rx->ack_every, max(rx->window / 4, 1U));
		rx->ack_mult = max(rx->ack_every / P2PKP_ACK_EVERY, 1U);
		rx->ack_every += get_random_u32() % (rx->ack_every / 2 + 1);
	}
	rx->credit = P2PKP_CTL_MAX;	/* one ACK in advance */
	bitmap_zero(rx->ring, P2PKP_WIN);
	rx->wn = 0;
	rx->hashing = false;
	rx->keep_max = U64_MAX;
	rx->start_ns = ktime_get_ns();
	rx->last_rx = rx->start_ns;
	err = p2pkp_sha_init(&rx->sha);
	if (err) {
		p2pkp_rx_fail(ps, rx, err, echo);
		return;
	}
	/* the caller's descriptor: made O_APPEND since (fcntl) */
	if (rx->fd && (READ_ONCE(rx->file->f_flags) & O_APPEND)) {
		p2pkp_rx_fail(ps, rx, -EPERM, echo);
		return;
	}
	/*
	 * A group transfer's new chunks come to the group: join it before
	 * anything is touched (a resumed one, base > 0, takes none of them
	 * but may fall back to base 0 when its prefix cannot be read)
	 */
	p2pkp_rx_leave(ps, rx);
	if (grp) {
		err = p2pkp_rx_join(ps, rx, grp);
		if (err) {	/* refused, the read() keeps waiting */
			p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE,
					     rx->id, rx->cookie, echo, err);
			return;
		}
	}
	err = 0;
	if (digest && rx->resume && !rx->fd)
		err = p2pkp_rx_resume(rx, digest);
	if (!err && rx->partial)
		err = p2pkp_rx_detach(rx);
	if (err < 0) {
		p2pkp_rx_fail(ps, rx, err, echo);
		return;
	}
	if (err)
		p2pkp_stat(ps, P2PKP_ST_RESUMED, 1);
	if (digest && rx->resume && !rx->fd) {
		/*
		 * Room for what the partial file lacks (p2pkp_rx_start left
		 * it to here): refused as there, the read() keeps waiting
		 */
		err = p2pkp_rx_space(rx, rx->size - rx->base);
		if (err) {
			p2pkp_rx_leave(ps, rx);
			p2pkp_stat(ps, P2PKP_ST_REFUSED_SPACE, 1);
			p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE,
					     rx->id, rx->cookie, echo, err);
			return;
		}
	}
	/* an abandoned transfer wrote to it, or the caller's file had data */
	if (rx->dirty || (rx->fd && i_size_read(file_inode(rx->file)))) {
		err = p2pkp_rx_empty(rx);
		if (err) {
			p2pkp_rx_fail(ps, rx, err, echo);
			return;
		}
	}
	rx->state = RS_RECV;
	WRITE_ONCE(ps->state, P2PKP_RECEIVING);
	p2pkp_rx_start_ack(ps, rx, echo);
}

/*
 * A confirmed START of the accepted transfer with a newer epoch (its
 * sender's path MTU dropped): chunk 0 of the new epoch starts after what
 * is verified in order; what was stored beyond comes again.
 */
static void p2pkp_rx_epoch(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			   u32 chunk, u16 epoch)
{
	rx->base = p2pkp_rx_prefix(rx);
	rx->chunk = chunk;
	rx->epoch = epoch;
	rx->count = DIV_ROUND_UP_ULL(rx->size - rx->base, chunk);
	rx->window = p2pkp_rx_window(ps, chunk);
	rx->cum = 0;
	rx->unacked = 0;
	rx->gdata = false;
	rx->ooo_acked = false;
	rx->last_rx = ktime_get_ns();	/* the sender lives */
	bitmap_zero(rx->ring, P2PKP_WIN);
	/* another chunk than the group's: the rest comes by unicast */
	p2pkp_rx_leave(ps, rx);
	rx->ack_every = P2PKP_ACK_EVERY;
	rx->ack_mult = 1;
	p2pkp_stat(ps, P2PKP_ST_EPOCHS, 1);
}

/*
 * START (section 3.2).  Returns true when the datagram must be kept for
 * the next read() (a confirmed START while none is armed).
 */
static bool p2pkp_rx_start(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			   const struct p2pkp_hdr *h,
			   struct sockaddr_storage *from, int fromlen)
{
	const struct p2pkp_start *st = (const void *)(h + 1);
	u16 flags = be16_to_cpu(h->flags);
	u64 id = be64_to_cpu(h->id);
	u64 cookie = be64_to_cpu(h->cookie);
	u32 echo = be32_to_cpu(h->ts);
	u64 size = be64_to_cpu(st->size);
	u32 chunk = be32_to_cpu(st->chunk);
	u16 epoch = be16_to_cpu(st->epoch);
	u64 c = p2pkp_cookie(ps, id, from);
	bool mine = rx && rx->state != RS_IDLE;
	bool same = mine && p2pkp_addr_eq(from, &rx->from);
	bool ours = same && id == rx->id;	/* the accepted transfer */
	bool last = ps->last_valid && id == ps->last_id &&
		    p2pkp_addr_eq(from, &ps->last_addr);
	struct p2pkp_start_ack sa = { .epoch = st->epoch };
	const struct p2pkp_group *grp = NULL;
	const u8 *digest = (const u8 *)(st + 1);
	bool resumable;
	int err;

	if (flags & P2PKP_F_GROUP) {
		grp = (const void *)(st + 1);
		digest += sizeof(*grp);
	}
	if (chunk < P2PKP_CHUNK_MIN || chunk > P2PKP_CHUNK_MAX ||
	    size > P2PKP_MAX_SIZE || (grp && !p2pkp_rx_group_ok(ps, grp, from))) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return false;
	}
	if (!p2pkp_allowed(ps, from)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_SENDER);
		return false;
	}
	/* the accepted and the last transfer keep their cookie for good */
	if (cookie && !(ours && cookie == rx->cookie) &&
	    !(last && cookie == ps->last_cookie) &&
	    !p2pkp_cookie_ok(ps, id, from, cookie)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_COOKIE);
		return false;
	}
	if (ours) {
		/* ours again: our START_ACK was lost, or the transfer ended */
		if (rx->state == RS_LINGER) {
			p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE,
					     id, rx->cookie, echo, rx->result);
			return false;
		}
		if (cookie && epoch != rx->epoch) {
			if (epoch < rx->epoch) {
				p2pkp_drop(ps, P2PKP_ST_DROP_XFER); /* stale */
				return false;
			}
			if (size != rx->size) {
				p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
				return false;
			}
			p2pkp_rx_epoch(ps, rx, chunk, epoch);
		}
		if (cookie) {
			/* while its prefix is read back: it waits, and lives */
			if (rx->hashing)
				rx->last_rx = ktime_get_ns();
			p2pkp_rx_start_ack(ps, rx, echo);
			return false;
		}
		sa.window = cpu_to_be32(rx->window);
		p2pkp_rx_reply(ps, from, fromlen, P2PKP_T_START_ACK, 0, id,
			       rx->cookie, echo, &sa, sizeof(sa));
		return false;
	}
	if (last && (!mine || !same)) {
		/* the last finished transfer: its DONE was lost */
		p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE, id,
				     ps->last_cookie, echo, ps->last_status);
		return false;
	}
	if (mine && !same) {
		/* counted when answered, sent or held back by the limit */
		p2pkp_stat(ps, P2PKP_ST_BUSY_SENT, 1);
		p2pkp_rx_reply(ps, from, fromlen, P2PKP_T_BUSY, 0, id, c, echo,
			       NULL, 0);
		return false;
	}
	if (size > p2pkp_rx_max(rx)) {
		p2pkp_rx_refuse(ps, h, from, fromlen, c, -EFBIG,
				P2PKP_ST_REFUSED_SIZE);
		return false;
	}
	if (grp && READ_ONCE(ps->no_group)) {
		p2pkp_rx_refuse(ps, h, from, fromlen, c, -EOPNOTSUPP,
				P2PKP_ST_REFUSED_GROUP);
		return false;
	}
	if (!cookie) {
		/* no state, no file: hand out the cookie (section 2.3) */
		sa.window = cpu_to_be32(p2pkp_rx_window(ps, chunk));
		p2pkp_stat(ps, P2PKP_ST_COOKIES_SENT, 1);
		p2pkp_rx_reply(ps, from, fromlen, P2PKP_T_START_ACK, 0, id, c,
			       echo, &sa, sizeof(sa));
		return false;
	}
	/* a confirmed START: the sender proved its address */
	if (!rx)
		return true;		/* for the next read() */
	if (same) {
		/* one address:port is one sender socket, which runs one
		 * write() at a time: its old transfer is over (ABORT lost)
		 */
		if (rx->state == RS_LINGER) {
			rx->finished = true;
			return true;	/* for the next read() */
		}
		p2pkp_rx_abandon(ps, rx, P2PKP_ST_XFER_ABORTED);
	}
	/* a resumable one needs room for the rest only: checked at accept */
	resumable = (flags & P2PKP_F_DIGEST) && rx->resume && !rx->fd;
	err = resumable ? 0 : p2pkp_rx_space(rx, size);
	if (err) {
		p2pkp_rx_refuse(ps, h, from, fromlen, c, err,
				P2PKP_ST_REFUSED_SPACE);
		return false;
	}
	p2pkp_rx_accept(ps, rx, h, size, chunk, epoch, grp,
			flags & P2PKP_F_DIGEST ? digest : NULL, from, fromlen);
	return false;
}

static void p2pkp_rx_data(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			  const struct p2pkp_hdr *h, u32 plen)
{
	const struct p2pkp_data *d = (const void *)(h + 1);
	const u8 *payload = (const u8 *)(d + 1);
	u64 idx = get_unaligned_be48(d->index);
	bool ackreq = be16_to_cpu(h->flags) & P2PKP_F_ACKREQ;
	int err;

	/* not this epoch, or before the resumed transfer was accepted */
	if (be16_to_cpu(d->epoch) != rx->epoch || rx->hashing) {
		p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		return;
	}
	if (idx >= rx->count) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	if (plen != p2pkp_rx_len(rx, idx)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_FIELD);
		return;
	}
	rx->last_rx = ktime_get_ns();
	/*
	 * The ACK echoes the latest DATA; a group member, whose ACKs are
	 * thinned, the first since its last ACK (RFC 7323 3.4: the sender's
	 * RTT then includes the wait, and its RTO covers it) or, below,
	 * the latest retransmission that filled a hole (4.3: a timeout is
	 * then not taken for spurious when it was not; a duplicate keeps
	 * the older echo, so a spurious one is undone).
	 */
	if (!rx->group || !rx->unacked)
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
	if (idx >= rx->cum + rx->window) {
		p2pkp_drop(ps, P2PKP_ST_DROP_WINDOW);
		return;
	}
	if (be16_to_cpu(h->flags) & P2PKP_F_GROUP)
		rx->gdata = true;	/* the group feeds it: its ACK gap */
	/* a retransmission that fills a hole: echo it (not a duplicate) */
	if (rx->group && (be16_to_cpu(h->flags) & P2PKP_F_RETRANS))
		rx->echo = be32_to_cpu(h->ts);
	rx->dirty = true;
	if (!p2pkp_rx_gather(ps, rx, payload, plen,
			     rx->base + idx * rx->chunk))
		return;
	p2pkp_stat(ps, P2PKP_ST_BYTES_RECEIVED, plen);
	if (idx == rx->cum) {
		p2pkp_sha_update(&rx->sha, payload, plen);
		rx->ooo_acked = false;	/* the next gap gets its own ACK */
		rx->cum++;
		err = p2pkp_rx_advance(ps, rx);
		if (rx->finished)
			return;
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
	 * (the rest is sent by p2pkp_rx_work when that gap has passed).
	 */
	if (ackreq || rx->cum == rx->count ||
	    (++rx->unacked >= rx->ack_every &&
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
	if (rx->cum < rx->count) {
		rx->echo = echo;
		p2pkp_rx_send_ack(ps, rx);
		return;
	}
	p2pkp_sha_final(&rx->sha, digest);
	/* a partial file is completed only as the file START named */
	if (crypto_memneq(digest, e->digest, sizeof(digest)) ||
	    (rx->partial && crypto_memneq(rx->want, e->digest, sizeof(digest))))
		err = -EBADMSG;
	else
		err = p2pkp_rx_commit(rx);
	/* named now, or wrong: a partial file is not kept (never mixed) */
	if (!err || err == -EBADMSG)
		rx->partial = false;
	p2pkp_rx_remember(ps, rx, err, digest);
	p2pkp_stat(ps, err ? P2PKP_ST_FILES_FAILED : P2PKP_ST_FILES_RECEIVED,
		   1);
	rx->result = err;
	p2pkp_rx_leave(ps, rx);	/* the rest comes by unicast */
	rx->state = RS_LINGER;
	rx->linger_end = ktime_get_ns() + P2PKP_LINGER_MS * NSEC_PER_MSEC;
	ps->linger_end = rx->linger_end;
	p2pkp_rx_send_status(ps, &rx->from, rx->fromlen, P2PKP_T_DONE, rx->id,
			     rx->cookie, echo, err);
	/* poll: the read() can return now (section 1.5), its linger goes on */
	WRITE_ONCE(ps->op_result, err);
	smp_store_release(&ps->op_ready, true);	/* op_result first */
	p2pkp_notify(ps);
}

/*
 * One datagram to a receiver.  @rx is the armed read() or NULL (lingering
 * after one).  Returns true when it must be kept for the next read().
 */
static bool p2pkp_rx_handle(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			    const u8 *dg, int len,
			    struct sockaddr_storage *from, int fromlen)
{
	const struct p2pkp_hdr *h = (const void *)dg;
	u32 tail = 0;
	int type = p2pkp_parse(ps, dg, len, true, &tail);
	bool match, last, group;
	u64 id, cookie;

	if (!type)
		return false;
	if (type != P2PKP_T_DATA) {
		p2pkp_rx_flush(ps, rx);	/* the data before it is written */
		if (rx && rx->finished)	/* that failed the read(): */
			return type == P2PKP_T_START;	/* for the next */
	}
	id = be64_to_cpu(h->id);
	cookie = be64_to_cpu(h->cookie);
	group = type == P2PKP_T_DATA &&
		(be16_to_cpu(h->flags) & P2PKP_F_GROUP);
	/* the group's socket takes nothing but the group's DATA */
	if (ps->seg_group && !group) {
		p2pkp_drop(ps, P2PKP_ST_DROP_COOKIE);
		return false;
	}
	if (group) {
		/*
		 * Only for a group transfer accepted through the cookie
		 * handshake, from its sender's address, with cookie 0
		 * (section 2.3); it starts nothing.
		 */
		if (!rx || !rx->group || rx->state != RS_RECV ||
		    id != rx->id || cookie || rx->base ||
		    !p2pkp_addr_host_eq(from, &rx->from)) {
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
			return false;
		}
		rx->credit = min_t(u32, rx->credit + len, P2PKP_CREDIT_MAX);
		p2pkp_rx_data(ps, rx, h, tail);
		return false;
	}
	if (type == P2PKP_T_START)
		return p2pkp_rx_start(ps, rx, h, from, fromlen);
	match = rx && rx->state != RS_IDLE && id == rx->id;
	if (match && !p2pkp_addr_eq(from, &rx->from)) {
		p2pkp_drop(ps, P2PKP_ST_DROP_PEER);
		return false;
	}
	if (match && cookie != rx->cookie) {
		p2pkp_drop(ps, P2PKP_ST_DROP_COOKIE);
		return false;
	}
	last = !match && ps->last_valid && id == ps->last_id &&
	       p2pkp_addr_eq(from, &ps->last_addr) &&
	       cookie == ps->last_cookie;
	if (match)
		rx->credit = min_t(u32, rx->credit + len, P2PKP_CREDIT_MAX);
	switch (type) {
	case P2PKP_T_DATA:
		if (match && rx->state == RS_RECV)
			p2pkp_rx_data(ps, rx, h, tail);
		else if (match || last)
			p2pkp_drop(ps, P2PKP_ST_DROP_DUP);
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	case P2PKP_T_END:
		if (match && rx->state == RS_RECV)
			p2pkp_rx_end(ps, rx, h);
		else if (match || last)
			p2pkp_rx_send_status(ps, from, fromlen, P2PKP_T_DONE,
					     id, cookie, be32_to_cpu(h->ts),
					     match ? rx->result :
					     ps->last_status);
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	case P2PKP_T_DONE_ACK:
		if (match && rx->state == RS_LINGER)
			rx->finished = true;
		else if (last)
			ps->linger_end = 0;	/* nothing more to repair */
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	case P2PKP_T_ABORT:
		if (match && rx->state == RS_RECV)
			p2pkp_rx_abandon(ps, rx, P2PKP_ST_XFER_ABORTED);
		else
			p2pkp_drop(ps, P2PKP_ST_DROP_XFER);
		break;
	}
	return false;
}

/*
 * Receive into rxbuf: one datagram, or a UDP GRO batch of datagrams of the
 * same size (the last may be shorter) from one source.  Returns how many
 * datagrams, 0 when the receive was dropped, or -errno (-EAGAIN: none).
 */
static int p2pkp_rx_recv_on(struct p2pkp_sock *ps, struct socket *sock)
{
	union {
		struct cmsghdr hdr;
		u8 buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = {
		.msg_control = &ctl,
		.msg_controllen = sizeof(ctl),
		.msg_flags = MSG_DONTWAIT,
	};
	struct kvec vec = { ps->rxbuf, P2PKP_RXBUF_LEN };
	struct sockaddr_storage raw;
	int n, size, segs;

	memset(&raw, 0, sizeof(raw));
	msg.msg_name = &raw;
	msg.msg_namelen = sizeof(raw);
	n = kernel_recvmsg(sock, &msg, &vec, 1, P2PKP_RXBUF_LEN, MSG_DONTWAIT);
	if (n < 0)
		return n;
	size = n;
	if (sizeof(ctl) - msg.msg_controllen >= CMSG_LEN(sizeof(int)) &&
	    ctl.hdr.cmsg_level == SOL_UDP && ctl.hdr.cmsg_type == UDP_GRO) {
		int gso = *(int *)CMSG_DATA(&ctl.hdr);

		if (gso > 0 && gso < n)
			size = gso;
	}
	segs = n ? DIV_ROUND_UP(n, size) : 1;
	p2pkp_stat(ps, P2PKP_ST_DGRAMS_RECEIVED, segs);
	if (segs > 1)
		p2pkp_stat(ps, P2PKP_ST_GRO_RECEIVES, 1);
	/* a batch is less than 64 KiB: only a lone datagram is too long */
	if ((msg.msg_flags & MSG_TRUNC) || size > P2PKP_DGRAM_MAX) {
		p2pkp_drop(ps, P2PKP_ST_DROP_LENGTH);
		return 0;
	}
	if (!n) {
		/* An empty datagram is shorter than any header. */
		p2pkp_drop(ps, P2PKP_ST_DROP_SHORT);
		return 0;
	}
	/* only the meaningful fields: nothing of the stack reaches users */
	ps->seg_fromlen = p2pkp_copy_addr(&ps->seg_from,
					  (struct sockaddr *)&raw);
	if (!ps->seg_fromlen)
		return 0;
	ps->seg_off = 0;
	ps->seg_end = n;
	ps->seg_size = size;
	return segs;
}

/* Datagrams (skbs) waiting in a UDP socket's two receive queues. */
static u32 p2pkp_udp_queued(struct socket *sock)
{
	struct sock *sk = sock->sk;

	return skb_queue_len_lockless(&udp_sk(sk)->reader_queue) +
	       skb_queue_len_lockless(&sk->sk_receive_queue);
}

/*
 * With a group joined on its own socket, both sockets are read, the
 * group's first: a datagram of the bound socket waits for the group
 * datagrams queued when it was seen, not for later ones (a flood of the
 * group's address cannot starve it).  So a chunk sent by unicast (a
 * repair) is not stored before group chunks sent earlier that wait in the
 * other queue, and what the ACKs say keeps the order of sending the
 * sender's loss detection relies on (section 1.8, 3.3).  ps->seg_group
 * says where the datagrams came from.
 */
static int p2pkp_rx_recv(struct p2pkp_sock *ps)
{
	struct p2pkp_rx *rx = ps->rxo;
	struct socket *g = rx && rx->group ? rx->gks.sock : NULL;
	int n;

	ps->seg_group = false;
	if (!g) {
		ps->g_armed = false;
		return p2pkp_rx_recv_on(ps, ps->rx.sock);
	}
	if (!ps->g_armed && p2pkp_udp_queued(ps->rx.sock)) {
		ps->g_armed = true;
		ps->g_left = p2pkp_udp_queued(g);
	}
	if (!ps->g_armed || ps->g_left) {
		n = p2pkp_rx_recv_on(ps, g);
		if (n != -EAGAIN) {
			if (ps->g_armed)
				ps->g_left--;
			ps->seg_group = true;
			return n;
		}
	}
	ps->g_armed = false;
	return p2pkp_rx_recv_on(ps, ps->rx.sock);
}

/*
 * Next datagram for the receiver (@dg in rxbuf, its length returned): the
 * rest of the last receive, else a new one.  0: one was dropped; -errno
 * (-EAGAIN): none.  p2pkp_rx_keep() gives it back.
 */
static int p2pkp_rx_next(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			 const u8 **dg, struct sockaddr_storage *from,
			 int *fromlen)
{
	u32 len;
	int n;

	if (ps->seg_off >= ps->seg_end) {
		p2pkp_rx_flush(ps, rx);	/* before rxbuf is overwritten */
		if (rx && rx->finished)
			return 0;	/* that failed the read() */
		n = p2pkp_rx_recv(ps);
		if (n <= 0)
			return n;
	}
	len = min(ps->seg_size, ps->seg_end - ps->seg_off);
	*dg = ps->rxbuf + ps->seg_off;
	ps->seg_off += len;
	*from = ps->seg_from;
	*fromlen = ps->seg_fromlen;
	return len;
}

/* The datagram p2pkp_rx_next() returned is the next one again. */
static void p2pkp_rx_keep(struct p2pkp_sock *ps, int len)
{
	ps->seg_off -= len;
}

static void p2pkp_rx_free(struct p2pkp_rx *rx)
{
	if (rx->file) {
		if (rx->named && !rx->partial)	/* a partial file stays */
			p2pkp_rx_unlink(rx);
		fput(rx->file);
	}
	path_put(&rx->dir);		/* NULL-safe when never looked up */
	p2pkp_ctx_put(&rx->ctx);
	p2pkp_sha_free(&rx->sha);
	p2pkp_ksock_close(&rx->gks);
	kvfree(rx->chunkbuf);
	kfree(rx->name);
	kfree(rx);
}

/* The armed read() is over. */
static void p2pkp_rx_complete(struct p2pkp_sock *ps)
{
	struct p2pkp_rx *rx = ps->rxo;

	p2pkp_rx_leave(ps, rx);
	ps->rxo = NULL;
	ps->op_size = rx->size;
	ps->op_from = rx->from;
	ps->op_fromlen = rx->fromlen;
	WRITE_ONCE(ps->state, P2PKP_IDLE);
	p2pkp_op_done(ps, rx->result);
	/* the linger answers as this caller (LSM hooks, memcg) */
	p2pkp_ctx_put(&ps->linger_ctx);
	ps->linger_ctx = rx->ctx;
	rx->ctx.cred = NULL;
	rx->ctx.memcg = NULL;
	p2pkp_rx_free(rx);
}

/*
 * Datagrams and timers of an armed read() (as the caller), or of the
 * linger after one (answering a lost DONE again).  Returns true when the
 * read() is over.
 */
static bool p2pkp_rx_run(struct p2pkp_sock *ps, struct p2pkp_rx *rx,
			 u64 *wait, bool *more)
{
	u64 timeout_ns = (u64)READ_ONCE(ps->timeout_ms) * NSEC_PER_MSEC;
	int budget, fromlen = 0, n;
	struct sockaddr_storage from;
	const u8 *dg = NULL;
	u64 now, end;

	for (budget = P2PKP_RX_BUDGET; budget; budget--) {
		if (rx && rx->finished)
			return true;
		n = p2pkp_rx_next(ps, rx, &dg, &from, &fromlen);
		if (n < 0)
			break;
		if (n && p2pkp_rx_handle(ps, rx, dg, n, &from, fromlen)) {
			/* keep it for the next read() and stop draining */
			p2pkp_rx_keep(ps, n);
			ps->linger_end = 0;
			return rx && rx->finished;
		}
	}
	p2pkp_rx_flush(ps, rx);		/* before the engine sleeps */
	*more = !budget;
	if (rx && rx->partial && rx->state == RS_RECV && !rx->finished) {
		if (rx->hashing) {
			p2pkp_rx_hash_step(ps, rx);
			*more |= rx->hashing;	/* a piece per round */
		} else {
			p2pkp_rx_checkpoint(rx);
		}
	}
	now = ktime_get_ns();
	if (!rx) {
		*wait = ps->linger_end > now ? ps->linger_end - now : U64_MAX;
		return false;
	}
	if (rx->finished)
		return true;
	if (rx->state == RS_RECV) {
		/* queue drained: ACK what is pending, paced */
		if (rx->unacked && rx->credit >= p2pkp_ack_cost(ps) &&
		    now - rx->last_ack_ns >= p2pkp_rx_ack_ivl(rx))
			p2pkp_rx_send_ack(ps, rx);
		end = rx->last_rx + timeout_ns;
		if (now >= end) {
			p2pkp_rx_abandon(ps, rx, P2PKP_ST_XFER_ABANDONED);
			*more = true;
			return false;
		}
		if (rx->unacked && rx->credit >= p2pkp_ack_cost(ps))
			end = min(end, rx->last_ack_ns + p2pkp_rx_ack_ivl(rx));
		*wait = end - now;
	} else if (rx->state == RS_LINGER) {
		if (now >= rx->linger_end)
			return true;
		*wait = rx->linger_end - now;
	}
	return false;
}

static void p2pkp_rx_work(struct p2pkp_sock *ps)
{
	struct p2pkp_rx *rx = ps->rxo;
	struct p2pkp_ctx_saved saved;
	struct p2pkp_ctx *ctx;
	u64 wait = U64_MAX;
	bool over, more = false;

	if (!rx && ktime_get_ns() >= ps->linger_end) {
		p2pkp_ctx_put(&ps->linger_ctx);
		return;			/* no read(): datagrams wait */
	}
	ctx = rx ? &rx->ctx : ps->linger_ctx.cred ? &ps->linger_ctx : NULL;
	if (ctx)
		p2pkp_ctx_enter(ctx, &saved);
	over = p2pkp_rx_run(ps, rx, &wait, &more);
	if (rx && over)
		p2pkp_rx_discard(rx);	/* as the caller */
	if (ctx)
		p2pkp_ctx_exit(&saved);
	if (over) {
		p2pkp_rx_complete(ps);
		more = true;		/* linger without a read() */
	}
	if (more)
		p2pkp_kick(ps);
	else
		p2pkp_arm(ps, wait);
}

/* A read()'s state with its buffers (a path or a descriptor is added). */
static struct p2pkp_rx *p2pkp_rx_alloc(void)
{
	struct p2pkp_rx *rx = kzalloc(sizeof(*rx), GFP_KERNEL_ACCOUNT);

	if (!rx)
		return NULL;
	rx->chunkbuf = kvmalloc(P2PKP_CHUNK_MAX, GFP_KERNEL_ACCOUNT);
	if (!rx->chunkbuf || p2pkp_sha_alloc(&rx->sha)) {
		p2pkp_rx_free(rx);
		return NULL;
	}
	return rx;
}

/* The armed read() @rx waits for a START (in the caller's context). */
static void p2pkp_rx_ready(struct p2pkp_sock *ps, struct p2pkp_rx *rx)
{
	rx->fsize = rlimit(RLIMIT_FSIZE);
	rx->fsync = READ_ONCE(ps->fsync);
	rx->resume = READ_ONCE(ps->resume);
	rx->state = RS_IDLE;
	p2pkp_ctx_get(&rx->ctx);
	ps->rxo = rx;
	WRITE_ONCE(ps->state, P2PKP_WAITING);
	p2pkp_kick(ps);
}

/*
 * Arm a read() for @path (in the caller's context): the destination
 * directory is looked up and checked once, and the file is created in it
 * now (p2pkp_rx_newfile), so that nothing a datagram does creates a file.
 */
static int p2pkp_rx_arm(struct p2pkp_sock *ps, char *path)
{
	char *base = strrchr(path, '/') + 1;
	struct p2pkp_rx *rx;
	struct path final;
	char saved;
	int err;

	if (!strcmp(base, ".") || !strcmp(base, ".."))
		return -EINVAL;
	rx = p2pkp_rx_alloc();
	if (!rx)
		return -ENOMEM;
	rx->name = kstrdup(base, GFP_KERNEL_ACCOUNT);
	err = -ENOMEM;
	if (!rx->name)
		goto fail;
	saved = *base;
	*base = '\0';
	err = kern_path(path, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, &rx->dir);
	*base = saved;
	if (err)
		goto fail;
	err = path_permission(&rx->dir, MAY_WRITE | MAY_EXEC);
	if (err)
		goto fail;
	/* what would fail the naming at the end fails now: a directory at
	 * the final name, a name too long, ...
	 */
	err = strlen(rx->name) > NAME_MAX ? -ENAMETOOLONG :
	      kern_path(path, 0, &final);
	if (!err) {
		if (d_is_dir(final.dentry))
			err = -EISDIR;
		path_put(&final);
	} else if (err == -ENOENT) {
		err = 0;
	}
	if (err)
		goto fail;
	err = p2pkp_rx_newfile(rx);
	if (err)
		goto fail;
	p2pkp_rx_ready(ps, rx);
	return 0;
fail:
	p2pkp_rx_free(rx);
	return err;
}

/*
 * Arm a read() into the caller's open file @f (P2PKP_RECV_FD, checked when
 * it was set): emptied when a transfer is accepted, written from offset 0,
 * never named (1.6).
 */
static int p2pkp_rx_arm_file(struct p2pkp_sock *ps, struct file *f)
{
	struct p2pkp_rx *rx;

	rx = p2pkp_rx_alloc();
	if (!rx)
		return -ENOMEM;
	rx->file = get_file(f);
	rx->dir = f->f_path;		/* for its file system's free space */
	path_get(&rx->dir);
	rx->fd = true;
	p2pkp_rx_ready(ps, rx);
	return 0;
}

/* ---- operations: write() and read() as seen by the caller ------------- */

static void p2pkp_op_done(struct p2pkp_sock *ps, int result)
{
	bool waiters = atomic_read(&ps->op_waiters);
	bool told = READ_ONCE(ps->op_ready);

	WRITE_ONCE(ps->op_result, result);
	/* no caller is told: SO_ERROR and POLLERR say it (section 1.5) */
	if (ps->op_async && !waiters && result < 0)
		WRITE_ONCE(ps->sk.sk_err, -result);
	smp_store_release(&ps->op, OP_DONE);	/* op_result first: poll */
	if (waiters || !told)		/* one wake-up per end (EPOLLET) */
		p2pkp_notify(ps);
}

static void p2pkp_op_clear(struct p2pkp_sock *ps)
{
	kfree(ps->op_path);
	ps->op_path = NULL;
	if (ps->op_file)
		fput(ps->op_file);
	ps->op_file = NULL;
	if (ps->op_async)		/* its failure is told or forgotten */
		WRITE_ONCE(ps->sk.sk_err, 0);
	ps->op_async = false;
	WRITE_ONCE(ps->op_ready, false);
	WRITE_ONCE(ps->op, OP_NONE);
}

static bool p2pkp_rx_disarm(struct p2pkp_sock *ps);

/*
 * The operation a write()/read() of @path, or of the open file @f (1.6),
 * belongs to (under ps->lock): 1: the one in progress or done but not yet
 * returned, for the same path or file (the call is a restart or a
 * repetition after EINTR); 0: none, start one; -EBUSY: another one is in
 * progress.  A non-blocking read() that has accepted no transfer yet gives
 * way to a read() of another path or file.
 */
static int p2pkp_op_find(struct p2pkp_sock *ps, const char *path,
			 struct file *f, bool read)
{
	if (ps->op == OP_NONE)
		return 0;
	if (ps->op_read == read && ps->op_file == f &&
	    (f || !strcmp(ps->op_path, path)))
		return 1;
	if (atomic_read(&ps->op_waiters))
		return -EBUSY;		/* its result not taken */
	if (ps->op == OP_RUNNING) {
		if (!read || !ps->op_read || !ps->op_async ||
		    !p2pkp_rx_disarm(ps))
			return -EBUSY;
		return 0;
	}
	p2pkp_op_clear(ps);		/* a result nobody asked for again */
	return 0;
}

/*
 * Make @path (kmalloc'ed; NULL or "" for a file) or the open file @f (its
 * reference is taken over) the operation just started, return its number.
 */
static u32 p2pkp_op_begin(struct p2pkp_sock *ps, char *path, struct file *f,
			  bool read)
{
	ps->op_path = path;
	ps->op_file = f;
	ps->op_seq++;
	WRITE_ONCE(ps->op_result, 0);
	WRITE_ONCE(ps->op_read, read);
	WRITE_ONCE(ps->op_ready, false);
	ps->op_async = false;
	WRITE_ONCE(ps->op, OP_RUNNING);
	return ps->op_seq;
}

/*
 * Wait (called with ps->lock, returns with it unless -EINTR) for operation
 * @seq to end, at most *@timeo jiffies (SO_SNDTIMEO/SO_RCVTIMEO; what is
 * left is stored back): 0, -EAGAIN when the time is up.  A signal, a stop
 * or the freezer returns -ERESTARTSYS at once and the operation goes on:
 * the call is restarted (no handler, SA_RESTART, after a stop or a
 * freeze) or returns EINTR, and the same call repeated finds the
 * operation again.  Taking the lock back waits for the engine's round (a
 * file's fsync, at most); only a fatal signal ends that wait (-EINTR, the
 * process is dying).
 */
static int p2pkp_op_wait(struct p2pkp_sock *ps, u32 seq, long *timeo)
{
	long left;

	atomic_inc(&ps->op_waiters);
	mutex_unlock(&ps->lock);
	left = wait_event_interruptible_timeout(*sk_sleep(&ps->sk),
						READ_ONCE(ps->op_seq) != seq ||
						READ_ONCE(ps->op) != OP_RUNNING,
						*timeo);
	if (mutex_lock_killable(&ps->lock)) {
		atomic_dec(&ps->op_waiters);
		return -EINTR;
	}
	atomic_dec(&ps->op_waiters);
	if (left < 0)
		return -ERESTARTSYS;
	*timeo = left;
	return left ? 0 : -EAGAIN;
}

/* The result of operation @seq (under ps->lock); it is returned once. */
static int p2pkp_op_collect(struct p2pkp_sock *ps, u32 seq)
{
	int result;

	if (ps->op_seq != seq)
		return -EBUSY;		/* another operation began since */
	result = ps->op_result;
	if (ps->op == OP_DONE)
		p2pkp_op_clear(ps);
	return result;
}

/*
 * A signal, a stop or a timeout (with a timeout set, a signal is EINTR:
 * a restart would wait the whole time again), as sockets do.
 */
static int p2pkp_intr_errno(int err, long timeo)
{
	return err == -ERESTARTSYS ? sock_intr_errno(timeo) : err;
}

/*
 * The file a sendmsg() hands over (1.6): one SOL_SOCKET/SCM_RIGHTS control
 * message with one descriptor, of a regular file open for reading at any
 * offset (not O_DIRECT: the engine's buffers are not aligned for it).
 * NULL without control messages, an ERR_PTR for anything else.
 */
static struct file *p2pkp_msg_file(struct msghdr *msg)
{
	const fmode_t need = FMODE_PREAD | FMODE_CAN_READ;
	struct file *f = NULL;
	struct cmsghdr *cmsg;
	int fd, err;

	if (!msg->msg_controllen)
		return NULL;
	if (msg->msg_control_is_user)	/* never for sendmsg() */
		return ERR_PTR(-EINVAL);
	for_each_cmsghdr(cmsg, msg) {
		if (f || !CMSG_OK(msg, cmsg) ||
		    cmsg->cmsg_level != SOL_SOCKET ||
		    cmsg->cmsg_type != SCM_RIGHTS ||
		    cmsg->cmsg_len != CMSG_LEN(sizeof(fd))) {
			if (f)
				fput(f);
			return ERR_PTR(-EINVAL);
		}
		memcpy(&fd, CMSG_DATA(cmsg), sizeof(fd));
		f = fget(fd);		/* no O_PATH descriptors */
		if (!f)
			return ERR_PTR(-EBADF);
	}
	if (!f)
		return ERR_PTR(-EINVAL);
	err = !(f->f_mode & FMODE_READ) ? -EBADF :
	      !S_ISREG(file_inode(f)->i_mode) ? -EINVAL :
	      (f->f_mode & need) != need ? -EINVAL :
	      f->f_flags & O_DIRECT ? -EINVAL : 0;
	if (err) {
		fput(f);
		return ERR_PTR(err);
	}
	return f;
}

static int p2pkp_sendmsg(struct socket *sock, struct msghdr *msg, size_t len)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	size_t n = min_t(size_t, len, P2PKP_PATH_MAX + 1);
	long timeo0 = sock_sndtimeo(sock->sk, msg->msg_flags & MSG_DONTWAIT);
	long timeo = timeo0;
	bool started = false;
	struct file *f, *file;		/* by path; by descriptor */
	char *path = NULL;
	struct path pp;
	int err;
	u32 seq;

	if (msg->msg_flags & MSG_OOB)
		return -EOPNOTSUPP;
	file = p2pkp_msg_file(msg);
	if (IS_ERR(file))
		return PTR_ERR(file);
	if (file) {			/* no path: the payload must be empty */
		err = -EINVAL;
		if (len)
			goto out;
		goto lock;
	}
	if (!len)
		return -EINVAL;
	path = kmalloc(n + 1, GFP_KERNEL_ACCOUNT);
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
lock:
	if (mutex_lock_interruptible(&ps->lock)) {
		err = -ERESTARTSYS;
		goto out;
	}
	if (!ps->npeers) {
		err = -EDESTADDRREQ;
		goto unlock;
	}
	err = p2pkp_op_find(ps, path, file, false);
	if (err < 0)
		goto unlock;
	if (!err && file) {
		err = p2pkp_tx_begin(ps, file);
		if (err)
			goto unlock;
		p2pkp_op_begin(ps, path, file, false);
		path = NULL;
		file = NULL;		/* its reference is the operation's */
		started = true;
	} else if (!err) {
		/* no open() of FIFOs or devices: it could block or have effects */
		err = kern_path(path, LOOKUP_FOLLOW, &pp);
		if (err)
			goto unlock;
		if (!d_is_reg(pp.dentry))
			err = -EINVAL;
		path_put(&pp);
		if (err)
			goto unlock;
		/* O_NONBLOCK: what was swapped in since cannot block open() */
		f = filp_open(path, O_RDONLY | O_LARGEFILE | O_NONBLOCK |
			      O_NOCTTY, 0);
		if (IS_ERR(f)) {
			err = PTR_ERR(f);
			goto unlock;
		}
		if (!S_ISREG(file_inode(f)->i_mode))
			err = -EINVAL;
		else
			err = p2pkp_tx_begin(ps, f);
		fput(f);
		if (err)
			goto unlock;
		p2pkp_op_begin(ps, path, NULL, false);
		path = NULL;
		started = true;
	}
	seq = ps->op_seq;
	if (!timeo) {
		if (ps->op != OP_RUNNING) {
			err = p2pkp_op_collect(ps, seq);
			goto unlock;
		}
		/* non-blocking: the transfer runs without the caller */
		ps->op_async = true;
		err = started ? -EINPROGRESS : -EALREADY;
		goto unlock;
	}
	ps->op_async = false;		/* a caller waits for it again */
	err = p2pkp_op_wait(ps, seq, &timeo);
	if (err == -EINTR)
		goto out;
	if (!err || (ps->op_seq == seq && ps->op == OP_DONE))
		err = p2pkp_op_collect(ps, seq);
	else if (ps->op_seq == seq && ps->op == OP_RUNNING)
		ps->op_async = true;	/* signal or timeout: it goes on */
unlock:
	mutex_unlock(&ps->lock);
out:
	kfree(path);
	if (file)
		fput(file);
	if (err)
		return p2pkp_intr_errno(err, timeo0);
	return (int)min_t(size_t, len, INT_MAX);
}

/*
 * The destination path is in the caller's buffer: read, not written.
 * Returns 1 for "" (the P2PKP_RECV_FD descriptor, 1.6).
 */
static int p2pkp_user_path(struct msghdr *msg, size_t len, char *path)
{
	struct iov_iter *it = &msg->msg_iter;
	const char __user *up;
	long n;

	if (iter_is_ubuf(it)) {
		up = it->ubuf;
	} else if (iter_is_iovec(it) && it->nr_segs) {
		up = p2pkp_iter_iov(it)->iov_base;
		len = min_t(size_t, len, p2pkp_iter_iov(it)->iov_len);
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
	if (!n)
		return 1;
	if (path[0] != '/' || path[n - 1] == '/')
		return -EINVAL;
	return 0;
}

/*
 * Disarm the armed read() if it has accepted no transfer (under ps->lock):
 * nothing is lost, the temporary file goes.  False if one is under way.
 */
static bool p2pkp_rx_disarm(struct p2pkp_sock *ps)
{
	struct p2pkp_rx *rx = ps->rxo;
	struct p2pkp_ctx_saved saved;

	if (!rx || rx->state != RS_IDLE)
		return false;
	ps->rxo = NULL;
	WRITE_ONCE(ps->state, P2PKP_IDLE);
	p2pkp_ctx_enter(&rx->ctx, &saved);	/* as the caller, like release */
	p2pkp_rx_discard(rx);
	p2pkp_ctx_exit(&saved);
	/* a read(""): its descriptor is set again, as if it had not begun */
	if (rx->fd && !ps->recv_file) {
		WRITE_ONCE(ps->recv_file, ps->op_file);
		ps->op_file = NULL;
	}
	p2pkp_rx_free(rx);
	p2pkp_op_clear(ps);
	p2pkp_notify(ps);		/* POLLOUT again */
	return true;
}

/*
 * read() @seq returns before its end (under ps->lock) with @err: a signal
 * (-ERESTARTSYS), the SO_RCVTIMEO timeout (-EAGAIN) or O_NONBLOCK
 * (-EAGAIN, @keep).  With the file already in place (the linger of 3.2) it
 * is done: the size, never EINTR (item 9 of issue 12).  With nothing
 * accepted yet, a signal or a timeout disarms it (nothing is lost:
 * restarted or not, it is as if the call had not begun); a non-blocking
 * call keeps it armed.  Otherwise the transfer goes on without the caller.
 */
static int p2pkp_rx_unfinished(struct p2pkp_sock *ps, u32 seq, int err,
			       bool keep)
{
	struct p2pkp_rx *rx = ps->rxo;

	if (ps->op_seq != seq)
		return err;
	if (ps->op == OP_DONE)		/* it ended meanwhile */
		return p2pkp_op_collect(ps, seq);
	if (ps->op != OP_RUNNING || !rx)
		return err;
	if (rx->state == RS_LINGER) {
		p2pkp_rx_complete(ps);
		return p2pkp_op_collect(ps, seq);
	}
	if (keep || atomic_read(&ps->op_waiters) || !p2pkp_rx_disarm(ps))
		ps->op_async = true;	/* going on without this caller */
	return err;
}

static int p2pkp_recvmsg(struct socket *sock, struct msghdr *msg, size_t len,
			 int flags)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	long timeo0 = sock_rcvtimeo(sock->sk, flags & MSG_DONTWAIT);
	long timeo = timeo0;
	struct file *f = NULL;
	bool by_fd;
	char *path;
	int err;
	u32 seq;

	if (flags & MSG_OOB)
		return -EOPNOTSUPP;
	path = kmalloc(P2PKP_PATH_MAX + 1, GFP_KERNEL_ACCOUNT);
	if (!path)
		return -ENOMEM;
	err = p2pkp_user_path(msg, len, path);
	if (err < 0)
		goto out;
	by_fd = err;
	if (mutex_lock_interruptible(&ps->lock)) {
		err = -ERESTARTSYS;
		goto out;
	}
	if (!ps->bound) {
		err = -EDESTADDRREQ;
		goto unlock;
	}
	if (by_fd) {
		/* the descriptor set, or the one whose read() this repeats */
		f = ps->recv_file;
		if (!f && ps->op != OP_NONE && ps->op_read)
			f = ps->op_file;
		if (!f) {
			err = -EINVAL;
			goto unlock;
		}
	}
	err = p2pkp_op_find(ps, path, f, true);
	if (err < 0)
		goto unlock;
	if (!err) {
		err = f ? p2pkp_rx_arm_file(ps, f) : p2pkp_rx_arm(ps, path);
		if (err)
			goto unlock;
		if (f)			/* one file per descriptor set */
			WRITE_ONCE(ps->recv_file, NULL);
		p2pkp_op_begin(ps, path, f, true);
		path = NULL;
	}
	seq = ps->op_seq;
	if (!timeo) {			/* non-blocking: done, or EAGAIN */
		err = p2pkp_rx_unfinished(ps, seq, -EAGAIN, true);
		goto result;
	}
	ps->op_async = false;		/* a caller waits for it again */
	err = p2pkp_op_wait(ps, seq, &timeo);
	if (err == -EINTR)
		goto out;
	if (err)
		err = p2pkp_rx_unfinished(ps, seq, err, false);
	else
		err = p2pkp_op_collect(ps, seq);
result:
	if (!err) {
		if (msg->msg_name) {
			memcpy(msg->msg_name, &ps->op_from, ps->op_fromlen);
			msg->msg_namelen = ps->op_fromlen;
		}
		err = (int)min_t(u64, ps->op_size, INT_MAX);
	}
unlock:
	mutex_unlock(&ps->lock);
out:
	kfree(path);
	return p2pkp_intr_errno(err, timeo0);
}

/* ---- socket calls -------------------------------------------------- */

static void p2pkp_free_peers(struct p2pkp_peer **peers, int n)
{
	while (n--) {
		p2pkp_ksock_close(&peers[n]->ks);
		kvfree(peers[n]);
	}
}

/* Forget the peers (sender) and the allowed senders (receiver). */
static void p2pkp_clear_peers(struct p2pkp_sock *ps)
{
	struct p2pkp_peer *old[P2PKP_MAX_PEERS];
	struct p2pkp_allow *allow;
	int n;

	spin_lock_bh(&ps->cfg_lock);
	n = ps->npeers;
	memcpy(old, ps->peers, n * sizeof(old[0]));
	ps->npeers = 0;
	allow = ps->allow;
	ps->allow = NULL;
	ps->nallow = 0;
	spin_unlock_bh(&ps->cfg_lock);
	p2pkp_free_peers(old, n);
	kfree(allow);
}

/* connect() on a bound socket: take STARTs from @addr (port 0: any). */
static int p2pkp_allow_add(struct p2pkp_sock *ps,
			   const struct sockaddr_storage *addr)
{
	struct p2pkp_allow e;
	int i;

	p2pkp_allow_of(&e, addr);
	for (i = 0; i < ps->nallow; i++)
		if (!memcmp(&ps->allow[i], &e, sizeof(e)))
			return -EEXIST;
	if (ps->nallow >= P2PKP_MAX_PEERS)
		return -ENOSPC;
	if (!ps->allow) {
		struct p2pkp_allow *a = kcalloc(P2PKP_MAX_PEERS, sizeof(*a),
						GFP_KERNEL_ACCOUNT);

		if (!a)
			return -ENOMEM;
		spin_lock_bh(&ps->cfg_lock);
		ps->allow = a;
		spin_unlock_bh(&ps->cfg_lock);
	}
	spin_lock_bh(&ps->cfg_lock);
	ps->allow[ps->nallow++] = e;
	spin_unlock_bh(&ps->cfg_lock);
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
			return -ERESTARTSYS;
		err = ps->op == OP_RUNNING ? -EBUSY : 0;
		if (!err)
			p2pkp_clear_peers(ps);
		mutex_unlock(&ps->lock);
		return err;
	}
	len = p2pkp_check_addr(uaddr, alen);
	if (len < 0)
		return len;
	len = p2pkp_copy_addr(&addr, uaddr);

	if (mutex_lock_interruptible(&ps->lock))
		return -ERESTARTSYS;
	if (ps->bound) {
		err = p2pkp_allow_add(ps, &addr);
		goto unlock;
	}
	err = -EINVAL;
	if (!p2pkp_addr_port(&addr))
		goto unlock;
	err = -EEXIST;
	for (i = 0; i < ps->npeers; i++)
		if (p2pkp_addr_eq(&addr, &ps->peers[i]->addr))
			goto unlock;
	err = -ENOSPC;
	if (ps->npeers >= P2PKP_MAX_PEERS)
		goto unlock;
	err = -ENOMEM;
	p = kvzalloc(sizeof(*p), GFP_KERNEL_ACCOUNT);
	if (!p)
		goto unlock;
	p->addr = addr;
	p->addrlen = len;
	err = p2pkp_ksock_open(ps, &p->ks, addr.ss_family, P2PKP_PEER_RCVBUF,
			       P2PKP_SNDBUF);
	if (err < 0)
		goto free;
	err = p2pkp_set_frag(p->ks.sock, false) ?:
	      kernel_connect(p->ks.sock, (struct sockaddr *)&addr, len, 0);
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
	int err, len, rcvbuf;

	len = p2pkp_check_addr(uaddr, alen);
	if (len < 0)
		return len;
	len = p2pkp_copy_addr(&addr, uaddr);

	if (mutex_lock_interruptible(&ps->lock))
		return -ERESTARTSYS;
	err = -EINVAL;
	if (ps->bound)
		goto unlock;
	err = -EISCONN;
	if (ps->npeers)
		goto unlock;
	err = -ENOMEM;
	buf = kvmalloc(P2PKP_RXBUF_LEN, GFP_KERNEL_ACCOUNT);
	if (!buf)
		goto unlock;
	rcvbuf = p2pkp_ksock_open(ps, &ps->rx, addr.ss_family, P2PKP_RCVBUF,
				  P2PKP_SNDBUF);
	if (rcvbuf < 0) {
		err = rcvbuf;
		goto free;
	}
	err = p2pkp_set_gro(ps->rx.sock, READ_ONCE(rx_gro)) ?:
	      kernel_bind(ps->rx.sock, (struct sockaddr *)&addr, len);
	if (err)
		goto close;
	err = kernel_getsockname(ps->rx.sock, (struct sockaddr *)&addr);
	if (err < 0)
		goto close;
	get_random_bytes(&ps->ckey, sizeof(ps->ckey));
	spin_lock_bh(&ps->cfg_lock);
	ps->local_len = p2pkp_copy_addr(&ps->local, (struct sockaddr *)&addr);
	ps->rxbuf = buf;
	ps->rcvbuf = rcvbuf;
	ps->bound = true;
	spin_unlock_bh(&ps->cfg_lock);
	mutex_unlock(&ps->lock);
	return 0;
close:
	p2pkp_ksock_close(&ps->rx);
free:
	kvfree(buf);
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

/* P2PKP_KEY: a 32-byte key for hmac(sha256); optlen 0 removes it. */
static int p2pkp_set_key(struct p2pkp_sock *ps, sockptr_t optval,
			 unsigned int optlen)
{
	struct crypto_shash *tfm = NULL, *old;
	u8 key[P2PKP_KEY_SIZE];
	int err;

	if (optlen && optlen != P2PKP_KEY_SIZE)
		return -EINVAL;
	if (optlen) {
		if (copy_from_sockptr(key, optval, sizeof(key)))
			return -EFAULT;
		tfm = crypto_alloc_shash("hmac(sha256)", 0, 0);
		if (IS_ERR(tfm)) {
			memzero_explicit(key, sizeof(key));
			return PTR_ERR(tfm);
		}
		err = crypto_shash_setkey(tfm, key, sizeof(key));
		memzero_explicit(key, sizeof(key));
		if (err) {
			crypto_free_shash(tfm);
			return err;
		}
	}
	if (mutex_lock_interruptible(&ps->lock)) {
		crypto_free_shash(tfm);		/* NULL-safe */
		return -ERESTARTSYS;
	}
	if (ps->op == OP_RUNNING) {
		mutex_unlock(&ps->lock);
		crypto_free_shash(tfm);
		return -EBUSY;
	}
	old = ps->mac;
	WRITE_ONCE(ps->mac, tfm);
	mutex_unlock(&ps->lock);
	crypto_free_shash(old);		/* wipes the keyed state */
	return 0;
}

/*
 * Can the engine receive into the caller's open file @f (1.6)?  A regular
 * file open for reading (the digest is computed from what was written) and
 * writing at any offset, not append-only, that the caller may truncate
 * (the file is emptied first), on a file system with fsync: not a file of
 * procfs, sysfs, debugfs and the like, whose writes have effects (and
 * would be checked against the engine's task, not the caller's).  No
 * O_DIRECT: the engine's buffers are not aligned for it.
 */
static int p2pkp_recv_file_ok(struct file *f)
{
	const fmode_t need = FMODE_READ | FMODE_WRITE | FMODE_PREAD |
			     FMODE_PWRITE | FMODE_CAN_READ | FMODE_CAN_WRITE;
	struct inode *inode = file_inode(f);

	if ((f->f_mode & (FMODE_READ | FMODE_WRITE)) !=
	    (FMODE_READ | FMODE_WRITE))
		return -EBADF;
	if (!S_ISREG(inode->i_mode) || (f->f_mode & need) != need ||
	    !f->f_op->fsync || (f->f_flags & O_DIRECT))
		return -EINVAL;
	if ((f->f_flags & O_APPEND) || IS_APPEND(inode))
		return -EPERM;
	return inode_permission(p2pkp_idmap(f->f_path.mnt), inode, MAY_WRITE);
}

/*
 * P2PKP_RECV_FD: the file the next read("") writes into (1.6), or none
 * (-1).
 */
static int p2pkp_set_recv_fd(struct p2pkp_sock *ps, sockptr_t optval,
			     unsigned int optlen)
{
	struct file *f = NULL, *old;
	int fd, err = 0;

	if (optlen < sizeof(fd))
		return -EINVAL;
	if (copy_from_sockptr(&fd, optval, sizeof(fd)))
		return -EFAULT;
	if (fd != -1) {
		f = fget(fd);
		if (!f)
			return -EBADF;
		err = p2pkp_recv_file_ok(f);
		if (err) {
			fput(f);
			return err;
		}
	}
	if (mutex_lock_interruptible(&ps->lock)) {
		if (f)
			fput(f);
		return -ERESTARTSYS;
	}
	old = ps->recv_file;
	WRITE_ONCE(ps->recv_file, f);
	mutex_unlock(&ps->lock);
	if (old)
		fput(old);
	return 0;
}

static int p2pkp_set_group(struct p2pkp_sock *ps, sockptr_t optval,
			   unsigned int optlen)
{
	struct sockaddr_storage g;
	int len = 0, err = 0;

	memset(&g, 0, sizeof(g));
	if (optlen) {
		if (optlen < sizeof(sa_family_t))
			return -EINVAL;
		if (copy_from_sockptr(&g, optval,
				      min_t(unsigned int, optlen, sizeof(g))))
			return -EFAULT;
	}
	if (optlen && g.ss_family != AF_UNSPEC) {
		if (g.ss_family == AF_INET) {
			struct sockaddr_in *a = (void *)&g;

			len = sizeof(*a);
			if (optlen < len || !a->sin_port ||
			    !p2pkp_group_addr_ok(AF_INET,
						 (u8 *)&a->sin_addr))
				return -EINVAL;
		} else if (g.ss_family == AF_INET6 &&
			   IS_ENABLED(CONFIG_IPV6)) {
			struct sockaddr_in6 *a = (void *)&g;

			len = sizeof(*a);
			if (optlen < len || !a->sin6_port ||
			    !p2pkp_group_addr_ok(AF_INET6,
						 a->sin6_addr.s6_addr))
				return -EINVAL;
			a->sin6_flowinfo = 0;
			a->sin6_scope_id = 0;
		} else {
			return -EAFNOSUPPORT;
		}
		memset((u8 *)&g + len, 0, sizeof(g) - len);
	}
	if (mutex_lock_interruptible(&ps->lock))
		return -ERESTARTSYS;
	if (ps->op == OP_RUNNING && !ps->op_read) {
		err = -EBUSY;	/* the write() in progress keeps its own */
	} else {
		ps->group = g;
		ps->group_len = len;
	}
	mutex_unlock(&ps->lock);
	return err;
}

static int p2pkp_setsockopt(struct socket *sock, int level, int optname,
			    sockptr_t optval, unsigned int optlen)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	u64 rate;
	u32 v;

	if (level != SOL_P2PKP)
		return -ENOPROTOOPT;
	switch (optname) {	/* the options of one u32 (or int) */
	case P2PKP_PEER_TIMEOUT:
	case P2PKP_FSYNC:
	case P2PKP_RESUME:
	case P2PKP_CHUNK:
	case P2PKP_MCAST_TTL:
	case P2PKP_MCAST_IF:
	case P2PKP_GROUP_LAG:
	case P2PKP_NO_GROUP:
		if (optlen < sizeof(v))
			return -EINVAL;
		if (copy_from_sockptr(&v, optval, sizeof(v)))
			return -EFAULT;
	}
	switch (optname) {
	case P2PKP_PEER_TIMEOUT:
		if (v < P2PKP_TIMEOUT_MIN || v > P2PKP_TIMEOUT_MAX)
			return -EINVAL;
		WRITE_ONCE(ps->timeout_ms, v);
		return 0;
	case P2PKP_RATE:
		if (optlen < sizeof(rate))
			return -EINVAL;
		if (copy_from_sockptr(&rate, optval, sizeof(rate)))
			return -EFAULT;
		if (rate > P2PKP_RATE_MAX)
			return -EINVAL;
		WRITE_ONCE(ps->rate, rate);
		return 0;
	case P2PKP_KEY:
		return p2pkp_set_key(ps, optval, optlen);
	case P2PKP_FSYNC:
		WRITE_ONCE(ps->fsync, !!v);
		return 0;
	case P2PKP_RESUME:
		WRITE_ONCE(ps->resume, !!v);
		return 0;
	case P2PKP_RECV_FD:
		return p2pkp_set_recv_fd(ps, optval, optlen);
	case P2PKP_CHUNK:
		if (v && (v < P2PKP_CHUNK_MIN || v > P2PKP_CHUNK_MAX))
			return -EINVAL;
		WRITE_ONCE(ps->chunk, v);
		return 0;
	case P2PKP_GROUP:
		return p2pkp_set_group(ps, optval, optlen);
	case P2PKP_MCAST_TTL:
		if (v < 1 || v > 255)
			return -EINVAL;
		WRITE_ONCE(ps->mcast_ttl, v);
		return 0;
	case P2PKP_MCAST_IF:
		if ((int)v < 0)
			return -EINVAL;
		WRITE_ONCE(ps->mcast_if, v);
		return 0;
	case P2PKP_GROUP_LAG:
		WRITE_ONCE(ps->group_lag_ms, v);
		return 0;
	case P2PKP_NO_GROUP:
		WRITE_ONCE(ps->no_group, !!v);
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
		return -ERESTARTSYS;
	n = min_t(int, ps->npeers, len / (int)sizeof(r));
	for (i = 0; i < n; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		memset(&r, 0, sizeof(r));
		memcpy(&r.addr, &p->addr, sizeof(r.addr));
		r.state = p->state == PS_DONE ? P2PKP_PEER_DONE :
			  p->state == PS_FAILED ? P2PKP_PEER_FAILED :
			  P2PKP_PEER_IDLE;
		r.status = p->status;
		r.bytes_acked = p2pkp_peer_acked(ps, p);
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

static int p2pkp_put_opt(char __user *optval, int __user *optlen, int len,
			 const void *v, int size)
{
	if (len < size)
		return -EINVAL;
	if (copy_to_user(optval, v, size) || put_user(size, optlen))
		return -EFAULT;
	return 0;
}

static int p2pkp_getsockopt(struct socket *sock, int level, int optname,
			    char __user *optval, int __user *optlen)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	struct p2pkp_transfer_info info;
	u64 rate;
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
		v = READ_ONCE(ps->timeout_ms);
		break;
	case P2PKP_RATE:
		rate = READ_ONCE(ps->rate);
		return p2pkp_put_opt(optval, optlen, len, &rate, sizeof(rate));
	case P2PKP_FSYNC:
		v = READ_ONCE(ps->fsync);
		break;
	case P2PKP_RESUME:
		v = READ_ONCE(ps->resume);
		break;
	case P2PKP_RECV_FD:		/* 1: set and not taken by a read() */
		v = !!READ_ONCE(ps->recv_file);
		break;
	case P2PKP_CHUNK:
		v = READ_ONCE(ps->chunk);
		break;
	case P2PKP_GROUP: {
		struct sockaddr_storage g;
		int glen;

		if (mutex_lock_interruptible(&ps->lock))
			return -ERESTARTSYS;
		g = ps->group;
		glen = ps->group_len ?: (int)sizeof(sa_family_t);
		mutex_unlock(&ps->lock);
		return p2pkp_put_opt(optval, optlen, len, &g, glen);
	}
	case P2PKP_MCAST_TTL:
		v = READ_ONCE(ps->mcast_ttl);
		break;
	case P2PKP_MCAST_IF:
		v = READ_ONCE(ps->mcast_if);
		break;
	case P2PKP_GROUP_LAG:
		v = READ_ONCE(ps->group_lag_ms);
		break;
	case P2PKP_NO_GROUP:
		v = READ_ONCE(ps->no_group);
		break;
	case P2PKP_KEY:
		return -EPERM;		/* never readable */
	case P2PKP_PEER_RESULTS:
		return p2pkp_get_results(ps, optval, len, optlen);
	case P2PKP_LAST_TRANSFER:
		if (mutex_lock_interruptible(&ps->lock))
			return -ERESTARTSYS;
		info = ps->info;
		mutex_unlock(&ps->lock);
		return p2pkp_put_opt(optval, optlen, len, &info, sizeof(info));
	default:
		return -ENOPROTOOPT;
	}
	return p2pkp_put_opt(optval, optlen, len, &v, sizeof(v));
}

/*
 * POLLOUT: no write()/read() in progress (a write() would start one);
 * POLLIN: a read()'s file is in place (it may still linger), its result
 * not taken;
 * POLLERR: the last operation failed (its result not taken) or SO_ERROR
 * is set.  Woken by p2pkp_notify() when an operation ends.
 */
static __poll_t p2pkp_poll(struct file *file, struct socket *sock,
			   poll_table *wait)
{
	struct p2pkp_sock *ps = p2pkp_sk(sock->sk);
	__poll_t mask = 0;
	bool ready;
	int op;

	sock_poll_wait(file, sock, wait);
	/* pairs with p2pkp_op_done(): its op_result is seen with OP_DONE */
	op = smp_load_acquire(&ps->op);
	if (op != OP_RUNNING)
		mask |= EPOLLOUT | EPOLLWRNORM;
	/* pairs with p2pkp_rx_end(): its op_result is seen with op_ready */
	ready = op == OP_RUNNING && smp_load_acquire(&ps->op_ready);
	if (op == OP_DONE || ready) {
		if (READ_ONCE(ps->op_result) < 0)
			mask |= EPOLLERR;
		else if (READ_ONCE(ps->op_read))
			mask |= EPOLLIN | EPOLLRDNORM;
	}
	if (READ_ONCE(sock->sk->sk_err))
		mask |= EPOLLERR;
	return mask;
}

/*
 * The engine of @ps stops for good (release, once no UDP callback can kick
 * it): a work round sees @dead and neither arms the timer nor kicks.
 */
static void p2pkp_stop_engine(struct p2pkp_sock *ps)
{
	hrtimer_cancel(&ps->timer);
	cancel_work_sync(&ps->work);
}

static int p2pkp_release(struct socket *sock)
{
	struct sock *sk = sock->sk;
	struct p2pkp_net *pn;
	struct p2pkp_sock *ps;
	struct p2pkp_ctx_saved saved;
	struct p2pkp_tx *tx;
	struct p2pkp_rx *rx;

	if (!sk)
		return 0;
	ps = p2pkp_sk(sk);
	pn = net_generic(sock_net(sk), p2pkp_net_id);

	mutex_lock(&ps->lock);
	WRITE_ONCE(ps->dead, true);
	tx = ps->tx;
	if (tx) {			/* cancel the write: ABORT to peers */
		p2pkp_ctx_enter(&tx->ctx, &saved);
		p2pkp_tx_finish(ps, -ECANCELED);
		p2pkp_ctx_exit(&saved);
		p2pkp_tx_free(tx);
	}
	rx = ps->rxo;
	if (rx) {			/* cancel the read: ABORT to its sender */
		p2pkp_ctx_enter(&rx->ctx, &saved);
		if (rx->state == RS_RECV)
			p2pkp_rx_send_status(ps, &rx->from, rx->fromlen,
					     P2PKP_T_ABORT, rx->id, rx->cookie,
					     0, ECANCELED);
		p2pkp_rx_discard(rx);
		p2pkp_ctx_exit(&saved);
		ps->rxo = NULL;
		p2pkp_rx_free(rx);
	}
	p2pkp_op_clear(ps);
	p2pkp_ctx_put(&ps->linger_ctx);
	if (ps->recv_file)
		fput(ps->recv_file);
	WRITE_ONCE(ps->recv_file, NULL);
	mutex_unlock(&ps->lock);

	spin_lock_bh(&pn->lock);
	list_del_rcu(&ps->node);
	spin_unlock_bh(&pn->lock);

	/*
	 * A work round from now on sees @dead and touches nothing.  The UDP
	 * callbacks are restored first (write_lock_bh waits for one that
	 * runs), so nothing can queue the work or arm the timer after the
	 * engine is stopped.
	 */
	p2pkp_clear_peers(ps);
	spin_lock_bh(&ps->cfg_lock);
	ps->bound = false;
	spin_unlock_bh(&ps->cfg_lock);
	p2pkp_ksock_close(&ps->rx);
	p2pkp_stop_engine(ps);
	kvfree(ps->rxbuf);
	ps->rxbuf = NULL;
	crypto_free_shash(ps->mac);	/* NULL-safe; wipes the key */
	ps->mac = NULL;

	sock_orphan(sk);
	sock->sk = NULL;
	sock_put(sk);			/* freed after an RCU grace period */
	return 0;
}

/*
 * Not const: .family follows the family parameter (set at load, like
 * mptcp's stream ops); `make checkpatch` ignores CONST_STRUCT for this.
 */
static struct proto_ops p2pkp_ops __ro_after_init = {
	.family		= P2PKP_FAMILY_DEFAULT,
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
	P2PKP_OPS_SENDPAGE
};

static struct proto p2pkp_proto = {
	.name		= "P2PKP",
	.owner		= THIS_MODULE,
	.obj_size	= sizeof(struct p2pkp_sock),
};

static void p2pkp_work(struct work_struct *work)
{
	struct p2pkp_sock *ps = container_of(work, struct p2pkp_sock, work);
	struct p2pkp_ctx_saved saved;
	struct p2pkp_tx *tx;
	int err;

	mutex_lock(&ps->lock);
	if (READ_ONCE(ps->dead))
		goto out;
	tx = ps->tx;
	if (tx) {
		p2pkp_ctx_enter(&tx->ctx, &saved);
		if (p2pkp_tx_step(ps, &err))
			p2pkp_tx_finish(ps, err);
		p2pkp_ctx_exit(&saved);
		if (ps->tx != tx)
			p2pkp_tx_free(tx);
	} else if (ps->bound) {
		p2pkp_rx_work(ps);
	}
out:
	mutex_unlock(&ps->lock);
}

static int p2pkp_create(struct net *net, struct socket *sock, int protocol,
			int kern)
{
	struct p2pkp_net *pn = net_generic(net, p2pkp_net_id);
	struct p2pkp_sock *ps;
	struct sock *sk;

	if (sock->type != SOCK_DGRAM)
		return -ESOCKTNOSUPPORT;
	if (protocol != 0)
		return -EPROTONOSUPPORT;
	if (kern)		/* would not hold its network namespace */
		return -EPERM;
	sk = sk_alloc(net, family, GFP_KERNEL_ACCOUNT, &p2pkp_proto, kern);
	if (!sk)
		return -ENOMEM;
	sock->ops = &p2pkp_ops;
	sock_init_data(sock, sk);
	sock_set_flag(sk, SOCK_RCU_FREE);	/* /proc walks the list in RCU */

	ps = p2pkp_sk(sk);
	memset((char *)ps + sizeof(ps->sk), 0, sizeof(*ps) - sizeof(ps->sk));
	mutex_init(&ps->lock);
	spin_lock_init(&ps->cfg_lock);
	INIT_WORK(&ps->work, p2pkp_work);
	hrtimer_init(&ps->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	ps->timer.function = p2pkp_timer_fn;
	ps->timeout_ms = P2PKP_TIMEOUT_DEF;
	ps->fsync = true;
	ps->mcast_ttl = 1;
	ps->group_lag_ms = P2PKP_GROUP_LAG_DEF;

	spin_lock_bh(&pn->lock);
	ps->seqno = ++pn->seqno;
	list_add_tail_rcu(&ps->node, &pn->socks);
	spin_unlock_bh(&pn->lock);
	return 0;
}

static struct net_proto_family p2pkp_family_ops = {
	.family	= P2PKP_FAMILY_DEFAULT,
	.create	= p2pkp_create,
	.owner	= THIS_MODULE,
};

/* ---- /proc/net/p2pkp: seq_file over the namespace's sockets (RCU) ------ */

#define P2PKP_SEQ_TOTAL	((void *)2)

/*
 * A reader resumes after the last socket it was shown (by creation
 * order), not at a position: sockets made or closed between two read()
 * calls make it neither skip nor repeat the others, and the total line
 * comes once, last.
 */
struct p2pkp_iter {
	struct seq_net_private p;	/* must be first */
	u64 last;			/* seqno of the last socket shown */
	bool total;			/* the total line was shown */
};

static void *p2pkp_seq_from(struct seq_file *seq)
{
	struct p2pkp_net *pn = net_generic(seq_file_net(seq), p2pkp_net_id);
	struct p2pkp_iter *it = seq->private;
	struct p2pkp_sock *ps;

	/* After the total line, nothing: not even a socket made since. */
	if (it->total)
		return NULL;
	list_for_each_entry_rcu(ps, &pn->socks, node)
		if (ps->seqno > it->last)
			return ps;
	return P2PKP_SEQ_TOTAL;
}

static void *p2pkp_seq_start(struct seq_file *seq, loff_t *pos)
	__acquires(RCU)
{
	struct p2pkp_iter *it = seq->private;

	rcu_read_lock();
	if (!*pos) {
		it->last = 0;
		it->total = false;
		return SEQ_START_TOKEN;
	}
	return p2pkp_seq_from(seq);
}

static void *p2pkp_seq_next(struct seq_file *seq, void *v, loff_t *pos)
{
	struct p2pkp_iter *it = seq->private;

	++*pos;
	if (v == P2PKP_SEQ_TOTAL) {
		it->total = true;
		return NULL;
	}
	if (v != SEQ_START_TOKEN)
		it->last = ((struct p2pkp_sock *)v)->seqno;
	return p2pkp_seq_from(seq);
}

static void p2pkp_seq_stop(struct seq_file *seq, void *v)
	__releases(RCU)
{
	rcu_read_unlock();
}

static void p2pkp_show_stats(struct seq_file *seq, atomic64_t *stats)
{
	int i;

	for (i = 0; i < P2PKP_NSTATS; i++)
		seq_printf(seq, " %s=%lld", p2pkp_stat_names[i],
			   (long long)atomic64_read(&stats[i]));
	seq_putc(seq, '\n');
}

static void p2pkp_show_sock(struct seq_file *seq, struct p2pkp_sock *ps)
{
	unsigned long ino = sock_i_ino(&ps->sk);
	int i;

	spin_lock_bh(&ps->cfg_lock);
	seq_printf(seq, "sock inode=%lu role=%s state=%s", ino,
		   ps->bound ? "receiver" : ps->npeers ? "sender" : "unbound",
		   p2pkp_state_names[READ_ONCE(ps->state)]);
	if (ps->bound)
		seq_printf(seq, " local=%pISpc", (struct sockaddr *)&ps->local);
	else
		seq_puts(seq, " local=-");
	seq_printf(seq, " peers=%d timeout_ms=%u", ps->npeers,
		   READ_ONCE(ps->timeout_ms));
	for (i = 0; i < ps->npeers; i++)
		seq_printf(seq, " peer%d=%pISpc", i,
			   (struct sockaddr *)&ps->peers[i]->addr);
	seq_printf(seq, " allowed=%d auth=%d fsync=%d rcvbuf=%u", ps->nallow,
		   !!READ_ONCE(ps->mac), READ_ONCE(ps->fsync),
		   ps->bound ? ps->rcvbuf :
		   ps->npeers ? READ_ONCE(ps->peers[0]->ks.sock->sk->sk_rcvbuf) : 0);
	seq_printf(seq, " sndbuf=%u",
		   ps->bound ? READ_ONCE(ps->rx.sock->sk->sk_sndbuf) :
		   ps->npeers ? READ_ONCE(ps->peers[0]->ks.sock->sk->sk_sndbuf) : 0);
	p2pkp_show_stats(seq, ps->stats);
	for (i = 0; i < ps->npeers; i++) {
		struct p2pkp_peer *p = ps->peers[i];

		seq_printf(seq, "peer inode=%lu index=%d addr=%pISpc state=%s status=%d chunk=%u epoch=%u",
			   ino, i, (struct sockaddr *)&p->addr,
			   p2pkp_pstate_names[READ_ONCE(p->state)],
			   READ_ONCE(p->status), READ_ONCE(p->chunk),
			   READ_ONCE(p->epoch));
		seq_printf(seq, " acked=%llu sent=%llu retrans=%llu",
			   p2pkp_peer_acked(ps, p), READ_ONCE(p->sent),
			   READ_ONCE(p->retrans));
		seq_printf(seq, " cc=%d cwnd=%u ssthresh=%u srtt_us=%u rttvar_us=%u rto_us=%u pacing_Bps=%llu",
			   READ_ONCE(p->cc), READ_ONCE(p->cwnd),
			   READ_ONCE(p->ssthresh), READ_ONCE(p->srtt),
			   READ_ONCE(p->rttvar), READ_ONCE(p->rto),
			   READ_ONCE(p->pace_rate));
		seq_printf(seq, " losses=%llu timeouts=%llu undos=%llu group=%d\n",
			   READ_ONCE(p->losses), READ_ONCE(p->timeouts),
			   READ_ONCE(p->undos), READ_ONCE(p->member));
	}
	spin_unlock_bh(&ps->cfg_lock);
}

static int p2pkp_seq_show(struct seq_file *seq, void *v)
{
	struct p2pkp_net *pn = net_generic(seq_file_net(seq), p2pkp_net_id);

	if (v == SEQ_START_TOKEN) {
		seq_printf(seq, "p2pkp version=%d family=%d sha256=%s sha256_lib_Bps=%llu sha256_crypto=%s sha256_crypto_Bps=%llu\n",
			   P2PKP_VERSION, family,
			   p2pkp_sha_names[p2pkp_sha_used],
			   p2pkp_sha_rate[P2PKP_SHA_LIB],
			   p2pkp_sha_driver,
			   p2pkp_sha_rate[P2PKP_SHA_CRYPTO]);
	} else if (v == P2PKP_SEQ_TOTAL) {
		seq_puts(seq, "total");
		p2pkp_show_stats(seq, pn->stats);
	} else {
		p2pkp_show_sock(seq, v);
	}
	return 0;
}

static const struct seq_operations p2pkp_seq_ops = {
	.start	= p2pkp_seq_start,
	.next	= p2pkp_seq_next,
	.stop	= p2pkp_seq_stop,
	.show	= p2pkp_seq_show,
};

static int __net_init p2pkp_net_init(struct net *net)
{
	struct p2pkp_net *pn = net_generic(net, p2pkp_net_id);

	spin_lock_init(&pn->lock);
	INIT_LIST_HEAD(&pn->socks);
	if (!proc_create_net("p2pkp", 0444, net->proc_net, &p2pkp_seq_ops,
			     sizeof(struct p2pkp_iter)))
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
	p2pkp_ops.family = family;
	err = p2pkp_sha_choose();
	if (err)
		return err;

	err = -ENOMEM;
	p2pkp_wq = alloc_workqueue("p2pkp", WQ_UNBOUND | WQ_FREEZABLE, 0);
	if (!p2pkp_wq)
		goto free_sha;
	err = proto_register(&p2pkp_proto, 1);	/* SLAB_ACCOUNT */
	if (err)
		goto free_wq;
	err = register_pernet_subsys(&p2pkp_net_ops);
	if (err)
		goto unreg_proto;
	err = sock_register(&p2pkp_family_ops);
	if (err) {
		pr_err("family %d is in use (sock_register: %d)\n", family,
		       err);
		goto unreg_net;
	}
	pr_info("loaded, family %d, wire version %d, sha256 %s (%llu MB/s)\n",
		family, P2PKP_VERSION, p2pkp_sha_names[p2pkp_sha_used],
		div_u64(p2pkp_sha_rate[p2pkp_sha_used], 1000000));
	return 0;

unreg_net:
	unregister_pernet_subsys(&p2pkp_net_ops);
unreg_proto:
	proto_unregister(&p2pkp_proto);
free_wq:
	destroy_workqueue(p2pkp_wq);
free_sha:
	crypto_free_shash(p2pkp_sha_tfm);	/* NULL-safe */
	return err;
}

static void __exit p2pkp_exit(void)
{
	sock_unregister(family);
	unregister_pernet_subsys(&p2pkp_net_ops);
	rcu_barrier();			/* sockets freed after a grace period */
	proto_unregister(&p2pkp_proto);
	/*
	 * Zero-copy areas outlive their sockets until the stack frees the
	 * last skb referencing them (a queue, a delay): their completion is
	 * our code.  Wait for every one, and for the completion that freed
	 * the last to return (it runs under rcu_read_lock()).
	 */
	wait_event_idle(p2pkp_zc_wait, !atomic_read(&p2pkp_zc_live));
	synchronize_rcu();
	destroy_workqueue(p2pkp_wq);
	crypto_free_shash(p2pkp_sha_tfm);	/* NULL-safe */
}

module_init(p2pkp_init);
module_exit(p2pkp_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("P2PKP: in-kernel one-to-many file transfer over UDP");
MODULE_AUTHOR("P2PKP project");
MODULE_ALIAS_NETPROTO(P2PKP_FAMILY_DEFAULT);
