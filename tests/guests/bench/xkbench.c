/*
 * xkbench: micro-benchmarks run inside a xenkvm guest (see scripts/bench).
 *
 * Built on the host as a static binary (gcc -O2 -static) by resources/get-assets.sh
 * and placed at /bin/xkbench in initramfs-bench. Prints one line per benchmark:
 *
 *   XBENCH <name> <value> <unit>
 *
 * plus "xkbench: ..." detail lines (iterations, total time) that scripts/bench keeps
 * in its log only. Each figure is the mean over the timed loop, after a short warm-up.
 *
 * XKBENCH_SCALE=<factor> in the environment (the kernel passes unknown "VAR=value"
 * command-line words to init as environment) multiplies every iteration count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double scale = 1.0;
static int failures;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long iters(long base)
{
	long n = (long)(base * scale);
	return n < 1 ? 1 : n;
}

/* value = total / n / div, printed in `unit`. */
static void report(const char *name, double total_ns, long n, double div, const char *unit)
{
	printf("xkbench: %s iterations %ld total_ms %.1f\n", name, n, total_ns / 1e6);
	printf("XBENCH %s %.*f %s\n", name, div == 1.0 ? 0 : 1, total_ns / n / div, unit);
}

static void fail(const char *name, const char *what)
{
	printf("xkbench: %s failed: %s: %s\n", name, what, strerror(errno));
	failures++;
}

static void bench_getpid(void)
{
	long n = iters(2000), i;
	for (i = 0; i < 50; i++)
		syscall(SYS_getpid);
	double t0 = now_ns();
	for (i = 0; i < n; i++)
		syscall(SYS_getpid); /* the raw syscall: no libc caching */
	report("getpid", now_ns() - t0, n, 1.0, "ns");
}

static int touch_pages(long pages, double *elapsed)
{
	long pg = sysconf(_SC_PAGESIZE), i;
	size_t len = (size_t)pages * (size_t)pg;
	volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	madvise((void *)p, len, MADV_NOHUGEPAGE); /* one fault per 4 KiB page */
	double t0 = now_ns();
	for (i = 0; i < pages; i++)
		p[i * pg] = 1;
	*elapsed = now_ns() - t0;
	munmap((void *)p, len);
	return 0;
}

static void bench_page_fault(void)
{
	long n = iters(2000);
	double t;
	if (touch_pages(32, &t) < 0 || touch_pages(n, &t) < 0) {
		fail("page_fault", "mmap");
		return;
	}
	report("page_fault", t, n, 1.0, "ns");
}

static void bench_fork(void)
{
	long n = iters(100), i;
	double t0 = 0;
	for (i = -3; i < n; i++) { /* three warm-up rounds */
		if (i == 0)
			t0 = now_ns();
		pid_t pid = fork();
		if (pid < 0) {
			fail("fork_exit_wait", "fork");
			return;
		}
		if (pid == 0)
			_exit(0);
		int st;
		if (waitpid(pid, &st, 0) != pid) {
			fail("fork_exit_wait", "waitpid");
			return;
		}
	}
	report("fork_exit_wait", now_ns() - t0, n, 1e3, "us");
}

static void bench_pipe(void)
{
	long n = iters(500), i;
	int a[2], b[2]; /* a: parent -> child, b: child -> parent */
	char c = 'x';
	if (pipe(a) < 0 || pipe(b) < 0) {
		fail("pipe_pingpong", "pipe");
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fail("pipe_pingpong", "fork");
		return;
	}
	if (pid == 0) {
		close(a[1]);
		close(b[0]);
		while (read(a[0], &c, 1) == 1)
			if (write(b[1], &c, 1) != 1)
				break;
		_exit(0);
	}
	close(a[0]);
	close(b[1]);
	double t0 = 0;
	for (i = -20; i < n; i++) { /* 20 warm-up round trips */
		if (i == 0)
			t0 = now_ns();
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) {
			fail("pipe_pingpong", "write/read");
			break;
		}
	}
	double t = now_ns() - t0;
	close(a[1]);
	close(b[0]);
	waitpid(pid, NULL, 0);
	if (i == n)
		report("pipe_pingpong", t, n, 1e3, "us");
}

static void bench_clock_gettime(void)
{
	long n = iters(10000), i;
	struct timespec ts;
	volatile long sink = 0;
	for (i = 0; i < 100; i++)
		clock_gettime(CLOCK_MONOTONIC, &ts);
	double t0 = now_ns();
	for (i = 0; i < n; i++) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		sink += ts.tv_nsec;
	}
	report("clock_gettime", now_ns() - t0, n, 1.0, "ns");
	(void)sink;
}

int main(void)
{
	const char *s = getenv("XKBENCH_SCALE");
	if (s && atof(s) > 0)
		scale = atof(s);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("xkbench: scale %g\n", scale);
	bench_getpid();
	bench_clock_gettime();
	bench_page_fault();
	bench_pipe();
	bench_fork();
	printf("xkbench: done, %d failure(s)\n", failures);
	return failures ? 1 : 0;
}
