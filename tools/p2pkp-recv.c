// SPDX-License-Identifier: GPL-2.0
/*
 * p2pkp-recv - receive files from P2PKP senders.
 *
 * The transfer makes only the paper's system calls: one socket(), one
 * bind(), one read() per file (plus one setsockopt() per option that sets
 * one: --timeout, --key-file, --no-fsync, --resume, --no-group; and one
 * getsockopt(P2PKP_LAST_TRANSFER) only when read() returns INT_MAX,
 * i.e. for files of 2 GiB - 1 and more, or with --verbose).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "p2pkp-util.h"

#define PROG "p2pkp-recv"

static int json;		/* --json: one JSON object per line on stdout */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " --listen ADDR[:PORT] --out PATH [--count N] [--timeout MS]\n"
		"                  [--key-file FILE] [--allow ADDR[:PORT]]... [--no-fsync]\n"
		"                  [--resume] [--no-group] [--verbose] [--json]\n"
		"       " PROG " --clean-partials DIR [--older-than SECONDS]\n"
		"Receive files on one AF_P2PKP socket, one read() per file.\n"
		"\n"
		"  -l, --listen ADDR[:PORT] local IPv4 dotted quad or [IPv6] literal to\n"
		"                           bind (0.0.0.0 for any), port default %d\n"
		"  -o, --out PATH           where to store the files (see below)\n"
		"  -c, --count N            files to receive, default 1; 0 = forever\n"
		"  -T, --timeout MS         P2PKP_PEER_TIMEOUT: a transfer whose sender is\n"
		"                           silent this long is abandoned\n"
		"  -k, --key-file FILE      P2PKP_KEY: accept only datagrams authenticated\n"
		"                           with the 32-byte key in FILE (raw, or 64 hex\n"
		"                           digits); the sender needs the same key\n"
		"  -a, --allow ADDR[:PORT]  accept files only from this sender (any port\n"
		"                           if none is given); repeat for more\n"
		"  -F, --no-fsync           P2PKP_FSYNC 0: do not fsync the file and its\n"
		"                           directory before read() returns\n"
		"  -R, --resume             P2PKP_RESUME: a transfer whose sender sent the\n"
		"                           file's SHA-256 (p2pkp-send --resume) goes into a\n"
		"                           partial file .p2pkp-part-* beside PATH, kept when\n"
		"                           interrupted; the next run gets only the rest\n"
		"                           (partials of other versions of a file that\n"
		"                           arrived are removed)\n"
		"  -G, --no-group           P2PKP_NO_GROUP: refuse multicast (group)\n"
		"                           transfers; their senders get EOPNOTSUPP for\n"
		"                           this receiver (without it a group transfer\n"
		"                           needs nothing: the kernel joins the group)\n"
		"  --clean-partials DIR     remove the partial files in DIR (yours, not\n"
		"                           modified for --older-than SECONDS, default 0)\n"
		"  -v, --verbose            also print sender, transfer id, digest, duration\n"
		"  -j, --json               machine-readable: one JSON object per line on\n"
		"                           stdout, {\"event\":\"listening\"|\"received\"|\"error\",\n"
		"                           ...} (implies --verbose; errors too go to stdout)\n"
		"  -h, --help               this text\n"
		"\n"
		"PATH (made absolute from the current directory if relative):\n"
		"  - an existing directory: files are stored as DIR/file-0001,\n"
		"    DIR/file-0002, ... (numbered from 1, in the order they complete);\n"
		"  - a pattern with exactly one integer conversion %%d, %%Nd or %%0Nd\n"
		"    (N = 1..9; '%%%%' is a literal '%%'), e.g. /tmp/in-%%04d.bin: the file\n"
		"    number (from 1) is put in;\n"
		"  - otherwise, with --count 1 only, the destination file itself.\n"
		"\n"
		"After bind() prints 'listening ADDR:PORT'; then one line per file\n"
		"'received PATH SIZE bytes'.  On failure prints '" PROG ": read PATH:\n"
		"ENAME (message)' and exits 1; usage errors exit 2.\n",
		P2PKP_PORT_DEFAULT);
}

/*
 * Check that pat has exactly one conversion of the form %d, %Nd or %0Nd
 * (N = 1..9) and otherwise only '%%'.  Returns 1 if so, 0 if it has no
 * conversion at all, -1 if it is malformed (message in err).
 */
static int check_pattern(const char *pat, char *err, size_t errlen)
{
	int convs = 0;
	const char *p;

	for (p = pat; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p == '%')
			continue;
		if (*p == '0')
			p++;
		if (*p >= '1' && *p <= '9')
			p++;
		if (*p != 'd') {
			snprintf(err, errlen,
				 "'%s': only %%d, %%Nd, %%0Nd (N = 1..9) and %%%% are allowed",
				 pat);
			return -1;
		}
		convs++;
	}
	if (convs > 1) {
		snprintf(err, errlen, "'%s': more than one %%d conversion", pat);
		return -1;
	}
	return convs;
}

/* cwd + "/" + pat with every '%' of cwd doubled (cwd is not empty). */
static char *escape_percent(const char *cwd, const char *pat)
{
	size_t n = 2 * strlen(cwd) + 1 + strlen(pat) + 1;
	char *buf = malloc(n), *p = buf;

	if (!buf)
		return NULL;
	for (; *cwd; cwd++) {
		*p++ = *cwd;
		if (*cwd == '%')
			*p++ = '%';
	}
	*p++ = '/';
	strcpy(p, pat);
	return buf;
}

static void print_info(int fd, const char *path, ssize_t n, int verbose)
{
	struct p2pkp_transfer_info info;
	socklen_t len = sizeof(info);
	unsigned long long size = (unsigned long long)n;
	char abuf[80], hex[2 * P2PKP_DIGEST_SIZE + 1];
	int have = 0, i;

	if (n >= INT_MAX || verbose) {
		if (getsockopt(fd, SOL_P2PKP, P2PKP_LAST_TRANSFER, &info, &len) == 0) {
			have = 1;
			if (n >= INT_MAX)
				size = (unsigned long long)info.size;
		} else {
			int e = errno;

			if (json)
				p2pkp_json_error("getsockopt", "P2PKP_LAST_TRANSFER", e);
			else
				fprintf(stderr, PROG ": getsockopt P2PKP_LAST_TRANSFER: %s (%s)\n",
					p2pkp_errname(e), strerror(e));
		}
	}
	if (json) {
		fputs("{\"event\":\"received\",\"path\":", stdout);
		p2pkp_json_str(stdout, path);
		printf(",\"size\":%llu", size);
		if (have) {
			for (i = 0; i < P2PKP_DIGEST_SIZE; i++)
				snprintf(hex + 2 * i, 3, "%02x", info.digest[i]);
			fputs(",\"from\":", stdout);
			p2pkp_json_str(stdout, p2pkp_format_addr(&info.peer, abuf, sizeof(abuf)));
			printf(",\"id\":\"%016llx\",\"duration_ns\":%llu,\"sha256\":\"%s\"",
			       (unsigned long long)info.id,
			       (unsigned long long)info.duration_ns, hex);
		}
		fputs("}\n", stdout);
		fflush(stdout);
		return;
	}
	printf("received %s %llu bytes\n", path, size);
	if (verbose && have) {
		for (i = 0; i < P2PKP_DIGEST_SIZE; i++)
			snprintf(hex + 2 * i, 3, "%02x", info.digest[i]);
		printf("  from %s id %016llx size %llu duration_ns %llu sha256 %s\n",
		       p2pkp_format_addr(&info.peer, abuf, sizeof(abuf)),
		       (unsigned long long)info.id, (unsigned long long)info.size,
		       (unsigned long long)info.duration_ns, hex);
	}
	fflush(stdout);
}

/*
 * After PATH arrived with --resume: partial files of other versions of
 * it (".p2pkp-part-NAME-" and 16 hex digits, NAME PATH's last component;
 * the source changed while one was interrupted) are of no use any more.
 * Removed when they are regular files of the caller's; errors are ignored
 * (--clean-partials is the way to see them).
 */
static void remove_stale_partials(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX], prefix[NAME_MAX + 16];
	size_t plen;
	struct dirent *de;
	struct stat st;
	int dfd;
	DIR *d;

	if (!slash || (size_t)(slash - path) >= sizeof(dir))
		return;
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (!dir[0])
		snprintf(dir, sizeof(dir), "/");
	plen = (size_t)snprintf(prefix, sizeof(prefix), ".p2pkp-part-%s-", slash + 1);
	if (plen >= sizeof(prefix))
		return;
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	d = dfd < 0 ? NULL : fdopendir(dfd);
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, plen) || strlen(de->d_name + plen) != 16 ||
		    strspn(de->d_name + plen, "0123456789abcdef") != 16)
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_uid == geteuid())
			unlinkat(dfd, de->d_name, 0);
	}
	closedir(d);
}

/*
 * --clean-partials: unlink DIR's partial files (.p2pkp-part-*, kept by
 * P2PKP_RESUME) that are regular, owned by the caller and not modified for
 * @older seconds; one line per file removed.  The module never scans a
 * directory: this is the clean-up it leaves to user space.
 */
static int clean_partials(const char *dir, long long older)
{
	static const char prefix[] = ".p2pkp-part-";
	time_t now = time(NULL);
	struct dirent *de;
	struct stat st;
	int dfd, rc = 0;
	DIR *d;

	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	d = dfd < 0 ? NULL : fdopendir(dfd);
	if (!d) {
		int e = errno;

		fprintf(stderr, PROG ": --clean-partials %s: %s (%s)\n", dir, p2pkp_errname(e),
			strerror(e));
		if (dfd >= 0)
			close(dfd);
		return 1;
	}
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, sizeof(prefix) - 1))
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
		    now - st.st_mtime < older)
			continue;
		if (unlinkat(dfd, de->d_name, 0) < 0) {
			int e = errno;

			fprintf(stderr, PROG ": unlink %s/%s: %s (%s)\n", dir, de->d_name,
				p2pkp_errname(e), strerror(e));
			rc = 1;
			continue;
		}
		printf("removed %s/%s (%lld bytes)\n", dir, de->d_name, (long long)st.st_size);
	}
	closedir(d);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "out", required_argument, NULL, 'o' },
		{ "count", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "allow", required_argument, NULL, 'a' },
		{ "no-fsync", no_argument, NULL, 'F' },
		{ "resume", no_argument, NULL, 'R' },
		{ "no-group", no_argument, NULL, 'G' },
		{ "clean-partials", required_argument, NULL, 'P' },
		{ "older-than", required_argument, NULL, 'O' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_storage addr;
	socklen_t alen = 0;
	char err[200], abuf[80], cwd[PATH_MAX];
	char *out = NULL, *base = NULL, *path;
	enum { OUT_FIXED, OUT_DIR, OUT_PATTERN } mode;
	long long count = 1, timeout = -1, k;
	static struct {
		struct sockaddr_storage addr;
		socklen_t len;
		const char *spec;
	} allow[P2PKP_MAX_PEERS];
	const char *key_file = NULL;
	int nallow = 0, no_fsync = 0, resume = 0, no_group = 0, i;
	const char *clean_dir = NULL;
	long long older = 0;
	int have_addr = 0, verbose = 0, fd, c, convs;
	size_t plen;
	struct stat st;

	while ((c = getopt_long(argc, argv, "l:o:c:T:k:a:FRGvjh", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (p2pkp_parse_addr(optarg, P2PKP_PORT_DEFAULT, &addr,
					     &alen, err, sizeof(err))) {
				fprintf(stderr, PROG ": --listen %s\n", err);
				return 2;
			}
			have_addr = 1;
			break;
		case 'o':
			out = optarg;
			break;
		case 'c':
			count = p2pkp_parse_uint(optarg, 99999999);
			if (count < 0) {
				fprintf(stderr, PROG ": --count '%s': not a number\n", optarg);
				return 2;
			}
			break;
		case 'T':
			timeout = p2pkp_parse_timeout(PROG, optarg);
			if (timeout < 0)
				return 2;
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'a':
			if (nallow == P2PKP_MAX_PEERS) {
				fprintf(stderr, PROG ": too many --allow (module limit %d)\n",
					P2PKP_MAX_PEERS);
				return 2;
			}
			if (p2pkp_parse_addr(optarg, 0, &allow[nallow].addr,
					     &allow[nallow].len, err, sizeof(err))) {
				fprintf(stderr, PROG ": --allow %s\n", err);
				return 2;
			}
			allow[nallow++].spec = optarg;
			break;
		case 'F':
			no_fsync = 1;
			break;
		case 'R':
			resume = 1;
			break;
		case 'G':
			no_group = 1;
			break;
		case 'P':
			clean_dir = optarg;
			break;
		case 'O':
			older = p2pkp_parse_uint(optarg, 100LL * 365 * 86400);
			if (older < 0) {
				fprintf(stderr, PROG ": --older-than '%s': not a number of seconds\n",
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
	if (clean_dir) {
		if (have_addr || out || optind != argc) {
			fprintf(stderr, PROG ": --clean-partials takes only --older-than\n");
			return 2;
		}
		return clean_partials(clean_dir, older);
	}
	if (!have_addr || !out || optind != argc) {
		fprintf(stderr, PROG ": need --listen and --out and no other arguments (see --help)\n");
		return 2;
	}

	/* Work out the naming scheme before the transfer starts. */
	if (out[0] != '/') {
		if (!getcwd(cwd, sizeof(cwd))) {
			int e = errno;

			fprintf(stderr, PROG ": getcwd: %s (%s)\n", p2pkp_errname(e),
				strerror(e));
			return 1;
		}
	} else {
		cwd[0] = '\0';
	}
	if (asprintf(&base, "%s%s%s", cwd, cwd[0] ? "/" : "", out) < 0) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
		mode = OUT_DIR;
	} else {
		convs = check_pattern(out, err, sizeof(err));
		if (convs < 0) {
			fprintf(stderr, PROG ": --out %s\n", err);
			return 2;
		}
		if (convs == 0 && count != 1) {
			fprintf(stderr,
				PROG ": --out '%s': with --count other than 1 it must be an existing directory or contain %%d\n",
				out);
			return 2;
		}
		mode = convs ? OUT_PATTERN : OUT_FIXED;
		if (mode == OUT_PATTERN && strchr(cwd, '%')) {
			/* base is a printf format: the directory's '%' are literal */
			free(base);
			base = escape_percent(cwd, out);
			if (!base) {
				fprintf(stderr, PROG ": out of memory\n");
				return 1;
			}
		}
	}
	plen = strlen(base) + 32;
	path = malloc(plen);
	if (!path) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	if (mode == OUT_FIXED)
		snprintf(path, plen, "%s", base);

	fd = p2pkp_socket(PROG, json);
	if (fd < 0)
		return 1;
	if (timeout >= 0 && p2pkp_set_peer_timeout(fd, (__u32)timeout, PROG) < 0)
		return 1;
	if (key_file && p2pkp_set_key_file(fd, key_file, PROG) < 0)
		return 1;
	if (no_fsync) {
		int off = 0;

		if (setsockopt(fd, SOL_P2PKP, P2PKP_FSYNC, &off, sizeof(off)) < 0) {
			int e = errno;

			fprintf(stderr, PROG ": setsockopt P2PKP_FSYNC 0: %s (%s)\n",
				p2pkp_errname(e), strerror(e));
			return 1;
		}
	}
	if (resume && setsockopt(fd, SOL_P2PKP, P2PKP_RESUME, &resume, sizeof(resume)) < 0) {
		int e = errno;

		fprintf(stderr, PROG ": setsockopt P2PKP_RESUME 1: %s (%s)\n", p2pkp_errname(e),
			strerror(e));
		return 1;
	}
	if (no_group &&
	    setsockopt(fd, SOL_P2PKP, P2PKP_NO_GROUP, &no_group, sizeof(no_group)) < 0) {
		int e = errno;

		fprintf(stderr, PROG ": setsockopt P2PKP_NO_GROUP 1: %s (%s)\n",
			p2pkp_errname(e), strerror(e));
		return 1;
	}
	if (bind(fd, (struct sockaddr *)&addr, alen) < 0) {
		int e = errno;

		p2pkp_format_addr(&addr, abuf, sizeof(abuf));
		if (json)
			p2pkp_json_error("bind", abuf, e);
		else
			fprintf(stderr, PROG ": bind %s: %s (%s)\n", abuf,
				p2pkp_errname(e), strerror(e));
		return 1;
	}
	/* connect() on the bound socket: accept files from these senders only */
	for (i = 0; i < nallow; i++) {
		if (connect(fd, (struct sockaddr *)&allow[i].addr, allow[i].len) < 0) {
			int e = errno;

			if (json)
				p2pkp_json_error("connect", allow[i].spec, e);
			else
				fprintf(stderr, PROG ": --allow %s: %s (%s)\n", allow[i].spec,
					p2pkp_errname(e), strerror(e));
			return 1;
		}
	}
	if (json) {
		fputs("{\"event\":\"listening\",\"addr\":", stdout);
		p2pkp_json_str(stdout, p2pkp_format_addr(&addr, abuf, sizeof(abuf)));
		fputs("}\n", stdout);
	} else {
		printf("listening %s\n", p2pkp_format_addr(&addr, abuf, sizeof(abuf)));
	}
	fflush(stdout);

	for (k = 1; count == 0 || k <= count; k++) {
		ssize_t n;

		if (mode == OUT_DIR) {
			snprintf(path, plen, "%s%sfile-%04lld", base,
				 base[strlen(base) - 1] == '/' ? "" : "/", k);
		} else if (mode == OUT_PATTERN) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
			snprintf(path, plen, base, (int)k);
#pragma GCC diagnostic pop
		}
		n = read(fd, path, strlen(path) + 1);
		if (n < 0) {
			int e = errno;

			if (json)
				p2pkp_json_error("read", path, e);
			else
				fprintf(stderr, PROG ": read %s: %s (%s)\n", path,
					p2pkp_errname(e), strerror(e));
			return 1;
		}
		print_info(fd, path, n, verbose);
		if (resume)
			remove_stale_partials(path);
	}
	close(fd);
	free(base);
	free(path);
	return 0;
}
