// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-send - send files to one or more P2PKP receivers.
 *
 * The transfer makes only the paper's system calls: one socket(), one
 * connect() per --to, one write() per FILE (plus one setsockopt() per
 * option that sets one: --timeout, --rate, --chunk, --resume, --key-file,
 * --group and its options).  Relative FILE names are made absolute with one
 * getcwd() before socket(); nothing else is looked up.  On success nothing
 * is printed unless --verbose (printing is a write() too); per-peer results
 * (one getsockopt()) are fetched only after a failed write or with
 * --verbose.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "p2pkp-util.h"

#define PROG "p2pkp-send"

static int json;		/* --json: one JSON object per line on stdout */

struct peer {
	struct sockaddr_storage addr;
	socklen_t len;
	const char *spec;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " --to HOST[:PORT] [--to HOST[:PORT] ...] [--timeout MS]\n"
		"                  [--rate BYTES/s] [--chunk BYTES] [--resume] [--verbose] [--json]\n"
		"                  [--group ADDR [--mcast-ttl N] [--mcast-if IFNAME] [--group-lag MS]]\n"
		"                  FILE...\n"
		"Send every FILE, in order, to every receiver over one AF_P2PKP socket.\n"
		"\n"
		"  -t, --to HOST[:PORT]  a receiver: IPv4 dotted quad or [IPv6] literal,\n"
		"                        port default %d; repeat for more (at most %d)\n"
		"  -T, --timeout MS      P2PKP_PEER_TIMEOUT: a peer silent this long fails\n"
		"                        with ETIMEDOUT while the others go on\n"
		"  -r, --rate BYTES      P2PKP_RATE: at most BYTES of file data per second\n"
		"                        (all peers and retransmissions together); suffix\n"
		"                        K, M, G = 1000, 1000^2, 1000^3; 0 = no cap\n"
		"  -c, --chunk BYTES     P2PKP_CHUNK: file bytes per datagram at most\n"
		"                        (%d..%d); default: what each peer's path MTU allows\n"
		"  -R, --resume          P2PKP_RESUME: read each file once for its SHA-256 and\n"
		"                        send it in START, so that receivers with --resume\n"
		"                        get only what their partial file lacks\n"
		"  -k, --key-file FILE   P2PKP_KEY: authenticate every datagram with the\n"
		"                        32-byte key in FILE (raw, or 64 hex digits); the\n"
		"                        receivers need the same key\n"
		"  -g, --group ADDR      P2PKP_GROUP: send each new chunk once to this\n"
		"                        multicast group (IPv4 224.0.0.0/4 but not\n"
		"                        224.0.0.0/24, or IPv6 ff00::/8 of scope 2 (link)\n"
		"                        to 14; no port: the group's is the peers' port,\n"
		"                        which they must all share); the peers still\n"
		"                        acknowledge by unicast and each has its result\n"
		"      --mcast-ttl N     P2PKP_MCAST_TTL: hop limit of group datagrams\n"
		"                        (1..255, default 1)\n"
		"      --mcast-if IFNAME P2PKP_MCAST_IF: interface of group datagrams\n"
		"                        (default: the one of the route to the first peer)\n"
		"      --group-lag MS    P2PKP_GROUP_LAG: a member that alone holds the group\n"
		"                        back this long is dropped (ECONNABORTED); default\n"
		"                        10000, 0 = never\n"
		"  -v, --verbose         print one line per file (size, duration) and the\n"
		"                        per-peer results (extra getsockopt calls)\n"
		"  -j, --json            machine-readable: one JSON object per line on stdout,\n"
		"                        {\"event\":\"sent\"|\"peer\"|\"error\",...} (implies --verbose;\n"
		"                        errors too go to stdout)\n"
		"  -h, --help            this text\n"
		"\n"
		"Relative FILE names are made absolute from the current directory\n"
		"(one getcwd() before the transfer); the kernel opens each file with\n"
		"the caller's credentials.  Silent on success (exit 0).  On failure\n"
		"prints '" PROG ": write FILE: ENAME (message)' and the per-peer\n"
		"results to stderr, goes on with the next FILE (except after EINTR)\n"
		"and exits 1.  Usage errors exit 2.\n",
		P2PKP_PORT_DEFAULT, P2PKP_MAX_PEERS, P2PKP_CHUNK_MIN, P2PKP_CHUNK_MAX);
}

/* "1500000", "1.5M", "800K", "1G" (powers of 1000); -1 if malformed. */
static int parse_rate(const char *s, unsigned long long *rate)
{
	unsigned long long mult = 1;
	long double v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtold(s, &end);
	if (errno || end == s)
		return -1;
	if (*end == 'k' || *end == 'K')
		mult = 1000ULL;
	else if (*end == 'm' || *end == 'M')
		mult = 1000000ULL;
	else if (*end == 'g' || *end == 'G')
		mult = 1000000000ULL;
	if (mult != 1)
		end++;
	if (*end)
		return -1;
	v *= mult;
	if (v < 0 || v > 1e18L)
		return -1;
	*rate = (unsigned long long)v;
	return 0;
}

/*
 * setsockopt(SOL_P2PKP, NAME); on failure prints
 * "p2pkp-send: setsockopt WHAT: ENAME (message)" and returns -1.
 */
static int set_opt(int fd, int name, const void *val, socklen_t len, const char *what)
{
	int e;

	if (!setsockopt(fd, SOL_P2PKP, name, val, len))
		return 0;
	e = errno;
	fprintf(stderr, PROG ": setsockopt %s: %s (%s)\n", what, p2pkp_errname(e), strerror(e));
	return -1;
}

/* The port of a peer's address (host order). */
static int peer_port(const struct peer *p)
{
	if (p->addr.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&p->addr)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&p->addr)->sin_port);
}

static char *absolute(const char *path, const char *cwd)
{
	size_t n;
	char *p;

	if (path[0] == '/')
		return strdup(path);
	n = strlen(cwd) + 1 + strlen(path) + 1;
	p = malloc(n);
	if (p)
		snprintf(p, n, "%s%s%s", cwd,
			 cwd[strlen(cwd) - 1] == '/' ? "" : "/", path);
	return p;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "to", required_argument, NULL, 't' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "rate", required_argument, NULL, 'r' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "resume", no_argument, NULL, 'R' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "group", required_argument, NULL, 'g' },
		{ "mcast-ttl", required_argument, NULL, 'H' },
		{ "mcast-if", required_argument, NULL, 'I' },
		{ "group-lag", required_argument, NULL, 'L' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct peer peers[P2PKP_MAX_PEERS + 1];
	char cwd[PATH_MAX] = "";
	char err[160], abuf[80], what[160];
	long long timeout = -1;
	unsigned long long rate = 0;
	int rate_set = 0;
	long chunk = -1;
	int resume = 0;
	const char *key_file = NULL;
	const char *group = NULL, *mcast_if = NULL;
	struct sockaddr_storage gaddr;
	socklen_t glen = 0;
	long long mcast_ttl = -1, group_lag = -1;
	int ifindex = 0;
	int npeers = 0, nfiles, verbose = 0, failed = 0;
	char **files;
	int c, i, fd;

	while ((c = getopt_long(argc, argv, "t:T:r:c:Rk:g:vjh", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (npeers > P2PKP_MAX_PEERS) {
				fprintf(stderr, PROG ": too many --to (module limit %d)\n",
					P2PKP_MAX_PEERS);
				return 2;
			}
			/* one beyond the limit is kept so the kernel's errno shows */
			if (p2pkp_parse_addr(optarg, P2PKP_PORT_DEFAULT,
					     &peers[npeers].addr, &peers[npeers].len,
					     err, sizeof(err))) {
				fprintf(stderr, PROG ": --to %s\n", err);
				return 2;
			}
			peers[npeers++].spec = optarg;
			break;
		case 'T':
			timeout = p2pkp_parse_timeout(PROG, optarg);
			if (timeout < 0)
				return 2;
			break;
		case 'r':
			if (parse_rate(optarg, &rate)) {
				fprintf(stderr, PROG ": --rate '%s': not a number of bytes per second (suffix K, M or G)\n",
					optarg);
				return 2;
			}
			rate_set = 1;
			break;
		case 'c': {
			char *end;

			errno = 0;
			chunk = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || chunk < 0 || chunk > UINT32_MAX) {
				fprintf(stderr, PROG ": --chunk '%s': not a number of bytes\n", optarg);
				return 2;
			}
			break;
		}
		case 'R':
			resume = 1;
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'g':
			group = optarg;
			break;
		case 'H':
			mcast_ttl = p2pkp_parse_uint(optarg, 255);
			if (mcast_ttl < 1) {
				fprintf(stderr,
					PROG ": --mcast-ttl '%s': not a hop limit (1..255)\n",
					optarg);
				return 2;
			}
			break;
		case 'I':
			mcast_if = optarg;
			break;
		case 'L':
			group_lag = p2pkp_parse_uint(optarg, UINT32_MAX);
			if (group_lag < 0) {
				fprintf(stderr,
					PROG ": --group-lag '%s': not a number of milliseconds\n",
					optarg);
				return 2;
			}
			break;
		case 'v':
			verbose = 1;
			break;
		case 'j':
			json = 1;
			verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	nfiles = argc - optind;
	if (!npeers || !nfiles) {
		fprintf(stderr, PROG ": need at least one --to and one FILE (see --help)\n");
		return 2;
	}
	if (!group && (mcast_ttl >= 0 || mcast_if || group_lag >= 0)) {
		fprintf(stderr, PROG ": --mcast-ttl, --mcast-if and --group-lag need --group\n");
		return 2;
	}
	if (group) {
		/* the group's port is the peers' port: a peer never binds another */
		for (i = 1; i < npeers; i++) {
			if (peer_port(&peers[i]) != peer_port(&peers[0])) {
				fprintf(stderr,
					PROG ": --group: --to %s and --to %s differ in port; a group has one, every peer's\n",
					peers[0].spec, peers[i].spec);
				return 2;
			}
		}
		if (p2pkp_parse_host(group, peer_port(&peers[0]), &gaddr, &glen, err,
				     sizeof(err))) {
			fprintf(stderr, PROG ": --group %s\n", err);
			return 2;
		}
	}
	if (mcast_if) {
		ifindex = (int)if_nametoindex(mcast_if);
		if (!ifindex) {
			int e = errno;

			fprintf(stderr, PROG ": --mcast-if %s: %s (%s)\n", mcast_if,
				p2pkp_errname(e), strerror(e));
			return 2;
		}
	}
	files = calloc((size_t)nfiles, sizeof(*files));
	if (!files) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	for (i = 0; i < nfiles; i++) {
		const char *f = argv[optind + i];

		if (f[0] != '/' && !cwd[0] && !getcwd(cwd, sizeof(cwd))) {
			int e = errno;

			fprintf(stderr, PROG ": getcwd: %s (%s)\n", p2pkp_errname(e),
				strerror(e));
			return 1;
		}
		files[i] = absolute(f, cwd);
		if (!files[i]) {
			fprintf(stderr, PROG ": out of memory\n");
			return 1;
		}
	}

	fd = p2pkp_socket(PROG, json);
	if (fd < 0)
		return 1;
	if (key_file && p2pkp_set_key_file(fd, key_file, PROG) < 0)
		return 1;
	for (i = 0; i < npeers; i++) {
		if (connect(fd, (struct sockaddr *)&peers[i].addr, peers[i].len) < 0) {
			int e = errno;

			p2pkp_format_addr(&peers[i].addr, abuf, sizeof(abuf));
			if (json)
				p2pkp_json_error("connect", abuf, e);
			else
				fprintf(stderr, PROG ": connect %s: %s (%s)\n", abuf,
					p2pkp_errname(e), strerror(e));
			return 1;
		}
	}
	if (timeout >= 0 && p2pkp_set_peer_timeout(fd, (__u32)timeout, PROG) < 0)
		return 1;
	if (rate_set) {
		__u64 r = rate;

		snprintf(what, sizeof(what), "P2PKP_RATE %llu", rate);
		if (set_opt(fd, P2PKP_RATE, &r, sizeof(r), what) < 0)
			return 1;
	}
	if (chunk >= 0) {
		__u32 v = (__u32)chunk;

		snprintf(what, sizeof(what), "P2PKP_CHUNK %ld", chunk);
		if (set_opt(fd, P2PKP_CHUNK, &v, sizeof(v), what) < 0)
			return 1;
	}
	if (resume && set_opt(fd, P2PKP_RESUME, &resume, sizeof(resume), "P2PKP_RESUME 1") < 0)
		return 1;
	if (group) {
		snprintf(what, sizeof(what), "P2PKP_GROUP %s",
			 p2pkp_format_addr(&gaddr, abuf, sizeof(abuf)));
		if (set_opt(fd, P2PKP_GROUP, &gaddr, glen, what) < 0)
			return 1;
	}
	if (mcast_ttl >= 0) {
		int v = (int)mcast_ttl;

		snprintf(what, sizeof(what), "P2PKP_MCAST_TTL %d", v);
		if (set_opt(fd, P2PKP_MCAST_TTL, &v, sizeof(v), what) < 0)
			return 1;
	}
	if (mcast_if) {
		snprintf(what, sizeof(what), "P2PKP_MCAST_IF %d (%s)", ifindex, mcast_if);
		if (set_opt(fd, P2PKP_MCAST_IF, &ifindex, sizeof(ifindex), what) < 0)
			return 1;
	}
	if (group_lag >= 0) {
		__u32 v = (__u32)group_lag;

		snprintf(what, sizeof(what), "P2PKP_GROUP_LAG %u", v);
		if (set_opt(fd, P2PKP_GROUP_LAG, &v, sizeof(v), what) < 0)
			return 1;
	}
	for (i = 0; i < nfiles; i++) {
		size_t len = strlen(files[i]);
		ssize_t n = write(fd, files[i], len);

		if (n == (ssize_t)len) {
			if (verbose) {
				p2pkp_print_sent(fd, files[i], npeers, json);
				p2pkp_print_peer_results(fd, stdout, "  ", files[i], json);
			}
			continue;
		}
		failed = 1;
		if (n < 0) {
			int e = errno;

			if (json)
				p2pkp_json_error("write", files[i], e);
			else
				fprintf(stderr, PROG ": write %s: %s (%s)\n", files[i],
					p2pkp_errname(e), strerror(e));
			p2pkp_print_peer_results(fd, stderr, PROG ":   ", files[i], json);
			if (e == EINTR)
				break;
		} else {
			if (json)
				p2pkp_json_error("write", files[i], EIO);
			else
				fprintf(stderr, PROG ": write %s: short write %zd of %zu\n",
					files[i], n, len);
			p2pkp_print_peer_results(fd, stderr, PROG ":   ", files[i], json);
		}
	}
	close(fd);
	for (i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	return failed;
}
