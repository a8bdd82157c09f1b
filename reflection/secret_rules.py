"""Credentials found by where they stand: vendor prefixes, HTTP headers, cookies and query
strings, settings named for a key, `.netrc` entries and prose (command lines are in
`reflection.secret_commands`).

detect-secrets and the rules in `reflection.secrets` miss these (issue 22: keys stored
and sent to the model). Each finder yields `Span`s; `reflection.secrets` merges them with
the others. Every pattern is linear in the text's length: it starts only where its
keyword or prefix starts and its repetitions are possessive or bounded. Patterns start
with a literal where they can (the engine then skips to the places where one starts);
the character before a match is then checked in Python (`starts_word`).

What a value must look like is judged in `reflection.secret_values`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import unquote

from reflection.secret_commands import find_command_passwords
from reflection.secret_values import (
    TOKEN_CHARS,
    TRAILING_PUNCT,
    VALUE,
    Finder,
    Span,
    decodes_to_user_password,
    is_filler,
    is_hex_key,
    is_placeholder,
    is_relative_path,
    looks_like_a_credential,
    looks_random,
    mixes_classes,
    starts_word,
    token_end,
    wordish,
)

_PW_KIND = "Password"
_KEYWORD_KIND = "Secret Keyword"

# --- tokens whose prefix names the vendor --------------------------------------------

# Each pattern starts with a literal character, so that the engine can skip to the
# positions where one of them starts (a leading look-behind would make it try them all);
# the character before a token is checked in Python instead.
VENDOR_TOKENS: Final = (
    ("Stripe Access Key", r"sk_(?:live|test)_[0-9a-zA-Z]{16,}"),
    ("Stripe Access Key", r"rk_(?:live|test)_[0-9a-zA-Z]{16,}"),
    ("Stripe Webhook Secret", r"whsec_[A-Za-z0-9+/=]{24,}"),
    ("Vault Token", r"hv[sbr]\.[A-Za-z0-9_-]{24,}"),
    ("NPM tokens", r"npm_[A-Za-z0-9]{36}"),
    ("Mailgun API Key", r"key-[0-9a-f]{32}"),
    ("DigitalOcean Token", r"do[opr]_v1_[a-f0-9]{64}"),
    ("Databricks Token", r"dapi[a-f0-9]{32}"),
    ("Linear API Key", r"lin_(?:api|oauth)_[A-Za-z0-9]{40}"),
    ("Postman API Key", r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}"),
    ("Grafana Token", r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"),
    ("Grafana Token", r"glc_[A-Za-z0-9+/]{32,}"),
    ("New Relic Key", r"NR(?:AK|AA|II)-[A-Za-z0-9]{20,}"),
    ("Square Access Token", r"sq0atp-[0-9A-Za-z_-]{22}"),
    ("Atlassian API Token", r"ATATT3[A-Za-z0-9_=-]{100,}"),
    ("Age Secret Key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    ("Doppler Token", r"dp\.(?:st|ct|pt|sa|scim|audit)\.[A-Za-z0-9_.-]{40,}"),
    ("Shopify Token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    ("Google OAuth Secret", r"GOCSPX-[A-Za-z0-9_-]{28}"),
    ("Google OAuth Token", r"ya29\.[0-9A-Za-z_-]{20,}"),
    ("Slack Token", r"xapp-\d-[A-Z0-9]++-\d++-[a-z0-9]+"),
    ("Sentry Token", r"sntry[su]_[A-Za-z0-9+/=_]{40,}"),
    ("Docker Hub Token", r"dckr_pat_[A-Za-z0-9_-]{27,}"),
    ("Supabase Token", r"sbp_[a-f0-9]{40}"),
    ("PlanetScale Token", r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_.-]{32,}"),
    ("RubyGems API Key", r"rubygems_[a-f0-9]{48}"),
    ("Groq API Key", r"gsk_[A-Za-z0-9]{48,}"),
    ("xAI API Key", r"xai-[A-Za-z0-9]{60,}"),
    ("Replicate Token", r"r8_[A-Za-z0-9]{37}"),
)
_VENDOR = re.compile("|".join(pattern for _, pattern in VENDOR_TOKENS))
_VENDOR_KINDS = tuple((kind, re.compile(pattern)) for kind, pattern in VENDOR_TOKENS)
# Tokens found by their middle, the part with a literal start: (kind, the head before it,
# the head's width, the rest).
_MIDDLE_TOKENS: Final = (
    # Terraform Cloud: `<14 letters and digits>.atlasv1.<60 or more>`
    ("Terraform Cloud Token", r"[A-Za-z0-9]{14}", 14, r"\.atlasv1\.[A-Za-z0-9_=-]{60,}"),
    # Azure AD client secrets: `<3><digit>Q~<31 to 34>`
    ("Azure AD Client Secret", r"[A-Za-z0-9_~.]{3}\d", 4, r"Q~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])"),
)
_MIDDLE = tuple(
    (kind, re.compile(head), width, re.compile(rest)) for kind, head, width, rest in _MIDDLE_TOKENS
)
# HashiCorp Vault's tokens before 1.10: `s.` (service) or `b.` (batch) and 24 characters.
_VAULT_LEGACY = re.compile(r"[sb]\.[A-Za-z0-9]{24}(?![\w.])")
_TOKEN_BOUNDARY: Final = frozenset(".~-")


def find_vendor_tokens(text: str) -> Iterator[Span]:
    """Tokens whose prefix names their vendor (`sk_live_`, `hvs.`, `dop_v1_`, …)."""
    for m in _VENDOR.finditer(text):
        end = token_end(text, m.end())
        if starts_word(text, m.start(), _TOKEN_BOUNDARY) and not is_filler(text[m.start() : end]):
            kind = next(k for k, pattern in _VENDOR_KINDS if pattern.match(m.group()))
            yield Span(m.start(), end, kind)
    for kind, head, width, rest in _MIDDLE:
        for m in rest.finditer(text):
            start = m.start() - width
            if (
                start >= 0
                and head.fullmatch(text, start, m.start())
                and starts_word(text, start, _TOKEN_BOUNDARY)
            ):
                yield Span(start, m.end(), kind)
    for m in _VAULT_LEGACY.finditer(text):
        token = m.group()
        if starts_word(text, m.start(), ".") and mixes_classes(token) and wordish(token) < 0.3:
            yield Span(m.start(), m.end(), "Vault Token")


# --- HTTP headers, cookies and query strings -----------------------------------------

# `Authorization: Token <hex>`, `Bearer …`, `Bot …`, `SSWS …`, or a bare key; Basic is
# `reflection.secrets`' own rule.
_AUTH_HEADER = re.compile(
    r"(?=[ap])\b(?:proxy-)?authorization[\"']?[ \t]*+[:=][ \t]*+[\"']?"
    r"(?:(?P<scheme>[a-z][a-z0-9-]{1,20})[ \t]++)?(?P<value>[A-Za-z0-9._~+/=:-]{8,})",
    re.IGNORECASE,
)
_COOKIE_HEADER = re.compile(r"(?=[cs])\b(?:set-)?cookie[ \t]*+:[ \t]*+", re.IGNORECASE)
_COOKIE_PAIR = re.compile(r"(?P<name>[^=;\s]++)=(?P<value>[^;\s]*+)")
_SESSION_COOKIE = re.compile(r"sess|sid|token|auth|jwt|remember|login", re.IGNORECASE)
_QUERY_PARAM = re.compile(
    r"[?&;](?P<name>sig|signature|x-amz-signature|x-goog-signature|token|access_token"
    r"|refresh_token|id_token|api_key|apikey|key|secret|client_secret|password|pwd"
    r"|private_token|auth)=(?P<value>[^&\s#\"'<>()\[\]{}]{8,})",
    re.IGNORECASE,
)


def find_header_credentials(text: str) -> Iterator[Span]:
    """Credentials in HTTP headers, session cookies and URL query strings."""
    yield from _find_auth_headers(text)
    yield from _find_session_cookies(text)
    yield from _find_query_credentials(text)


def _find_auth_headers(text: str) -> Iterator[Span]:
    for m in _AUTH_HEADER.finditer(text):
        scheme = (m.group("scheme") or "").lower()
        value = m.group("value").rstrip(TRAILING_PUNCT)
        if scheme == "basic" or is_placeholder(value, words=False):
            continue
        if looks_like_a_credential(value, 12) or is_hex_key(value, 20):
            yield Span(m.start("value"), m.start("value") + len(value), "Authorization Header")


def _find_session_cookies(text: str) -> Iterator[Span]:
    pos = 0
    while header := _COOKIE_HEADER.search(text, pos):
        pos = text.find("\n", header.end())
        pos = len(text) if pos < 0 else pos  # each line's pairs are read once
        for pair in _COOKIE_PAIR.finditer(text, header.end(), pos):
            value = pair.group("value")
            if _SESSION_COOKIE.search(pair.group("name")) and (
                looks_like_a_credential(value, 16) or is_hex_key(value, 16)
            ):
                yield Span(*pair.span("value"), "Session Cookie")


def _find_query_credentials(text: str) -> Iterator[Span]:
    for m in _QUERY_PARAM.finditer(text):
        value = unquote(m.group("value"))
        if is_placeholder(value, words=False):
            continue
        signature = "sig" in m.group("name").lower()
        if looks_like_a_credential(value, 16 if signature else 12) or is_hex_key(value, 20):
            yield Span(*m.span("value"), _KEYWORD_KIND)


# --- settings named for a key --------------------------------------------------------

# `ENCRYPTION_KEY=…`, `signingKey: …`, `SECRET_KEY_BASE=…`, `"auth": "…"` (Docker's
# config.json): the keyword is the identifier's last part; the identifier itself is read
# backwards from it in Python (bounded), so the pattern starts only at the keyword.
_KEY_SETTING = re.compile(
    r"(?=[abcks])(?:(?<![A-Za-z0-9])|(?<=[_.-])|(?-i:(?<=[a-z0-9])(?=[A-Z])))"
    r"(?P<word>keys?|secret|salt|base|auth|credentials?)"
    # `KEY = v`, `key: v`, `"key" => v`, and a call's name and value: `('AUTH_KEY', 'v')`
    r"(?![A-Za-z0-9_])(?:[\"']?[ \t]*+(?:=>|:=|==?|:)|[\"'][ \t]*+,)[ \t]*+" + VALUE,
    re.IGNORECASE,
)
_IDENT_CHARS: Final = frozenset(TOKEN_CHARS | {"."})
_IDENT_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
# Parts of a name that make `…_key` a name, an id or a public value, not a secret.
_NOT_SECRET_PARTS: Final = frozenset(
    {
        "public", "pub", "primary", "foreign", "sort", "partition", "cache", "idempotency",
        "hash", "range", "object", "s3", "row", "dict", "map", "lookup", "group", "routing",
        "shard", "dedup", "kms", "path", "file", "id", "name", "ref", "type", "env", "var",
        "ssh", "gpg", "pgp", "fingerprint", "hotkey", "shortcut", "keyboard", "column",
        "field", "index", "unique", "composite", "natural", "surrogate",
    }
)  # fmt: skip


def _identifier(text: str, end: int) -> str:
    """The identifier that ends at `end` (read backwards, at most 64 characters)."""
    start = end
    while start > max(0, end - 64) and text[start - 1] in _IDENT_CHARS:
        start -= 1
    return text[start:end]


def find_key_settings(text: str) -> Iterator[Span]:
    """Settings whose name ends in `key`, `secret`, `salt`, `auth` or `credentials` and
    whose value looks like a credential (`ENCRYPTION_KEY=<base64>`, `APP_KEY=base64:…`,
    `SECRET_KEY_BASE=<hex>`); names of ids, paths and public keys are left alone."""
    for m in _KEY_SETTING.finditer(text):
        group = "quoted" if m.group("quoted") else "bare"
        value = m.group(group)
        judged = value.rstrip(TRAILING_PUNCT) if group == "bare" else value
        judged = judged.removeprefix("base64:")
        word = m.group("word").lower()
        parts = [p.lower() for p in _IDENT_PARTS.findall(_identifier(text, m.end("word")))]
        if _NOT_SECRET_PARTS.intersection(parts) or (word == "base" and "secret" not in parts):
            continue
        if is_placeholder(judged) or is_relative_path(judged):
            continue
        if word == "auth":
            found = decodes_to_user_password(judged) or looks_like_a_credential(judged, 20)
        elif len(parts) <= 1:  # `key: …` alone names anything: left to the prose rule
            continue
        else:
            found = looks_like_a_credential(judged, 16) or is_hex_key(judged, 16)
        if found:
            yield Span(*m.span(group), _KEYWORD_KIND)


# --- .netrc and prose ----------------------------------------------------------------

_NETRC = re.compile(
    r"(?:machine[ \t]++\S++|default)\s++(?:login[ \t]++\S++\s++)?"
    r"(?:account[ \t]++\S++\s++)?password[ \t]++(?P<value>\S++)"
)
# "the key is 3f9a…", "the signing secret for staging is …", "Vault token: …"
_KEY_PROSE = re.compile(
    r"(?=[kst])\b(?P<word>key|secret|token)(?![A-Za-z0-9_])"
    r"(?:[ \t]++(?:for|of)[ \t]++[\w.-]{1,64})?"
    r"[ \t]*+(?P<link>(?:is|was|=|:)[ \t]*+)?[\"'`]?"
    r"(?P<value>[A-Za-z0-9+/_.=~-]{16,})",
    re.IGNORECASE,
)


def find_netrc_passwords(text: str) -> Iterator[Span]:
    """`machine HOST login USER password X` (`.netrc`, on one line or several)."""
    for m in _NETRC.finditer(text):
        if starts_word(text, m.start(), "-") and not is_placeholder(m.group("value"), words=False):
            yield Span(*m.span("value"), _PW_KIND)


def find_key_prose(text: str) -> Iterator[Span]:
    """A key named in prose: "the key is <hex>" (a hex value needs the `is`, `:` or `=`),
    or a random value right after the word."""
    for m in _KEY_PROSE.finditer(text):
        value = m.group("value").rstrip(TRAILING_PUNCT)
        linked = m.group("link") is not None
        if is_placeholder(value):
            continue
        if (linked and is_hex_key(value)) or looks_random(value):
            yield Span(m.start("value"), m.start("value") + len(value), _KEYWORD_KIND)


# The rules that find a credential by its place (command, header, setting, `.netrc`).
PLACED: Final[tuple[Finder, ...]] = (
    find_command_passwords,
    find_header_credentials,
    find_key_settings,
    find_netrc_passwords,
)
