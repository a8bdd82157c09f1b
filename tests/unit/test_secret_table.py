"""The credential detector against its table (`tests/secret_table.py`): every credential
but the listed misses is found and masked away, no look-alike is flagged, and the figures
the docs report hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflection.secrets import find_secrets, mask_secrets
from tests.secret_table import KNOWN_MISSES, NEGATIVES, POSITIVES, Row, caught, leaks, score

FOUND = [r for r in POSITIVES if r.label not in KNOWN_MISSES]
MISSED = [r for r in POSITIVES if r.label in KNOWN_MISSES]


@pytest.mark.parametrize("row", FOUND, ids=[r.label for r in FOUND])
def test_credential_is_found_and_masked(row: Row) -> None:
    """The detector flags the credential, and masking leaves none of its ends."""
    assert find_secrets(row.text), row.text
    masked = mask_secrets(row.text)
    assert not leaks(row, masked), masked


@pytest.mark.parametrize("row", MISSED, ids=[r.label for r in MISSED])
def test_a_known_miss_is_still_missed(row: Row) -> None:
    """The misses the docs list are the detector's real ones: a rule that starts to catch
    one moves it out of KNOWN_MISSES (and the figures in docs/security.md change)."""
    assert not caught(row), KNOWN_MISSES[row.label]


@pytest.mark.parametrize("row", NEGATIVES, ids=[r.label for r in NEGATIVES])
def test_look_alike_is_not_flagged(row: Row) -> None:
    """Hashes, ids, digests, public keys, placeholders and prose are not credentials."""
    assert find_secrets(row.text) == []
    assert mask_secrets(row.text) == row.text


def test_the_table_is_large_and_its_labels_unique() -> None:
    """At least 80 credentials and 80 look-alikes, each row named once."""
    labels = [r.label for r in POSITIVES + NEGATIVES]
    assert len(POSITIVES) >= 80 and len(NEGATIVES) >= 80
    assert len(labels) == len(set(labels))
    assert all(r.secret for r in POSITIVES) and all(r.secret is None for r in NEGATIVES)


def test_recall_and_false_positive_rate_meet_the_bar() -> None:
    """Recall at least 0.98 and false-positive rate at most 0.02 over the whole table."""
    figures = score()
    assert figures.recall >= 0.98, figures.missed
    assert figures.false_positive_rate <= 0.02, figures.false_positives


def test_a_partial_mask_counts_as_a_miss() -> None:
    """The score is not fooled by a mask that leaves a key's first or last characters (the
    Stripe pattern alone stops after 24 characters of a 99-character key)."""
    key = "0123456789abcdefXYZ"
    row = Row("partial", f"key {key}", key)
    assert leaks(row, f"key [REDACTED:X]{key[-10:]}")
    assert leaks(row, f"key {key[:10]}[REDACTED:X]")
    assert not leaks(row, "key [REDACTED:X]")
    assert not caught(Row("clean", "nothing to see here", "nothing!"))


def test_the_docs_report_the_tables_figures() -> None:
    """docs/security.md states the table's current size, recall and false-positive rate."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    figures = score()
    found = figures.positives - len(figures.missed)
    assert (
        f"| credentials (recall) | {figures.positives} | {found} found: "
        f"**{figures.recall:.3f}** |" in docs
    )
    assert (
        f"| look-alikes (false-positive rate) | {figures.negatives} | "
        f"{len(figures.false_positives)} flagged: **{figures.false_positive_rate:.3f}** |" in docs
    )
