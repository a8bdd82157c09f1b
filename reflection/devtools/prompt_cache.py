"""A provider's prompt cache, as the scripted LLM server reports it (SPEC §12, §14).

OpenAI serves from its cache the longest prefix of a prompt that an earlier request
shared, from 1,024 tokens on and in whole 128-token blocks past that, and reports it as
`usage.prompt_tokens_details.cached_tokens`. Here tokens are counted by characters (4 to a
token, the rule of the server's `prompt_tokens`; no tokenizer), and the prompt as the cache
sees it is the request's model and response_format (hashed, not counted: another schema is
another cache), then each message's role and text in order, so text moved from one message
to the next is a miss as it would be at a provider.

Only the hashes of the aligned prefixes are kept (one 16-byte digest per 128-token block,
an LRU of at most `CACHE_MAX_BLOCKS`): a lookup hashes the prompt once, linear in its
length, and memory stays bounded however long the server runs.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

CHARS_PER_TOKEN: Final = 4
# OpenAI's prompt cache: prefixes from 1,024 tokens on, in steps of 128 tokens.
CACHE_MIN_TOKENS: Final = 1024
CACHE_BLOCK_TOKENS: Final = 128
# Block hashes remembered: a 6,000-token prompt leaves about 40, so over a thousand
# prompts fit, in a few MB.
CACHE_MAX_BLOCKS: Final = 50_000


def message_texts(message: Mapping[str, Any]) -> list[str]:
    """The texts of one chat message: its string content, or its content parts' texts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [str(p.get("text", "")) for p in content if isinstance(p, Mapping)]
    return []


def cacheable_tokens(tokens: int) -> int:
    """What a provider's cache can serve of a `tokens`-long shared prefix: 0 below 1,024
    tokens, else 1,024 plus whole 128-token blocks."""
    if tokens < CACHE_MIN_TOKENS:
        return 0
    return tokens - (tokens - CACHE_MIN_TOKENS) % CACHE_BLOCK_TOKENS


def prefix_digests(body: Mapping[str, Any]) -> list[tuple[int, bytes]]:
    """(tokens, hash) of each cacheable prefix of a chat request's prompt, shortest first:
    at 1,024 tokens and every 128 tokens after, up to the prompt's length."""
    head = json.dumps([body.get("model"), body.get("response_format")], sort_keys=True)
    stream = "".join(
        f"\x00{message.get('role')}\x00{text}"
        for message in body.get("messages") or []
        if isinstance(message, Mapping)
        for text in message_texts(message)
    )
    digest = hashlib.blake2b(head.encode("utf-8"), digest_size=16)
    out: list[tuple[int, bytes]] = []
    done, tokens = 0, CACHE_MIN_TOKENS
    while tokens * CHARS_PER_TOKEN <= len(stream):
        end = tokens * CHARS_PER_TOKEN
        digest.update(stream[done:end].encode("utf-8", errors="surrogatepass"))
        out.append((tokens, digest.copy().digest()))
        done, tokens = end, tokens + CACHE_BLOCK_TOKENS
    return out


class PromptCache:
    """The prefixes of the prompts served so far. Not thread-safe on its own: the server
    calls it under its state lock."""

    def __init__(self, max_blocks: int = CACHE_MAX_BLOCKS) -> None:
        self.max_blocks = max_blocks
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def serve(self, body: Mapping[str, Any], prompt_tokens: int) -> int:
        """The cached tokens of this request: its longest prefix seen in an earlier one,
        in cacheable blocks, and never more than `cacheable_tokens(prompt_tokens)` (the
        role markers count toward the prefix but not toward `prompt_tokens`). Then the
        request's own prefixes are remembered."""
        cached = 0
        prefixes = prefix_digests(body)
        for tokens, key in prefixes:
            if key not in self._seen:
                break  # a longer prefix is never seen without this one (or it was evicted)
            cached = tokens
        for _, key in prefixes:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.max_blocks:
            self._seen.popitem(last=False)
        return min(cached, cacheable_tokens(prompt_tokens))

    def clear(self) -> None:
        """Forget every prompt (the server's `reset`)."""
        self._seen.clear()
