"""A memory file: YAML frontmatter between `---` lines, then a markdown body (SPEC section 3).

    ---
    name: prefers-pytest
    description: Wants tests written with pytest, never unittest
    type: feedback
    protected: true        # optional; the reflection never updates or removes it
    ---
    The user rejected a unittest suite ...

The frontmatter is read with safe-load semantics only (no aliases, anchors or tags, one
document, at most MAX_FRONTMATTER_BYTES). Unknown keys are tolerated and dropped.
`render_entry` writes what `parse_entry` reads back unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Final

import yaml

from reflection import constants as c
from reflection.models import MemoryEntry

MAX_FRONTMATTER_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 16
# Every character str.splitlines() breaks on; YAML treats \x85, \u2028, \u2029 as breaks too.
_LINE_BREAKS: Final = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_OPEN: Final = re.compile(r"\A\ufeff?---[ \t]*\r?\n")
_CLOSE: Final = re.compile(r"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


class FrontmatterError(ValueError):
    """Raised when a memory file's frontmatter is missing or invalid."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases, anchors, explicit tags and deep nesting while
    composing, before anything is expanded or constructed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise FrontmatterError("YAML aliases are not allowed in frontmatter")
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise FrontmatterError("YAML anchors are not allowed in frontmatter")
        if getattr(event, "tag", None) is not None:
            raise FrontmatterError("YAML tags are not allowed in frontmatter")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise FrontmatterError(f"frontmatter nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _load_mapping(source: str) -> dict[Any, Any]:
    if len(source.encode("utf-8", errors="surrogatepass")) > MAX_FRONTMATTER_BYTES:
        raise FrontmatterError(f"frontmatter is larger than {MAX_FRONTMATTER_BYTES} bytes")
    loader = _Loader(source)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontmatterError(f"frontmatter is not valid YAML: {first_line[:200]}") from e
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise FrontmatterError("frontmatter must be a YAML mapping")
    return data


def _problem(name: object, description: object, type_: object, protected: object) -> str | None:
    """Why these fields do not make a valid entry, or None."""
    if not isinstance(name, str) or not c.SLUG_RE.fullmatch(name):
        return f"name must match {c.SLUG_RE.pattern}"
    if not isinstance(description, str) or not description.strip():
        return "description must be a non-empty string"
    if any(ch in _LINE_BREAKS for ch in description):
        return "description must be a single line"
    if type_ not in c.MEMORY_TYPES:
        return f"type must be one of {', '.join(c.MEMORY_TYPES)}"
    if not isinstance(protected, bool):
        return "protected must be true or false"
    return None


def parse_entry(text: str, *, stem: str) -> MemoryEntry:
    """Parse a memory file's text; `stem` is its file name without `.md`.

    Raises FrontmatterError when the frontmatter is missing, unclosed, too large, not a
    safe single YAML mapping, lacks a field, or its name differs from `stem`.
    """
    opening = _OPEN.match(text)
    if opening is None:
        raise FrontmatterError("no frontmatter: the file must start with a '---' line")
    closing = _CLOSE.search(text, opening.end())
    if closing is None:
        raise FrontmatterError("frontmatter is not closed by a '---' line")
    data = _load_mapping(text[opening.end() : closing.start()])
    for key in ("name", "description", "type"):
        if key not in data:
            raise FrontmatterError(f"frontmatter has no {key!r}")
    name, description, type_ = data["name"], data["description"], data["type"]
    protected = data.get("protected", False)
    problem = _problem(name, description, type_, protected)
    if problem is not None:
        raise FrontmatterError(problem)
    if name != stem:
        raise FrontmatterError(f"name {name!r} differs from the file name {stem[:80]!r}")
    return MemoryEntry(
        name=name,
        description=description,
        type=type_,
        body=text[closing.end() :],
        protected=protected,
    )


def render_entry(entry: MemoryEntry) -> str:
    """The file text for `entry`; `parse_entry(render_entry(e), stem=e.name) == e`.

    Raises FrontmatterError for an entry that could not be read back (a name that is not
    a slug, an empty or multi-line description).
    """
    problem = _problem(entry.name, entry.description, entry.type, entry.protected)
    if problem is not None:
        raise FrontmatterError(problem)
    fields: dict[str, object] = {
        "name": entry.name,
        "description": entry.description,
        "type": entry.type,
    }
    if entry.protected:
        fields["protected"] = True
    header = yaml.safe_dump(
        fields, sort_keys=False, allow_unicode=True, width=1 << 30, default_flow_style=False
    )
    if len(header.encode("utf-8", errors="surrogatepass")) > MAX_FRONTMATTER_BYTES:
        raise FrontmatterError(f"frontmatter would be larger than {MAX_FRONTMATTER_BYTES} bytes")
    return f"---\n{header}---\n{entry.body}"
