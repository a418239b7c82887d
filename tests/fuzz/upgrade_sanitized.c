/* Memory-safety check of ws/csrc/upgrade.c (and the SHA-1 it uses) under AddressSanitizer
 * and UBSan (tests/test_fuzz.py compiles and runs it; no Python in the loop).
 *
 * Usage: upgrade_sanitized ITERATIONS. Each iteration takes one of the seed upgrade heads,
 * applies 0-4 random byte edits (replace, insert, delete), cuts it at a random length half
 * of the time, copies it into a heap block of EXACTLY that size (a read one byte past `len`
 * is a heap-buffer-overflow) and answers it into an output block of a random capacity, small
 * ones included. An accepted head must give the 101 of the expected size, within the output.
 * Prints "accepted A of N"; any violation exits 1, a sanitizer report aborts. The PRNG is
 * fixed, so a failure reproduces. Equivalence with the Python check is tested elsewhere
 * (tests/test_ws_handshake.py, the ws_handshake fuzz target). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upgrade.h"
#include "mutate.h"

static const char *const SEEDS[] = {
    "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n",
    "GET / HTTP/1.1\r\nhost:h\r\nconnection: keep-alive, Upgrade\r\nupgrade:WebSocket\r\n"
    "sec-websocket-version:13\r\nsec-websocket-key:AAAAAAAAAAAAAAAAAAAAAA==\r\n"
    "Sec-WebSocket-Protocol: chat\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: ,upgrade,\r\n"
    "Sec-WebSocket-Key: ////////////////////+w==\t\r\nSec-WebSocket-Version: 13 \r\n\r\n",
};
#define SEED_COUNT (sizeof(SEEDS) / sizeof(SEEDS[0]))
#define MAX_HEAD 1024

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 100000, accepted = 0;

    for (long n = 0; n < iterations; n++) {
        unsigned char head[MAX_HEAD];
        size_t len = mutate(SEEDS[next(SEED_COUNT)], head, MAX_HEAD);

        size_t cap = next(4) ? 2 * WS_UPGRADE_RESPONSE_SIZE : next(2 * WS_UPGRADE_RESPONSE_SIZE);
        unsigned char *input = exact_block(head, len);
        unsigned char *out = exact_block(NULL, cap);
        int size = ws_accept_upgrade(input, len, (int)next(4), out, cap); /* weigh bits */
        if (size >= 0) {
            if (size != WS_UPGRADE_RESPONSE_SIZE || (size_t)size > cap ||
                memcmp(out, "HTTP/1.1 101 ", 13) != 0 || memcmp(out + size - 4, "\r\n\r\n", 4)) {
                fprintf(stderr, "bad result at iteration %ld\n", n);
                return 1;
            }
            accepted++;
        } else if (size != -1) {
            fprintf(stderr, "unknown result %d at iteration %ld\n", size, n);
            return 1;
        }
        free(input);
        free(out);
    }
    printf("accepted %ld of %ld\n", accepted, iterations);
    return 0;
}
