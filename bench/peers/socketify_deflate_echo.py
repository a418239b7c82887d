"""socketify (uWebSockets through cffi) echo server with permessage-deflate: its shared
compressor and shared decompressor (no context kept per connection, the uWebSockets way of
keeping memory low).
"""

from __future__ import annotations

import sys

from socketify import CompressOptions
from socketify_echo import echo, serve


def main() -> int:
    shared = CompressOptions.SHARED_COMPRESSOR | CompressOptions.SHARED_DECOMPRESSOR
    return serve(__doc__.split("\n")[0], shared, message=echo)


if __name__ == "__main__":
    sys.exit(main())
