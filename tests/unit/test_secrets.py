"""Credential detection for memory text and masking for logs, snapshots and prompts.

The fake credentials are assembled from parts so that no scanner mistakes this file for a
leak; none of them is real.
"""

from __future__ import annotations

import base64
import json

import pytest

from reflection.secrets import find_secrets, mask_secrets


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"
PEM = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\n"
    f"{PEM_BODY}\nVTLw7onLRnrq0/IzW7yWR7Qk\n"
    "-----END RSA PRIVATE KEY-----"
)
SSH_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
OPENSSH = "-----BEGIN OPENSSH " + f"PRIVATE KEY-----\n{SSH_BODY}\n-----END OPENSSH PRIVATE KEY-----"
GITHUB = "ghp_" + ("a1B2c3D4e5F6g7H8i9J0" * 2)[:36]
GITHUB_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop"
GITLAB = "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0"
SLACK = "xoxb-" + "123456789012-1234567890123-abcdefghijklmnop"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT_SIGNATURE = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
JWT = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': '42'})}.{JWT_SIGNATURE}"
OPENAI_LEGACY = "sk-proj-" + "abcdefghij1234567890" + "T3BlbkFJ" + "abcdefghij1234567890"
ANTHROPIC = "sk-ant-" + "api03-AbCdEf0123456789AbCdEf0123456789-xyz"
GATEWAY = "sk-test-" + "worker-key-0123456789abcdef"
GOOGLE = "AIza" + "SyA1234567890abcdefghijklmnopqrstuv"
SENDGRID = "SG." + "abcdefghijklmnopqrstuv." + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
HUGGINGFACE = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"
TWILIO = "AC" + "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
TELEGRAM = "123456789:" + "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawx"
NPM = "npm_" + "abcdefghijklmnopqrstuvwxyz0123456789"
PYPI = "pypi-" + "AgEIcHlwaS5vcmc" + "A1b2C3d4" * 10
RANDOM_KEY = "Zx8Kq2Lm9Np4Rt7Vw1Yb3Cd6Fg0Hj5Ks"
BASIC = base64.b64encode(b"alice:s3cr3t").decode()

POSITIVES: list[tuple[str, str, str]] = [
    # (text, kind, the secret value that must not survive masking)
    (f"deploy key {AWS_ID} in ci", "AWS Access Key", AWS_ID),
    (f'aws_secret_access_key = "{AWS_SECRET}"', "AWS Access Key", AWS_SECRET),
    (f"the key:\n{PEM}\nend", "Private Key", PEM_BODY),
    (OPENSSH, "Private Key", SSH_BODY),
    # As an activity log or a quote shows it: every line behind a prefix.
    ("\n".join(f"[00:00:40] {line}" for line in PEM.splitlines()), "Private Key", PEM_BODY),
    ("\n".join(f"> {line}" for line in OPENSSH.splitlines()[:2]), "Private Key", SSH_BODY),
    (f"token {GITHUB}", "GitHub Token", GITHUB),
    (f"fine-grained {GITHUB_PAT}", "GitHub Token", GITHUB_PAT),
    (f"use {GITLAB} for the registry", "GitLab Token", GITLAB),
    (f"bot token {SLACK}", "Slack Token", SLACK),
    (f"post to {SLACK_HOOK}", "Slack Token", SLACK_HOOK),
    (f"stripe {STRIPE}", "Stripe Access Key", STRIPE),
    (f"session {JWT} expired", "JSON Web Token", JWT),
    (f"OPENAI_API_KEY={OPENAI_LEGACY}", "OpenAI Token", OPENAI_LEGACY),
    (f"claude key {ANTHROPIC}", "Anthropic API Key", ANTHROPIC),
    (f"gateway virtual key {GATEWAY}", "OpenAI-style API Key", GATEWAY),
    (f"maps key {GOOGLE}", "Google API Key", GOOGLE),
    (f"mail {SENDGRID}", "SendGrid API Key", SENDGRID),
    (f"hub {HUGGINGFACE}", "Hugging Face Token", HUGGINGFACE),
    (f"sms {TWILIO}", "Twilio API Key", TWILIO),
    (f"bot {TELEGRAM}", "Telegram Bot Token", TELEGRAM),
    (f"//registry.npmjs.org/:_authToken={NPM}", "NPM tokens", NPM),
    (f"upload with {PYPI}", "PyPI Token", PYPI),
    ("clone https://alice:s3cr3tP4ss@git.example.com", "Basic Auth Credentials", "s3cr3tP4ss"),
    ("DATABASE_URL=postgres://app:hunter2x@db:5432/app", "Basic Auth Credentials", "hunter2x"),
    ("Authorization: Bearer abc123def456ghi789jkl", "Bearer Token", "abc123def456ghi789jkl"),
    (f"Authorization: Basic {BASIC}", "Basic Auth Credentials", BASIC),
    ("the staging password = hunter2", "Password", "hunter2"),
    ("DB_PASSWORD=correcthorsebatterystaple", "Password", "correcthorsebatterystaple"),
    ('passwd: "letmein1"', "Password", "letmein1"),
    ("client_secret: 9f8e7d6c5b4a", "Secret Keyword", "9f8e7d6c5b4a"),
    ("SECRET_KEY='dj4ng0-s3cret'", "Secret Keyword", "dj4ng0-s3cret"),
    (f"vendor key: {RANDOM_KEY}", "High Entropy String", RANDOM_KEY),
]  # fmt: skip


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES, ids=[p[1] for p in POSITIVES])
def test_secret_is_found_and_masked(text: str, kind: str, value: str) -> None:
    """Each credential kind is detected, and masking replaces its value with the kind."""
    assert find_secrets(text) == [kind]
    masked = mask_secrets(text)
    assert value not in masked
    assert f"[REDACTED:{kind}]" in masked


def test_positive_table_covers_at_least_fifteen_kinds() -> None:
    """The detector is exercised on a broad set of credential kinds."""
    assert len({p[1] for p in POSITIVES}) >= 15


NEGATIVES = [
    "the user prefers pytest",
    "passwords must be hashed with argon2",
    "password: must be at least 12 characters long",
    "The secret to good tests is isolation.",
    "secret: keep it in Vault, never in the repo",
    "Set the password via the DB_PASSWORD environment variable.",
    "password = os.environ['DB_PASSWORD']",
    "DB_PASSWORD=${DB_PASSWORD}",
    "password: str = Field(...)",
    "password: ********",
    "password: /run/secrets/db_password",
    "password_hash = bcrypt.hash(raw)",
    "secrets: ['db', 'api']",
    "api_key is read from REFLECTION_LLM_API_KEY",
    "token budget: 4096 tokens",
    "pwd: /home/user/project",
    "fixed in commit 3f2a9c1e8b7d6f5a4c3b2a1908f7e6d5c4b3a291",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "request 123e4567-e89b-12d3-a456-426614174000 failed",
    "postgresql+psycopg://postgres@127.0.0.1:5432/reflection_test",
    "postgres://user:<password>@host/db",
    "redis://:${REDIS_PASSWORD}@redis:6379/0",
    "https://github.com/org/repo/blob/main/src/app.py",
    "test_apply_reflection_rejects_Duplicate_In_Batch_2 failed",
    "class AbstractSingletonProxyFactoryBean2 is too large",
    "src/reflection/pipeline/stages/AbstractStageRunner2.py",
    "Bearer tokens are checked by the gateway",
    "Use the `Authorization: Bearer $TOKEN` header",
    "Never commit files containing BEGIN RSA PRIVATE KEY headers.",
    "APACHE2LICENSE applies to the vendored code",
    "run `celery -A tasks worker -Q reflection --concurrency 4`",
    "MEMORY.md lists 12 entries; max_entries = 200",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_text_is_clean(text: str) -> None:
    """Prose, references to where secrets live, hashes, ids and paths are not secrets."""
    assert find_secrets(text) == []
    assert mask_secrets(text) == text


def test_masking_keeps_the_surrounding_text() -> None:
    """Only the secret values are replaced; URL structure and prose stay readable."""
    text = f"push with https://bot:hunter2x@git.example.com and {AWS_ID}."
    assert mask_secrets(text) == (
        "push with https://bot:[REDACTED:Basic Auth Credentials]@git.example.com"
        " and [REDACTED:AWS Access Key]."
    )


@pytest.mark.parametrize("value", ["hunter2!", "Tr0ub4dor&3?", "Sup3r$ecret!!", "s3cret.)"])
def test_a_bare_password_is_masked_to_its_last_character(value: str) -> None:
    """Punctuation that could end a sentence may also end the password: it is masked too
    (a sentence losing its `!` is harmless; a password's last character is not)."""
    assert mask_secrets(f"login with password={value}") == "login with password=[REDACTED:Password]"


def test_kinds_are_listed_once_in_order_of_appearance() -> None:
    """find_secrets names each kind once, first appearance first."""
    text = f"{PEM}\n{AWS_ID} and {AWS_ID.replace('EXAMPLE', 'ANOTHER')} then {GITHUB}"
    assert find_secrets(text) == ["Private Key", "AWS Access Key", "GitHub Token"]


def test_overlapping_rules_mask_once() -> None:
    """A key matched by two rules (bearer header and sk- key) is replaced once, by the
    more specific kind."""
    masked = mask_secrets(f"Authorization: Bearer {GATEWAY}")
    assert masked == "Authorization: Bearer [REDACTED:OpenAI-style API Key]"


def test_jwt_is_masked_with_its_signature() -> None:
    """The whole token goes, signature included, not just header and payload."""
    assert mask_secrets(f"t={JWT};") == "t=[REDACTED:JSON Web Token];"


def test_masking_is_idempotent() -> None:
    """Masking masked text changes nothing (logs may pass through twice)."""
    text = "\n".join(p[0] for p in POSITIVES)
    once = mask_secrets(text)
    assert mask_secrets(once) == once
    assert find_secrets(once) == []


def test_large_prose_holds_no_finding() -> None:
    """A 200 KB log of prose is scanned to no finding (how long it takes, at two sizes, is
    measured by `python -m bench.pathological`: tests never assert timings)."""
    text = "\n".join(NEGATIVES * 200)
    assert len(text) > 200_000
    assert find_secrets(text) == []
