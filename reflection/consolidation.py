"""Judge a consolidation pass (SPEC §11, §14): pure, like `reflection.changes`.

A consolidation answer may only `update` and `remove`: merge paraphrases into one entry
(update the kept one, remove the others with `merge_target`), retire stale entries
(remove with a `reason`), sharpen descriptions. Its changes are judged as a reflection's
(`judge_memory_changes`: names, fields, sizes, secrets, protection, merge targets), then
by the pass's own rules, each code in the order of SPEC §14:

    op_not_allowed      an `add` (or a piece edit): the pass adds nothing
    not_stale           a remove without merge_target whose entry was confirmed or changed
                        within `stale_days`, or that gives no `reason`
    merge_target_missing  (as in a reflection; an add never counts as a target)
    too_many_removals   past `max_removals` accepted removals; and every change of a pass
                        whose removals would leave fewer than half the live entries
    too_many_changes    past `max_changes` (the pass's own cap; still judged first)

`op_not_allowed` is checked first: it is about the op itself, before anything in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reflection.changes import Grounds, Limits, MemoryJudgement, judge_memory_changes
from reflection.models import Code, MemoryChange, MemoryEntry, PieceEdit, Verdict
from reflection.records import EntryRecord

REASONS = ("scheduled", "threshold", "operator")
SWEEP_USER = "*"  # beat's `user_id`: one pass per user reflected since their last


@dataclass(frozen=True)
class PassLimits:
    """The bounds of one pass (from settings)."""

    max_changes: int = 24
    max_removals: int = 10
    stale_days: float = 90.0
    max_body_bytes: int = 8192


def is_stale(record: EntryRecord | None, now: datetime, stale_days: float) -> bool:
    """Whether an entry went unconfirmed and unchanged for `stale_days` (an entry with no
    record, found on disk and not yet recorded, is not known to be stale)."""
    if record is None:
        return False
    return record.unconfirmed_for(now) >= timedelta(days=stale_days)


def judge_pass(
    changes: Sequence[MemoryChange],
    *,
    memory: Mapping[str, MemoryEntry],
    records: Mapping[str, EntryRecord],
    limits: PassLimits,
    now: datetime,
    unreadable: frozenset[str] = frozenset(),
    piece_edit: PieceEdit | None = None,
    secrets: Sequence[Sequence[str]] | None = None,
) -> MemoryJudgement:
    """Every change of a consolidation answer judged against the user's memory and its
    records (read under the lock); verdicts in the answer's order, a piece edit's last.
    `secrets`: per change, the credentials found in its raw text (the claim keeps the
    answer masked); None: looked for in the changes as given."""
    codes, base = _as_reflection(changes, memory, limits, unreadable, secrets)
    _judge_staleness(changes, codes, records, now, limits.stale_days)
    _cap_removals(changes, codes, memory, limits.max_removals)
    _cap_changes(codes, limits.max_changes)
    targets = {
        ch.name: None if ch.op == "remove" else base[ch.name]
        for ch, (code, _) in zip(changes, codes, strict=True)
        if code is Code.OK
    }
    verdicts = [_verdict(ch, code, d) for ch, (code, d) in zip(changes, codes, strict=True)]
    return MemoryJudgement(tuple(verdicts) + _piece_verdicts(piece_edit), targets)


def _piece_verdicts(piece_edit: PieceEdit | None) -> tuple[Verdict, ...]:
    return () if piece_edit is None else (_PIECE_REFUSED,)


def _judge_staleness(
    changes: Sequence[MemoryChange],
    codes: list[tuple[Code, str]],
    records: Mapping[str, EntryRecord],
    now: datetime,
    stale_days: float,
) -> None:
    """Each remove that merges nothing, accepted so far, must retire a stale entry."""
    for i, ch in enumerate(changes):
        if codes[i][0] is Code.OK and ch.op == "remove" and ch.merge_target is None:
            codes[i] = _staleness(ch, records.get(ch.name), now, stale_days)


_PIECE_REFUSED = Verdict(
    kind="piece",
    name="-",
    op="edit",
    accepted=False,
    code=Code.OP_NOT_ALLOWED,
    detail="a consolidation edits no piece",
)


def _as_reflection(
    changes: Sequence[MemoryChange],
    memory: Mapping[str, MemoryEntry],
    limits: PassLimits,
    unreadable: frozenset[str],
    secrets: Sequence[Sequence[str]] | None = None,
) -> tuple[list[tuple[Code, str]], Mapping[str, MemoryEntry | None]]:
    """Each change's code as a reflection judges it, adds refused first (an add is no
    merge target either), without a change cap (the pass's is applied last); and the
    entries the accepted updates write."""
    kept = [i for i, ch in enumerate(changes) if ch.op != "add"]
    base = judge_memory_changes(
        [changes[i] for i in kept],
        memory,
        Limits(max_changes=len(changes) + 1, max_body_bytes=limits.max_body_bytes),
        unreadable,
        # No `shown` job: a pass has no job to quote, so SPEC §11's evidence rules are off.
        Grounds(secrets=[secrets[i] for i in kept]) if secrets is not None else None,
    )
    codes: list[tuple[Code, str]] = [
        (Code.OP_NOT_ALLOWED, "a consolidation only updates and removes")
    ] * len(changes)
    for i, v in zip(kept, base.verdicts, strict=True):
        codes[i] = (v.code, v.detail)
    return codes, base.targets


def _staleness(
    ch: MemoryChange, record: EntryRecord | None, now: datetime, stale_days: float
) -> tuple[Code, str]:
    """A remove that merges nothing retires a stale entry, and says why."""
    if not (ch.reason or "").strip():
        return Code.NOT_STALE, "a remove without merge_target needs a reason"
    if not is_stale(record, now, stale_days):
        since = "never recorded" if record is None else _ago(record.unconfirmed_for(now))
        return (
            Code.NOT_STALE,
            f"confirmed or changed within {stale_days:g} days (last: {since})",
        )
    return Code.OK, ""


def _ago(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f} days ago"


def _cap_removals(
    changes: Sequence[MemoryChange],
    codes: list[tuple[Code, str]],
    memory: Mapping[str, MemoryEntry],
    max_removals: int,
) -> None:
    """At most `max_removals` removals (the later ones are refused); a pass whose
    removals (as judged so far, before that cap) would leave fewer than half the live
    entries is refused whole."""
    removes = [i for i, ch in enumerate(changes) if ch.op == "remove" and codes[i][0] is Code.OK]
    live = len(memory)
    if removes and 2 * (live - len(removes)) < live:
        detail = f"{len(removes)} of {live} entries removed in one pass: fewer than half left"
        codes[:] = [(Code.TOO_MANY_REMOVALS, detail)] * len(codes)
        return
    for i in removes[max_removals:]:
        codes[i] = (Code.TOO_MANY_REMOVALS, f"at most {max_removals} removals a pass")


def _cap_changes(codes: list[tuple[Code, str]], max_changes: int) -> None:
    """Past the pass's cap, a change otherwise accepted is refused."""
    for i in range(max_changes, len(codes)):
        if codes[i][0] is Code.OK:
            codes[i] = (Code.TOO_MANY_CHANGES, f"at most {max_changes} changes a pass")


def _verdict(ch: MemoryChange, code: Code, detail: str) -> Verdict:
    return Verdict(
        kind="memory",
        name=ch.name[:80],
        op=ch.op,
        accepted=code is Code.OK,
        code=code,
        detail=detail,
    )
