"""Plant special files, and detect a call that blocks in the kernel (an open of a FIFO
waits for a writer forever) without hanging the test suite: the call runs in a thread,
and a join timeout is the failure detector, not a speed assertion."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Far above anything the calls take even on a loaded machine: reaching it means blocked.
HANG_SECONDS = 60.0


def release(fifos: Iterable[Path]) -> None:
    """Let a thread blocked opening one of `fifos` for reading go on: open each for
    writing (without blocking) and close it again."""
    for fifo in fifos:
        with contextlib.suppress(OSError):  # no reader waiting, or no FIFO any more
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def returns(fn: Callable[[], T], *, fifos: Iterable[Path] = ()) -> T:
    """`fn()`, run in a thread; the test fails if it does not return within
    HANG_SECONDS (the thread is then released through `fifos`, so the suite goes on).
    An exception `fn` raises is raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as e:  # handed to the test's thread
            failure.append(e)

    thread = threading.Thread(target=target, name="blocking-probe", daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        release(fifos)
        thread.join(HANG_SECONDS)
        raise AssertionError(f"the call blocked for {HANG_SECONDS:.0f} s (a FIFO opened?)")
    if failure:
        raise failure[0]
    return outcome[0]


@contextlib.contextmanager
def special_file(path: Path, kind: str) -> Iterator[None]:
    """A FIFO, a folder or a listening Unix socket at `path` for the `with` block."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    if kind != "socket":
        yield
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        here = Path.cwd()
        os.chdir(path.parent)  # a socket's path is limited to 107 bytes; its name is not
        try:
            sock.bind(path.name)
        finally:
            os.chdir(here)
        sock.listen()
        yield
