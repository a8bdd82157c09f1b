"""Memory files: YAML frontmatter then a markdown body, parsed strictly and rendered back."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reflection.frontmatter import (
    MAX_FRONTMATTER_BYTES,
    FrontmatterError,
    parse_entry,
    render_entry,
)
from reflection.models import MemoryEntry

VALID = (
    "---\n"
    "name: prefers-pytest\n"
    "description: Wants tests written with pytest, never unittest\n"
    "type: feedback\n"
    "---\n"
    "The user rejected a unittest suite; use pytest fixtures.\n"
)


def test_valid_entry() -> None:
    """The SPEC's example parses into its fields and body."""
    assert parse_entry(VALID, stem="prefers-pytest") == MemoryEntry(
        name="prefers-pytest",
        description="Wants tests written with pytest, never unittest",
        type="feedback",
        body="The user rejected a unittest suite; use pytest fixtures.\n",
    )


def test_crlf_line_endings() -> None:
    """A file saved with CRLF parses; its body keeps its own line endings."""
    e = parse_entry(VALID.replace("\n", "\r\n"), stem="prefers-pytest")
    assert e.description == "Wants tests written with pytest, never unittest"
    assert e.body == "The user rejected a unittest suite; use pytest fixtures.\r\n"


def test_protected_flag_and_unknown_keys() -> None:
    """`protected: true` is read; unknown keys are tolerated and dropped."""
    text = VALID.replace("type: feedback\n", "type: feedback\nprotected: true\nowner: ops\n")
    e = parse_entry(text, stem="prefers-pytest")
    assert e.protected is True
    assert render_entry(e).count("owner") == 0


def test_body_keeps_blank_lines_and_dashes() -> None:
    """Only the closing line is consumed; a later `---` line belongs to the body."""
    text = VALID.replace("The user", "\nThe user") + "---\nmore\n"
    e = parse_entry(text, stem="prefers-pytest")
    assert e.body.startswith("\nThe user") and e.body.endswith("---\nmore\n")


def test_empty_body_and_closing_at_end_of_file() -> None:
    """A file ending right after the closing `---` has an empty body."""
    text = VALID.split("---\nThe user")[0] + "---"
    assert parse_entry(text, stem="prefers-pytest").body == ""


def replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just some notes\n", "no frontmatter"),
        ("", "no frontmatter"),
        ("\n---\nname: x\n---\n", "no frontmatter"),
        (replace("---\nThe user", "The user"), "not closed"),
        (replace("name: prefers-pytest\n", ""), "'name'"),
        (replace("description: Wants tests written with pytest, never unittest\n", ""), "desc"),
        (replace("type: feedback\n", ""), "'type'"),
        (replace("type: feedback", "type: opinion"), "type must be one of"),
        (replace("name: prefers-pytest", "name: other-name"), "differs from the file name"),
        (replace("name: prefers-pytest", "name: Prefers_Pytest"), "name must match"),
        (replace("name: prefers-pytest", "name: 42"), "name must match"),
        (
            replace("never unittest", "never\\nunittest")
            .replace("description: W", 'description: "W')
            .replace("unittest\ntype", 'unittest"\ntype'),
            "single line",
        ),
        (replace("Wants tests written with pytest, never unittest", "''"), "non-empty"),
        (replace("Wants tests written with pytest, never unittest", "[a, b]"), "string"),
        (replace("type: feedback", "type: feedback\nprotected: yes please"), "protected"),
        (replace("name: prefers-pytest\n", "- a list\n"), "not valid YAML"),
        ("---\n- a\n- b\n---\nbody", "mapping"),
        ("---\n---\nbody", "mapping"),
        (replace("type: feedback", "type: &t feedback\nextra: *t"), "anchors"),
        (replace("type: feedback", "type: !!str feedback"), "tags"),
        (replace("type: feedback", "type: !!python/object:os.system feedback"), "tags"),
        (replace("type: feedback\n", "type: feedback\n--- {a: 1}\n"), "not valid YAML"),
    ],
)
def test_invalid_frontmatter_is_refused(text: str, message: str) -> None:
    """Every way a file can be malformed raises FrontmatterError saying why."""
    with pytest.raises(FrontmatterError, match=message):
        parse_entry(text, stem="prefers-pytest")


def test_an_alias_is_refused_before_it_expands() -> None:
    """An alias bomb never gets expanded."""
    bomb = "---\na: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n---\n"
    with pytest.raises(FrontmatterError, match="not allowed"):
        parse_entry(bomb, stem="prefers-pytest")


def test_deep_nesting_is_refused_without_recursing() -> None:
    """Thousands of nested brackets fail cleanly, not with a RecursionError."""
    text = replace("type: feedback", "type: feedback\nx: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(FrontmatterError, match="deeper than"):
        parse_entry(text, stem="prefers-pytest")


def test_oversized_frontmatter_is_refused() -> None:
    """Frontmatter over the size bound is refused without being parsed."""
    text = replace("type: feedback", "type: feedback\npad: " + "x" * MAX_FRONTMATTER_BYTES)
    with pytest.raises(FrontmatterError, match="larger than"):
        parse_entry(text, stem="prefers-pytest")


def test_render_matches_the_spec_layout() -> None:
    """Rendering writes the frontmatter keys in order, then the body."""
    e = parse_entry(VALID, stem="prefers-pytest")
    assert render_entry(e) == VALID
    assert "protected" not in render_entry(e)
    assert "protected: true\n---\n" in render_entry(e.model_copy(update={"protected": True}))


@pytest.mark.parametrize(
    "description",
    [
        "a: b # c",
        "- item",
        "'quoted'",
        '"double"',
        "yes",
        "null",
        "2024-01-01",
        "---",
        "{x}",
        "ü ✓",
    ],
)
def test_render_quotes_descriptions_that_look_like_yaml(description: str) -> None:
    """Descriptions YAML would misread come back as the same string."""
    e = MemoryEntry(name="n", description=description, type="project", body="b")
    assert parse_entry(render_entry(e), stem="n") == e


@pytest.mark.parametrize("description", ["", "  ", "two\nlines", "cr\rhere", "ls\u2028here"])
def test_render_refuses_an_entry_it_could_not_read_back(description: str) -> None:
    """An empty or multi-line description is refused at render time, not written."""
    e = MemoryEntry(name="n", description=description, type="user", body="b")
    with pytest.raises(FrontmatterError):
        render_entry(e)


SAFE_TEXT = st.characters(codec="utf-8")
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@settings(max_examples=300, deadline=None)
@given(
    name=st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z"),
    description=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters=LINE_BREAKS),
        min_size=1,
        max_size=200,
    ).filter(str.strip),
    type_=st.sampled_from(["user", "feedback", "project", "reference"]),
    body=st.text(alphabet=SAFE_TEXT, max_size=400),
    protected=st.booleans(),
)
def test_round_trip(name: str, description: str, type_: str, body: str, protected: bool) -> None:
    """parse_entry(render_entry(e), stem=e.name) == e for any valid entry."""
    e = MemoryEntry.model_validate(
        {
            "name": name,
            "description": description,
            "type": type_,
            "body": body,
            "protected": protected,
        }
    )
    assert parse_entry(render_entry(e), stem=name) == e


def test_frontmatter_is_plain_safe_yaml() -> None:
    """What render writes is readable by any safe YAML loader."""
    e = MemoryEntry(name="x", description="d: e", type="reference", body="", protected=True)
    header = render_entry(e).split("---\n")[1]
    assert yaml.safe_load(header) == {
        "name": "x",
        "description": "d: e",
        "type": "reference",
        "protected": True,
    }
