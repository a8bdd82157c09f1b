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
from reflection.safeyaml import UnsafeYamlError, load_strict

MAX_FRONTMATTER_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 16
# Every character str.splitlines() breaks on; YAML treats \x85, \u2028, \u2029 as breaks too.
_LINE_BREAKS: Final = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_OPEN: Final = re.compile(r"\A\ufeff?---[ \t]*\r?\n")
_CLOSE: Final = re.compile(r"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


class FrontmatterError(ValueError):
    """Raised when a memory file's frontmatter is missing or invalid."""


def _load_mapping(source: str) -> dict[Any, Any]:
    if len(source.encode("utf-8", errors="surrogatepass")) > MAX_FRONTMATTER_BYTES:
        raise FrontmatterError(f"frontmatter is larger than {MAX_FRONTMATTER_BYTES} bytes")
    try:
        data = load_strict(source, max_depth=MAX_DEPTH)
    except UnsafeYamlError as e:
        problem = str(e).removeprefix("not valid YAML: ")
        raise FrontmatterError(f"frontmatter is not valid YAML: {problem[:200]}") from e
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
