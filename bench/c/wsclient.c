/* Shared by bench/c/loadgen.c and bench/c/c1000k_client.c: see wsclient.h. */
#include "wsclient.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sha1.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

void expected_accept(const char *key, char out[32])
{
    char joined[64];
    uint8_t digest[SHA1_DIGEST_SIZE];
    int len = snprintf(joined, sizeof joined, "%s%s", key, WS_GUID);
    ws_sha1(joined, (size_t)len, digest);
    ws_base64_encode(digest, SHA1_DIGEST_SIZE, out);
}

bool has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = value; *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ","), trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (trimmed == tlen && strncasecmp(p, token, tlen) == 0)
            return true;
        p += len;
    }
    return false;
}

int print_selftest(const char *key, const char *const names[], const bool ok[], size_t count)
{
    bool all = true;
    printf("{\"%s\":\"selftest\"", key);
    for (size_t i = 0; i < count; i++) {
        printf(",\"%s\":%s", names[i], ok[i] ? "true" : "false");
        all &= ok[i];
    }
    printf(",\"ok\":%s}\n", all ? "true" : "false");
    return all ? 0 : 1;
}

int options_verdict(const char *program, const char *problem, int next_arg, int argc)
{
    if (!problem && next_arg == argc)
        return 0;
    fprintf(stderr, "%s: %s\n", program, problem ? problem : "unexpected argument");
    return -1;
}
