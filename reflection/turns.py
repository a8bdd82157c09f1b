"""Turns at the CPU for the runs of one worker process, first come, first served.

A threads-pool worker keeps 50 runs waiting on the LLM. Left to the GIL, the runs that
come back together share the core until they all finish together and leave for the LLM
together again: the waves never spread and each lasts L plus the CPU of the whole wave
(README, Performance). With turns, at most `permits` runs do their non-LLM work at once
and the others queue in order; each run gives its turn back while it waits (the LLM, a
busy user lock), so the runs finish one after another, the next ones start as slots free
up, and the process settles into a steady stream. Two permits let one run's fsyncs and
round trips overlap another's CPU.

A new run goes ahead of runs coming back from a wait: its first stages are short and
lead to the LLM wait, where a run costs nothing. It cannot starve them: a new run only
starts when a finished one frees its slot.

A turn is a scheduling aid, never a lock: a run that waits longer than `max_wait` for
one (a holder stuck in a slow statement, an overloaded process) goes on without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

MAX_WAIT_SECONDS = 1.0
WARN_EVERY_SECONDS = 60.0

log = logging.getLogger(__name__)


class _Thread(threading.local):
    """One thread's standing: inside a `hold()`, holding a turn, seconds queued."""

    inside = False
    held = False
    waited = 0.0


class Turns:
    """`permits` turns shared by the threads of one process; `permits=0` turns them off."""

    def __init__(self, permits: int, *, max_wait: float = MAX_WAIT_SECONDS) -> None:
        if permits < 0:
            raise ValueError("permits must be >= 0")
        self.permits = permits
        self.max_wait = max_wait
        self.overflows = 0  # waits that ran out and went on without a turn
        self._warned_at = -WARN_EVERY_SECONDS
        self._free = permits
        self._mutex = threading.Lock()
        # Each waiter blocks on a lock of its own, which the releaser hands over: the
        # turn goes to exactly the next in line, in order.
        self._new: deque[threading.Lock] = deque()
        self._back: deque[threading.Lock] = deque()
        self._local = _Thread()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a turn for the block, as a new run (ahead of runs coming back)."""
        if not self.permits or self._local.inside:
            yield
            return
        self._local.inside, self._local.waited = True, 0.0
        try:
            self._take(new=True)
            yield
        finally:
            self._give()
            self._local.inside = False

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give this thread's turn back while the block waits; queue for one again after.
        A no-op outside `hold()`."""
        if not self._local.inside:
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take(new=False)

    @property
    def free(self) -> int:
        """Turns nobody holds."""
        return self._free

    @property
    def queued(self) -> int:
        """Runs waiting for a turn."""
        return len(self._new) + len(self._back)

    def waited_ms(self) -> int:
        """Milliseconds this thread has queued for turns since its last `hold()`."""
        return int(self._local.waited * 1000)

    def _take(self, *, new: bool) -> None:
        t = time.monotonic()
        self._local.held = self._acquire(self._new if new else self._back)
        self._local.waited += time.monotonic() - t

    def _acquire(self, line: deque[threading.Lock]) -> bool:
        with self._mutex:
            if self._free and not self._new and not self._back:
                self._free -= 1
                return True
            ticket = threading.Lock()
            ticket.acquire()
            line.append(ticket)
        try:
            if ticket.acquire(timeout=self.max_wait):
                return True
        except BaseException:  # a signal's exception (prefork's soft time limit)
            with self._mutex:
                if not self._withdraw(line, ticket):
                    self._pass_on()  # it was ours already: the next in line gets it
            raise
        with self._mutex:
            if not self._withdraw(line, ticket):
                return True  # handed over just as the wait ran out: the turn is ours
            self.overflows += 1
            now = time.monotonic()
            warn = now - self._warned_at >= WARN_EVERY_SECONDS
            if warn:
                self._warned_at = now
        if warn:
            log.warning(
                "a run waited %.1f s for a CPU turn and went on without one (%d so far in "
                "this process): its core is the limit, or runs hold their turns in slow "
                "statements; see the runbook, Slow runs",
                self.max_wait,
                self.overflows,
            )
        return False

    @staticmethod
    def _withdraw(line: deque[threading.Lock], ticket: threading.Lock) -> bool:
        """Take a ticket out of its line; False if it was handed a turn meanwhile."""
        try:
            line.remove(ticket)
        except ValueError:
            return False
        return True

    def _give(self) -> None:
        if not self._local.held:
            return  # went on without a turn: there is none to give back
        self._local.held = False
        with self._mutex:
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand a turn to the next in line, or free it (under the mutex)."""
        line = self._new or self._back
        if line:
            line.popleft().release()  # the turn passes on; _free is unchanged
        else:
            self._free += 1
