"""The switch between a package's C routines and their Python fallbacks.

Each package that has a cffi module (``reactor._io``, ``reactor.http._speedups``,
``reactor.ws._speedups``) decides once at import whether it was built, and
keeps one ``Switch``: ``active`` is ``"c"`` or ``"python"``, ``use(name)``
changes it, and every module of the package that keeps a direct reference
to a routine (for speed) registers a rebind callback with ``on_switch``.
Tests and benchmarks switch through it, never through private names.

A leaf (standard library only), so the protocol layers may import it
(``tests/test_layout.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

IMPLEMENTATIONS = ("c", "python")


class Switch:
    """Which implementation one package runs; see the module docstring."""

    def __init__(self, module_name: str, compiled: Callable[[], Any]) -> None:
        self.module_name = module_name  # named in errors
        self._compiled = compiled  # the built module's lib, or None (read at each switch)
        self.active = "c" if compiled() is not None else "python"
        self._rebinders: list[Callable[[str], None]] = []

    def on_switch(self, rebind: Callable[[str], None]) -> None:
        """Call ``rebind(active)`` now and after every switch."""
        self._rebinders.append(rebind)
        rebind(self.active)

    def bind(self, namespace: dict[str, Any], name: str, routine: str) -> None:
        """Keep ``namespace[name]`` (a module global that a hot path calls
        directly) on the C routine ``routine`` while C runs, None otherwise."""

        def rebind(implementation: str) -> None:
            compiled = self._compiled()
            namespace[name] = getattr(compiled, routine) if implementation == "c" else None

        self.on_switch(rebind)

    def use(self, name: str) -> None:
        """Run the package's routines in C (``"c"``) or in Python (``"python"``)."""
        if name not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {name!r}: expected one of {IMPLEMENTATIONS}")
        if name == "c" and self._compiled() is None:
            raise RuntimeError(f"{self.module_name} is not built (reinstall with a C compiler)")
        self.active = name
        for rebind in self._rebinders:
            rebind(name)

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """``use(name)`` for a block, then back to what ran before."""
        previous = self.active
        self.use(name)
        try:
            yield
        finally:
            self.use(previous)
