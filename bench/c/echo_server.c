/* echo_server: the reference C epoll echo server for bench/echo.py.
 *
 * It is the seed's design (article section 11: struct qsevent per fd, struct qseventblock of 1024
 * slots, struct qsreactor owning the epoll fd, accept_cb / recv_cb / send_cb callbacks) with the
 * seed's bugs fixed, so that "within 2x of C" compares against a correct server:
 * - every socket is non-blocking; epoll is level-triggered;
 * - blocks are found by index (fd / 1024) in an array, not by walking a linked list;
 * - a qsevent has a read and a write callback (the seed swaps one callback and re-adds the fd);
 * - write first: echo straight from the receive buffer, keep only the unsent remainder, and arm
 *   EPOLLOUT only while a remainder is pending (the seed always waits for EPOLLOUT);
 * - partial writes and EAGAIN keep their offset; reading pauses while a remainder is pending, so a
 *   connection never holds more than one read's worth of memory;
 * - accept is drained (bounded per wakeup); EMFILE/ENFILE pause the listener on a timer instead
 *   of spinning on a readable listener that accept cannot serve;
 * - epoll_ctl only when a mask changes; SIGTERM/SIGINT stop it cleanly.
 * Single-threaded. Usage: echo_server HOST PORT (port 0: any free port; the log line tells which).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
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

#define BLOCK_SIZE 1024            /* slots per qseventblock, as in the seed */
#define RECV_BUFFER_SIZE (64 * 1024) /* one read; also the most a paused connection holds */
#define MAX_EVENTS 1024            /* per epoll_wait */
#define ACCEPT_BATCH 256           /* accepts per wakeup: drains bursts without starving reads */
#define EMFILE_PAUSE_MS 250        /* listener off this long after running out of fds */
#define IDLE_WAIT_MS 1000          /* epoll_wait timeout when no timer is due */

struct qsreactor;
struct qsevent;
typedef void (*qs_callback)(struct qsreactor *reactor, struct qsevent *ev);

struct qsevent {
    int fd;
    uint32_t events; /* mask registered with epoll; 0 = not in the interest list */
    qs_callback read_cb, write_cb;
    unsigned char *pending; /* echo bytes the kernel refused: [pending_off, pending_len) */
    size_t pending_len, pending_off;
};

struct qseventblock {
    struct qsevent slots[BLOCK_SIZE];
};

struct qsreactor {
    int epfd;
    struct qseventblock **blocks; /* blocks[fd / BLOCK_SIZE], allocated on demand */
    size_t block_count;
    struct qsevent *listener;
    long long listen_resume_ms; /* > 0: the listener is paused until this time */
    unsigned long long accepted;
    unsigned char recv_buffer[RECV_BUFFER_SIZE];
};

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
    ev->fd = fd;
    ev->events = 0;
    ev->read_cb = read_cb;
    ev->write_cb = write_cb;
    ev->pending = NULL;
    ev->pending_len = ev->pending_off = 0;
}

/* Close order: out of epoll, slot cleared, then the fd released (it may be reused at once). */
static void qs_event_close(struct qsreactor *r, struct qsevent *ev)
{
    int fd = ev->fd;
    qs_event_mask(r, ev, 0);
    free(ev->pending);
    qs_event_set(ev, -1, NULL, NULL);
    close(fd);
}

/* ---- connection callbacks ------------------------------------------------------------------ */

static void send_cb(struct qsreactor *r, struct qsevent *ev);

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
    size_t left = ev->pending_len - ev->pending_off;
    ssize_t sent = send(ev->fd, ev->pending + ev->pending_off, left, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EINTR)
            qs_event_close(r, ev);
        return;
    }
    ev->pending_off += (size_t)sent;
    if (ev->pending_off < ev->pending_len)
        return;
    free(ev->pending);
    ev->pending = NULL;
    ev->pending_len = ev->pending_off = 0;
    qs_event_mask(r, ev, EPOLLIN); /* drained: read again, EPOLLOUT off */
}

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
        fprintf(stderr, "echo_server: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror("echo_server: listen");
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

int main(int argc, char **argv)
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
    fprintf(stderr, "echo_server: listening on %s (pid %d)\n", bound, (int)getpid());

    qsreactor_run(r);

    unsigned long long accepted = r->accepted;
    qsreactor_destroy(r);
    fprintf(stderr, "echo_server: stopped after %llu connections\n", accepted);
    return 0;
}
