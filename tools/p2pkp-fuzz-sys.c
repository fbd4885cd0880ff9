// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-fuzz-sys - random system call sequences on AF_P2PKP sockets.
 *
 * Each sequence (numbered from 0) is a short random script of socket, bind,
 * connect, write, read, sendmsg, recvmsg, setsockopt, getsockopt, poll,
 * shutdown and close calls with wild arguments (bad lengths, unmapped and
 * NULL pointers, huge and unterminated paths, other address families, random
 * option levels/names/lengths).  Its random numbers come only from
 * (seed, sequence number), so "--seed S --only N" replays sequence N alone.
 * Several threads run sequences at once.  Every call that may block is
 * bounded: before it a per-thread timer is armed (1..300 ms) whose signal
 * (SIGUSR1, handler without SA_RESTART) interrupts it; sockets also get a
 * short P2PKP_PEER_TIMEOUT most of the time.  Peers are only the addresses
 * given with --peers (the guest's own and its cluster's) and ports
 * 7900..7907, which the threads' own receivers also bind.  Every 25th
 * sequence first waits until no sequence runs and idles 150 ms with no
 * P2PKP socket open: a window for an "rmmod p2pkp" loop run alongside.
 *
 * Output: "seed=S" first; at the end one line per call with its result
 * counts, then "sequences=N calls=C".  Exit 0; 1 on a contract violation
 * (printed with its sequence number); 3 if no sequence finished for 60 s
 * (a hang: the stuck sequences are printed).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "p2pkp.h"
#include "p2pkp-util.h"

#define PROG "p2pkp-fuzz-sys"
#define MAX_THREADS 16
#define MAX_PEERS_ARG 16
#define FDS 4
#define PORT_BASE 7900
#define NPORTS 8
#define BIG_PATH 8192
#define CTL_OFF (2 * BIG_PATH + 64)
#define BUF_SIZE (CTL_OFF + 512)
#define QUIESCE_EVERY 25
#define QUIESCE_US 150000
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum {
	C_SOCKET, C_BIND, C_CONNECT, C_WRITE, C_READ, C_SENDMSG, C_RECVMSG,
	C_SETSOCKOPT, C_GETSOCKOPT, C_POLL, C_SHUTDOWN, C_CLOSE, C_NCALLS
};

static const char *const call_names[C_NCALLS] = {
	"socket", "bind", "connect", "write", "read", "sendmsg", "recvmsg",
	"setsockopt", "getsockopt", "poll", "shutdown", "close",
};

#define NERR 134	/* errno values counted individually */
static atomic_long results[C_NCALLS][NERR + 2];	/* [0] ok, [e] errno, [NERR+1] other */

static int family = P2PKP_FAMILY_DEFAULT;
static uint64_t seed;
static long nseq = 1000, only = -1;
static int nthreads = 2;
static struct sockaddr_storage peers[MAX_PEERS_ARG];
static socklen_t peer_len[MAX_PEERS_ARG];
static int npeers;
static char scratch[64];
static char srcfile[96];
static char *bad;		/* a PROT_NONE page: unmapped for the kernel */
static atomic_long next_seq, done_seq, calls;
static atomic_int failed;
static atomic_long running[MAX_THREADS];	/* sequence + 1 per thread, 0 idle */
static volatile sig_atomic_t sigs;
/* sequences hold it shared; every QUIESCE_EVERY-th takes it exclusive and idles */
static pthread_rwlock_t quiesce;

static void on_sig(int sig)
{
	(void)sig;
	sigs++;
}

struct rng {
	uint64_t s;
};

static uint64_t next(struct rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rnd(struct rng *r, uint64_t n)
{
	return n ? next(r) % n : 0;
}

static int chance(struct rng *r, int pct)
{
	return (int)rnd(r, 100) < pct;
}

static void count(int call, long ret)
{
	int e = errno;

	atomic_fetch_add(&calls, 1);
	if (ret >= 0)
		atomic_fetch_add(&results[call][0], 1);
	else if (e > 0 && e <= NERR)
		atomic_fetch_add(&results[call][e], 1);
	else
		atomic_fetch_add(&results[call][NERR + 1], 1);
}

static void violation(long seq, const char *what)
{
	fprintf(stderr, PROG ": contract violation in sequence %ld (seed %llu): %s\n",
		seq, (unsigned long long)seed, what);
	atomic_store(&failed, 1);
}

/* Arm this thread's timer: its SIGUSR1 interrupts the next blocking call. */
static void arm(timer_t t, struct rng *r)
{
	struct itimerspec its = { 0 };
	long ms = 1 + (long)rnd(r, 300);

	its.it_value.tv_sec = ms / 1000;
	its.it_value.tv_nsec = (ms % 1000) * 1000000L;
	/* keep firing: a call that restarts gets interrupted again */
	its.it_interval.tv_nsec = 50 * 1000000L;
	timer_settime(t, 0, &its, NULL);
}

static void disarm(timer_t t)
{
	struct itimerspec its = { 0 };

	timer_settime(t, 0, &its, NULL);
}

/* A pointer the kernel may not read or write. */
static void *wild_ptr(struct rng *r)
{
	static const uintptr_t w[] = { 0, 1, 4095, (uintptr_t)-1, (uintptr_t)-4096,
				       0x7fffffffe000ULL };

	if (chance(r, 50))
		return bad + rnd(r, 4096);
	return (void *)w[rnd(r, ARRAY_SIZE(w))];
}

/* Fill *ss with a random address; returns the length to pass (maybe wrong). */
static socklen_t rand_addr(struct rng *r, struct sockaddr_storage *ss, int for_connect)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	static const socklen_t odd[] = { 0, 1, 2, 3, 15, 16, 27, 28, 29, 128, 129,
					 0x7fffffff };
	socklen_t len;
	int k = (int)rnd(r, 10);
	uint16_t port = htons(PORT_BASE + (uint16_t)rnd(r, NPORTS));

	memset(ss, 0, sizeof(*ss));
	if (k < 5 && npeers) {
		int i = (int)rnd(r, npeers);

		memcpy(ss, &peers[i], peer_len[i]);
		len = peer_len[i];
		if (ss->ss_family == AF_INET)
			in->sin_port = port;
		else
			in6->sin6_port = port;
		if (!for_connect && chance(r, 30)) {
			/* bind: any address, sometimes port 0 */
			if (ss->ss_family == AF_INET)
				in->sin_addr.s_addr = htonl(INADDR_ANY);
			if (chance(r, 30))
				in->sin_port = 0;
		}
	} else if (k == 5) {
		ss->ss_family = AF_UNSPEC;
		len = sizeof(sa_family_t);
	} else if (k == 6) {
		static const int fams[] = { AF_UNIX, AF_PACKET, AF_NETLINK, 12, 45, 46,
					    255, 0xffff };
		struct sockaddr_un *un = (struct sockaddr_un *)ss;

		ss->ss_family = (sa_family_t)fams[rnd(r, ARRAY_SIZE(fams))];
		snprintf(un->sun_path, sizeof(un->sun_path), "/tmp/x");
		len = (socklen_t)rnd(r, sizeof(*ss) + 1);
	} else {
		/* inet family with garbage or a wrong length */
		ss->ss_family = chance(r, 50) ? AF_INET : AF_INET6;
		for (size_t i = sizeof(sa_family_t); i < sizeof(*ss); i++)
			((unsigned char *)ss)[i] = (unsigned char)next(r);
		if (chance(r, 50)) {
			/* a well-formed loopback address on one of our ports */
			memset((char *)ss + sizeof(sa_family_t), 0,
			       sizeof(*ss) - sizeof(sa_family_t));
			if (ss->ss_family == AF_INET) {
				in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
				in->sin_port = port;
			} else {
				in6->sin6_addr = in6addr_loopback;
				in6->sin6_port = port;
			}
		}
		len = odd[rnd(r, ARRAY_SIZE(odd))];
		if (len > sizeof(*ss) && len != 0x7fffffff)
			len = sizeof(*ss);
	}
	return len;
}

/* A path argument: (buffer, length); buffer may be wild. */
static const char *rand_path(struct rng *r, char *buf, size_t *len, int for_read,
			     long seq)
{
	static const char *const src[] = { "/etc/hostname", "/etc/passwd", "/dev/null",
					   "/dev/zero", "/proc/self/status", "/",
					   "/tmp", "relative", "", "/nonexistent/x",
					   "/etc/shadow" };
	int k = (int)rnd(r, 10);

	if (k == 0) {
		*len = (size_t)rnd(r, 5000);
		return wild_ptr(r);
	}
	if (k == 1) {
		/* huge, maybe unterminated */
		size_t n = 1 + (size_t)rnd(r, BIG_PATH - 1);

		buf[0] = '/';
		memset(buf + 1, chance(r, 50) ? 'a' : '/', n - 1);
		buf[n] = 0;
		*len = chance(r, 50) ? n : n + 1;
		return buf;
	}
	if (k == 2) {
		for (size_t i = 0; i < 64; i++)
			buf[i] = (char)next(r);
		*len = (size_t)rnd(r, 65);
		return buf;
	}
	if (for_read) {
		if (k < 7)
			snprintf(buf, BIG_PATH, "%s/f%ld-%d", scratch, seq,
				 (int)rnd(r, 3));
		else if (k == 7)
			snprintf(buf, BIG_PATH, "%s/", scratch);
		else if (k == 8)
			snprintf(buf, BIG_PATH, "%s/..", scratch);
		else
			snprintf(buf, BIG_PATH, "%s", src[rnd(r, 11)]);
	} else {
		if (k < 6)
			snprintf(buf, BIG_PATH, "%s", srcfile);
		else
			snprintf(buf, BIG_PATH, "%s", src[rnd(r, 11)]);
	}
	*len = strlen(buf) + (chance(r, 50) ? 1 : 0);
	if (chance(r, 10))
		*len = chance(r, 50) ? 0 : (size_t)rnd(r, BIG_PATH);
	return buf;
}

static void set_timeout(int fd, struct rng *r)
{
	unsigned int ms = 100 + (unsigned int)rnd(r, 400);

	count(C_SETSOCKOPT, setsockopt(fd, SOL_P2PKP, P2PKP_PEER_TIMEOUT, &ms, sizeof(ms)));
}

static void run_sequence(long seq, timer_t t, char *buf)
{
	struct rng r = { seed ^ ((uint64_t)seq * 0xd1342543de82ef95ULL) };
	int fds[FDS] = { -1, -1, -1, -1 };
	int nops = 1 + (int)rnd(&r, 24);
	struct sockaddr_storage ss;

	for (int op = 0; op < nops; op++) {
		int slot = (int)rnd(&r, FDS);
		int fd = fds[slot];
		int call = (int)rnd(&r, C_NCALLS);
		long ret;

		if (fd < 0 && call != C_POLL)
			call = C_SOCKET;
		switch (call) {
		case C_SOCKET: {
			int type = chance(&r, 90) ? SOCK_DGRAM :
				   (int)rnd(&r, 12) | (chance(&r, 50) ? SOCK_NONBLOCK : 0);
			int proto = chance(&r, 90) ? 0 : (int)next(&r);

			if (fd >= 0)
				close(fd);
			fds[slot] = socket(family, type, proto);
			count(C_SOCKET, fds[slot]);
			if (fds[slot] >= 0 && chance(&r, 85))
				set_timeout(fds[slot], &r);
			break;
		}
		case C_BIND:
		case C_CONNECT: {
			socklen_t len = rand_addr(&r, &ss, call == C_CONNECT);
			const void *a = chance(&r, 8) ? wild_ptr(&r) : (void *)&ss;

			errno = 0;
			ret = call == C_BIND ? bind(fd, a, len) : connect(fd, a, len);
			count(call, ret);
			break;
		}
		case C_WRITE:
		case C_READ: {
			size_t len;
			const char *p = rand_path(&r, buf, &len, call == C_READ, seq);

			arm(t, &r);
			ret = call == C_WRITE ? write(fd, p, len) : read(fd, (char *)p, len);
			disarm(t);
			count(call, ret);
			if (ret > 0 && call == C_WRITE && (size_t)ret != len)
				violation(seq, "write returned neither -1 nor len");
			break;
		}
		case C_SENDMSG:
		case C_RECVMSG: {
			struct iovec iov[4];
			struct msghdr m = { 0 };
			int n = (int)rnd(&r, 5);
			size_t len;

			for (int i = 0; i < n; i++) {
				const char *p = rand_path(&r, buf + BIG_PATH * (i & 1), &len,
							  call == C_RECVMSG, seq);

				iov[i].iov_base = (void *)p;
				iov[i].iov_len = chance(&r, 10) ? (size_t)-1 >> 1 : len;
			}
			m.msg_iov = chance(&r, 5) ? wild_ptr(&r) : iov;
			m.msg_iovlen = (size_t)n;
			if (chance(&r, 40)) {
				m.msg_namelen = rand_addr(&r, &ss, 1);
				m.msg_name = chance(&r, 10) ? wild_ptr(&r) : (void *)&ss;
			}
			if (chance(&r, 10)) {
				m.msg_control = chance(&r, 50) ? wild_ptr(&r) : buf + CTL_OFF;
				m.msg_controllen = (size_t)rnd(&r, 256);
			}
			arm(t, &r);
			ret = call == C_SENDMSG ?
			      sendmsg(fd, &m, (int)(next(&r) & (MSG_DONTWAIT | MSG_OOB |
								MSG_PEEK | MSG_TRUNC))) :
			      recvmsg(fd, &m, (int)(next(&r) & (MSG_DONTWAIT | MSG_PEEK |
								MSG_WAITALL | MSG_TRUNC)));
			disarm(t);
			count(call, ret);
			break;
		}
		case C_SETSOCKOPT:
		case C_GETSOCKOPT: {
			static const int levels[] = { SOL_P2PKP, SOL_P2PKP, SOL_P2PKP,
						      SOL_SOCKET, 0, -1, 299, 301 };
			int level = levels[rnd(&r, ARRAY_SIZE(levels))];
			int name = chance(&r, 80) ? (int)rnd(&r, 6) : (int)next(&r);
			static const int lens[] = { 0, 1, 3, 4, 5, 8, 100, 132, 200, 4096,
						    -1, 0x7fffffff };
			int olen = lens[rnd(&r, ARRAY_SIZE(lens))];
			void *val = chance(&r, 15) ? wild_ptr(&r) : buf;
			socklen_t gl;

			if (level == SOL_SOCKET && chance(&r, 70))
				name = SO_RCVTIMEO;	/* keep SOL_SOCKET tame */
			if (olen > 4096 && val == buf)
				olen = 4096;	/* never let the kernel write past buf */
			gl = (socklen_t)olen;
			for (int i = 0; i < 8; i++)
				buf[i] = (char)next(&r);
			if (call == C_SETSOCKOPT) {
				ret = setsockopt(fd, level, name, val, (socklen_t)olen);
			} else {
				/* canary after optlen (val == buf: olen <= 4096) */
				int at = val == buf && olen > 0 ? olen : 0;

				memset(buf + at, 0xa5, 64);
				ret = getsockopt(fd, level, name, val,
						 chance(&r, 5) ? wild_ptr(&r) : &gl);
				if (ret == 0 && level == SOL_P2PKP && val == buf &&
				    (int)gl > olen && olen >= 0)
					violation(seq, "getsockopt optlen grew past the buffer");
				for (int i = 0; i < 64 && val == buf; i++)
					if ((unsigned char)buf[at + i] != 0xa5) {
						violation(seq, "getsockopt wrote past optlen");
						break;
					}
			}
			count(call, ret);
			break;
		}
		case C_POLL: {
			struct pollfd p[FDS];

			for (int i = 0; i < FDS; i++) {
				p[i].fd = fds[i];
				p[i].events = (short)next(&r);
			}
			count(C_POLL, poll(p, FDS, (int)rnd(&r, 10)));
			break;
		}
		case C_SHUTDOWN:
			count(C_SHUTDOWN, shutdown(fd, (int)rnd(&r, 4)));
			break;
		case C_CLOSE:
			count(C_CLOSE, close(fd));
			fds[slot] = -1;
			break;
		}
	}
	for (int i = 0; i < FDS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void *worker(void *arg)
{
	long idx = (long)arg;
	struct sigevent sev = { 0 };
	timer_t t;
	/* two path buffers for the iovecs, then control data */
	char *buf = malloc(BUF_SIZE);

	if (!buf) {
		fprintf(stderr, PROG ": out of memory\n");
		exit(1);
	}
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGUSR1;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &t)) {
		perror(PROG ": timer_create");
		exit(1);
	}
	for (;;) {
		long seq = only >= 0 ? only : atomic_fetch_add(&next_seq, 1);

		if (only >= 0 ? idx > 0 || atomic_fetch_add(&next_seq, 1) > 0 : seq >= nseq)
			break;
		if (seq % QUIESCE_EVERY == QUIESCE_EVERY - 1) {
			/* no P2PKP socket in the process: a window for rmmod */
			pthread_rwlock_wrlock(&quiesce);
			usleep(QUIESCE_US);
			pthread_rwlock_unlock(&quiesce);
		}
		pthread_rwlock_rdlock(&quiesce);
		atomic_store(&running[idx], seq + 1);
		run_sequence(seq, t, buf);
		atomic_store(&running[idx], 0);
		pthread_rwlock_unlock(&quiesce);
		atomic_fetch_add(&done_seq, 1);
	}
	timer_delete(t);
	free(buf);
	return NULL;
}

static int add_peer(const char *s)
{
	struct sockaddr_in *in = (struct sockaddr_in *)&peers[npeers];
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&peers[npeers];

	if (npeers == MAX_PEERS_ARG)
		return -1;
	if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		peer_len[npeers++] = sizeof(*in);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		peer_len[npeers++] = sizeof(*in6);
		return 0;
	}
	return -1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [--seed S] [--sequences N] [--threads T] [--only N]\n"
		"                      [--peers ADDR,ADDR...]\n"
		"Random system call sequences on AF_P2PKP sockets (see the source header).\n"
		"  --peers  IPv4/IPv6 literals of this guest and its cluster only\n"
		"  --only N replay sequence N of seed S alone (one thread)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "sequences", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "only", required_argument, NULL, 'o' },
		{ "peers", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	pthread_t th[MAX_THREADS];
	struct sigaction sa = { 0 };
	struct timespec ts;
	long last_done = 0, stall = 0;
	int c, fd;
	FILE *f;

	clock_gettime(CLOCK_REALTIME, &ts);
	seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
	while ((c = getopt_long(argc, argv, "s:n:t:o:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			nseq = atol(optarg);
			break;
		case 't':
			nthreads = atoi(optarg);
			if (nthreads < 1 || nthreads > MAX_THREADS) {
				fprintf(stderr, PROG ": --threads 1..%d\n", MAX_THREADS);
				return 2;
			}
			break;
		case 'o':
			only = atol(optarg);
			break;
		case 'p':
			for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ","))
				if (add_peer(tok)) {
					fprintf(stderr, PROG ": --peers: bad address '%s'\n", tok);
					return 2;
				}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	family = p2pkp_family();
	printf("seed=%llu\n", (unsigned long long)seed);
	fflush(stdout);

	bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bad == MAP_FAILED) {
		perror(PROG ": mmap");
		return 1;
	}
	snprintf(scratch, sizeof(scratch), "/tmp/p2pkp-fuzz-sys.%d", (int)getpid());
	snprintf(srcfile, sizeof(srcfile), "%s/src", scratch);
	if (mkdir(scratch, 0755)) {
		perror(PROG ": mkdir scratch");
		return 1;
	}
	f = fopen(srcfile, "w");
	if (!f) {
		perror(PROG ": create source file");
		return 1;
	}
	for (int i = 0; i < 20000; i++)
		fputc(i * 7 + 3, f);
	fclose(f);

	sa.sa_handler = on_sig;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART: interrupts calls */
	signal(SIGPIPE, SIG_IGN);
	if (only >= 0)
		nthreads = 1;
	{
		pthread_rwlockattr_t ra;

		/* writer preference: the quiescing sequence is not starved */
		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra,
					      PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&quiesce, &ra);
	}
	for (long i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)i)) {
			fprintf(stderr, PROG ": pthread_create failed\n");
			return 1;
		}
	/* watchdog: some sequence must finish every 60 s */
	for (;;) {
		long d = atomic_load(&done_seq);
		long want = only >= 0 ? 1 : nseq;

		if (d >= want)
			break;
		sleep(1);
		if (d != last_done) {
			last_done = d;
			stall = 0;
		} else if (++stall >= 60) {
			printf("HANG: no sequence finished for 60 s (seed %llu); running:",
			       (unsigned long long)seed);
			for (int i = 0; i < nthreads; i++)
				if (atomic_load(&running[i]))
					printf(" %ld", atomic_load(&running[i]) - 1);
			printf("\n");
			fflush(stdout);
			_exit(3);
		}
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);

	for (int k = 0; k < C_NCALLS; k++) {
		printf("%s: ok=%ld", call_names[k], atomic_load(&results[k][0]));
		for (int e = 1; e <= NERR; e++)
			if (atomic_load(&results[k][e]))
				printf(" %s=%ld", p2pkp_errname(e), atomic_load(&results[k][e]));
		if (atomic_load(&results[k][NERR + 1]))
			printf(" other=%ld", atomic_load(&results[k][NERR + 1]));
		printf("\n");
	}
	/* remove what the receivers stored, then the scratch directory */
	fd = snprintf(NULL, 0, "rm -rf %s", scratch);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", scratch);
		if (fd > 0 && system(cmd) != 0)
			fprintf(stderr, PROG ": could not remove %s\n", scratch);
	}
	printf("signals=%ld sequences=%ld calls=%ld seed=%llu %s\n", (long)sigs,
	       only >= 0 ? 1L : nseq, atomic_load(&calls), (unsigned long long)seed,
	       atomic_load(&failed) ? "FAILED" : "OK");
	return atomic_load(&failed) ? 1 : 0;
}
