"""cffi out-of-line API build of the WebSocket hot-path C routines.

Run by `pip install` through setup.py's `cffi_modules`; produces the
extension module `reactor.ws._speedups`.
"""
from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    "unsigned int ws_unmask(unsigned char *buf, size_t len, uint32_t key_be, unsigned int phase);"
)
ffibuilder.set_source(
    "reactor.ws._speedups",
    '#include "unmask.h"',
    # Paths relative to the project root: setuptools runs builds from there.
    sources=["ws/csrc/unmask.c"],
    include_dirs=["ws/csrc"],
    extra_compile_args=["-O3"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
