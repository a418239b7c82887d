/* qsreactor.h: the types of the epoll reactor both C servers share (echo_server.c and
 * ws_echo_server.c); its code is in qsreactor_impl.h.
 *
 * struct qsevent per fd, struct qseventblock of 1024 slots, struct qsreactor owning the epoll
 * fd, accept_cb / recv_cb / send_cb; echo_server.c's comment lists the rules it keeps. A server's struct qsevent begins with QSEVENT_COMMON and its struct
 * qsreactor with QSREACTOR_COMMON; what follows is the server's own.
 */
#ifndef BENCH_QSREACTOR_H
#define BENCH_QSREACTOR_H

#include <stddef.h>
#include <stdint.h>

#define BLOCK_SIZE 1024     /* slots per qseventblock */
#define MAX_EVENTS 1024     /* per epoll_wait */
#define ACCEPT_BATCH 256    /* accepts per wakeup: drains bursts without starving reads */
#define EMFILE_PAUSE_MS 250 /* listener off this long after running out of fds */
#define IDLE_WAIT_MS 1000   /* epoll_wait timeout when no timer is due */

struct qsreactor;
struct qsevent;
typedef void (*qs_callback)(struct qsreactor *reactor, struct qsevent *ev);

/* events: the mask registered with epoll (0 = not in the interest list); pending: output the
 * kernel refused, [pending_off, pending_len), sent before anything else. */
#define QSEVENT_COMMON                                                                             \
    int fd;                                                                                        \
    uint32_t events;                                                                               \
    qs_callback read_cb, write_cb;                                                                 \
    unsigned char *pending;                                                                        \
    size_t pending_len, pending_off;

/* blocks[fd / BLOCK_SIZE], allocated on demand; listen_resume_ms > 0: the listener is paused
 * until then (out of fds). */
#define QSREACTOR_COMMON                                                                           \
    int epfd;                                                                                      \
    struct qseventblock **blocks;                                                                  \
    size_t block_count;                                                                            \
    struct qsevent *listener;                                                                      \
    long long listen_resume_ms;                                                                    \
    unsigned long long accepted;

#endif
