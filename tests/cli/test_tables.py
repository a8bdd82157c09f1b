"""Listings never break an id: whether a table fits, and the one-record-a-line form."""

from __future__ import annotations

import pytest

from reflection.cli.tables import Column, cell, fits, record_line

SNAP = "20261124T101502Z-3e1f09a2c4d1"
COLS = (Column("snapshot", "snapshot"), Column("job", "job"), Column("summary", "summary", "text"))


@pytest.mark.parametrize(
    ("rows", "width", "ok"),
    [([(SNAP, "7f3c91", "short")], 80, True),
     # 29 + 6 + 7 (the header "summary") + 3 cells x 3 + 1 = 52
     ([(SNAP, "7f3c91", "short")], 52, True),
     ([(SNAP, "7f3c91", "short")], 51, False),
     # a long summary folds: it asks only 12 columns
     ([(SNAP, "7f3c91", "a summary of many words " * 5)], 57, True),
     # a long job id never folds
     ([(SNAP, "job-" + "x" * 60, "short")], 80, False)],
)  # fmt: skip
def test_fits(rows: list[tuple[str, str, str]], width: int, ok: bool) -> None:
    """A table fits when its ids stand whole and its text columns keep 12 columns."""
    assert fits(COLS, rows, width) is ok


@pytest.mark.parametrize(
    ("row", "line"),
    [((SNAP, "7f3c91", "clearer review step"),
      f'snapshot={SNAP} job=7f3c91 summary="clearer review step"'),
     ((SNAP, "", "x"), f"snapshot={SNAP} summary=x"),
     ((SNAP, "j", 'say "a=b"'), f'snapshot={SNAP} job=j summary="say \\"a=b\\""')],
)  # fmt: skip
def test_record_line(row: tuple[str, str, str], line: str) -> None:
    """A record is key=value pairs: empty values left out, spaced or quoted ones quoted."""
    assert record_line(COLS, row) == line


def test_cell() -> None:
    """None is an empty cell; anything else its text."""
    assert (cell(None), cell(0), cell("a")) == ("", "0", "a")
