// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-op - run a script of system calls on AF_P2PKP sockets and print one
 * line per call with its result, for tests and the syscall fuzzer.
 *
 *   p2pkp-op socket connect:10.0.0.2:7117 write:/etc/shadow close
 *   socket = 3
 *   connect 10.0.0.2:7117 = 0
 *   write /etc/shadow = -1 EACCES
 *   close = 0
 *
 * Every operation acts on the current socket: the one the last "socket"
 * made (or chosen with "use:N").  A failing call does not stop the script.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "p2pkp-util.h"

#define PROG "p2pkp-op"
#define MAX_SOCKS 256

static int socks[MAX_SOCKS];
static int nsocks;
static int cur = -1;		/* the current fd */
static volatile sig_atomic_t alarms;
static int json;		/* --json: one JSON object per call on stdout */
static int epfd = -1;		/* the epoll set of epoll-add */
static int file_fd = -1;	/* the current file, of open: */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [--json] OP...\n"
		"Run system calls on AF_P2PKP sockets; one output line per call:\n"
		"'NAME ARGS = RET' or 'NAME ARGS = -1 ENAME'.  The script goes on after a\n"
		"failed call; exit 0 unless an OP is malformed (exit 2).\n"
		"--json: one JSON object per call instead, {\"op\":NAME,\"arg\":ARGS,\"ret\":RET,\n"
		"\"errno\":ENAME|null, ...call-specific fields}.\n"
		"Operations (on the current socket = the last created or chosen):\n"
		"  socket[:TYPE[:PROTO[:FAMILY]]]  TYPE dgram|stream|seqpacket|raw|N\n"
		"                         (default dgram), PROTO number (0), FAMILY\n"
		"                         number (default: the module's family)\n"
		"  use:N                  make the Nth socket (from 1) current\n"
		"  bind:ADDR[:PORT]       ADDR IPv4 or [IPv6]; port default %d\n"
		"  connect:ADDR[:PORT]    add a peer\n"
		"  connect:unspec         connect(AF_UNSPEC): clear the peers\n"
		"  bind-raw:HEX, connect-raw:HEX  the address bytes as given (any\n"
		"                         length, host byte order for the family)\n"
		"  write:PATH             write(fd, PATH, strlen(PATH))\n"
		"  send:PATH              send(fd, PATH, strlen(PATH), 0)\n"
		"  send-dontwait:PATH     send() with MSG_DONTWAIT\n"
		"  recv-dontwait:PATH     recv(fd, PATH, strlen(PATH) + 1, MSG_DONTWAIT)\n"
		"  nonblock:on|off        set or clear O_NONBLOCK (fcntl)\n"
		"  write-len:PATH:N       write N bytes: PATH then NUL padding, or PATH\n"
		"                         cut to N bytes (no NUL) if N <= strlen(PATH)\n"
		"  write-long:N           write N bytes '/xxxx...' (no NUL)\n"
		"  write-raw:HEX          write the bytes given in hex (may be empty)\n"
		"  read:PATH              read(fd, PATH, strlen(PATH) + 1)\n"
		"  read-len:PATH:N        like write-len, with read()\n"
		"  recvmsg:PATH           recvmsg() with the path as buffer; prints\n"
		"                         msg_name (the sender)\n"
		"  setsockopt:peer_timeout:MS | setsockopt:rate:BYTES_PER_S\n"
		"  setsockopt:chunk:BYTES   P2PKP_CHUNK (0: from the path MTU)\n"
		"  setsockopt:sndtimeo:MS | setsockopt:rcvtimeo:MS   SO_SNDTIMEO/SO_RCVTIMEO\n"
		"  setsockopt-raw:LEVEL:NAME:HEX\n"
		"  getsockopt:peer_results|last_transfer|peer_timeout|rate|recv_fd|error\n"
		"                         (error: SO_ERROR, printed as value=ENAME or OK)\n"
		"  poll:EVENTS:MS         poll() the current socket for EVENTS (in, out,\n"
		"                         inout); prints revents=IN|OUT|ERR|HUP or none\n"
		"  epoll-add[:et]         add the current socket to this process's epoll\n"
		"                         set (EPOLLIN|EPOLLOUT, edge-triggered with et)\n"
		"  epoll-wait:N:MS        epoll_wait() until N different sockets reported\n"
		"                         events, or MS ms; ret = those sockets; prints\n"
		"                         events=SOCK#:IN|OUT|ERR,... in the order reported\n"
		"  clock                  print 'clock = MS' (CLOCK_MONOTONIC, ms)\n"
		"Descriptors instead of paths (the current file is the last opened):\n"
		"  open:FLAGS:PATH        open() PATH as the current file; FLAGS, joined\n"
		"                         by '+': r, w, rw, append, creat, trunc, path\n"
		"                         (O_PATH), dir, tmpfile (O_TMPFILE|O_RDWR in the\n"
		"                         directory PATH); mode 0600\n"
		"  close-file             close the current file\n"
		"  fstat-file             print 'size=N' of the current file\n"
		"  link-file:PATH         linkat() the current file (an O_TMPFILE) at\n"
		"                         PATH through /proc/self/fd\n"
		"  send-fd[:COUNT]        sendmsg() with an empty payload and one\n"
		"                         SCM_RIGHTS message holding the current file's\n"
		"                         descriptor COUNT times (default 1)\n"
		"  send-fd-payload:TEXT   the same with TEXT as the payload\n"
		"  send-fd-num:N          the same with descriptor number N\n"
		"  setsockopt:recv_fd:file|N  P2PKP_RECV_FD: the current file or N (-1\n"
		"                         removes); then read: (an empty path) uses it\n"
		"  getsockopt-raw:LEVEL:NAME:LEN  prints optlen and the bytes in hex\n"
		"  shutdown:rd|wr|rdwr, listen, accept, getsockname, getpeername\n"
		"  close                  close the current socket\n"
		"  sleep:MS               nanosleep (not interrupted silently)\n"
		"  alarm:MS               SIGALRM after MS ms; the handler is installed\n"
		"                         without SA_RESTART, so a blocked call fails\n"
		"                         with EINTR; 0 cancels\n"
		"  alarm-restart:MS       SIGALRM every MS ms, handler with SA_RESTART\n"
		"                         (a blocked call is restarted); 0 cancels\n"
		"  alarms                 print 'alarms = N' (signals handled so far)\n"
		"  echo:TEXT              print TEXT (a marker for tests)\n"
		"  pid                    print 'pid = N' (to signal this process)\n",
		P2PKP_PORT_DEFAULT);
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

/* --json: {"op":..,"arg":..,"ret":..,"errno":.. left open for more fields. */
static void json_begin(const char *what, long long ret, int err)
{
	const char *sp = strchr(what, ' ');

	fputs("{\"op\":", stdout);
	if (sp) {
		printf("\"%.*s\",\"arg\":", (int)(sp - what), what);
		p2pkp_json_str(stdout, sp + 1);
	} else {
		p2pkp_json_str(stdout, what);
		fputs(",\"arg\":null", stdout);
	}
	printf(",\"ret\":%lld,\"errno\":", ret < 0 ? -1 : ret);
	p2pkp_json_str(stdout, ret < 0 ? p2pkp_errname(err) : NULL);
}

static void json_end(void)
{
	fputs("}\n", stdout);
	fflush(stdout);
}

static void result(const char *what, long long ret, int err)
{
	if (json) {
		json_begin(what, ret, err);
		json_end();
		return;
	}
	if (ret < 0)
		printf("%s = -1 %s\n", what, p2pkp_errname(err));
	else
		printf("%s = %lld\n", what, ret);
	fflush(stdout);
}

/* "NAME ARGS = RET key=value" or its JSON form with a string field. */
static void result_with(const char *what, long long ret, int err,
			const char *key, const char *value)
{
	if (ret < 0) {
		result(what, ret, err);
		return;
	}
	if (json) {
		json_begin(what, ret, err);
		printf(",\"%s\":", key);
		p2pkp_json_str(stdout, value);
		json_end();
		return;
	}
	printf("%s = %lld %s=%s\n", what, ret, key, value);
	fflush(stdout);
}

static void bad(const char *op, const char *why)
{
	fprintf(stderr, PROG ": bad operation '%s': %s (see --help)\n", op, why);
	exit(2);
}

/* Decode hex into a new buffer; *n gets its length. */
static unsigned char *unhex(const char *op, const char *hex, size_t *n)
{
	size_t len = strlen(hex), i;
	unsigned char *buf;

	if (len % 2)
		bad(op, "odd number of hex digits");
	buf = malloc(len / 2 + 1);
	if (!buf)
		bad(op, "out of memory");
	for (i = 0; i < len / 2; i++) {
		int hi = p2pkp_hexval(hex[2 * i]), lo = p2pkp_hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			bad(op, "not hex");
		buf[i] = (unsigned char)(hi << 4 | lo);
	}
	*n = len / 2;
	return buf;
}

static void print_hex(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
}

/* Split "PATH:N" at the last colon; returns N and cuts arg. */
static long long split_len(const char *op, char *arg)
{
	char *c = strrchr(arg, ':');
	long long n;

	if (!c)
		bad(op, "expected PATH:N");
	*c = '\0';
	n = p2pkp_parse_uint(c + 1, 1 << 24);
	if (n < 0)
		bad(op, "bad length (0..16777216)");
	return n;
}

/* A buffer of n bytes: s, then NUL padding (s cut to n if longer). */
static char *len_buf(const char *s, size_t n)
{
	char *buf = calloc(1, n + 1);
	size_t sl = strlen(s);

	if (!buf)
		return NULL;
	memcpy(buf, s, sl < n ? sl : n);
	return buf;
}

static const char *status_name(__s32 status)
{
	return status ? p2pkp_errname(-status) : "OK";
}

static void do_getsockopt(const char *op, const char *what)
{
	char abuf[80];
	int ret, e;

	if (!strcmp(what, "peer_results")) {
		struct p2pkp_peer_result res[P2PKP_MAX_PEERS + 1];
		socklen_t len = sizeof(res);
		size_t i;

		ret = getsockopt(cur, SOL_P2PKP, P2PKP_PEER_RESULTS, res, &len);
		e = errno;
		if (ret < 0) {
			result("getsockopt peer_results", -1, e);
			return;
		}
		if (json) {
			json_begin("getsockopt peer_results", 0, 0);
			fputs(",\"peers\":[", stdout);
			for (i = 0; i < len / sizeof(res[0]); i++) {
				printf("%s{\"addr\":", i ? "," : "");
				p2pkp_json_str(stdout, p2pkp_format_addr(&res[i].addr, abuf,
									 sizeof(abuf)));
				printf(",\"state\":\"%s\",\"status\":\"%s\",\"bytes_acked\":%llu,\"datagrams_sent\":%llu,\"datagrams_retransmitted\":%llu}",
				       p2pkp_peer_state_name(res[i].state),
				       status_name(res[i].status),
				       (unsigned long long)res[i].bytes_acked,
				       (unsigned long long)res[i].datagrams_sent,
				       (unsigned long long)res[i].datagrams_retransmitted);
			}
			fputs("]", stdout);
			json_end();
			return;
		}
		printf("getsockopt peer_results = 0 n=%zu\n", len / sizeof(res[0]));
		for (i = 0; i < len / sizeof(res[0]); i++)
			printf("  peer[%zu] addr=%s state=%s status=%s bytes_acked=%llu datagrams_sent=%llu datagrams_retransmitted=%llu\n",
			       i, p2pkp_format_addr(&res[i].addr, abuf, sizeof(abuf)),
			       p2pkp_peer_state_name(res[i].state), status_name(res[i].status),
			       (unsigned long long)res[i].bytes_acked,
			       (unsigned long long)res[i].datagrams_sent,
			       (unsigned long long)res[i].datagrams_retransmitted);
	} else if (!strcmp(what, "last_transfer")) {
		struct p2pkp_transfer_info info;
		socklen_t len = sizeof(info);

		memset(&info, 0, sizeof(info));
		ret = getsockopt(cur, SOL_P2PKP, P2PKP_LAST_TRANSFER, &info, &len);
		e = errno;
		if (ret < 0) {
			result("getsockopt last_transfer", -1, e);
			return;
		}
		if (json) {
			json_begin("getsockopt last_transfer", 0, 0);
			fputs(",\"peer\":", stdout);
			p2pkp_json_str(stdout, p2pkp_format_addr(&info.peer, abuf, sizeof(abuf)));
			printf(",\"id\":\"%016llx\",\"size\":%llu,\"duration_ns\":%llu,\"status\":\"%s\",\"digest\":\"",
			       (unsigned long long)info.id, (unsigned long long)info.size,
			       (unsigned long long)info.duration_ns, status_name(info.status));
			print_hex(info.digest, sizeof(info.digest));
			fputs("\"", stdout);
			json_end();
			return;
		}
		printf("getsockopt last_transfer = 0 peer=%s id=%016llx size=%llu duration_ns=%llu status=%s digest=",
		       p2pkp_format_addr(&info.peer, abuf, sizeof(abuf)),
		       (unsigned long long)info.id, (unsigned long long)info.size,
		       (unsigned long long)info.duration_ns, status_name(info.status));
		print_hex(info.digest, sizeof(info.digest));
		printf("\n");
	} else if (!strcmp(what, "peer_timeout")) {
		__u32 ms = 0;
		socklen_t len = sizeof(ms);

		ret = getsockopt(cur, SOL_P2PKP, P2PKP_PEER_TIMEOUT, &ms, &len);
		e = errno;
		if (ret < 0) {
			result("getsockopt peer_timeout", -1, e);
			return;
		}
		if (json) {
			json_begin("getsockopt peer_timeout", 0, 0);
			printf(",\"value\":%u", ms);
			json_end();
			return;
		}
		printf("getsockopt peer_timeout = 0 value=%u\n", ms);
	} else if (!strcmp(what, "rate")) {
		__u64 rate = 0;
		socklen_t len = sizeof(rate);

		ret = getsockopt(cur, SOL_P2PKP, P2PKP_RATE, &rate, &len);
		e = errno;
		if (ret < 0) {
			result("getsockopt rate", -1, e);
			return;
		}
		if (json) {
			json_begin("getsockopt rate", 0, 0);
			printf(",\"value\":%llu", (unsigned long long)rate);
			json_end();
			return;
		}
		printf("getsockopt rate = 0 value=%llu\n", (unsigned long long)rate);
	} else if (!strcmp(what, "recv_fd")) {
		int v = -1;
		socklen_t len = sizeof(v);

		ret = getsockopt(cur, SOL_P2PKP, P2PKP_RECV_FD, &v, &len);
		e = errno;
		if (ret < 0) {
			result("getsockopt recv_fd", -1, e);
			return;
		}
		if (json) {
			json_begin("getsockopt recv_fd", 0, 0);
			printf(",\"value\":%d", v);
			json_end();
			return;
		}
		printf("getsockopt recv_fd = 0 value=%d\n", v);
	} else if (!strcmp(what, "error")) {
		int v = 0;
		socklen_t len = sizeof(v);

		ret = getsockopt(cur, SOL_SOCKET, SO_ERROR, &v, &len);
		e = errno;
		result_with("getsockopt error", ret, e, "value",
			    v ? p2pkp_errname(v) : "OK");
		return;
	} else {
		bad(op, "expected peer_results, last_transfer, peer_timeout, rate, recv_fd or error");
	}
	fflush(stdout);
}

static const char *events_name(unsigned int ev, char *buf, size_t size)
{
	static const struct { unsigned int bit; const char *name; } names[] = {
		{ POLLIN, "IN" }, { POLLOUT, "OUT" }, { POLLERR, "ERR" },
		{ POLLHUP, "HUP" }, { POLLNVAL, "NVAL" }, { POLLPRI, "PRI" },
	};
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (ev & names[i].bit)
			n += (size_t)snprintf(buf + n, size - n, "%s%s",
					      n ? "|" : "", names[i].name);
	if (!n)
		snprintf(buf, size, "none");
	return buf;
}

/* The number (from 1, as use:N) of socket fd, or 0. */
static int sock_number(int fd)
{
	int i;

	for (i = 0; i < nsocks; i++)
		if (socks[i] == fd)
			return i + 1;
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void do_poll(const char *op, char *arg)
{
	char *ms = arg ? strchr(arg, ':') : NULL;
	char what[96], evbuf[64];
	struct pollfd pfd;
	long long t;
	int ret, e;

	if (!ms)
		bad(op, "expected poll:EVENTS:MS");
	*ms++ = '\0';
	t = p2pkp_parse_uint(ms, INT_MAX);
	if (t < 0)
		bad(op, "bad milliseconds");
	pfd.fd = cur;
	pfd.revents = 0;
	if (!strcmp(arg, "in"))
		pfd.events = POLLIN;
	else if (!strcmp(arg, "out"))
		pfd.events = POLLOUT;
	else if (!strcmp(arg, "inout"))
		pfd.events = POLLIN | POLLOUT;
	else
		bad(op, "EVENTS: in, out or inout");
	ret = poll(&pfd, 1, (int)t);
	e = errno;
	snprintf(what, sizeof(what), "poll %s %lld", arg, t);
	result_with(what, ret, e, "revents",
		    events_name((unsigned int)pfd.revents, evbuf, sizeof(evbuf)));
}

static void do_epoll_add(const char *op, const char *arg)
{
	struct epoll_event ev;
	int ret, e;

	if (arg && strcmp(arg, "et"))
		bad(op, "expected epoll-add or epoll-add:et");
	if (epfd < 0) {
		epfd = epoll_create1(EPOLL_CLOEXEC);
		if (epfd < 0) {
			result("epoll_create1", -1, errno);
			return;
		}
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | EPOLLOUT | (arg ? EPOLLET : 0);
	ev.data.fd = cur;
	ret = epoll_ctl(epfd, EPOLL_CTL_ADD, cur, &ev);
	e = errno;
	result(arg ? "epoll-add et" : "epoll-add", ret, e);
}

/* Wait until @want sockets reported events (or the time is up); print them. */
static void do_epoll_wait(const char *op, char *arg)
{
	char *ms = arg ? strchr(arg, ':') : NULL;
	char what[96], evbuf[64], list[4096];
	struct epoll_event evs[64];
	bool seen[MAX_SOCKS + 1] = { false };
	long long want, t, end;
	size_t used = 0;
	int n = 0, ret = 0, e = 0, i;

	if (!ms)
		bad(op, "expected epoll-wait:N:MS");
	*ms++ = '\0';
	want = p2pkp_parse_uint(arg, 1024);
	t = p2pkp_parse_uint(ms, INT_MAX);
	if (want < 1 || t < 0)
		bad(op, "expected epoll-wait:N:MS with N 1..1024");
	if (epfd < 0)
		bad(op, "no epoll-add before");
	list[0] = '\0';
	end = now_ms() + t;
	while (n < want) {
		long long left = end - now_ms();

		if (left < 0)
			break;
		ret = epoll_wait(epfd, evs, 64, (int)left);
		if (ret < 0) {
			e = errno;
			if (e == EINTR)
				continue;
			break;
		}
		for (i = 0; i < ret; i++) {
			int k = sock_number(evs[i].data.fd);

			if (!seen[k]) {
				seen[k] = true;
				n++;
			}
			used += (size_t)snprintf(list + used, sizeof(list) - used,
						 "%s%d:%s", used ? "," : "", k,
						 events_name(evs[i].events, evbuf,
							     sizeof(evbuf)));
			if (used >= sizeof(list))
				bad(op, "too many events to print");
		}
	}
	snprintf(what, sizeof(what), "epoll-wait %lld %lld", want, t);
	result_with(what, ret < 0 ? -1 : n, e, "events", list);
}

static int sock_type(const char *op, const char *s)
{
	long long v;

	if (!strcmp(s, "dgram"))
		return SOCK_DGRAM;
	if (!strcmp(s, "stream"))
		return SOCK_STREAM;
	if (!strcmp(s, "seqpacket"))
		return SOCK_SEQPACKET;
	if (!strcmp(s, "raw"))
		return SOCK_RAW;
	v = p2pkp_parse_uint(s, INT_MAX);
	if (v < 0)
		bad(op, "bad socket type");
	return (int)v;
}

/* open:FLAGS:PATH, close-file, fstat-file, link-file:PATH */
static void do_file(const char *op, char *arg)
{
	char what[PATH_MAX + 64], proc[64];
	char *path, *tok, *save = NULL;
	int flags = 0, acc = -1, ret, e;
	struct stat st;

	if (!strcmp(op, "close-file")) {
		ret = close(file_fd);
		e = errno;
		file_fd = -1;
		result("close-file", ret, e);
		return;
	}
	if (!strcmp(op, "fstat-file")) {
		ret = fstat(file_fd, &st);
		e = errno;
		snprintf(what, sizeof(what), "%lld", ret < 0 ? 0LL : (long long)st.st_size);
		result_with("fstat-file", ret, e, "size", what);
		return;
	}
	if (!arg || !*arg)
		bad(op, "needs a path");
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", file_fd);
	if (!strcmp(op, "link-file")) {
		ret = linkat(AT_FDCWD, proc, AT_FDCWD, arg, AT_SYMLINK_FOLLOW);
		e = errno;
		snprintf(what, sizeof(what), "link-file %s", arg);
		result(what, ret, e);
		return;
	}
	path = strchr(arg, ':');
	if (!path)
		bad(op, "expected open:FLAGS:PATH");
	*path++ = '\0';
	snprintf(what, sizeof(what), "open %s %s", arg, path);
	for (tok = strtok_r(arg, "+", &save); tok; tok = strtok_r(NULL, "+", &save)) {
		if (!strcmp(tok, "r"))
			acc = O_RDONLY;
		else if (!strcmp(tok, "w"))
			acc = O_WRONLY;
		else if (!strcmp(tok, "rw"))
			acc = O_RDWR;
		else if (!strcmp(tok, "append"))
			flags |= O_APPEND;
		else if (!strcmp(tok, "creat"))
			flags |= O_CREAT;
		else if (!strcmp(tok, "trunc"))
			flags |= O_TRUNC;
		else if (!strcmp(tok, "path"))
			flags |= O_PATH;
		else if (!strcmp(tok, "dir"))
			flags |= O_DIRECTORY;
		else if (!strcmp(tok, "tmpfile"))
			flags |= O_TMPFILE;
		else
			bad(op, "FLAGS: r, w, rw, append, creat, trunc, path, dir, tmpfile");
	}
	if ((flags & O_TMPFILE) == O_TMPFILE)
		acc = O_RDWR;
	else if (acc < 0)
		acc = O_RDONLY;
	ret = open(path, acc | flags, 0600);
	e = errno;
	if (ret >= 0)
		file_fd = ret;
	result(what, ret, e);
}

/* send-fd[:COUNT], send-fd-payload:TEXT, send-fd-num:N: SCM_RIGHTS */
static void do_send_fd(const char *op, char *arg)
{
	int fds[8], fd = file_fd, count = 1, i, ret, e;
	union {
		char buf[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} ctl;
	const char *payload = "";
	char what[PATH_MAX + 64];
	struct cmsghdr *cmsg;
	struct iovec iov;
	struct msghdr msg;

	if (!strcmp(op, "send-fd-payload")) {
		if (!arg)
			bad(op, "needs a payload");
		payload = arg;
	} else if (!strcmp(op, "send-fd-num")) {
		fd = arg ? (int)p2pkp_parse_uint(arg, INT_MAX) : -1;
		if (fd < 0)
			bad(op, "needs a descriptor number");
	} else if (arg) {
		count = (int)p2pkp_parse_uint(arg, 8);
		if (count < 1)
			bad(op, "COUNT: 1..8");
	}
	for (i = 0; i < count; i++)
		fds[i] = fd;
	memset(&msg, 0, sizeof(msg));
	memset(&ctl, 0, sizeof(ctl));
	iov.iov_base = (void *)payload;
	iov.iov_len = strlen(payload);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(count * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, count * sizeof(int));
	ret = (int)sendmsg(cur, &msg, 0);
	e = errno;
	snprintf(what, sizeof(what), "%s %s", op, arg ? arg : "1");
	result(what, ret, e);
}

static void run(char *op)
{
	char *arg = strchr(op, ':');
	char what[PATH_MAX + 64];
	char abuf[80], err[160];
	long long ret;
	int e;

	if (arg)
		*arg++ = '\0';

	if (!strcmp(op, "socket")) {
		int type = SOCK_DGRAM, proto = 0, family = p2pkp_family();
		char *f[3] = { NULL, NULL, NULL };
		int i;

		for (i = 0; i < 3 && arg; i++) {
			f[i] = arg;
			arg = strchr(arg, ':');
			if (arg)
				*arg++ = '\0';
		}
		if (f[0])
			type = sock_type(op, f[0]);
		if (f[1]) {
			ret = p2pkp_parse_uint(f[1], INT_MAX);
			if (ret < 0)
				bad(op, "bad protocol");
			proto = (int)ret;
		}
		if (f[2]) {
			ret = p2pkp_parse_uint(f[2], INT_MAX);
			if (ret < 0)
				bad(op, "bad family");
			family = (int)ret;
		}
		ret = socket(family, type, proto);
		e = errno;
		if (ret >= 0) {
			if (nsocks == MAX_SOCKS)
				bad(op, "too many sockets for p2pkp-op");
			socks[nsocks++] = (int)ret;
			cur = (int)ret;
		}
		result("socket", ret, e);
		return;
	}
	if (!strcmp(op, "use")) {
		ret = arg ? p2pkp_parse_uint(arg, nsocks) : -1;
		if (ret < 1)
			bad(op, "no such socket number");
		cur = socks[ret - 1];
		snprintf(what, sizeof(what), "use %lld", ret);
		result(what, cur, 0);
		return;
	}
	if (!strcmp(op, "bind") || !strcmp(op, "connect")) {
		struct sockaddr_storage ss;
		socklen_t len;

		if (!arg)
			bad(op, "needs an address");
		if (!strcmp(op, "connect") && !strcmp(arg, "unspec")) {
			memset(&ss, 0, sizeof(ss));
			ss.ss_family = AF_UNSPEC;
			len = sizeof(struct sockaddr);
		} else if (p2pkp_parse_addr(arg, P2PKP_PORT_DEFAULT, &ss, &len,
					    err, sizeof(err))) {
			bad(op, err);
		}
		if (op[0] == 'b')
			ret = bind(cur, (struct sockaddr *)&ss, len);
		else
			ret = connect(cur, (struct sockaddr *)&ss, len);
		e = errno;
		snprintf(what, sizeof(what), "%s %s", op, arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "bind-raw") || !strcmp(op, "connect-raw")) {
		unsigned char *buf;
		size_t n;

		buf = unhex(op, arg ? arg : "", &n);
		if (op[0] == 'b')
			ret = bind(cur, (struct sockaddr *)buf, (socklen_t)n);
		else
			ret = connect(cur, (struct sockaddr *)buf, (socklen_t)n);
		e = errno;
		free(buf);
		snprintf(what, sizeof(what), "%s %zu bytes", op, n);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "write") || !strcmp(op, "send")) {
		if (!arg)
			bad(op, "needs a path");
		if (op[0] == 'w')
			ret = write(cur, arg, strlen(arg));
		else
			ret = send(cur, arg, strlen(arg), 0);
		e = errno;
		snprintf(what, sizeof(what), "%s %s", op, arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "send-dontwait") || !strcmp(op, "recv-dontwait")) {
		if (!arg)
			bad(op, "needs a path");
		if (op[0] == 's')
			ret = send(cur, arg, strlen(arg), MSG_DONTWAIT);
		else
			ret = recv(cur, arg, strlen(arg) + 1, MSG_DONTWAIT);
		e = errno;
		snprintf(what, sizeof(what), "%s %s", op, arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "nonblock")) {
		int fl = fcntl(cur, F_GETFL);

		if (!arg || (strcmp(arg, "on") && strcmp(arg, "off")))
			bad(op, "expected nonblock:on or nonblock:off");
		if (fl >= 0)
			fl = arg[1] == 'n' ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
		ret = fl < 0 ? -1 : fcntl(cur, F_SETFL, fl);
		e = errno;
		snprintf(what, sizeof(what), "nonblock %s", arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "poll")) {
		do_poll(op, arg);
		return;
	}
	if (!strcmp(op, "epoll-add")) {
		do_epoll_add(op, arg);
		return;
	}
	if (!strcmp(op, "epoll-wait")) {
		do_epoll_wait(op, arg);
		return;
	}
	if (!strcmp(op, "clock")) {
		result("clock", now_ms(), 0);
		return;
	}
	if (!strcmp(op, "open") || !strcmp(op, "close-file") ||
	    !strcmp(op, "fstat-file") || !strcmp(op, "link-file")) {
		do_file(op, arg);
		return;
	}
	if (!strcmp(op, "send-fd") || !strcmp(op, "send-fd-payload") ||
	    !strcmp(op, "send-fd-num")) {
		do_send_fd(op, arg);
		return;
	}
	if (!strcmp(op, "write-len") || !strcmp(op, "read-len")) {
		long long n;
		char *buf;

		if (!arg)
			bad(op, "expected PATH:N");
		n = split_len(op, arg);
		buf = len_buf(arg, (size_t)n);
		if (!buf)
			bad(op, "out of memory");
		if (op[0] == 'w')
			ret = write(cur, buf, (size_t)n);
		else
			ret = read(cur, buf, (size_t)n);
		e = errno;
		free(buf);
		snprintf(what, sizeof(what), "%s %s %lld", op, arg, n);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "write-long")) {
		long long n = arg ? p2pkp_parse_uint(arg, 1 << 24) : -1;
		char *buf;

		if (n < 1)
			bad(op, "expected a length 1..16777216");
		buf = malloc((size_t)n);
		if (!buf)
			bad(op, "out of memory");
		memset(buf, 'x', (size_t)n);
		buf[0] = '/';
		ret = write(cur, buf, (size_t)n);
		e = errno;
		free(buf);
		snprintf(what, sizeof(what), "write-long %lld", n);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "write-raw")) {
		unsigned char *buf;
		size_t n;

		buf = unhex(op, arg ? arg : "", &n);
		ret = write(cur, buf, n);
		e = errno;
		free(buf);
		snprintf(what, sizeof(what), "write-raw %zu bytes", n);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "read")) {
		if (!arg)
			bad(op, "needs a path");
		ret = read(cur, arg, strlen(arg) + 1);
		e = errno;
		snprintf(what, sizeof(what), "read %s", arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "recvmsg")) {
		struct sockaddr_storage from;
		struct iovec iov;
		struct msghdr msg;

		if (!arg)
			bad(op, "needs a path");
		memset(&from, 0, sizeof(from));
		memset(&msg, 0, sizeof(msg));
		iov.iov_base = arg;
		iov.iov_len = strlen(arg) + 1;
		msg.msg_name = &from;
		msg.msg_namelen = sizeof(from);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		ret = recvmsg(cur, &msg, 0);
		e = errno;
		if (json) {
			snprintf(what, sizeof(what), "recvmsg %s", arg);
			json_begin(what, ret, e);
			if (ret >= 0) {
				fputs(",\"from\":", stdout);
				p2pkp_json_str(stdout, p2pkp_format_addr(&from, abuf, sizeof(abuf)));
				printf(",\"namelen\":%u", msg.msg_namelen);
			}
			json_end();
			return;
		}
		if (ret >= 0)
			snprintf(what, sizeof(what), "recvmsg %s from=%s namelen=%u",
				 arg, p2pkp_format_addr(&from, abuf, sizeof(abuf)),
				 msg.msg_namelen);
		else
			snprintf(what, sizeof(what), "recvmsg %s", arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "setsockopt")) {
		char *val = arg ? strchr(arg, ':') : NULL;
		__u32 ms;

		if (!val)
			bad(op, "expected setsockopt:peer_timeout:MS or setsockopt:rate:BYTES");
		*val++ = '\0';
		if (!strcmp(arg, "rate")) {
			__u64 rate;

			ret = p2pkp_parse_uint(val, LLONG_MAX);
			if (ret < 0)
				bad(op, "bad bytes per second");
			rate = (__u64)ret;
			ret = setsockopt(cur, SOL_P2PKP, P2PKP_RATE, &rate, sizeof(rate));
			e = errno;
			snprintf(what, sizeof(what), "setsockopt rate %llu",
				 (unsigned long long)rate);
			result(what, ret, e);
			return;
		}
		if (!strcmp(arg, "sndtimeo") || !strcmp(arg, "rcvtimeo")) {
			struct timeval tv;

			ret = p2pkp_parse_uint(val, INT_MAX);
			if (ret < 0)
				bad(op, "bad milliseconds");
			tv.tv_sec = ret / 1000;
			tv.tv_usec = (ret % 1000) * 1000;
			ms = (__u32)ret;
			ret = setsockopt(cur, SOL_SOCKET, arg[0] == 's' ?
					 SO_SNDTIMEO : SO_RCVTIMEO, &tv, sizeof(tv));
			e = errno;
			snprintf(what, sizeof(what), "setsockopt %s %u", arg, ms);
			result(what, ret, e);
			return;
		}
		if (!strcmp(arg, "recv_fd")) {
			int fd = file_fd;

			if (strcmp(val, "file")) {
				fd = strcmp(val, "-1") ? (int)p2pkp_parse_uint(val, INT_MAX) : -1;
				if (fd < 0 && strcmp(val, "-1"))
					bad(op, "expected recv_fd:file, recv_fd:-1 or recv_fd:N");
			}
			ret = setsockopt(cur, SOL_P2PKP, P2PKP_RECV_FD, &fd, sizeof(fd));
			e = errno;
			snprintf(what, sizeof(what), "setsockopt recv_fd %s", val);
			result(what, ret, e);
			return;
		}
		if (strcmp(arg, "peer_timeout") && strcmp(arg, "chunk"))
			bad(op, "only peer_timeout, rate, chunk, recv_fd, sndtimeo and rcvtimeo can be set");
		ret = p2pkp_parse_uint(val, UINT32_MAX);
		if (ret < 0)
			bad(op, arg[0] == 'c' ? "bad bytes" : "bad milliseconds");
		ms = (__u32)ret;
		ret = setsockopt(cur, SOL_P2PKP, arg[0] == 'c' ? P2PKP_CHUNK : P2PKP_PEER_TIMEOUT,
				 &ms, sizeof(ms));
		e = errno;
		snprintf(what, sizeof(what), "setsockopt %s %u", arg, ms);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "setsockopt-raw") || !strcmp(op, "getsockopt-raw")) {
		char *f[3] = { NULL, NULL, NULL };
		long long level, name;
		int i;

		for (i = 0; i < 3 && arg; i++) {
			f[i] = arg;
			arg = strchr(arg, ':');
			if (arg && i < 2)
				*arg++ = '\0';
		}
		if (!f[2])
			bad(op, "expected LEVEL:NAME:...");
		level = p2pkp_parse_uint(f[0], INT_MAX);
		name = p2pkp_parse_uint(f[1], INT_MAX);
		if (level < 0 || name < 0)
			bad(op, "bad level or name");
		if (op[0] == 's') {
			unsigned char *buf;
			size_t n;

			buf = unhex(op, f[2], &n);
			ret = setsockopt(cur, (int)level, (int)name, buf, (socklen_t)n);
			e = errno;
			free(buf);
			snprintf(what, sizeof(what), "setsockopt-raw %lld:%lld %zu bytes",
				 level, name, n);
			result(what, ret, e);
		} else {
			long long n = p2pkp_parse_uint(f[2], 1 << 20);
			unsigned char *buf;
			socklen_t len;

			if (n < 0)
				bad(op, "bad length");
			buf = calloc(1, (size_t)n + 1);
			if (!buf)
				bad(op, "out of memory");
			len = (socklen_t)n;
			ret = getsockopt(cur, (int)level, (int)name, buf, &len);
			e = errno;
			snprintf(what, sizeof(what), "getsockopt-raw %lld:%lld %lld",
				 level, name, n);
			if (ret < 0) {
				result(what, ret, e);
			} else if (json) {
				json_begin(what, ret, e);
				printf(",\"optlen\":%u,\"data\":\"", len);
				print_hex(buf, len < n ? len : (size_t)n);
				fputs("\"", stdout);
				json_end();
			} else {
				printf("%s = %lld optlen=%u data=", what, ret, len);
				print_hex(buf, len < n ? len : (size_t)n);
				printf("\n");
				fflush(stdout);
			}
			free(buf);
		}
		return;
	}
	if (!strcmp(op, "getsockopt")) {
		if (!arg)
			bad(op, "needs an option name");
		do_getsockopt(op, arg);
		return;
	}
	if (!strcmp(op, "shutdown")) {
		int how;

		if (arg && !strcmp(arg, "rd"))
			how = SHUT_RD;
		else if (arg && !strcmp(arg, "wr"))
			how = SHUT_WR;
		else if (arg && !strcmp(arg, "rdwr"))
			how = SHUT_RDWR;
		else
			bad(op, "expected rd, wr or rdwr");
		ret = shutdown(cur, how);
		e = errno;
		snprintf(what, sizeof(what), "shutdown %s", arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "listen")) {
		ret = listen(cur, 1);
		result("listen", ret, errno);
		return;
	}
	if (!strcmp(op, "accept")) {
		ret = accept(cur, NULL, NULL);
		e = errno;
		result("accept", ret, e);
		if (ret >= 0)
			close((int)ret);
		return;
	}
	if (!strcmp(op, "getsockname") || !strcmp(op, "getpeername")) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);

		memset(&ss, 0, sizeof(ss));
		if (op[3] == 's')
			ret = getsockname(cur, (struct sockaddr *)&ss, &len);
		else
			ret = getpeername(cur, (struct sockaddr *)&ss, &len);
		e = errno;
		if (ret < 0) {
			result(op, ret, e);
		} else if (json) {
			json_begin(op, ret, e);
			fputs(",\"addr\":", stdout);
			p2pkp_json_str(stdout, p2pkp_format_addr(&ss, abuf, sizeof(abuf)));
			printf(",\"len\":%u", len);
			json_end();
		} else {
			printf("%s = 0 addr=%s len=%u\n", op,
			       p2pkp_format_addr(&ss, abuf, sizeof(abuf)), len);
			fflush(stdout);
		}
		return;
	}
	if (!strcmp(op, "close")) {
		ret = close(cur);
		e = errno;
		result("close", ret, e);
		return;
	}
	if (!strcmp(op, "sleep")) {
		struct timespec ts;

		ret = arg ? p2pkp_parse_uint(arg, 86400000) : -1;
		if (ret < 0)
			bad(op, "expected milliseconds");
		ts.tv_sec = ret / 1000;
		ts.tv_nsec = (ret % 1000) * 1000000L;
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		snprintf(what, sizeof(what), "sleep %lld", ret);
		result(what, 0, 0);
		return;
	}
	if (!strcmp(op, "alarm") || !strcmp(op, "alarm-restart")) {
		bool restart = !strcmp(op, "alarm-restart");
		struct itimerval it;
		struct sigaction sa;

		ret = arg ? p2pkp_parse_uint(arg, 86400000) : -1;
		if (ret < 0)
			bad(op, "expected milliseconds");
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_alarm;
		sigemptyset(&sa.sa_mask);
		/* alarm: no SA_RESTART, blocked calls get EINTR; alarm-restart:
		 * SA_RESTART and repeating, like SIGCHLD in a busy program
		 */
		sa.sa_flags = restart ? SA_RESTART : 0;
		sigaction(SIGALRM, &sa, NULL);
		memset(&it, 0, sizeof(it));
		it.it_value.tv_sec = ret / 1000;
		it.it_value.tv_usec = (ret % 1000) * 1000;
		if (restart)
			it.it_interval = it.it_value;
		ret = setitimer(ITIMER_REAL, &it, NULL);
		e = errno;
		snprintf(what, sizeof(what), "alarm %s", arg);
		result(what, ret, e);
		return;
	}
	if (!strcmp(op, "alarms")) {
		result("alarms", alarms, 0);
		return;
	}
	if (!strcmp(op, "pid")) {
		result("pid", getpid(), 0);
		return;
	}
	if (!strcmp(op, "echo")) {
		if (json) {
			fputs("{\"op\":\"echo\",\"arg\":", stdout);
			p2pkp_json_str(stdout, arg ? arg : "");
			fputs(",\"ret\":0,\"errno\":null}\n", stdout);
		} else {
			printf("%s\n", arg ? arg : "");
		}
		fflush(stdout);
		return;
	}
	bad(op, "unknown operation");
}

int main(int argc, char **argv)
{
	int i = 1;

	if (argc > 1 && (!strcmp(argv[1], "--json") || !strcmp(argv[1], "-j"))) {
		json = 1;
		i = 2;
	}
	if (argc <= i) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
		usage(stdout);
		return 0;
	}
	for (; i < argc; i++)
		run(argv[i]);
	return 0;
}
