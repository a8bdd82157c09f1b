"""Credentials: refused in memory and pieces (`secret_detected`), masked in the snapshot's
meta, in the prompt sent to the LLM and in the worker's log lines."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reflection.activity import truncate_middle
from reflection.logs import configure_logging
from tests.hostile.conftest import Hostile, add, decision, edit, expect, movement, piece_yaml

pytestmark = pytest.mark.integration

AWS = "AKIAIOSFODNN7EXAMPLE"
OPENAI = "sk-proj-Zq4T8vLw2NcR7yXb5KmP1sHd9GfJ3aEu"
GITHUB = "ghp_Zq4T8vLw2NcR7yXb5KmP1sHd9GfJ3aEuQ0Wx"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA7vJq3xK9mP2nQ8rT5wY1zB4cD6eF0gH3iJ7kL9mN2oP5qR8s\n"
    "T1uV4wX7yZ0aB3cD6eF9gH2iJ5kL8mN1oP4qR7sT0uV3wX6yZ9aB2cD5eF8gH1iJ\n"
    "-----END RSA PRIVATE KEY-----"
)


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


JWT = (
    _b64({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64({"sub": "1234567890", "name": "admin", "iat": 1516239022})
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
URL_PASSWORD = "postgres://app:Tr0ub4dor&3!@db.internal:5432/prod"


def all_text(root: Path) -> str:
    """Every regular file under `root`, as text."""
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


# (case id, memory change carrying a credential, the credential)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("aws-key-body", add("aws", f"Deploy with {AWS}."), AWS),
    ("llm-key-body", add("llm", f"The gateway key is {OPENAI}"), OPENAI),
    ("github-token-description", add("gh", description=f"token {GITHUB}"), GITHUB),
    ("private-key-body", add("ssh", f"Use this key:\n{PEM}\n"), "MIIEowIBAAKCAQEA7vJq3xK9"),
    ("jwt-body", add("jwt", f"Session: {JWT}"), JWT),
    ("password-in-url", add("db", f"Connect with {URL_PASSWORD}"), "Tr0ub4dor&3!"),
    ("password-assignment", add("pw", "DB_PASSWORD=hunter2-Pr0d!"), "hunter2-Pr0d!"),
    ("update-with-key", {**add("existing", f"now {AWS}"), "op": "update"}, AWS),
]


@pytest.mark.parametrize(("case", "change", "secret"), REFUSED, ids=[r[0] for r in REFUSED])
def test_credential_in_memory_is_refused_and_stored_nowhere(
    hostile: Hostile, case: str, change: dict[str, Any], secret: str
) -> None:
    """A change carrying a credential is secret_detected; no file holds the credential."""
    hostile.entry("existing")
    hostile.env.settings(store_llm_raw=True)
    said = f"{change.get('description')} {change.get('body')}"
    report = hostile.run(f"job-{case}", decision(f"saving {said}", [change]))
    expect(report, ["secret_detected"])
    assert secret not in all_text(hostile.tmp)
    assert report.snapshot_dir is not None
    meta = json.loads((report.snapshot_dir / "meta.json").read_text())
    assert "[REDACTED:" in meta["reasoning"] and "[REDACTED:" in meta["llm_raw"]


def test_credential_as_name_or_type_is_masked_in_the_snapshot(hostile: Hostile) -> None:
    """A credential in a rejected name or type never reaches meta.json verbatim."""
    changes = [add(OPENAI), add("typed", type=f"user {AWS}")]
    report = hostile.run("job-name-secret", decision("x", changes))
    expect(report, ["invalid_name", "unknown_type"])
    assert OPENAI not in all_text(hostile.tmp) and AWS not in all_text(hostile.tmp)
    assert "[REDACTED:" in report.verdicts[0].name


def test_credential_in_piece_edit_is_refused(hostile: Hostile) -> None:
    """A piece edit that embeds a key is secret_detected and never written."""
    text = piece_yaml(lambda d: movement(d, "implement").update(instruction=f"export K={OPENAI}"))
    expect(hostile.run("job-piece-secret", edit(text)), ["secret_detected"])
    assert OPENAI not in all_text(hostile.tmp)


def test_prompt_masks_every_input(hostile: Hostile) -> None:
    """Log, request, result, memory and piece credentials reach the LLM only masked."""
    hostile.entry("creds", f"The staging key is {AWS}")
    copy = hostile.user().piece_copy("default")
    copy.parent.mkdir(parents=True)
    copy.write_text(
        piece_yaml(lambda d: movement(d, "plan").update(instruction=f"Use {GITHUB} to read."))
    )
    log = hostile.user().activity_log("job-prompt")
    log.parent.mkdir(parents=True)
    log.write_text(f"setup\nexport OPENAI_API_KEY={OPENAI}\nAuthorization: Bearer {JWT}\nok\n")
    job_kw = {"task": f"Rotate {URL_PASSWORD}", "result": f"new key {PEM}"}
    edit_text = piece_yaml(lambda d: movement(d, "plan").update(instruction="Read first."))
    report = hostile.run("job-prompt", edit(edit_text), job_kw=job_kw)
    expect(report, ["secret_detected"])  # the user's copy holds a token: not editable
    messages = hostile.env.llm.requests[-1]["json"]["messages"]
    sent = json.dumps(messages)
    for secret in (AWS, GITHUB, OPENAI, JWT, "Tr0ub4dor", "MIIEowIBAAKCAQEA7vJq3xK9"):
        assert secret not in sent, secret
    assert sent.count("[REDACTED:") >= 6


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The worker's own log handler (format and masking filter), writing to a buffer."""
    logger = logging.getLogger("reflection")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    configure_logging("text")
    buf = io.StringIO()
    [handler] = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    yield buf
    logger.handlers, logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def test_log_lines_mask_credentials(hostile: Hostile, worker_log: io.StringIO) -> None:
    """Ids and messages that carry a credential are masked in the worker's log lines."""
    report = hostile.run(GITHUB, make_job=False)  # a job id that is a token: job_not_found
    expect(report, "job_not_found")
    bad = f"not json at all {OPENAI} {AWS}"
    expect(hostile.run("job-log-llm", bad), "llm_invalid_output")
    err = worker_log.getvalue()
    assert "job_not_found" in err and "llm_invalid_output" in err
    for secret in (GITHUB, OPENAI, AWS):
        assert secret not in err
    assert "[REDACTED:" in err


# Issue 22: shapes the detector let through, each reproduced against the real pipeline.
_B64_KEY = "q8Zt4Lw9Xk2Pn7Rm" + "3Vb6Yc1Hd5Jf0Gs8Ta4Ue2Wi6Oy="
_HEX_KEY = "3f9a8b7c6d5e4f3a" + "2b1c0d9e8f7a6b5c4d3e2f1a"
_VAULT = "hvs." + "CAESIJ2kqzLxWq8m3N5Ytp4RvB7uKe9fH1sXj0Z"
MISSED_BEFORE: list[tuple[str, str, str]] = [
    ("env-base64-key", f"Set ENCRYPTION_KEY={_B64_KEY} in prod.", _B64_KEY),
    ("curl-user-pass", "Probe with curl -u admin:pass https://api.internal/health", "admin:pass"),
    ("mysql-attached", "Restore with mysql -uroot -pS3cretPw9 app < dump.sql", "S3cretPw9"),
    ("password-option", "Deploy with ./deploy.sh --password hunter2x", "hunter2x"),
    ("sshpass", "Copy with sshpass -p 'Tr0ub4dor' scp a host:/b", "Tr0ub4dor"),
    ("docker-login", "Log in: docker login -u bot -p Zx9qW2erT5 registry.io", "Zx9qW2erT5"),
    ("token-header", f"Send Authorization: Token {_HEX_KEY}", _HEX_KEY),
    ("vault-token", f"Vault token {_VAULT} for migrations", _VAULT),
    ("hex-key-prose", f"The signing key is {_HEX_KEY}.", _HEX_KEY),
]


@pytest.mark.parametrize(
    ("case", "body", "secret"), MISSED_BEFORE, ids=[m[0] for m in MISSED_BEFORE]
)
def test_a_shape_missed_before_is_refused_and_stored_nowhere(
    hostile: Hostile, case: str, body: str, secret: str
) -> None:
    """Each credential shape of issue 22 in a memory body is secret_detected; no file the
    run writes holds it, and the snapshot's reasoning holds it masked."""
    report = hostile.run(f"job-{case}", decision(f"saving: {body}", [add(case, body)]))
    expect(report, ["secret_detected"])
    assert secret not in all_text(hostile.tmp)
    assert report.snapshot_dir is not None
    meta = json.loads((report.snapshot_dir / "meta.json").read_text())
    assert "[REDACTED:" in meta["reasoning"]


def test_a_shape_missed_before_reaches_the_model_masked(hostile: Hostile) -> None:
    """The same shapes in the activity log reach the LLM only masked."""
    log = hostile.user().activity_log("job-log-shapes")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"[00:00:{i:02d}] {m[1]}\n" for i, m in enumerate(MISSED_BEFORE)))
    expect(hostile.run("job-log-shapes", decision("nothing to keep")), [])
    sent = json.dumps(hostile.env.llm.requests[-1]["json"]["messages"])
    for case, _, secret in MISSED_BEFORE:
        assert secret not in sent, case


@pytest.mark.parametrize("offset", [8, 12, 20, 30])
def test_a_key_across_the_log_cut_reaches_the_model_as_no_part_of_it(
    hostile: Hostile, offset: int
) -> None:
    """A key straddling the activity log's head cut (its first `offset` characters before
    the cut) shows none of its characters to the model: masked before the cut."""
    budget = hostile.env.deps.settings.activity_log_max_bytes
    line = b"[00:00:01] tool=Bash cmd=pytest -q -> 12 passed\n"
    clean = (line * (4 * budget // len(line)))[: 4 * budget]
    head = truncate_middle(clean, clean, len(clean), budget).text.index("\n[... ")
    data = bytearray(clean)
    at = head - offset
    data[at - 1 : at + len(GITHUB) + 1] = f" {GITHUB} ".encode()
    log = hostile.user().activity_log("job-cut")
    log.parent.mkdir(parents=True)
    log.write_bytes(bytes(data[: len(clean)]))
    expect(hostile.run("job-cut", decision("nothing to keep")), [])
    sent = json.dumps(hostile.env.llm.requests[-1]["json"]["messages"])
    assert "bytes of the activity log omitted" in sent
    assert not [GITHUB[i : i + 8] for i in range(len(GITHUB) - 7) if GITHUB[i : i + 8] in sent]
