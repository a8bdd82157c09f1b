"""What a credential *value* looks like, apart from where it was found.

The rules in `reflection.secrets` and `reflection.secret_rules` find a place where a
credential may stand (after `password=`, in `curl -u user:…`, after `Bearer`); the
functions here judge the value found there: a placeholder or a reference (`${VAR}`,
`<your-key>`, `changeme`, a path), a word or an identifier, or something random enough
to be a key. All of them are pure and linear in the value's length.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Span:
    """Where a credential is in a text (`text[start:end]`), and what kind it is."""

    start: int
    end: int
    kind: str


Finder = Callable[[str], Iterator[Span]]

# A value that is *wholly* a placeholder, a reference or a dummy; matched with fullmatch,
# so `$ecretPass99`, `%Hk3x9q!z` and `P@ss(w0rd)!` are values, not placeholders.
_PLACEHOLDER_SYNTAX = re.compile(
    r"[*xX.#_…-]+"  # ********, xxxx, ..., …
    r"|<[^<>]*>?"  # <your password> (or its first word)
    r"|\{\{.*\}\}|\{[^{}]*\}"  # {{ vault_pw }}, {password}
    r"|\[[^\]]*\]|\[REDACTED:.*"  # [REDACTED], [hidden], our own `[REDACTED:Secret` (cut)
    # ${VAR}, ${VAR:-x}, $(cmd), $VAR, $var, $1, $env:VAR (and a `${VAR` cut at a comma);
    # not `$ecretPass99` or `$ecret99`
    r"|(?:\$\{[^{}]*\}|\$\([^()]*\)|\$[A-Z_][A-Z0-9_]*+|\$[a-z_][a-z_]*+|\$\d|\$env:\w++)+"
    r"(?:\$\{[^{}]*+|\$\([^()]*+)?"
    r"|\$\{[^{}]*+|\$\([^()]*+"
    r"|\$\{\{.*"  # ${{ secrets.DB_PASSWORD }} (GitHub Actions)
    r"|%\(\w+\)[sdr]|%[sdr]|%[\w.]+%|%\{[^{}]*\}"  # %(name)s, %s, %DB_PASSWORD%, %{VAR}
    r"|#\{[^{}]*\}?|@+[A-Za-z_][\w.]*@+|__\w+__"  # #{Var}, @VAR@, __VAR__
    r"|![A-Z][A-Za-z]*(?:64)?|!vault"  # YAML tags: !Ref DbPassword, !vault |
    r"|arn:[\w-]++:[\w-]++:.*"  # arn:aws:secretsmanager:…:secret:prod/db (a reference)
    # os.environ[...], process.env.X, settings.DB_PASSWORD, ENV['X'], env("X")
    r"|(?:os|process|env|ENV|settings|config)(?:\.\w+)*+(?:\[.*|\(.*)?"
    # getpass(), Field(...), f(g(x)), @Microsoft.KeyVault(...), and calls cut at a quote
    # or comma: getenv(, f(a[1]
    r"|@?[A-Za-z_][\w.]*+\((?:[^()]|\([^()]*+\)?)*+\)?"
)
# A file path: `/run/secrets/db`, `~/.pgpass`, `../secrets.env`; a segment mixing upper
# case, lower case and digits (`/K7MDENGbPxRfiCYzq8t3`) is a key that starts with `/`.
_PATH = re.compile(r"(?:~|\.{1,2})?(?:/[\w.@+-]+)+/?")
# `uploads/2024/05/report.pdf`: a relative path of two or more segments.
_RELATIVE_PATH = re.compile(r"[\w.@+-]+(?:/[\w.@+-]+)+/?")
PLACEHOLDER_WORDS: Final = frozenset(
    {
        "none", "null", "nil", "true", "false", "required", "optional", "redacted", "hidden",
        "masked", "password", "passwd", "pass", "secret", "string", "str", "bytes", "int",
        "text", "value", "example", "placeholder", "your-password", "yourpassword",
        "your_password", "changeme", "change-me", "change_me", "changeit", "dummy", "fake",
        "sample", "testing", "todo", "tbd", "fixme", "undefined", "unset", "empty",
        "default", "mypassword", "my-password", "your-secret", "your_secret", "yoursecret",
        "your-token", "your_token", "yourtoken", "your-api-key", "your_api_key", "token",
        "guest",  # RabbitMQ's default `guest:guest`, public by design
    }
)  # fmt: skip
# Versions, sizes, times, dates and ratios: `v2.1.0`, `1920x1080`, `12:30`, `100ms`.
_VERSIONISH = re.compile(r"[vV]?[0-9][0-9.,:/x_+-]*[A-Za-z]{0,3}")
_SEPARATORS = re.compile(r"[_./-]")
# Words (`Pipeline`, `end`, `CONFIG`) cover most of an identifier, little of a random key.
_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")
_MAX_WORDISH: Final = 0.6
_VOWELS: Final = frozenset("aeiouyAEIOUY")
SYMBOLS: Final = re.compile(r"[!@#$%^&*+=?~|]")
_HEX = re.compile(r"[0-9a-fA-F]+")
TRAILING_PUNCT: Final = ".,;:!?)]}"
TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# The value after `keyword <op>`: quoted (`"…"`, `'…'`, `` `…` ``) or bare up to a blank,
# a quote, a comma or a semicolon; groups `quoted` and `bare`.
VALUE: Final = r"(?:(?P<q>[\"'`])(?P<quoted>[^\s\"'`]{4,})(?P=q)|(?P<bare>[^\s\"'`,;]{4,}))"


def is_placeholder(value: str, *, words: bool = True) -> bool:
    """`value` is a placeholder, a reference or a path, not a credential.

    `words`: a placeholder word (`changeme`, `password`, `example`) counts too. Commands
    pass False: on a command line (`curl -u admin:pass`) the word was typed to be used.
    """
    return (
        bool(_PLACEHOLDER_SYNTAX.fullmatch(value))
        or (words and value.lower() in PLACEHOLDER_WORDS)
        or (bool(_PATH.fullmatch(value)) and not any(map(mixes_classes, value.split("/"))))
        or is_filler(value)
    )


def is_relative_path(value: str) -> bool:
    """`dir/sub/file.ext` whose segments are words and numbers, not base64 of a key."""
    return bool(_RELATIVE_PATH.fullmatch(value)) and not any(map(mixes_classes, value.split("/")))


def is_filler(value: str) -> bool:
    """Mostly one filler character repeated (`AKIAXXXXXXXXXXXXXXXX`, `sk-xxxxxxxxxxxx`,
    `0000…`): a template's placeholder, not a key."""
    if len(value) < 8:
        return False
    char, count = Counter(value).most_common(1)[0]
    return char in "xX*0#." and count >= 0.6 * len(value)


def token_end(text: str, end: int) -> int:
    """Where the token that a fixed-length pattern matched up to `end` really ends: past
    its remaining letters, digits, `_` and `-`, and up to two `=` of base64 padding."""
    while end < len(text) and text[end] in TOKEN_CHARS:
        end += 1
    for _ in range(2):
        if end < len(text) and text[end] == "=":
            end += 1
    return end


def starts_word(text: str, start: int, also: frozenset[str] | str = "") -> bool:
    """No letter, digit, `_` (or one of `also`) before `start`: a token starts there."""
    if start == 0:
        return True
    before = text[start - 1]
    return not (before.isalnum() or before == "_" or before in also)


def starts_argument(text: str, start: int) -> bool:
    """A blank (or the text's start) before `start`: a command-line argument starts there."""
    return start == 0 or text[start - 1].isspace()


def mixes_classes(value: str) -> bool:
    """Upper case, lower case and digits all present."""
    return all(any(f(ch) for ch in value) for f in (str.isupper, str.islower, str.isdigit))


def is_hex_key(value: str, min_len: int = 32) -> bool:
    """A hex string long enough to be a key, with both digits and letters."""
    return (
        len(value) >= min_len
        and bool(_HEX.fullmatch(value))
        and any(ch.isdigit() for ch in value)
        and any(ch.isalpha() for ch in value)
    )


def wordish(value: str) -> float:
    """The share of `value` made of words (`Pipeline`, `end`, `CONFIG`): runs of letters
    with a vowel, so that a random `NRVCC` or `xqzt` is not one."""
    words = (w for w in _WORDISH.findall(value) if _VOWELS.intersection(w))
    return sum(map(len, words)) / max(len(value), 1)


def shannon_entropy(value: str) -> float:
    """Bits a character of `value`'s own character distribution."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def looks_like_a_credential(value: str, min_len: int) -> bool:
    """A value after a keyword that could also name something else (`token`, `pass`,
    `pwd`, `…_KEY`): long enough, not a version, size or date, and either letters mixed
    with digits or symbols (`hunter2`, `Xk9!mq2z`, a hex token) without being mostly
    words (`next_page_2`), or 16+ random-looking letters of both cases."""
    if len(value) < min_len or _VERSIONISH.fullmatch(value):
        return False
    if not any(ch.isalpha() for ch in value):
        return False
    share = wordish(value)
    if any(ch.isdigit() for ch in value) or SYMBOLS.search(value):
        return share < _MAX_WORDISH or not _SEPARATORS.search(value)
    return (
        len(value) >= 16
        and not value.islower()
        and not value.isupper()
        and share < _MAX_WORDISH
        and shannon_entropy(value) >= 3.5
    )


def looks_random_enough(value: str) -> bool:
    """A value in prose ("the password is ..."): symbols, or digits and both cases with
    few words, so that "is SHA256-hashed" or "is argon2id" stay prose."""
    value = value.rstrip(TRAILING_PUNCT)
    if SYMBOLS.search(value):
        return True
    return mixes_classes(value) and wordish(value) < 0.3


def looks_random(token: str) -> bool:
    """Upper case, lower case and digits mixed, high entropy for its length (random keys
    of 32 to 64 characters score 4.2 to 5.2 bits a character), and not made of words."""
    if not mixes_classes(token):
        return False  # hex digests, UUIDs, snake_case and all-caps names end here
    limit = 4.1 + 0.02 * (min(len(token), 64) - 32)
    return shannon_entropy(token) >= limit and wordish(token) < _MAX_WORDISH


def _b64decode(token: str) -> bytes | None:
    padded = token.rstrip("=") + "=" * (-len(token.rstrip("=")) % 4)
    try:
        if "-" in token or "_" in token:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def decodes_to_text(token: str) -> bool:
    """Base64 of plain text (`VGhlIHF1aWNr…`, a JSON cursor): every byte printable and
    some of them spaces or punctuation of prose; random key bytes never are."""
    raw = _b64decode(token)
    if raw is None or len(raw) < 8:
        return False
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in raw)
    return printable and any(b in b' ,."{' for b in raw)


def decodes_to_user_password(token: str) -> bool:
    """Base64 of `user:password`, as Basic auth and Docker's `config.json` store it."""
    raw = _b64decode(token)
    if raw is None or b":" not in raw:
        return False
    user, _, password = raw.partition(b":")
    return bool(user) and len(password) >= 4 and all(32 < b < 127 for b in user + password)


def is_ssh_public_blob(token: str) -> bool:
    """The base64 of an SSH public key (`AAAAC3NzaC1lZDI1NTE5…`): a length-prefixed
    algorithm name such as `ssh-ed25519` or `ecdsa-sha2-nistp256`."""
    if not token.startswith("AAAA"):
        return False
    head = _b64decode(token[:32])
    return head is not None and head[4:].startswith((b"ssh-", b"ecdsa-", b"sk-"))
