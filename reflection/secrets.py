"""Credential detection for memory text (SPEC section 5, `secret_detected`) and masking for
logs, snapshots and prompts.

Three sources of rules, built once per process:

- detect-secrets' regex detectors (AWS, GitHub, GitLab, Slack, Stripe, basic-auth URLs,
  SendGrid, PyPI, Discord, Telegram, Twilio, ...), used through their maintained
  `denylist` patterns. Its keyword and high-entropy plugins are left out: on free prose
  they flag ordinary words, hashes and ids. Its private-key plugin is replaced by a
  stricter rule that needs the PEM armour *and* key material, so that prose naming the
  header is not a key. Its JWT, OpenAI and npm patterns are replaced by equivalents that
  stay linear in the text's length (theirs are quadratic on `eyJeyJ...`, `sk-sk-...`,
  `////...`); its IBM Cloud IAM, IBM COS HMAC, Cloudant and SoftLayer plugins are left
  out: their keyword patterns backtrack cubically on a run of spaces after a keyword
  (`token` + 3,000 spaces took minutes), and the assignment rule below covers their
  `*_password = ...` / `*_api_key = ...` shapes.
- our own patterns where detect-secrets has none: `sk-` LLM keys (OpenAI, Anthropic,
  gateway virtual keys), Google API keys, Hugging Face and fine-grained GitHub tokens,
  `Authorization: Bearer|Basic` values, passwords in URLs that its basic-auth rule
  misses (no user name, or `!$&*+,;=` in the password), `password = ...` style
  assignments with a real value (not a `${VAR}` expansion, a path or a call), the same
  for identifiers ending in `token`, `pass` or `pwd` (`GITHUB_TOKEN=`, `export DB_PASS=`,
  `MYSQL_PWD=`) when the value looks like a credential, "the password is <value>" prose
  when the value has symbols, or digits and both cases, and standalone high-entropy
  tokens of 32+ characters with mixed character classes (not labelled digests such as
  `sha512-…` or `h1:…`, data URIs, SSH public keys, certificate lines or base64 of plain
  text).
- `reflection.secret_rules`: credentials found by where they stand (vendor prefixes such
  as `hvs.` or `dop_v1_`, `mysql -p…`, `curl -u user:…`, `docker login -p`,
  `Authorization: Token …`, session cookies, `?access_token=`, `ENCRYPTION_KEY=…`,
  `.netrc`, "the key is <hex>").

Every rule is linear in the length of the text (no pattern backtracks over a run it has
already matched from another start), so a hostile or huge log costs milliseconds per
kilobyte, never minutes.

Ordinary prose ("the user prefers pytest", "passwords must be hashed with argon2"), git
SHAs, hex digests and UUIDs are not flagged. `tests/secret_table.py` measures both sides
(docs/security.md, "Credential detector").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import cache, lru_cache
from typing import Any, Final

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.jwt import JwtTokenDetector

from reflection import secret_rules
from reflection.secret_entropy import find_high_entropy
from reflection.secret_values import (
    TRAILING_PUNCT,
    VALUE,
    Finder,
    Span,
    is_filler,
    is_placeholder,
    looks_like_a_credential,
    looks_random_enough,
    token_end,
)

# Plugins that flag prose or are not credentials, or that we replace with a stricter rule.
_SKIPPED_PLUGINS: Final = frozenset(
    {
        "KeywordDetector",
        "Base64HighEntropyString",
        "HexHighEntropyString",
        "IPPublicDetector",
        "PrivateKeyDetector",
        # `(?: *)(?:=|:|...| +|::)(?: *)` after a keyword: cubic in a run of spaces.
        "IbmCloudIamDetector",
        "IbmCosHmacDetector",
        "CloudantDetector",
        "SoftlayerDetector",
        # Quadratic (every start scans to the end of the run); replaced by linear rules below.
        "JwtTokenDetector",
        "OpenAIDetector",
        "NpmDetector",
    }
)

_PRIVATE_KEY = "Private Key"
# detect-secrets' Artifactory pattern also matches all-caps words (`APACHE2LICENSE`);
# real Artifactory keys mix cases.
_NEEDS_MIXED_CASE: Final = frozenset({"Artifactory Credentials"})
_DELIMITERS: Final = " \t\r\n\"'=:"

# Possessive, and at most 8 headers: a header line's trailing blanks could otherwise go to
# `[^\n]*` or to the next line's `[ \t]*`, two ways a line (30 `x: ` lines after a BEGIN
# took minutes), and every BEGIN would read all the `x: ` lines that follow it.
_PEM_KEY = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:[ \t]*+\r?\n[A-Za-z-]++:[^\n]*+){0,8}+"  # PEM headers such as Proc-Type, DEK-Info
    # the key material itself; `\n` escapes where the key sits in a JSON string
    r"(?:\s|\\[nr])*+[A-Za-z0-9+/=]{20,}(?:[A-Za-z0-9+/=\s]|\\[nr])*+"
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
# detect-secrets' JWT, OpenAI and npm patterns, made to start only where a token starts.
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*+={0,2}\.[A-Za-z0-9_-]++={0,2}\.?")
_OPENAI = re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}")
_NPM_TOKEN = re.compile(r"/:_authToken=[ \t]*+(npm_[^\s\"'`]+|[A-Fa-f0-9-]{36})")
_BEARER = re.compile(r"(?=b)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})", re.IGNORECASE)
_BASIC_HEADER = re.compile(
    r"(?=a)\bauthorization\s*:\s*basic\s+([A-Za-z0-9+/]{8,}={0,2})", re.IGNORECASE
)
# `<keyword> <op> <value>`: the keyword ends the identifier (DB_PASSWORD, client_secret),
# so `password_hash = ...` and `secrets:` are not assignments of a secret. The short
# keywords (`strict`) must also start the identifier or one of its parts (GITHUB_TOKEN,
# db.pass, dbPwd; not `bypass`, `compass`), and their value must look like a credential:
# `pass: the test passed` and `token: the next one` are prose.
# (The leading `(?=...)` of this and the other case-insensitive patterns only names their
# first letter: it lets the engine skip most positions at once, for a third of the cost.)
_ASSIGNMENT = re.compile(
    r"(?=[abprst])(?:(?P<word>passwd|password|passphrase|secret|secret[_-]?key|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|(?:api|auth|access|refresh|bot)[_-]?token)"
    r"|(?:(?<![A-Za-z0-9])|(?<=[_.-])|(?-i:(?<=[a-z0-9])(?=[A-Z])))(?P<strict>token|pass|pwd))"
    r"(?![A-Za-z0-9_])[\"']?[ \t]*+(?:=>|:=|==?|:)[ \t]*+" + VALUE,
    re.IGNORECASE,
)
# "the (staging) password is Xk9!mq2z": prose, so the value must look random.
_PASSWORD_PROSE = re.compile(
    r"(?=p)\b(?P<word>password|passwd|passphrase)(?:[ \t]+for[ \t]+[\w.-]{1,64})?[ \t]+(?:is|was)"
    r"[ \t]+" + VALUE,
    re.IGNORECASE,
)
# detect-secrets' basic-auth rule needs a user name and no sub-delimiters (`!$&*+,;=`) in
# the password; real URLs have both (`redis://:pa55word@redis`, `postgres://u:P4ss!@db`).
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^\s/:@]*+:(?P<pw>[^\s/@]+)@"
)
_SHELL_EXPANSION = re.compile(r"\$\{[A-Za-z0-9_]*\Z")
_LINE_ENDS = re.compile(r"[.,;:!?)\]} \t\r]*+(?:\n|\Z)")
_RANDOM_CHARS = re.compile(r"[0-9!@#%^&*+=?~|]")


def _regex_finder(kind: str, regex: re.Pattern[str], group: int = 0) -> Finder:
    def find(text: str) -> Iterator[Span]:
        for m in regex.finditer(text):
            if m.end(group) > m.start(group) >= 0:
                yield Span(m.start(group), m.end(group), kind)

    return find


def _find_prefixed_pem(text: str) -> Iterator[Span]:
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
            yield Span(m.start(), end, _PRIVATE_KEY)


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
    plugin's own analysis (if it adds one) agrees."""
    kind = str(plugin.secret_type)
    validates = type(plugin).analyze_string is not RegexBasedDetector.analyze_string

    def find(text: str) -> Iterator[Span]:
        for regex in plugin.denylist:
            extended = 0  # how far a token was already read: `AKIA` * N stays linear
            for m in regex.finditer(text):
                if validates and m.group() not in set(plugin.analyze_string(m.group())):
                    continue
                start, end, captured = _value_span(m)
                value = text[start:end]
                if (captured and is_placeholder(value)) or (
                    kind in _NEEDS_MIXED_CASE and value.isupper()
                ):
                    continue
                if is_filler(value):
                    continue  # AKIAXXXXXXXXXXXXXXXX
                # Patterns of a fixed length (Stripe's 24 characters, Azure's 88 without
                # its `==`) stop inside longer real keys: mask the rest of the token too.
                if not captured:
                    end = extended = token_end(text, max(end, extended))
                yield Span(start, end, kind)

    return find


def _extend_token(text: str, end: int) -> int:
    """The JWT pattern ends before the signature; mask all of it."""
    while end < len(text) and (text[end].isalnum() or text[end] in "-_.+/="):
        end += 1
    return end


def _find_assignments(text: str) -> Iterator[Span]:
    for m in _ASSIGNMENT.finditer(text):
        if _SHELL_EXPANSION.search(text, max(0, m.start() - 128), m.start()):
            continue  # `${DB_PASSWORD:?set it}` names a variable; it holds no value
        word = m.group("word") or m.group("strict")
        strict = m.group("strict") is not None
        min_len = 10 if word.lower() == "token" else 6
        span = _assigned_value(text, m, lenient=not strict, min_len=min_len)
        if span is not None:
            kind = "Password" if word.lower().startswith(("pass", "pwd")) else "Secret Keyword"
            yield Span(*span, kind)


def _find_password_prose(text: str) -> Iterator[Span]:
    for m in _PASSWORD_PROSE.finditer(text):
        span = _assigned_value(text, m, lenient=False, min_len=8)
        if span is not None and looks_random_enough(text[span[0] : span[1]]):
            yield Span(*span, "Password")


def _assigned_value(
    text: str, m: re.Match[str], *, lenient: bool, min_len: int
) -> tuple[int, int] | None:
    """Where the value of a `keyword <op> value` match is, if it is a real value.

    `lenient` (the long keywords such as `password`): a quoted value counts, and a bare one
    with digits or symbols or standing alone at the end of its line. Otherwise the value
    must look like a credential (`_looks_like_a_credential`)."""
    group = "quoted" if m.group("quoted") else "bare"
    value = m.group(group)
    start, end = m.span(group)
    if is_placeholder(value):  # before stripping: `[REDACTED:Password]` ends with `]`
        return None
    judged = value
    if group == "bare":
        # Judged without the punctuation that may end a sentence, but masked whole:
        # `password=hunter2!` may well end in its own `!`.
        judged = value.rstrip(TRAILING_PUNCT)
        if len(judged) < 4 or is_placeholder(judged):
            return None
        if lenient and not _looks_like_a_value(text, judged, end - (len(value) - len(judged))):
            return None
    if not lenient and not looks_like_a_credential(judged, min_len):
        return None
    return start, end


def _looks_like_a_value(text: str, value: str, end: int) -> bool:
    """An unquoted value is a secret if it has digits or symbols, or stands alone at the
    end of its line; `password: must be hashed` is prose, not an assignment."""
    if _RANDOM_CHARS.search(value):
        return True
    # Matched at `end`, not sliced to the end of the line: on one long line holding many
    # assignments, a slice each would make the scan quadratic.
    return len(value) >= 6 and _LINE_ENDS.match(text, end) is not None


def _find_url_passwords(text: str) -> Iterator[Span]:
    for m in _URL_PASSWORD.finditer(text):
        if not is_placeholder(m.group("pw")):
            yield Span(*m.span("pw"), "Basic Auth Credentials")


def _find_jwts(text: str) -> Iterator[Span]:
    """detect-secrets' JWT rule: `eyJ<header>.<payload>` whose two parts decode to JSON,
    masked with its signature. Searched from the end of the last token, so no character is
    scanned twice."""
    pos = 0
    while m := _JWT.search(text, pos):
        pos = m.end()
        if JwtTokenDetector.is_formally_valid(m.group()):
            pos = _extend_token(text, m.end())
            yield Span(m.start(), pos, "JSON Web Token")


def _find_npm_tokens(text: str) -> Iterator[Span]:
    """An npm registry token in `.npmrc` form (`//registry.npmjs.org/:_authToken=...`)."""
    for m in _NPM_TOKEN.finditer(text):
        if not is_placeholder(m.group(1)):
            yield Span(*m.span(1), "NPM tokens")


def _find_sk_keys(text: str) -> Iterator[Span]:
    for m in _SK_KEY.finditer(text):
        if any(ch.isdigit() for ch in m.group()):
            kind = (
                "Anthropic API Key" if m.group().startswith("sk-ant-") else "OpenAI-style API Key"
            )
            yield Span(m.start(), m.end(), kind)


def _find_bearer(text: str) -> Iterator[Span]:
    for m in _BEARER.finditer(text):
        token = m.group(1)
        if any(ch.isdigit() for ch in token) and not is_placeholder(token):
            yield Span(*m.span(1), "Bearer Token")


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
    # detect-secrets' rules in linear form: as specific as its plugins, so ranked with them.
    replaced: list[Finder] = [
        _find_jwts,
        _regex_finder("OpenAI Token", _OPENAI),
        _find_npm_tokens,
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
        _find_password_prose,
    ]
    # Most specific first: where matches start at the same place, the first rule names them.
    return (
        *keys,
        *map(_plugin_finder, plugins),
        *replaced,
        secret_rules.find_vendor_tokens,
        *own,
        *secret_rules.PLACED,
        find_high_entropy,
        secret_rules.find_key_prose,
    )


@lru_cache(maxsize=1024)
def _spans(text: str) -> tuple[Span, ...]:
    """All secret spans in text order, overlapping ones merged; where two rules match at the
    same place, the earlier rule (the more specific one) names the span.

    Cached: every run masks the same piece and mostly the same memory bodies, and the
    ~170 rules cost milliseconds a text."""
    found = [
        (span.start, -span.end, rank, span)
        for rank, finder in enumerate(_finders())
        for span in finder(text)
    ]
    merged: list[Span] = []
    for _, _, _, span in sorted(found, key=lambda t: t[:3]):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.kind)
        else:
            merged.append(span)
    return tuple(merged)


def find_secrets(text: str) -> list[str]:
    """The kinds of credential found in `text`, in order of first appearance; empty = clean."""
    return list(dict.fromkeys(s.kind for s in _spans(text)))


def mask_secrets(text: str) -> str:
    """`text` with each secret value replaced by `[REDACTED:<kind>]`."""
    return _masked(text, _spans(text), 0, len(text))


def mask_head(text: str, keep: int) -> str:
    """`text[:keep]` masked with what a scan of *all* of `text` finds: a credential that
    starts before `keep` is replaced whole even where it runs past `keep`, so a cut at
    `keep` shows none of its characters (the text past `keep` is the scan's margin)."""
    spans = [s for s in _spans(text) if s.start < keep]
    return _masked(text, spans, 0, max(keep, spans[-1].end if spans else 0))


def mask_tail(text: str, start: int) -> str:
    """`text[start:]` masked likewise: a credential that ends after `start` is replaced
    whole even where it begins before `start`."""
    spans = [s for s in _spans(text) if s.end > start]
    return _masked(text, spans, min(start, spans[0].start if spans else start), len(text))


def _masked(text: str, spans: Sequence[Span], start: int, end: int) -> str:
    """`text[start:end]` with `spans` (which lie inside it) replaced by their masks."""
    if not spans:
        return text[start:end]
    out, pos = [], start
    for span in spans:
        out += [text[pos : span.start], f"[REDACTED:{span.kind}]"]
        pos = span.end
    out.append(text[pos:end])
    return "".join(out)
