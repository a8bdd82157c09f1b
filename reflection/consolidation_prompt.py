"""The consolidation pass's prompt (`prompts/consolidate.md`, `consolidate_user.md`):
every entry of the user's memory with its record (age, confirmations, last confirmed or
changed), credentials masked, bodies cut longest first (to a stub) when the whole does
not fit the context; `ContextOverflowError` when even that is too much (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from reflection.errors import ContextOverflowError
from reflection.models import MemoryEntry
from reflection.prompt import (
    BODY_STUB_BYTES,
    Prompt,
    _block,
    _cap_for,
    _template,
    _trim_body,
    estimate_tokens,
    reserved_tokens,
)
from reflection.records import EntryRecord
from reflection.secrets import mask_secrets


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.0f}"


def _record_attrs(record: EntryRecord | None, now: datetime) -> str:
    if record is None:
        return "record=none"
    confirmed = (
        "never"
        if record.confirmed_at is None
        else _days((now - record.confirmed_at).total_seconds())
    )
    return (
        f"age_days={_days(record.age(now).total_seconds())} "
        f"confirmations={record.confirmations} "
        f"last_confirmed_days={confirmed} "
        f"unconfirmed_unchanged_days={_days(record.unconfirmed_for(now).total_seconds())}"
    )


def _entry_block(entry: MemoryEntry, record: EntryRecord | None, now: datetime) -> str:
    attrs = f"name={entry.name} type={entry.type}" + (" protected=true" if entry.protected else "")
    return _block(
        "MEMORY_ENTRY",
        f"description: {entry.description}\n\n{entry.body}",
        f"{attrs} {_record_attrs(record, now)}",
    )


def build_system(
    *, max_changes: int, max_removals: int, stale_days: float, max_body_bytes: int
) -> str:
    return _template("consolidate.md").substitute(
        max_changes=max_changes,
        max_removals=max_removals,
        stale_days=f"{stale_days:g}",
        max_body_bytes=max_body_bytes,
    )


def build_user(
    memory: Sequence[MemoryEntry], records: Mapping[str, EntryRecord], now: datetime
) -> str:
    n = len(memory)
    return _template("consolidate_user.md").substitute(
        today=now.date().isoformat(),
        memory_note=f"{n} entr{'y' if n == 1 else 'ies'}",
        blocks="\n\n".join(_entry_block(e, records.get(e.name), now) for e in memory),
    )


def _tokens(system: str, user: str) -> int:
    size = len(system.encode("utf-8")) + len(user.encode("utf-8"))
    return min(size, estimate_tokens(system) + estimate_tokens(user))


def consolidation_prompt(
    memory: Sequence[MemoryEntry],
    records: Mapping[str, EntryRecord],
    now: datetime,
    *,
    system: str,
    context_limit_tokens: int,
    max_output_tokens: int,
) -> Prompt:
    """The two messages of a pass over `memory` (by name), fitted to the context."""
    safe = [
        e.model_copy(
            update={"description": mask_secrets(e.description), "body": mask_secrets(e.body)}
        )
        for e in sorted(memory, key=lambda e: e.name)
    ]
    budget = context_limit_tokens - max_output_tokens - reserved_tokens()
    shown = list(safe)
    user = build_user(shown, records, now)
    tokens = _tokens(system, user)
    cap = max((len(e.body.encode("utf-8")) for e in safe), default=0)
    while tokens > budget and cap > BODY_STUB_BYTES:
        over = -(-(tokens - budget) * 4 // 3)  # bytes, with a margin
        current = [len(e.body.encode("utf-8")) for e in shown]
        cap = max(BODY_STUB_BYTES, min(cap - 1, _cap_for(current, over)))
        shown = [e.model_copy(update={"body": _trim_body(e.body, cap)}) for e in safe]
        user = build_user(shown, records, now)
        tokens = _tokens(system, user)
    if tokens > budget:
        raise ContextOverflowError(
            f"the consolidation prompt needs about {tokens} tokens but {max(budget, 0)} fit, "
            f"even with every body cut to {BODY_STUB_BYTES} bytes ({len(memory)} entries)"
        )
    trimmed = sum(a.body != b.body for a, b in zip(safe, shown, strict=True))
    return Prompt(
        system=system,
        user=user,
        est_tokens=tokens,
        log_bytes_in_prompt=0,
        memory_bodies_trimmed=trimmed,
    )
