/* loadgen: a single-threaded epoll load generator for echo servers, raw TCP and RFC 6455.
 *
 * Modes (first argument):
 *   tcp-echo      N connections, each keeping W messages of S bytes in flight
 *   ws-echo       the same over WebSocket: client handshake, masked frames, close handshake
 *   tcp-rtt       one message at a time per connection, busy-polling recv (no epoll_wait)
 *   ws-rtt        the same over WebSocket
 *   ws-handshake  C concurrent connections looping connect + upgrade + close handshake + close
 *   selftest      checks SHA-1, the RFC 6455 accept key and the histogram, then exits
 * Each run prints one JSON object on stdout; the exit status is 1 when any error was counted.
 *
 * Phases: CONNECT (every connection opens, ws ones complete their upgrade; bounded by
 * --connect-timeout) -> RUN (--warmup, then --duration seconds measured) -> DRAIN (no new
 * messages; outstanding echoes come back, connections close cleanly; bounded by --grace)
 * -> DONE (whatever is left is closed and counted as an error). Nothing runs unbounded.
 *
 * Verification without storing what was sent: message k of connection i is the slice
 * pattern[offset(i, k) .. + S] of one random pattern, so its echo is compared with memcmp as it
 * arrives, split or not. A mismatch is counted once per message; bytes nobody asked for, frames
 * the server must not send, or a close without the handshake are counted too.
 *
 * Latency is per message: from the moment it is handed to the socket (CLOCK_MONOTONIC) to the
 * read that completes its echo, recorded in a fixed-size histogram (hist.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "sha1.h"
#include "wsclient.h"

#define RECV_BUFFER_SIZE (256 * 1024) /* one read: batches many small echoes per syscall */
#define SCRATCH_MIN (256 * 1024)      /* outgoing messages are built here before one send */
#define MAX_EVENTS 1024               /* per epoll_wait */
#define MAX_POLL_MS 100               /* phases advance at least this often */
#define PATTERN_SPREAD 251            /* message start offsets; prime, so neighbours differ */
#define WS_MAX_HEADER 14              /* RFC 6455 §5.2: 2 + 8 (64-bit length) + 4 (mask key) */
#define WS_MAX_CONTROL 125            /* RFC 6455 §5.5: control payloads are at most 125 bytes */
#define WS_KEY_BYTES 16               /* RFC 6455 §4.1: the key is 16 random bytes, base64 */
#define WS_CLOSE_NORMAL 1000          /* RFC 6455 §7.4.1 */
#define HTTP_MAX_HEAD 8192            /* a 101 response is ~130 bytes; more is a broken server */
#define MAX_TIMELINE 100000           /* timeline buckets kept (bounds memory for long runs) */
#define NS 1000000000ull

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

enum mode { TCP_ECHO, TCP_RTT, WS_ECHO, WS_RTT, WS_HANDSHAKE, SELFTEST };
static const char *const mode_names[] = {"tcp-echo", "tcp-rtt",      "ws-echo",
                                         "ws-rtt",   "ws-handshake", "selftest"};

enum phase { PH_CONNECT, PH_RUN, PH_DRAIN, PH_DONE };

/* IDLE: no socket. OPENING: TCP connect (and, for ws, the upgrade) in progress. OPEN: carrying
 * messages. CLOSING: our FIN (tcp) or close frame (ws) is sent; waiting for the server's end. */
enum cstate { CS_IDLE, CS_CONNECTING, CS_UPGRADING, CS_OPEN, CS_CLOSING, CS_STATES };

enum err { E_CONNECT, E_HANDSHAKE, E_MISMATCH, E_PROTOCOL, E_RESET, E_UNCLEAN_CLOSE, E_LOST, E_N };
static const char *const err_names[] = {"connect",  "handshake", "mismatch",
                                        "protocol", "reset",     "unclean_close", "lost"};

struct options {
    enum mode mode;
    const char *host, *path;
    int port, connections, window;
    size_t size;
    double duration, warmup, grace, connect_timeout;
    bool text;
    int timeline_ms;
};

struct conn {
    int fd, index;
    uint32_t gen, mask; /* gen tags epoll events, so a reused slot ignores stale ones */
    enum cstate state;
    uint64_t sent, echoed;  /* messages handed to the socket / fully echoed */
    uint64_t *stamps;       /* send time of the messages in flight, a ring of `window` */
    uint64_t cycle_start;   /* ws-handshake: when this connection's connect began */
    size_t msg_off;         /* bytes of the message being echoed that have arrived */
    bool msg_bad;           /* that message is already counted as a mismatch */
    unsigned char *out;     /* bytes the kernel refused, sent before anything newer */
    size_t out_len, out_off, out_cap;
    char *head;             /* ws: the handshake response until its blank line */
    size_t head_len;
    char accept[32];        /* ws: the Sec-WebSocket-Accept we expect */
    unsigned char hdr[WS_MAX_HEADER];
    size_t hdr_len;
    bool in_frame, frame_fin, in_message, close_sent, close_received;
    int frame_op;
    uint64_t frame_left;
    unsigned char ctl[WS_MAX_CONTROL];
    size_t ctl_len;
};

/* One opening handshake, made before the run: the request with its random key and the
 * Sec-WebSocket-Accept it must draw. Hashing a fresh key per connection cost the
 * ws-handshake mode ~2% of its core; servers do not remember keys, so a pool of random
 * ones is as good a test. */
struct upgrade {
    char request[512];
    size_t len;
    char accept[32];
};

#define KEY_POOL 1024

struct run {
    struct options o;
    bool ws, busy;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int epfd;
    struct conn *conns;
    int count[CS_STATES];
    enum phase phase;
    uint64_t t_connect_deadline, t_measure, t_end, t_hard;
    bool measuring;
    double measured_s;
    struct rusage ru_start, ru_end;
    unsigned char *pattern, *scratch;
    size_t scratch_cap;
    uint64_t rng;
    uint64_t ops, connected;
    uint64_t errors[E_N];
    uint64_t *timeline;
    size_t timeline_len;
    struct hist hist;
    struct upgrade *upgrades; /* ws: KEY_POOL ready-made requests, picked at random */
    unsigned char rbuf[RECV_BUFFER_SIZE];
};

/* ---- small helpers --------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint64_t secs_to_ns(double s) { return (uint64_t)(s * 1e9); }

/* xorshift64*: fast random bytes for patterns, mask keys and handshake keys, seeded by
 * getrandom(). Masking only needs keys the server cannot predict from earlier frames. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) {
        fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", size);
        exit(2);
    }
    return p;
}

static const unsigned char *expected_message(const struct run *r, const struct conn *c,
                                             uint64_t k)
{
    return r->pattern + (k * 7 + (uint64_t)c->index * 13) % PATTERN_SPREAD;
}

/* ---- connection state and epoll -------------------------------------------------------------- */

static void set_state(struct run *r, struct conn *c, enum cstate st)
{
    r->count[c->state]--;
    r->count[st]++;
    c->state = st;
}

static int live_count(const struct run *r) { return r->o.connections - r->count[CS_IDLE]; }

static void set_mask(struct run *r, struct conn *c, uint32_t mask)
{
    if (mask == c->mask)
        return;
    struct epoll_event ev = {.events = mask, .data.u64 = (uint64_t)c->gen << 32 | (uint32_t)c->index};
    int op = c->mask == 0 ? EPOLL_CTL_ADD : mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(r->epfd, op, c->fd, &ev) < 0)
        perror("loadgen: epoll_ctl");
    c->mask = mask;
}

static void conn_reset_fields(struct conn *c)
{
    c->mask = 0;
    c->sent = c->echoed = 0;
    c->msg_off = c->out_len = c->out_off = c->head_len = c->hdr_len = c->ctl_len = 0;
    c->msg_bad = c->in_frame = c->in_message = c->close_sent = c->close_received = false;
    c->frame_left = 0;
}

static void conn_release(struct run *r, struct conn *c)
{
    if (c->state == CS_IDLE)
        return;
    close(c->fd); /* also leaves the epoll interest list: this process holds the only copy */
    c->fd = -1;
    c->mask = 0;
    free(c->head);
    c->head = NULL;
    set_state(r, c, CS_IDLE);
}

static void count_lost(struct run *r, const struct conn *c) { r->errors[E_LOST] += c->sent - c->echoed; }

/* Any failure: count it, count the messages that will never come back, drop the socket. */
static int conn_fail(struct run *r, struct conn *c, enum err e)
{
    r->errors[e]++;
    count_lost(r, c);
    conn_release(r, c);
    return -1;
}

static void record_op(struct run *r, uint64_t now, uint64_t latency)
{
    if (!r->measuring)
        return;
    hist_record(&r->hist, latency);
    r->ops++;
    size_t slot = (size_t)((now - r->t_measure) / ((uint64_t)r->o.timeline_ms * 1000000));
    if (slot < r->timeline_len)
        r->timeline[slot]++;
}

/* ---- output: write first, buffer the remainder ---------------------------------------------- */

static void out_append(struct conn *c, const unsigned char *data, size_t len)
{
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        unsigned char *grown = realloc(c->out, cap);
        if (!grown) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(2);
        }
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static int conn_write(struct run *r, struct conn *c, const void *data, size_t len)
{
    size_t done = 0;
    if (c->out_off == c->out_len) { /* nothing queued: the kernel gets it first */
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return conn_fail(r, c, E_RESET);
        done = n > 0 ? (size_t)n : 0;
    }
    if (done < len) {
        out_append(c, (const unsigned char *)data + done, len - done);
        set_mask(r, c, c->mask | EPOLLOUT);
    }
    return 0;
}

static int conn_flush(struct run *r, struct conn *c)
{
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : conn_fail(r, c, E_RESET);
    c->out_off += (size_t)n;
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        set_mask(r, c, c->mask & ~(uint32_t)EPOLLOUT);
    }
    return 0;
}

/* ---- WebSocket frames (client side: RFC 6455 §5.2, §5.3) -------------------------------------- */

static void mask_copy(unsigned char *dst, const unsigned char *src, size_t len,
                      const unsigned char key[4])
{
    unsigned char key8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t k64, w;
    memcpy(&k64, key8, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) { /* 8 bytes a step; 8 is a multiple of 4, so the phase holds */
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < len; i++)
        dst[i] = src[i] ^ key[i & 3];
}

static size_t ws_header_size(size_t payload_len)
{
    return (payload_len < 126 ? 2 : payload_len <= 0xFFFF ? 4 : 10) + 4;
}

/* A final, masked frame with a fresh random key; returns its size on the wire. */
static size_t ws_build_frame(struct run *r, unsigned char *out, int opcode,
                             const unsigned char *payload, size_t len)
{
    size_t h = 2;
    out[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        out[1] = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(len >> 8), out[3] = (unsigned char)len;
        h = 4;
    } else {
        out[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        h = 10;
    }
    uint32_t key = (uint32_t)rng_next(&r->rng);
    memcpy(out + h, &key, 4);
    mask_copy(out + h + 4, payload, len, out + h);
    return h + 4 + len;
}

static int ws_send_control(struct run *r, struct conn *c, int opcode, const unsigned char *payload,
                           size_t len)
{
    unsigned char frame[WS_MAX_HEADER + WS_MAX_CONTROL];
    return conn_write(r, c, frame, ws_build_frame(r, frame, opcode, payload, len));
}

static int ws_send_close(struct run *r, struct conn *c, unsigned code)
{
    unsigned char payload[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    c->close_sent = true;
    return ws_send_control(r, c, OP_CLOSE, payload, 2);
}

/* ---- sending messages -------------------------------------------------------------------------- */

static size_t message_wire_size(const struct run *r)
{
    return r->o.size + (r->ws ? ws_header_size(r->o.size) : 0);
}

/* Hands `count` more messages to the socket, as few sends as the scratch buffer allows. */
static int send_messages(struct run *r, struct conn *c, uint64_t count)
{
    size_t wire = message_wire_size(r);
    uint64_t now = now_ns();
    int opcode = r->o.text ? OP_TEXT : OP_BINARY;
    while (count > 0) {
        size_t used = 0;
        for (; count > 0 && used + wire <= r->scratch_cap; count--, c->sent++) {
            const unsigned char *msg = expected_message(r, c, c->sent);
            c->stamps[c->sent % (uint64_t)r->o.window] = now;
            if (r->ws)
                used += ws_build_frame(r, r->scratch + used, opcode, msg, r->o.size);
            else
                memcpy(r->scratch + used, msg, r->o.size), used += r->o.size;
        }
        if (conn_write(r, c, r->scratch, used) < 0)
            return -1;
    }
    return 0;
}

/* Our side of the end: a FIN for raw TCP (the server answers EOF with EOF), close 1000 for ws. */
static int begin_close(struct run *r, struct conn *c)
{
    set_state(r, c, CS_CLOSING);
    if (r->ws)
        return ws_send_close(r, c, WS_CLOSE_NORMAL);
    if (shutdown(c->fd, SHUT_WR) < 0)
        return conn_fail(r, c, E_RESET);
    return 0;
}

/* ---- receiving echoes -------------------------------------------------------------------------- */

static void check_payload(struct run *r, struct conn *c, const unsigned char *p, size_t n)
{
    if (c->msg_bad)
        return;
    if (c->msg_off + n > r->o.size ||
        memcmp(p, expected_message(r, c, c->echoed) + c->msg_off, n) != 0) {
        c->msg_bad = true;
        r->errors[E_MISMATCH]++;
    }
}

static void message_done(struct run *r, struct conn *c, uint64_t now)
{
    if (c->msg_off != r->o.size && !c->msg_bad)
        r->errors[E_MISMATCH]++; /* a ws message of the wrong length */
    record_op(r, now, now - c->stamps[c->echoed % (uint64_t)r->o.window]);
    c->echoed++;
    c->msg_off = 0;
    c->msg_bad = false;
}

/* Raw TCP: the echo stream is cut into messages by length alone. */
static int tcp_consume(struct run *r, struct conn *c, const unsigned char *p, size_t n,
                       uint64_t now)
{
    while (n > 0) {
        if (c->echoed == c->sent)
            return conn_fail(r, c, E_PROTOCOL); /* bytes we never sent */
        size_t take = r->o.size - c->msg_off < n ? r->o.size - c->msg_off : n;
        check_payload(r, c, p, take);
        c->msg_off += take, p += take, n -= take;
        if (c->msg_off == r->o.size)
            message_done(r, c, now);
    }
    return 0;
}

static size_t ws_header_need(const struct conn *c)
{
    if (c->hdr_len < 2)
        return 2;
    unsigned len7 = c->hdr[1] & 0x7F;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (c->hdr[1] & 0x80 ? 4 : 0);
}

/* RFC 6455 §5.1, §5.2, §5.4, §5.5: what a server may send us. */
static bool ws_frame_begin(struct run *r, struct conn *c)
{
    unsigned len7 = c->hdr[1] & 0x7F;
    uint64_t len = len7;
    if (len7 >= 126) {
        len = 0;
        for (size_t i = 2; i < (len7 == 126 ? 4u : 10u); i++)
            len = len << 8 | c->hdr[i];
    }
    c->frame_fin = c->hdr[0] & 0x80;
    c->frame_op = c->hdr[0] & 0x0F;
    c->frame_left = len;
    c->in_frame = true;
    c->hdr_len = 0;
    c->ctl_len = 0;
    int data_op = r->o.text ? OP_TEXT : OP_BINARY;
    bool control = c->frame_op >= OP_CLOSE;
    if ((c->hdr[0] & 0x70) || (c->hdr[1] & 0x80) || (len >> 63) || c->close_received)
        return false; /* RSV without extension, masked server frame, length MSB, after close */
    if (control)
        return (c->frame_op <= OP_PONG) && c->frame_fin && len <= WS_MAX_CONTROL;
    if (c->frame_op == OP_CONT)
        return c->in_message;
    if (c->frame_op != data_op || c->in_message || c->echoed == c->sent)
        return false; /* wrong type, a new message inside one, or an echo nobody asked for */
    c->in_message = true;
    return true;
}

static int ws_on_close_frame(struct run *r, struct conn *c)
{
    unsigned code = c->ctl_len >= 2 ? (unsigned)c->ctl[0] << 8 | c->ctl[1] : 0;
    c->close_received = true;
    if (c->ctl_len == 1)
        return conn_fail(r, c, E_PROTOCOL); /* §5.5.1: a 1-byte close body is invalid */
    if (!c->close_sent) { /* the server ended first: an error in an echo benchmark */
        r->errors[E_RESET]++;
        count_lost(r, c);
        c->echoed = c->sent;
        set_state(r, c, CS_CLOSING);
        return ws_send_close(r, c, code ? code : WS_CLOSE_NORMAL);
    }
    if (code != WS_CLOSE_NORMAL)
        r->errors[E_UNCLEAN_CLOSE]++;
    return 0;
}

static int ws_frame_end(struct run *r, struct conn *c, uint64_t now)
{
    c->in_frame = false;
    switch (c->frame_op) {
    case OP_CLOSE:
        return ws_on_close_frame(r, c);
    case OP_PING:
        return c->close_sent ? 0 : ws_send_control(r, c, OP_PONG, c->ctl, c->ctl_len);
    case OP_PONG:
        return 0; /* §5.5.3: unsolicited pongs are ignored */
    default:
        if (c->frame_fin) {
            c->in_message = false;
            message_done(r, c, now);
        }
        return 0;
    }
}

static void ws_payload(struct run *r, struct conn *c, const unsigned char *p, size_t n)
{
    if (c->frame_op >= OP_CLOSE) {
        memcpy(c->ctl + c->ctl_len, p, n); /* <= 125 bytes in total, checked at frame begin */
        c->ctl_len += n;
        return;
    }
    check_payload(r, c, p, n);
    c->msg_off += n;
}

/* Frames may be split anywhere and many may share one read: the header is gathered in c->hdr,
 * payload bytes are checked where they lie. */
static int ws_consume(struct run *r, struct conn *c, const unsigned char *p, size_t n,
                      uint64_t now)
{
    while (n > 0 || (c->in_frame && c->frame_left == 0)) {
        if (!c->in_frame) {
            size_t take = ws_header_need(c) - c->hdr_len;
            take = take < n ? take : n;
            memcpy(c->hdr + c->hdr_len, p, take);
            c->hdr_len += take, p += take, n -= take;
            if (c->hdr_len < 2 || c->hdr_len < ws_header_need(c))
                continue;
            if (!ws_frame_begin(r, c))
                return conn_fail(r, c, E_PROTOCOL);
        }
        size_t take = c->frame_left < n ? (size_t)c->frame_left : n;
        ws_payload(r, c, p, take);
        c->frame_left -= take, p += take, n -= take;
        if (c->frame_left == 0 && ws_frame_end(r, c, now) < 0)
            return -1;
    }
    return 0;
}

/* ---- the opening handshake (RFC 6455 §4.1, §4.2.2) ------------------------------------------- */

static void make_upgrades(struct run *r)
{
    bool v6 = strchr(r->o.host, ':') != NULL; /* an IPv6 literal needs brackets in Host */
    r->upgrades = xmalloc(KEY_POOL * sizeof *r->upgrades);
    for (int i = 0; i < KEY_POOL; i++) {
        struct upgrade *u = &r->upgrades[i];
        uint8_t nonce[WS_KEY_BYTES];
        uint64_t a = rng_next(&r->rng), b = rng_next(&r->rng);
        memcpy(nonce, &a, 8), memcpy(nonce + 8, &b, 8);
        char key[32];
        ws_base64_encode(nonce, WS_KEY_BYTES, key);
        expected_accept(key, u->accept);
        int len = snprintf(u->request, sizeof u->request,
                           "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           r->o.path, v6 ? "[" : "", r->o.host, v6 ? "]" : "", r->o.port, key);
        if (len < 0 || (size_t)len >= sizeof u->request) {
            fprintf(stderr, "loadgen: the upgrade request does not fit; shorten --path\n");
            exit(2);
        }
        u->len = (size_t)len;
    }
}

static const struct upgrade *random_upgrade(struct run *r)
{
    return &r->upgrades[rng_next(&r->rng) % KEY_POOL];
}

/* The request is on its way: read the response to it. */
static void await_response(struct run *r, struct conn *c, const struct upgrade *u)
{
    memcpy(c->accept, u->accept, sizeof c->accept);
    c->head = xmalloc(HTTP_MAX_HEAD + 1);
    set_state(r, c, CS_UPGRADING);
    set_mask(r, c, EPOLLIN);
}

static int ws_send_upgrade(struct run *r, struct conn *c)
{
    const struct upgrade *u = random_upgrade(r);
    await_response(r, c, u);
    return conn_write(r, c, u->request, u->len);
}

/* ws-handshake, right after connect(): on loopback the connection is usually up by the time
 * connect() returns, so the request goes at once and the wait for writability, its SO_ERROR
 * query and an epoll_ctl are saved. Not up yet (EAGAIN): wait for writability as usual. */
static void ws_upgrade_early(struct run *r, struct conn *c)
{
    const struct upgrade *u = random_upgrade(r);
    ssize_t n = send(c->fd, u->request, u->len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        set_mask(r, c, EPOLLOUT); /* writable = connected (or failed: SO_ERROR tells) */
        return;
    }
    if (n < 0) {
        conn_fail(r, c, E_CONNECT);
        return;
    }
    await_response(r, c, u);
    if ((size_t)n < u->len) /* rare on a fresh socket: the rest goes when writable */
        conn_write(r, c, u->request + n, u->len - (size_t)n);
}

/* The head is NUL-terminated with its blank line cut off. Lines end in CRLF (RFC 9112 §2.1). */
static bool ws_response_ok(char *head, const char *accept)
{
    if (strncmp(head, "HTTP/1.1 101", 12) != 0 || (head[12] != ' ' && head[12] != '\r'))
        return false;
    bool upgrade = false, connection = false, accepted = false;
    for (char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        char *end = strstr(line, "\r\n");
        if (end)
            *end = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            char *value = colon + 1 + strspn(colon + 1, " \t");
            size_t vlen = strlen(value);
            while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
                value[--vlen] = '\0';
            upgrade |= strcasecmp(line, "upgrade") == 0 && strcasecmp(value, "websocket") == 0;
            connection |= strcasecmp(line, "connection") == 0 && has_token(value, "upgrade");
            accepted |= strcasecmp(line, "sec-websocket-accept") == 0 && strcmp(value, accept) == 0;
        }
        if (!end)
            break;
        *end = '\r';
        line = end;
    }
    return upgrade && connection && accepted;
}

static int conn_opened(struct run *r, struct conn *c);

static int ws_handshake_feed(struct run *r, struct conn *c, const unsigned char *p, size_t n,
                             uint64_t now)
{
    size_t start = c->head_len > 3 ? c->head_len - 3 : 0;
    size_t take = HTTP_MAX_HEAD - c->head_len < n ? HTTP_MAX_HEAD - c->head_len : n;
    memcpy(c->head + c->head_len, p, take);
    c->head_len += take;
    char *blank = memmem(c->head + start, c->head_len - start, "\r\n\r\n", 4);
    if (!blank)
        return c->head_len == HTTP_MAX_HEAD ? conn_fail(r, c, E_HANDSHAKE) : 0;
    size_t head_size = (size_t)(blank - c->head) + 4;
    blank[2] = '\0';
    if (!ws_response_ok(c->head, c->accept))
        return conn_fail(r, c, E_HANDSHAKE);
    /* Frames right behind the 101 are kept: what lies past the head, then what did not fit. */
    size_t extra = c->head_len - head_size;
    unsigned char leftover[HTTP_MAX_HEAD];
    memcpy(leftover, c->head + head_size, extra);
    free(c->head);
    c->head = NULL;
    if (conn_opened(r, c) < 0 || ws_consume(r, c, leftover, extra, now) < 0)
        return -1;
    return ws_consume(r, c, p + take, n - take, now);
}

/* ---- connection life cycle ----------------------------------------------------------------------- */

static void conn_start(struct run *r, struct conn *c)
{
    int fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r->errors[E_CONNECT]++;
        return;
    }
    /* ws-handshake: on loopback every packet a send starts is processed on the sender's core,
     * so this core pays for most of each connection's packets and caps the rate before a fast
     * server does. Delayed ACKs here let the handshake's last ACK ride on the upgrade request
     * and the ACK of the 101 ride on the close frame: two packets fewer per cycle. Nagle
     * cannot hold anything there (the 101 acknowledges the request before the close frame
     * goes), so that mode skips TCP_NODELAY. */
    int one = 1, zero = 0;
    if (r->o.mode == WS_HANDSHAKE)
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
    else
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gen++;
    conn_reset_fields(c);
    c->cycle_start = now_ns();
    set_state(r, c, CS_CONNECTING);
    if (connect(fd, (struct sockaddr *)&r->addr, r->addr_len) < 0 && errno != EINPROGRESS) {
        conn_fail(r, c, E_CONNECT);
        return;
    }
    if (r->o.mode == WS_HANDSHAKE)
        ws_upgrade_early(r, c);
    else
        set_mask(r, c, EPOLLOUT); /* writable = connected (or failed: SO_ERROR tells) */
}

/* Open for messages: start the window if the run is on; ws-handshake closes straight away. */
static int conn_opened(struct run *r, struct conn *c)
{
    set_state(r, c, CS_OPEN);
    set_mask(r, c, EPOLLIN | (c->out_off < c->out_len ? EPOLLOUT : 0));
    r->connected++;
    if (r->o.mode == WS_HANDSHAKE)
        return begin_close(r, c);
    if (r->phase == PH_RUN)
        return send_messages(r, c, (uint64_t)r->o.window);
    return 0;
}

static int on_connected(struct run *r, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
        return conn_fail(r, c, E_CONNECT);
    return r->ws ? ws_send_upgrade(r, c) : conn_opened(r, c);
}

/* The server's end arrived (EOF). Clean only after our own close and, for ws, its close frame. */
static void conn_finished(struct run *r, struct conn *c, uint64_t now)
{
    bool clean = c->state == CS_CLOSING && (!r->ws || c->close_received);
    if (!clean) {
        r->errors[c->state == CS_OPEN ? E_RESET : E_UNCLEAN_CLOSE]++;
        count_lost(r, c);
    } else if (r->o.mode == WS_HANDSHAKE) {
        record_op(r, now, now - c->cycle_start);
        /* Both ends are done (close frames crossed, the server's FIN read): a reset instead of
         * our FIN saves the ACK it would draw and the server's TIME_WAIT, two more chores
         * that would otherwise land on this core. */
        struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    }
    conn_release(r, c);
}

static int after_echoes(struct run *r, struct conn *c, uint64_t before)
{
    uint64_t completed = c->echoed - before;
    if (c->state != CS_OPEN)
        return 0;
    if (r->phase == PH_RUN && completed > 0)
        return send_messages(r, c, completed); /* keep the window full */
    if (r->phase == PH_DRAIN && c->echoed == c->sent)
        return begin_close(r, c);
    return 0;
}

static int on_bytes(struct run *r, struct conn *c, const unsigned char *p, size_t n)
{
    uint64_t now = now_ns(), before = c->echoed;
    int rc;
    if (c->state == CS_UPGRADING)
        rc = ws_handshake_feed(r, c, p, n, now);
    else
        rc = r->ws ? ws_consume(r, c, p, n, now) : tcp_consume(r, c, p, n, now);
    if (rc < 0 || c->state == CS_IDLE)
        return -1;
    return after_echoes(r, c, before);
}

static int on_readable(struct run *r, struct conn *c)
{
    ssize_t n = recv(c->fd, r->rbuf, RECV_BUFFER_SIZE, 0);
    if (n > 0)
        return on_bytes(r, c, r->rbuf, (size_t)n);
    if (n == 0) {
        conn_finished(r, c, now_ns());
        return -1;
    }
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    return conn_fail(r, c, c->state == CS_UPGRADING ? E_HANDSHAKE : E_RESET);
}

static int on_writable(struct run *r, struct conn *c)
{
    if (c->state == CS_CONNECTING)
        return on_connected(r, c);
    return conn_flush(r, c);
}

/* ---- phases ------------------------------------------------------------------------------------ */

static void start_measure(struct run *r, uint64_t now)
{
    hist_reset(&r->hist);
    r->ops = 0;
    memset(r->timeline, 0, r->timeline_len * sizeof *r->timeline);
    getrusage(RUSAGE_SELF, &r->ru_start);
    r->t_measure = now;
    r->t_end = now + secs_to_ns(r->o.duration);
    r->measuring = true;
}

static void begin_run(struct run *r, uint64_t now)
{
    r->phase = PH_RUN;
    r->t_measure = now + secs_to_ns(r->o.warmup);
    r->t_end = r->t_measure + secs_to_ns(r->o.duration);
    if (r->o.warmup <= 0)
        start_measure(r, now);
    for (int i = 0; i < r->o.connections && r->o.mode != WS_HANDSHAKE; i++)
        if (r->conns[i].state == CS_OPEN)
            send_messages(r, &r->conns[i], (uint64_t)r->o.window);
}

static void begin_drain(struct run *r, uint64_t now)
{
    getrusage(RUSAGE_SELF, &r->ru_end);
    r->measured_s = (double)(now - r->t_measure) / 1e9;
    r->measuring = false;
    r->phase = PH_DRAIN;
    r->t_hard = now + secs_to_ns(r->o.grace);
    for (int i = 0; i < r->o.connections; i++) {
        struct conn *c = &r->conns[i];
        if (c->state == CS_OPEN && c->echoed == c->sent && r->o.mode != WS_HANDSHAKE)
            begin_close(r, c);
    }
}

/* Past the hard deadline: whatever still holds a socket did not finish in time. */
static void abandon_all(struct run *r)
{
    for (int i = 0; i < r->o.connections; i++) {
        struct conn *c = &r->conns[i];
        if (c->state == CS_IDLE)
            continue;
        enum err e = c->state == CS_CONNECTING ? E_CONNECT
                     : c->state == CS_UPGRADING ? E_HANDSHAKE
                                                : E_UNCLEAN_CLOSE;
        conn_fail(r, c, e);
    }
}

static void fail_opening(struct run *r)
{
    for (int i = 0; i < r->o.connections; i++) {
        struct conn *c = &r->conns[i];
        if (c->state == CS_CONNECTING || c->state == CS_UPGRADING)
            conn_fail(r, c, c->state == CS_CONNECTING ? E_CONNECT : E_HANDSHAKE);
    }
}

static void advance_phase(struct run *r, uint64_t now)
{
    switch (r->phase) {
    case PH_CONNECT:
        if (r->count[CS_CONNECTING] + r->count[CS_UPGRADING] == 0) {
            begin_run(r, now);
        } else if (now >= r->t_connect_deadline) {
            fail_opening(r);
            begin_run(r, now);
        }
        break;
    case PH_RUN:
        if (!r->measuring && now >= r->t_measure)
            start_measure(r, now);
        if (r->measuring && now >= r->t_end)
            begin_drain(r, now);
        break;
    case PH_DRAIN:
        if (live_count(r) == 0 || now >= r->t_hard) {
            abandon_all(r);
            r->phase = PH_DONE;
        }
        break;
    case PH_DONE:
        break;
    }
}

static uint64_t next_deadline(const struct run *r)
{
    switch (r->phase) {
    case PH_CONNECT:
        return r->t_connect_deadline;
    case PH_RUN:
        return r->measuring ? r->t_end : r->t_measure;
    default:
        return r->t_hard;
    }
}

static int poll_timeout_ms(const struct run *r, uint64_t now)
{
    uint64_t deadline = next_deadline(r);
    if (deadline <= now)
        return 0;
    uint64_t ms = (deadline - now + 999999) / 1000000;
    return ms > MAX_POLL_MS ? MAX_POLL_MS : (int)ms;
}

/* ---- the loops --------------------------------------------------------------------------------- */

static void dispatch(struct run *r, const struct epoll_event *e)
{
    struct conn *c = &r->conns[(uint32_t)e->data.u64];
    if (c->state == CS_IDLE || c->gen != (uint32_t)(e->data.u64 >> 32))
        return; /* released earlier in this batch, maybe already reused */
    uint32_t fault = e->events & (EPOLLERR | EPOLLHUP);
    if ((e->events & EPOLLOUT || (fault && !(c->mask & EPOLLIN))) && c->mask & EPOLLOUT)
        if (on_writable(r, c) < 0)
            return;
    if ((e->events & (EPOLLIN | EPOLLRDHUP) || fault) && c->mask & EPOLLIN)
        on_readable(r, c);
}

static void poll_once(struct run *r, int timeout_ms)
{
    static struct epoll_event events[MAX_EVENTS];
    int ready = epoll_wait(r->epfd, events, MAX_EVENTS, timeout_ms);
    if (ready < 0 && errno != EINTR)
        perror("loadgen: epoll_wait");
    for (int i = 0; i < ready; i++)
        dispatch(r, &events[i]);
}

/* The rtt modes while measuring: no epoll_wait, just recv (MSG_DONTWAIT) on every open
 * connection, over and over, so an echo is seen the moment the kernel has it. */
static void busy_once(struct run *r)
{
    for (int i = 0; i < r->o.connections; i++) {
        struct conn *c = &r->conns[i];
        if (c->state == CS_OPEN && c->out_off < c->out_len && conn_flush(r, c) < 0)
            continue;
        if (c->state == CS_OPEN)
            on_readable(r, c);
    }
}

static void restart_idle(struct run *r)
{
    for (int i = 0; i < r->o.connections; i++)
        if (r->conns[i].state == CS_IDLE)
            conn_start(r, &r->conns[i]);
}

static void run_loop(struct run *r)
{
    uint64_t now = now_ns();
    r->t_connect_deadline = now + secs_to_ns(r->o.connect_timeout);
    if (r->o.mode == WS_HANDSHAKE)
        begin_run(r, now);
    for (int i = 0; i < r->o.connections; i++)
        conn_start(r, &r->conns[i]);
    while (r->phase != PH_DONE) {
        now = now_ns();
        advance_phase(r, now);
        if (r->phase == PH_DONE)
            break;
        if (r->busy && r->phase == PH_RUN)
            busy_once(r);
        else
            poll_once(r, poll_timeout_ms(r, now));
        if (r->o.mode == WS_HANDSHAKE && r->phase == PH_RUN)
            restart_idle(r);
    }
}

/* ---- report ------------------------------------------------------------------------------------ */

static double ru_seconds(const struct timeval *tv) { return (double)tv->tv_sec + tv->tv_usec / 1e6; }

static const char *unit_name(enum mode m)
{
    return m == WS_HANDSHAKE ? "handshakes" : m == TCP_RTT || m == WS_RTT ? "round_trips" : "messages";
}

static void print_latency(const struct hist *h)
{
    static const struct { const char *name; double q; } quantiles[] = {
        {"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p999", 0.999}};
    printf("\"latency_us\":{");
    for (size_t i = 0; i < sizeof quantiles / sizeof *quantiles; i++)
        printf("\"%s\":%.1f,", quantiles[i].name, hist_quantile(h, quantiles[i].q) / 1e3);
    double mean = h->count ? (double)h->sum / (double)h->count / 1e3 : 0;
    printf("\"max\":%.1f,\"mean\":%.1f,\"samples\":%llu}", h->max / 1e3, mean,
           (unsigned long long)h->count);
}

/* Full timeline buckets only: the last one is usually cut short by the end of the run. */
static void print_timeline(const struct run *r)
{
    size_t full = (size_t)(r->measured_s * 1000 / r->o.timeline_ms);
    full = full < r->timeline_len ? full : r->timeline_len;
    double scale = 1000.0 / r->o.timeline_ms, lo = 0, hi = 0;
    printf("\"timeline_ms\":%d,\"timeline\":[", r->o.timeline_ms);
    for (size_t i = 0; i < full; i++) {
        double rate = (double)r->timeline[i] * scale;
        lo = i == 0 || rate < lo ? rate : lo;
        hi = rate > hi ? rate : hi;
        printf("%s%llu", i ? "," : "", (unsigned long long)r->timeline[i]);
    }
    printf("],\"rate_min_per_s\":%.0f,\"rate_max_per_s\":%.0f", lo, hi);
}

static uint64_t print_errors(const struct run *r)
{
    uint64_t total = 0;
    printf("\"errors\":{");
    for (int e = 0; e < E_N; e++) {
        printf("%s\"%s\":%llu", e ? "," : "", err_names[e], (unsigned long long)r->errors[e]);
        total += r->errors[e];
    }
    printf("},\"errors_total\":%llu", (unsigned long long)total);
    return total;
}

static uint64_t report(const struct run *r)
{
    const struct options *o = &r->o;
    double secs = r->measured_s > 0 ? r->measured_s : 1e-9;
    double rate = (double)r->ops / secs;
    double user = ru_seconds(&r->ru_end.ru_utime) - ru_seconds(&r->ru_start.ru_utime);
    double sys = ru_seconds(&r->ru_end.ru_stime) - ru_seconds(&r->ru_start.ru_stime);
    printf("{\"mode\":\"%s\",\"host\":\"%s\",\"port\":%d,\"connections\":%d,\"window\":%d,"
           "\"size\":%zu,\"text\":%s,\"warmup_s\":%.3f,\"duration_s\":%.3f,",
           mode_names[o->mode], o->host, o->port, o->connections, o->window, o->size,
           o->text ? "true" : "false", o->warmup, r->measured_s);
    printf("\"connected\":%llu,\"unit\":\"%s\",\"ops\":%llu,\"ops_per_s\":%.1f,\"%s_per_s\":%.1f,",
           (unsigned long long)r->connected, unit_name(o->mode), (unsigned long long)r->ops, rate,
           unit_name(o->mode), rate);
    printf("\"bytes_per_s\":%.1f,", o->mode == WS_HANDSHAKE ? 0.0 : rate * (double)o->size);
    print_latency(&r->hist);
    printf(",\"cpu\":{\"user_s\":%.3f,\"sys_s\":%.3f,\"share\":%.3f},", user, sys,
           (user + sys) / secs);
    print_timeline(r);
    printf(",");
    uint64_t errors = print_errors(r);
    printf("}\n");
    fflush(stdout);
    return errors;
}

/* ---- self test ----------------------------------------------------------------------------------- */

static bool check_sha1(const char *input, const char *hex)
{
    uint8_t digest[SHA1_DIGEST_SIZE];
    char got[2 * SHA1_DIGEST_SIZE + 1];
    ws_sha1(input, strlen(input), digest);
    for (int i = 0; i < SHA1_DIGEST_SIZE; i++)
        sprintf(got + 2 * i, "%02x", digest[i]);
    return strcmp(got, hex) == 0;
}

static bool check_hist(void)
{
    static struct hist h;
    hist_reset(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v * 1000);
    uint64_t p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);
    return fabs((double)p50 / 50e6 - 1) < 1.0 / 64 && fabs((double)p99 / 99e6 - 1) < 1.0 / 64 &&
           h.max == 100000000 && hist_quantile(&h, 1.0) == h.max && hist_quantile(&h, 0) == 1000;
}

static bool check_mask(void)
{
    /* RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58. */
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    static const unsigned char want[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
    unsigned char got[5];
    mask_copy(got, (const unsigned char *)"Hello", 5, key);
    return memcmp(got, want, 5) == 0;
}

static int selftest(void)
{
    char accept[32];
    expected_accept("dGhlIHNhbXBsZSBub25jZQ==", accept); /* RFC 6455 §1.3 example */
    bool results[] = {
        check_sha1("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        check_sha1("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        check_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                   "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0,
        check_mask(),
        check_hist(),
    };
    static const char *const names[] = {"sha1_empty", "sha1_abc", "sha1_two_blocks",
                                        "accept_rfc6455", "mask_rfc6455", "histogram"};
    return print_selftest("mode", names, results, sizeof results / sizeof *results);
}

/* ---- options ------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen MODE [options]\n"
            "modes: tcp-echo ws-echo tcp-rtt ws-rtt ws-handshake selftest\n"
            "  -H, --host ADDR         server address, numeric IPv4/IPv6 (127.0.0.1)\n"
            "  -p, --port N            server port (9501)\n"
            "  -c, --connections N     connections; concurrent cycles for ws-handshake\n"
            "                          (100; rtt modes 1; ws-handshake 50)\n"
            "  -w, --window N          messages in flight per connection (16; rtt modes 1)\n"
            "  -s, --size N            message payload bytes (64)\n"
            "  -d, --duration S        measured seconds (10)\n"
            "  -u, --warmup S          unmeasured seconds before (0)\n"
            "  -g, --grace S           bound on draining and closing afterwards (2)\n"
            "  -T, --connect-timeout S bound on opening every connection (5)\n"
            "  -t, --text              ws: text frames (the payload is printable ASCII)\n"
            "  -P, --path PATH         ws: request target (/)\n"
            "  -i, --timeline-ms N     timeline bucket width (100)\n");
}

static bool parse_mode(const char *name, enum mode *mode)
{
    for (int m = 0; m <= SELFTEST; m++)
        if (strcmp(name, mode_names[m]) == 0)
            return *mode = (enum mode)m, true;
    return false;
}

static void set_defaults(struct options *o)
{
    bool rtt = o->mode == TCP_RTT || o->mode == WS_RTT;
    *o = (struct options){.mode = o->mode, .host = "127.0.0.1", .path = "/", .port = 9501,
                          .connections = rtt ? 1 : o->mode == WS_HANDSHAKE ? 50 : 100,
                          .window = rtt ? 1 : 16, .size = 64, .duration = 10, .warmup = 0,
                          .grace = 2, .connect_timeout = 5, .timeline_ms = 100};
}

static const char *check_options(const struct options *o)
{
    bool rtt = o->mode == TCP_RTT || o->mode == WS_RTT;
    if (o->port <= 0 || o->port > 65535)
        return "--port must be 1..65535";
    if (o->connections < 1 || o->connections > 1000000)
        return "--connections must be 1..1000000";
    if (o->window < 1 || (rtt && o->window != 1))
        return "--window must be >= 1 (and 1 in the rtt modes)";
    if ((o->mode == TCP_ECHO || o->mode == TCP_RTT) && o->size == 0)
        return "--size must be >= 1 for raw TCP (messages are cut by length)";
    if (o->size > (64u << 20))
        return "--size must be <= 64 MiB";
    if (!(o->duration > 0 && o->duration <= 3600 && o->warmup >= 0 && o->warmup <= 3600))
        return "--duration must be in (0, 3600], --warmup in [0, 3600]";
    if (!(o->grace >= 0 && o->grace <= 600 && o->connect_timeout > 0 && o->connect_timeout <= 600))
        return "--grace must be in [0, 600], --connect-timeout in (0, 600]";
    if (o->timeline_ms < 1)
        return "--timeline-ms must be >= 1";
    return NULL;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"host", 1, 0, 'H'},   {"port", 1, 0, 'p'},     {"connections", 1, 0, 'c'},
        {"window", 1, 0, 'w'}, {"size", 1, 0, 's'},     {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'u'}, {"grace", 1, 0, 'g'},    {"connect-timeout", 1, 0, 'T'},
        {"text", 0, 0, 't'},   {"path", 1, 0, 'P'},     {"timeline-ms", 1, 0, 'i'},
        {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    if (argc < 2 || !parse_mode(argv[1], &o->mode)) {
        usage(stderr);
        return -1;
    }
    set_defaults(o);
    optind = 2;
    for (int ch; (ch = getopt_long(argc, argv, "H:p:c:w:s:d:u:g:T:tP:i:h", longopts, NULL)) != -1;) {
        switch (ch) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = atoi(optarg); break;
        case 'c': o->connections = atoi(optarg); break;
        case 'w': o->window = atoi(optarg); break;
        case 's': o->size = strtoull(optarg, NULL, 10); break;
        case 'd': o->duration = atof(optarg); break;
        case 'u': o->warmup = atof(optarg); break;
        case 'g': o->grace = atof(optarg); break;
        case 'T': o->connect_timeout = atof(optarg); break;
        case 't': o->text = true; break;
        case 'P': o->path = optarg; break;
        case 'i': o->timeline_ms = atoi(optarg); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    return options_verdict("loadgen", check_options(o), optind, argc);
}

/* ---- setup --------------------------------------------------------------------------------------- */

static int resolve(struct run *r)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    char port[16];
    snprintf(port, sizeof port, "%d", r->o.port);
    struct addrinfo *ai;
    int rc = getaddrinfo(r->o.host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", r->o.host, gai_strerror(rc));
        return -1;
    }
    memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
    r->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* Random bytes for binary messages, printable ASCII for text ones (always valid UTF-8). */
static void make_pattern(struct run *r)
{
    size_t len = r->o.size + PATTERN_SPREAD;
    r->pattern = xmalloc(len);
    for (size_t i = 0; i < len; i++) {
        uint64_t x = rng_next(&r->rng);
        r->pattern[i] = r->o.text ? (unsigned char)(' ' + x % 95) : (unsigned char)(x >> 56);
    }
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct run *setup(const struct options *o)
{
    struct run *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->o = *o;
    r->ws = o->mode == WS_ECHO || o->mode == WS_RTT || o->mode == WS_HANDSHAKE;
    r->busy = o->mode == TCP_RTT || o->mode == WS_RTT;
    if (getrandom(&r->rng, sizeof r->rng, 0) != sizeof r->rng || r->rng == 0)
        r->rng = (uint64_t)now_ns() | 1;
    if (resolve(r) < 0 || (r->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return NULL;
    make_pattern(r);
    if (r->ws)
        make_upgrades(r);
    size_t wire = message_wire_size(r);
    r->scratch_cap = wire > SCRATCH_MIN ? wire : SCRATCH_MIN;
    r->scratch = xmalloc(r->scratch_cap);
    r->conns = calloc((size_t)o->connections, sizeof *r->conns);
    for (int i = 0; r->conns && i < o->connections; i++) {
        r->conns[i] = (struct conn){.fd = -1, .index = i, .state = CS_IDLE};
        r->conns[i].stamps = xmalloc((size_t)o->window * sizeof(uint64_t));
    }
    r->count[CS_IDLE] = o->connections;
    r->timeline_len = (size_t)(o->duration * 1000 / o->timeline_ms) + 2;
    r->timeline_len = r->timeline_len < MAX_TIMELINE ? r->timeline_len : MAX_TIMELINE;
    r->timeline = calloc(r->timeline_len, sizeof *r->timeline);
    hist_reset(&r->hist);
    return r->conns && r->timeline ? r : NULL;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    if (parse_options(argc, argv, &o) < 0)
        return 2;
    if (o.mode == SELFTEST)
        return selftest();
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    struct run *r = setup(&o);
    if (!r) {
        fprintf(stderr, "loadgen: setup failed\n");
        return 2;
    }
    run_loop(r);
    return report(r) ? 1 : 0;
}
