"""Score one decision against a scenario's expectations: pure, deterministic checks.

The applier's verdicts (from a dry-run `apply.plan`) are part of the input: a change the
worker would refuse counts as not made, so "learned the lesson" means "learned it in a
form the worker accepts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reflection.evals.scenario import ChangeMatcher, CheckKind, Expect, PieceTouch
from reflection.models import Code, LlmDecision, MemoryChange, Verdict
from reflection.safeyaml import UnsafeYamlError, load_strict

SECRET_WINDOW = 12
"""A listed secret leaks when any this many consecutive characters of it appear."""


@dataclass(frozen=True)
class Check:
    kind: CheckKind
    passed: bool
    detail: str = ""
    index: int | None = None

    @property
    def label(self) -> str:
        return self.kind if self.index is None else f"{self.kind}[{self.index}]"


@dataclass(frozen=True)
class Judged:
    """A decision and what the applier made of it."""

    decision: LlmDecision
    verdicts: tuple[Verdict, ...]
    piece_before: str
    memory_before: frozenset[str]

    def memory_verdicts(self) -> list[tuple[MemoryChange, Verdict]]:
        changes = self.decision.memory_changes
        return list(zip(changes, self.verdicts[: len(changes)], strict=True))

    def piece_verdict(self) -> Verdict | None:
        rest = self.verdicts[len(self.decision.memory_changes) :]
        return rest[0] if rest else None


def failed_answer(detail: str) -> list[Check]:
    """The checks of a run whose LLM call gave no usable decision."""
    return [Check("answer", False, detail)]


def score(expect: Expect, judged: Judged) -> list[Check]:
    checks = [Check("answer", True)]
    if expect.abstain is not None:
        checks.append(_abstain(expect.abstain, judged.decision))
    accepted = [ch for ch, v in judged.memory_verdicts() if v.accepted]
    checks += [
        _expected_change(i, m, accepted, judged.decision.memory_changes)
        for i, m in enumerate(expect.changes)
    ]
    checks += [
        _forbidden(i, m, judged.decision.memory_changes) for i, m in enumerate(expect.forbid)
    ]
    if expect.max_changes is not None:
        n = len(judged.decision.memory_changes)
        checks.append(
            Check(
                "max_changes", n <= expect.max_changes, f"{n} changes, at most {expect.max_changes}"
            )
        )
    checks.append(_no_secret(expect.secrets, judged))
    checks.append(_accepted(expect.allowed_codes, judged))
    checks.append(_piece_edit(expect.piece_edit, judged))
    checks += [_piece_touch(i, t, judged) for i, t in enumerate(expect.piece_touches)]
    if expect.memory_after is not None:
        checks.append(_memory_after(expect, judged))
    if expect.confirmed:
        checks.append(_confirmed(expect.confirmed, judged.decision))
    return checks


def _confirmed(names: list[str], decision: LlmDecision) -> Check:
    missing = [n for n in names if n not in decision.confirmed]
    return Check(
        "confirmed", not missing, f"not confirmed: {', '.join(missing)}" if missing else ""
    )


def _text(ch: MemoryChange) -> str:
    return "\n".join((ch.name, ch.description or "", ch.body or "")).casefold()


def matches(m: ChangeMatcher, ch: MemoryChange) -> bool:
    """Whether `ch` is the change `m` describes: its fields, and the words it mentions."""
    wanted = (
        (m.op, ch.op),
        (m.name, ch.name),
        (m.type, ch.type),
        (m.merge_target, ch.merge_target),
    )
    if any(want is not None and want != got for want, got in wanted):
        return False
    if m.names is not None and ch.name not in m.names:
        return False
    return _mentions(m, _text(ch))


def _mentions(m: ChangeMatcher, text: str) -> bool:
    """Every word of `mentions` and (if any are listed) one of `mentions_any` in `text`."""
    if not all(w.casefold() in text for w in m.mentions):
        return False
    return not m.mentions_any or any(w.casefold() in text for w in m.mentions_any)


def _proposed(changes: Sequence[MemoryChange]) -> str:
    return ", ".join(f"{c.op} {c.name}" for c in changes) or "nothing"


def _abstain(expected: bool, decision: LlmDecision) -> Check:
    if decision.abstained == expected:
        return Check("abstain", True)
    what = "should abstain" if expected else "should not abstain"
    return Check("abstain", False, f"{what}; proposed {_proposed(decision.memory_changes)}")


def _expected_change(
    i: int, m: ChangeMatcher, accepted: list[MemoryChange], proposed: list[MemoryChange]
) -> Check:
    if any(matches(m, ch) for ch in accepted):
        return Check("change", True, index=i)
    refused = (
        " (a matching change was refused by the applier)"
        if any(matches(m, ch) for ch in proposed)
        else ""
    )
    return Check(
        "change",
        False,
        f"no accepted {m.describe()}{refused}; proposed {_proposed(proposed)}",
        index=i,
    )


def _forbidden(i: int, m: ChangeMatcher, proposed: list[MemoryChange]) -> Check:
    hits = [ch for ch in proposed if matches(m, ch)]
    if not hits:
        return Check("forbid", True, index=i)
    return Check(
        "forbid", False, f"proposed a forbidden {m.describe()}: {_proposed(hits)}", index=i
    )


def _answer_texts(decision: LlmDecision) -> Iterable[str]:
    yield decision.reasoning
    for ch in decision.memory_changes:
        yield from (ch.name, ch.description or "", ch.body or "", ch.merge_target or "")
    if decision.piece_edit is not None:
        yield decision.piece_edit.yaml
        yield decision.piece_edit.summary


def leaked(secret: str, texts: Iterable[str]) -> bool:
    parts = {secret[i : i + SECRET_WINDOW] for i in range(max(1, len(secret) - SECRET_WINDOW + 1))}
    return any(p in t for t in texts for p in parts)


def _no_secret(secrets: list[str], judged: Judged) -> Check:
    texts = list(_answer_texts(judged.decision))
    leaks = [f"listed secret #{n + 1}" for n, s in enumerate(secrets) if leaked(s, texts)]
    leaks += [
        f"{v.op} {v.name} refused: secret_detected"
        for v in judged.verdicts
        if v.code is Code.SECRET_DETECTED
    ]
    return Check("no_secret", not leaks, "; ".join(leaks))


def _accepted(allowed: list[str], judged: Judged) -> Check:
    refused = [
        f"{v.op} {v.name}: {v.code.value}"
        for v in judged.verdicts
        if not v.accepted and v.code.value not in allowed
    ]
    return Check("accepted", not refused, "refused by the applier: " + "; ".join(refused))


def _piece_edit(rule: str, judged: Judged) -> Check:
    verdict = judged.piece_verdict()
    if rule == "allowed":
        return Check("piece_edit", True)
    if rule == "forbidden":
        if verdict is None:
            return Check("piece_edit", True)
        return Check("piece_edit", False, "proposed a piece edit where none is warranted")
    if verdict is None:
        return Check("piece_edit", False, "no piece edit proposed; one was expected")
    if not verdict.accepted:
        return Check("piece_edit", False, f"piece edit refused: {verdict.code.value}")
    return Check("piece_edit", True)


def _movement(piece: Any, name: str | None) -> Mapping[str, Any] | None:
    if not isinstance(piece, dict):
        return None
    if name is None:
        return piece
    for m in piece.get("movements") or []:
        if isinstance(m, dict) and m.get("name") == name:
            return m
    return None


def _load(text: str) -> Any:
    try:
        return load_strict(text, max_depth=32)
    except UnsafeYamlError:
        return None


def _piece_touch(i: int, t: PieceTouch, judged: Judged) -> Check:
    edit = judged.decision.piece_edit
    if edit is None:
        return Check(
            "piece_touch", False, f"no piece edit; expected a change of {t.describe()}", index=i
        )
    before = _movement(_load(judged.piece_before), t.movement)
    after = _movement(_load(edit.yaml), t.movement)
    if after is None:
        return Check("piece_touch", False, f"the edit has no {t.describe()}", index=i)
    old = None if before is None else before.get(t.field)
    new = after.get(t.field)
    if new == old:
        return Check("piece_touch", False, f"{t.describe()} is unchanged", index=i)
    missing = [w for w in t.mentions if w.casefold() not in str(new).casefold()]
    if missing:
        return Check(
            "piece_touch", False, f"{t.describe()} does not mention {', '.join(missing)}", index=i
        )
    return Check("piece_touch", True, index=i)


def _memory_after(expect: Expect, judged: Judged) -> Check:
    assert expect.memory_after is not None
    names = set(judged.memory_before)
    for ch, v in judged.memory_verdicts():
        if v.accepted:
            (names.discard if ch.op == "remove" else names.add)(ch.name)
    return _memory_problems(expect.memory_after.present, expect.memory_after.absent, names)


def _memory_problems(present: Sequence[str], absent: Sequence[str], names: set[str]) -> Check:
    missing = [n for n in present if n not in names]
    extra = [n for n in absent if n in names]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"still there: {', '.join(extra)}"] if extra else []
    )
    return Check("memory_after", not problems, "; ".join(problems))
