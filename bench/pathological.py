"""Time the pure scanners on hostile input at two sizes: their cost must grow linearly.

    .venv/bin/python -m bench.pathological [--repeat 3] [--only reply,secrets,...]

The inputs are the unit tests' (tests/support/pathological.py, the secret detector's
prose): the tests check what the scanners answer on them, and never how long they take;
this times them. Each input is built at a size n and at 2n and scanned in this process
(CPU seconds, `time.process_time`, the best of `--repeat`, so a busy machine blurs it
less); the ratio t(2n) / t(n) is about 2 for a linear scan and 4 for a quadratic one.
The groups:

reply       `parse_decision` on the replies shaped against its scanner, at half the
            size limit and at the limit (a reply over it is refused unread: `over-long`,
            at 1 and 2 times the limit, should not grow at all)
secrets     `find_secrets` + `mask_secrets` on each shape of ~300 KB and ~600 KB, and
            `find_secrets` on 275 KB and 550 KB of prose
directives  `find_directives` on each long line, ~100 KB and ~200 KB
activity    `read_activity_log` of a sparse log of 2 GiB and 4 GiB (it reads the ends
            only: the ratio should be about 1)

Prints one row per input and, per group, the largest ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reflection.activity import read_activity_log  # noqa: E402
from reflection.constants import MAX_LLM_REPLY_CHARS  # noqa: E402
from reflection.directives import find_directives  # noqa: E402
from reflection.reply import DecisionParseError, parse_decision  # noqa: E402
from reflection.secrets import _spans, find_secrets, mask_secrets  # noqa: E402
from tests.support.pathological import directive_lines, reply_texts, secret_shapes  # noqa: E402
from tests.unit.test_secrets import NEGATIVES  # noqa: E402

GROUPS = ("reply", "secrets", "directives", "activity")
SECRETS_N = 300_000  # the unit test's size
DIRECTIVES_N = 20_000  # repetitions of each line's unit, the unit test's count
PROSE_COPIES = 200  # copies of the detector's negatives: the unit test's 275 KB
GIB = 2**30


@dataclass(frozen=True)
class Case:
    """One hostile input of a group: `run(k)` scans it built at size k·n (k = 1, 2)."""

    group: str
    name: str
    size: Callable[[int], int]
    run: Callable[[int], Callable[[], object]]


def best_cpu(call: Callable[[], object], repeat: int) -> float:
    """The least CPU seconds `call` took in `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def _table_case(
    group: str,
    name: str,
    table: Callable[[int], dict[str, str]],
    n: int,
    scan: Callable[[str], Callable[[], object]],
) -> Case:
    """The input `name` of `table(n * k)`, scanned by the call `scan` makes of it."""

    def text(k: int) -> str:
        return table(n * k)[name]

    return Case(group, name, lambda k: len(text(k)), lambda k: scan(text(k)))


def _refused(text: str) -> Callable[[], object]:
    def call() -> object:
        try:
            return parse_decision(text)
        except DecisionParseError as e:
            return e

    return call


def _find_and_mask(text: str) -> Callable[[], object]:
    def call() -> object:
        _spans.cache_clear()  # the detector caches its spans by text: scan afresh each call
        return find_secrets(text), mask_secrets(text)

    return call


def _find(text: str) -> Callable[[], object]:
    def call() -> object:
        _spans.cache_clear()
        return find_secrets(text)

    return call


def _directives(text: str) -> Callable[[], object]:
    return lambda: find_directives(text)


def _over_long(n: int) -> dict[str, str]:
    return {"over-long": "x" * (n + 1)}


def _prose(copies: int) -> dict[str, str]:
    return {"prose": "\n".join(NEGATIVES * copies)}


def _table_cases() -> Iterator[Case]:
    half = MAX_LLM_REPLY_CHARS // 2
    for name in reply_texts(half):
        yield _table_case("reply", name, reply_texts, half, _refused)
    yield _table_case("reply", "over-long", _over_long, MAX_LLM_REPLY_CHARS, _refused)
    for name in secret_shapes(SECRETS_N):
        yield _table_case("secrets", name, secret_shapes, SECRETS_N, _find_and_mask)
    yield _table_case("secrets", "prose", _prose, PROSE_COPIES, _find)
    for name in directive_lines(DIRECTIVES_N):
        yield _table_case("directives", name, directive_lines, DIRECTIVES_N, _directives)


def _sparse_log(folder: Path, size: int) -> Path:
    path = folder / f"activity-{size}.log"
    with path.open("wb") as f:
        f.write(b"BEGIN\n")
        f.truncate(size - 4)
        f.seek(size - 4)
        f.write(b"END\n")
    return path


def _activity_cases(folder: Path) -> Iterator[Case]:
    def size(k: int) -> int:
        return 2 * GIB * k + 4096

    def run(k: int) -> Callable[[], object]:
        path = _sparse_log(folder, size(k))
        return lambda: read_activity_log(path, 4096)

    yield Case("activity", "sparse log", size, run)


def cases(folder: Path) -> Iterator[Case]:
    yield from _table_cases()
    yield from _activity_cases(folder)


def measure(case: Case, repeat: int) -> tuple[float, float]:
    """CPU seconds of the case at n and at 2n (each input built before its clock starts)."""
    return best_cpu(case.run(1), repeat), best_cpu(case.run(2), repeat)


def _size(chars: int) -> str:
    return f"{chars / GIB:.0f} GiB" if chars >= GIB else f"{chars / 1000:.0f} KB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many calls")
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    worst: dict[str, float] = {}
    print(f"{'group':<11} {'input':<32} {'n':>9} {'t(n) ms':>9} {'t(2n) ms':>9} ratio")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(tmp)):
            if case.group not in only:
                continue
            one, two = measure(case, args.repeat)
            ratio = two / one if one > 0 else float("nan")
            worst[case.group] = max(worst.get(case.group, 0.0), ratio)
            print(
                f"{case.group:<11} {case.name:<32} {_size(case.size(1)):>9} "
                f"{one * 1000:>9.2f} {two * 1000:>9.2f} {ratio:5.2f}",
                flush=True,
            )
    for group, ratio in worst.items():
        print(f"largest ratio t(2n)/t(n), {group}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
