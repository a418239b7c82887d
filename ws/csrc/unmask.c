/* RFC 6455 §5.3 payload unmasking, in place.
 *
 * `phase` is the index into the 4-byte key of the first byte of `buf`, so a
 * payload that arrives split across several reads keeps its key rotation.
 * The main loop XORs 8 bytes per step with a key widened to 64 bits; memcpy
 * keeps the loads and stores legal for any alignment (compilers turn it into
 * plain moves). Returns the phase for the byte following the buffer.
 */
#include <stdint.h>
#include <string.h>
#include "unmask.h"

unsigned int ws_unmask(unsigned char *buf, size_t len, uint32_t key_be, unsigned int phase)
{
    unsigned char key[4], rot[8];
    size_t i = 0;
    uint64_t k64, chunk;

    key[0] = (unsigned char)(key_be >> 24);
    key[1] = (unsigned char)(key_be >> 16);
    key[2] = (unsigned char)(key_be >> 8);
    key[3] = (unsigned char)key_be;
    phase &= 3;
    for (int j = 0; j < 8; j++)
        rot[j] = key[(phase + j) & 3];
    memcpy(&k64, rot, 8);
    for (; i + 8 <= len; i += 8) {
        memcpy(&chunk, buf + i, 8);
        chunk ^= k64;
        memcpy(buf + i, &chunk, 8);
    }
    for (; i < len; i++)
        buf[i] ^= rot[i & 7];
    return (unsigned int)((phase + len) & 3);
}
