"""Listings (`history`, `proposals`) whose ids are never broken, at any width.

An id (a snapshot, job, user, piece or proposal id) is copied from the output into the
next command, so it is never wrapped: id and one-word columns keep their width, only
free text (a summary, a detail) folds. When even that does not fit the console (80
columns in a pipe, say), the listing is printed one record per line instead, as
`key=value` pairs (a value with spaces in JSON quotes), whole however long.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from reflection.cli.common import out
from reflection.text import escape_for_terminal

TEXT_MIN_WIDTH = 12  # the narrowest a folded text column is allowed to get
CELL_EXTRA = 3  # a cell's padding (a space each side) and its border


@dataclass(frozen=True)
class Column:
    """A listing's column: its header, its record key and whether it may fold."""

    header: str
    key: str
    kind: Literal["id", "text"] = "id"  # id: never wrapped (ids and single words)


def cell(value: object) -> str:
    """A value as a cell: None is empty."""
    return "" if value is None else str(value)


def fits(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> bool:
    """Whether the table fits `width` with its id columns whole and each text column at
    least `TEXT_MIN_WIDTH` wide (or as wide as its longest cell, if narrower)."""
    need = 1  # the table's left border
    for i, col in enumerate(columns):
        widest = max([cell_len(col.header), *(cell_len(row[i]) for row in rows)])
        need += (min(widest, TEXT_MIN_WIDTH) if col.kind == "text" else widest) + CELL_EXTRA
    return need <= width


def record_line(columns: Sequence[Column], row: Sequence[str]) -> str:
    """One record as `key=value` pairs, empty values left out."""
    pairs = []
    for col, value in zip(columns, row, strict=True):
        if value == "":
            continue
        shown = json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value
        pairs.append(f"{col.key}={shown}")
    return " ".join(pairs)


def _needs_quotes(value: str) -> bool:
    return any(ch.isspace() or ch in '"=' for ch in value)


def print_listing(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print `rows` as a table if it fits the console, else one record per line. Cells
    are data: shown escaped, never read as markup."""
    cells = [[escape_for_terminal(cell) for cell in row] for row in rows]
    if not fits(columns, cells, out.width):
        for row in cells:
            out.print(Text(record_line(columns, row)), soft_wrap=True)
        return
    table = Table(title=Text(escape_for_terminal(title)))
    for col in columns:
        if col.kind == "text":
            table.add_column(col.header, overflow="fold")
        else:
            table.add_column(col.header, no_wrap=True)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    out.print(table)
