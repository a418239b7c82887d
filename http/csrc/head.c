/* HTTP/1.1 request-head scanner: the common case in one C call.
 *
 * http_scan_head() looks at one complete head, head[0, len) = the request
 * line, the field lines and the empty line that ends them (the caller found
 * that end). When the head is the common case it sets
 *
 *     info[0]  0 for GET, 1 for HEAD
 *     info[1]  the minor version of HTTP/1.x (0 or 1)
 *
 * writes into `pieces` the request target, then each field's name (in lower
 * case) and value (without surrounding spaces and tabs), every piece followed
 * by one NUL, and returns the number of bytes written. The caller turns that
 * into strings with ONE decode and ONE split, instead of two slices and a
 * lower() per field. For anything else it returns HTTP_SCAN_OTHER.
 *
 * "Common case" is, exactly, what the Python fast path of http/request.py
 * (_build_request) accepts without calling _check_semantics: GET or HEAD,
 * an origin-form target of visible ASCII, HTTP/1.0 or 1.1; every field line
 * a token, ":", and a value of visible characters (obs-text 0x80-0xFF
 * included) and inner blanks; CRLF or bare LF line ends; at most max_fields
 * fields in at most max_fields_size bytes; exactly one Host field whose value
 * is made of RFC 3986 host characters; and no "content-length" or
 * "transfer-encoding" anywhere in the fields, compared case-insensitively
 * (the Python path checks the framing of such heads). Everything else -
 * errors included - goes to the Python parser, which therefore stays the one
 * authority on what is accepted and how a bad head is answered. The tests
 * hold the two to identical results.
 *
 * Safety: every read is bounded by `len`, every write by `pieces_cap`.
 */
#include <limits.h>
#include <string.h>

#include "head.h"

/* RFC 9110 §5.6.2 tchar. */
static const unsigned char TCHAR[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/* RFC 3986 §3.2.2 host and port characters (http/request.py _HOST_CHARS). */
static const unsigned char HOSTCHAR[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1, ['&'] = 1,
    ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1, [';'] = 1,
    ['='] = 1, ['%'] = 1, [':'] = 1, ['['] = 1, [']'] = 1,
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Whether the lowercase ASCII `needle` occurs in p[0, n), ignoring ASCII case
 * (the only case folding of latin-1 text that can produce an ASCII letter). */
static int contains_ci(const unsigned char *p, size_t n, const char *needle)
{
    size_t m = strlen(needle);

    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;

        while (j < m && lower(p[i + j]) == (unsigned char)needle[j])
            j++;
        if (j == m)
            return 1;
    }
    return 0;
}

/* Bounded output: each append reports whether the piece fit. */
struct pieces {
    unsigned char *p;
    size_t used, cap;
};

static int append(struct pieces *out, const unsigned char *src, size_t n, int to_lower)
{
    if (n >= out->cap - out->used) /* room for the piece and its separator */
        return 0;
    if (to_lower) {
        for (size_t k = 0; k < n; k++)
            out->p[out->used + k] = lower(src[k]);
    } else {
        memcpy(out->p + out->used, src, n);
    }
    out->used += n;
    out->p[out->used++] = HTTP_SCAN_SEPARATOR;
    return 1;
}

/* The request line; returns the offset just past its LF, or 0. */
static size_t scan_request_line(const unsigned char *p, size_t len, size_t max_target,
                                int32_t *info, struct pieces *out)
{
    size_t i, target;

    if (len >= 4 && memcmp(p, "GET ", 4) == 0) {
        info[0] = 0;
        i = 4;
    } else if (len >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        info[0] = 1;
        i = 5;
    } else {
        return 0;
    }
    target = i;
    if (i >= len || p[i] != '/')
        return 0;
    while (i < len && p[i] >= 0x21 && p[i] <= 0x7E)
        i++;
    if (i - target > max_target || !append(out, p + target, i - target, 0))
        return 0;
    if (len - i < 10 || memcmp(p + i, " HTTP/1.", 8) != 0)
        return 0;
    i += 8; /* len - i >= 2 still */
    if (p[i] != '0' && p[i] != '1')
        return 0;
    info[1] = p[i] - '0';
    i++;
    if (p[i] == '\r')
        i++;
    if (i >= len || p[i] != '\n')
        return 0;
    return i + 1;
}

int http_scan_head(const unsigned char *p, size_t len, size_t max_target, size_t max_fields,
                   size_t max_fields_size, int32_t *info, unsigned char *pieces,
                   size_t pieces_cap)
{
    struct pieces out = {pieces, 0, pieces_cap};
    size_t i, fields, count = 0, hosts = 0;

    i = fields = scan_request_line(p, len, max_target, info, &out);
    if (fields == 0 || len - fields > max_fields_size)
        return HTTP_SCAN_OTHER;
    if (contains_ci(p + fields, len - fields, "content-length") ||
        contains_ci(p + fields, len - fields, "transfer-encoding"))
        return HTTP_SCAN_OTHER;
    for (;;) {
        size_t name, name_end, value, value_end;

        if (i < len && p[i] == '\n') { /* the empty line, bare LF */
            i++;
            break;
        }
        if (i + 1 < len && p[i] == '\r' && p[i + 1] == '\n') {
            i += 2;
            break;
        }
        name = i;
        while (i < len && TCHAR[p[i]])
            i++;
        if (i == name || i >= len || p[i] != ':')
            return HTTP_SCAN_OTHER; /* obs-fold, a bad name, a missing colon... */
        name_end = i++;
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        value = value_end = i;
        while (i < len) {
            if (p[i] > 0x20 && p[i] != 0x7F)
                value_end = ++i;
            else if (p[i] == ' ' || p[i] == '\t')
                i++;
            else
                break;
        }
        if (i < len && p[i] == '\r')
            i++;
        if (i >= len || p[i] != '\n')
            return HTTP_SCAN_OTHER; /* a control character, a bare CR */
        i++;
        if (++count > max_fields)
            return HTTP_SCAN_OTHER;
        if (name_end - name == 4 && lower(p[name]) == 'h' && lower(p[name + 1]) == 'o' &&
            lower(p[name + 2]) == 's' && lower(p[name + 3]) == 't') {
            for (size_t k = value; k < value_end; k++)
                if (!HOSTCHAR[p[k]])
                    return HTTP_SCAN_OTHER;
            hosts++;
        }
        if (!append(&out, p + name, name_end - name, 1) ||
            !append(&out, p + value, value_end - value, 0))
            return HTTP_SCAN_OTHER;
    }
    if (i != len || hosts != 1 || out.used > INT_MAX)
        return HTTP_SCAN_OTHER;
    return (int)out.used;
}
