// SPDX-License-Identifier: GPL-2.0
/*
 * bench-udp: the UDP baselines of `make bench`.
 *
 *   bench-udp send --mode rw|sendfile|gso [--payload N] --to A.B.C.D:PORT [--to ...] FILE
 *   bench-udp recv --listen PORT --out PATH [--payload N] [--timeout MS]
 *
 * The sender sends FILE to every peer in datagrams of N bytes of file (default
 * 1400; both ends must agree) plus a 16-byte header.  Flow control and reliability are deliberately simple but
 * honest: a window of WINDOW datagrams shared by all peers (go-back-N from the
 * slowest peer after RTO_MS without progress); the receiver stores only in-order
 * datagrams, acknowledges every ACK_EVERY of them and at a gap, and sends a final
 * acknowledgement only after the whole file is written and closed.  The sender
 * exits 0 only when every peer has sent that final acknowledgement; a peer that
 * makes no progress for STALL_MS fails the run (exit 1).
 *
 * Modes (how the sender puts a datagram on the wire):
 *   rw        pread() each chunk once, sendto() it to every peer that needs it
 *   sendfile  per peer, one connected socket; send(header, MSG_MORE) + sendfile()
 *             of the chunk: one sendfile() per datagram and peer
 *   gso       preadv() a batch into a buffer, one sendmsg() with UDP_SEGMENT per
 *             peer carrying as many datagrams as fit in 64 KiB (at most
 *             GSO_SEGS_MAX)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include "bench.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define WINDOW		256
#define ACK_EVERY	32
#define RTO_MS		200
#define STALL_MS	30000
#define GSO_SEGS_MAX	64	/* UDP_MAX_SEGMENTS of older kernels */
#define GSO_BYTES	65507	/* largest UDP payload over IPv4 */
#define LINGER_MS	300
#define RCVBUF		(8 << 20)

const char *prog = "bench-udp";

static uint32_t payload = BENCH_PAYLOAD;	/* --payload */

static size_t dgram_len(void)
{
	return sizeof(struct bench_hdr) + payload;
}

/* Datagrams per UDP_SEGMENT send (1: one send per datagram). */
static uint32_t gso_segs(void)
{
	size_t n = GSO_BYTES / dgram_len();

	return n > GSO_SEGS_MAX ? GSO_SEGS_MAX : n ? n : 1;
}

static void *xmalloc(size_t len)
{
	void *p = malloc(len);

	if (!p)
		die("malloc %zu", len);
	return p;
}

enum mode { MODE_RW, MODE_SENDFILE, MODE_GSO };

struct peer {
	struct sockaddr_in addr;
	int sock;		/* the socket datagrams to this peer leave from */
	uint32_t acked;		/* datagrams acknowledged (in order) */
	uint64_t progress_ns;	/* last time acked grew */
};

static uint32_t ndgrams(uint64_t size)
{
	uint64_t n = (size + payload - 1) / payload;

	if (n > UINT32_MAX)
		fail("file too large for the baseline's 32-bit sequence numbers");
	return n ? (uint32_t)n : 1;
}

static size_t chunk_len(uint64_t size, uint32_t seq)
{
	uint64_t off = (uint64_t)seq * payload;

	return size - off < payload ? size - off : payload;
}

static void fill_hdr(struct bench_hdr *h, uint32_t seq, uint64_t size)
{
	h->magic = htonl(BENCH_DATA);
	h->seq = htonl(seq);
	h->size = htonll_(size);
}

static void read_chunk(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
	ssize_t r = pread(fd, buf, len, off);

	if (r < 0)
		die("pread %s", path);
	if ((size_t)r != len)
		fail("pread %s: short read at %llu (file changed?)", path,
		     (unsigned long long)off);
}

/* Send datagrams [from, to) to every peer that has not acknowledged them. */
static void send_range(enum mode mode, int fd, const char *path, uint64_t size,
		       struct peer *peers, int npeers, uint32_t from, uint32_t to)
{
	static unsigned char *buf;
	size_t dgram = dgram_len();
	uint32_t segs = gso_segs();
	uint32_t seq = from;

	if (!buf)
		buf = xmalloc((size_t)segs * dgram);

	while (seq < to) {
		uint32_t cnt = 1, i;
		size_t len = chunk_len(size, seq);
		int p;

		if (mode == MODE_GSO) {
			struct iovec iov[GSO_SEGS_MAX];
			size_t total = 0;
			ssize_t r;

			cnt = to - seq < segs ? to - seq : segs;
			for (i = 0; i < cnt; i++) {
				fill_hdr((struct bench_hdr *)(buf + i * dgram), seq + i, size);
				iov[i].iov_base = buf + i * dgram + sizeof(struct bench_hdr);
				iov[i].iov_len = chunk_len(size, seq + i);
				total += iov[i].iov_len;
			}
			r = preadv(fd, iov, cnt, (uint64_t)seq * payload);
			if (r < 0)
				die("preadv %s", path);
			if ((size_t)r != total)
				fail("preadv %s: short read (file changed?)", path);
			/* only the last segment may be shorter: the batch is contiguous */
			len = (cnt - 1) * dgram + sizeof(struct bench_hdr) +
			      iov[cnt - 1].iov_len;
		} else if (mode == MODE_RW) {
			fill_hdr((struct bench_hdr *)buf, seq, size);
			read_chunk(fd, buf + sizeof(struct bench_hdr), len,
				   (uint64_t)seq * payload, path);
			len += sizeof(struct bench_hdr);
		}
		for (p = 0; p < npeers; p++) {
			struct peer *pe = &peers[p];

			if (pe->acked >= seq + cnt)
				continue;
			if (mode == MODE_RW) {
				if (sendto(pe->sock, buf, len, 0, (struct sockaddr *)&pe->addr,
					   sizeof(pe->addr)) < 0)
					die("sendto %s", inet_ntoa(pe->addr.sin_addr));
			} else if (mode == MODE_SENDFILE) {
				struct bench_hdr h;
				off_t off = (off_t)seq * payload;
				ssize_t r;

				fill_hdr(&h, seq, size);
				if (send(pe->sock, &h, sizeof(h), MSG_MORE) < 0)
					die("send header %s", inet_ntoa(pe->addr.sin_addr));
				r = sendfile(pe->sock, fd, &off, len);
				if (r < 0)
					die("sendfile %s", inet_ntoa(pe->addr.sin_addr));
				if ((size_t)r != len)
					fail("sendfile %s: short (%zd of %zu)",
					     inet_ntoa(pe->addr.sin_addr), r, len);
			} else {
				char ctl[CMSG_SPACE(sizeof(uint16_t))] = { 0 };
				struct iovec iov = { buf, len };
				struct msghdr mh = {
					.msg_name = &pe->addr, .msg_namelen = sizeof(pe->addr),
					.msg_iov = &iov, .msg_iovlen = 1,
				};
				struct cmsghdr *cm;

				if (cnt > 1) {
					mh.msg_control = ctl;
					mh.msg_controllen = sizeof(ctl);
					cm = CMSG_FIRSTHDR(&mh);
					cm->cmsg_level = SOL_UDP;
					cm->cmsg_type = UDP_SEGMENT;
					cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
					*(uint16_t *)CMSG_DATA(cm) = dgram;
				}
				if (sendmsg(pe->sock, &mh, 0) < 0)
					die("sendmsg UDP_SEGMENT %s", inet_ntoa(pe->addr.sin_addr));
			}
		}
		seq += cnt;
	}
}

/* Read every pending acknowledgement on sock; true if some peer progressed. */
static int drain_acks(int sock, struct peer *peers, int npeers, uint32_t n)
{
	int progressed = 0;

	for (;;) {
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		struct bench_hdr h;
		ssize_t r = recvfrom(sock, &h, sizeof(h), MSG_DONTWAIT,
				     (struct sockaddr *)&from, &flen);
		uint32_t seq;
		int p;

		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return progressed;
			if (errno == ECONNREFUSED)
				fail("a peer refused the datagrams (no receiver listening?)");
			die("recvfrom");
		}
		if (r != sizeof(h) || ntohl(h.magic) != BENCH_ACK)
			continue;
		seq = ntohl(h.seq);
		for (p = 0; p < npeers; p++) {
			struct peer *pe = &peers[p];

			if (pe->addr.sin_addr.s_addr != from.sin_addr.s_addr ||
			    pe->addr.sin_port != from.sin_port)
				continue;
			if (seq > n)
				fail("peer %s acknowledged %u of %u datagrams",
				     inet_ntoa(pe->addr.sin_addr), seq, n);
			/* datagram n is acknowledged only once the file is stored */
			if (seq == n && !h.size)
				continue;
			if (seq > pe->acked) {
				pe->acked = seq;
				pe->progress_ns = now_ns();
				progressed = 1;
			}
		}
	}
}

static int do_send(int argc, char **argv)
{
	struct peer peers[BENCH_MAX_PEERS];
	struct pollfd pfd[BENCH_MAX_PEERS];
	enum mode mode = MODE_RW;
	const char *path = NULL;
	unsigned long retransmits = 0;
	uint32_t n, next = 0;
	int npeers = 0, nsock, i, fd;
	struct stat st;
	uint64_t size;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
			const char *m = argv[++i];

			if (!strcmp(m, "rw"))
				mode = MODE_RW;
			else if (!strcmp(m, "sendfile"))
				mode = MODE_SENDFILE;
			else if (!strcmp(m, "gso"))
				mode = MODE_GSO;
			else
				fail("unknown --mode '%s' (rw, sendfile, gso)", m);
		} else if (!strcmp(argv[i], "--payload") && i + 1 < argc) {
			payload = parse_payload(argv[++i]);
		} else if (!strcmp(argv[i], "--to") && i + 1 < argc) {
			if (npeers == BENCH_MAX_PEERS)
				fail("at most %d peers", BENCH_MAX_PEERS);
			memset(&peers[npeers], 0, sizeof(peers[npeers]));
			parse_peer(argv[++i], &peers[npeers++].addr);
		} else if (!path && argv[i][0] != '-') {
			path = argv[i];
		} else {
			fail("unexpected argument '%s'", argv[i]);
		}
	}
	if (!path || !npeers)
		fail("usage: send --mode rw|sendfile|gso [--payload N] --to A.B.C.D:PORT [--to ...] FILE");

	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s", path);
	if (fstat(fd, &st) < 0)
		die("fstat %s", path);
	size = st.st_size;
	n = ndgrams(size);

	nsock = mode == MODE_SENDFILE ? npeers : 1;
	for (i = 0; i < nsock; i++) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);

		if (s < 0)
			die("socket");
		if (mode == MODE_SENDFILE &&
		    connect(s, (struct sockaddr *)&peers[i].addr, sizeof(peers[i].addr)) < 0)
			die("connect %s", inet_ntoa(peers[i].addr.sin_addr));
		pfd[i].fd = s;
		pfd[i].events = POLLIN;
	}
	for (i = 0; i < npeers; i++) {
		peers[i].sock = pfd[mode == MODE_SENDFILE ? i : 0].fd;
		peers[i].progress_ns = now_ns();
	}

	for (;;) {
		uint32_t base = n;
		int r, progressed = 0;

		for (i = 0; i < npeers; i++)
			if (peers[i].acked < base)
				base = peers[i].acked;
		if (base == n)
			break;
		if (next < base)
			next = base;
		if (next < n && next < base + WINDOW) {
			uint32_t to = base + WINDOW < n ? base + WINDOW : n;

			send_range(mode, fd, path, size, peers, npeers, next, to);
			next = to;
		}
		r = poll(pfd, nsock, RTO_MS);
		if (r < 0)
			die("poll");
		for (i = 0; i < nsock; i++)
			if (pfd[i].revents)
				progressed |= drain_acks(pfd[i].fd, peers, npeers, n);
		if (progressed)
			continue;
		if (r == 0) {
			/* no acknowledgement for RTO_MS: go back to the slowest peer */
			for (i = 0; i < npeers; i++)
				if (peers[i].acked < n &&
				    now_ns() - peers[i].progress_ns > STALL_MS * 1000000ull)
					fail("peer %s stalled at datagram %u of %u for %d ms",
					     inet_ntoa(peers[i].addr.sin_addr), peers[i].acked, n,
					     STALL_MS);
			next = base;
			retransmits++;
		}
	}
	printf("sent %s %llu bytes to %d peers mode=%s datagrams=%u timeouts=%lu payload=%u\n",
	       path, (unsigned long long)size, npeers,
	       mode == MODE_RW ? "rw" : mode == MODE_SENDFILE ? "sendfile" : "gso", n,
	       retransmits, payload);
	return 0;
}

static void send_ack(int sock, const struct sockaddr_in *to, uint32_t seq, int done)
{
	struct bench_hdr h = { htonl(BENCH_ACK), htonl(seq), htonll_(done ? 1 : 0) };

	if (sendto(sock, &h, sizeof(h), 0, (const struct sockaddr *)to, sizeof(*to)) < 0)
		die("sendto ack %s", inet_ntoa(to->sin_addr));
}

static int do_recv(int argc, char **argv)
{
	unsigned char *buf;
	size_t bufsize;
	struct sockaddr_in me = { .sin_family = AF_INET }, sender;
	const char *out = NULL;
	uint32_t expected = 0, n = 0, gap_acked = UINT32_MAX;
	unsigned long gaps = 0, dups = 0;
	int timeout_ms = 60000, sock, fd = -1, i, port = 0, rcvbuf = RCVBUF;
	uint64_t size = 0;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			port = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--out") && i + 1 < argc)
			out = argv[++i];
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_ms = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--payload") && i + 1 < argc)
			payload = parse_payload(argv[++i]);
		else
			fail("unexpected argument '%s'", argv[i]);
	}
	if (!port || !out || timeout_ms <= 0)
		fail("usage: recv --listen PORT --out PATH [--payload N] [--timeout MS]");
	bufsize = dgram_len() + 64;	/* a longer datagram shows as too long */
	buf = xmalloc(bufsize);

	sock = socket(AF_INET, SOCK_DGRAM, 0);
	if (sock < 0)
		die("socket");
	if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 &&
	    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
		die("setsockopt SO_RCVBUF");
	me.sin_port = htons(port);
	if (bind(sock, (struct sockaddr *)&me, sizeof(me)) < 0)
		die("bind port %d", port);
	printf("{\"event\":\"listening\",\"addr\":\"0.0.0.0:%d\"}\n", port);
	fflush(stdout);

	for (;;) {
		struct pollfd pfd = { sock, POLLIN, 0 };
		socklen_t slen = sizeof(sender);
		struct bench_hdr *h = (struct bench_hdr *)buf;
		uint32_t seq;
		size_t len;
		ssize_t r;

		r = poll(&pfd, 1, fd < 0 && n ? LINGER_MS : timeout_ms);
		if (r < 0)
			die("poll");
		if (r == 0) {
			if (n && expected == n)
				break;	/* done and the sender went quiet */
			fail("no datagram for %d ms (%u of %u received)", timeout_ms,
			     expected, n);
		}
		r = recvfrom(sock, buf, bufsize, 0, (struct sockaddr *)&sender, &slen);
		if (r < 0)
			die("recvfrom");
		if ((size_t)r < sizeof(*h) || ntohl(h->magic) != BENCH_DATA)
			continue;
		seq = ntohl(h->seq);
		if (!n) {
			size = htonll_(h->size);
			n = ndgrams(size);
			fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd < 0)
				die("open %s", out);
		}
		if (seq >= n || (size_t)r > dgram_len())
			fail("bad datagram %u (%zd bytes) for a file of %u", seq, r, n);
		if (seq < expected || fd < 0) {
			dups++;
			if (fd < 0)	/* our final ack was lost: repeat it */
				send_ack(sock, &sender, n, 1);
			continue;
		}
		if (seq > expected) {
			gaps++;
			if (gap_acked != expected) {
				send_ack(sock, &sender, expected, 0);
				gap_acked = expected;
			}
			continue;
		}
		len = r - sizeof(*h);
		if (len != chunk_len(size, seq))
			fail("datagram %u carries %zu bytes, expected %zu", seq, len,
			     chunk_len(size, seq));
		if (len && write(fd, buf + sizeof(*h), len) != (ssize_t)len)
			die("write %s", out);
		expected++;
		if (expected == n) {
			if (close(fd) < 0)
				die("close %s", out);
			fd = -1;
			send_ack(sock, &sender, n, 1);
		} else if (expected % ACK_EVERY == 0) {
			send_ack(sock, &sender, expected, 0);
		}
	}
	printf("received %s %llu bytes datagrams=%u gaps=%lu duplicates=%lu\n", out,
	       (unsigned long long)size, n, gaps, dups);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "send"))
		return do_send(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "recv"))
		return do_recv(argc - 2, argv + 2);
	fprintf(stderr,
		"usage: bench-udp send --mode rw|sendfile|gso [--payload N] --to A.B.C.D:PORT... FILE\n"
		"       bench-udp recv --listen PORT --out PATH [--payload N] [--timeout MS]\n");
	return 2;
}
