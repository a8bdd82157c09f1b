"""Settings that cannot work together are refused at start, with the names to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reflection.settings import Settings


def test_the_defaults_hold_together() -> None:
    s = Settings(_env_file=None)
    assert s.lock_wait_seconds < s.lock_expire_seconds


def test_a_lock_wait_as_long_as_the_expiry_is_refused() -> None:
    """python-redis-lock refuses such a wait at the first busy lock (TimeoutTooLarge):
    every contended run would have failed `internal`."""
    with pytest.raises(ValidationError, match=r"REFLECTION_LOCK_WAIT_SECONDS \(4\) must be below"):
        Settings(_env_file=None, lock_expire_seconds=4, lock_wait_seconds=4)
    assert Settings(_env_file=None, lock_expire_seconds=4, lock_wait_seconds=3)


def test_a_lock_wait_past_the_lock_clients_socket_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="lock_wait_seconds"):
        Settings(_env_file=None, lock_expire_seconds=60, lock_wait_seconds=9)


def test_a_body_limit_past_what_memory_loading_reads_is_refused() -> None:
    """Entries written under it would be skipped as malformed when memory is loaded."""
    with pytest.raises(ValidationError, match="max_entry_body_bytes"):
        Settings(max_entry_body_bytes=256 * 1024, _env_file=None)
    Settings(max_entry_body_bytes=200 * 1024, _env_file=None)
