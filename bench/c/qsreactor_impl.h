/* qsreactor_impl.h: the code of the epoll reactor both C servers share (see qsreactor.h).
 *
 * Each server keeps its own per-connection state in its struct qsevent, so this code is compiled
 * with the server's structs: include it once, from the server's .c file, after those structs
 * (which begin with QSEVENT_COMMON / QSREACTOR_COMMON). The server then defines recv_cb (its
 * read callback), send_cb (its write callback: qs_send_pending, then what a drained connection
 * does), conn_release (frees the connection's own memory) and reactor_release (the reactor's);
 * its main returns qsreactor_main(argc, argv).
 */
#ifndef BENCH_QSREACTOR_IMPL_H
#define BENCH_QSREACTOR_IMPL_H

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qsreactor.h"

struct qseventblock {
    struct qsevent slots[BLOCK_SIZE];
};

static void recv_cb(struct qsreactor *r, struct qsevent *ev);
static void send_cb(struct qsreactor *r, struct qsevent *ev);
static void conn_release(struct qsevent *ev);
static void reactor_release(struct qsreactor *r);

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int signum)
{
    (void)signum;
    stop_requested = 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- event blocks -------------------------------------------------------------------------- */

static struct qsevent *qsreactor_idx(struct qsreactor *r, int fd)
{
    size_t block = (size_t)fd / BLOCK_SIZE;
    if (block >= r->block_count) {
        size_t count = block + 1;
        struct qseventblock **grown = realloc(r->blocks, count * sizeof *grown);
        if (!grown)
            return NULL;
        memset(grown + r->block_count, 0, (count - r->block_count) * sizeof *grown);
        r->blocks = grown;
        r->block_count = count;
    }
    if (!r->blocks[block] && !(r->blocks[block] = calloc(1, sizeof(struct qseventblock))))
        return NULL;
    return &r->blocks[block]->slots[fd % BLOCK_SIZE];
}

/* redis ae style: ADD when the mask leaves 0, DEL when it returns to 0, MOD on a change. */
static void qs_event_mask(struct qsreactor *r, struct qsevent *ev, uint32_t mask)
{
    if (mask == ev->events)
        return;
    struct epoll_event epv = {.events = mask, .data.fd = ev->fd};
    int op = ev->events == 0 ? EPOLL_CTL_ADD : mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(r->epfd, op, ev->fd, &epv) < 0)
        perror("epoll_ctl");
    ev->events = mask;
}

static void qs_event_set(struct qsevent *ev, int fd, qs_callback read_cb, qs_callback write_cb)
{
    memset(ev, 0, sizeof *ev); /* the server's own fields too: a fresh connection */
    ev->fd = fd;
    ev->read_cb = read_cb;
    ev->write_cb = write_cb;
}

/* Close order: out of epoll, slot cleared, then the fd released (it may be reused at once). */
static void qs_event_close(struct qsreactor *r, struct qsevent *ev)
{
    int fd = ev->fd;
    qs_event_mask(r, ev, 0);
    free(ev->pending);
    conn_release(ev);
    qs_event_set(ev, -1, NULL, NULL);
    close(fd);
}

/* Sends more of the remainder the kernel refused before. Returns 1 once all of it is out (and
 * freed), 0 while some is left or after an error closed the connection (ev is then free). */
static int qs_send_pending(struct qsreactor *r, struct qsevent *ev)
{
    size_t left = ev->pending_len - ev->pending_off;
    ssize_t sent = send(ev->fd, ev->pending + ev->pending_off, left, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EINTR)
            qs_event_close(r, ev);
        return 0;
    }
    ev->pending_off += (size_t)sent;
    if (ev->pending_off < ev->pending_len)
        return 0;
    free(ev->pending);
    ev->pending = NULL;
    ev->pending_len = ev->pending_off = 0;
    return 1;
}

/* ---- accepting ------------------------------------------------------------------------------- */

static void pause_listener(struct qsreactor *r)
{
    qs_event_mask(r, r->listener, 0);
    r->listen_resume_ms = now_ms() + EMFILE_PAUSE_MS;
}

static void adopt(struct qsreactor *r, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct qsevent *ev = qsreactor_idx(r, fd);
    if (!ev) {
        close(fd);
        return;
    }
    qs_event_set(ev, fd, recv_cb, send_cb);
    qs_event_mask(r, ev, EPOLLIN);
    r->accepted++;
}

static void accept_cb(struct qsreactor *r, struct qsevent *ev)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(ev->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            adopt(r, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            pause_listener(r);
        else if (errno != EAGAIN)
            perror("accept4");
        return;
    }
}

/* ---- the reactor ----------------------------------------------------------------------------- */

static int wait_timeout(const struct qsreactor *r)
{
    if (r->listen_resume_ms <= 0)
        return IDLE_WAIT_MS;
    long long left = r->listen_resume_ms - now_ms();
    return left < 0 ? 0 : (int)left;
}

static void resume_listener_if_due(struct qsreactor *r)
{
    if (r->listen_resume_ms > 0 && now_ms() >= r->listen_resume_ms) {
        r->listen_resume_ms = 0;
        qs_event_mask(r, r->listener, EPOLLIN);
    }
}

/* EPOLLERR/EPOLLHUP come whatever the mask; the armed callback's recv/send surfaces the error.
 * Within one batch a closed fd can be reused by accept: its stale readiness then reaches the new
 * connection, which costs one EAGAIN and nothing else for an echo server. */
static void dispatch(struct qsreactor *r, const struct epoll_event *e)
{
    struct qsevent *ev = qsreactor_idx(r, e->data.fd);
    if (!ev || ev->fd != e->data.fd)
        return;
    uint32_t fault = e->events & (EPOLLERR | EPOLLHUP);
    if ((e->events & EPOLLOUT || fault) && ev->events & EPOLLOUT)
        ev->write_cb(r, ev);
    else if ((e->events & EPOLLIN || fault) && ev->events & EPOLLIN)
        ev->read_cb(r, ev);
}

static void qsreactor_run(struct qsreactor *r)
{
    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int ready = epoll_wait(r->epfd, events, MAX_EVENTS, wait_timeout(r));
        if (ready < 0) {
            if (errno != EINTR)
                perror("epoll_wait");
            continue;
        }
        for (int i = 0; i < ready; i++)
            dispatch(r, &events[i]);
        resume_listener_if_due(r);
    }
}

static void qsreactor_destroy(struct qsreactor *r)
{
    for (size_t b = 0; b < r->block_count; b++) {
        for (int s = 0; r->blocks[b] && s < BLOCK_SIZE; s++) {
            struct qsevent *ev = &r->blocks[b]->slots[s];
            if (ev->read_cb)
                qs_event_close(r, ev);
        }
        free(r->blocks[b]);
    }
    reactor_release(r);
    free(r->blocks);
    close(r->epfd);
    free(r);
}

/* ---- setup ----------------------------------------------------------------------------------- */

static int listen_on(const char *host, const char *port, char *bound, size_t bound_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "%s: %s: %s\n", SERVER_NAME, host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror(SERVER_NAME ": listen");
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char service[16];
    getnameinfo((struct sockaddr *)&ss, len, bound, bound_size, service, sizeof service,
                NI_NUMERICHOST | NI_NUMERICSERV);
    size_t used = strlen(bound);
    snprintf(bound + used, bound_size - used, ":%s", service);
    return fd;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal}; /* no SA_RESTART: epoll_wait wakes */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int qsreactor_main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    raise_fd_limit();
    install_signals();
    char bound[128];
    int listen_fd = listen_on(argv[1], argv[2], bound, sizeof bound);
    struct qsreactor *r = calloc(1, sizeof *r);
    if (listen_fd < 0 || !r || (r->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return 1;
    r->listener = qsreactor_idx(r, listen_fd);
    qs_event_set(r->listener, listen_fd, accept_cb, NULL);
    qs_event_mask(r, r->listener, EPOLLIN);
    fprintf(stderr, SERVER_NAME ": listening on %s (pid %d)\n", bound, (int)getpid());

    qsreactor_run(r);

    unsigned long long accepted = r->accepted;
    qsreactor_destroy(r);
    fprintf(stderr, SERVER_NAME ": stopped after %llu connections\n", accepted);
    return 0;
}

#endif
