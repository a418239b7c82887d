/* SHA-1 (FIPS 180-4) and base64 (RFC 4648 §4): just enough for the RFC 6455 §4.2.2
 * Sec-WebSocket-Accept, for the server's upgrade fast path (upgrade.c) and the benchmark's C
 * tools (bench/c), which need no OpenSSL this way. Not for security. */
#ifndef WS_SHA1_H
#define WS_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_DIGEST_SIZE 20

/* One-shot digest of `len` bytes. */
void ws_sha1(const void *data, size_t len, uint8_t digest[SHA1_DIGEST_SIZE]);

/* Writes 4 * ceil(len / 3) characters plus a NUL to `out`; returns the length without the NUL. */
size_t ws_base64_encode(const uint8_t *in, size_t len, char *out);

#endif
