/* wsload: the fan-out benchmark's load client, N WebSocket viewers in one epoll loop.
 *
 * A Python load client costs about as much CPU as the server it measures (bench/README.md);
 * this one costs a small part of that, so that the figures say what bounds the server.
 * Built by `python -m bench` with the machine's C compiler (bench/.build, not committed).
 *
 *   wsload HOST PORT RESOURCE N [--start] [--spread]
 *
 * Opens N connections (at most 64 handshakes at a time), each from its own loopback
 * address with --spread (127.1.x.y), offering permessage-deflate as browsers do (a
 * connection whose server accepts it counts as failed: this client does not inflate),
 * sends {"action":"start"} on each with --start, then
 * reads: it counts each connection's binary payload bytes and messages, answers pings with
 * pongs and closes with a close. Commands on stdin, one per line, answered on stdout:
 *   stats  ->  "stats OPEN MESSAGES B1 B2 ... BN" (bytes per connection since it opened)
 *   quit   ->  exits (the kernel closes the sockets)
 * Its first line is "ready OPEN FAILED" once every handshake has ended.
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
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define IN_FLIGHT 64

enum phase { IDLE, HANDSHAKE, OPEN, CLOSED };

struct conn {
    int fd;
    enum phase phase;
    char head[2048];
    int head_len;
    unsigned char hdr[14];
    int hdr_len, hdr_need;
    uint64_t remaining;
    int opcode, fin, message_opcode;
    unsigned char ctl[125];
    int ctl_len;
    uint64_t bytes, messages;
};

static struct conn *conns;
static int n_conns, epfd, do_start, spread, port;
static const char *host, *resource;

static void send_frame(struct conn *c, int opcode, const unsigned char *payload, int n) {
    unsigned char frame[2 + 4 + 125];
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    frame[0] = 0x80 | opcode;
    frame[1] = 0x80 | n;
    memcpy(frame + 2, mask, 4);
    for (int i = 0; i < n; i++) frame[6 + i] = payload[i] ^ mask[i % 4];
    (void)!send(c->fd, frame, 6 + n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void end(struct conn *c) {
    if (c->phase != CLOSED) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->phase = CLOSED;
    }
}

static void frame_done(struct conn *c) {
    if (c->opcode == 9) {
        send_frame(c, 0xA, c->ctl, c->ctl_len);
    } else if (c->opcode == 8) {
        send_frame(c, 0x8, c->ctl, c->ctl_len < 2 ? c->ctl_len : 2);
        end(c);
    } else if (c->fin && c->message_opcode == 2) {
        c->messages++;
    }
}

/* Frames from the server: unmasked, possibly split anywhere across reads. */
static void parse(struct conn *c, const unsigned char *p, size_t n) {
    while (n > 0 && c->phase == OPEN) {
        if (c->remaining == 0) {
            c->hdr[c->hdr_len++] = *p++;
            n--;
            if (c->hdr_len == 2) {
                int len = c->hdr[1] & 0x7F;
                c->hdr_need = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + (c->hdr[1] & 0x80 ? 4 : 0);
            }
            if (c->hdr_len < 2 || c->hdr_len < c->hdr_need) continue;
            uint64_t len = c->hdr[1] & 0x7F;
            if (len == 126) len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            else if (len == 127) { len = 0; for (int i = 2; i < 10; i++) len = len << 8 | c->hdr[i]; }
            c->opcode = c->hdr[0] & 0x0F;
            c->fin = c->hdr[0] >> 7;
            if (c->opcode == 1 || c->opcode == 2) c->message_opcode = c->opcode;
            c->hdr_len = 0;
            c->ctl_len = 0;
            c->remaining = len;
            if (len == 0) frame_done(c);
            continue;
        }
        size_t k = c->remaining < n ? c->remaining : n;
        if (c->opcode >= 8) {
            memcpy(c->ctl + c->ctl_len, p, k);
            c->ctl_len += k;
        } else if (c->message_opcode == 2) {
            c->bytes += k;
        }
        c->remaining -= k;
        p += k;
        n -= k;
        if (c->remaining == 0) frame_done(c);
    }
}

static int opened, failed, begun;

static void begin(struct conn *c, int i) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (spread) {
        struct sockaddr_in from = {.sin_family = AF_INET};
        from.sin_addr.s_addr = htonl(0x7F010000u + 1 + (i / 250) * 256 + i % 250);
        bind(c->fd, (struct sockaddr *)&from, sizeof from);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &to.sin_addr);
    connect(c->fd, (struct sockaddr *)&to, sizeof to);
    c->phase = HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = i};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    begun++;
}

static void handshake(struct conn *c, int i, uint32_t events) {
    if (events & EPOLLOUT && c->head_len == 0) {  /* connected: the upgrade request */
        char request[2048];
        int n = snprintf(request, sizeof request,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
                         resource, host, port);
        if (send(c->fd, request, n, MSG_NOSIGNAL) != n) { failed++; end(c); return; }
        c->head_len = -1;  /* sent; nothing read yet */
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (!(events & EPOLLIN)) return;
    if (c->head_len < 0) c->head_len = 0;
    ssize_t got = recv(c->fd, c->head + c->head_len, sizeof c->head - 1 - c->head_len, 0);
    if (got <= 0) { failed++; end(c); return; }
    c->head_len += got;
    c->head[c->head_len] = 0;
    char *blank = strstr(c->head, "\r\n\r\n");
    if (blank == NULL) return;
    /* offered as browsers offer it; a server that accepts it would send frames this client
       does not inflate (ours and rtsp-relay decline it) */
    if (strncmp(c->head, "HTTP/1.1 101", 12) != 0 || strcasestr(c->head, "permessage-deflate")) {
        failed++;
        end(c);
        return;
    }
    c->phase = OPEN;
    opened++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (do_start) {
        static const char start[] = "{\"action\":\"start\"}";
        send_frame(c, 1, (const unsigned char *)start, sizeof start - 1);
    }
    char *rest = blank + 4;
    parse(c, (unsigned char *)rest, c->head + c->head_len - rest);
}

static void command(void) {
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL || strncmp(line, "quit", 4) == 0) exit(0);
    if (strncmp(line, "stats", 5) == 0) {
        int open = 0;
        uint64_t messages = 0;
        for (int i = 0; i < n_conns; i++) { open += conns[i].phase == OPEN; messages += conns[i].messages; }
        printf("stats %d %llu", open, (unsigned long long)messages);
        for (int i = 0; i < n_conns; i++) printf(" %llu", (unsigned long long)conns[i].bytes);
        printf("\n");
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: wsload HOST PORT RESOURCE N [--start] [--spread]\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    resource = argv[3];
    n_conns = atoi(argv[4]);
    for (int i = 5; i < argc; i++) {
        do_start |= strcmp(argv[i], "--start") == 0;
        spread |= strcmp(argv[i], "--spread") == 0;
    }
    conns = calloc(n_conns, sizeof *conns);
    static unsigned char buf[READ_SIZE];
    epfd = epoll_create1(0);
    struct epoll_event in = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &in);
    int announced = 0;
    struct epoll_event events[256];
    for (;;) {
        while (begun < n_conns && begun - opened - failed < IN_FLIGHT) begin(&conns[begun], begun);
        if (!announced && opened + failed == n_conns) {
            printf("ready %d %d\n", opened, failed);
            fflush(stdout);
            announced = 1;
        }
        int ready = epoll_wait(epfd, events, 256, -1);
        if (ready < 0 && errno != EINTR) return 1;
        for (int e = 0; e < ready; e++) {
            uint32_t i = events[e].data.u32;
            if (i == UINT32_MAX) { command(); continue; }
            struct conn *c = &conns[i];
            if (c->phase == HANDSHAKE) {
                if (events[e].events & (EPOLLERR | EPOLLHUP) && !(events[e].events & EPOLLIN)) { failed++; end(c); }
                else handshake(c, i, events[e].events);
                continue;
            }
            if (c->phase != OPEN) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got > 0) parse(c, buf, got);
            else if (got == 0 || (errno != EAGAIN && errno != EINTR)) end(c);
        }
    }
}
