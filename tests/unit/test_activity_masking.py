"""Credentials in the activity log are masked before the log is cut (SPEC section 14), so a
key that straddles the head or the tail cut shows none of its characters.

The fake credentials are assembled from parts so that no scanner mistakes this file for a
leak; none of them is real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflection.activity import read_activity_log, truncate_middle
from reflection.models import ActivityLog
from tests.unit.test_prompt import fit, make_inputs

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes of the activity log omitted \.\.\.\]\n")
MAX_BYTES = 1024
WINDOW = 8  # no run of this many characters of a key may show

KEYS = {
    "openai": "sk-proj-" + "Zq4T8vLw2NcR7yXb5KmP1sHd9GfJ3aEu",
    "aws-id": "AKIA" + "Q7ZL2M9KD3RT5BX4",
    "github": "ghp_" + "Zq4T8vLw2NcR7yXb5KmP1sHd9GfJ3aEuQ0Wx",
    "password": "DB_PASSWORD=" + "Xk9!mq2zTr0ub4dor",
    "vault": "hvs." + "CAESIJ2kqzLxWq8m3N5Ytp4RvB7uKe9fH1sXj0Z",
    "url": "postgres://app:" + "Tr0ub4dor&3x" + "@db.internal:5432/app",
}
# The part of each key that must not show (a URL's scheme and host are not secret).
SECRET = dict(KEYS)
SECRET["password"] = "Xk9!mq2zTr0ub4dor"
SECRET["url"] = "Tr0ub4dor&3x"


def windows(secret: str) -> set[str]:
    """Every run of WINDOW characters of `secret` (all of it when shorter)."""
    return {secret[i : i + WINDOW] for i in range(max(1, len(secret) - WINDOW + 1))}


def shown(secret: str, text: str) -> list[str]:
    return sorted(w for w in windows(secret) if w in text)


def filler(n: int) -> bytes:
    """`n` bytes of log lines that hold no credential."""
    line = b"[00:00:01] tool=Bash cmd=pytest -q -> 12 passed\n"
    return (line * (n // len(line) + 1))[:n]


def cuts(total: int) -> tuple[int, int]:
    """Where a clean log of `total` bytes is cut: the head's end and the tail's start."""
    log = truncate_middle(filler(total), filler(total), total, MAX_BYTES)
    m = MARKER.search(log.text)
    assert m is not None
    return m.start(), total - (len(log.text) - m.end())


def with_key_at(total: int, key: str, at: int) -> bytes:
    """A clean log of `total` bytes with `key` from byte `at` on, a blank either side."""
    data = bytearray(filler(total))
    data[at - 1 : at + len(key) + 1] = f" {key} ".encode()
    return bytes(data[:total])


TOTAL = 20_000
HEAD_CUT, TAIL_CUT = cuts(TOTAL)
# How many of the secret's characters sit on the kept side of the cut: from WINDOW up,
# so that a leak would show (fewer could not be told apart from the log around them).
OFFSETS = [WINDOW, 12, 16, 24]


def seen(name: str, offset: int) -> int:
    return min(offset, len(SECRET[name]) - 1)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", KEYS)
def test_a_key_across_the_head_cut_never_shows(name: str, offset: int) -> None:
    """A key whose secret's first `offset` characters sit before the head's cut is masked
    whole."""
    key, secret = KEYS[name], SECRET[name]
    data = with_key_at(TOTAL, key, HEAD_CUT - key.index(secret) - seen(name, offset))
    log = truncate_middle(data, data, TOTAL, MAX_BYTES)
    assert shown(secret, log.text) == []
    assert len(log.text.encode()) <= MAX_BYTES


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", KEYS)
def test_a_key_across_the_tail_cut_never_shows(name: str, offset: int) -> None:
    """A key whose secret's last `offset` characters sit after the tail's cut is masked
    whole."""
    key, secret = KEYS[name], SECRET[name]
    secret_end = key.index(secret) + len(secret)
    data = with_key_at(TOTAL, key, TAIL_CUT + seen(name, offset) - secret_end)
    log = truncate_middle(data, data, TOTAL, MAX_BYTES)
    assert shown(secret, log.text) == []
    assert len(log.text.encode()) <= MAX_BYTES


@pytest.mark.parametrize("offset", [8, 16, 24])
def test_the_prompt_shows_no_part_of_a_key_across_the_cut(offset: int) -> None:
    """Through the prompt builder too: the log text the model sees holds no run of the key."""
    key = KEYS["openai"]
    log = with_key_at(TOTAL, key, HEAD_CUT - offset).decode()
    prompt = fit(make_inputs(log=log, log_max=MAX_BYTES), 32000)
    assert shown(key, prompt.user) == []
    assert "bytes of the activity log omitted" in prompt.user


def test_a_key_read_from_the_file_across_the_cut_never_shows(tmp_path: Path) -> None:
    """`read_activity_log` reads the margin past each cut, so a file cut there hides the
    key whole, even at the smallest budget the settings allow."""
    key = KEYS["github"]
    total, budget = 50_000, 256
    clean = truncate_middle(filler(total), filler(total), total, budget)
    head_cut = MARKER.search(clean.text)
    assert head_cut is not None
    p = tmp_path / "activity.log"
    p.write_bytes(with_key_at(total, key, head_cut.start() - 10))
    log = read_activity_log(p, budget)
    assert shown(key, log.text) == []
    assert len(log.text.encode()) <= budget


def test_a_key_within_the_margin_of_the_cut_but_not_across_it_is_masked() -> None:
    """A key that starts just after the head's cut is not shown either (it is in the
    omitted middle), and one that ends well before it is masked in place."""
    key = KEYS["aws-id"]
    after, before = (with_key_at(TOTAL, key, at) for at in (HEAD_CUT + 3, HEAD_CUT - 60))
    after_log = truncate_middle(after, after, TOTAL, MAX_BYTES)
    before_log = truncate_middle(before, before, TOTAL, MAX_BYTES)
    assert shown(key, after_log.text) == [] and "REDACTED" not in after_log.text
    assert shown(key, before_log.text) == [] and "[REDACTED:AWS Access Key]" in before_log.text


def test_masks_longer_than_their_keys_keep_the_budget() -> None:
    """A log full of short passwords (each mask longer than its password) stays within
    the budget, and the omitted count is still the raw bytes left out."""
    data = "".join(f"db password=pw{i:04d}\n" for i in range(2000)).encode()
    log = truncate_middle(data, data, len(data), MAX_BYTES)
    assert len(log.text.encode()) <= MAX_BYTES
    assert "pw0" not in log.text and "[REDACTED:Password]" in log.text
    assert 0 < log.omitted_bytes < len(data)


def test_a_whole_log_whose_masks_overflow_is_cut() -> None:
    """A log that fits unmasked but not masked is cut like a long one."""
    data = b"password=pw1234\n" * 60  # 960 bytes; each mask adds 12
    log = truncate_middle(data, data, len(data), MAX_BYTES)
    assert len(log.text.encode()) <= MAX_BYTES
    assert MARKER.search(log.text) is not None and "pw1234" not in log.text


@settings(max_examples=150, deadline=None)
@given(
    at=st.integers(min_value=1, max_value=TOTAL - 64),
    name=st.sampled_from(sorted(KEYS)),
    budget=st.integers(min_value=256, max_value=3000),
)
def test_a_key_anywhere_never_shows_and_the_budget_holds(at: int, name: str, budget: int) -> None:
    """For any position of the key and any allowed budget: no run of it shows, and the
    text fits the budget."""
    data = with_key_at(TOTAL, KEYS[name], at)
    log: ActivityLog = truncate_middle(data, data, TOTAL, budget)
    assert shown(SECRET[name], log.text) == []
    assert len(log.text.encode()) <= budget
