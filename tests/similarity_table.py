"""The near-duplicate table: precision, recall and F1 of `reflection.similarity` per threshold.

    python -m tests.similarity_table              # a sweep of thresholds
    python -m tests.similarity_table --misses     # the pairs judged wrong at the default
    python -m tests.similarity_table --holdout    # tuned on half the table, tried on the rest

The table is `tests/tables/near_duplicates.txt` (its header says how it is written and
what counts as a paraphrase); docs/memory.md quotes what this prints.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reflection.similarity import DEFAULT_THRESHOLD, entry_text, nearest, similarity

TABLE = Path(__file__).resolve().parent / "tables" / "near_duplicates.txt"
SECTIONS = ("paraphrases", "distinct")


@dataclass(frozen=True)
class Pair:
    """Two entry texts (description + body) and whether the second restates the first."""

    a: str
    b: str
    duplicate: bool

    @property
    def score(self) -> float:
        return similarity(self.a, self.b)

    def title(self) -> str:
        return f"{self.a.splitlines()[0]!r} ~ {self.b.splitlines()[0]!r}"


def _entry(line: str) -> str:
    description, sep, body = line.partition(" | ")
    if not sep:
        raise ValueError(f"an entry line is 'description | body': {line!r}")
    return entry_text(description.strip(), body.strip())


def load_table(path: Path = TABLE) -> list[Pair]:
    """The table's pairs, paraphrases and distinct facts."""
    pairs: list[Pair] = []
    section: str | None = None
    block: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("## "):
            section = line[3:].strip()
            if section not in SECTIONS:
                raise ValueError(f"unknown section {section!r}")
        elif line.startswith("#"):
            continue
        elif line.strip():
            block.append(line)
        elif block:
            if len(block) != 2 or section is None:
                raise ValueError(f"a pair is two entry lines under a section: {block!r}")
            pairs.append(Pair(_entry(block[0]), _entry(block[1]), section == "paraphrases"))
            block = []
    return pairs


@dataclass(frozen=True)
class Confusion:
    """How the table fares at one threshold."""

    threshold: float
    true_pos: int
    false_pos: int
    false_neg: int

    @property
    def precision(self) -> float:
        hits = self.true_pos + self.false_pos
        return self.true_pos / hits if hits else 1.0

    @property
    def recall(self) -> float:
        positives = self.true_pos + self.false_neg
        return self.true_pos / positives if positives else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def confusion(pairs: Sequence[Pair], threshold: float) -> Confusion:
    """Counts of right and wrong near_duplicate verdicts at `threshold`."""
    hits = [(p.duplicate, p.score >= threshold) for p in pairs]
    return Confusion(
        threshold,
        true_pos=sum(dup and hit for dup, hit in hits),
        false_pos=sum(hit and not dup for dup, hit in hits),
        false_neg=sum(dup and not hit for dup, hit in hits),
    )


def _paraphrase_classes(pairs: Sequence[Pair]) -> dict[str, str]:
    """Each entry text -> a representative of the texts it restates (through any chain of
    paraphrase pairs)."""
    parent: dict[str, str] = {}

    def root(text: str) -> str:
        while parent.setdefault(text, text) != text:
            text = parent[text]
        return text

    for p in pairs:
        if p.duplicate:
            parent[root(p.a)] = root(p.b)
    return {text: root(text) for p in pairs for text in (p.a, p.b)}


def memory_confusion(pairs: Sequence[Pair], threshold: float) -> Confusion:
    """The table as a user's memory, judged the way the worker will use `nearest`: the
    first entry of every paraphrase pair is in memory (one entry per fact); every pair's
    second entry is an add. A hit is right when the entry it names is one the add restates;
    a hit on a distinct fact, or naming the wrong entry, is false."""
    same = _paraphrase_classes(pairs)
    memory = {
        f"m{i}": text for i, text in enumerate(dict.fromkeys(p.a for p in pairs if p.duplicate))
    }
    true_pos = false_pos = 0
    for p in pairs:
        found = nearest(p.b, {name: text for name, text in memory.items() if text != p.b})
        if found is None or found[1] < threshold:
            continue
        right = p.duplicate and same[memory[found[0]]] == same[p.b]
        true_pos += right
        false_pos += not right
    return Confusion(threshold, true_pos, false_pos, sum(p.duplicate for p in pairs) - true_pos)


def best_threshold(pairs: Sequence[Pair]) -> float:
    """The threshold (in hundredths) with the best F1 on `pairs`; the highest on a tie."""
    return max((step / 100 for step in range(101)), key=lambda t: (confusion(pairs, t).f1, t))


@dataclass(frozen=True)
class Holdout:
    """Tuning on half the table, judged on the other half: the median threshold chosen
    and the mean precision, recall and F1 on the held-out halves."""

    threshold: float
    precision: float
    recall: float
    f1: float


def holdout(pairs: Sequence[Pair], rounds: int = 200, seed: int = 0) -> Holdout:
    """What tuning on the table promises elsewhere: `rounds` times, the threshold with the
    best F1 on a random half (half the paraphrases, half the distinct pairs) is tried on
    the other half."""
    rng = random.Random(seed)
    chosen: list[float] = []
    results: list[Confusion] = []
    for _ in range(rounds):
        tune: list[Pair] = []
        test: list[Pair] = []
        for duplicate in (True, False):
            group = [p for p in pairs if p.duplicate is duplicate]
            rng.shuffle(group)
            tune += group[: len(group) // 2]
            test += group[len(group) // 2 :]
        chosen.append(best_threshold(tune))
        results.append(confusion(test, chosen[-1]))
    return Holdout(
        statistics.median(chosen),
        statistics.mean(c.precision for c in results),
        statistics.mean(c.recall for c in results),
        statistics.mean(c.f1 for c in results),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the sweep (or the misjudged pairs) for the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--misses", action="store_true", help="list pairs judged wrong")
    parser.add_argument("--holdout", action="store_true", help="tune on halves, test the rest")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)
    pairs = load_table()
    if args.holdout:
        h = holdout(pairs)
        print(f"200 random halvings: threshold chosen (median) {h.threshold:.2f}; on the held-out")
        print(f"halves precision {h.precision:.3f}, recall {h.recall:.3f}, F1 {h.f1:.3f}")
        return 0
    if args.misses:
        for p in sorted(pairs, key=lambda p: p.score):
            if p.duplicate != (p.score >= args.threshold):
                kind = "missed paraphrase" if p.duplicate else "false hit"
                print(f"{p.score:.2f}  {kind:17}  {p.title()}")
        return 0
    n_dup = sum(p.duplicate for p in pairs)
    print(f"{n_dup} paraphrase pairs, {len(pairs) - n_dup} distinct pairs")
    print("           pair by pair                      as a memory (nearest)")
    print("threshold  precision recall  F1     false  precision recall  F1     false")
    for threshold in sorted({step / 100 for step in range(30, 85, 5)} | {DEFAULT_THRESHOLD}):
        row = [confusion(pairs, threshold), memory_confusion(pairs, threshold)]
        cells = "  ".join(
            f"{c.precision:9.3f} {c.recall:6.3f}  {c.f1:.3f}  {c.false_pos:5d}" for c in row
        )
        mark = "  <- default" if abs(threshold - DEFAULT_THRESHOLD) < 1e-9 else ""
        print(f"{threshold:9.2f}  {cells}{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
