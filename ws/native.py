"""The WebSocket C routines and the one switch between them and Python.

``reactor.ws._speedups`` is built from ws/csrc by ``pip install`` (cffi):
unmasking, the frame scanner, the usual upgrade answered in one call. This
module is the only one that imports it, so the package decides once whether
it exists (``BUILT``). ``active`` says what runs: ``"c"``, or ``"python"``
(the fallbacks, also used when the build is missing). ``use(name)`` switches
every routine of the package at once (``reactor.native.Switch``); modules
that keep direct references for speed register with ``on_switch``.
"""

from __future__ import annotations

from typing import Any

from ..native import IMPLEMENTATIONS as IMPLEMENTATIONS  # re-exported: "c", "python"
from ..native import Switch

try:
    from ._speedups import ffi, lib
except ImportError:  # no C compiler at install time: the Python fallbacks run
    ffi: Any = None
    lib: Any = None

BUILT = lib is not None
switch = Switch("reactor.ws._speedups", lambda: lib)  # lib: swappable (the fuzz harness)
use, using, on_switch = switch.use, switch.using, switch.on_switch


def __getattr__(name: str) -> Any:
    if name == "active":  # "c" or "python", as the switch says now
        return switch.active
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
