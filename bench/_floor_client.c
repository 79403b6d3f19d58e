/* The floor of client_login_rate.py: the connect + WebSocket handshake + login + close flow of
 * PROTOCOL.md in the least user-space work a client can do (one thread, epoll, no allocation
 * per flow), so what it costs per flow is about what the kernel's TCP/loopback path costs.
 *
 * Each of USERS slots loops: non-blocking connect (source address 127.0.0.2.. round-robin per
 * slot), send the upgrade request, read the 101 (checks "HTTP/1.1 101"), send one masked text
 * frame with the login (the slot's pre-made account + UserSig), read the answer (ok when it
 * holds "code":0), send a masked close frame, read the server's close reply (or EOF), close.
 *
 * Prints "<unix ns> <ok> <fail>" (cumulative) every 100 ms on stdout; runs SECONDS s.
 * Built by bench/client_login_rate.py with the machine's cc into a temp dir; not part of the
 * harness.   usage: floor HOST PORT USERS SECONDS SIGFILE SDKAPPID NIPS
 * SIGFILE: one "userID userSig" per line, one line per slot.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECT, S_HANDSHAKE, S_LOGIN, S_CLOSE };

typedef struct {
    int fd, state, slot;
    size_t have;
    char uid[128], sig[1024];
    unsigned long flows;
    char buf[4096];
} conn_t;

static const char *host; static int port; static int sdkappid; static int nips;
static int ep; static unsigned long ok_n, fail_n; static uint64_t rng;

static uint64_t now_ns(int clk) { struct timespec t; clock_gettime(clk, &t); return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec; }
static uint32_t rnd32(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)rng; }

static size_t ws_frame(char *out, int opcode, const char *p, size_t n) {
    size_t h = 0;
    out[h++] = (char)(0x80 | opcode);
    if (n < 126) out[h++] = (char)(0x80 | n);
    else { out[h++] = (char)(0x80 | 126); out[h++] = (char)(n >> 8); out[h++] = (char)(n & 0xff); }
    uint32_t k = rnd32(); unsigned char key[4]; memcpy(key, &k, 4); memcpy(out + h, key, 4); h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = p[i] ^ key[i & 3];
    return h + n;
}

static void start(conn_t *c);

static void finish(conn_t *c, int good) {  /* good: 1 ok, 0 failed, -1 already counted */
    if (good > 0) ok_n++; else if (good == 0) fail_n++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    start(c);
}

static int send_all(int fd, const char *p, size_t n) {  /* loopback: small writes always fit */
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    return w == (ssize_t)n ? 0 : -1;
}

static void start(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1; setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl((127u << 24) | (2 + (c->slot % nips)));
    bind(c->fd, (struct sockaddr *)&src, sizeof src);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    c->state = S_CONNECT; c->have = 0;
    int r = connect(c->fd, (struct sockaddr *)&dst, sizeof dst);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (r < 0 && errno != EINPROGRESS) { fail_n++; close(c->fd); c->fd = -1; return; }
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_event(conn_t *c, uint32_t events) {
    if (c->state == S_CONNECT) {
        int err = 0; socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (events & (EPOLLERR | EPOLLHUP))) { finish(c, 0); return; }
        char req[512]; unsigned char raw[16]; char key[25];
        for (int i = 0; i < 16; i++) raw[i] = (unsigned char)rnd32();
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        int j = 0;
        for (int i = 0; i < 15; i += 3) {
            uint32_t v = raw[i] << 16 | raw[i + 1] << 8 | raw[i + 2];
            key[j++] = b64[v >> 18]; key[j++] = b64[(v >> 12) & 63]; key[j++] = b64[(v >> 6) & 63]; key[j++] = b64[v & 63];
        }
        uint32_t v = raw[15] << 16; key[j++] = b64[v >> 18]; key[j++] = b64[(v >> 12) & 63]; key[j++] = '='; key[j++] = '='; key[j] = 0;
        int n = snprintf(req, sizeof req, "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, port, key);
        if (send_all(c->fd, req, n)) { finish(c, 0); return; }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->state = S_HANDSHAKE; c->have = 0;
        return;
    }
    ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r <= 0) { finish(c, c->state == S_CLOSE ? -1 : 0); return; }
    c->have += (size_t)r; c->buf[c->have] = 0;
    if (c->state == S_HANDSHAKE) {
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) return;
        if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) { finish(c, 0); return; }
        char msg[1536], frame[1600];
        int n = snprintf(msg, sizeof msg, "{\"cmd\":\"login\",\"seq\":1,\"sdkAppID\":%d,\"userID\":\"%s\",\"userSig\":\"%s\","
                         "\"platform\":\"Android\",\"instanceID\":\"c-%s-%lu\"}", sdkappid, c->uid, c->sig, c->uid, c->flows++);
        size_t fl = ws_frame(frame, 1, msg, (size_t)n);
        c->have = 0;  /* nothing follows the 101 before our login */
        if (send_all(c->fd, frame, fl)) { finish(c, 0); return; }
        c->state = S_LOGIN;
        return;
    }
    if (c->state == S_LOGIN) {
        if (c->have < 2) return;
        unsigned char *b = (unsigned char *)c->buf;
        size_t len = b[1] & 127, h = 2;
        if (len == 126) { if (c->have < 4) return; len = (size_t)b[2] << 8 | b[3]; h = 4; }
        if (c->have < h + len) return;
        char *p = memmem(c->buf + h, len, "\"code\":0", 8);  /* "code":0 then , or } */
        int good = p != NULL && (p + 8 < c->buf + h + len) && (p[8] == ',' || p[8] == '}');
        if (!good) { finish(c, 0); return; }
        char frame[64]; const char bye[] = {0x03, (char)0xe8, 'b', 'y', 'e'};
        size_t fl = ws_frame(frame, 8, bye, sizeof bye);
        if (send_all(c->fd, frame, fl)) { finish(c, 0); return; }
        ok_n++;  /* the login succeeded; the close below is the rest of the flow */
        c->state = S_CLOSE; c->have = 0;
        return;
    }
    /* S_CLOSE: the server's close reply (an 0x88 frame) or EOF ends the flow */
    finish(c, -1);
}

int main(int argc, char **argv) {
    if (argc != 8) { fprintf(stderr, "usage: floor HOST PORT USERS SECONDS SIGFILE SDKAPPID NIPS\n"); return 2; }
    host = argv[1]; port = atoi(argv[2]); int users = atoi(argv[3]); double seconds = atof(argv[4]);
    sdkappid = atoi(argv[6]); nips = atoi(argv[7]); if (nips < 1) nips = 1;
    if (getrandom(&rng, sizeof rng, 0) != sizeof rng || !rng) rng = 88172645463325252ull;
    FILE *f = fopen(argv[5], "r"); if (!f) { perror("sigfile"); return 2; }
    conn_t *cs = calloc((size_t)users, sizeof *cs);
    for (int i = 0; i < users; i++) {
        if (fscanf(f, "%127s %1023s", cs[i].uid, cs[i].sig) != 2) { fprintf(stderr, "sigfile: too few lines\n"); return 2; }
        cs[i].slot = i;
    }
    fclose(f);
    ep = epoll_create1(0);
    for (int i = 0; i < users; i++) start(&cs[i]);
    uint64_t t0 = now_ns(CLOCK_MONOTONIC), next = t0;
    struct epoll_event evs[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        uint64_t t = now_ns(CLOCK_MONOTONIC);
        if (t >= next) {
            printf("%llu %lu %lu\n", (unsigned long long)now_ns(CLOCK_REALTIME), ok_n, fail_n);
            next += 100000000ull;
            if ((double)(t - t0) / 1e9 >= seconds) break;
            for (int i = 0; i < users; i++) if (cs[i].fd < 0) start(&cs[i]);  /* retry refused slots */
        }
        int n = epoll_wait(ep, evs, 256, 20);
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
    }
    return 0;
}
