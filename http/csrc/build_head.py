"""cffi out-of-line API build of the HTTP request-head scanner.

Run by `pip install` through setup.py's `cffi_modules`; produces the
extension module `reactor.http._speedups` with `http_scan_head` (head.c),
the common case of http/request.py's parser in one C call, and
`http_open_beneath` (confine.c), openat2 with RESOLVE_BENEATH for
http/static.py's confinement of static files to their root.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int http_scan_head(const unsigned char *head, size_t len, size_t max_target,
                       size_t max_fields, size_t max_fields_size, int32_t *info,
                       unsigned char *pieces, size_t pieces_cap);
    #define HTTP_SCAN_OTHER ...
    int http_open_beneath(int dirfd, const char *path, int flags);
    """
)
ffibuilder.set_source(
    "reactor.http._speedups",
    '#include "head.h"\n#include "confine.h"',
    # Paths relative to the project root: setuptools runs builds from there.
    sources=["http/csrc/head.c", "http/csrc/confine.c"],
    include_dirs=["http/csrc"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
