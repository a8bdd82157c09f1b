"""The job's activity log as it goes into the prompt: its head and its tail, cut in the middle.

A log may be gigabytes and may not be clean UTF-8. Only `max_bytes` of it reach the
prompt: the first half and the last half of that budget (setup and ending both matter)
with a marker line in between that says how many bytes were left out. The marker counts
against the budget, a cut never splits a UTF-8 character, undecodable bytes become U+FFFD
and NUL bytes are dropped. Reading seeks to the head and the tail; the middle of the file
is never read.

Credentials are masked before the cut, not after (SPEC section 14): each side is scanned
with `MASK_MARGIN` bytes past its cut, so a key that straddles the cut is recognised whole
and replaced whole, never shown as its first (or last) characters. Masks count against
the budget like any other text.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Final

from reflection.errors import InfrastructureError, InputError
from reflection.fsio import open_regular
from reflection.models import ActivityLog
from reflection.secrets import mask_head, mask_secrets, mask_tail

_MARKER_FMT: Final = "\n[... {n} bytes of the activity log omitted ...]\n"
# How far past each side of the cut the credential scan reads (SPEC section 14).
MASK_MARGIN: Final = 256
# A marker-like line inside the log itself is defused ("[..." -> "[.."), so the one real
# marker can be found again when the prompt guard shrinks the text further.
_FAKE_MARKER: Final = re.compile(r"\[\.\.\.(?= \d+ bytes of the activity log omitted \.\.\.\])")


def _marker(omitted: int) -> str:
    return _MARKER_FMT.format(n=omitted)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _lead_length(byte: int) -> int:
    """How many bytes the UTF-8 sequence that starts with `byte` should have."""
    if byte < 0xC0:
        return 1  # ASCII, or a stray continuation byte (invalid on its own)
    if byte < 0xE0:
        return 2
    if byte < 0xF0:
        return 3
    return 4 if byte < 0xF8 else 1


def _drop_incomplete_end(raw: bytes) -> bytes:
    """`raw` without a UTF-8 sequence that was cut off at its end."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 != 0x80:  # the last non-continuation byte
            return raw[:-back] if _lead_length(byte) > back else raw
    return raw


def _drop_incomplete_start(raw: bytes) -> bytes:
    """`raw` without the continuation bytes of a character cut off at its start."""
    skip = 0
    while skip < min(3, len(raw)) and raw[skip] & 0xC0 == 0x80:
        skip += 1
    return raw[skip:]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "")


def _defuse(text: str) -> str:
    return _FAKE_MARKER.sub("[..", text)


def _fit(buf: bytes, limit: int, budget: int, *, from_end: bool) -> tuple[str, int]:
    """The longest clean, masked head (or tail) of `buf`, at most `limit` raw bytes, whose
    text fits `budget` UTF-8 bytes; returns the text and the raw bytes it used.

    The scan for credentials reads `MASK_MARGIN` bytes more than `limit` (the region), and
    every candidate is that region's text cut at the candidate's length: decoding is
    stable under a cut at a character boundary, so `region[:len(part)]` is the part."""
    if from_end:
        region = _decode(_drop_incomplete_start(buf[-(limit + MASK_MARGIN) :]))
    else:
        region = _decode(_drop_incomplete_end(buf[: limit + MASK_MARGIN]))

    def text_of(n: int) -> tuple[str, int]:
        if n <= 0:
            return "", 0
        raw = _drop_incomplete_start(buf[-n:]) if from_end else _drop_incomplete_end(buf[:n])
        size = len(_decode(raw))
        masked = mask_tail(region, len(region) - size) if from_end else mask_head(region, size)
        return _defuse(masked), len(raw)

    hi = min(limit, len(buf))
    text, used = text_of(hi)
    if _utf8_len(text) <= budget:
        return text, used
    # Replacement characters or masks made the text longer than its bytes: search the
    # raw length.
    lo, best = 0, ("", 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = text_of(mid)
        if _utf8_len(candidate[0]) <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


def truncate_middle(head: bytes, tail: bytes, total: int, max_bytes: int) -> ActivityLog:
    """The log as it goes into the prompt: whole if it fits `max_bytes`, else head and tail.

    `head` holds the log's first bytes and `tail` its last bytes (each at least
    `max_bytes + MASK_MARGIN` long, or the whole log); `total` is the log's size. When
    `len(head) >= total`, `head` is the whole log and `tail` is ignored. The result's text
    is masked (`mask_secrets`) and at most `max_bytes` UTF-8 bytes, marker included; a
    budget too small for the marker yields an empty text.
    """
    if len(head) >= total:
        head = tail = head[:total]
        whole = _defuse(mask_secrets(_decode(head)))
        if _utf8_len(whole) <= max_bytes:
            return ActivityLog(text=whole, total_bytes=total, omitted_bytes=0)
    content = max_bytes - _utf8_len(_marker(total))  # `total` has the most digits possible
    if content <= 0:
        return ActivityLog(text="", total_bytes=total, omitted_bytes=total)
    head_text, head_used = _fit(head, content // 2, content // 2, from_end=False)
    tail_budget = content - _utf8_len(head_text)
    # The kept tail may not reach back into the kept head, nor before `tail`'s first byte.
    tail_limit = min(tail_budget, len(tail), total - head_used)
    tail_text, tail_used = _fit(tail, tail_limit, tail_budget, from_end=True)
    omitted = total - head_used - tail_used
    return ActivityLog(
        text=head_text + _marker(omitted) + tail_text, total_bytes=total, omitted_bytes=omitted
    )


def shrink_activity(log: ActivityLog, max_bytes: int) -> ActivityLog:
    """Cut an already prepared log down to `max_bytes` (the prompt guard's second cut).

    The kept head and tail shrink around the existing marker, whose count grows by what is
    cut now; a log that already fits is returned unchanged.
    """
    raw = log.text.encode("utf-8")
    if len(raw) <= max_bytes:
        return log
    marker = _marker(log.omitted_bytes).encode("utf-8")
    at = raw.find(marker) if log.omitted_bytes else -1
    if at >= 0:
        head, tail = raw[:at], raw[at + len(marker) :]
    else:  # no marker (yet): cut around the middle of the text
        head, tail = raw[: len(raw) // 2], raw[len(raw) // 2 :]
    shrunk = truncate_middle(head, tail, len(head) + log.omitted_bytes + len(tail), max_bytes)
    omitted = shrunk.omitted_bytes if shrunk.text else log.total_bytes
    return ActivityLog(
        text=shrunk.text, total_bytes=log.total_bytes, omitted_bytes=min(omitted, log.total_bytes)
    )


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break  # the file shrank under us
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _open(path: Path, root: Path | None) -> int | None:
    """A descriptor of the regular file at `path` (through no link below `root`), None if
    it does not exist; a FIFO, socket, device or folder there is refused without
    blocking (NotRegularFileError, an InputError naming the path)."""
    try:
        fd = open_regular(path, os.O_RDONLY, root=root)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"activity log {path} is a symlink; refused") from e
        if isinstance(e, PermissionError | NotADirectoryError):
            raise InputError(f"activity log {path} is unreadable: {e.strerror}") from e
        raise InfrastructureError(f"activity log {path} could not be opened: {e}") from e
    return fd


def read_activity_log(path: Path, max_bytes: int, *, root: Path | None = None) -> ActivityLog:
    """Read at most about `2 * (max_bytes + MASK_MARGIN)` of the log (its head and its
    tail) and prepare it for the prompt with `truncate_middle`.

    A missing log (or home) is an empty, not-found `ActivityLog`. Raises InputError for a
    symlink or a file that is not regular, or with `root` (the user's home) for a link or
    a file where a folder between it and the log should be; InfrastructureError when the
    read itself fails.
    """
    fd = _open(path, root)
    if fd is None:
        return ActivityLog(text="", total_bytes=0, omitted_bytes=0, found=False)
    try:
        total = os.fstat(fd).st_size
        span = max(0, min(total, max_bytes + MASK_MARGIN))
        head = _pread_exact(fd, span, 0)
        if total <= span:
            return truncate_middle(head, head, len(head), max_bytes)
        tail = _pread_exact(fd, span, total - span)
    except OSError as e:
        raise InfrastructureError(f"activity log {path} could not be read: {e}") from e
    finally:
        os.close(fd)
    return truncate_middle(head, tail, total, max_bytes)
