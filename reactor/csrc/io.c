/* See io.h. os.write() has no flags and a socket object per connection costs
 * memory and a syscall to make, hence this one C call. */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <sys/socket.h>

/* MSG_MORE holds a segment that is not full until more data or a close: the
 * close() that follows puts the FIN on it, one packet instead of two. */
ssize_t rx_send_more(int fd, const unsigned char *data, size_t len)
{
    ssize_t sent = send(fd, data, len, MSG_MORE | MSG_NOSIGNAL);
    return sent < 0 ? -(ssize_t)errno : sent;
}
