"""The reactor's timers: a heap of callbacks ordered by due time.

Times are whatever clock the reactor runs on (``Reactor._clock``); this unit
never reads a clock itself, so the loop and its timers cannot disagree.
Cancelling is O(1): a cancelled timer stays in the heap, marked, and is
dropped when it reaches the top.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, eq=False)  # eq=False: a timer is itself, as a handle to cancel
class Timer:
    """A scheduled callback; ``cancel()`` makes it a no-op."""

    when: float
    callback: Callable[..., Any]
    args: tuple
    interval: float
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Pending timers by due time. ``heap[0][0]`` is the earliest due time
    (the loop reads it inline to skip a call while nothing is due)."""

    __slots__ = ("heap", "_order")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties run in the order they were scheduled

    def __bool__(self) -> bool:
        return bool(self.heap)

    def schedule(
        self, when: float, callback: Callable[..., Any], args: tuple, interval: float = 0.0
    ) -> Timer:
        """Run ``callback(*args)`` at ``when``, then every ``interval`` if set."""
        timer = Timer(when, callback, args, interval)
        heapq.heappush(self.heap, (when, next(self._order), timer))
        return timer

    def next_due(self) -> float | None:
        """When the earliest live timer is due (cancelled ones are dropped)."""
        heap = self.heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Iterator[Timer]:
        """The live timers due at ``now``, earliest first; a repeating one is
        re-armed for ``now + interval`` before it is handed out."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                continue
            if timer.interval:
                timer.when = now + timer.interval
                heapq.heappush(heap, (timer.when, next(self._order), timer))
            yield timer
