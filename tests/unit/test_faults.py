"""Fault points: a no-op in production, crashes or pauses only through the test injector,
and a point name that does not exist is an error wherever it is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reflection import faults
from tests.support.faults import Fault, injector, install_from_environment, parse


@pytest.fixture(autouse=True)
def no_hook() -> Iterator[None]:
    """Every test starts and ends with production's state: no hook."""
    faults.install(None)
    yield
    faults.install(None)


def test_without_the_injector_the_environment_triggers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployed worker with REFLECTION_FAULT set neither crashes nor pauses: the
    production module has no injector."""
    marker = tmp_path / "m"
    monkeypatch.setenv("REFLECTION_FAULT", f"after_llm:sleep0:{marker}")
    for point in sorted(faults.POINTS):
        faults.fault_point(point)  # type: ignore[arg-type]
    assert not marker.exists()


def test_a_mistyped_point_at_a_call_site_is_an_error() -> None:
    """`fault_point` refuses a name that is not one of POINTS."""
    with pytest.raises(faults.UnknownFaultPointError, match="after_lm"):
        faults.fault_point("after_lm")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("after_lm:kill:/tmp/x", "unknown point 'after_lm'"),
        ("after_llm:explode:/tmp/x", "unknown action 'explode'"),
        ("after_llm:sleepy:/tmp/x", "unknown action 'sleepy'"),
    ],
)
def test_a_mistyped_fault_spec_is_an_error(spec: str, error: str) -> None:
    """A REFLECTION_FAULT the injector cannot perform fails the worker's start, so a
    fault test never passes without reaching its point."""
    with pytest.raises(ValueError, match=error):
        parse(spec)


def test_the_injector_fires_once_at_its_point(tmp_path: Path) -> None:
    """Installed, the injector acts at its own point only, and only the first time."""
    marker = tmp_path / "m"
    faults.install(injector(Fault("after_journal", "sleep0", marker)))
    faults.fault_point("before_llm")
    assert not marker.exists()
    faults.fault_point("after_journal")
    first = marker.read_text()
    faults.fault_point("after_journal")
    assert marker.read_text() == first and first.startswith("after_journal sleep0")


def test_the_test_app_installs_what_the_environment_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`install_from_environment` (what `tests.support.fault_app` runs) arms the hook."""
    marker = tmp_path / "m"
    monkeypatch.setenv("REFLECTION_FAULT", f"between_writes:sleep0:{marker}")
    install_from_environment()
    faults.fault_point("between_writes")
    assert marker.exists()
