/* RFC 6455 §5.2 frame scanner: one call per receive window.
 *
 * ws_parse_frames() walks the window buf[start, end) and, for every COMPLETE
 * masked client frame, validates the header, unmasks the payload in place and
 * writes a descriptor of WS_DESCRIPTOR_SLOTS int64 values into `out`:
 *
 *     kind   the frame's first byte (FIN bit | RSV1 bit | opcode; RSV1 only when
 *            `rsv_allowed` has it, RSV2-3 are zero)
 *     start  offset of the payload in buf
 *     end    offset one past the payload (= where the next frame starts)
 *
 * It stops at the first incomplete frame (nothing is written for it), after
 * `cap` descriptors, or at the first header violation, which is written as a
 * last descriptor (kind = -ws_frame_error, start = end = offset of the bad
 * frame). Violations are reported as soon as the bytes that prove them are in
 * the window, even if the rest of the header is not. Returns the number of
 * descriptors written. The Python scanner in ws/frames.py applies the same
 * checks in the same order; the tests hold the two to identical output.
 *
 * Safety: the caller's `end` bounds every access, lengths from the wire are
 * 64-bit and only ever compared against what is available (`avail - hlen`),
 * never added to an offset before that comparison, so nothing can overflow.
 * Non-minimal length encodings (e.g. 5 sent in the 16-bit form) are accepted,
 * as Autobahn and most servers do: they are unambiguous and harmless.
 */
#include "frames.h"
#include "unmask.h"

#define WS_MAX_CONTROL_PAYLOAD 125 /* §5.5 */
#define WS_MASK_KEY_LEN 4          /* §5.2 */

static int is_reserved_opcode(unsigned int op)
{
    return (op >= 0x3 && op <= 0x7) || op >= 0xB;
}

static uint64_t read_be(const unsigned char *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Checks applied to the first byte alone. Returns 0 or -ws_frame_error.
 * RSV bits in `rsv_allowed` belong to a negotiated extension; RSV1
 * (permessage-deflate, RFC 7692 §6) may only mark the first frame of a
 * message: never a control frame or a continuation. */
static int check_first_byte(unsigned int b0, unsigned int rsv_allowed)
{
    if (b0 & 0x70 & ~rsv_allowed)
        return -WS_ERR_RSV;
    if (is_reserved_opcode(b0 & 0x0F))
        return -WS_ERR_OPCODE;
    if ((b0 & 0x08) && !(b0 & 0x80))
        return -WS_ERR_CONTROL_FRAGMENTED;
    if ((b0 & WS_RSV1) && ((b0 & 0x08) || (b0 & 0x0F) == 0))
        return -WS_ERR_RSV1_MISPLACED;
    return 0;
}

/* Parse the header at p (avail >= 1 bytes). Returns the header length
 * (mask key included), 0 when more bytes are needed, or -ws_frame_error. */
static int parse_header(const unsigned char *p, size_t avail, uint64_t max_size,
                        unsigned int rsv_allowed, uint64_t *len)
{
    unsigned int len7;
    int err = check_first_byte(p[0], rsv_allowed), ext = 0;

    if (err || avail < 2)
        return err;
    if (!(p[1] & 0x80))
        return -WS_ERR_UNMASKED;
    len7 = p[1] & 0x7F;
    if ((p[0] & 0x08) && len7 > WS_MAX_CONTROL_PAYLOAD)
        return -WS_ERR_CONTROL_TOO_LONG;
    ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (avail < (size_t)(2 + ext))
        return 0;
    *len = ext ? read_be(p + 2, ext) : len7;
    if (*len >> 63)
        return -WS_ERR_LENGTH_MSB;
    if (!(p[0] & 0x08) && *len > max_size) /* control frames: bounded by §5.5 */
        return -WS_ERR_TOO_BIG;
    return 2 + ext + WS_MASK_KEY_LEN;
}

static void put_descriptor(int64_t *out, int64_t kind, size_t start, size_t end)
{
    out[0] = kind;
    out[1] = (int64_t)start;
    out[2] = (int64_t)end;
}

size_t ws_parse_frames(unsigned char *buf, size_t start, size_t end, uint64_t max_size,
                       unsigned int rsv_allowed, int64_t *out, size_t cap)
{
    size_t pos = start, n = 0;

    while (n < cap && pos < end) {
        size_t avail = end - pos, payload;
        uint64_t len = 0;
        int hlen = parse_header(buf + pos, avail, max_size, rsv_allowed & 0x70, &len);

        if (hlen < 0) {
            put_descriptor(out + n * WS_DESCRIPTOR_SLOTS, hlen, pos, pos);
            return n + 1;
        }
        if (hlen == 0 || (size_t)hlen > avail || len > avail - (size_t)hlen)
            break; /* incomplete frame: the caller keeps it */
        payload = pos + (size_t)hlen;
        ws_unmask(buf + payload, (size_t)len, (uint32_t)read_be(buf + payload - 4, 4), 0);
        put_descriptor(out + n * WS_DESCRIPTOR_SLOTS, buf[pos], payload, payload + (size_t)len);
        pos = payload + (size_t)len;
        n++;
    }
    return n;
}
