/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User API of the P2PKP socket family (in-kernel one-to-many
 * file transfer over UDP).  Shared by the module, the tools and any user
 * program.  See README.md and docs/protocol.md.
 *
 * Sender:   fd = socket(AF_P2PKP, SOCK_DGRAM, 0);
 *           connect(fd, peer, len);             one call per receiver
 *           write(fd, "/abs/path", len);        one call per file
 * Receiver: fd = socket(AF_P2PKP, SOCK_DGRAM, 0);
 *           bind(fd, ip:port, len);
 *           read(fd, "/abs/dest", len);         one call per file
 *
 * With O_NONBLOCK or MSG_DONTWAIT, write() starts the transfer and fails
 * with EINPROGRESS, read() arms the destination and fails with EAGAIN;
 * poll() says POLLOUT (no transfer running), POLLIN (a read() is done),
 * POLLERR (it failed; SO_ERROR), and the same call again returns the
 * result.  SO_SNDTIMEO/SO_RCVTIMEO bound blocking calls (EAGAIN).  See
 * docs/protocol.md section 1.5.
 *
 * Descriptors instead of paths (section 1.6): sendmsg() with an empty
 * payload and one SCM_RIGHTS control message sends the file open on that
 * descriptor; setsockopt(P2PKP_RECV_FD) then read(fd, "", 1) receives into
 * an open descriptor (e.g. O_TMPFILE), which stays unnamed.
 */
#ifndef _UAPI_LINUX_P2PKP_H
#define _UAPI_LINUX_P2PKP_H

#include <linux/const.h>
#include <linux/types.h>
#include <linux/socket.h>

/*
 * Address family.  12 is free since DECnet's removal (6.1 has NPROTO 46).
 * The module parameter "family" may move it (0 < family < NPROTO); the
 * number in use is in /sys/module/p2pkp/parameters/family.
 */
#define P2PKP_FAMILY_DEFAULT	12
#ifndef AF_P2PKP
#define AF_P2PKP		P2PKP_FAMILY_DEFAULT
#endif
#ifndef PF_P2PKP
#define PF_P2PKP		AF_P2PKP
#endif

/* Port the tools use when none is given. */
#define P2PKP_PORT_DEFAULT	7117

/* At most this many connect()ed peers per socket. */
#define P2PKP_MAX_PEERS		64

/* Longest path accepted by write()/read(), without the NUL. */
#define P2PKP_PATH_MAX		4095

/*
 * File bytes carried by one DATA datagram.  The sender takes as many as
 * the path MTU allows (P2PKP_CHUNK caps it), P2PKP_CHUNK_SIZE when the
 * route is unknown (fits a 1500-byte MTU, v4 and v6, with a MAC); a
 * receiver accepts any chunk size announced in START within
 * P2PKP_CHUNK_MIN..P2PKP_CHUNK_MAX.
 */
#define P2PKP_CHUNK_SIZE	1400
#define P2PKP_CHUNK_MIN		512
#define P2PKP_CHUNK_MAX		65000

/* Level for setsockopt()/getsockopt(). */
#define SOL_P2PKP		300

/*
 * P2PKP_PEER_TIMEOUT (u32 milliseconds, get/set, default 15000,
 *	range 100..3600000): sender: a peer silent for this long is failed
 *	with ETIMEDOUT while the others go on; receiver: a transfer whose
 *	sender is silent for this long is abandoned and its temporary file
 *	removed (read() keeps waiting for the next file).
 * P2PKP_PEER_RESULTS (struct p2pkp_peer_result[], get, sender): one entry
 *	per peer in connect() order, about the last write().  optlen is set to
 *	the bytes filled in; a short buffer gets the first entries.
 * P2PKP_LAST_TRANSFER (struct p2pkp_transfer_info, get): the last
 *	completed or failed transfer on this socket (sender or receiver).
 * P2PKP_RATE (__u64 bytes per second, get/set, default 0 = no cap, at most
 *	P2PKP_RATE_MAX, larger values are EINVAL): sender: caps the DATA
 *	payload bytes (retransmissions included) the socket sends per second,
 *	all peers together (token bucket); takes effect at the next write().
 *	Each peer is also limited by its own congestion window and pacing
 *	rate (module parameter tx_cc, docs/protocol.md 3.3); the cap applies
 *	on top of them.
 * P2PKP_KEY (P2PKP_KEY_SIZE bytes, set only; optlen 0 removes the key):
 *	every datagram carries an HMAC-SHA256 tag under this key, and only
 *	datagrams with a valid tag are accepted; both ends need the same key.
 *	getsockopt() fails with EPERM; the key is wiped when replaced or on
 *	close.  EBUSY while a write()/read() is in progress.
 * P2PKP_FSYNC (int, get/set, default 1): receiver: the file and its
 *	directory are fsynced before read() returns, so a file visible under
 *	its final name survives a crash of the receiving machine.
 * P2PKP_RECV_FD (int descriptor, set; get: 1 while one is set): receiver:
 *	the next read() whose path is "" writes the file into this descriptor
 *	(a regular file open O_RDWR, not O_APPEND) instead of a named file,
 *	and takes it (one file per setsockopt()); -1 removes it.
 * P2PKP_CHUNK (u32 bytes, get/set, default 0): sender: the largest chunk
 *	a DATA datagram carries, P2PKP_CHUNK_MIN..P2PKP_CHUNK_MAX (others are
 *	EINVAL); 0: as large as each peer's path MTU allows.  The sender
 *	picks each peer's chunk from its route's MTU at write() and goes on
 *	with a smaller one when the path MTU drops (docs/protocol.md 3.4).
 * P2PKP_RESUME (int, get/set, default 0): sender: write() first reads the
 *	file once for its SHA-256 and sends it in START, so that receivers
 *	with P2PKP_RESUME can resume; receiver: a transfer whose START has
 *	the digest goes into a partial file ".p2pkp-part-NAME-<16 hex
 *	digits>" beside the destination NAME, synced and claimed (in an
 *	extended attribute) every 8 MiB or second and kept with the prefix
 *	received in order when the transfer is interrupted (sender silent
 *	past the peer timeout, ABORT, close, the process killed, a power
 *	cut), so that the next read() of the same destination offered the
 *	same file (final name, size and SHA-256) gets only the rest.  A
 *	changed file never mixes with the old one's partial (another name),
 *	and a partial that fails the digest at the end is deleted (EBADMSG).
 *	docs/protocol.md 1.7.
 *
 * Multicast (docs/protocol.md 1.8), sender; one extra call names the group:
 * P2PKP_GROUP (struct sockaddr_in or sockaddr_in6, get/set; optlen 0 or
 *	AF_UNSPEC clears it): the next write() sends each new chunk once to
 *	this multicast group instead of once per peer; the peers are still
 *	the connect()ed receivers, each acknowledges by unicast and has its
 *	own result.  The address must be multicast (IPv4 224.0.0.0/4 but not
 *	224.0.0.0/24; IPv6 ff00::/8 of scope 2 (link) or wider), else
 *	EINVAL; at write(), the group's family must be the peers' (else
 *	EAFNOSUPPORT) and its port every peer's port (else EINVAL).
 * P2PKP_MCAST_TTL (int 1..255, get/set, default 1): hop limit of group
 *	datagrams (a group transfer stays on the link unless asked).
 * P2PKP_MCAST_IF (int ifindex, get/set, default 0: the interface of the
 *	route to the first peer): outgoing interface of group datagrams.
 * P2PKP_GROUP_LAG (u32 milliseconds, get/set, default 10000, 0: never): a
 *	group member that alone holds the group back (its window is full,
 *	the others have what was sent) for this long is dropped: it gets an
 *	ABORT and its result is ECONNABORTED; the others go on.  A peer that
 *	accepted late is waited for this long (0: until it joins) while it
 *	catches up by unicast, then served by unicast alone.
 * P2PKP_NO_GROUP (int, get/set, default 0): receiver: refuse group
 *	transfers (the sender's result for this peer is EOPNOTSUPP).  Without
 *	it a receiver needs nothing new: it joins the group of an accepted
 *	transfer in the kernel and leaves it when the transfer ends.
 */
#define P2PKP_PEER_TIMEOUT	1
#define P2PKP_PEER_RESULTS	2
#define P2PKP_LAST_TRANSFER	3
#define P2PKP_RATE		4
#define P2PKP_KEY		5
#define P2PKP_FSYNC		6
#define P2PKP_RECV_FD		7
#define P2PKP_CHUNK		8
#define P2PKP_RESUME		9
#define P2PKP_GROUP		10
#define P2PKP_MCAST_TTL		11
#define P2PKP_MCAST_IF		12
#define P2PKP_GROUP_LAG		13
#define P2PKP_NO_GROUP		14

#define P2PKP_RATE_MAX		_BITULL(40)	/* bytes per second */
#define P2PKP_KEY_SIZE		32

/* p2pkp_peer_result.state */
enum p2pkp_peer_state {
	P2PKP_PEER_IDLE = 0,	/* no write() yet */
	P2PKP_PEER_DONE = 1,	/* delivered, digest verified by the peer */
	P2PKP_PEER_FAILED = 2,	/* see status */
};

struct p2pkp_peer_result {
	struct __kernel_sockaddr_storage addr;	/* the connect()ed address */
	__u32 state;				/* enum p2pkp_peer_state */
	__s32 status;				/* 0 or a negative errno */
	__u64 bytes_acked;			/* file bytes the peer confirmed */
	__u64 datagrams_sent;			/* incl. retransmissions */
	__u64 datagrams_retransmitted;
};

#define P2PKP_DIGEST_SIZE	32	/* SHA-256 */

struct p2pkp_transfer_info {
	struct __kernel_sockaddr_storage peer;	/* receiver: the sender */
	__u64 id;				/* transfer id from the wire */
	__u64 size;				/* file size in bytes */
	__u64 duration_ns;			/* START to verified end */
	__u8 digest[P2PKP_DIGEST_SIZE];		/* SHA-256 of the file */
	__s32 status;				/* 0 or a negative errno */
	__u32 reserved;
};

#endif /* _UAPI_LINUX_P2PKP_H */
