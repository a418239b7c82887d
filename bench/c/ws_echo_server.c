/* ws_echo_server: a minimal C epoll WebSocket echo server for bench/ws.py.
 *
 * Its job is to show that bench/c/loadgen is not what limits the WebSocket figures: the same
 * load generator, pinned the same way, must drive this server well above the Python servers.
 * It is deliberately small, not a conformant RFC 6455 server: it checks the opening handshake
 * only for a Sec-WebSocket-Key (RFC 6455 §4.2.1), echoes every data frame with its opcode and
 * FIN bit (so fragments come back as fragments), answers pings, answers a close with the same
 * payload and then closes TCP, and refuses unmasked or oversized frames. No UTF-8 validation,
 * no extensions, no timeouts.
 *
 * The reactor is echo_server.c's, shared through qsreactor.h (qsevent / qseventblock /
 * qsreactor): level-triggered epoll, write first from one staging buffer and keep only
 * the unsent remainder, EPOLLOUT and no reading while a remainder is pending, accept drained
 * with an EMFILE back-off. Per connection it keeps only a partial frame (or partial request
 * head) between reads. Single-threaded. Usage: ws_echo_server HOST PORT (0: any free port).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "qsreactor.h"
#include "sha1.h"

#define SERVER_NAME "ws_echo_server"
#define RECV_BUFFER_SIZE (256 * 1024) /* one read: several 64 KiB frames at once */
#define MAX_HEAD 8192                /* request head bytes: browsers send about 500 */
#define MAX_PAYLOAD (16u << 20)      /* 16 MiB, the Python servers' message limit */
#define MAX_PIECES 64                /* output pieces per flush (IOV_MAX is 1024) */
#define COPY_LIMIT 1024              /* payloads up to this are copied, larger ones referenced */
#define KEY_LENGTH 24                /* RFC 6455 §4.2.1: base64 of a 16-byte nonce */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

enum { OP_CONTINUATION = 0x0, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA }; /* §5.2 */
enum { CLOSE_PROTOCOL_ERROR = 1002, CLOSE_TOO_BIG = 1009 };                   /* §7.4.1 */
enum conn_state { HANDSHAKE, OPEN, CLOSING };

struct qsevent {
    QSEVENT_COMMON /* pending: output the kernel refused */
    enum conn_state state;
    unsigned char *partial; /* an incomplete head or frame kept between reads */
    size_t partial_len, partial_cap;
};

struct qsreactor {
    QSREACTOR_COMMON
    /* Output of one read, sent with one writev: small items are copied into `out`, large
     * payloads are referenced where they lie in the input (no copy); the input stays untouched
     * until the flush. A piece with ptr == NULL is [off, off + len) of `out` (which may move). */
    unsigned char *out;
    size_t out_len, out_cap;
    struct piece {
        const unsigned char *ptr;
        size_t off, len;
    } pieces[MAX_PIECES];
    int piece_count;
    unsigned char recv_buffer[RECV_BUFFER_SIZE];
};

/* Grows *buf to hold `need` bytes (doubling); 0 on success. */
static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t grown = *cap ? *cap : 4096;
    while (grown < need)
        grown *= 2;
    unsigned char *p = realloc(*buf, grown);
    if (!p)
        return -1;
    *buf = p;
    *cap = grown;
    return 0;
}

#include "qsreactor_impl.h"

static void conn_release(struct qsevent *ev)
{
    free(ev->partial);
}

static void reactor_release(struct qsreactor *r)
{
    free(r->out);
}

/* ---- output ---------------------------------------------------------------------------------- */

static int stage(struct qsreactor *r, const void *data, size_t len)
{
    if (reserve(&r->out, &r->out_cap, r->out_len + len) < 0)
        return -1;
    memcpy(r->out + r->out_len, data, len);
    struct piece *last = r->piece_count ? &r->pieces[r->piece_count - 1] : NULL;
    if (last && !last->ptr && last->off + last->len == r->out_len)
        last->len += len; /* contiguous with the previous copied piece */
    else if (r->piece_count < MAX_PIECES)
        r->pieces[r->piece_count++] = (struct piece){NULL, r->out_len, len};
    else
        return -1; /* cannot happen: a reference is only made with two pieces to spare */
    r->out_len += len;
    return 0;
}

/* A large payload goes out from where it lies; small ones (or when pieces run out) are copied. */
static int stage_payload(struct qsreactor *r, const unsigned char *data, size_t len)
{
    if (len <= COPY_LIMIT || r->piece_count > MAX_PIECES - 3)
        return stage(r, data, len);
    r->pieces[r->piece_count++] = (struct piece){data, 0, len};
    return 0;
}

/* RFC 6455 §5.2: a server frame is never masked; the shortest length encoding is used. */
static int stage_frame(struct qsreactor *r, unsigned fin_opcode, const void *payload, size_t len)
{
    unsigned char head[10] = {(unsigned char)fin_opcode};
    size_t head_len = 2;
    if (len < 126) {
        head[1] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        head[1] = 126;
        head[2] = (unsigned char)(len >> 8);
        head[3] = (unsigned char)len;
        head_len = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++)
            head[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        head_len = 10;
    }
    return stage(r, head, head_len) < 0 || stage_payload(r, payload, len) < 0 ? -1 : 0;
}

static int stage_close(struct qsreactor *r, struct qsevent *ev, unsigned code)
{
    unsigned char payload[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    ev->state = CLOSING;
    return stage_frame(r, 0x80 | OP_CLOSE, payload, sizeof payload);
}

/* Copies what writev left of the staged pieces (`done` bytes were sent) into ev->pending. */
static int keep_pending(struct qsreactor *r, struct qsevent *ev, const struct iovec *iov,
                        size_t total, size_t done)
{
    ev->pending = malloc(total - done);
    if (!ev->pending)
        return -1;
    size_t kept = 0;
    for (int i = 0; i < r->piece_count; i++) {
        size_t skip = done < iov[i].iov_len ? done : iov[i].iov_len;
        done -= skip;
        memcpy(ev->pending + kept, (unsigned char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
        kept += iov[i].iov_len - skip;
    }
    ev->pending_len = kept;
    ev->pending_off = 0;
    return 0;
}

/* Write first; keep only what the kernel refused and stop reading until it drains.
 * Returns 0 when the connection is still open. */
static int flush(struct qsreactor *r, struct qsevent *ev)
{
    struct iovec iov[MAX_PIECES];
    size_t total = 0;
    for (int i = 0; i < r->piece_count; i++) {
        const struct piece *p = &r->pieces[i];
        iov[i] = (struct iovec){(void *)(p->ptr ? p->ptr : r->out + p->off), p->len};
        total += p->len;
    }
    ssize_t sent = total ? writev(ev->fd, iov, r->piece_count) : 0;
    int failed = sent < 0 && errno != EAGAIN && errno != EINTR;
    size_t done = sent < 0 ? 0 : (size_t)sent;
    if (!failed && done < total && keep_pending(r, ev, iov, total, done) == 0)
        qs_event_mask(r, ev, EPOLLOUT);
    r->out_len = 0;
    r->piece_count = 0;
    if (failed || (done < total && !ev->pending) || (done == total && ev->state == CLOSING)) {
        qs_event_close(r, ev); /* error, or our close frame is out: close TCP (§7.1.1) */
        return -1;
    }
    return 0;
}

static void send_cb(struct qsreactor *r, struct qsevent *ev)
{
    if (!qs_send_pending(r, ev))
        return;
    if (ev->state == CLOSING)
        qs_event_close(r, ev);
    else
        qs_event_mask(r, ev, EPOLLIN); /* drained: read again, EPOLLOUT off */
}

/* ---- the opening handshake (RFC 6455 §4.2) ------------------------------------------------- */

static const unsigned char *find_head_end(const unsigned char *data, size_t len)
{
    const unsigned char *end = memmem(data, len, "\r\n\r\n", 4);
    return end ? end + 4 : NULL;
}

/* The value of the Sec-WebSocket-Key header line, trimmed; NULL when absent or malformed. */
static const char *find_key(const char *head, size_t len)
{
    static const char name[] = "\r\nsec-websocket-key:";
    for (size_t i = 0; i + sizeof name - 1 < len; i++) {
        if (strncasecmp(head + i, name, sizeof name - 1) != 0)
            continue;
        const char *value = head + i + sizeof name - 1;
        while (*value == ' ' || *value == '\t')
            value++;
        return value + KEY_LENGTH <= head + len ? value : NULL;
    }
    return NULL;
}

static int stage_upgrade(struct qsreactor *r, const char *key)
{
    char keyed[KEY_LENGTH + sizeof WS_GUID];
    memcpy(keyed, key, KEY_LENGTH);
    memcpy(keyed + KEY_LENGTH, WS_GUID, sizeof WS_GUID);
    uint8_t digest[SHA1_DIGEST_SIZE];
    ws_sha1(keyed, KEY_LENGTH + sizeof WS_GUID - 1, digest);
    char accept[32];
    ws_base64_encode(digest, sizeof digest, accept);
    char response[160];
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    return stage(r, response, (size_t)n);
}

/* Bytes of `data` used by the handshake: 0 = need more, -1 = refused (answered, closing). */
static ssize_t handshake(struct qsreactor *r, struct qsevent *ev, unsigned char *data, size_t len)
{
    const unsigned char *end = find_head_end(data, len < MAX_HEAD ? len : MAX_HEAD);
    if (!end && len < MAX_HEAD)
        return 0;
    const char *key = end ? find_key((const char *)data, (size_t)(end - data)) : NULL;
    if (!key) {
        static const char refusal[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                      "Connection: close\r\n\r\n";
        stage(r, refusal, sizeof refusal - 1);
        ev->state = CLOSING;
        return -1;
    }
    if (stage_upgrade(r, key) < 0)
        return -1;
    ev->state = OPEN;
    return end - data;
}

/* ---- frames (RFC 6455 §5.2) ---------------------------------------------------------------- */

static void unmask(unsigned char *p, size_t len, const unsigned char key[4])
{
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = (uint64_t)k32 << 32 | k32;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        word ^= k64;
        memcpy(p + i, &word, 8);
    }
    for (; i < len; i++)
        p[i] ^= key[i & 3];
}

/* Echo, pong or close for one complete frame; -1 when the connection must close now. */
static int answer(struct qsreactor *r, struct qsevent *ev, unsigned fin_opcode,
                  unsigned char *payload, size_t len)
{
    unsigned opcode = fin_opcode & 0x0F;
    if (opcode == OP_PONG)
        return 0;
    if (opcode == OP_PING)
        return stage_frame(r, 0x80 | OP_PONG, payload, len);
    if (opcode == OP_CLOSE) {
        ev->state = CLOSING;
        return stage_frame(r, 0x80 | OP_CLOSE, payload, len); /* same code back (§5.5.1) */
    }
    return stage_frame(r, fin_opcode, payload, len); /* data: same opcode and FIN */
}

/* Bytes of one frame at `data`: 0 = incomplete, -1 = refused (close staged). */
static ssize_t frame(struct qsreactor *r, struct qsevent *ev, unsigned char *data, size_t len)
{
    if (len < 2)
        return 0;
    if (!(data[1] & 0x80)) { /* §5.1: client frames must be masked */
        stage_close(r, ev, CLOSE_PROTOCOL_ERROR);
        return -1;
    }
    uint64_t payload_len = data[1] & 0x7F;
    size_t head = 2;
    if (payload_len == 126) {
        head = 4;
        payload_len = len < head ? 0 : (uint64_t)data[2] << 8 | data[3];
    } else if (payload_len == 127) {
        head = 10;
        payload_len = 0;
        for (size_t i = 2; i < 10 && len >= head; i++)
            payload_len = payload_len << 8 | data[i];
    }
    if (len < head + 4)
        return 0;
    if (payload_len > MAX_PAYLOAD) {
        stage_close(r, ev, CLOSE_TOO_BIG);
        return -1;
    }
    if (len < head + 4 + payload_len)
        return 0;
    unsigned char *payload = data + head + 4;
    unmask(payload, (size_t)payload_len, data + head);
    if (answer(r, ev, data[0] & 0x8F, payload, (size_t)payload_len) < 0)
        return -1;
    return (ssize_t)(head + 4 + payload_len);
}

/* Handles every complete unit in data[0, len); returns the bytes consumed, -1 to stop. */
static ssize_t process(struct qsreactor *r, struct qsevent *ev, unsigned char *data, size_t len)
{
    size_t used = 0;
    while (used < len && ev->state != CLOSING) {
        ssize_t n = ev->state == HANDSHAKE ? handshake(r, ev, data + used, len - used)
                                           : frame(r, ev, data + used, len - used);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    return (ssize_t)used;
}

/* Keeps data[used, len) for the next read (data may already be ev->partial). */
static int keep_partial(struct qsevent *ev, unsigned char *data, size_t used, size_t len)
{
    size_t rest = len - used;
    if (data == ev->partial) {
        memmove(ev->partial, ev->partial + used, rest);
        ev->partial_len = rest;
        return 0;
    }
    if (reserve(&ev->partial, &ev->partial_cap, rest) < 0)
        return -1;
    memcpy(ev->partial, data + used, rest);
    ev->partial_len = rest;
    return 0;
}

/* Reads into the shared buffer, or straight behind an incomplete frame kept from before. */
static ssize_t read_more(struct qsreactor *r, struct qsevent *ev, unsigned char **data)
{
    if (!ev->partial_len) {
        *data = r->recv_buffer;
        return recv(ev->fd, r->recv_buffer, RECV_BUFFER_SIZE, 0);
    }
    if (reserve(&ev->partial, &ev->partial_cap, ev->partial_len + RECV_BUFFER_SIZE) < 0) {
        errno = ENOMEM;
        return -1;
    }
    *data = ev->partial;
    ssize_t n = recv(ev->fd, ev->partial + ev->partial_len, RECV_BUFFER_SIZE, 0);
    return n > 0 ? (ssize_t)ev->partial_len + n : n;
}

static void recv_cb(struct qsreactor *r, struct qsevent *ev)
{
    unsigned char *data;
    ssize_t n = read_more(r, ev, &data);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return; /* level-triggered: a spurious wakeup costs one call */
    if (n <= 0) {
        qs_event_close(r, ev); /* EOF, ECONNRESET, ENOMEM...: this connection only */
        return;
    }
    ssize_t used = process(r, ev, data, (size_t)n);
    if (used < 0)
        ev->state = CLOSING;
    /* The staged output may point into `data`: send it before the input is moved. */
    if (flush(r, ev) == 0 && used >= 0 && keep_partial(ev, data, (size_t)used, (size_t)n) < 0)
        qs_event_close(r, ev);
}

int main(int argc, char **argv)
{
    return qsreactor_main(argc, argv);
}
