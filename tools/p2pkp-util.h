/* SPDX-License-Identifier: GPL-2.0 */
/*
 * p2pkp-util.h - helpers shared by the P2PKP user tools (p2pkp-send,
 * p2pkp-recv, p2pkp-op): address parsing/printing, the family number,
 * errno names.  None of these helpers is called during a transfer.
 */
#ifndef P2PKP_UTIL_H
#define P2PKP_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "p2pkp.h"

/* Where the module publishes the family number it registered. */
#define P2PKP_FAMILY_PARAM "/sys/module/p2pkp/parameters/family"

/*
 * The family number in use: the module parameter if readable and valid,
 * else P2PKP_FAMILY_DEFAULT.
 */
int p2pkp_family(void);

/*
 * Parse "A.B.C.D", "A.B.C.D:PORT", "[V6]", "[V6]:PORT" or a bare IPv6
 * literal (no port) into *ss / *len.  No name resolution.  A missing port
 * becomes default_port.  On error returns -1 and writes a reason into err.
 */
int p2pkp_parse_addr(const char *s, int default_port,
		     struct sockaddr_storage *ss, socklen_t *len,
		     char *err, size_t errlen);

/*
 * Parse an address without a port, "A.B.C.D", "V6" or "[V6]", into *ss /
 * *len with port @port.  No name resolution.  On error returns -1 and
 * writes a reason into err.
 */
int p2pkp_parse_host(const char *s, int port, struct sockaddr_storage *ss,
		     socklen_t *len, char *err, size_t errlen);

/* "A.B.C.D:PORT", "[V6]:PORT" or "family N" into buf. */
const char *p2pkp_format_addr(const void *sa, char *buf, size_t buflen);

/* "ENOENT" for ENOENT; "E<number>" when the name is unknown. */
const char *p2pkp_errname(int err);

/*
 * socket(p2pkp_family(), SOCK_DGRAM, 0); on failure reports it (a JSON error
 * event with json, else "PROG: socket(family N): ENAME (message)") and
 * returns -1.
 */
int p2pkp_socket(const char *prog, int json);

/* Parse a non-negative decimal number <= max; -1 on error. */
long long p2pkp_parse_uint(const char *s, long long max);

/*
 * The milliseconds of a --timeout argument (0..UINT32_MAX), or -1 after
 * printing "PROG: --timeout 'ARG': not a number of milliseconds".
 */
long long p2pkp_parse_timeout(const char *prog, const char *arg);

/* "IDLE", "DONE", "FAILED" for enum p2pkp_peer_state; "UNKNOWN" otherwise. */
const char *p2pkp_peer_state_name(__u32 state);

/*
 * setsockopt(P2PKP_PEER_TIMEOUT); on failure prints
 * "PROG: setsockopt P2PKP_PEER_TIMEOUT MS: ENAME (message)" and returns -1.
 */
int p2pkp_set_peer_timeout(int fd, __u32 ms, const char *prog);

/*
 * setsockopt(P2PKP_KEY) with the key in FILE: 32 raw bytes, or 64 hex digits
 * (and an optional newline); the copies in memory are wiped.  On failure
 * prints "PROG: --key-file FILE: ..." or "PROG: setsockopt P2PKP_KEY: ..."
 * and returns -1.
 */
/* Value of one hex digit, or -1. */
int p2pkp_hexval(int c);
int p2pkp_set_key_file(int fd, const char *file, const char *prog);

/*
 * --json output (one JSON object per line, on stdout): a string, quoted and
 * escaped, or "null" for NULL.
 */
void p2pkp_json_str(FILE *f, const char *s);

/*
 * {"event":"error","call":CALL,"arg":ARG,"errno":"ENAME","message":"..."}: a
 * failed call in --json mode.
 */
void p2pkp_json_error(const char *call, const char *arg, int err);

/*
 * The per-peer results of the last write() on fd (P2PKP_PEER_RESULTS): with
 * json one {"event":"peer","file":F,"addr":A,"state":S,"error":E|null,...}
 * line each on stdout, else "PREFIXpeer ADDR: STATE..." lines on f.
 */
void p2pkp_print_peer_results(int fd, FILE *f, const char *prefix,
			      const char *file, int json);

/*
 * The last transfer of fd (P2PKP_LAST_TRANSFER) as sent to npeers: with json
 * {"event":"sent","file":F,"size":N,"peers":P,"duration_ns":D}, else
 * "sent FILE (SIZE bytes) to N peers in MS ms", on stdout.
 */
void p2pkp_print_sent(int fd, const char *file, int npeers, int json);

#endif /* P2PKP_UTIL_H */
