"""Characters a terminal acts on instead of showing, or that make text read otherwise
than it is stored: never printed raw, never in a name or a description (issue 22).

- C0 controls U+0000..U+001F (ESC starts CSI and OSC sequences: clear the screen, write
  the clipboard, draw links), DEL U+007F, and the C1 controls U+0080..U+009F (U+009B is
  a one-character CSI, U+009D an OSC on some terminals);
- bidirectional controls U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069 (a
  "Trojan Source" line shows its characters in another order than they are stored);
- tag characters U+E0000..U+E007F (invisible; they smuggle ASCII text past a reader).

Pure functions; the CLI's printers, the MEMORY.md index and the judging of names and
descriptions use them.
"""

from __future__ import annotations

import functools
from typing import Final

_RANGES: Final = (
    (0x00, 0x1F),  # C0
    (0x7F, 0x9F),  # DEL and C1
    (0x061C, 0x061C),  # Arabic letter mark
    (0x200E, 0x200F),  # left-to-right and right-to-left marks
    (0x202A, 0x202E),  # embeddings, overrides, pop
    (0x2066, 0x2069),  # isolates
    (0xE0000, 0xE007F),  # tags
)
UNSAFE: Final = frozenset(chr(cp) for lo, hi in _RANGES for cp in range(lo, hi + 1))

# Line breaks and tabs where the output is multi-line text (a body, a diff, reasoning).
MULTILINE: Final = "\n\t"


def find_unsafe_chars(text: str, *, allow: str = "") -> list[str]:
    """The unsafe characters in `text` other than those in `allow`, each once, in the
    order they first appear; empty when `text` is safe."""
    found = dict.fromkeys(ch for ch in text if ch in UNSAFE and ch not in allow)
    return list(found)


def escape_char(ch: str) -> str:
    """`ch` as a visible Python-style escape: `\\x1b`, `\\u202e`, `\\U000e0041`."""
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


@functools.lru_cache(maxsize=8)
def _escapes(keep: str) -> dict[int, str]:
    return {ord(ch): escape_char(ch) for ch in UNSAFE if ch not in keep}


@functools.lru_cache(maxsize=8)
def _removals(keep: str) -> dict[int, None]:
    return {ord(ch): None for ch in UNSAFE if ch not in keep}


def escape_for_terminal(text: str, *, keep: str = MULTILINE) -> str:
    """`text` with every unsafe character except those in `keep` written as its visible
    escape (ESC as `\\x1b`): what a terminal shows, never acts on. Backslashes are left
    as they are, so a literal `\\x1b` in the text reads the same as an escaped ESC."""
    return text.translate(_escapes(keep))


def strip_unsafe(text: str, *, keep: str = "") -> str:
    """`text` without its unsafe characters, except those in `keep`."""
    return text.translate(_removals(keep))
