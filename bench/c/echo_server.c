/* echo_server: the reference C epoll echo server for bench/echo.py.
 *
 * The classic C reactor (struct qsevent per fd, struct qseventblock of 1024 slots, struct
 * qsreactor owning the epoll fd, accept_cb / recv_cb / send_cb callbacks) without its usual
 * pitfalls, so that a comparison with C is one with a correct server:
 * - every socket is non-blocking; epoll is level-triggered;
 * - blocks are found by index (fd / 1024) in an array, not by walking a linked list;
 * - a qsevent has a read and a write callback (no swapping one callback and re-adding the fd);
 * - write first: echo straight from the receive buffer, keep only the unsent remainder, and arm
 *   EPOLLOUT only while a remainder is pending (never wait for EPOLLOUT before a first send);
 * - partial writes and EAGAIN keep their offset; reading pauses while a remainder is pending, so a
 *   connection never holds more than one read's worth of memory;
 * - accept is drained (bounded per wakeup); EMFILE/ENFILE pause the listener on a timer instead
 *   of spinning on a readable listener that accept cannot serve;
 * - epoll_ctl only when a mask changes; SIGTERM/SIGINT stop it cleanly.
 * The reactor (event blocks, masks, accepting, the loop, setup) is in qsreactor.h, shared with
 * ws_echo_server.c; this file holds the echo itself.
 * Single-threaded. Usage: echo_server HOST PORT (port 0: any free port; the log line tells which).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "qsreactor.h"

#define SERVER_NAME "echo_server"
#define RECV_BUFFER_SIZE (64 * 1024) /* one read; also the most a paused connection holds */

struct qsevent {
    QSEVENT_COMMON /* pending: the echo bytes the kernel refused */
};

struct qsreactor {
    QSREACTOR_COMMON
    unsigned char recv_buffer[RECV_BUFFER_SIZE];
};

#include "qsreactor_impl.h"

/* ---- connection callbacks ------------------------------------------------------------------ */

/* Keep the unsent tail; stop reading until it drains so memory stays bounded. */
static void keep_pending(struct qsreactor *r, struct qsevent *ev, const unsigned char *data,
                         size_t len)
{
    ev->pending = malloc(len);
    if (!ev->pending) {
        qs_event_close(r, ev);
        return;
    }
    memcpy(ev->pending, data, len);
    ev->pending_len = len;
    ev->pending_off = 0;
    qs_event_mask(r, ev, EPOLLOUT);
}

static void recv_cb(struct qsreactor *r, struct qsevent *ev)
{
    ssize_t n = recv(ev->fd, r->recv_buffer, RECV_BUFFER_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return; /* level-triggered: a spurious wakeup costs one call */
    if (n <= 0) {
        qs_event_close(r, ev); /* EOF, ECONNRESET, ...: this connection only */
        return;
    }
    ssize_t sent = send(ev->fd, r->recv_buffer, (size_t)n, MSG_NOSIGNAL);
    if (sent < 0 && errno != EAGAIN && errno != EINTR) {
        qs_event_close(r, ev);
        return;
    }
    if (sent < 0)
        sent = 0;
    if (sent < n)
        keep_pending(r, ev, r->recv_buffer + sent, (size_t)(n - sent));
}

static void send_cb(struct qsreactor *r, struct qsevent *ev)
{
    if (qs_send_pending(r, ev))
        qs_event_mask(r, ev, EPOLLIN); /* drained: read again, EPOLLOUT off */
}

static void conn_release(struct qsevent *ev)
{
    (void)ev; /* nothing of its own beyond the pending output the reactor frees */
}

static void reactor_release(struct qsreactor *r)
{
    (void)r; /* nothing of its own beyond what the reactor frees */
}

int main(int argc, char **argv)
{
    return qsreactor_main(argc, argv);
}
