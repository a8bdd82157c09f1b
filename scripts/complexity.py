"""The complexity gate: no function or method under reflection/ or tasks/ graded D or
worse by radon's cyclomatic complexity, and at most MAX_C graded C.

radon counts every branch, comprehension and boolean operator; ruff's mccabe check
(C90) does not count comprehensions and ternaries, so this is the gate that holds.
Prints the offenders and exits 1 when the budget is exceeded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from radon.complexity import cc_rank, cc_visit
from radon.visitors import Class, Function

ROOTS = ("reflection", "tasks")
MAX_C = 8


def graded(root: Path) -> list[tuple[str, str, int]]:
    """(place, grade, complexity) of every function and method under the roots."""
    found: dict[str, tuple[str, str, int]] = {}  # a method is listed once, by its place
    for folder in ROOTS:
        for path in sorted((root / folder).rglob("*.py")):
            for block in cc_visit(path.read_text(encoding="utf-8")):
                functions = block.methods if isinstance(block, Class) else [block]
                for fn in functions:
                    assert isinstance(fn, Function)
                    name = f"{fn.classname}.{fn.name}" if fn.classname else fn.name
                    place = f"{path.relative_to(root)}:{fn.lineno} {name}"
                    found[place] = (place, cc_rank(fn.complexity), fn.complexity)
    return list(found.values())


def main() -> int:
    """Print the functions graded C or worse; 1 when the budget is exceeded."""
    root = Path(__file__).resolve().parents[1]
    worst = sorted((g for g in graded(root) if g[1] >= "C"), key=lambda g: -g[2])
    for place, grade, complexity in worst:
        print(f"{grade} ({complexity:2d}) {place}")
    graded_d = [g for g in worst if g[1] >= "D"]
    graded_c = len(worst) - len(graded_d)
    print(
        f"radon: {len(graded_d)} graded D or worse (0 allowed), {graded_c} graded C "
        f"({MAX_C} allowed)"
    )
    return 1 if graded_d or graded_c > MAX_C else 0


if __name__ == "__main__":
    sys.exit(main())
