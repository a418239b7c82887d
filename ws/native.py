"""The WebSocket C routines and the one switch between them and Python.

``reactor.ws._speedups`` is built from ws/csrc by ``pip install`` (cffi):
unmasking, the frame scanner, the usual upgrade answered in one call. This
module is the only one that imports it, so the package decides once whether
it exists (``BUILT``). ``active`` says what runs: ``"c"``, or ``"python"``
(the fallbacks, also used when the build is missing). ``use(name)`` switches
every routine of the package at once: modules that keep direct references
for speed register a rebind callback with ``on_switch``. Tests and benchmarks
switch through ``use``/``using`` only, never through a module's private names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

try:
    from ._speedups import ffi, lib
except ImportError:  # no C compiler at install time: the Python fallbacks run
    ffi: Any = None
    lib: Any = None

IMPLEMENTATIONS = ("c", "python")
BUILT = lib is not None
active = "c" if BUILT else "python"
_rebinders: list[Callable[[str], None]] = []


def on_switch(rebind: Callable[[str], None]) -> None:
    """Call ``rebind(active)`` now and after every switch."""
    _rebinders.append(rebind)
    rebind(active)


def use(name: str) -> None:
    """Run every WebSocket routine in C (``"c"``) or in Python (``"python"``)."""
    global active
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}: expected one of {IMPLEMENTATIONS}")
    if name == "c" and lib is None:
        raise RuntimeError("reactor.ws._speedups is not built (reinstall with a C compiler)")
    active = name
    for rebind in _rebinders:
        rebind(name)


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """``use(name)`` for a block, then back to what ran before."""
    previous = active
    use(name)
    try:
        yield
    finally:
        use(previous)
