"""Which characters are unsafe to print or to keep in a name, and how they are shown."""

from __future__ import annotations

import pytest

from reflection.text import MULTILINE, escape_for_terminal, find_unsafe_chars, strip_unsafe

# text -> (unsafe characters found, each once in order; the text escaped for a terminal)
CASES: dict[str, tuple[str, list[str], str]] = {
    "plain ascii": ("plain text, [b]markup[/b] \\x1b", [], "plain text, [b]markup[/b] \\x1b"),
    "letters": ("café Ωμέγα 日本 مرحبا 👍🏽", [], "café Ωμέγα 日本 مرحبا 👍🏽"),
    "zwj emoji": ("👩\u200d💻", [], "👩\u200d💻"),
    "nbsp": ("a\u00a0b", [], "a\u00a0b"),
    "clear screen": ("\x1b[2J\x1b[H", ["\x1b"], "\\x1b[2J\\x1b[H"),
    "osc 52 clipboard": ("\x1b]52;c;ZWNobyBoaQ==\x07", ["\x1b", "\x07"],
                         "\\x1b]52;c;ZWNobyBoaQ==\\x07"),
    "osc 8 link": ("\x1b]8;;https://evil\x1b\\x\x1b]8;;\x1b\\", ["\x1b"],
                   "\\x1b]8;;https://evil\\x1b\\x\\x1b]8;;\\x1b\\"),
    "nul bell backspace": ("a\x00b\x07c\x08", ["\x00", "\x07", "\x08"], "a\\x00b\\x07c\\x08"),
    "carriage return": ("ok\rFAKE", ["\r"], "ok\\x0dFAKE"),
    "kept line breaks": ("a\nb\tc", ["\n", "\t"], "a\nb\tc"),
    "vt ff fs": ("\x0b\x0c\x1c\x1f", ["\x0b", "\x0c", "\x1c", "\x1f"], "\\x0b\\x0c\\x1c\\x1f"),
    "del": ("a\x7fb", ["\x7f"], "a\\x7fb"),
    "c1 csi osc": ("\x9b2J\x9d0;t\x9c\x80\x85", ["\x9b", "\x9d", "\x9c", "\x80", "\x85"],
                   "\\x9b2J\\x9d0;t\\x9c\\x80\\x85"),
    "bidi override": ("user\u202etxt.exe", ["\u202e"], "user\\u202etxt.exe"),
    "bidi all": ("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
                 list("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c"),
                 "\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f"
                 "\\u061c"),
    "tags": ("hi\U000e0041\U000e007f\U000e0000", ["\U000e0041", "\U000e007f", "\U000e0000"],
             "hi\\U000e0041\\U000e007f\\U000e0000"),
    "past the ranges": ("\u00a0\u2029\u200d\u2070\U000e0080", [], "\u00a0\u2029\u200d\u2070"
                        "\U000e0080"),
    "repeated once": ("\x1b\x1b\u202e\x1b", ["\x1b", "\u202e"], "\\x1b\\x1b\\u202e\\x1b"),
}  # fmt: skip


@pytest.mark.parametrize(("text", "found", "shown"), CASES.values(), ids=CASES.keys())
def test_find_and_escape(text: str, found: list[str], shown: str) -> None:
    """C0 (line breaks and tabs kept in multi-line text), DEL, C1, bidi controls and tag
    characters are found, each once, and shown as visible escapes; the rest is left."""
    assert find_unsafe_chars(text) == found
    assert escape_for_terminal(text) == shown
    assert find_unsafe_chars(escape_for_terminal(text), allow=MULTILINE) == []


@pytest.mark.parametrize("text", [t for t, _, _ in CASES.values()], ids=CASES.keys())
def test_stripped_text_holds_no_unsafe_character(text: str) -> None:
    """strip_unsafe drops every unsafe character but those it is asked to keep."""
    assert find_unsafe_chars(strip_unsafe(text)) == []
    assert find_unsafe_chars(strip_unsafe(text, keep="\t"), allow="\t") == []


def test_allow_and_single_line_escape() -> None:
    """`allow` leaves characters out of the finding; `keep=""` escapes line breaks too."""
    assert find_unsafe_chars("a\tb\nc\x1b", allow="\t\n") == ["\x1b"]
    assert escape_for_terminal("a\tb\nc", keep="") == "a\\x09b\\x0ac"
