"""Reading the LLM's reply: parse_decision, extract_json_object and the response schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from reflection import reply
from reflection.constants import MAX_LLM_REPLY_CHARS
from reflection.reply import (
    MAX_JSON_DEPTH,
    DecisionParseError,
    decision_json_schema,
    extract_json_object,
    parse_decision,
)
from tests.support.pathological import reply_texts

ADD = {
    "op": "add",
    "name": "prefers-pytest",
    "description": "Wants pytest",
    "type": "feedback",
    "body": "Use pytest fixtures {not unittest}.",
}
DECISION: dict[str, Any] = {
    "reasoning": "The user asked for pytest twice.",
    "memory_changes": [ADD],
    "piece_edit": None,
}
DECISION_JSON = json.dumps(DECISION)
ABSTAIN_JSON = '{"reasoning": "nothing to learn", "memory_changes": [], "piece_edit": null}'


@pytest.mark.parametrize(
    "text",
    [
        DECISION_JSON,
        json.dumps(DECISION, indent=2),
        f"  \n{DECISION_JSON}\n\n",
        f"```json\n{DECISION_JSON}\n```",
        f"```\n{DECISION_JSON}\n```",
        f"Here is my decision:\n```json\n{DECISION_JSON}\n```\nHope that helps!",
        f"Sure! {DECISION_JSON} Let me know.",
        f"{DECISION_JSON}\nThat is all.",
        f"I considered {{braces}} in prose first. {DECISION_JSON}",
        f'He said "hi" and left. {DECISION_JSON}',
        f"Notes {{about: this}} then\n```json\n{DECISION_JSON}\n```",
    ],
    ids=[
        "plain",
        "indented",
        "whitespace",
        "json-fence",
        "bare-fence",
        "fence-with-chatter",
        "chatter-around",
        "trailing-prose",
        "prose-braces-first",
        "prose-quotes-first",
        "prose-braces-then-fence",
    ],
)
def test_valid_decision_is_found_in_any_wrapping(text: str) -> None:
    """The decision validates whether bare, fenced or surrounded by prose."""
    decision = parse_decision(text)
    assert decision.reasoning == DECISION["reasoning"]
    assert [c.name for c in decision.memory_changes] == ["prefers-pytest"]
    assert decision.memory_changes[0].body == ADD["body"]
    assert not decision.abstained


@pytest.mark.parametrize(
    "text",
    [
        ABSTAIN_JSON,
        '{"reasoning": "nothing to learn"}',
        '{"reasoning": "no", "memory_changes": []}',
    ],
)
def test_abstaining_decision(text: str) -> None:
    """No changes and no piece edit is a valid decision that abstains."""
    assert parse_decision(text).abstained


def test_piece_edit_and_remove_with_merge_target() -> None:
    """A piece edit and a remove with merge_target validate."""
    text = json.dumps(
        {
            "reasoning": "merge",
            "memory_changes": [{"op": "remove", "name": "old", "merge_target": "new"}],
            "piece_edit": {"yaml": "name: default\n", "summary": "tighter review"},
        }
    )
    decision = parse_decision(text)
    assert decision.piece_edit is not None and decision.piece_edit.summary == "tighter review"
    assert decision.memory_changes[0].merge_target == "new"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('x {"a": {"b": [1, 2]}} y', '{"a": {"b": [1, 2]}}'),
        ('say {"s": "a } inside"} ok', '{"s": "a } inside"}'),
        ('say {"s": "a { inside"} ok', '{"s": "a { inside"}'),
        ('{"s": "esc \\" } quote"}', '{"s": "esc \\" } quote"}'),
        ('{"s": "backslash \\\\"} tail', '{"s": "backslash \\\\"}'),
        ('{"a": 1} and {"b": 2}', '{"a": 1}'),
        ('use {braces} then {"a": 1}', '{"a": 1}'),
        ('{ oops {"a": 1}', '{"a": 1}'),
        ("{not json}", "{not json}"),
        ('pre\n```json\n{"f": 1}\n```\npost {"g": 2}', '{"f": 1}'),
        ("no object here", None),
        ("", None),
        ("}{", None),
        ('{"unclosed": "', None),
        ("[1, 2, 3]", None),
    ],
)
def test_extract_json_object(text: str, expected: str | None) -> None:
    """The first balanced top-level object, strings and escapes respected, valid JSON first."""
    assert extract_json_object(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I think the user likes pytest.", "no JSON object"),
        ("[1, 2]", "not a JSON array"),
        ('"just a string"', "no JSON object"),
        ("{not json}", "malformed"),
        ('{"reasoning": "a", "reasoning": "b"}', "duplicate key 'reasoning'"),
        ('{"reasoning": "a", "memory_changes": [{"op": "add", "op": "x", "name": "n"}]}', "dup"),
        ('{"memory_changes": []}', "reasoning: Field required"),
        ('{"reasoning": 5}', "reasoning: Input should be a valid string"),
        ('{"reasoning": "r", "extra": 1}', "extra: Extra inputs are not permitted"),
        ('{"reasoning": "r", "memory_changes": [{"op": "mv", "name": "x"}]}', "changes.0.op:"),
        ('{"reasoning": "r", "memory_changes": [{"name": "x"}]}', "memory_changes.0.op: Field"),
        ('{"reasoning": "r", "memory_changes": {"op": "add"}}', "memory_changes: Input should be"),
        ('{"reasoning": "r", "piece_edit": {"yaml": "x"}}', "piece_edit.summary: Field required"),
        ('{"reasoning": "r", "piece_edit": "rewrite it"}', "piece_edit"),
    ],
)
def test_invalid_replies_explain_what_is_wrong(text: str, fragment: str) -> None:
    """Every invalid reply raises DecisionParseError naming the problem for the model."""
    with pytest.raises(DecisionParseError) as info:
        parse_decision(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_many_schema_errors_are_summarised() -> None:
    """A reply with dozens of errors yields a bounded message that says how many more."""
    changes = [{"op": "bogus", "name": "x"} for _ in range(30)]
    with pytest.raises(DecisionParseError) as info:
        parse_decision(json.dumps({"reasoning": "r", "memory_changes": changes}))
    assert "more errors" in str(info.value)
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 80_000])
def test_deep_nesting_is_refused_without_crashing(depth: int) -> None:
    """Objects nested deeper than the limit are rejected cleanly (no RecursionError)."""
    deep = '{"a":' * depth + "1" + "}" * depth
    with pytest.raises(DecisionParseError, match="nested"):
        parse_decision(deep)
    with pytest.raises(DecisionParseError, match="nested"):
        parse_decision(f"Answer: {deep} done")


def test_deep_arrays_are_refused() -> None:
    """Deeply nested arrays inside a decision are refused as too deep."""
    text = '{"reasoning": "r", "memory_changes": ' + "[" * 50 + "]" * 50 + "}"
    with pytest.raises(DecisionParseError, match="nested"):
        parse_decision(text)


def test_nesting_within_the_limit_is_only_a_schema_matter() -> None:
    """Moderate nesting is parsed and then judged by the schema, not the depth guard."""
    text = '{"reasoning": "r", "piece_edit": ' + '{"a":' * 5 + "1" + "}" * 5 + "}"
    with pytest.raises(DecisionParseError) as info:
        parse_decision(text)
    assert "nested" not in str(info.value)


# How long the scanner takes on hostile replies, at two sizes, is measured by
# `python -m bench.pathological` (tests never assert timings). Here its work is counted:
# the characters each pass hands to the reply's regular expressions or to the JSON decoder.
# A linear parse makes a few passes over the text (the whole of it, its fenced blocks, up
# to eight candidate objects); a scan restarted from every brace or fence would make
# thousands at the size limit.
WHOLE_PASSES = 20


class _CountingPattern:
    def __init__(self, pattern: re.Pattern[str], passes: list[int]) -> None:
        self.pattern, self.passes = pattern, passes

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        self.passes.append(len(text))
        return self.pattern.finditer(text)

    def findall(self, text: str) -> list[Any]:
        self.passes.append(len(text))
        return self.pattern.findall(text)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The characters of every pass the reply's parsing makes, as it makes them."""
    seen: list[int] = []
    for name in ("_SCAN_RE", "_FENCE_RE"):
        monkeypatch.setattr(reply, name, _CountingPattern(getattr(reply, name), seen))
    raw_decode = json.JSONDecoder.raw_decode  # json.loads decodes through it too

    def counting_raw_decode(self: json.JSONDecoder, s: str, idx: int = 0) -> tuple[Any, int]:
        seen.append(len(s) - idx)
        return raw_decode(self, s, idx)

    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting_raw_decode)
    return seen


def test_the_pass_counter_sees_a_parse(passes: list[int]) -> None:
    """The counter is wired: a clean reply is one scan for depth and one decode."""
    parse_decision(DECISION_JSON)
    assert passes == [len(DECISION_JSON), len(DECISION_JSON)]


def test_over_long_reply_is_refused_unparsed(passes: list[int]) -> None:
    """A reply over MAX_LLM_REPLY_CHARS is refused without being scanned or decoded."""
    with pytest.raises(DecisionParseError, match="characters long"):
        parse_decision(DECISION_JSON + " " * MAX_LLM_REPLY_CHARS)
    assert passes == []


HOSTILE = reply_texts(MAX_LLM_REPLY_CHARS)


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_input_at_the_size_limit_fails_in_a_few_passes(
    text: str, passes: list[int]
) -> None:
    """Pathological replies just under the limit fail with DecisionParseError after a
    bounded number of passes over their text, however they are shaped."""
    with pytest.raises(DecisionParseError):
        parse_decision(text)
    assert 0 < sum(passes) <= WHOLE_PASSES * len(text)


def test_large_valid_reply_is_accepted() -> None:
    """A big but legitimate reply (long bodies) validates."""
    big = dict(DECISION, memory_changes=[dict(ADD, body="x" * 100_000)])
    assert parse_decision(json.dumps(big)).memory_changes[0].body == "x" * 100_000


def test_schema_describes_the_decision() -> None:
    """The response_format schema is the LlmDecision model's, closed to extra keys."""
    schema = decision_json_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["reasoning"]
    assert set(schema["properties"]) == {"reasoning", "memory_changes", "piece_edit", "confirmed"}
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable as a request body
