/* c1000k_client: one load-generator process of the C1000K benchmark (bench/c1000k.py).
 *
 * It opens up to --connections WebSocket connections (one process holds at most its open-file
 * limit, ~19.6k here) to ONE server address, holds them, echoes one message on each when told,
 * then closes them, and reports everything as JSON lines on stdout.
 *
 * Stages (each bounded in time; a failure is counted under the stage it happened in):
 *   ramp   nonblocking connects, at most --in-flight connects + handshakes at once. Each socket
 *          binds a source address from --sources in turn with IP_BIND_ADDRESS_NO_PORT, so the
 *          port is chosen at connect() time per 4-tuple: one source and one destination give at
 *          most ~28k (ip_local_port_range) connections; N sources multiply that. The RFC 6455
 *          opening handshake is checked in full (101, Upgrade, Connection, Sec-WebSocket-Accept).
 *   hold   connections stay open and idle; a server that drops one is noticed (EPOLLIN stays
 *          armed) and the drop counted. Pings are answered.
 *   echo   on "echo" (stdin line or SIGUSR1): one masked message per connection, at most
 *          --echo-window outstanding, each echo compared byte for byte.
 *   close  on "close" (stdin line or SIGUSR2): the RFC 6455 §7 close handshake: we send close
 *          1000, the server answers close 1000 and closes TCP first (§7.1.1), so TIME_WAIT stays
 *          with the server and this machine's ports are free for the next run. At most
 *          --echo-window closes outstanding. `--close plain` just closes the sockets instead.
 * --auto runs echo and close straight after the ramp. stdin EOF before "close", SIGTERM, SIGINT,
 * SIGHUP or the parent's death (PR_SET_PDEATHSIG) abort: every socket is closed and the report
 * says why.
 *
 * Memory: a connection costs one 24-byte `struct conn` in an fd-indexed table; handshake state
 * (key, response head) lives in a pool of --in-flight slots, and a frame split across reads gets
 * a small buffer only until it completes. The expected echo is a function of the connection's
 * id and a per-run seed, so nothing sent is stored.
 *
 * Output: {"event":"progress"...} every --progress-ms, {"event":"ramp_done"} / "echo_done" /
 * "close_done" at stage ends, and a final {"event":"report"}. Exit status 0 when nothing
 * failed, 1 when something did, 2 on bad usage or setup, 3 when aborted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "sha1.h"
#include "wsclient.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h, since 4.2 */
#endif

#define NS 1000000000ull
#define MAX_SOURCES 64          /* source addresses to rotate through */
#define MAX_EVENTS 1024         /* per epoll_wait */
#define MAX_POLL_MS 100         /* deadlines and signal flags are checked at least this often */
#define RECV_SIZE 65536         /* one read: frames here are tiny, a read rarely holds many */
#define HEAD_MAX 1024           /* a 101 response is ~130 bytes; more is a broken server */
#define WS_MAX_SMALL 125        /* RFC 6455 §5.2: 7-bit length; §5.5: control payload limit */
#define WS_FRAME_MAX (2 + WS_MAX_SMALL) /* every frame we accept from the server fits this */
#define WS_KEY_BYTES 16         /* RFC 6455 §4.1: Sec-WebSocket-Key is 16 random bytes */
#define WS_CLOSE_NORMAL 1000    /* RFC 6455 §7.4.1 */
#define WS_NO_STATUS 1005       /* RFC 6455 §7.4.1: a close frame without a code */
#define CONTROL_LINE_MAX 64     /* control commands are single words */

enum { OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

/* IDLE: no socket. CONNECTING/UPGRADING hold a pool slot. OPEN: established, nothing owed.
 * ECHOING: our message is out, its echo is awaited. CLOSING: our close frame is out. */
enum cstate { CS_IDLE, CS_CONNECTING, CS_UPGRADING, CS_OPEN, CS_ECHOING, CS_CLOSING };

enum stage { ST_RAMP, ST_HOLD, ST_ECHO, ST_CLOSE, ST_DONE, ST_N };
static const char *const stage_names[] = {"ramp", "hold", "echo", "close", "done"};

enum cause {
    F_REFUSED, F_ADDR_NOT_AVAIL, F_FD_LIMIT, F_NO_BUFFERS, F_CONNECT_TIMEOUT, F_CONNECT_ERROR,
    F_RESET, F_CLOSED_BY_SERVER, F_HANDSHAKE_TIMEOUT, F_HANDSHAKE_REJECTED, F_BAD_ACCEPT,
    F_PROTOCOL, F_SEND_ERROR, F_RAMP_TIMEOUT, F_ECHO_MISMATCH, F_ECHO_TIMEOUT, F_CLOSE_TIMEOUT,
    F_CLOSE_UNCLEAN, F_ABORTED, F_N
};
static const char *const cause_names[] = {
    "refused", "addr_not_avail", "fd_limit", "no_buffers", "connect_timeout", "connect_error",
    "reset", "closed_by_server", "handshake_timeout", "handshake_rejected", "bad_accept",
    "protocol", "send_error", "ramp_timeout", "echo_mismatch", "echo_timeout", "close_timeout",
    "close_unclean", "aborted"};

/* Flags in struct conn. */
#define CF_ECHOED 1        /* its echo came back intact */
#define CF_CLOSE_SEEN 2    /* the server's close frame arrived */
#define CF_CLOSE_BAD 4     /* ... with a code other than 1000 */

struct conn {                 /* indexed by fd */
    uint32_t id;              /* 0..connections-1: picks the source address and the payload */
    uint32_t echo_sent_us;    /* when our message left, µs after the echo stage began */
    uint8_t state, flags;
    uint8_t part_len;         /* bytes of a split server frame gathered in `part` */
    uint16_t slot;            /* pool slot while CONNECTING/UPGRADING */
    unsigned char *part;      /* WS_FRAME_MAX bytes, only while a frame is split */
};

struct pending {              /* one connection's opening handshake */
    uint64_t start;
    int fd;
    uint16_t head_len;
    char accept[32];          /* the Sec-WebSocket-Accept we expect */
    char head[HEAD_MAX + 1];
};

struct options {
    const char *host, *path, *sources, *close_mode;
    int port, connections, in_flight, echo_window, size, id, progress_ms;
    double handshake_timeout, ramp_timeout, hold_timeout, echo_timeout, close_timeout;
    bool auto_run, text;
};

struct client {
    struct options o;
    struct sockaddr_in dst;
    struct in_addr src[MAX_SOURCES];
    int nsrc, epfd, table_size, control_fd;
    struct conn *conns;
    struct pending *pool;
    uint16_t *free_slots;
    int free_count;
    enum stage stage;
    uint64_t t0, stage_start, stage_deadline, next_progress, last_established_at;
    uint64_t seed, rng;
    int started, established, open, in_flight, outstanding, echo_sent, echo_ok, closed;
    int cursor;               /* next fd to visit when sending echoes or closes */
    bool echo_wanted, echo_done, close_wanted;
    const char *abort_reason;
    double ramp_s, echo_round_s, close_round_s;
    uint64_t failures[ST_N][F_N];
    struct hist handshake, echo;
    char control[CONTROL_LINE_MAX];
    size_t control_len;
    unsigned char rbuf[RECV_SIZE];
};

static volatile sig_atomic_t sig_echo, sig_close, sig_abort;

/* ---- small helpers ---------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint64_t secs_ns(double s) { return (uint64_t)(s * 1e9); }

static double since_s(uint64_t then, uint64_t now) { return (double)(now - then) / 1e9; }

/* splitmix64: a stateless mix, so payload bytes are a pure function of (seed, id, word). */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t rng_next(struct client *cl) { return mix64(cl->rng++); }

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "c1000k_client: out of memory\n");
        exit(2);
    }
    return p;
}

/* Byte j of connection id's message: random bytes, or printable ASCII for text frames. */
static unsigned char payload_byte(const struct client *cl, uint32_t id, int j)
{
    uint64_t word = mix64(cl->seed ^ ((uint64_t)id << 8 | (uint64_t)(j >> 3)));
    unsigned char b = (unsigned char)(word >> (8 * (j & 7)));
    return cl->o.text ? (unsigned char)(' ' + b % 95) : b;
}

static void fail(struct client *cl, enum stage st, enum cause why) { cl->failures[st][why]++; }

static uint64_t failures_total(const struct client *cl)
{
    uint64_t total = 0;
    for (int s = 0; s < ST_N; s++)
        for (int f = 0; f < F_N; f++)
            total += cl->failures[s][f];
    return total;
}

/* ---- connection table and the handshake pool -------------------------------------------------- */

static void set_events(struct client *cl, int fd, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(cl->epfd, op, fd, &ev) < 0)
        perror("c1000k_client: epoll_ctl");
}

static void release_slot(struct client *cl, struct conn *c)
{
    cl->free_slots[cl->free_count++] = c->slot;
    cl->in_flight--;
}

/* Closing the fd also removes it from epoll: this process holds its only reference. */
static void conn_drop(struct client *cl, int fd)
{
    struct conn *c = &cl->conns[fd];
    if (c->state == CS_CONNECTING || c->state == CS_UPGRADING)
        release_slot(cl, c);
    else if (c->state >= CS_OPEN)
        cl->open--;
    if (c->state == CS_ECHOING || c->state == CS_CLOSING)
        cl->outstanding--;
    free(c->part);
    *c = (struct conn){0};
    close(fd);
}

/* A handshake failure belongs to the ramp; an established connection lost while others are
 * still being opened was being held; anything later belongs to the current stage. */
static int conn_fail(struct client *cl, int fd, enum cause why)
{
    struct conn *c = &cl->conns[fd];
    enum stage st = c->state <= CS_UPGRADING ? ST_RAMP
                    : cl->stage == ST_RAMP   ? ST_HOLD
                                             : cl->stage;
    fail(cl, st == ST_DONE ? ST_CLOSE : st, why);
    conn_drop(cl, fd);
    return -1;
}

static enum cause cause_of_errno(int err, bool connecting)
{
    switch (err) {
    case ECONNREFUSED: return F_REFUSED;
    case EADDRNOTAVAIL: case EADDRINUSE: return F_ADDR_NOT_AVAIL;
    case EMFILE: case ENFILE: return F_FD_LIMIT;
    case ENOBUFS: case ENOMEM: return F_NO_BUFFERS;
    case ETIMEDOUT: return F_CONNECT_TIMEOUT;
    case ECONNRESET: case EPIPE: case ECONNABORTED: return F_RESET;
    default: return connecting ? F_CONNECT_ERROR : F_RESET;
    }
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* Everything we send is tiny and goes to a socket with nothing queued, so the kernel takes it
 * whole; a short write means the connection is broken, and is counted as such. */
static int send_all(struct client *cl, int fd, const void *data, size_t len)
{
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return 0;
    return conn_fail(cl, fd, n < 0 ? cause_of_errno(errno, false) : F_SEND_ERROR);
}

/* RFC 6455 §5.2/§5.3: a final, masked frame with a fresh key; payload <= 125 bytes. */
static size_t build_frame(struct client *cl, unsigned char *out, int opcode,
                          const unsigned char *payload, size_t len)
{
    uint32_t key = (uint32_t)rng_next(cl);
    out[0] = (unsigned char)(0x80 | opcode);
    out[1] = (unsigned char)(0x80 | len);
    memcpy(out + 2, &key, 4);
    for (size_t i = 0; i < len; i++)
        out[6 + i] = payload[i] ^ out[2 + (i & 3)];
    return 6 + len;
}

static int send_frame(struct client *cl, int fd, int opcode, const unsigned char *payload,
                      size_t len)
{
    unsigned char frame[6 + WS_MAX_SMALL];
    return send_all(cl, fd, frame, build_frame(cl, frame, opcode, payload, len));
}

/* ---- the opening handshake (RFC 6455 §4.1, §4.2.2) ------------------------------------------ */

static int send_upgrade(struct client *cl, int fd, struct pending *p)
{
    uint64_t nonce[2] = {rng_next(cl), rng_next(cl)};
    char key[32], request[512];
    ws_base64_encode((const uint8_t *)nonce, WS_KEY_BYTES, key);
    expected_accept(key, p->accept);
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       cl->o.path, cl->o.host, cl->o.port, key);
    cl->conns[fd].state = CS_UPGRADING;
    set_events(cl, fd, EPOLLIN, EPOLL_CTL_MOD);
    return send_all(cl, fd, request, (size_t)len);
}

/* Judges a response head (NUL-terminated, lines end in CRLF): 0 when it is a valid 101. */
static enum cause judge_response(char *head, const char *accept)
{
    if (strncmp(head, "HTTP/1.1 101", 12) != 0 || (head[12] != ' ' && head[12] != '\r'))
        return F_HANDSHAKE_REJECTED;
    bool upgrade = false, connection = false, accept_seen = false, accept_ok = false;
    for (char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line, "\r\n")) {
        line += 2;
        size_t len = strcspn(line, "\r");
        char saved = line[len], *colon = memchr(line, ':', len);
        line[len] = '\0';
        if (colon) {
            *colon = '\0';
            char *value = colon + 1 + strspn(colon + 1, " \t");
            for (char *end = line + len; end > value && (end[-1] == ' ' || end[-1] == '\t');)
                *--end = '\0';
            upgrade |= !strcasecmp(line, "upgrade") && !strcasecmp(value, "websocket");
            connection |= !strcasecmp(line, "connection") && has_token(value, "upgrade");
            if (!strcasecmp(line, "sec-websocket-accept"))
                accept_seen = true, accept_ok = strcmp(value, accept) == 0;
        }
        line[len] = saved;
        line += len;
    }
    if (!upgrade || !connection || !accept_seen)
        return F_HANDSHAKE_REJECTED;
    return accept_ok ? F_N : F_BAD_ACCEPT;
}

static int feed_frames(struct client *cl, int fd, const unsigned char *p, size_t n);
static void read_control(struct client *cl);

static int conn_established(struct client *cl, int fd, struct pending *p)
{
    struct conn *c = &cl->conns[fd];
    uint64_t now = now_ns();
    hist_record(&cl->handshake, now - p->start);
    release_slot(cl, c);
    c->state = CS_OPEN;
    cl->established++, cl->open++;
    cl->last_established_at = now;
    return 0;
}

static int feed_handshake(struct client *cl, int fd, const unsigned char *data, size_t n)
{
    struct pending *p = &cl->pool[cl->conns[fd].slot];
    size_t room = (size_t)HEAD_MAX - p->head_len, take = room < n ? room : n;
    memcpy(p->head + p->head_len, data, take);
    p->head_len += (uint16_t)take;
    p->head[p->head_len] = '\0';
    char *blank = strstr(p->head, "\r\n\r\n");
    if (!blank)
        return p->head_len == HEAD_MAX ? conn_fail(cl, fd, F_HANDSHAKE_REJECTED) : 0;
    size_t head_size = (size_t)(blank - p->head) + 4;
    blank[2] = '\0';
    enum cause verdict = judge_response(p->head, p->accept);
    if (verdict != F_N)
        return conn_fail(cl, fd, verdict);
    unsigned char extra[HEAD_MAX]; /* frames right behind the 101 are the server's, keep them */
    size_t extra_len = p->head_len - head_size;
    memcpy(extra, p->head + head_size, extra_len);
    conn_established(cl, fd, p);
    if (feed_frames(cl, fd, extra, extra_len) < 0)
        return -1;
    return feed_frames(cl, fd, data + take, n - take);
}

/* ---- frames from the server ------------------------------------------------------------------- */

static void echo_checked(struct client *cl, struct conn *c, bool intact)
{
    uint64_t sent_ns = (uint64_t)c->echo_sent_us * 1000;
    hist_record(&cl->echo, now_ns() - cl->stage_start - sent_ns);
    if (intact)
        cl->echo_ok++, c->flags |= CF_ECHOED;
    else
        fail(cl, ST_ECHO, F_ECHO_MISMATCH);
    c->state = CS_OPEN;
    cl->outstanding--;
}

static int on_data_frame(struct client *cl, int fd, const unsigned char *payload, size_t len,
                         int opcode)
{
    struct conn *c = &cl->conns[fd];
    if (c->state != CS_ECHOING || opcode != (cl->o.text ? OP_TEXT : OP_BINARY))
        return conn_fail(cl, fd, F_PROTOCOL); /* an echo nobody asked for, or of the wrong type */
    bool intact = len == (size_t)cl->o.size;
    for (size_t j = 0; intact && j < len; j++)
        intact = payload[j] == payload_byte(cl, c->id, (int)j);
    echo_checked(cl, c, intact);
    return 0;
}

static int on_close_frame(struct client *cl, int fd, const unsigned char *payload, size_t len)
{
    struct conn *c = &cl->conns[fd];
    unsigned code = len >= 2 ? (unsigned)payload[0] << 8 | payload[1] : WS_NO_STATUS;
    if (c->state != CS_CLOSING)
        return conn_fail(cl, fd, F_CLOSED_BY_SERVER); /* the server ended a held connection */
    c->flags |= CF_CLOSE_SEEN | (code == WS_CLOSE_NORMAL && len != 1 ? 0 : CF_CLOSE_BAD);
    return 0; /* the server's TCP close (EOF) follows, §7.1.1 */
}

/* One whole frame: header byte 0, then `len` payload bytes (server frames are never masked). */
static int on_frame(struct client *cl, int fd, unsigned char b0, const unsigned char *payload,
                    size_t len)
{
    int opcode = b0 & 0x0F;
    if ((b0 & 0x70) || !(b0 & 0x80) || cl->conns[fd].flags & CF_CLOSE_SEEN)
        return conn_fail(cl, fd, F_PROTOCOL); /* RSV bits, a fragment, or a frame after close */
    switch (opcode) {
    case OP_TEXT: case OP_BINARY: return on_data_frame(cl, fd, payload, len, opcode);
    case OP_CLOSE: return on_close_frame(cl, fd, payload, len);
    case OP_PING: /* §5.5.2: answer with the same payload, unless we are closing */
        return cl->conns[fd].state == CS_CLOSING ? 0 : send_frame(cl, fd, OP_PONG, payload, len);
    case OP_PONG: return 0; /* §5.5.3: an unsolicited pong needs no answer */
    default: return conn_fail(cl, fd, F_PROTOCOL);
    }
}

/* A frame split across reads is gathered in c->part (allocated only then); whole frames in the
 * read buffer are handled where they lie. Every frame we accept is at most 127 bytes. */
static int feed_frames(struct client *cl, int fd, const unsigned char *p, size_t n)
{
    struct conn *c = &cl->conns[fd];
    while (n > 0) {
        const unsigned char *frame = p;
        size_t have = n;
        if (c->part) {
            size_t need = c->part_len < 2 ? 2 : 2 + (c->part[1] & 0x7F);
            size_t take = need - c->part_len < n ? need - c->part_len : n;
            memcpy(c->part + c->part_len, p, take);
            c->part_len += (uint8_t)take, p += take, n -= take;
            frame = c->part, have = c->part_len;
        }
        if (have >= 2 && (frame[1] & 0x80 || (frame[1] & 0x7F) > WS_MAX_SMALL))
            return conn_fail(cl, fd, F_PROTOCOL); /* masked, or longer than any echo or control */
        size_t size = have < 2 ? SIZE_MAX : 2 + (size_t)(frame[1] & 0x7F);
        if (have < size) {
            if (!c->part) {
                c->part = xcalloc(1, WS_FRAME_MAX);
                memcpy(c->part, p, n);
                c->part_len = (uint8_t)n, n = 0;
            }
            continue;
        }
        if (!c->part)
            p += size, n -= size;
        unsigned char b0 = frame[0], payload[WS_MAX_SMALL];
        memcpy(payload, frame + 2, size - 2);
        free(c->part), c->part = NULL, c->part_len = 0;
        if (on_frame(cl, fd, b0, payload, size - 2) < 0)
            return -1;
    }
    return 0;
}

/* ---- readiness -------------------------------------------------------------------------------- */

static void on_eof(struct client *cl, int fd)
{
    struct conn *c = &cl->conns[fd];
    if (c->state != CS_CLOSING) {
        conn_fail(cl, fd, F_CLOSED_BY_SERVER);
        return;
    }
    if (!(c->flags & CF_CLOSE_SEEN) || c->flags & CF_CLOSE_BAD) {
        conn_fail(cl, fd, F_CLOSE_UNCLEAN); /* TCP closed without (or with a bad) close frame */
        return;
    }
    cl->closed++;
    conn_drop(cl, fd);
}

static void on_readable(struct client *cl, int fd)
{
    ssize_t n = recv(fd, cl->rbuf, sizeof cl->rbuf, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_fail(cl, fd, cause_of_errno(errno, false));
        return;
    }
    if (n == 0) {
        on_eof(cl, fd);
        return;
    }
    if (cl->conns[fd].state == CS_UPGRADING)
        feed_handshake(cl, fd, cl->rbuf, (size_t)n);
    else
        feed_frames(cl, fd, cl->rbuf, (size_t)n);
}

static void on_connected(struct client *cl, int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        conn_fail(cl, fd, cause_of_errno(err, true));
        return;
    }
    send_upgrade(cl, fd, &cl->pool[cl->conns[fd].slot]);
}

static void dispatch(struct client *cl, const struct epoll_event *ev)
{
    int fd = ev->data.fd;
    if (fd == cl->control_fd) {
        read_control(cl);
        return;
    }
    if (cl->conns[fd].state == CS_IDLE)
        return; /* dropped earlier in this batch; fds are only reused after the batch */
    if (cl->conns[fd].state == CS_CONNECTING)
        on_connected(cl, fd);
    else
        on_readable(cl, fd);
}

/* ---- starting connections --------------------------------------------------------------------- */

static int open_socket(struct client *cl, uint32_t id)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || cl->nsrc == 0)
        return fd;
    int one = 1;
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = cl->src[id % (uint32_t)cl->nsrc]};
    /* The port is picked at connect(), per 4-tuple: bind() alone would reserve it for good. */
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static void start_connection(struct client *cl)
{
    uint32_t id = (uint32_t)cl->started++;
    int fd = open_socket(cl, id);
    if (fd < 0) {
        fail(cl, ST_RAMP, cause_of_errno(errno, true));
        return;
    }
    if (fd >= cl->table_size) { /* cannot happen below the fd limit the table was sized by */
        close(fd);
        fail(cl, ST_RAMP, F_FD_LIMIT);
        return;
    }
    struct conn *c = &cl->conns[fd];
    *c = (struct conn){.id = id, .state = CS_CONNECTING, .slot = cl->free_slots[--cl->free_count]};
    cl->pool[c->slot] = (struct pending){.start = now_ns(), .fd = fd};
    cl->in_flight++;
    if (connect(fd, (struct sockaddr *)&cl->dst, sizeof cl->dst) < 0 && errno != EINPROGRESS) {
        conn_fail(cl, fd, cause_of_errno(errno, true));
        return;
    }
    set_events(cl, fd, EPOLLOUT, EPOLL_CTL_ADD); /* writable = connected, or failed (SO_ERROR) */
}

static void refill_ramp(struct client *cl)
{
    while (cl->stage == ST_RAMP && cl->in_flight < cl->o.in_flight &&
           cl->started < cl->o.connections)
        start_connection(cl);
}

/* Handshakes older than --handshake-timeout fail; the pool is small, so a scan is cheap. */
static void expire_handshakes(struct client *cl, uint64_t now)
{
    uint64_t limit = secs_ns(cl->o.handshake_timeout);
    for (int i = 0; i < cl->o.in_flight; i++) {
        struct pending *p = &cl->pool[i];
        struct conn *c = &cl->conns[p->fd];
        bool mine = (c->state == CS_CONNECTING || c->state == CS_UPGRADING) && c->slot == i;
        if (mine && p->start && now - p->start > limit) {
            p->start = 0;
            enum cause why = c->state == CS_CONNECTING ? F_CONNECT_TIMEOUT : F_HANDSHAKE_TIMEOUT;
            conn_fail(cl, p->fd, why);
        }
    }
}

/* ---- echo and close stages -------------------------------------------------------------------- */

static void send_echo(struct client *cl, int fd)
{
    struct conn *c = &cl->conns[fd];
    unsigned char payload[WS_MAX_SMALL];
    for (int j = 0; j < cl->o.size; j++)
        payload[j] = payload_byte(cl, c->id, j);
    c->state = CS_ECHOING;
    c->echo_sent_us = (uint32_t)((now_ns() - cl->stage_start) / 1000);
    cl->outstanding++, cl->echo_sent++;
    send_frame(cl, fd, cl->o.text ? OP_TEXT : OP_BINARY, payload, (size_t)cl->o.size);
}

static void send_close(struct client *cl, int fd)
{
    static const unsigned char normal[2] = {WS_CLOSE_NORMAL >> 8, WS_CLOSE_NORMAL & 0xFF};
    if (strcmp(cl->o.close_mode, "plain") == 0) {
        cl->closed++;
        conn_drop(cl, fd);
        return;
    }
    cl->conns[fd].state = CS_CLOSING;
    cl->outstanding++;
    send_frame(cl, fd, OP_CLOSE, normal, sizeof normal);
}

/* Walks the table once per stage, keeping at most --echo-window messages or closes owed. */
static void refill_window(struct client *cl, void (*send_one)(struct client *, int))
{
    while (cl->outstanding < cl->o.echo_window && cl->cursor < cl->table_size) {
        int fd = cl->cursor++;
        if (cl->conns[fd].state == CS_OPEN)
            send_one(cl, fd);
    }
}

/* Whatever is still owed when a stage's time is up fails with `why`, and is closed. */
static void fail_owed(struct client *cl, enum cstate owed, enum cause why, bool unsent_too)
{
    for (int fd = 0; fd < cl->table_size; fd++) {
        enum cstate st = cl->conns[fd].state;
        bool unsent = unsent_too && st == CS_OPEN && fd >= cl->cursor;
        if (st == owed || unsent)
            conn_fail(cl, fd, why);
    }
}

static void drop_all(struct client *cl, enum cause why)
{
    for (int fd = 0; fd < cl->table_size; fd++)
        if (cl->conns[fd].state != CS_IDLE)
            conn_fail(cl, fd, why);
}

/* ---- reporting -------------------------------------------------------------------------------- */

static void print_quantiles(const char *name, const struct hist *h)
{
    printf("\"%s\":{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
           "\"max\":%.1f,\"mean\":%.1f}",
           name, (unsigned long long)h->count, hist_quantile(h, 0.5) / 1e3,
           hist_quantile(h, 0.9) / 1e3, hist_quantile(h, 0.99) / 1e3,
           hist_quantile(h, 0.999) / 1e3, h->count ? h->max / 1e3 : 0.0,
           h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0);
}

/* The non-empty buckets as [value_ns, count], so the driver can merge every client's histogram.
 * A bucket's value is the median of a histogram holding just that bucket (hist.h's own rule). */
static void print_buckets(const char *name, const struct hist *h)
{
    static struct hist probe;
    printf("\"%s\":[", name);
    bool first = true;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (!h->buckets[i])
            continue;
        probe.buckets[i] = probe.count = 1, probe.min = 0, probe.max = UINT64_MAX;
        printf("%s[%llu,%llu]", first ? "" : ",", (unsigned long long)hist_quantile(&probe, 0.5),
               (unsigned long long)h->buckets[i]);
        probe.buckets[i] = 0;
        first = false;
    }
    printf("]");
}

static void print_failures(const struct client *cl)
{
    printf("\"failures\":{");
    for (int s = 0; s < ST_DONE; s++) { /* nothing can fail once done */
        printf("%s\"%s\":{", s ? "," : "", stage_names[s]);
        bool first = true;
        for (int f = 0; f < F_N; f++)
            if (cl->failures[s][f]) {
                printf("%s\"%s\":%llu", first ? "" : ",", cause_names[f],
                       (unsigned long long)cl->failures[s][f]);
                first = false;
            }
        printf("}");
    }
    printf("},\"failures_total\":%llu", (unsigned long long)failures_total(cl));
}

static void print_counts(const struct client *cl, const char *event, uint64_t now)
{
    printf("{\"event\":\"%s\",\"client\":%d,\"t\":%.3f,\"stage\":\"%s\",\"target\":%d,"
           "\"started\":%d,\"established\":%d,\"open\":%d,\"in_flight\":%d,\"echo_sent\":%d,"
           "\"echo_ok\":%d,\"closed\":%d,",
           event, cl->o.id, since_s(cl->t0, now), stage_names[cl->stage], cl->o.connections,
           cl->started, cl->established, cl->open, cl->in_flight, cl->echo_sent, cl->echo_ok,
           cl->closed);
    print_failures(cl);
}

static void emit(const struct client *cl, const char *event)
{
    print_counts(cl, event, now_ns());
    printf("}\n");
    fflush(stdout);
}

static double cpu_seconds(struct timeval tv) { return (double)tv.tv_sec + tv.tv_usec / 1e6; }

static void print_report(const struct client *cl)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    print_counts(cl, "report", now_ns());
    printf(",\"host\":\"%s\",\"port\":%d,\"sources\":%d,\"in_flight_limit\":%d,"
           "\"echo_window\":%d,\"size\":%d,\"close_mode\":\"%s\",\"ramp_s\":%.3f,"
           "\"echo_round_s\":%.3f,\"close_round_s\":%.3f,\"aborted\":",
           cl->o.host, cl->o.port, cl->nsrc, cl->o.in_flight, cl->o.echo_window, cl->o.size,
           cl->o.close_mode, cl->ramp_s, cl->echo_round_s, cl->close_round_s);
    printf(cl->abort_reason ? "\"%s\"," : "null,", cl->abort_reason);
    print_quantiles("handshake_us", &cl->handshake);
    printf(",");
    print_quantiles("echo_us", &cl->echo);
    printf(",");
    print_buckets("handshake_hist", &cl->handshake);
    printf(",");
    print_buckets("echo_hist", &cl->echo);
    printf(",\"cpu\":{\"user_s\":%.3f,\"sys_s\":%.3f},\"maxrss_kb\":%ld,\"conn_bytes\":%zu}\n",
           cpu_seconds(ru.ru_utime), cpu_seconds(ru.ru_stime), ru.ru_maxrss,
           sizeof(struct conn));
    fflush(stdout);
}

/* ---- control: stdin lines and signals --------------------------------------------------------- */

static void on_signal(int signo)
{
    if (signo == SIGUSR1)
        sig_echo = 1;
    else if (signo == SIGUSR2)
        sig_close = 1;
    else
        sig_abort = 1;
}

static void control_word(struct client *cl, const char *word)
{
    if (strcmp(word, "echo") == 0)
        cl->echo_wanted = !cl->echo_done; /* one echo round per run */
    else if (strcmp(word, "close") == 0)
        cl->close_wanted = true;
    else if (strcmp(word, "quit") == 0)
        cl->abort_reason = "quit";
    else if (*word)
        fprintf(stderr, "c1000k_client: unknown command '%s' (echo, close, quit)\n", word);
}

/* Lines on stdin. EOF before "close" means whoever drives us is gone: nothing may be left
 * holding connections, so we abort. After "close" it is just the end of the commands. */
static void read_control(struct client *cl)
{
    char buf[256];
    ssize_t n = read(cl->control_fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        if (!cl->close_wanted)
            cl->abort_reason = "control input closed";
        set_events(cl, cl->control_fd, 0, EPOLL_CTL_DEL);
        cl->control_fd = -1;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n' && cl->control_len < CONTROL_LINE_MAX - 1) {
            cl->control[cl->control_len++] = buf[i];
            continue;
        }
        cl->control[cl->control_len] = '\0';
        cl->control_len = 0;
        control_word(cl, cl->control);
    }
}

static void take_signals(struct client *cl)
{
    if (sig_echo)
        sig_echo = 0, cl->echo_wanted = !cl->echo_done;
    if (sig_close)
        sig_close = 0, cl->close_wanted = true;
    if (sig_abort && !cl->abort_reason)
        cl->abort_reason = "signal";
}

/* ---- stages ------------------------------------------------------------------------------------- */

static void enter_stage(struct client *cl, enum stage st, double timeout_s, uint64_t now)
{
    cl->stage = st;
    cl->stage_start = now;
    cl->stage_deadline = now + secs_ns(timeout_s);
    cl->cursor = 0;
}

static void finish_ramp(struct client *cl, uint64_t now)
{
    if (cl->started < cl->o.connections) /* the ramp deadline came first */
        cl->failures[ST_RAMP][F_RAMP_TIMEOUT] += (uint64_t)(cl->o.connections - cl->started);
    cl->started = cl->o.connections;
    fail_owed(cl, CS_CONNECTING, F_CONNECT_TIMEOUT, false);
    fail_owed(cl, CS_UPGRADING, F_HANDSHAKE_TIMEOUT, false);
    cl->ramp_s = cl->established ? since_s(cl->t0, cl->last_established_at) : 0;
    enter_stage(cl, ST_HOLD, cl->o.hold_timeout, now);
    emit(cl, "ramp_done");
    if (cl->o.auto_run)
        cl->echo_wanted = true;
}

static void finish_echo(struct client *cl, uint64_t now)
{
    fail_owed(cl, CS_ECHOING, F_ECHO_TIMEOUT, now >= cl->stage_deadline);
    cl->echo_round_s = since_s(cl->stage_start, now);
    enter_stage(cl, ST_HOLD, cl->o.hold_timeout, now);
    cl->echo_wanted = false;
    cl->echo_done = true;
    emit(cl, "echo_done");
    if (cl->o.auto_run)
        cl->close_wanted = true;
}

static void finish_close(struct client *cl, uint64_t now)
{
    fail_owed(cl, CS_CLOSING, F_CLOSE_TIMEOUT, false);
    drop_all(cl, F_CLOSE_TIMEOUT); /* open ones the window never reached: out of time */
    cl->close_round_s = since_s(cl->stage_start, now);
    cl->stage = ST_DONE;
    emit(cl, "close_done");
}

static bool window_done(const struct client *cl)
{
    return cl->outstanding == 0 && cl->cursor >= cl->table_size;
}

static void advance(struct client *cl, uint64_t now)
{
    switch (cl->stage) {
    case ST_RAMP:
        expire_handshakes(cl, now);
        refill_ramp(cl);
        if ((cl->started == cl->o.connections && cl->in_flight == 0) || now >= cl->stage_deadline)
            finish_ramp(cl, now);
        break;
    case ST_HOLD: /* commands given early wait for the ramp; an echo asked for goes first */
        if (cl->echo_wanted)
            enter_stage(cl, ST_ECHO, cl->o.echo_timeout, now);
        else if (cl->close_wanted)
            enter_stage(cl, ST_CLOSE, cl->o.close_timeout, now);
        else if (now >= cl->stage_deadline)
            cl->abort_reason = "hold timeout (no close command)";
        break;
    case ST_ECHO:
        refill_window(cl, send_echo);
        if (window_done(cl) || now >= cl->stage_deadline)
            finish_echo(cl, now);
        break;
    case ST_CLOSE:
        refill_window(cl, send_close);
        if (window_done(cl) || now >= cl->stage_deadline)
            finish_close(cl, now);
        break;
    default:
        break;
    }
}

static int poll_timeout(const struct client *cl, uint64_t now)
{
    uint64_t until = cl->next_progress < cl->stage_deadline ? cl->next_progress : cl->stage_deadline;
    if (until <= now)
        return 0;
    uint64_t ms = (until - now + 999999) / 1000000;
    return ms > MAX_POLL_MS ? MAX_POLL_MS : (int)ms;
}

static void run(struct client *cl)
{
    static struct epoll_event events[MAX_EVENTS];
    cl->t0 = now_ns();
    enter_stage(cl, ST_RAMP, cl->o.ramp_timeout, cl->t0);
    cl->next_progress = cl->t0;
    while (cl->stage != ST_DONE && !cl->abort_reason) {
        uint64_t now = now_ns();
        take_signals(cl);
        advance(cl, now);
        if (now >= cl->next_progress) {
            emit(cl, "progress");
            cl->next_progress = now + (uint64_t)cl->o.progress_ms * 1000000;
        }
        if (cl->stage == ST_DONE || cl->abort_reason)
            break;
        int ready = epoll_wait(cl->epfd, events, MAX_EVENTS, poll_timeout(cl, now));
        for (int i = 0; i < ready; i++)
            dispatch(cl, &events[i]);
    }
    if (cl->abort_reason)
        drop_all(cl, F_ABORTED);
}

/* ---- options and setup -------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: c1000k_client --port N [options]   (or: c1000k_client selftest)\n"
            "  -H, --host ADDR            server IPv4 address (127.0.0.1)\n"
            "  -p, --port N               server port\n"
            "  -c, --connections N        connections to open and hold (1000)\n"
            "  -S, --sources LIST         source addresses, e.g. 127.1.0.1-4 or a,b,c (kernel's)\n"
            "  -k, --in-flight N          connects + handshakes at once (512)\n"
            "  -w, --echo-window N        echoes or closes outstanding at once (1024)\n"
            "  -s, --size N               echo payload bytes, 1..125 (32)\n"
            "  -t, --text                 text frames (printable ASCII) instead of binary\n"
            "  -P, --path PATH            request target (/)\n"
            "  -C, --close MODE           handshake (RFC 6455 close) or plain (handshake)\n"
            "  -a, --auto                 echo and close right after the ramp, no commands\n"
            "  -i, --id N                 client number in reports (0)\n"
            "  -r, --progress-ms N        progress line interval (500)\n"
            "      --handshake-timeout S  per connection, connect to 101 (30)\n"
            "      --ramp-timeout S       bound on the whole ramp (600)\n"
            "      --hold-timeout S       bound on waiting for a command (900)\n"
            "      --echo-timeout S       bound on the echo stage (60)\n"
            "      --close-timeout S      bound on the close stage (60)\n"
            "Commands on stdin (one per line): echo, close, quit. SIGUSR1 = echo, SIGUSR2 = close.\n");
}

static void set_defaults(struct options *o)
{
    *o = (struct options){.host = "127.0.0.1", .path = "/", .close_mode = "handshake",
                          .connections = 1000, .in_flight = 512, .echo_window = 1024, .size = 32,
                          .progress_ms = 500, .handshake_timeout = 30, .ramp_timeout = 600,
                          .hold_timeout = 900, .echo_timeout = 60, .close_timeout = 60};
}

static const char *check_options(const struct options *o)
{
    if (o->port <= 0 || o->port > 65535)
        return "--port must be 1..65535";
    if (o->connections < 1 || o->connections > 1000000)
        return "--connections must be 1..1000000";
    if (o->in_flight < 1 || o->in_flight > 65535)
        return "--in-flight must be 1..65535";
    if (o->echo_window < 1)
        return "--echo-window must be >= 1";
    if (o->size < 1 || o->size > WS_MAX_SMALL)
        return "--size must be 1..125 (one small frame)";
    if (strcmp(o->close_mode, "handshake") != 0 && strcmp(o->close_mode, "plain") != 0)
        return "--close must be handshake or plain";
    if (o->progress_ms < 10)
        return "--progress-ms must be >= 10";
    double t[] = {o->handshake_timeout, o->ramp_timeout, o->hold_timeout, o->echo_timeout,
                  o->close_timeout};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!(t[i] > 0 && t[i] <= 86400))
            return "timeouts must be in (0, 86400] seconds";
    return NULL;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum { O_HS = 256, O_RAMP, O_HOLD, O_ECHO, O_CLOSE };
    static const struct option longopts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"connections", 1, 0, 'c'},
        {"sources", 1, 0, 'S'}, {"in-flight", 1, 0, 'k'}, {"echo-window", 1, 0, 'w'},
        {"size", 1, 0, 's'}, {"text", 0, 0, 't'}, {"path", 1, 0, 'P'}, {"close", 1, 0, 'C'},
        {"auto", 0, 0, 'a'}, {"id", 1, 0, 'i'}, {"progress-ms", 1, 0, 'r'},
        {"handshake-timeout", 1, 0, O_HS}, {"ramp-timeout", 1, 0, O_RAMP},
        {"hold-timeout", 1, 0, O_HOLD}, {"echo-timeout", 1, 0, O_ECHO},
        {"close-timeout", 1, 0, O_CLOSE}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    set_defaults(o);
    for (int ch; (ch = getopt_long(argc, argv, "H:p:c:S:k:w:s:tP:C:ai:r:h", longopts, NULL)) != -1;) {
        switch (ch) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = atoi(optarg); break;
        case 'c': o->connections = atoi(optarg); break;
        case 'S': o->sources = optarg; break;
        case 'k': o->in_flight = atoi(optarg); break;
        case 'w': o->echo_window = atoi(optarg); break;
        case 's': o->size = atoi(optarg); break;
        case 't': o->text = true; break;
        case 'P': o->path = optarg; break;
        case 'C': o->close_mode = optarg; break;
        case 'a': o->auto_run = true; break;
        case 'i': o->id = atoi(optarg); break;
        case 'r': o->progress_ms = atoi(optarg); break;
        case O_HS: o->handshake_timeout = atof(optarg); break;
        case O_RAMP: o->ramp_timeout = atof(optarg); break;
        case O_HOLD: o->hold_timeout = atof(optarg); break;
        case O_ECHO: o->echo_timeout = atof(optarg); break;
        case O_CLOSE: o->close_timeout = atof(optarg); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    return options_verdict("c1000k_client", check_options(o), optind, argc);
}

static int add_source(struct client *cl, uint32_t host_order)
{
    if (cl->nsrc == MAX_SOURCES)
        return -1;
    cl->src[cl->nsrc++].s_addr = htonl(host_order);
    return 0;
}

/* "127.1.0.1-4" (a range in the last octet) or "a,b,c", or both mixed. */
static int parse_sources(struct client *cl, const char *spec)
{
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", spec);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(item, '-'), *end = NULL;
        if (dash)
            *dash = '\0';
        struct in_addr a;
        if (inet_pton(AF_INET, item, &a) != 1)
            return -1;
        uint32_t first = ntohl(a.s_addr), last = first;
        if (dash) {
            long octet = strtol(dash + 1, &end, 10);
            if (*end || octet < (long)(first & 0xFF) || octet > 255)
                return -1;
            last = (first & ~0xFFu) | (uint32_t)octet;
        }
        for (uint32_t h = first; h <= last; h++)
            if (add_source(cl, h) < 0)
                return -1;
    }
    return cl->nsrc > 0 ? 0 : -1;
}

static int raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur > (1u << 22) ? 1 << 22 : (int)rl.rlim_cur;
}

static void install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    int signals[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof signals / sizeof *signals; i++)
        sigaction(signals[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the driver */
}

/* stdin as the command channel; not for --auto, nor when it cannot be polled (a file). */
static void setup_control(struct client *cl)
{
    cl->control_fd = -1;
    if (cl->o.auto_run)
        return;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = STDIN_FILENO};
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    if (epoll_ctl(cl->epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0)
        cl->control_fd = STDIN_FILENO;
    else
        fprintf(stderr, "c1000k_client: stdin cannot carry commands; use SIGUSR1/SIGUSR2\n");
}

static struct client *setup(const struct options *o)
{
    struct client *cl = xcalloc(1, sizeof *cl);
    cl->o = *o;
    cl->dst = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &cl->dst.sin_addr) != 1) {
        fprintf(stderr, "c1000k_client: --host must be an IPv4 address\n");
        return NULL;
    }
    if (o->sources && parse_sources(cl, o->sources) < 0) {
        fprintf(stderr, "c1000k_client: bad --sources '%s' (at most %d)\n", o->sources, MAX_SOURCES);
        return NULL;
    }
    if (getrandom(&cl->seed, sizeof cl->seed, 0) != sizeof cl->seed)
        cl->seed = now_ns();
    cl->rng = mix64(cl->seed);
    cl->table_size = raise_fd_limit();
    cl->conns = xcalloc((size_t)cl->table_size, sizeof *cl->conns);
    cl->pool = xcalloc((size_t)o->in_flight, sizeof *cl->pool);
    cl->free_slots = xcalloc((size_t)o->in_flight, sizeof *cl->free_slots);
    for (int i = 0; i < o->in_flight; i++)
        cl->free_slots[cl->free_count++] = (uint16_t)(o->in_flight - 1 - i);
    hist_reset(&cl->handshake);
    hist_reset(&cl->echo);
    if ((cl->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return NULL;
    setup_control(cl);
    return cl;
}

/* ---- self test ---------------------------------------------------------------------------------- */

static int selftest(void)
{
    char accept[32], good[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: keep-alive, Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    char wrong[] = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                   "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n";
    char refused[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n";
    expected_accept("dGhlIHNhbXBsZSBub25jZQ==", accept); /* RFC 6455 §1.3 example */
    bool ok[] = {
        strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0,
        judge_response(good, accept) == F_N,
        judge_response(wrong, accept) == F_BAD_ACCEPT,
        judge_response(refused, accept) == F_HANDSHAKE_REJECTED,
    };
    const char *const names[] = {"accept_rfc6455", "response_ok", "bad_accept", "rejected"};
    return print_selftest("event", names, ok, sizeof ok / sizeof *ok);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "selftest") == 0)
        return selftest();
    struct options o;
    if (parse_options(argc, argv, &o) < 0)
        return 2;
    install_signals();
    struct client *cl = setup(&o);
    if (!cl)
        return 2;
    run(cl);
    print_report(cl);
    if (cl->abort_reason)
        return 3;
    return failures_total(cl) ? 1 : 0;
}
