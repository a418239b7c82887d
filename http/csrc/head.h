/* HTTP/1.1 request-head scanner for the common case (see head.c). */
#ifndef REACTOR_HTTP_HEAD_H
#define REACTOR_HTTP_HEAD_H
#include <stddef.h>
#include <stdint.h>

/* Returned when the head is not the common case: the caller parses it in
 * Python, which accepts exactly what it accepts without this scanner. */
#define HTTP_SCAN_OTHER (-1)
/* The pieces are written NUL-separated: NUL cannot occur in an accepted head. */
#define HTTP_SCAN_SEPARATOR '\0'

int http_scan_head(const unsigned char *head, size_t len, size_t max_target,
                   size_t max_fields, size_t max_fields_size, int32_t *info,
                   unsigned char *pieces, size_t pieces_cap);
#endif
