// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-fanout - send several files to several groups of receivers at once,
 * from one thread: one AF_P2PKP socket per FILE=GROUP job, a non-blocking
 * write() on each (EINPROGRESS: the kernel runs the transfer), then one
 * edge-triggered epoll set until every job is over; the same write() again
 * returns each job's result (docs/protocol.md section 1.5).  The example of
 * an event loop over P2PKP sockets.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "p2pkp-util.h"

#define PROG "p2pkp-fanout"
#define MAX_JOBS 256

struct job {
	char *file;			/* absolute path */
	int fd;
	int npeers;
	bool over;
	int err;			/* 0 or the errno of its failure */
};

static int json;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [--timeout MS] [--key-file FILE] [--json]\n"
		"                    FILE=HOST[:PORT][,HOST[:PORT]...]...\n"
		"Send each FILE to its group of receivers, all jobs at once from one\n"
		"thread: one socket per job, non-blocking write()s and one epoll set.\n"
		"\n"
		"  FILE=GROUP            a job: an absolute FILE and its receivers (IPv4\n"
		"                        dotted quad or [IPv6] literal, port default %d,\n"
		"                        at most %d), comma-separated; at most %d jobs\n"
		"  -T, --timeout MS      P2PKP_PEER_TIMEOUT of every socket\n"
		"  -k, --key-file FILE   P2PKP_KEY of every socket (as p2pkp-send)\n"
		"  -j, --json            one JSON object per line: p2pkp-send's \"sent\",\n"
		"                        \"peer\" and \"error\" events per job as it ends, then\n"
		"                        {\"event\":\"fanout\",\"jobs\":N,\"failed\":K,\"wall_ns\":T}\n"
		"  -h, --help            this text\n"
		"\n"
		"Each job's lines are printed when it ends, in the order the jobs end.\n"
		"Exit 0 if every job delivered its file to every receiver, 1 otherwise,\n"
		"2 on a usage error.\n",
		P2PKP_PORT_DEFAULT, P2PKP_MAX_PEERS, MAX_JOBS);
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void report_error(const char *call, const char *arg, int e)
{
	if (json)
		p2pkp_json_error(call, arg, e);
	else
		fprintf(stderr, PROG ": %s %s: %s (%s)\n", call, arg,
			p2pkp_errname(e), strerror(e));
}

/* Check "HOST[:PORT],..." of FILE before any socket is made; exit 2 if bad. */
static void check_group(const char *file, const char *group)
{
	char *copy = strdup(group), *save = NULL, *spec, err[160];
	struct sockaddr_storage ss;
	socklen_t len;
	int n = 0;

	if (!copy) {
		fprintf(stderr, PROG ": out of memory\n");
		exit(1);
	}
	for (spec = strtok_r(copy, ",", &save); spec;
	     spec = strtok_r(NULL, ",", &save), n++) {
		if (p2pkp_parse_addr(spec, P2PKP_PORT_DEFAULT, &ss, &len, err,
				     sizeof(err))) {
			fprintf(stderr, PROG ": %s: %s\n", file, err);
			exit(2);
		}
	}
	free(copy);
	if (!n || n > P2PKP_MAX_PEERS) {
		fprintf(stderr, PROG ": %s: 1 to %d receivers per job\n", file,
			P2PKP_MAX_PEERS);
		exit(2);
	}
}

/* Socket, peers and options of job j from "HOST:PORT,..."; -1 on failure. */
static int job_open(struct job *j, char *group, long long timeout,
		    const char *key_file)
{
	char *save = NULL, *spec, err[160], abuf[80];
	struct sockaddr_storage ss;
	socklen_t len;

	j->fd = p2pkp_socket(PROG, json);
	if (j->fd < 0)
		return -1;
	if (key_file && p2pkp_set_key_file(j->fd, key_file, PROG) < 0)
		return -1;
	for (spec = strtok_r(group, ",", &save); spec;
	     spec = strtok_r(NULL, ",", &save)) {
		if (p2pkp_parse_addr(spec, P2PKP_PORT_DEFAULT, &ss, &len, err,
				     sizeof(err)))
			return -1;	/* not after check_group() */
		if (connect(j->fd, (struct sockaddr *)&ss, len) < 0) {
			report_error("connect",
				     p2pkp_format_addr(&ss, abuf, sizeof(abuf)),
				     errno);
			return -1;
		}
		j->npeers++;
	}
	if (timeout >= 0 &&
	    p2pkp_set_peer_timeout(j->fd, (__u32)timeout, PROG) < 0)
		return -1;
	if (fcntl(j->fd, F_SETFL, fcntl(j->fd, F_GETFL) | O_NONBLOCK) < 0) {
		report_error("fcntl", "O_NONBLOCK", errno);
		return -1;
	}
	return 0;
}

/*
 * write() of job j: the first call starts it (EINPROGRESS), a later one
 * returns its result once it is over.  True when the job is over.
 */
static bool job_write(struct job *j)
{
	size_t len = strlen(j->file);
	ssize_t n = write(j->fd, j->file, len);
	int e = errno;

	if (n < 0 && (e == EINPROGRESS || e == EALREADY || e == EINTR))
		return false;
	j->over = true;
	j->err = n == (ssize_t)len ? 0 : n < 0 ? e : EIO;
	if (j->err) {
		report_error("write", j->file, j->err);
		p2pkp_print_peer_results(j->fd, stderr, PROG ":   ", j->file, json);
	} else {
		p2pkp_print_sent(j->fd, j->file, j->npeers, json);
		p2pkp_print_peer_results(j->fd, stdout, "  ", j->file, json);
	}
	fflush(stdout);
	return true;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 'T' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct job jobs[MAX_JOBS];
	struct epoll_event evs[64];
	const char *key_file = NULL;
	long long timeout = -1, t0;
	int njobs = 0, left = 0, failed = 0;
	int c, i, n, ep;

	while ((c = getopt_long(argc, argv, "T:k:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'T':
			timeout = p2pkp_parse_timeout(PROG, optarg);
			if (timeout < 0)
				return 2;
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind == argc || argc - optind > MAX_JOBS) {
		fprintf(stderr, PROG ": need 1 to %d FILE=GROUP jobs (see --help)\n",
			MAX_JOBS);
		return 2;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		report_error("epoll_create1", "", errno);
		return 1;
	}
	for (i = optind; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (!eq || argv[i][0] != '/' || !eq[1]) {
			fprintf(stderr, PROG ": '%s': expected /ABS/FILE=HOST[:PORT],...\n",
				argv[i]);
			return 2;
		}
		*eq = '\0';
		check_group(argv[i], eq + 1);
	}
	t0 = now_ns();
	for (i = optind; i < argc; i++) {
		struct job *j = &jobs[njobs++];
		struct epoll_event ev;

		j->file = argv[i];
		if (job_open(j, argv[i] + strlen(argv[i]) + 1, timeout, key_file) < 0)
			return 1;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLOUT | EPOLLET;
		ev.data.u32 = (__u32)(j - jobs);
		/* registered before the write: its end cannot be missed */
		if (epoll_ctl(ep, EPOLL_CTL_ADD, j->fd, &ev) < 0) {
			report_error("epoll_ctl", j->file, errno);
			return 1;
		}
		if (!job_write(j))
			left++;
		else
			failed += j->err != 0;
	}
	while (left) {
		n = epoll_wait(ep, evs, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			report_error("epoll_wait", "", errno);
			return 1;
		}
		for (i = 0; i < n; i++) {
			struct job *j = &jobs[evs[i].data.u32];

			if (j->over || !job_write(j))
				continue;
			left--;
			failed += j->err != 0;
		}
	}
	if (json)
		printf("{\"event\":\"fanout\",\"jobs\":%d,\"failed\":%d,\"wall_ns\":%lld}\n",
		       njobs, failed, now_ns() - t0);
	else
		printf("%d job%s, %d failed, %.3f ms\n", njobs, njobs == 1 ? "" : "s",
		       failed, (double)(now_ns() - t0) / 1e6);
	for (i = 0; i < njobs; i++)
		close(jobs[i].fd);
	close(ep);
	return failed ? 1 : 0;
}
