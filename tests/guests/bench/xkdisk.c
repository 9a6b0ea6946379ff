/*
 * xkdisk: block benchmark for scripts/bench, run in the guest against /dev/xvda and on
 * the host against the raw image file behind it, so that the two sets of figures compare.
 *
 *   xkdisk PATH SIZE_MIB [PREFIX]
 *
 * With O_DIRECT (no page cache on either side):
 *   XBENCH <PREFIX>blk_seq_write <MB/s> MB/s   1 MiB writes over SIZE_MIB, then fsync
 *   XBENCH <PREFIX>blk_seq_read <MB/s> MB/s    1 MiB reads over SIZE_MIB
 *   XBENCH <PREFIX>blk_rand_read_4k <n> IOPS   4 KiB reads at random aligned offsets, 3 s
 *
 * In the guest (no PREFIX) under `xenkvm run --stats`, also the monitor exits per random
 * read, from xenkvm's exit counters (the forced-emulation CPUID of leaf 0x4000f000, as
 * xkbench.c reads them; zeros without --stats, and then the line is left out):
 *   XBENCH exits_per_blk_rand_read_4k <n> exits
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The domain's monitor exits so far (xen-shim/src/stats.rs, subleaf 0 ECX:EDX). */
static uint64_t domain_exits(void)
{
    uint32_t a = 0x4000f000u, b, c = 0, d;
    __asm__ volatile("ud2\n\t.ascii \"xen\"\n\tcpuid"
                     : "+a"(a), "=b"(b), "+c"(c), "=d"(d)
                     :
                     : "memory");
    return c | (uint64_t)d << 32;
}

static void die(const char *what)
{
    printf("XBENCH-ERROR xkdisk: %s\n", what);
    fflush(stdout);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        die("usage: xkdisk PATH SIZE_MIB [PREFIX]");
    const char *path = argv[1];
    long mib = atol(argv[2]);
    const char *prefix = argc > 3 ? argv[3] : "";
    const size_t chunk = 1 << 20;
    if (mib <= 0)
        die("bad size");
    int fd = open(path, O_RDWR | O_DIRECT);
    if (fd < 0)
        die("cannot open the disk with O_DIRECT");
    char *buf;
    if (posix_memalign((void **)&buf, 4096, chunk))
        die("no memory");
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 7 + 1);

    double t0 = now();
    for (long i = 0; i < mib; i++)
        if (pwrite(fd, buf, chunk, (off_t)i * chunk) != (ssize_t)chunk)
            die("write failed");
    if (fsync(fd))
        die("fsync failed");
    double t = now() - t0;
    printf("XBENCH %sblk_seq_write %.1f MB/s\n", prefix, mib * 1.048576 / t);
    fflush(stdout);

    t0 = now();
    for (long i = 0; i < mib; i++)
        if (pread(fd, buf, chunk, (off_t)i * chunk) != (ssize_t)chunk)
            die("read failed");
    t = now() - t0;
    printf("XBENCH %sblk_seq_read %.1f MB/s\n", prefix, mib * 1.048576 / t);
    fflush(stdout);

    uint64_t x = 88172645463325252ull, blocks = (uint64_t)mib * 256, n = 0;
    int in_guest = prefix[0] == '\0';
    uint64_t e0 = in_guest ? domain_exits() : 0;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    t0 = now();
    do {
        for (int k = 0; k < 64; k++, n++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096)
                die("random read failed");
        }
        t = now() - t0;
    } while (t < 3.0);
    getrusage(RUSAGE_SELF, &r1);
    printf("XBENCH %sblk_rand_read_4k %.0f IOPS\n", prefix, n / t);
    printf("xkdisk: %sblk_rand_read_4k: %.2f voluntary, %.2f involuntary context switches per read\n",
           prefix, (double)(r1.ru_nvcsw - r0.ru_nvcsw) / n, (double)(r1.ru_nivcsw - r0.ru_nivcsw) / n);
    if (in_guest) {
        uint64_t e1 = domain_exits();
        if (e1 > e0)
            printf("XBENCH exits_per_blk_rand_read_4k %.2f exits\n", (double)(e1 - e0) / n);
    }
    fflush(stdout);
    close(fd);
    return 0;
}
