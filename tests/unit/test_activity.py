"""The activity log goes into the prompt as head + marker + tail, within its byte budget."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflection.activity import MASK_MARGIN, read_activity_log, shrink_activity, truncate_middle
from reflection.errors import InputError
from reflection.models import ActivityLog

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes of the activity log omitted \.\.\.\]\n")


def cut(data: bytes, max_bytes: int) -> ActivityLog:
    return truncate_middle(data, data, len(data), max_bytes)


def parts(log: ActivityLog) -> tuple[str, int, str]:
    m = MARKER.search(log.text)
    assert m is not None, log.text
    return log.text[: m.start()], int(m.group(1)), log.text[m.end() :]


def test_a_log_that_fits_is_returned_whole() -> None:
    """A log within the budget comes back unchanged, with nothing omitted."""
    data = "line one\nline two ✓\n".encode()
    log = cut(data, 4096)
    assert log == ActivityLog(text=data.decode(), total_bytes=len(data), omitted_bytes=0)


@pytest.mark.parametrize("max_bytes", [256, 300, 1000, 4096])
def test_a_long_log_keeps_head_and_tail_within_the_exact_budget(max_bytes: int) -> None:
    """The cut text (marker included) fits the budget; head and tail are the log's ends."""
    data = b"".join(f"[{i:06d}] step\n".encode() for i in range(20000))
    log = cut(data, max_bytes)
    assert len(log.text.encode()) <= max_bytes
    assert len(log.text.encode()) >= max_bytes - 4
    head, omitted, tail = parts(log)
    assert data.startswith(head.encode()) and data.endswith(tail.encode())
    assert omitted == log.omitted_bytes == len(data) - len(head.encode()) - len(tail.encode())
    assert abs(len(head.encode()) - len(tail.encode())) <= 4
    assert log.total_bytes == len(data)


@pytest.mark.parametrize("max_bytes", [0, 10, 40])
def test_a_budget_smaller_than_the_marker_gives_an_empty_text(max_bytes: int) -> None:
    """When not even the marker fits, nothing of the log is shown."""
    log = cut(b"x" * 5000, max_bytes)
    assert log.text == "" and log.omitted_bytes == 5000


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\ufffd\x00")),
    max_bytes=st.integers(min_value=0, max_value=400),
)
def test_a_cut_never_splits_a_multibyte_character(text: str, max_bytes: int) -> None:
    """For any text and budget: within budget, no U+FFFD, head/tail are real prefix/suffix."""
    data = text.encode()
    log = cut(data, max_bytes)
    assert len(log.text.encode()) <= max_bytes
    assert "\ufffd" not in log.text
    if log.omitted_bytes == 0:
        assert log.text == text
    elif log.text:
        head, omitted, tail = parts(log)
        assert text.startswith(head) and text.endswith(tail)
        assert omitted == len(data) - len(head.encode()) - len(tail.encode())


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), max_bytes=st.integers(min_value=0, max_value=600))
def test_any_bytes_fit_the_budget_and_decode(data: bytes, max_bytes: int) -> None:
    """Arbitrary bytes (invalid UTF-8, NULs) always give clean text within the budget."""
    log = cut(data, max_bytes)
    assert len(log.text.encode()) <= max_bytes
    assert "\x00" not in log.text


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Undecodable bytes become U+FFFD; the valid text around them survives."""
    log = cut(b"ok \xff\xfe done", 4096)
    assert log.text == "ok \ufffd\ufffd done"


def test_invalid_bytes_that_expand_still_respect_the_budget() -> None:
    """Each bad byte decodes to 3 bytes; the text is still cut to the budget."""
    data = b"\xff" * 300
    log = cut(data, 300)
    assert len(log.text.encode()) <= 300
    assert log.omitted_bytes > 0


def test_nul_bytes_are_stripped() -> None:
    """NUL bytes never reach the prompt."""
    assert cut(b"a\x00b\x00\x00c", 4096).text == "abc"


def test_a_marker_inside_the_log_is_defused() -> None:
    """A log line that imitates the marker cannot pass for a real cut."""
    fake = b"[... 5 bytes of the activity log omitted ...]\n"
    data = fake + b"x" * 5000 + fake
    log = cut(data, 400)
    assert len(MARKER.findall(log.text)) == 1


@pytest.mark.parametrize("new_budget", [1000, 300, 120, 60, 0])
def test_shrink_cuts_further_around_the_same_marker(new_budget: int) -> None:
    """Shrinking keeps the log's ends and grows the omitted count; it stays in budget."""
    data = "".join(f"{i:05d} é\n" for i in range(3000)).encode()
    log = cut(data, 2000)
    small = shrink_activity(log, new_budget)
    assert len(small.text.encode()) <= new_budget
    assert small.total_bytes == len(data)
    if small.text:
        head, omitted, tail = parts(small)
        assert data.startswith(head.encode()) and data.endswith(tail.encode())
        assert omitted == small.omitted_bytes == len(data) - len(head.encode()) - len(tail.encode())
    else:
        assert small.omitted_bytes == len(data)


def test_shrink_of_a_whole_log_cuts_its_middle() -> None:
    """A log that was shown whole gets its first marker when shrunk."""
    data = b"abcdefghij" * 100
    small = shrink_activity(cut(data, 4096), 200)
    head, omitted, tail = parts(small)
    assert data.startswith(head.encode()) and data.endswith(tail.encode())
    assert omitted == len(data) - len(head) - len(tail)


def test_shrink_returns_a_log_that_fits_unchanged() -> None:
    """Nothing to cut: the same log comes back."""
    log = cut(b"short", 4096)
    assert shrink_activity(log, 100) is log


def test_read_a_small_log_whole(tmp_path: Path) -> None:
    """A log file under the budget is read whole."""
    p = tmp_path / "activity.log"
    p.write_bytes(b"started\nfinished\n")
    assert read_activity_log(p, 4096) == ActivityLog(
        text="started\nfinished\n", total_bytes=17, omitted_bytes=0
    )


def test_read_a_long_log_head_and_tail(tmp_path: Path) -> None:
    """A long file gives its first and last lines with the marker between."""
    p = tmp_path / "activity.log"
    p.write_bytes(b"SETUP\n" + b"." * 100_000 + b"\nTHE END\n")
    log = read_activity_log(p, 512)
    head, omitted, tail = parts(log)
    assert head.startswith("SETUP") and tail.endswith("THE END\n")
    assert len(log.text.encode()) <= 512
    assert omitted == log.omitted_bytes == 100_015 - len(head) - len(tail)


def test_missing_log_is_not_found(tmp_path: Path) -> None:
    """A missing file (or folder) is an empty, not-found log, not an error."""
    assert read_activity_log(tmp_path / "nope" / "activity.log", 4096) == ActivityLog(
        text="", total_bytes=0, omitted_bytes=0, found=False
    )


def test_symlinked_log_is_refused(tmp_path: Path) -> None:
    """A symlink at the log's path is not followed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root password")
    link = tmp_path / "activity.log"
    link.symlink_to(secret)
    with pytest.raises(InputError, match="symlink"):
        read_activity_log(link, 4096)


def test_with_a_root_no_folder_on_the_way_may_be_a_link(tmp_path: Path) -> None:
    """With the user's home as root, a link (or a file) where a folder between the home
    and the log should be is refused; a missing home is a missing log."""
    home, outside = tmp_path / "alice", tmp_path / "outside"
    (outside / "j-1").mkdir(parents=True)
    (outside / "j-1" / "activity.log").write_text("someone else's secrets")
    log = home / "jobs" / "j-1" / "activity.log"
    assert not read_activity_log(log, 4096, root=home).found
    home.mkdir()
    (home / "jobs").symlink_to(outside)
    with pytest.raises(InputError, match="symlink or not a folder"):
        read_activity_log(log, 4096, root=home)
    (home / "jobs").unlink()
    (home / "jobs").write_text("a file")
    with pytest.raises(InputError, match="symlink or not a folder"):
        read_activity_log(log, 4096, root=home)


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_a_log_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A directory or a FIFO at the log's path is refused without blocking."""
    p = tmp_path / "activity.log"
    if kind == "dir":
        p.mkdir()
    else:
        os.mkfifo(p)
    with pytest.raises(InputError):
        read_activity_log(p, 4096)


def test_huge_sparse_log_is_read_without_loading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 GB+ (sparse) log, past 32-bit offsets, is cut from its ends: only its head and
    its tail are read, a few KB, whatever its size (counted at `os.pread`; how long it
    takes is measured by `python -m bench.pathological`, not here)."""
    p = tmp_path / "activity.log"
    size = 2**31 + 4096
    with p.open("wb") as f:
        f.write(b"BEGIN\n")
        f.truncate(size - 4)
        f.seek(size - 4)
        f.write(b"END\n")
    reads: list[tuple[int, int]] = []
    pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        chunk = pread(fd, n, offset)
        reads.append((offset, len(chunk)))
        return chunk

    monkeypatch.setattr(os, "pread", counting_pread)
    log = read_activity_log(p, 4096)
    assert log.total_bytes == size
    assert log.text.startswith("BEGIN\n") and log.text.endswith("END\n")
    span = 4096 + MASK_MARGIN
    assert reads == [(0, span), (size - span, span)]
    assert len(log.text.encode()) <= 4096
    assert size - 2 * 4096 <= log.omitted_bytes < size
