/* RFC 6455 §5.2 frame scanner for the receive hot path (see frames.c). */
#ifndef REACTOR_WS_FRAMES_H
#define REACTOR_WS_FRAMES_H
#include <stddef.h>
#include <stdint.h>

/* Header violations, reported as a negative descriptor kind. The numbers are
 * shared with ws/frames.py (HEADER_ERRORS), which maps them to close codes. */
enum ws_frame_error {
    WS_ERR_RSV = 1,                /* §5.2: an RSV bit set that no extension negotiated */
    WS_ERR_OPCODE = 2,             /* §5.2: reserved opcode 0x3-0x7, 0xB-0xF */
    WS_ERR_CONTROL_FRAGMENTED = 3, /* §5.5: control frame without FIN */
    WS_ERR_UNMASKED = 4,           /* §5.1: client frames must be masked */
    WS_ERR_CONTROL_TOO_LONG = 5,   /* §5.5: control payload over 125 bytes */
    WS_ERR_LENGTH_MSB = 6,         /* §5.2: 64-bit length with the top bit set */
    WS_ERR_TOO_BIG = 7,            /* data frame length over the caller's max_size */
    WS_ERR_RSV1_MISPLACED = 8      /* RFC 7692 §6: RSV1 on a control or continuation frame */
};

/* RSV1: the permessage-deflate "compressed message" bit (RFC 7692 §6). */
#define WS_RSV1 0x40

/* Number of int64 slots one descriptor takes in `out`. */
#define WS_DESCRIPTOR_SLOTS 3

size_t ws_parse_frames(unsigned char *buf, size_t start, size_t end, uint64_t max_size,
                       unsigned int rsv_allowed, int64_t *out, size_t cap);
#endif
