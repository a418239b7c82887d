/* SHA-1 (FIPS 180-4) and base64 (RFC 4648 §4): just enough for the RFC 6455 §4.2.2
 * Sec-WebSocket-Accept check, so the load generator needs no OpenSSL. Not for security. */
#ifndef BENCH_SHA1_H
#define BENCH_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_DIGEST_SIZE 20

/* One-shot digest of `len` bytes. */
void sha1(const void *data, size_t len, uint8_t digest[SHA1_DIGEST_SIZE]);

/* Writes 4 * ceil(len / 3) characters plus a NUL to `out`; returns the length without the NUL. */
size_t base64_encode(const uint8_t *in, size_t len, char *out);

#endif
