/* Memory-safety check of http/csrc/head.c under AddressSanitizer and UBSan
 * (tests/test_fuzz.py compiles and runs it; no Python in the loop).
 *
 * Usage: head_sanitized ITERATIONS. Each iteration takes one of the seed heads,
 * applies 0-4 random byte edits (replace, insert, delete), cuts it at a random
 * length half of the time, copies it into a heap block of EXACTLY that size
 * (so a read one byte past `len` is a heap-buffer-overflow) and scans it into
 * an output block of a random capacity, small ones included. An accepted head
 * must report no more bytes than the output holds and end its pieces with a
 * separator; its piece count is odd (the target, then a name and a value per
 * field). Prints "accepted A of N"; any violation exits 1, a sanitizer
 * report aborts. The PRNG is fixed, so a failure reproduces. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "head.h"
#include "mutate.h"

static const char *const SEEDS[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /index.html?x=1 HTTP/1.1\r\nHost: localhost:9501\r\nUser-Agent: Mozilla/5.0\r\n"
    "Accept: */*\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "HEAD /a HTTP/1.0\nhost: [::1]:80\nX-Empty:\nX: \t a \t\n\n",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
};
#define SEED_COUNT (sizeof(SEEDS) / sizeof(SEEDS[0]))
#define MAX_HEAD 1024

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 100000, accepted = 0;

    for (long n = 0; n < iterations; n++) {
        unsigned char head[MAX_HEAD];
        size_t len = mutate(SEEDS[next(SEED_COUNT)], head, MAX_HEAD);
        int32_t info[2];

        size_t cap = next(4) ? 2 * MAX_HEAD : next(48);
        unsigned char *input = exact_block(head, len);
        unsigned char *pieces = exact_block(NULL, cap);
        int size = http_scan_head(input, len, 8192, 100, 16384, info, pieces, cap);
        if (size >= 0) {
            size_t separators = 0;

            if ((size_t)size > cap || size == 0 || pieces[size - 1] != HTTP_SCAN_SEPARATOR ||
                info[0] < 0 || info[0] > 1 || info[1] < 0 || info[1] > 1) {
                fprintf(stderr, "bad result at iteration %ld\n", n);
                return 1;
            }
            for (int k = 0; k < size; k++)
                separators += pieces[k] == HTTP_SCAN_SEPARATOR;
            if (separators % 2 == 0) {
                fprintf(stderr, "even piece count at iteration %ld\n", n);
                return 1;
            }
            accepted++;
        } else if (size != HTTP_SCAN_OTHER) {
            fprintf(stderr, "unknown result %d at iteration %ld\n", size, n);
            return 1;
        }
        free(input);
        free(pieces);
    }
    printf("accepted %ld of %ld\n", accepted, iterations);
    return 0;
}
