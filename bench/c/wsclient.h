/* What the two C WebSocket clients (loadgen, c1000k_client) share: the RFC 6455 accept key, the
 * comma-list token rule for response headers, the selftest line and the end of option parsing. */
#ifndef BENCH_WSCLIENT_H
#define BENCH_WSCLIENT_H

#include <stdbool.h>
#include <stddef.h>

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)). */
void expected_accept(const char *key, char out[32]);
/* Is `token` one of the comma-separated values (RFC 9110 §5.6.1), case-insensitively? */
bool has_token(const char *value, const char *token);
/* Prints {"<key>":"selftest","<name>":true|false,...,"ok":...}; 0 when every check passed. */
int print_selftest(const char *key, const char *const names[], const bool ok[], size_t count);
/* After getopt: prints "<program>: <problem>" (or the stray argument) to stderr and returns -1,
 * or returns 0 when the options are complete and valid. */
int options_verdict(const char *program, const char *problem, int next_arg, int argc);

#endif
