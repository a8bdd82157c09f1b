"""The batch rules of judging, in linear time: `merge_target_missing` and `memory_full`.

Pure. They judge a decision as a whole, once each change has its own code: a remove's
merge_target must exist once every accepted change is applied, and the user may not end
with more than `max_entries` entries. The rules interact (an add refused for room may be
a remove's merge target; a remove refused keeps its entry, which may be another remove's
target and takes room), so they were applied in turn until nothing changed, each pass
recomputing the final names for every rejection: quadratic, and a 17,500-change
decision held its user's lock for most of a minute (issue 22).

The verdicts are the same as that fixed point's, computed incrementally:

1. Removes whose merge_target can never exist (neither an entry now nor the name of an
   accepted change, or the remove's own name) are refused at once.
2. The other removes whose merge_target is missing afterwards are refused from the last
   one back; each refusal keeps its entry, which may rescue an earlier remove.
3. While the final count is over `max_entries`, accepted adds are refused from the last
   one back. A remove merging into a refused add can no longer succeed: it is refused
   (its entry stays, which takes room again), and step 3 goes on where it stopped.

Every change is visited a bounded number of times; `BatchJudge.steps` counts the visits,
for the tests that prove it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reflection.models import Code, MemoryChange, MemoryEntry

Codes = list[tuple[Code, str]]


def _missing(target: str | None) -> tuple[Code, str]:
    return Code.MERGE_TARGET_MISSING, f"{target!r} will not exist afterwards"


@dataclass
class BatchJudge:
    """Applies the batch rules to `codes` in place (call `run()` once)."""

    changes: Sequence[MemoryChange]
    codes: Codes
    current: Mapping[str, MemoryEntry]
    max_entries: int
    steps: int = 0  # changes visited, all passes together
    _final: set[str] = field(default_factory=set)

    def ok(self, i: int) -> bool:
        return self.codes[i][0] is Code.OK

    def run(self) -> None:
        n = len(self.changes)
        self._final = self._final_names()
        by_target: dict[str, list[int]] = defaultdict(list)  # OK merging removes by target
        for i, ch in enumerate(self.changes):
            self.steps += 1
            if ch.op == "remove" and ch.merge_target is not None and self.ok(i):
                by_target[ch.merge_target].append(i)
        self._impossible_targets(by_target)
        self._missing_targets(by_target)
        self._overflow(n, by_target)

    def _final_names(self) -> set[str]:
        """The entry names that exist once every accepted change is applied."""
        names = set(self.current)
        for ch, (code, _) in zip(self.changes, self.codes, strict=True):
            self.steps += 1
            if code is Code.OK:
                (names.discard if ch.op == "remove" else names.add)(ch.name)
        return names

    def _reject_remove(self, i: int) -> None:
        """Refuse remove `i`: its entry stays."""
        self.codes[i] = _missing(self.changes[i].merge_target)
        self._final.add(self.changes[i].name)

    def _impossible_targets(self, by_target: Mapping[str, list[int]]) -> None:
        possible = set(self.current) | {ch.name for i, ch in enumerate(self.changes) if self.ok(i)}
        for target, removes in by_target.items():
            for i in removes:
                self.steps += 1
                if target not in possible or target == self.changes[i].name:
                    self._reject_remove(i)

    def _missing_targets(self, by_target: Mapping[str, list[int]]) -> None:
        bad = sorted(
            i for target, removes in by_target.items() if target not in self._final
            for i in removes if self.ok(i)
        )  # fmt: skip
        for i in reversed(bad):
            self.steps += 1
            if self.changes[i].merge_target not in self._final:  # not rescued meanwhile
                self._reject_remove(i)

    def _overflow(self, n: int, by_target: Mapping[str, list[int]]) -> None:
        count = len(self._final)
        for i in reversed(range(n)):
            self.steps += 1
            if count <= self.max_entries:
                return
            ch = self.changes[i]
            if ch.op != "add" or not self.ok(i):
                continue
            self.codes[i] = (Code.MEMORY_FULL, f"at most {self.max_entries} entries")
            self._final.discard(ch.name)
            count -= 1
            for r in by_target.get(ch.name, ()):
                self.steps += 1
                if self.ok(r):
                    self._reject_remove(r)
                    count += 1


def apply_batch_rules(
    changes: Sequence[MemoryChange],
    codes: Codes,
    current: Mapping[str, MemoryEntry],
    max_entries: int,
) -> int:
    """Apply `merge_target_missing` and `memory_full` to `codes` in place; returns the
    number of steps taken (linear in the number of changes)."""
    judge = BatchJudge(changes, codes, current, max_entries)
    judge.run()
    return judge.steps
