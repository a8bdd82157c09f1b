"""How alike two memory entries read: the `near_duplicate` measure (SPEC §11, §14).

Pure, no I/O, no dependency. An entry's text is its description and its body
(`entry_text`). It becomes a bag of content words: case folded; split into runs of letters
and digits, a version like `3.11` kept whole (so `pytest-xdist` counts as `pytest` and
`xdist`, `unittest.TestCase` as `unittest` and `testcase`); English function words and the
boilerplate of memory entries ("the user wants ...") dropped; each word cut to a crude stem
(`tests`, `testing`, `tested` -> `test`). A number (a version, a port, a limit) weighs
twice: on one topic the values are what tell two facts apart. An id that mixes letters and
digits (a job id quoted in a body) weighs as a word, since restatements quote other jobs.
The similarity is the cosine of the two weighted term-frequency vectors, in [0, 1].

Why this measure, and the default threshold, are measured on a table of paraphrases and of
distinct facts that share words (`tests/tables/near_duplicates.txt`); docs/memory.md,
"Near-duplicates", has the figures and `python -m tests.similarity_table` reproduces them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

# The table's best F1: precision 0.944, recall 0.962 there; thresholds picked on half the
# table land at 0.57 too and keep 0.944 / 0.932 on the other half (docs/memory.md).
DEFAULT_THRESHOLD: Final = 0.57

# A version or a dotted number stays one word; any other word is a run of letters and
# digits (so `pytest-xdist` is `pytest` and `xdist`, `unittest.TestCase` meets `unittest`).
_WORD: Final = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")
_NUMBER: Final = re.compile(r"[\d.]+")
_POSSESSIVE: Final = re.compile(r"['’]s\b|['’]")
NUMBER_WEIGHT: Final = 2.0

_STOP_TEXT: Final = """
    a about after all also am an and any are as at be been before being both but by can
    could did do does doesnt dont done each either for from had has have he her his how
    i if in into is isnt it its just me more most my no nor not of on once only onto
    or other our out over own same she should so some such than that the their them then
    there these they this those through to too under until up us very via was we were
    what when where which while who whom why will with would yet you your
    always never must shall may might whenever every instead rather
    use uses used using user users want wants wanted
"""
_STOP_WORDS: Final = frozenset(_STOP_TEXT.split())


def entry_text(description: str, body: str) -> str:
    """The text an entry is compared by: its description, then its body."""
    return f"{description}\n{body}"


def _stem(word: str) -> str:
    """A crude English stem: enough that a word's plural, past and -ing forms meet."""
    if len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "ly", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The content words of `text`, stemmed, in order (what the measure counts)."""
    words = _WORD.findall(_POSSESSIVE.sub("", text.casefold()))
    return [w if not w.isalpha() else _stem(w) for w in words if w not in _STOP_WORDS]


@lru_cache(maxsize=4096)
def _vector(text: str) -> tuple[dict[str, float], float]:
    """`text`'s weighted term frequencies and their norm; cached, since the same memory
    entries are compared with every add of a run."""
    weights = {
        term: count * (NUMBER_WEIGHT if _NUMBER.fullmatch(term) else 1.0)
        for term, count in Counter(terms(text)).items()
    }
    return weights, math.sqrt(sum(w * w for w in weights.values()))


def _cosine(a: tuple[dict[str, float], float], b: tuple[dict[str, float], float]) -> float:
    (wa, na), (wb, nb) = a, b
    if not na or not nb:
        return 0.0
    if len(wb) < len(wa):
        wa, wb = wb, wa
    dot = sum(w * wb[t] for t, w in wa.items() if t in wb)
    return min(1.0, dot / (na * nb))


def similarity(a: str, b: str) -> float:
    """How alike two entry texts read, from 0 (no content word shared) to 1 (the same
    words in the same proportions). Symmetric."""
    return _cosine(_vector(a), _vector(b))


def nearest(text: str, entries: Mapping[str, str]) -> tuple[str, float] | None:
    """The entry most similar to `text` and its score (ties: the smallest name), or None
    when `entries` (name -> entry text) is empty. Linear in the entries; each entry's
    vector is computed once and cached across calls."""
    best: tuple[str, float] | None = None
    probe = _vector(text)
    for name, other in entries.items():
        score = _cosine(probe, _vector(other))
        if best is None or score > best[1] or (score == best[1] and name < best[0]):
            best = (name, score)
    return best
