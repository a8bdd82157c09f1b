"""The scripted LLM's reply delay (the server itself is exercised in the integration tier)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reflection.devtools.scripted_llm import load_script, reply_delay


def test_delay_without_jitter_is_exact() -> None:
    assert reply_delay({}) == 0.0
    assert reply_delay({"delay": 1.5}) == 1.5


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    """delay ± jitter, uniformly: every draw in bounds, both halves used, never below 0."""
    rng = random.Random(7)
    draws = [reply_delay({"delay": 1.0, "jitter": 0.5}, rng) for _ in range(1000)]
    assert all(0.5 <= d <= 1.5 for d in draws)
    assert min(draws) < 0.6 and max(draws) > 1.4
    assert sum(draws) / len(draws) == pytest.approx(1.0, abs=0.05)
    assert all(reply_delay({"delay": 0.1, "jitter": 1.0}, rng) >= 0.0 for _ in range(200))


def test_jitter_is_a_known_reply_key(tmp_path: Path) -> None:
    """A script may use `jitter`; an unknown key is still refused."""
    path = tmp_path / "s.json"
    path.write_text('{"default": {"content": "x", "delay": 1, "jitter": 0.2}}')
    assert load_script(path)["default"]["jitter"] == 0.2
    path.write_text('{"default": {"content": "x", "jiter": 0.2}}')
    with pytest.raises(ValueError, match="unknown reply keys"):
        load_script(path)
