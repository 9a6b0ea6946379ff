/*
 * xknet: a bulk TCP sender/receiver for the network test and benchmark guest
 * (resources/initramfs/net.init). busybox nc moves 1 KiB per system call, and every
 * system call costs two exits in a PV guest here; this moves 256 KiB per call.
 *
 *   xknet send HOST PORT [FILE]   send FILE (default: stdin) to HOST:PORT, then close
 *   xknet zeros HOST PORT MIB     send MIB MiB of zeros
 *   xknet recv PORT               accept one connection, read it to the end; prints
 *                                 "XKNET-RECEIVED <bytes>"
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
static char buf[CHUNK];

static int die(const char *what)
{
    fprintf(stderr, "xknet: %s\n", what);
    return 1;
}

static int connect_to(const char *host, const char *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    return s;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "send") == 0) {
        int in = argc > 4 ? open(argv[4], O_RDONLY) : 0;
        int s = connect_to(argv[2], argv[3]);
        if (in < 0 || s < 0)
            return die("cannot open the input or connect");
        for (;;) {
            ssize_t r = read(in, buf, CHUNK);
            if (r < 0)
                return die("read failed");
            if (r == 0)
                break;
            if (write_all(s, buf, (size_t)r))
                return die("send failed");
        }
        shutdown(s, SHUT_WR);
        while (read(s, buf, CHUNK) > 0)
            ;
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "zeros") == 0) {
        int s = connect_to(argv[2], argv[3]);
        if (s < 0)
            return die("cannot connect");
        long left = atol(argv[4]) * 1024 * 1024;
        memset(buf, 0, CHUNK);
        while (left > 0) {
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            if (write_all(s, buf, n))
                return die("send failed");
            left -= (long)n;
        }
        shutdown(s, SHUT_WR);
        while (read(s, buf, CHUNK) > 0)
            ;
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "recv") == 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0)
            return die("cannot listen");
        int s = accept(l, NULL, NULL);
        if (s < 0)
            return die("accept failed");
        long long total = 0;
        ssize_t r;
        while ((r = read(s, buf, CHUNK)) > 0)
            total += r;
        printf("XKNET-RECEIVED %lld\n", total);
        return 0;
    }
    return die("usage: xknet send HOST PORT [FILE] | zeros HOST PORT MIB | recv PORT");
}
