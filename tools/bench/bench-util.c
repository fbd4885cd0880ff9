// SPDX-License-Identifier: GPL-2.0
/* Helpers shared by the benchmark baselines. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"

extern const char *prog;

/* A failed system call: "PROG: WHAT: strerror", exit 1. */
void die(const char *what, ...)
{
	int e = errno;
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, what);
	vfprintf(stderr, what, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(e));
	exit(1);
}

/* A failed transfer or bad input (no errno): "PROG: WHAT", exit 1. */
void fail(const char *what, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, what);
	vfprintf(stderr, what, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

uint16_t parse_port(const char *arg)
{
	char *end;
	long v = strtol(arg, &end, 10);

	if (*arg == '\0' || *end != '\0' || v < 1 || v > 65535)
		fail("bad port '%s' (1..65535)", arg);
	return (uint16_t)v;
}

/* --payload: bytes of file per datagram, 1..BENCH_PAYLOAD_MAX */
uint32_t parse_payload(const char *arg)
{
	char *end;
	long v = strtol(arg, &end, 10);

	if (*arg == '\0' || *end != '\0' || v < 1 || v > BENCH_PAYLOAD_MAX)
		fail("bad payload '%s' (1..%d)", arg, BENCH_PAYLOAD_MAX);
	return (uint32_t)v;
}

/* "A.B.C.D:PORT" */
void parse_peer(const char *arg, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(arg, ':');

	if (!colon || (size_t)(colon - arg) >= sizeof(host))
		fail("bad peer '%s' (expected A.B.C.D:PORT)", arg);
	memcpy(host, arg, colon - arg);
	host[colon - arg] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(parse_port(colon + 1));
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		fail("bad IPv4 address '%s'", host);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t htonll_(uint64_t v)
{
	return ((uint64_t)htonl((uint32_t)v) << 32) | htonl((uint32_t)(v >> 32));
}
