"""cffi out-of-line API build of the WebSocket C module (``reactor.ws._speedups``).

Run by `pip install` through setup.py's `cffi_modules`; produces the
extension module `reactor.ws._speedups` with:

    ws_unmask / ws_unmask_range   in-place RFC 6455 §5.3 unmasking (unmask.c)
    ws_parse_frames               one-call frame scanner for a receive window (frames.c)
    ws_accept_upgrade             the usual opening handshake checked and answered (upgrade.c)

and the constants of their headers (descriptor layout, frame error numbers, response
sizes), which the Python side reads from the build instead of copying them.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    unsigned int ws_unmask(unsigned char *buf, size_t len, uint32_t key_be, unsigned int phase);
    unsigned int ws_unmask_range(unsigned char *buf, size_t start, size_t end, uint32_t key_be,
                                 unsigned int phase);
    size_t ws_parse_frames(unsigned char *buf, size_t start, size_t end, uint64_t max_size,
                           unsigned int rsv_allowed, int64_t *out, size_t cap);
    #define WS_DESCRIPTOR_SLOTS ...
    #define WS_RSV1 ...
    enum ws_frame_error {
        WS_ERR_RSV = ..., WS_ERR_OPCODE = ..., WS_ERR_CONTROL_FRAGMENTED = ...,
        WS_ERR_UNMASKED = ..., WS_ERR_CONTROL_TOO_LONG = ..., WS_ERR_LENGTH_MSB = ...,
        WS_ERR_TOO_BIG = ..., WS_ERR_RSV1_MISPLACED = ...
    };
    int ws_accept_upgrade(const unsigned char *head, size_t len, int weigh,
                          unsigned char *out, size_t cap);
    #define WS_WEIGH_PROTOCOLS ...
    #define WS_WEIGH_EXTENSIONS ...
    #define WS_UPGRADE_RESPONSE_SIZE ...
    #define WS_UPGRADE_ACCEPT_AT ...
    """
)
ffibuilder.set_source(
    "reactor.ws._speedups",
    '#include "unmask.h"\n#include "frames.h"\n#include "upgrade.h"',
    # Paths relative to the project root: setuptools runs builds from there.
    sources=["ws/csrc/unmask.c", "ws/csrc/frames.c", "ws/csrc/upgrade.c", "ws/csrc/sha1.c"],
    include_dirs=["ws/csrc"],
    # -O3 lets GCC/Clang vectorize the unmask loops; -fno-strict-aliasing is
    # not needed because every type pun goes through memcpy.
    extra_compile_args=["-O3", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
