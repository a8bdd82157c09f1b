"""The worker's warm-up builds the lazily built parts offline, and quickly enough to run
at every worker start."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from reflection.secrets import _finders
from reflection.settings import Settings
from reflection.warmup import warm_up


def test_warm_up_is_offline_and_builds_the_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a: Any, **k: Any) -> None:
        raise AssertionError("the warm-up opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    _finders.cache_clear()
    warm_up(Settings(_env_file=None))
    assert _finders.cache_info().currsize == 1
