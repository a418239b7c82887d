/* Socket calls the standard library does not offer without a socket object. */
#ifndef REACTOR_IO_H
#define REACTOR_IO_H

#include <stddef.h>
#include <sys/types.h>

/* send(fd, data, len, MSG_MORE | MSG_NOSIGNAL): bytes taken, or -errno. */
ssize_t rx_send_more(int fd, const unsigned char *data, size_t len);

#endif
