/* See upgrade.h. The fields are read the way the HTTP parser reads them (name up to the
 * colon, value without surrounding SP/HTAB); anything a parser could read differently
 * (bare LF, obs-fold, a field twice) is declined rather than interpreted. */
#include "upgrade.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sha1.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define KEY_LENGTH 24 /* base64 of 16 bytes: 22 characters and "==" */

static const char RESPONSE_HEAD[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                    "Upgrade: websocket\r\n"
                                    "Connection: Upgrade\r\n"
                                    "Sec-WebSocket-Accept: ";

static bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* ASCII case-insensitive equality with a lowercase literal. */
static bool same(const unsigned char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

/* RFC 9110 §5.6.1: a comma list, elements trimmed of OWS, holds `token` (lowercase). */
static bool lists(const unsigned char *v, size_t len, const char *token)
{
    size_t start = 0;
    while (start <= len) {
        size_t stop = start;
        while (stop < len && v[stop] != ',')
            stop++;
        size_t a = start, b = stop;
        while (a < b && is_ows(v[a]))
            a++;
        while (b > a && is_ows(v[b - 1]))
            b--;
        if (same(v + a, b - a, token))
            return true;
        start = stop + 1;
    }
    return false;
}

static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* 22 base64 characters then "==", the last character's 4 unused bits zero (canonical). */
static bool canonical_key(const unsigned char *k, size_t len)
{
    if (len != KEY_LENGTH || k[22] != '=' || k[23] != '=')
        return false;
    for (int i = 0; i < 22; i++)
        if (base64_value(k[i]) < 0)
            return false;
    return (base64_value(k[21]) & 0x0F) == 0;
}

enum field {
    F_OTHER,
    F_HOST,
    F_UPGRADE,
    F_CONNECTION,
    F_KEY,
    F_VERSION,
    F_PROTOCOL,
    F_EXTENSIONS,
    F_COUNT
};

static const char *const FIELD_NAMES[F_COUNT] = {
    [F_HOST] = "host",
    [F_UPGRADE] = "upgrade",
    [F_CONNECTION] = "connection",
    [F_KEY] = "sec-websocket-key",
    [F_VERSION] = "sec-websocket-version",
    [F_PROTOCOL] = "sec-websocket-protocol",
    [F_EXTENSIONS] = "sec-websocket-extensions",
};

static enum field classify(const unsigned char *name, size_t len)
{
    for (int f = F_HOST; f < F_COUNT; f++)
        if (same(name, len, FIELD_NAMES[f]))
            return (enum field)f;
    return F_OTHER;
}

int ws_accept_upgrade(const unsigned char *head, size_t len, int weigh, unsigned char *out,
                      size_t cap)
{
    if (cap < WS_UPGRADE_RESPONSE_SIZE)
        return -1;
    const unsigned char *end = head + len;
    const unsigned char *p = memchr(head, '\n', len); /* past the request line */
    if (p == NULL)
        return -1;
    p++;
    int seen[F_COUNT] = {0};
    bool ok[F_COUNT] = {false};
    const unsigned char *key = NULL;
    for (;;) {
        const unsigned char *eol = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (eol == NULL || eol == p || eol[-1] != '\r')
            return -1; /* no blank line, or a bare LF */
        size_t line = (size_t)(eol - p) - 1;
        if (line == 0)
            break; /* the blank line: the head is complete */
        if (is_ows(p[0]))
            return -1; /* obs-fold */
        const unsigned char *colon = memchr(p, ':', line);
        if (colon == NULL)
            return -1;
        const unsigned char *v = colon + 1, *v_end = p + line;
        while (v < v_end && is_ows(*v))
            v++;
        while (v_end > v && is_ows(v_end[-1]))
            v_end--;
        size_t v_len = (size_t)(v_end - v);
        enum field f = classify(p, (size_t)(colon - p));
        seen[f]++;
        switch (f) {
        case F_HOST:
            ok[f] = v_len > 0;
            break;
        case F_UPGRADE:
            ok[f] = same(v, v_len, "websocket");
            break;
        case F_CONNECTION:
            ok[f] = lists(v, v_len, "upgrade");
            break;
        case F_KEY:
            ok[f] = canonical_key(v, v_len);
            key = v;
            break;
        case F_VERSION:
            ok[f] = v_len == 2 && v[0] == '1' && v[1] == '3';
            break;
        case F_PROTOCOL:
            if (weigh & WS_WEIGH_PROTOCOLS)
                return -1; /* choosing among the offered ones is the full check's job */
            break;
        case F_EXTENSIONS:
            if (weigh & WS_WEIGH_EXTENSIONS)
                return -1; /* so is negotiating an extension */
            break;
        default:
            break;
        }
        p = eol + 1;
    }
    for (int f = F_HOST; f <= F_VERSION; f++)
        if (seen[f] != 1 || !ok[f])
            return -1;

    unsigned char keyed[KEY_LENGTH + sizeof WS_GUID - 1];
    memcpy(keyed, key, KEY_LENGTH);
    memcpy(keyed + KEY_LENGTH, WS_GUID, sizeof WS_GUID - 1);
    uint8_t digest[SHA1_DIGEST_SIZE];
    ws_sha1(keyed, sizeof keyed, digest);
    char accept[32];
    ws_base64_encode(digest, SHA1_DIGEST_SIZE, accept); /* 28 characters */
    memcpy(out, RESPONSE_HEAD, sizeof RESPONSE_HEAD - 1);
    memcpy(out + WS_UPGRADE_ACCEPT_AT, accept, 28);
    memcpy(out + WS_UPGRADE_ACCEPT_AT + 28, "\r\n\r\n", 4);
    return WS_UPGRADE_RESPONSE_SIZE;
}
