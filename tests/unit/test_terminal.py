"""The CLI's console and JSON output never hand a control, bidi or tag character to the
terminal raw, while Rich's own styling still works."""

from __future__ import annotations

import io
import json

import pytest
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from reflection.cli.common import labelled, plain
from reflection.cli.terminal import SafeConsole, json_text
from reflection.text import MULTILINE, find_unsafe_chars
from tests.unit.test_text import CASES

EVIL = "a\x1b]52;c;cHduZWQ=\x07b\x1b[2J\x9b31m\u202ec\U000e0041\x7f\rd"
SHOWN = "a\\x1b]52;c;cHduZWQ=\\x07b\\x1b[2J\\x9b31m\\u202ec\\U000e0041\\x7f\\x0dd"


def console() -> tuple[SafeConsole, io.StringIO]:
    """A SafeConsole that believes it writes to a colour terminal."""
    buffer = io.StringIO()
    con = SafeConsole(
        file=buffer, force_terminal=True, color_system="standard", width=200, highlight=False
    )
    return con, buffer


def data_of(output: str) -> str:
    """`output` without Rich's own SGR sequences (colours, bold)."""
    for code in ("\x1b[0m", "\x1b[1m", "\x1b[3m", "\x1b[31m", "\x1b[92m"):
        output = output.replace(code, "")
    return output


PRINTS = {
    "text": lambda con: con.print(Text(EVIL, style="red")),
    "str": lambda con: con.print(EVIL, markup=False),
    "table": lambda con: con.print(_table()),
    "rule": lambda con: con.rule(EVIL),
    "plain": lambda con: con.print(plain(EVIL)),
    "labelled": lambda con: con.print(labelled("detail", EVIL)),
}


def _table() -> Table:
    table = Table(title=EVIL)
    table.add_column(EVIL)
    table.add_row(EVIL)
    return table


@pytest.mark.parametrize("show", PRINTS.values(), ids=PRINTS.keys())
def test_data_is_shown_escaped_and_styles_still_apply(show: object) -> None:
    """Whatever renderable carries the data, the terminal gets `\\x1b` as four visible
    characters, never the ESC, C1, bidi or tag character itself. (Rich drops BEL, CR,
    BS, VT and FF from a Text made of raw data; `plain` shows them escaped.)"""
    con, buffer = console()
    show(con)  # type: ignore[operator]
    output = buffer.getvalue()
    assert find_unsafe_chars(data_of(output), allow=MULTILINE) == []
    assert "\\x1b]52;c;cHduZWQ=" in output


def test_rich_styles_reach_the_terminal() -> None:
    """Rich's own colour codes are not escaped."""
    con, buffer = console()
    con.print(Text("red", style="red"))
    assert buffer.getvalue() == "\x1b[31mred\x1b[0m\n"


def test_plain_keeps_line_breaks_only_in_multiline_text() -> None:
    """plain escapes everything on one line; multi-line text (the reasoning) keeps its
    line breaks and tabs; data is never read as markup."""
    assert plain(EVIL).plain == SHOWN
    assert plain("a\nb\tc [b]x[/b]").plain == "a\\x0ab\\x09c [b]x[/b]"
    assert plain("a\nb\tc\x1b", multiline=True).plain == "a\nb\tc\\x1b"
    assert labelled("k", "1\n2").plain == "k: 1\\x0a2"


def test_progress_descriptions_are_escaped() -> None:
    """A progress bar (a Live display, drawn with cursor controls) shows its description
    escaped and keeps its own controls."""
    con, buffer = console()
    with Progress(console=con, auto_refresh=False) as progress:
        progress.add_task(EVIL, total=1)
        progress.refresh()
    assert "\\x1b]52;c;cHduZWQ=" in buffer.getvalue()
    assert "\x1b]52" not in buffer.getvalue()


@pytest.mark.parametrize("text", [t for t, _, _ in CASES.values()], ids=CASES.keys())
def test_json_text_of_each_case_reads_back(text: str) -> None:
    """json_text holds nothing raw whatever the text, and reads back to the same data."""
    data = {"k\u202e": [text, None, 1]}
    out = json_text(data)
    assert find_unsafe_chars(out, allow="\n") == []
    assert json.loads(out) == data


def test_json_text_escapes_inside_strings_and_reads_back() -> None:
    """--json output: C0 as JSON escapes itself, DEL, C1, bidi and tags as \\u escapes;
    the indentation's line breaks stay; the same data reads back."""
    data = {"reasoning": EVIL, EVIL: [EVIL, 1, None], "ok": "café 日本"}
    out = json_text(data)
    assert find_unsafe_chars(out, allow="\n") == []
    assert "café 日本" in out and '"\\u202e' not in out
    assert "\\u009b31m\\u202ec\\udb40\\udc41\\u007f" in out
    assert json.loads(out) == data
