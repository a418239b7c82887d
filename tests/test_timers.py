"""The timer heap (reactor/timers.py) and the reactor's use of its own clock for it."""

from __future__ import annotations

from reactor.loop import Reactor
from reactor.timers import Timers


def test_due_timers_come_out_in_time_order_ties_in_schedule_order():
    timers, fired = Timers(), []
    for name, when in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("late", 9.0)]:
        timers.schedule(when, fired.append, (name,))
    for timer in timers.pop_due(3.0):
        timer.callback(*timer.args)
    assert fired == ["a", "b1", "b2", "c"]
    assert timers.next_due() == 9.0


def test_cancelled_timers_never_come_out_and_leave_the_top():
    timers = Timers()
    first = timers.schedule(1.0, print, ())
    timers.schedule(5.0, print, ())
    first.cancel()
    assert timers.next_due() == 5.0  # the cancelled head was dropped
    assert list(timers.pop_due(4.0)) == []


def test_a_repeating_timer_is_rearmed_from_when_it_ran():
    timers = Timers()
    every = timers.schedule(1.0, print, (), interval=2.0)
    assert list(timers.pop_due(1.5)) == [every]
    assert timers.next_due() == 3.5
    every.cancel()
    assert timers.next_due() is None and not timers


def test_the_reactor_schedules_and_waits_on_its_own_clock():
    reactor = Reactor()
    try:
        now = [1000.0]
        reactor._clock = lambda: now[0]
        reactor._update_clock()
        fired = []
        reactor.call_later(0.25, fired.append, "once")
        assert reactor._poll_timeout() == 0.25  # measured on the same clock
        now[0] += 0.3
        reactor.run_once(0)
        assert fired == ["once"]
        assert reactor._poll_timeout() == 1.0  # nothing pending: wake once a second
    finally:
        reactor.dispose()
