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
 * XKBENCH_ONLY=<name> runs only the benchmarks whose name contains <name> (e.g. "pipe"),
 * so that the monitor's totals (`xenkvm run --stats`: hypercalls by name) show one
 * operation's mix.
 *
 * Monitor exits per operation (getpid, page_fault, pipe_pingpong, fork_exit_wait):
 *
 *   XBENCH exits_per_<op> <value> exits
 *
 * read from xenkvm's exit counters, which `xenkvm run --stats` lets the guest read
 * through the forced-emulation CPUID (`ud2; .ascii "xen"; cpuid`) of leaf 0x4000f000
 * (xen-shim/src/stats.rs): subleaf 0 gives this vCPU's and the domain's exits,
 * subleaf 1 this vCPU's hypercalls, bounced system calls, exceptions and upcall
 * interrupts. Each operation runs in batches of K between two reads; a batch's exits
 * are the difference less what the reads themselves cost (calibrated by reading back
 * to back), and the figure is the smallest batch's exits / K: a timer tick costs
 * exits too, lands in some batches and not in others, and so is left out. The mean
 * over all batches and the breakdown by kind go to the "xkbench:" detail lines.
 * The figures count the whole domain; run with one vCPU (xkbench pins itself to
 * CPU 0 anyway). Without the counters (not xenkvm, or no --stats) the exits_per_*
 * lines are left out and a detail line says why.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
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

/* XKBENCH_ONLY: run only the benchmarks whose name contains it. */
static int wanted(const char *name)
{
	const char *only = getenv("XKBENCH_ONLY");
	return !only || !*only || strstr(name, only) != NULL;
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

/* ------------------------------------------------------------ exit counters */

#define XK_STATS_LEAF 0x4000f000u

/* One reading of the counters (subleaf 0 and then subleaf 1). */
struct xk_count {
	uint64_t total, vcpu;	 /* the domain's and this vCPU's exits */
	uint32_t hyp, sys, exc, irq; /* this vCPU's entries by kind (mod 2^32) */
};

/* A difference of two readings. */
struct xk_delta {
	double total, vcpu, hyp, sys, exc, irq;
};

static void xk_cpuid(uint32_t sub, uint32_t r[4])
{
	uint32_t a = XK_STATS_LEAF, b, c = sub, d;
	__asm__ volatile("ud2\n\t.ascii \"xen\"\n\tcpuid"
			 : "+a"(a), "=b"(b), "+c"(c), "=d"(d)
			 :
			 : "memory");
	r[0] = a;
	r[1] = b;
	r[2] = c;
	r[3] = d;
}

static void xk_read(struct xk_count *k)
{
	uint32_t r[4];
	xk_cpuid(0, r);
	k->vcpu = r[0] | (uint64_t)r[1] << 32;
	k->total = r[2] | (uint64_t)r[3] << 32;
	xk_cpuid(1, r);
	k->hyp = r[0];
	k->sys = r[1];
	k->exc = r[2];
	k->irq = r[3];
}

static struct xk_delta xk_diff(const struct xk_count *a, const struct xk_count *b)
{
	struct xk_delta d = {
		.total = (double)(b->total - a->total),
		.vcpu = (double)(b->vcpu - a->vcpu),
		.hyp = (double)(uint32_t)(b->hyp - a->hyp),
		.sys = (double)(uint32_t)(b->sys - a->sys),
		.exc = (double)(uint32_t)(b->exc - a->exc),
		.irq = (double)(uint32_t)(b->irq - a->irq),
	};
	return d;
}

static sigjmp_buf ill_jmp;

static void on_sigill(int sig)
{
	(void)sig;
	siglongjmp(ill_jmp, 1);
}

/* Whether the counters answer (a forced-emulation #UD that is not emulated is SIGILL). */
static int xk_available(void)
{
	struct sigaction sa, old;
	volatile int ok = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigill;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGILL, &sa, &old) < 0)
		return 0;
	if (!sigsetjmp(ill_jmp, 1)) {
		struct xk_count k;
		xk_read(&k);
		ok = k.vcpu != 0; /* a read counts its own exit */
	}
	sigaction(SIGILL, &old, NULL);
	return ok;
}

/* What two readings back to back differ by: the reads' own exits (normally 2). */
static struct xk_delta xk_overhead;

static void xk_calibrate(void)
{
	struct xk_count a, b;
	int i;
	for (i = 0; i < 50; i++) {
		xk_read(&a);
		xk_read(&b);
		struct xk_delta d = xk_diff(&a, &b);
		if (i == 0 || d.total < xk_overhead.total)
			xk_overhead = d;
	}
	printf("xkbench: exit counter read overhead %.0f exits (%.0f exceptions)\n",
	       xk_overhead.total, xk_overhead.exc);
}

/* Runs `k` operations; < 0 on failure. */
typedef int (*xk_op)(void *ctx, long k);

static void exits_per_op(const char *name, xk_op op, void *ctx, long batches, long k)
{
	struct xk_count a, b;
	struct xk_delta best = {0}, sum = {0};
	long i;
	for (i = 0; i < batches; i++) {
		xk_read(&a);
		if (op(ctx, k) < 0) {
			fail(name, "exit count batch");
			return;
		}
		xk_read(&b);
		struct xk_delta d = xk_diff(&a, &b);
		d.total -= xk_overhead.total;
		d.vcpu -= xk_overhead.vcpu;
		d.hyp -= xk_overhead.hyp;
		d.sys -= xk_overhead.sys;
		d.exc -= xk_overhead.exc;
		d.irq -= xk_overhead.irq;
		if (i == 0 || d.total < best.total)
			best = d;
		sum.total += d.total;
	}
	double other = best.vcpu - best.hyp - best.sys - best.exc - best.irq;
	printf("xkbench: exits_per_%s batches %ldx%ld min %.2f mean %.2f; min batch per op: "
	       "hypercall %.2f syscall %.2f exception %.2f interrupt %.2f other %.2f\n",
	       name, batches, k, best.total / k, sum.total / batches / k, best.hyp / k,
	       best.sys / k, best.exc / k, best.irq / k, other / k);
	printf("XBENCH exits_per_%s %.2f exits\n", name, best.total / k);
}

static int op_getpid(void *ctx, long k)
{
	(void)ctx;
	while (k-- > 0)
		syscall(SYS_getpid);
	return 0;
}

struct pages {
	volatile char *p;
	long next, count, size;
};

static int op_touch(void *ctx, long k)
{
	struct pages *pg = ctx;
	if (pg->next + k > pg->count)
		return -1;
	for (; k > 0; k--, pg->next++)
		pg->p[pg->next * pg->size] = 1;
	return 0;
}

static int op_fork(void *ctx, long k)
{
	(void)ctx;
	while (k-- > 0) {
		int st;
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, &st, 0) != pid)
			return -1;
	}
	return 0;
}

struct pingpong {
	int to, from;
};

static int op_pipe(void *ctx, long k)
{
	struct pingpong *pp = ctx;
	char c = 'x';
	while (k-- > 0)
		if (write(pp->to, &c, 1) != 1 || read(pp->from, &c, 1) != 1)
			return -1;
	return 0;
}

static void exits_page_fault(long b);
static void exits_pipe(long b);

static void exits_bench(void)
{
	if (!xk_available()) {
		printf("xkbench: no exit counters (not xenkvm, or xenkvm without --stats): "
		       "no exits_per_* figures\n");
		return;
	}
	xk_calibrate();
	long b = iters(30);

	if (wanted("getpid"))
		exits_per_op("getpid", op_getpid, NULL, b, 20);

	if (wanted("page_fault"))
		exits_page_fault(b);
	if (wanted("pipe_pingpong"))
		exits_pipe(b);
	if (wanted("fork_exit_wait")) {
		op_fork(NULL, 2); /* warm-up */
		exits_per_op("fork_exit_wait", op_fork, NULL, iters(20), 1);
	}
}

static void exits_page_fault(long b)
{
	/* Fresh pages for every batch, one 4 KiB fault each. */
	struct pages pg = {.size = sysconf(_SC_PAGESIZE), .count = b * 16};
	size_t len = (size_t)pg.count * (size_t)pg.size;
	pg.p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pg.p == MAP_FAILED) {
		fail("exits_per_page_fault", "mmap");
	} else {
		madvise((void *)pg.p, len, MADV_NOHUGEPAGE);
		exits_per_op("page_fault", op_touch, &pg, b, 16);
		munmap((void *)pg.p, len);
	}
}

static void exits_pipe(long b)
{
	int a[2], c[2]; /* a: parent -> child, c: child -> parent */
	if (pipe(a) < 0 || pipe(c) < 0) {
		fail("exits_per_pipe_pingpong", "pipe");
	} else {
		pid_t pid = fork();
		if (pid < 0) {
			fail("exits_per_pipe_pingpong", "fork");
		} else if (pid == 0) {
			char x;
			close(a[1]);
			close(c[0]);
			while (read(a[0], &x, 1) == 1)
				if (write(c[1], &x, 1) != 1)
					break;
			_exit(0);
		} else {
			struct pingpong pp = {.to = a[1], .from = c[0]};
			close(a[0]);
			close(c[1]);
			if (op_pipe(&pp, 20) == 0) /* warm-up */
				exits_per_op("pipe_pingpong", op_pipe, &pp, b, 4);
			else
				fail("exits_per_pipe_pingpong", "write/read");
			close(a[1]);
			close(c[0]);
			waitpid(pid, NULL, 0);
		}
	}
}

int main(void)
{
	const char *s = getenv("XKBENCH_SCALE");
	if (s && atof(s) > 0)
		scale = atof(s);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("xkbench: scale %g\n", scale);
	cpu_set_t cpu0;
	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	if (sched_setaffinity(0, sizeof(cpu0), &cpu0) < 0)
		printf("xkbench: sched_setaffinity(CPU 0) failed: %s\n", strerror(errno));
	if (wanted("getpid"))
		bench_getpid();
	if (wanted("clock_gettime"))
		bench_clock_gettime();
	if (wanted("page_fault"))
		bench_page_fault();
	if (wanted("pipe_pingpong"))
		bench_pipe();
	if (wanted("fork_exit_wait"))
		bench_fork();
	exits_bench();
	printf("xkbench: done, %d failure(s)\n", failures);
	return failures ? 1 : 0;
}
