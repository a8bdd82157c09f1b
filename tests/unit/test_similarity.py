"""The near_duplicate measure: its words, its scores, and its figures on the paraphrase table."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflection.similarity import DEFAULT_THRESHOLD, entry_text, nearest, similarity, terms
from tests.similarity_table import confusion, holdout, load_table, memory_confusion

TABLE = load_table()


def test_the_table_is_large_enough_to_tune_on() -> None:
    """At least 40 paraphrase pairs and 40 distinct pairs that share words."""
    assert sum(p.duplicate for p in TABLE) >= 40
    assert sum(not p.duplicate for p in TABLE) >= 40
    shared = [len(set(terms(p.a)) & set(terms(p.b))) for p in TABLE if not p.duplicate]
    assert sum(n >= 2 for n in shared) >= 40


def test_precision_and_recall_at_the_default_threshold() -> None:
    """At the default: precision 0.944 (3 false of 60), recall 0.962 (2 of 53 missed)."""
    c = confusion(TABLE, DEFAULT_THRESHOLD)
    assert (c.true_pos, c.false_pos, c.false_neg) == (51, 3, 2)
    assert c.precision >= 0.94 and c.recall >= 0.96


def test_the_default_is_what_the_table_supports() -> None:
    """No threshold has a better F1 than the default; SPEC's 0.8 misses most paraphrases."""
    best = max(confusion(TABLE, step / 100).f1 for step in range(101))
    assert confusion(TABLE, DEFAULT_THRESHOLD).f1 == best
    assert confusion(TABLE, 0.8).recall < 0.5


def test_tuning_on_half_the_table_holds_on_the_other_half() -> None:
    """Thresholds chosen on random halves stay near the default and keep their figures."""
    h = holdout(TABLE, rounds=20)
    assert abs(h.threshold - DEFAULT_THRESHOLD) <= 0.03
    assert h.precision >= 0.9 and h.recall >= 0.9


PYTEST = {
    "prefers-pytest": entry_text(
        "Wants tests written with pytest, never unittest",
        "The user rejected a unittest suite in job 7f3c; use pytest fixtures.",
    ),
    "use-pytest": entry_text(
        "Use pytest for all tests",
        "Write tests with pytest and fixtures; the user does not want unittest.TestCase classes.",
    ),
    "pytest-not-unittest": entry_text(
        "pytest, not unittest",
        "Don't write unittest classes. The user only accepts pytest-style tests with fixtures "
        "and parametrize.",
    ),
}


@pytest.mark.parametrize(
    ("a", "b", "duplicate"),
    [
        (PYTEST["prefers-pytest"], PYTEST["use-pytest"], True),
        (PYTEST["prefers-pytest"], PYTEST["pytest-not-unittest"], True),
        (PYTEST["use-pytest"], PYTEST["pytest-not-unittest"], True),
        (
            entry_text("Staging DB is Postgres 15", "Staging uses PostgreSQL 15."),
            entry_text("Prod DB is Postgres 16", "Production uses PostgreSQL 16."),
            False,
        ),
        (
            entry_text("Prefers pytest for unit tests", "Unit tests use pytest fixtures."),
            entry_text("pytest-xdist for parallel runs", "Run the slow suite with pytest -n 8."),
            False,
        ),
        (
            entry_text("Deploy with helm", "Billing deploys with helm upgrade --install."),
            entry_text("Helm deploys billing", "Use helm upgrade --install to deploy billing."),
            True,
        ),
    ],
)
def test_the_issues_examples(a: str, b: str, duplicate: bool) -> None:
    """The paraphrases issue 21 names are near-duplicates; facts that only share words are not."""
    assert (similarity(a, b) >= DEFAULT_THRESHOLD) is duplicate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tests, testing, tested", ["test", "test", "test"]),
        ("The user wants to always use it", []),
        ("Python 3.11 on port 5432", ["python", "3.11", "port", "5432"]),
        ("pytest-xdist and unittest.TestCase", ["pytest", "xdist", "unittest", "testcas"]),
        ("the user's httpx’s client", ["httpx", "client"]),
        ("Don't skip hooks", ["skip", "hook"]),
        ("dependencies and policies", ["dependency", "policy"]),
        ("classes pass process", ["class", "pass", "process"]),
        ("factory_boy in job 7f3c", ["factory", "boy", "job", "7f3c"]),
        ("Übergabe an München", ["übergab", "münchen"]),
    ],
)
def test_terms(text: str, expected: list[str]) -> None:
    """Content words: case folded, stop words out, crude stems, versions whole."""
    assert terms(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "score"),
    [
        ("uses uv for installs", "uses uv for installs", 1.0),
        ("Uses UV for installs.", "uses uv, for installing", 1.0),
        ("uses uv", "prefers poetry", 0.0),
        ("", "anything", 0.0),
        ("the and of", "the and of", 0.0),
    ],
)
def test_similarity_bounds(a: str, b: str, score: float) -> None:
    """Same words score 1 (case, punctuation and word forms aside); none shared score 0."""
    assert similarity(a, b) == pytest.approx(score)


def test_similarity_is_symmetric_and_in_range() -> None:
    """similarity(a, b) == similarity(b, a), always within [0, 1]."""
    for p in TABLE:
        s = similarity(p.a, p.b)
        assert 0.0 <= s <= 1.0
        assert s == pytest.approx(similarity(p.b, p.a))


def test_a_shared_number_counts_double() -> None:
    """Numbers (versions, ports, limits) weigh twice a word: they tell facts apart."""
    base = "staging database postgres"
    same = similarity(f"{base} 15", f"{base} 15 host")
    other = similarity(f"{base} 15", f"{base} 16 host")
    word = similarity(f"{base} fifteen", f"{base} sixteen host")
    assert same > word > other


def test_nearest_picks_the_most_similar_entry() -> None:
    """The best-scoring entry and its score; None without entries."""
    entries = dict(PYTEST) | {"uses-uv": entry_text("Uses uv", "Never pip install; uv sync.")}
    probe = entry_text("pytest only", "The user wants pytest tests with fixtures, no unittest.")
    name, score = nearest(probe, entries) or ("", 0.0)
    assert name in PYTEST and score == max(similarity(probe, t) for t in entries.values())
    assert nearest(probe, {}) is None
    assert nearest("zebra", {"b": "apple", "a": "pear"}) == ("a", 0.0)


def test_as_a_memory_nearest_names_the_restated_entry() -> None:
    """Through `nearest` over a memory: 51 of 53 paraphrases name their entry, 3 false hits."""
    c = memory_confusion(TABLE, DEFAULT_THRESHOLD)
    assert (c.true_pos, c.false_pos, c.false_neg) == (51, 3, 2)


def test_the_table_loader_refuses_a_malformed_pair(tmp_path: Path) -> None:
    """A pair of one line, or an entry without ` | `, is an error, not a silent skip."""
    bad = tmp_path / "t.txt"
    bad.write_text("## paraphrases\n\na | b\n\nc | d\ne | f\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two entry lines"):
        load_table(bad)
    bad.write_text("## distinct\n\na | b\nno separator\n", encoding="utf-8")
    with pytest.raises(ValueError, match="description"):
        load_table(bad)
