"""Credential detection for memory text (SPEC section 5, `secret_detected`) and masking for
logs, snapshots and prompts.

Two sources of rules, built once per process:

- detect-secrets' regex detectors (AWS, GitHub, GitLab, Slack, Stripe, JWT, OpenAI,
  basic-auth URLs, SendGrid, PyPI, npm, Discord, Telegram, Twilio, ...), used through their
  maintained `denylist` patterns and, where a plugin adds a check of its own (JWT), its
  `analyze_string`. Its keyword and high-entropy plugins are left out: on free prose they
  flag ordinary words, hashes and ids. Its private-key plugin is replaced by a stricter
  rule that needs the PEM armour *and* key material, so that prose naming the header is
  not a key.
- our own patterns where detect-secrets has none: `sk-` LLM keys (OpenAI, Anthropic,
  gateway virtual keys), Google API keys, Hugging Face and fine-grained GitHub tokens,
  `Authorization: Bearer|Basic` values, passwords in URLs that its basic-auth rule
  misses (no user name, or `!$&*+,;=` in the password), `password = ...` style
  assignments with a real value (not a `${VAR:?}` expansion), and standalone
  high-entropy tokens of 32+ characters with mixed character classes.

Ordinary prose ("the user prefers pytest", "passwords must be hashed with argon2"), git
SHAs, hex digests and UUIDs are not flagged.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Final

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

# Plugins that flag prose or are not credentials, or that we replace with a stricter rule.
_SKIPPED_PLUGINS: Final = frozenset(
    {
        "KeywordDetector",
        "Base64HighEntropyString",
        "HexHighEntropyString",
        "IPPublicDetector",
        "PrivateKeyDetector",
    }
)

_PRIVATE_KEY = "Private Key"
# detect-secrets' Artifactory pattern also matches all-caps words (`APACHE2LICENSE`);
# real Artifactory keys mix cases.
_NEEDS_MIXED_CASE: Final = frozenset({"Artifactory Credentials"})
_DELIMITERS: Final = " \t\r\n\"'=:"

_PEM_KEY = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:[ \t]*\r?\n[A-Za-z-]+:[^\n]*)*"  # PEM headers such as Proc-Type / DEK-Info
    r"\s*[A-Za-z0-9+/=]{20,}[A-Za-z0-9+/=\s]*"  # the key material itself
    r"(?:-----END (?P=label)-----)?"
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# A key as logs and quotes show it: every line after the header behind a prefix (a
# timestamp, `> `, `# `); the material is each line's last token.
_PEM_LINE_MATERIAL = re.compile(r"[A-Za-z0-9+/=]{16,}|[A-Za-z-]+:\S*")
_SSH2_OR_PUTTY_KEY = re.compile(
    r"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----[^-]{20,}"
    r"(?:---- END SSH2 ENCRYPTED PRIVATE KEY ----)?"
    r"|Private-Lines: *\d+ *\r?\n[A-Za-z0-9+/=\r\n]{20,}"
)
_SK_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk-(?:ant-)?[A-Za-z0-9_-]{20,}")
_GOOGLE_KEY = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")
_HF_TOKEN = re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34,}(?![A-Za-z0-9])")
_GITHUB_PAT = re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}")
_BEARER = re.compile(r"\bbearer\s+([A-Za-z0-9._~+/=-]{16,})", re.IGNORECASE)
_BASIC_HEADER = re.compile(
    r"\bauthorization\s*:\s*basic\s+([A-Za-z0-9+/]{8,}={0,2})", re.IGNORECASE
)
# `<keyword> <op> <value>`: the keyword ends the identifier (DB_PASSWORD, client_secret),
# so `password_hash = ...` and `secrets:` are not assignments of a secret.
_ASSIGNMENT = re.compile(
    r"(?P<word>passwd|password|passphrase|secret|secret[_-]?key|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|(?:api|auth|access|refresh|bot)[_-]?token)"
    r"(?![A-Za-z0-9_])[\"']?[ \t]*(?:=>|:=|==?|:)[ \t]*"
    r"(?:(?P<q>[\"'`])(?P<quoted>[^\s\"'`]{4,})(?P=q)|(?P<bare>[^\s\"'`,;]{4,}))",
    re.IGNORECASE,
)
# detect-secrets' basic-auth rule needs a user name and no sub-delimiters (`!$&*+,;=`) in
# the password; real URLs have both (`redis://:pa55word@redis`, `postgres://u:P4ss!@db`).
_URL_PASSWORD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:(?P<pw>[^\s/@]+)@")
_SHELL_EXPANSION = re.compile(r"\$\{[A-Za-z0-9_]*\Z")
_STANDALONE = re.compile(
    r"(?<![A-Za-z0-9+/=_.-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])(?!\.[A-Za-z0-9])"
)
_TRAILING_PUNCT = ".,;:!?)]}"
_RANDOM_CHARS = re.compile(r"[0-9!@#%^&*+=?~|]")
_PLACEHOLDER = re.compile(
    r"^(?:[*xX.#_-]+|<[^>]*>|\{[^}]*\}|\$.*|%.*|\[[^\]]*\]|(?:os|process|env|settings)\b.*"
    r"|.*\(.*|\.{0,2}/.*|~/.*)$"
)
_PLACEHOLDER_WORDS: Final = frozenset(
    {
        "none", "null", "nil", "true", "false", "required", "optional", "redacted", "hidden",
        "masked", "password", "passwd", "pass", "secret", "string", "str", "bytes", "int",
        "example", "placeholder", "your-password", "yourpassword",
    }
)  # fmt: skip
# Words (`Pipeline`, `end`, `CONFIG`) cover most of an identifier, little of a random key.
_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")
_MAX_WORDISH: Final = 0.6


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str


Finder = Callable[[str], Iterator[_Span]]


def _regex_finder(kind: str, regex: re.Pattern[str], group: int = 0) -> Finder:
    def find(text: str) -> Iterator[_Span]:
        for m in regex.finditer(text):
            if m.end(group) > m.start(group) >= 0:
                yield _Span(m.start(group), m.end(group), kind)

    return find


def _find_prefixed_pem(text: str) -> Iterator[_Span]:
    """A PEM private key whose lines carry a prefix (`[00:00:40] MIIEow...`), which the
    plain pattern misses: from the BEGIN line through the END line or the last line of
    key material."""
    for m in _PEM_BEGIN.finditer(text):
        end, pos, material = m.end(), m.end(), False
        while pos < len(text) and text[pos] in "\r\n":
            line_end = text.find("\n", pos + 1)
            line_end = len(text) if line_end < 0 else line_end
            line = text[pos:line_end].strip()
            if "-----END " in line:
                end = line_end
                break
            words = line.split()
            if not words or not _PEM_LINE_MATERIAL.fullmatch(words[-1]):
                break
            material, end, pos = True, line_end, line_end
        if material:
            yield _Span(m.start(), end, _PRIVATE_KEY)


def _value_span(m: re.Match[str]) -> tuple[int, int, bool]:
    """The secret inside a detect-secrets match, and whether it is a captured value: the
    last group when it ends the match (`://user:PASS@`, `aws_key = "SECRET"`), else the
    whole match (GitHub's `(ghp|gho|...)` group is a prefix, not the secret) without the
    delimiters some patterns include (Artifactory's leading space or quote)."""
    groups = [g for g in range(1, (m.re.groups or 0) + 1) if m.group(g)]
    if groups:
        last = max(groups, key=m.end)
        if m.end() - m.end(last) <= 2:
            return *m.span(last), True
    start, end = m.span()
    while start < end and m.string[start] in _DELIMITERS:
        start += 1
    while end > start and m.string[end - 1] in _DELIMITERS:
        end -= 1
    return start, end, False


def _plugin_finder(plugin: Any) -> Finder:
    """A detect-secrets regex plugin as positions: its denylist matches, kept only if the
    plugin's own analysis (JWT's formal check) agrees."""
    kind = str(plugin.secret_type)
    validates = type(plugin).analyze_string is not RegexBasedDetector.analyze_string

    def find(text: str) -> Iterator[_Span]:
        for regex in plugin.denylist:
            for m in regex.finditer(text):
                if validates and m.group() not in set(plugin.analyze_string(m.group())):
                    continue
                start, end, captured = _value_span(m)
                value = text[start:end]
                if (captured and _is_placeholder(value)) or (
                    kind in _NEEDS_MIXED_CASE and value.isupper()
                ):
                    continue
                if kind == "JSON Web Token":
                    end = _extend_token(text, end)
                yield _Span(start, end, kind)

    return find


def _extend_token(text: str, end: int) -> int:
    """detect-secrets' JWT pattern ends lazily before the signature; mask all of it."""
    while end < len(text) and (text[end].isalnum() or text[end] in "-_.+/="):
        end += 1
    return end


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value)) or value.lower() in _PLACEHOLDER_WORDS


def _find_assignments(text: str) -> Iterator[_Span]:
    for m in _ASSIGNMENT.finditer(text):
        if _SHELL_EXPANSION.search(text, max(0, m.start() - 128), m.start()):
            continue  # `${DB_PASSWORD:?set it}` names a variable; it holds no value
        group = "quoted" if m.group("quoted") else "bare"
        value = m.group(group)
        start, end = m.span(group)
        if _is_placeholder(value):  # before stripping: `[REDACTED:Password]` ends with `]`
            continue
        if group == "bare":
            # Judged without the punctuation that may end a sentence, but masked whole:
            # `password=hunter2!` may well end in its own `!`.
            stripped = value.rstrip(_TRAILING_PUNCT)
            value_end = end - (len(value) - len(stripped))
            value = stripped
            if len(value) < 4 or not _looks_like_a_value(text, value, value_end):
                continue
        if _is_placeholder(value):
            continue
        kind = "Password" if m.group("word").lower().startswith("pass") else "Secret Keyword"
        yield _Span(start, end, kind)


def _looks_like_a_value(text: str, value: str, end: int) -> bool:
    """An unquoted value is a secret if it has digits or symbols, or stands alone at the
    end of its line; `password: must be hashed` is prose, not an assignment."""
    if _RANDOM_CHARS.search(value):
        return True
    line_end = text.find("\n", end)
    rest = text[end : len(text) if line_end < 0 else line_end]
    return len(value) >= 6 and not rest.strip(_TRAILING_PUNCT + " \t\r")


def _find_url_passwords(text: str) -> Iterator[_Span]:
    for m in _URL_PASSWORD.finditer(text):
        if not _is_placeholder(m.group("pw")):
            yield _Span(*m.span("pw"), "Basic Auth Credentials")


def _find_sk_keys(text: str) -> Iterator[_Span]:
    for m in _SK_KEY.finditer(text):
        if any(ch.isdigit() for ch in m.group()):
            kind = (
                "Anthropic API Key" if m.group().startswith("sk-ant-") else "OpenAI-style API Key"
            )
            yield _Span(m.start(), m.end(), kind)


def _find_bearer(text: str) -> Iterator[_Span]:
    for m in _BEARER.finditer(text):
        token = m.group(1)
        if any(ch.isdigit() for ch in token) and not _is_placeholder(token):
            yield _Span(*m.span(1), "Bearer Token")


def _shannon_entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _looks_random(token: str) -> bool:
    """Upper case, lower case and digits mixed, high entropy for its length (random keys
    of 32 to 64 characters score 4.2 to 5.2 bits a character), and not made of words."""
    if not all(any(f(ch) for ch in token) for f in (str.isupper, str.islower, str.isdigit)):
        return False  # hex digests, UUIDs, snake_case and all-caps names end here
    limit = 4.1 + 0.02 * (min(len(token), 64) - 32)
    words = sum(len(w) for w in _WORDISH.findall(token)) / len(token)
    return _shannon_entropy(token) >= limit and words < _MAX_WORDISH


def _find_high_entropy(text: str) -> Iterator[_Span]:
    """Standalone tokens of 32+ characters that look random: unknown vendors' keys."""
    for m in _STANDALONE.finditer(text):
        if _looks_random(m.group()):
            yield _Span(m.start(), m.end(), "High Entropy String")


@cache
def _finders() -> tuple[Finder, ...]:
    """Every rule, built once per process (the detector runs on every memory change)."""
    classes: list[Any] = list(get_mapping_from_secret_type_to_class().values())
    plugins = [
        cls()
        for cls in classes
        if issubclass(cls, RegexBasedDetector) and cls.__name__ not in _SKIPPED_PLUGINS
    ]
    keys: list[Finder] = [
        _regex_finder(_PRIVATE_KEY, _PEM_KEY),
        _find_prefixed_pem,
        _regex_finder(_PRIVATE_KEY, _SSH2_OR_PUTTY_KEY),
    ]
    own: list[Finder] = [
        _find_sk_keys,
        _regex_finder("Google API Key", _GOOGLE_KEY),
        _regex_finder("Hugging Face Token", _HF_TOKEN),
        _regex_finder("GitHub Token", _GITHUB_PAT),
        _find_bearer,
        _regex_finder("Basic Auth Credentials", _BASIC_HEADER, 1),
        _find_url_passwords,
        _find_assignments,
    ]
    # Most specific first: where matches start at the same place, the first rule names them.
    return (*keys, *map(_plugin_finder, plugins), *own, _find_high_entropy)


@lru_cache(maxsize=1024)
def _spans(text: str) -> tuple[_Span, ...]:
    """All secret spans in text order, overlapping ones merged; where two rules match at the
    same place, the earlier rule (the more specific one) names the span.

    Cached: every run masks the same piece and mostly the same memory bodies, and the
    ~170 rules cost milliseconds a text."""
    found = [
        (span.start, -span.end, rank, span)
        for rank, finder in enumerate(_finders())
        for span in finder(text)
    ]
    merged: list[_Span] = []
    for _, _, _, span in sorted(found, key=lambda t: t[:3]):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = _Span(last.start, max(last.end, span.end), last.kind)
        else:
            merged.append(span)
    return tuple(merged)


def find_secrets(text: str) -> list[str]:
    """The kinds of credential found in `text`, in order of first appearance; empty = clean."""
    return list(dict.fromkeys(s.kind for s in _spans(text)))


def mask_secrets(text: str) -> str:
    """`text` with each secret value replaced by `[REDACTED:<kind>]`."""
    spans = _spans(text)
    if not spans:
        return text
    out, pos = [], 0
    for span in spans:
        out += [text[pos : span.start], f"[REDACTED:{span.kind}]"]
        pos = span.end
    out.append(text[pos:])
    return "".join(out)
