/* The usual RFC 6455 opening handshake (§4.2.1), checked and answered in one call. */
#ifndef WS_UPGRADE_H
#define WS_UPGRADE_H

#include <stddef.h>

/* "HTTP/1.1 101 Switching Protocols" ... "Sec-WebSocket-Accept: <28>\r\n\r\n" */
#define WS_UPGRADE_RESPONSE_SIZE 129
/* Where the 28 characters of the accept key start in that response. */
#define WS_UPGRADE_ACCEPT_AT 97

/* Offers the caller must weigh itself (bits of `weigh`): subprotocols are configured, an
 * extension (permessage-deflate) is enabled. */
#define WS_WEIGH_PROTOCOLS 1
#define WS_WEIGH_EXTENSIONS 2

/* `head` is a request head the HTTP parser accepted (request line, fields, blank line) of a
 * GET over HTTP/1.1. When its fields are the usual upgrade (each of Host, Upgrade: websocket,
 * Connection listing "upgrade", a canonical 16-byte Sec-WebSocket-Key and
 * Sec-WebSocket-Version: 13 exactly once; CRLF lines; no Sec-WebSocket-Protocol when `weigh`
 * has WS_WEIGH_PROTOCOLS, no Sec-WebSocket-Extensions when it has WS_WEIGH_EXTENSIONS), writes the 101 response to `out` and returns its size. Otherwise
 * returns -1 and the caller's full check decides, with every error answer: this only accepts,
 * and only what that check accepts with the same response. */
int ws_accept_upgrade(const unsigned char *head, size_t len, int weigh, unsigned char *out,
                      size_t cap);

#endif
