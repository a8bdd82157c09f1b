"""Keys of unknown vendors: standalone tokens of 32+ characters that look random.

A random key mixes upper case, lower case and digits with high entropy for its length
(`secret_values.looks_random`). Random-looking tokens that are public or not secrets are
left alone: digests labelled with their algorithm (lock files' `sha512-…`, Go's `h1:…`,
SRI, Nix), data URIs, SSH public keys, the base64 lines of certificates and public keys,
and base64 of plain text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator

from reflection.secret_values import Span, decodes_to_text, is_ssh_public_blob, looks_random

# A token may follow one `=` (`ENCRYPTION_KEY=<base64>`), not a `==` (base64 run together).
_STANDALONE = re.compile(
    r"(?<![A-Za-z0-9+/_.-])(?<!==)[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])(?!\.[A-Za-z0-9])"
)
# Digests labelled with their algorithm: lock files (`sha512-…`, `h1:…`), SRI, Nix.
_DIGEST_LABEL = re.compile(r"(?:sha(?:1|224|256|384|512)|md5|blake2[bs]?|h1)[-:]", re.IGNORECASE)
_DIGEST_BEFORE = re.compile(
    r"(?:sha(?:1|224|256|384|512)|md5|blake2[bs]?|h1)[-:]\Z|;base64,\Z", re.IGNORECASE
)
# Certificates and public keys are public: their base64 lines are not keys.
_PEM_BLOCK = re.compile(r"-----BEGIN (?P<label>[A-Z0-9 ]++)-----(?:[^-]|-(?!----))*+")


def _public_blocks(text: str) -> tuple[list[int], list[int]]:
    """The starts and ends, in order, of the PEM blocks that hold no private key
    (certificates, public keys)."""
    if "-----BEGIN " not in text:
        return [], []
    spans = [m.span() for m in _PEM_BLOCK.finditer(text) if "PRIVATE" not in m.group("label")]
    return [s for s, _ in spans], [e for _, e in spans]


def _is_public_or_digest(text: str, start: int, token: str) -> bool:
    """A labelled digest, a data URI, an SSH public key or base64 of plain text."""
    return (
        bool(_DIGEST_LABEL.match(token))
        or _DIGEST_BEFORE.search(text, max(0, start - 12), start) is not None
        or is_ssh_public_blob(token)
        or decodes_to_text(token)
    )


def find_high_entropy(text: str) -> Iterator[Span]:
    """Standalone tokens of 32+ characters that look random: unknown vendors' keys."""
    starts, ends = _public_blocks(text)
    for m in _STANDALONE.finditer(text):
        token = m.group()
        if not looks_random(token) or _is_public_or_digest(text, m.start(), token):
            continue
        block = bisect_right(starts, m.start()) - 1
        if block >= 0 and m.start() < ends[block]:
            continue  # a line of a certificate or a public key
        yield Span(m.start(), m.end(), "High Entropy String")
