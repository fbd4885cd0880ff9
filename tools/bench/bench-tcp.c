// SPDX-License-Identifier: GPL-2.0
/*
 * bench-tcp: the TCP sendfile baseline of `make bench` (what most users would pick).
 *
 *   bench-tcp send [--concurrent] --to A.B.C.D:PORT [--to ...] FILE
 *   bench-tcp recv --listen PORT --out PATH [--timeout MS]
 *
 * The sender connects to every peer, then for each peer in turn sends the 8-byte
 * file size and the file with sendfile(); it exits 0 once every peer has answered
 * with one byte, which a receiver sends only after it has written and closed the
 * whole file.  With --concurrent it sends to all peers at once: non-blocking
 * sockets, one sendfile() offset per peer, poll() for the ones with room.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "bench.h"

const char *prog = "bench-tcp";

static void read_full(int s, void *buf, size_t len, int timeout_ms, const char *what)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd pfd = { s, POLLIN, 0 };
		ssize_t r;

		r = poll(&pfd, 1, timeout_ms);
		if (r < 0)
			die("poll %s", what);
		if (r == 0)
			fail("%s: nothing for %d ms", what, timeout_ms);
		r = read(s, (char *)buf + got, len - got);
		if (r < 0)
			die("read %s", what);
		if (r == 0)
			fail("%s: connection closed after %zu of %zu bytes", what, got, len);
		got += r;
	}
}

/* Every peer's file at once: sendfile() to whichever sockets have room. */
static void send_concurrent(const int *socks, const struct sockaddr_in *peers, int npeers,
			    int fd, const char *path, uint64_t size)
{
	struct pollfd pfd[BENCH_MAX_PEERS];
	off_t off[BENCH_MAX_PEERS];
	int i, left = 0;

	for (i = 0; i < npeers; i++) {
		int fl = fcntl(socks[i], F_GETFL);

		if (fl < 0 || fcntl(socks[i], F_SETFL, fl | O_NONBLOCK) < 0)
			die("fcntl O_NONBLOCK %s", inet_ntoa(peers[i].sin_addr));
		off[i] = 0;
		pfd[i].fd = size ? socks[i] : -1;
		pfd[i].events = POLLOUT;
		left += size ? 1 : 0;
	}
	while (left) {
		int r = poll(pfd, npeers, 60000);

		if (r < 0)
			die("poll");
		if (r == 0)
			fail("no peer took data for 60000 ms");
		for (i = 0; i < npeers; i++) {
			ssize_t n;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			if (pfd[i].revents & (POLLERR | POLLHUP)) {
				int e = 0;
				socklen_t el = sizeof(e);

				getsockopt(socks[i], SOL_SOCKET, SO_ERROR, &e, &el);
				fail("peer %s: connection failed: %s", inet_ntoa(peers[i].sin_addr),
				     strerror(e ? e : EPIPE));
			}
			n = sendfile(socks[i], fd, &off[i], size - off[i]);
			if (n < 0 && errno != EAGAIN)
				die("sendfile %s", inet_ntoa(peers[i].sin_addr));
			if (n == 0)
				fail("sendfile %s: file shrank at %lld", path, (long long)off[i]);
			if ((uint64_t)off[i] == size) {
				pfd[i].fd = -1;
				left--;
			}
		}
	}
}

static int do_send(int argc, char **argv)
{
	struct sockaddr_in peers[BENCH_MAX_PEERS];
	int socks[BENCH_MAX_PEERS];
	const char *path = NULL;
	int npeers = 0, i, fd, concurrent = 0;
	struct stat st;
	uint64_t size, nsize;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--concurrent")) {
			concurrent = 1;
		} else if (!strcmp(argv[i], "--to") && i + 1 < argc) {
			if (npeers == BENCH_MAX_PEERS)
				fail("at most %d peers", BENCH_MAX_PEERS);
			parse_peer(argv[++i], &peers[npeers++]);
		} else if (!path && argv[i][0] != '-') {
			path = argv[i];
		} else {
			fail("unexpected argument '%s'", argv[i]);
		}
	}
	if (!path || !npeers)
		fail("usage: send --to A.B.C.D:PORT [--to ...] FILE");
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s", path);
	if (fstat(fd, &st) < 0)
		die("fstat %s", path);
	size = st.st_size;
	nsize = htonll_(size);
	for (i = 0; i < npeers; i++) {
		socks[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (socks[i] < 0)
			die("socket");
		if (connect(socks[i], (struct sockaddr *)&peers[i], sizeof(peers[i])) < 0)
			die("connect %s", inet_ntoa(peers[i].sin_addr));
	}
	if (concurrent) {
		for (i = 0; i < npeers; i++)
			if (send(socks[i], &nsize, sizeof(nsize), MSG_MORE) != sizeof(nsize))
				die("send size %s", inet_ntoa(peers[i].sin_addr));
		send_concurrent(socks, peers, npeers, fd, path, size);
	}
	for (i = 0; i < npeers && !concurrent; i++) {
		off_t off = 0;

		if (send(socks[i], &nsize, sizeof(nsize), MSG_MORE) != sizeof(nsize))
			die("send size %s", inet_ntoa(peers[i].sin_addr));
		while ((uint64_t)off < size) {
			ssize_t r = sendfile(socks[i], fd, &off, size - off);

			if (r < 0)
				die("sendfile %s", inet_ntoa(peers[i].sin_addr));
			if (r == 0)
				fail("sendfile %s: file shrank at %lld", path, (long long)off);
		}
	}
	for (i = 0; i < npeers; i++) {
		char c;

		read_full(socks[i], &c, 1, 60000, inet_ntoa(peers[i].sin_addr));
		if (c != 'D')
			fail("peer %s: bad confirmation byte", inet_ntoa(peers[i].sin_addr));
		close(socks[i]);
	}
	printf("sent %s %llu bytes to %d peers mode=%s\n", path, (unsigned long long)size,
	       npeers, concurrent ? "tcp-concurrent" : "tcp");
	return 0;
}

static int do_recv(int argc, char **argv)
{
	static char buf[1 << 16];
	struct sockaddr_in me = { .sin_family = AF_INET };
	const char *out = NULL;
	int timeout_ms = 60000, ls, s, fd, i, port = 0, one = 1;
	uint64_t size, got = 0;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			port = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--out") && i + 1 < argc)
			out = argv[++i];
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_ms = atoi(argv[++i]);
		else
			fail("unexpected argument '%s'", argv[i]);
	}
	if (!port || !out || timeout_ms <= 0)
		fail("usage: recv --listen PORT --out PATH [--timeout MS]");
	ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0)
		die("socket");
	if (setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	me.sin_port = htons(port);
	if (bind(ls, (struct sockaddr *)&me, sizeof(me)) < 0)
		die("bind port %d", port);
	if (listen(ls, 1) < 0)
		die("listen");
	printf("{\"event\":\"listening\",\"addr\":\"0.0.0.0:%d\"}\n", port);
	fflush(stdout);
	{
		struct pollfd pfd = { ls, POLLIN, 0 };
		int r = poll(&pfd, 1, timeout_ms);

		if (r < 0)
			die("poll accept");
		if (r == 0)
			fail("no connection within %d ms", timeout_ms);
	}
	s = accept(ls, NULL, NULL);
	if (s < 0)
		die("accept");
	read_full(s, &size, sizeof(size), timeout_ms, "size");
	size = htonll_(size);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("open %s", out);
	while (got < size) {
		size_t want = size - got < sizeof(buf) ? size - got : sizeof(buf);
		struct pollfd pfd = { s, POLLIN, 0 };
		ssize_t r = poll(&pfd, 1, timeout_ms);

		if (r < 0)
			die("poll");
		if (r == 0)
			fail("no data for %d ms (%llu of %llu bytes)", timeout_ms,
			     (unsigned long long)got, (unsigned long long)size);
		r = read(s, buf, want);
		if (r < 0)
			die("read");
		if (r == 0)
			fail("sender closed after %llu of %llu bytes", (unsigned long long)got,
			     (unsigned long long)size);
		if (write(fd, buf, r) != r)
			die("write %s", out);
		got += r;
	}
	if (close(fd) < 0)
		die("close %s", out);
	if (write(s, "D", 1) != 1)
		die("write confirmation");
	close(s);
	printf("received %s %llu bytes\n", out, (unsigned long long)size);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "send"))
		return do_send(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "recv"))
		return do_recv(argc - 2, argv + 2);
	fprintf(stderr, "usage: bench-tcp send [--concurrent] --to A.B.C.D:PORT... FILE\n"
			"       bench-tcp recv --listen PORT --out PATH [--timeout MS]\n");
	return 2;
}
