"""reactor: an epoll reactor serving HTTP static files and WebSocket (RFC 6455).

`reactor.ws` and `reactor.http` live in the repository's top-level `ws/` and
`http/` folders and are mapped into this package at install time. When this
source folder is imported directly (the repository root on sys.path) after a
non-editable install, extend_path adds the installed copy of the package to
__path__ so those subpackages (and the compiled cffi module) are still found.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
