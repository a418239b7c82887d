/* RFC 6455 §5.3 payload unmasking, in place (see unmask.c). */
#ifndef REACTOR_WS_UNMASK_H
#define REACTOR_WS_UNMASK_H
#include <stddef.h>
#include <stdint.h>

/* XOR buf[0, len) with the 4-byte masking key `key_be` (the key's wire
 * bytes read as a big-endian integer), starting at key byte `phase` (0..3).
 * Returns the key phase of the byte that follows. */
unsigned int ws_unmask(unsigned char *buf, size_t len, uint32_t key_be, unsigned int phase);

/* Same on the window buf[start, end); does nothing when start >= end. */
unsigned int ws_unmask_range(unsigned char *buf, size_t start, size_t end, uint32_t key_be,
                             unsigned int phase);
#endif
