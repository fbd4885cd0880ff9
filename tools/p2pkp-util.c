// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-util.c - helpers shared by the P2PKP user tools.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p2pkp-util.h"

int p2pkp_family(void)
{
	char buf[32];
	ssize_t n;
	long long v;
	int fd;

	fd = open(P2PKP_FAMILY_PARAM, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return P2PKP_FAMILY_DEFAULT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return P2PKP_FAMILY_DEFAULT;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	v = p2pkp_parse_uint(buf, 255);
	if (v <= 0)
		return P2PKP_FAMILY_DEFAULT;
	return (int)v;
}

int p2pkp_socket(const char *prog, int json)
{
	int family = p2pkp_family();
	int fd = socket(family, SOCK_DGRAM, 0);
	int e = errno;

	if (fd >= 0)
		return fd;
	if (json)
		p2pkp_json_error("socket", NULL, e);
	else
		fprintf(stderr, "%s: socket(family %d): %s (%s)%s\n", prog, family,
			p2pkp_errname(e), strerror(e),
			e == EAFNOSUPPORT ? " - is the p2pkp module loaded?" : "");
	return -1;
}

long long p2pkp_parse_uint(const char *s, long long max)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > (unsigned long long)max)
		return -1;
	return (long long)v;
}

long long p2pkp_parse_timeout(const char *prog, const char *arg)
{
	long long ms = p2pkp_parse_uint(arg, UINT32_MAX);

	if (ms < 0)
		fprintf(stderr, "%s: --timeout '%s': not a number of milliseconds\n",
			prog, arg);
	return ms;
}

static int parse_port(const char *s, int *port)
{
	long long v = p2pkp_parse_uint(s, 65535);

	if (v < 0)
		return -1;
	*port = (int)v;
	return 0;
}

int p2pkp_parse_addr(const char *s, int default_port,
		     struct sockaddr_storage *ss, socklen_t *len,
		     char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_s = NULL;
	const char *colon;
	size_t hlen;
	int port = default_port;
	int v6 = 0;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close_b = strchr(s, ']');

		if (!close_b) {
			snprintf(err, errlen, "'%s': missing ']'", s);
			return -1;
		}
		hlen = (size_t)(close_b - s - 1);
		if (hlen >= sizeof(host)) {
			snprintf(err, errlen, "'%s': address too long", s);
			return -1;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (close_b[1] == ':')
			port_s = close_b + 2;
		else if (close_b[1]) {
			snprintf(err, errlen, "'%s': junk after ']'", s);
			return -1;
		}
		v6 = 1;
	} else {
		colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':')) {
			/* bare IPv6 literal, no port */
			hlen = strlen(s);
			v6 = 1;
		} else {
			hlen = colon ? (size_t)(colon - s) : strlen(s);
			if (colon)
				port_s = colon + 1;
		}
		if (hlen >= sizeof(host)) {
			snprintf(err, errlen, "'%s': address too long", s);
			return -1;
		}
		memcpy(host, s, hlen);
		host[hlen] = '\0';
	}
	if (port_s && parse_port(port_s, &port)) {
		snprintf(err, errlen, "'%s': bad port '%s' (0..65535)", s,
			 port_s);
		return -1;
	}
	if (v6) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
			snprintf(err, errlen, "'%s': not an IPv6 address", s);
			return -1;
		}
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((unsigned short)port);
		*len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
			snprintf(err, errlen,
				 "'%s': not an IPv4 address (dotted quad; no host names)",
				 s);
			return -1;
		}
		a4->sin_family = AF_INET;
		a4->sin_port = htons((unsigned short)port);
		*len = sizeof(*a4);
	}
	return 0;
}

int p2pkp_parse_host(const char *s, int port, struct sockaddr_storage *ss,
		     socklen_t *len, char *err, size_t errlen)
{
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	char host[INET6_ADDRSTRLEN + 1];
	size_t n = strlen(s);

	memset(ss, 0, sizeof(*ss));
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n >= sizeof(host)) {
		snprintf(err, errlen, "'%s': address too long", s);
		return -1;
	}
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((unsigned short)port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((unsigned short)port);
		*len = sizeof(*a6);
		return 0;
	}
	snprintf(err, errlen,
		 "'%s': not an IPv4 or IPv6 address (no port, no host names)", host);
	return -1;
}

const char *p2pkp_format_addr(const void *sa, char *buf, size_t buflen)
{
	const struct sockaddr_storage *ss = sa;
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a4 = sa;

		inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
		snprintf(buf, buflen, "%s:%u", host, ntohs(a4->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a6 = sa;

		inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(a6->sin6_port));
	} else {
		snprintf(buf, buflen, "family %u", ss->ss_family);
	}
	return buf;
}

const char *p2pkp_errname(int err)
{
	static char unknown[24];
	const char *name = strerrorname_np(err);

	if (name)
		return name;
	snprintf(unknown, sizeof(unknown), "E%d", err);
	return unknown;
}

const char *p2pkp_peer_state_name(__u32 state)
{
	switch (state) {
	case P2PKP_PEER_IDLE:
		return "IDLE";
	case P2PKP_PEER_DONE:
		return "DONE";
	case P2PKP_PEER_FAILED:
		return "FAILED";
	default:
		return "UNKNOWN";
	}
}

int p2pkp_set_peer_timeout(int fd, __u32 ms, const char *prog)
{
	if (setsockopt(fd, SOL_P2PKP, P2PKP_PEER_TIMEOUT, &ms, sizeof(ms)) < 0) {
		int e = errno;

		fprintf(stderr, "%s: setsockopt P2PKP_PEER_TIMEOUT %u: %s (%s)\n",
			prog, ms, p2pkp_errname(e), strerror(e));
		return -1;
	}
	return 0;
}

int p2pkp_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int p2pkp_set_key_file(int fd, const char *file, const char *prog)
{
	unsigned char buf[2 * P2PKP_KEY_SIZE + 2], key[P2PKP_KEY_SIZE];
	const char *why = NULL;
	ssize_t n = -1;
	int kfd, i, e = 0;

	kfd = open(file, O_RDONLY | O_CLOEXEC);
	if (kfd >= 0) {
		n = read(kfd, buf, sizeof(buf));
		e = errno;
		close(kfd);
	} else {
		e = errno;
	}
	if (n < 0) {
		fprintf(stderr, "%s: --key-file %s: %s (%s)\n", prog, file,
			p2pkp_errname(e), strerror(e));
		return -1;
	}
	if (n == P2PKP_KEY_SIZE) {
		memcpy(key, buf, sizeof(key));
	} else if (n == 2 * P2PKP_KEY_SIZE ||
		   (n == 2 * P2PKP_KEY_SIZE + 1 && buf[n - 1] == '\n')) {
		for (i = 0; i < P2PKP_KEY_SIZE && !why; i++) {
			int hi = p2pkp_hexval(buf[2 * i]), lo = p2pkp_hexval(buf[2 * i + 1]);

			if (hi < 0 || lo < 0)
				why = "not hexadecimal";
			key[i] = (unsigned char)(hi << 4 | lo);
		}
	} else {
		why = "expected 32 bytes, or 64 hex digits and an optional newline";
	}
	memset(buf, 0, sizeof(buf));
	if (!why && setsockopt(fd, SOL_P2PKP, P2PKP_KEY, key, sizeof(key)) < 0) {
		e = errno;
		memset(key, 0, sizeof(key));
		fprintf(stderr, "%s: setsockopt P2PKP_KEY: %s (%s)\n", prog,
			p2pkp_errname(e), strerror(e));
		return -1;
	}
	memset(key, 0, sizeof(key));
	if (why) {
		fprintf(stderr, "%s: --key-file %s: %s\n", prog, file, why);
		return -1;
	}
	return 0;
}

void p2pkp_json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

void p2pkp_json_error(const char *call, const char *arg, int err)
{
	fputs("{\"event\":\"error\",\"call\":", stdout);
	p2pkp_json_str(stdout, call);
	fputs(",\"arg\":", stdout);
	p2pkp_json_str(stdout, arg);
	fputs(",\"errno\":", stdout);
	p2pkp_json_str(stdout, p2pkp_errname(err));
	fputs(",\"message\":", stdout);
	p2pkp_json_str(stdout, strerror(err));
	fputs("}\n", stdout);
	fflush(stdout);
}

/* --json: {"event":"peer","file":F,"addr":A,"state":S,"error":E|null,...} */
static void json_peer(const char *file, const struct p2pkp_peer_result *r)
{
	char abuf[80];

	fputs("{\"event\":\"peer\",\"file\":", stdout);
	p2pkp_json_str(stdout, file);
	fputs(",\"addr\":", stdout);
	p2pkp_json_str(stdout, p2pkp_format_addr(&r->addr, abuf, sizeof(abuf)));
	fputs(",\"state\":", stdout);
	p2pkp_json_str(stdout, p2pkp_peer_state_name(r->state));
	fputs(",\"error\":", stdout);
	p2pkp_json_str(stdout, r->status ? p2pkp_errname(-r->status) : NULL);
	printf(",\"bytes_acked\":%llu,\"datagrams_sent\":%llu,\"retransmitted\":%llu}\n",
	       (unsigned long long)r->bytes_acked,
	       (unsigned long long)r->datagrams_sent,
	       (unsigned long long)r->datagrams_retransmitted);
}

void p2pkp_print_peer_results(int fd, FILE *f, const char *prefix,
			      const char *file, int json)
{
	struct p2pkp_peer_result res[P2PKP_MAX_PEERS];
	socklen_t len = sizeof(res);
	char abuf[80];
	size_t i, n;

	if (getsockopt(fd, SOL_P2PKP, P2PKP_PEER_RESULTS, res, &len) < 0) {
		int e = errno;

		if (json)
			p2pkp_json_error("getsockopt", "P2PKP_PEER_RESULTS", e);
		else
			fprintf(f, "%sgetsockopt P2PKP_PEER_RESULTS: %s (%s)\n", prefix,
				p2pkp_errname(e), strerror(e));
		return;
	}
	n = len / sizeof(res[0]);
	for (i = 0; i < n; i++) {
		struct p2pkp_peer_result *r = &res[i];

		if (json) {
			json_peer(file, r);
			continue;
		}

		fprintf(f, "%speer %s: %s", prefix,
			p2pkp_format_addr(&r->addr, abuf, sizeof(abuf)),
			p2pkp_peer_state_name(r->state));
		if (r->status)
			fprintf(f, " %s (%s)", p2pkp_errname(-r->status),
				strerror(-r->status));
		fprintf(f, ", %llu bytes acked, %llu datagrams sent, %llu retransmitted\n",
			(unsigned long long)r->bytes_acked,
			(unsigned long long)r->datagrams_sent,
			(unsigned long long)r->datagrams_retransmitted);
	}
}

void p2pkp_print_sent(int fd, const char *file, int npeers, int json)
{
	struct p2pkp_transfer_info info;
	socklen_t len = sizeof(info);

	if (json) {
		int ok = getsockopt(fd, SOL_P2PKP, P2PKP_LAST_TRANSFER, &info, &len) == 0;

		fputs("{\"event\":\"sent\",\"file\":", stdout);
		p2pkp_json_str(stdout, file);
		if (ok)
			printf(",\"size\":%llu,\"peers\":%d,\"duration_ns\":%llu}\n",
			       (unsigned long long)info.size, npeers,
			       (unsigned long long)info.duration_ns);
		else
			printf(",\"size\":null,\"peers\":%d,\"duration_ns\":null}\n", npeers);
	} else if (getsockopt(fd, SOL_P2PKP, P2PKP_LAST_TRANSFER, &info, &len) < 0) {
		printf("sent %s to %d peer%s\n", file, npeers, npeers == 1 ? "" : "s");
	} else {
		printf("sent %s (%llu bytes) to %d peer%s in %.3f ms\n", file,
		       (unsigned long long)info.size, npeers, npeers == 1 ? "" : "s",
		       (double)info.duration_ns / 1e6);
	}
	fflush(stdout);
}
