"""What the CLI prints reaches the operator's terminal as text, never as commands.

The model's reasoning, a change's detail, a memory body, a piece summary: any of them
may hold an ESC/OSC/CSI sequence, a C1 control, a bidi override or tag characters
(reflection/text.py). Every printer goes through one of two doors that escape them:

- `SafeConsole`, the Rich console of `out` and `err`: every text segment it renders is
  escaped (ESC shown as `\\x1b`), whatever renderable carries it; Rich's own styling
  and cursor controls are left alone. The printers also escape data before Rich lays it
  out (`plain`, `labelled` in common.py), so tables keep their widths;
- `json_text`, for `--json`: JSON escapes C0 itself; DEL, C1, bidi and tag characters
  become `\\u` escapes too, so the output is still the same JSON, read back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from reflection.text import UNSAFE, escape_for_terminal


class SafeConsole(Console):
    """A Rich console whose output holds no unsafe character raw (see the module)."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or UNSAFE.isdisjoint(segment.text):
                yield segment
            else:
                yield Segment(escape_for_terminal(segment.text), segment.style)


# json.dumps escapes C0 inside strings already (and writes raw line breaks between
# tokens); the rest gets its ASCII JSON escape (a surrogate pair past U+FFFF).
_JSON_ESCAPES = {ord(ch): json.dumps(ch)[1:-1] for ch in UNSAFE if ch >= " "}


def json_text(data: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`data` as indented JSON whose text holds no unsafe character raw (non-ASCII
    letters stay readable); `default` as for `json.dumps`."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=default)
    # Outside strings JSON has only ASCII punctuation, so this escapes within strings.
    return text.translate(_JSON_ESCAPES)
