/*
 * The floor: the socket work any HTTP proxy must do, and nothing else (issue 15).
 *
 * A single-threaded epoll relay: every client connection it accepts gets its own new
 * connection to the backend, and bytes are copied both ways with read/write. No parsing,
 * no routing, no pooling, no logging. Run in the same layout as the proxies in
 * scripts/bench.sh, its CPU per request is the floor a proxy's own work sits on.
 *
 *   cc -O2 -o floor bench/floor.c && ./floor 127.0.0.1:18099 127.0.0.1:18091
 *
 * Each side has one 64 KiB buffer; while the peer cannot take it all, reading from this
 * side stops (EPOLLIN off) until the rest is written (EPOLLOUT). Either side closing
 * closes both. Stops on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
/* An event of a pair closed earlier in the same batch. */
#define DEAD ((void *)1)

struct side {
    int fd;
    struct side *peer;
    char *buf; /* bytes read from this side, waiting to be written to the peer */
    size_t off, len;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int parse_addr(const char *s, struct sockaddr_in *a) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(atoi(colon + 1));
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void watch(int ep, struct side *s, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(ep, op, s->fd, &ev);
}

static void close_pair(struct side *s) {
    struct side *p = s->peer;
    close(s->fd);
    close(p->fd);
    free(s->buf);
    free(p->buf);
    free(s < p ? s : p); /* both sides are one allocation */
}

/* Write what `s` holds to its peer; 0 when all is written, 1 when the peer is full,
 * -1 on error. */
static int flush(int ep, struct side *s) {
    while (s->off < s->len) {
        ssize_t n = write(s->peer->fd, s->buf + s->off, s->len - s->off);
        if (n > 0) {
            s->off += n;
        } else if (n < 0 && errno == EAGAIN) {
            watch(ep, s, EPOLL_CTL_MOD, 0);            /* stop reading this side */
            watch(ep, s->peer, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
            return 1;
        } else {
            return -1;
        }
    }
    s->off = s->len = 0;
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_addr, backend;
    if (argc != 3 || parse_addr(argv[1], &listen_addr) || parse_addr(argv[2], &backend)) {
        fprintf(stderr, "usage: floor LISTEN_IP:PORT BACKEND_IP:PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&listen_addr, sizeof listen_addr) || listen(lfd, 16384)) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event events[256];
    while (!stop) {
        int n = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < n; i++) {
            struct side *s = events[i].data.ptr;
            if (s == DEAD) continue;
            if (!s) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int ufd = socket(AF_INET, SOCK_STREAM, 0);
                    /* A blocking connect on loopback: the floor has no pool either. */
                    if (connect(ufd, (struct sockaddr *)&backend, sizeof backend)) {
                        close(ufd);
                        close(cfd);
                        continue;
                    }
                    fcntl(ufd, F_SETFL, O_NONBLOCK);
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct side *pair = calloc(2, sizeof *pair);
                    pair[0] = (struct side){.fd = cfd, .peer = &pair[1], .buf = malloc(BUF)};
                    pair[1] = (struct side){.fd = ufd, .peer = &pair[0], .buf = malloc(BUF)};
                    watch(ep, &pair[0], EPOLL_CTL_ADD, EPOLLIN);
                    watch(ep, &pair[1], EPOLL_CTL_ADD, EPOLLIN);
                }
                continue;
            }
            int dead = 0;
            if (events[i].events & EPOLLOUT) {
                /* The peer drained: finish its pending write into this side. */
                int r = flush(ep, s->peer);
                if (r < 0) dead = 1;
                else if (r == 0) {
                    watch(ep, s, EPOLL_CTL_MOD, EPOLLIN);
                    watch(ep, s->peer, EPOLL_CTL_MOD, EPOLLIN);
                }
            }
            if (!dead && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && s->len == 0) {
                ssize_t r = read(s->fd, s->buf, BUF);
                if (r > 0) {
                    s->len = r;
                    if (flush(ep, s) < 0) dead = 1;
                } else if (r == 0 || errno != EAGAIN) {
                    dead = 1;
                }
            }
            if (dead) {
                /* Later events in this batch may name the pair: drop them. */
                for (int j = i + 1; j < n; j++)
                    if (events[j].data.ptr == s || events[j].data.ptr == s->peer)
                        events[j].data.ptr = DEAD;
                close_pair(s);
            }
        }
    }
    return 0;
}
