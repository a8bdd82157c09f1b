"""Judge an LLM decision: every memory change and the piece edit accepted or rejected.

Pure: takes the current state (read under the user lock) and returns verdicts plus the
resulting entries. Rejections never abort the others (SPEC section 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reflection import constants as c
from reflection import evidence, similarity
from reflection.batch_rules import apply_batch_rules
from reflection.directives import gained
from reflection.models import Code, MemoryChange, MemoryEntry, PieceEdit, Verdict
from reflection.pieces import check_piece_edit
from reflection.secrets import find_secrets
from reflection.text import escape_for_terminal, find_unsafe_chars


@dataclass(frozen=True)
class Limits:
    """The bounds a decision is judged against (from settings)."""

    max_changes: int = 8
    max_body_bytes: int = 8192
    max_entries: int = 200
    cooldown_hours: float = 24.0
    # SPEC §11's rules (`unsupported`, `untrusted_source`, `near_duplicate`); off as a
    # whole with `evidence_rules=False` (the stream simulation's baseline).
    evidence_rules: bool = True
    trusted_line_pattern: str = evidence.DEFAULT_TRUSTED_LINE_PATTERN
    near_duplicate_threshold: float = similarity.DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Grounds:
    """What a decision is judged against besides memory, as stored on its claim
    (`reflection.records.StoredDecision`) so that a retry judges the same way.

    `secrets`: per memory change (in the decision's order), the kinds of credential found
    in its RAW description and body (the stored decision is masked, so they cannot be
    looked for again); None: look in the changes as given. `shown`: the masked job text
    the model was shown, per job id; None for a decision stored before SPEC §11 (schema
    version 1), which is judged without §11's rules."""

    secrets: Sequence[Sequence[str]] | None = None
    shown: Mapping[str, evidence.ShownJob] | None = None
    piece_secrets: Sequence[str] | None = None


def secret_kinds(change: MemoryChange) -> list[str]:
    """The kinds of credential in a change's description and body, sorted, distinct."""
    return sorted(set(find_secrets(change.description or "") + find_secrets(change.body or "")))


@dataclass
class _Rules:
    """The §11 rules for one judgement: the grounds, and memory's texts to compare adds
    with (built once per decision)."""

    limits: Limits
    grounds: Grounds
    current: Mapping[str, MemoryEntry]
    texts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on:
            self.texts = {
                n: similarity.entry_text(e.description, e.body) for n, e in self.current.items()
            }

    @property
    def on(self) -> bool:
        return self.limits.evidence_rules and self.grounds.shown is not None

    def code(self, ch: MemoryChange) -> tuple[Code, str]:
        """`unsupported`, `untrusted_source`, `near_duplicate` (in SPEC §14's order), or ok."""
        if not self.on or ch.op not in ("add", "update"):
            return Code.OK, ""
        shown = evidence.shown_for(self.grounds.shown or {}, ch.job_id)
        found, detail = evidence.evidence_code(
            ch.op, ch.type, ch.evidence, shown, self.limits.trusted_line_pattern
        )
        if found is not None:
            return Code(found), detail
        if ch.op == "add" and ch.description is not None and ch.body is not None:
            near = similarity.nearest(similarity.entry_text(ch.description, ch.body), self.texts)
            if near is not None and near[1] >= self.limits.near_duplicate_threshold:
                return Code.NEAR_DUPLICATE, (
                    f"{near[1]:.2f} similar to the existing entry {near[0]!r}: update it instead"
                )
        return Code.OK, ""


@dataclass(frozen=True)
class MemoryJudgement:
    """Verdicts in the LLM's order, and each accepted change's target: entry or None (removed)."""

    verdicts: tuple[Verdict, ...]
    targets: Mapping[str, MemoryEntry | None]


def _verdict(ch: MemoryChange, code: Code, detail: str = "") -> Verdict:
    return Verdict(
        kind="memory",
        name=ch.name[:80],
        op=ch.op,
        accepted=code is Code.OK,
        code=code,
        detail=detail,
    )


def _unsafe_text(ch: MemoryChange) -> str:
    """Why the change's description is `invalid_text` (control, bidi or tag characters;
    line breaks are the one-line rule's, `missing_field`), or "" when it is not."""
    found = find_unsafe_chars((ch.description or "").strip(), allow="\n\r")
    if not found:
        return ""
    shown = ", ".join(escape_for_terminal(x, keep="") for x in found[:8])
    return f"description holds control, bidi or tag characters: {shown}"


def _shape_code(ch: MemoryChange, limits: Limits) -> tuple[Code, str]:
    """An add's or update's form: type known, fields present, sizes (SPEC §14's order:
    unknown_type, missing_field, body_too_large, description_too_large)."""
    if ch.type is not None and ch.type not in c.MEMORY_TYPES:
        return Code.UNKNOWN_TYPE, f"type {ch.type[:40]!r} is not one of {list(c.MEMORY_TYPES)}"
    if ch.description is None or ch.type is None or ch.body is None:
        return Code.MISSING_FIELD, "add/update needs description, type and body"
    if ch.merge_target is not None:  # SPEC §4: remove only; never silently ignored
        return Code.MISSING_FIELD, f"merge_target is for remove only, not {ch.op}"
    # Any line break (\r, \u2028, ...) would make an unreadable frontmatter.
    if ch.description.strip().splitlines() != [ch.description.strip()]:
        return Code.MISSING_FIELD, "description must be one non-empty line"
    size = len(ch.body.encode("utf-8"))
    if size > limits.max_body_bytes:
        return Code.BODY_TOO_LARGE, f"body is {size} bytes, limit {limits.max_body_bytes}"
    size = len(ch.description.encode("utf-8"))
    if size > c.MAX_DESCRIPTION_BYTES:  # it goes into the frontmatter and MEMORY.md
        return (
            Code.DESCRIPTION_TOO_LARGE,
            f"description is {size} bytes, limit {c.MAX_DESCRIPTION_BYTES}",
        )
    return Code.OK, ""


def _content_code(
    ch: MemoryChange,
    previous: MemoryEntry | None = None,
    secrets: Sequence[str] | None = None,
) -> tuple[Code, str]:
    """What an add's or update's text may not hold (its form was judged first):
    credentials (`secrets`: those found in the change's raw text, when it was judged
    before), and a dangerous directive the entry (`previous`, for an update) did not hold
    already."""
    assert ch.description is not None and ch.body is not None
    kinds = secret_kinds(ch) if secrets is None else secrets
    return _text_code(ch.description, ch.body, previous, kinds)


def _text_code(
    description: str, body: str, previous: MemoryEntry | None, kinds: Sequence[str]
) -> tuple[Code, str]:
    """What the text may not hold: a credential (`kinds`, `secret_detected`), then a
    dangerous directive the entry (`previous`, for an update) did not hold already
    (`dangerous_directive`)."""
    if kinds:
        return Code.SECRET_DETECTED, ", ".join(sorted(set(kinds)))
    before = (previous.description, previous.body) if previous is not None else ()
    directives = gained(before, (description, body))
    if directives:
        return Code.DANGEROUS_DIRECTIVE, "gains a " + ", a ".join(directives) + " directive"
    return Code.OK, ""


def _grounded(found: tuple[Code, str], rules: _Rules, ch: MemoryChange) -> tuple[Code, str]:
    """An add's or update's code: its content's, else SPEC §11's rules'."""
    return found if found[0] is not Code.OK else rules.code(ch)


def _judge_one(
    ch: MemoryChange,
    current: Mapping[str, MemoryEntry],
    unreadable: frozenset[str],
    rules: _Rules,
    secrets: Sequence[str] | None = None,
) -> tuple[Code, str]:
    """exists/not_found, protected, then the text and SPEC §11's rules (form judged)."""
    exists = ch.name in current or ch.name in unreadable
    if ch.op == "add":
        if exists:
            return Code.EXISTS, "an entry with this name exists; use update"
        return _grounded(_content_code(ch, secrets=secrets), rules, ch)
    if ch.name in unreadable:
        return Code.NOT_FOUND, "the entry's file is malformed; left for a human"
    entry = current.get(ch.name)
    if entry is None:
        return Code.NOT_FOUND, "no entry with this name"
    if entry.protected:
        return Code.PROTECTED, "the entry is marked protected: true"
    if ch.op == "update":
        return _grounded(_content_code(ch, entry, secrets), rules, ch)
    if ch.merge_target is not None and not c.SLUG_RE.fullmatch(ch.merge_target):
        return Code.MERGE_TARGET_MISSING, "merge_target is not a valid name"
    return Code.OK, ""


def _entry(ch: MemoryChange, protected: bool = False) -> MemoryEntry:
    assert ch.description is not None and ch.type is not None and ch.body is not None
    return MemoryEntry.model_validate(
        {
            "name": ch.name,
            "description": ch.description.strip(),
            "type": ch.type,
            "body": ch.body,
            "protected": protected,
        }
    )


def judge_memory_changes(
    changes: Sequence[MemoryChange],
    current: Mapping[str, MemoryEntry],
    limits: Limits,
    unreadable: frozenset[str] = frozenset(),
    grounds: Grounds | None = None,
) -> MemoryJudgement:
    """Judge each change against the current entries and the batch as a whole.

    `unreadable` names files that exist but are malformed: never overwritten or deleted.
    `grounds`: the stored secret verdicts and shown job text (None: secrets looked for
    in the changes as given, and no §11 rules).
    """
    rules = _Rules(limits, grounds or Grounds(), current)
    codes = _each_change(changes, current, unreadable, limits, rules)
    apply_batch_rules(changes, codes, current, limits.max_entries)  # linear (issue 22)
    targets: dict[str, MemoryEntry | None] = {}
    for ch, (code, _) in zip(changes, codes, strict=True):
        if code is Code.OK:
            targets[ch.name] = None if ch.op == "remove" else _entry(ch)
    verdicts = tuple(_verdict(ch, code, d) for ch, (code, d) in zip(changes, codes, strict=True))
    return MemoryJudgement(verdicts, targets)


def _name_problem(name: str) -> str:
    """Why `name` cannot name an entry ("" when it can)."""
    if not c.SLUG_RE.fullmatch(name):
        return "name must match " + c.SLUG_RE.pattern
    if name.casefold() in c.RESERVED_ENTRY_NAMES:
        # memory/memory.md is memory/MEMORY.md, the index, on a case-insensitive file system.
        return f"{name!r} is reserved (the index MEMORY.md)"
    return ""


def _each_change(
    changes: Sequence[MemoryChange],
    current: Mapping[str, MemoryEntry],
    unreadable: frozenset[str],
    limits: Limits,
    rules: _Rules | None = None,
) -> list[tuple[Code, str]]:
    """Each change's code judged on its own (and against the names earlier in the batch);
    `rules` None: without stored grounds, so without SPEC §11's rules."""
    rules = rules or _Rules(limits, Grounds(), current)
    secrets = rules.grounds.secrets
    codes: list[tuple[Code, str]] = []
    seen: set[str] = set()
    for i, ch in enumerate(changes):
        stored = secrets[i] if secrets is not None and i < len(secrets) else None
        code = _first_code(ch, seen, current, unreadable, limits, rules, stored)
        # Last in SPEC §14's order, but before the batch rules: a change past the cap is
        # not applied, so it may not hold a merge target alive nor take room.
        if code[0] is Code.OK and i >= limits.max_changes:
            code = (Code.TOO_MANY_CHANGES, f"at most {limits.max_changes} changes a run")
        codes.append(code)
        seen.add(ch.name)
    return codes


def _first_code(
    ch: MemoryChange,
    seen: set[str],
    current: Mapping[str, MemoryEntry],
    unreadable: frozenset[str],
    limits: Limits,
    rules: _Rules,
    secrets: Sequence[str] | None,
) -> tuple[Code, str]:
    """One change's code, the first rule of SPEC §14's order it breaks."""
    if problem := _name_problem(ch.name):
        return Code.INVALID_NAME, problem
    if problem := _unsafe_text(ch):
        return Code.INVALID_TEXT, problem
    if ch.op != "remove" and (shape := _shape_code(ch, limits))[0] is not Code.OK:
        return shape
    if ch.name in seen:
        return Code.DUPLICATE_IN_BATCH, "the same name is changed earlier in this batch"
    return _judge_one(ch, current, unreadable, rules, secrets)


def judge_piece_edit(
    edit: PieceEdit,
    *,
    piece_name: str,
    current_yaml: str,
    last_edit_at: datetime | None,
    now: datetime,
    cooldown_hours: float,
    secrets: Sequence[str] | None = None,
) -> Verdict:
    """The piece edit's verdict: cooldown, secrets, then validity/unchanged/escalation.

    `secrets`: the credentials found in the edit's raw YAML when it was judged before
    (the stored decision is masked); None: looked for in `edit` as given."""

    def verdict(code: Code, detail: str = "") -> Verdict:
        return Verdict(
            kind="piece",
            name=piece_name,
            op="edit",
            accepted=code is Code.OK,
            code=code,
            detail=detail,
        )

    if last_edit_at is not None and now - last_edit_at < timedelta(hours=cooldown_hours):
        return verdict(Code.PIECE_COOLDOWN, f"last edited {last_edit_at.isoformat()}")
    kinds = find_secrets(edit.yaml) if secrets is None else list(secrets)
    if kinds:
        return verdict(Code.SECRET_DETECTED, ", ".join(sorted(set(kinds))))
    # The model saw this piece with its credentials masked; its edit would drop them.
    kinds = find_secrets(current_yaml)
    if kinds:
        return verdict(
            Code.SECRET_DETECTED,
            "the current piece holds a credential (" + ", ".join(sorted(set(kinds))) + ")",
        )
    code, detail = check_piece_edit(current_yaml, edit.yaml, piece_name=piece_name)
    return verdict(code, detail)
