"""Credential shapes the first detector missed or misjudged, the repository's own prose, and
the detector on hostile input (it runs inside the user's lock, on every prompt; its cost on
that input is measured by `bench.pathological`).

The fake credentials are assembled from parts so that no scanner mistakes this file for a
leak; none of them is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reflection.secrets import find_secrets, mask_secrets
from reflection.shipped import BUILTIN_PIECES_DIR
from tests.support.pathological import secret_shapes

ROOT = Path(__file__).resolve().parents[2]

HEX40 = "9a8b7c6d5e4f3a2b1c0d" + "9e8f7a6b5c4d3e2f1a0b"
SLACKISH = "Qw3rTy7uIoP" + "a5SdF9gHjK1l"
AWS_SECRET_SLASH = "/K7MDENGbPxRfiCYzq8t3" + "JHk2sd9fLk2H3kd0QpZ"
PW = "Xk9!" + "mq2z"

SHAPES: list[tuple[str, str, str]] = [
    # (text, kind, the secret value that must not survive masking)
    # Values that start like a placeholder ($, %, /) or hold a `(` are values.
    ("password: $ecret" + "Pass99", "Password", "$ecretPass99"),
    ("password: $ecret" + "99", "Password", "$ecret99"),
    ("DB_PASSWORD=%Hk3" + "x9q!z", "Password", "%Hk3x9q!z"),
    ("password: P@ss(" + "w0rd)!", "Password", "P@ss(w0rd)!"),
    ("api_key: abc(123)" + "def456", "Secret Keyword", "abc(123)def456"),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET_SLASH}", "Secret Keyword", AWS_SECRET_SLASH),
    ("redis://:$ecret" + "Pass99@redis:6379/0", "Basic Auth Credentials", "$ecretPass99"),
    # Identifiers ending in token / pass / pwd.
    (f"TOKEN={HEX40}", "Secret Keyword", HEX40),
    (f"GITHUB_TOKEN={HEX40}", "Secret Keyword", HEX40),
    (f"SLACK_TOKEN={SLACKISH}", "Secret Keyword", SLACKISH),
    ("token: 3f9a8b7c6d" + "5e4f3a2b1c", "Secret Keyword", "3f9a8b7c6d5e4f3a2b1c"),
    (f"githubToken: '{HEX40[:24]}'", "Secret Keyword", HEX40[:24]),
    (f"export DB_PASS={PW}", "Password", PW),
    (f"MYSQL_PWD={PW}", "Password", PW),
    (f"pass: {PW}", "Password", PW),
    ("pass: hunter" + "22", "Password", "hunter22"),
    # "The password is ..." when the value could not be a word.
    (f"The staging database password is {PW}.", "Password", PW),
    ("the password for prod is Tr0ub" + "4dor&3", "Password", "Tr0ub4dor&3"),
]


@pytest.mark.parametrize(("text", "kind", "value"), SHAPES, ids=[s[0][:30] for s in SHAPES])
def test_credential_shape_is_found_and_masked(text: str, kind: str, value: str) -> None:
    """Each shape is detected with its kind, and masking removes the whole value."""
    assert find_secrets(text) == [kind]
    masked = mask_secrets(text)
    assert value not in masked
    assert f"[REDACTED:{kind}]" in masked


def test_masked_shapes_are_clean() -> None:
    """Masking is idempotent on the new shapes too: `[REDACTED:Secret Keyword]` after a
    keyword is not itself a value."""
    once = mask_secrets("\n".join(s[0] for s in SHAPES))
    assert mask_secrets(once) == once
    assert find_secrets(once) == []


NOT_SECRETS = [
    # A short keyword followed by prose, a count, a version, a path or a word.
    "pass: the test passed",
    "token: the next token",
    "pass: everything",
    "bypass: enabled-for-admins",
    "compass: northwest",
    "max_token: 4096",
    "next_token: next_page_2",
    "first_pass: v2.1.0",
    "pass: 3/10 flaky",
    "pass: true",
    "pwd: ~/.pgpass",
    "pwd=$(pwd)",
    "tokens: 12345",
    # Whole placeholders, references and dummies.
    "password: $DB_PASSWORD",
    "password: ${DB_PASSWORD:-}",
    "password: $(cat /run/secrets/db)",
    "password: %(db_password)s",
    "password: %DB_PASSWORD%",
    "password: {{ vault_db_password }}",
    "password: {{vault_db_password}}",
    "password: <your password>",
    "password: getpass()",
    "password = os.environ.get('DB_PASSWORD')",
    "password = Field(default=None, repr=False)",
    "password=Option(type='string'),",
    "password = enforce_bytes(auth[1], name='auth')",
    "password: changeme",
    "password: ../secrets/db.env",
    "token: ${GITHUB_TOKEN}",
    "GITHUB_TOKEN=$GITHUB_TOKEN",
    "token: ${{secrets.GITHUB_TOKEN}}",
    "password: !Ref DbPassword",
    "password: @Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/db)",
    "password: #{DbPassword}",
    "pad_token: <pad>",
    "api_key: settings",
    "amqp://guest:guest@127.0.0.1:5672/reflection_test",
    # Prose about passwords.
    "the password is required",
    "the password is stored in Vault",
    "the password is SHA256-hashed",
    "the password is argon2id-hashed",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_placeholder_or_prose_is_not_a_secret(text: str) -> None:
    """Placeholders, references, dummies and prose after a keyword are not credentials."""
    assert find_secrets(text) == []
    assert mask_secrets(text) == text


REPO_PROSE = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "reflection" / "prompts").iterdir(),
        *BUILTIN_PIECES_DIR.iterdir(),
    ]
)


@pytest.mark.parametrize("path", REPO_PROSE, ids=[str(p.relative_to(ROOT)) for p in REPO_PROSE])
def test_repository_prose_holds_no_secret(path: Path) -> None:
    """The README, docs, prompts and built-in pieces mention passwords, tokens and URLs
    with example credentials (`guest:guest`); none of it is a finding."""
    assert find_secrets(path.read_text(encoding="utf-8")) == []


# Each shape is ~300 KB. The old rules took 5 s on `password` + 1,000 spaces and grew with
# the cube of the run (163 s for a 3 KB memory body), or with its square (`eyJeyJ...`: 35 s).
# That the scan stays linear is measured by `python -m bench.pathological` (tests never
# assert timings); here each shape must be scanned and masked without error, and what the
# masking leaves must hold no finding.
N = 300_000
HOSTILE = secret_shapes(N)


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_input_is_masked_to_no_finding(text: str) -> None:
    """Each of the worst shapes is scanned and masked: the text changes exactly when
    something was found, and what is left holds no finding (the cost, at two sizes, is
    `bench.pathological`'s)."""
    found = find_secrets(text)
    masked = mask_secrets(text)
    assert (masked != text) == bool(found)
    assert find_secrets(masked) == []
