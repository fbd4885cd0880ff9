/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared bits of the P2PKP benchmark baselines (tools/bench).
 *
 * UDP wire format of the baselines (network byte order), --payload bytes of file
 * per datagram (the bench passes P2PKP's chunk for the link's MTU; default 1400):
 *   DATA: magic BENCH_DATA, seq (datagram index), size (file size), payload
 *   ACK:  magic BENCH_ACK, seq (next datagram expected), size (1 once the
 *         receiver has stored the whole file and closed it, else 0)
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdint.h>
#include <netinet/in.h>

#define BENCH_PAYLOAD	1400	/* default --payload */
#define BENCH_PAYLOAD_MAX	65000	/* as P2PKP's largest chunk */
#define BENCH_DATA	0x42444154u	/* "BDAT" */
#define BENCH_ACK	0x4241434bu	/* "BACK" */
#define BENCH_MAX_PEERS	64	/* as P2PKP_MAX_PEERS */

struct bench_hdr {
	uint32_t magic;
	uint32_t seq;
	uint64_t size;
} __attribute__((packed));


void die(const char *what, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fail(const char *what, ...) __attribute__((noreturn, format(printf, 1, 2)));
void parse_peer(const char *arg, struct sockaddr_in *sa);
uint16_t parse_port(const char *arg);
uint32_t parse_payload(const char *arg);
uint64_t now_ns(void);
uint64_t htonll_(uint64_t v);

#endif
