"""CPU turns (`reflection.turns`): order, bounds, giving back, and the way out."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable

import pytest

from reflection.turns import Turns

WAIT = 5.0  # the longest any step of these tests may take


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Holder(threading.Thread):
    """Takes a turn, records when, and keeps it until `leave` is set."""

    def __init__(self, turns: Turns, name: str, log: list[str], *, back: bool = False) -> None:
        super().__init__(daemon=True)
        self.turns, self.name_, self.log, self.back = turns, name, log, back
        self.leave = threading.Event()
        self.in_wait = threading.Event()
        self.answer = threading.Event()

    def run(self) -> None:
        with self.turns.hold():
            if self.back:  # a run that waits (the LLM), then queues to come back
                with self.turns.released():
                    self.in_wait.set()
                    assert self.answer.wait(WAIT)
            self.log.append(self.name_)
            assert self.leave.wait(WAIT)


def _queue(turns: Turns, *holders: Holder) -> None:
    """Start the holders one after another, each queued before the next starts."""
    for h in holders:
        before = turns.queued
        h.start()
        _until(lambda b=before: turns.queued == b + 1)  # type: ignore[misc]


def test_turns_pass_in_arrival_order() -> None:
    turns, log = Turns(1), list[str]()
    first = Holder(turns, "a", log)
    first.start()
    _until(lambda: log == ["a"])
    rest = [Holder(turns, n, log) for n in "bcd"]
    _queue(turns, *rest)
    assert log == ["a"]  # one permit: everyone else waits
    for h in [first, *rest]:
        h.leave.set()
        h.join(WAIT)
    assert log == ["a", "b", "c", "d"]
    assert (turns.free, turns.queued, turns.overflows) == (1, 0, 0)


def test_new_runs_go_ahead_of_runs_coming_back() -> None:
    turns, log = Turns(1), list[str]()
    back = Holder(turns, "back", log, back=True)
    back.start()
    assert back.in_wait.wait(WAIT)  # it had a turn and gave it back to wait
    first = Holder(turns, "first", log)
    first.start()
    _until(lambda: log == ["first"])
    back.answer.set()
    _until(lambda: turns.queued == 1)  # back from its wait
    new = Holder(turns, "new", log)
    _queue(turns, new)
    for h in (first, new, back):
        h.leave.set()
        h.join(WAIT)
    assert log == ["first", "new", "back"]


def test_at_most_permits_hold_at_once() -> None:
    turns, active, peak = Turns(2), [0], [0]
    guard = threading.Lock()

    def run() -> None:
        for _ in range(30):
            with turns.hold():
                with guard:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                time.sleep(random.uniform(0, 0.001))
                with guard:
                    active[0] -= 1
                with turns.released():
                    time.sleep(random.uniform(0, 0.001))

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == 2
    assert (turns.free, turns.queued, turns.overflows) == (2, 0, 0)


def test_a_run_that_waits_lets_another_in() -> None:
    turns, log = Turns(1), list[str]()
    in_wait, answer = threading.Event(), threading.Event()

    def waiting() -> None:
        with turns.hold():
            with turns.released():  # the LLM: the turn is free meanwhile
                in_wait.set()
                assert answer.wait(WAIT)
            log.append("waiting")

    w = threading.Thread(target=waiting)
    w.start()
    assert in_wait.wait(WAIT)
    other = Holder(turns, "other", log)
    other.start()
    _until(lambda: log == ["other"])  # got in while `waiting` waited
    answer.set()
    _until(lambda: turns.queued == 1)  # back from the wait, it queues
    other.leave.set()
    other.join(WAIT)
    w.join(WAIT)
    assert log == ["other", "waiting"]
    assert turns.free == 1


def test_an_exception_gives_the_turn_back() -> None:
    turns = Turns(1)
    with pytest.raises(RuntimeError), turns.hold():
        raise RuntimeError("boom")
    assert turns.free == 1
    with turns.hold():
        assert turns.free == 0


def test_off_and_outside_a_turn_nothing_waits() -> None:
    off = Turns(0)
    with off.hold(), off.hold(), off.released():
        assert off.free == 0 and off.queued == 0
    turns = Turns(1)
    with turns.released():  # not holding: a no-op
        assert turns.free == 1
    with turns.hold(), turns.hold():  # nested: still one turn
        assert turns.free == 0
    assert turns.free == 1
    with pytest.raises(ValueError):
        Turns(-1)


def test_a_stuck_holder_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_wait a run goes on without a turn, and gives back none it never had; the
    first such wait is logged, the next ones within a minute are only counted."""
    turns, log = Turns(1, max_wait=0.05), list[str]()
    stuck = Holder(turns, "stuck", log)
    stuck.start()
    _until(lambda: log == ["stuck"])
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="reflection.turns"):
        with turns.hold():
            assert time.monotonic() - t >= 0.05
            assert turns.overflows == 1
            assert turns.waited_ms() >= 50
        with turns.hold():
            assert turns.overflows == 2
    [warning] = caplog.records
    assert "went on without one (1 so far" in warning.getMessage()
    assert turns.free == 0  # still the stuck holder's
    stuck.leave.set()
    stuck.join(WAIT)
    assert (turns.free, turns.queued) == (1, 0)


def test_give_up_racing_a_hand_over_loses_no_turn() -> None:
    """Waits that run out while turns are being handed over leave the count exact."""
    turns = Turns(2, max_wait=0.0005)

    def run() -> None:
        for _ in range(200):
            with turns.hold():
                time.sleep(random.uniform(0, 0.0005))
                with turns.released():
                    pass

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert turns.overflows > 0
    assert (turns.free, turns.queued) == (2, 0)


def test_waited_counts_the_queueing_of_this_run_only() -> None:
    turns, log = Turns(1), list[str]()
    with turns.hold():
        assert turns.waited_ms() == 0
    blocker = Holder(turns, "blocker", log)
    blocker.start()
    _until(lambda: log == ["blocker"])
    threading.Timer(0.05, blocker.leave.set).start()
    with turns.hold():
        assert turns.waited_ms() >= 40
    with turns.hold():  # a new run starts from zero
        assert turns.waited_ms() < 40
    blocker.join(WAIT)


def test_an_exception_while_queued_leaves_no_ticket_behind() -> None:
    """A signal's exception during the wait (prefork's soft time limit arrives so) takes
    the run out of the line; the turn is not handed to a run that is gone."""
    turns, log = Turns(1), list[str]()
    holder = Holder(turns, "holder", log)
    holder.start()
    _until(lambda: log == ["holder"])

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("soft time limit")

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(TimeoutError), turns.hold():
            pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert turns.queued == 0
    holder.leave.set()
    holder.join(WAIT)
    assert (turns.free, turns.overflows) == (1, 0)
    with turns.hold():  # and this thread can take turns again
        assert turns.free == 0
