// SPDX-License-Identifier: GPL-2.0
/*
 * bench-timeit CMD [ARG...]: run CMD, then print
 *   "timeit wall_ns=N rc=R utime_us=U stime_us=S"
 * (wall time from fork to the child's exit, the child's CPU time).  Exit code: CMD's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bench.h"

const char *prog = "bench-timeit";

int main(int argc, char **argv)
{
	struct rusage ru;
	uint64_t t0, t1;
	int status, rc;
	pid_t pid;

	if (argc < 2) {
		fprintf(stderr, "usage: bench-timeit CMD [ARG...]\n");
		return 2;
	}
	t0 = now_ns();
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execvp(argv[1], argv + 1);
		die("execvp %s", argv[1]);
	}
	if (wait4(pid, &status, 0, &ru) < 0)
		die("wait4");
	t1 = now_ns();
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("timeit wall_ns=%llu rc=%d utime_us=%lld stime_us=%lld\n",
	       (unsigned long long)(t1 - t0), rc,
	       (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
	       (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
	return rc;
}
