"""cffi out-of-line API build of the reactor's socket helper.

Run by `pip install` through setup.py's `cffi_modules`; produces the
extension module `reactor._io` with `rx_send_more` (io.c). Without it the
reactor writes with os.write and behaves the same, one packet more per
closing connection.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("ssize_t rx_send_more(int fd, const unsigned char *data, size_t len);")
ffibuilder.set_source(
    "reactor._io",
    '#include "io.h"',
    # Paths relative to the project root: setuptools runs builds from there.
    sources=["reactor/csrc/io.c"],
    include_dirs=["reactor/csrc"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
