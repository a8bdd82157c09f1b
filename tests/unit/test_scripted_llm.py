"""The scripted LLM: its reply delay, and the cached tokens it reports like OpenAI.

The rest of the server is exercised in the integration tier; the SDK tests here need no
service, only the server on loopback."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import openai
import pytest

from reflection.devtools.prompt_cache import PromptCache, cacheable_tokens
from reflection.devtools.scripted_llm import ScriptedLlmServer, load_script, reply_delay


def test_delay_without_jitter_is_exact() -> None:
    """Without jitter the reply waits exactly its delay (none by default)."""
    assert reply_delay({}) == 0.0
    assert reply_delay({"delay": 1.5}) == 1.5


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    """delay ± jitter, uniformly: every draw in bounds, both halves used, never below 0."""
    rng = random.Random(7)
    draws = [reply_delay({"delay": 1.0, "jitter": 0.5}, rng) for _ in range(1000)]
    assert all(0.5 <= d <= 1.5 for d in draws)
    assert min(draws) < 0.6 and max(draws) > 1.4
    assert sum(draws) / len(draws) == pytest.approx(1.0, abs=0.05)
    assert all(reply_delay({"delay": 0.1, "jitter": 1.0}, rng) >= 0.0 for _ in range(200))


def test_jitter_is_a_known_reply_key(tmp_path: Path) -> None:
    """A script may use `jitter`; an unknown key is still refused."""
    path = tmp_path / "s.json"
    path.write_text('{"default": {"content": "x", "delay": 1, "jitter": 0.2}}')
    assert load_script(path)["default"]["jitter"] == 0.2
    path.write_text('{"default": {"content": "x", "jiter": 0.2}}')
    with pytest.raises(ValueError, match="unknown reply keys"):
        load_script(path)


# Cached tokens, as OpenAI reports them (SPEC §12, §14): 4 characters a token.

SYSTEM = "You reflect on finished jobs. " * 400  # 12,000 characters: 3,000 tokens


def chat(*messages: tuple[str, str], model: str = "scripted-1", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": r, "content": t} for r, t in messages]}
    return body | extra


def prompt_tokens(body: dict[str, Any]) -> int:
    return round(sum(len(m["content"]) for m in body["messages"]) / 4)


def served(cache: PromptCache, *bodies: dict[str, Any]) -> list[int]:
    return [cache.serve(body, prompt_tokens(body)) for body in bodies]


@pytest.mark.parametrize(
    ("tokens", "cacheable"),
    [(0, 0), (1023, 0), (1024, 1024), (1151, 1024), (1152, 1152), (2000, 1920), (5000, 4992)],
)
def test_cacheable_tokens(tokens: int, cacheable: int) -> None:
    """1,024 tokens and whole 128-token blocks past them; nothing below 1,024."""
    assert cacheable_tokens(tokens) == cacheable


@pytest.mark.parametrize(
    ("first", "second", "cached"),
    [
        (chat(("user", "x" * 20_000)), chat(("user", "x" * 20_000)), 4992),
        (
            chat(("system", "s" * 7_986), ("user", "job one " * 500)),
            chat(("system", "s" * 7_986), ("user", "run two " * 500)),
            1920,
        ),
        (
            chat(("system", "s" * 4_000), ("user", "job one " * 1000)),
            chat(("system", "s" * 4_000), ("user", "run two " * 1000)),
            0,
        ),
        (chat(("user", "a" + "x" * 20_000)), chat(("user", "b" + "x" * 20_000)), 0),
        (chat(("user", "x" * 2_000)), chat(("user", "x" * 2_000)), 0),
        (
            chat(("system", SYSTEM), ("user", "job")),
            chat(("system", SYSTEM), ("user", "job"), model="other-model"),
            0,
        ),
        (
            chat(("system", SYSTEM), ("user", "job")),
            chat(("system", SYSTEM), ("user", "job"), response_format={"type": "json_object"}),
            0,
        ),
        (
            chat(("system", SYSTEM), ("user", "tail")),
            chat(("system", SYSTEM[:-40]), ("user", SYSTEM[-40:] + "tail")),
            2944,
        ),
    ],
    ids=[
        "identical-twice",
        "2000-shared",
        "1000-shared",
        "first-char-differs",
        "short-prompt",
        "other-model",
        "other-format",
        "text-moved-across-messages",
    ],
)
def test_cached_tokens(first: dict[str, Any], second: dict[str, Any], cached: int) -> None:
    """The second prompt's longest prefix seen before, in cacheable blocks; the first is 0."""
    assert served(PromptCache(), first, second) == [0, cached]


def test_the_longest_earlier_prefix_counts_not_the_last() -> None:
    """A prompt is matched against every prompt remembered, not only the previous one."""
    a, b = chat(("user", "a" * 12_000)), chat(("user", "b" * 12_000))
    assert served(PromptCache(), a, b, a, b) == [0, 0, 2944, 2944]


def test_the_cache_is_bounded_and_forgets_the_oldest() -> None:
    """At most `max_blocks` block hashes are kept; the least recently used go first."""
    cache = PromptCache(max_blocks=20)
    a, b = chat(("user", "a" * 8_192)), chat(("user", "b" * 8_192))  # 9 blocks each
    assert served(cache, a, b) == [0, 0] and len(cache) == 18
    assert served(cache, chat(("user", "c" * 8_192))) == [0]
    assert len(cache) == 20
    assert served(cache, b, a) == [2048, 0]


def test_clear_forgets_every_prompt() -> None:
    """After `clear` (the server's reset) nothing is cached."""
    cache = PromptCache()
    body = chat(("user", "x" * 8_192))
    assert served(cache, body, body) == [0, 2048]
    cache.clear()
    assert served(cache, body) == [0]


def _client(srv: ScriptedLlmServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=10)


def _ask(client: openai.OpenAI, user: str) -> Any:
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
    ]
    return client.chat.completions.create(model="scripted-1", messages=messages)


def test_the_openai_sdk_reads_cached_tokens_from_the_server() -> None:
    """Through the real SDK: 0 cached at first, then the shared system prompt's blocks."""
    with ScriptedLlmServer() as srv:
        client = _client(srv)
        first, second = _ask(client, "job one"), _ask(client, "job two")
        usage = second.usage
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        assert usage.prompt_tokens == 3002
        assert usage.prompt_tokens_details.cached_tokens == 2944
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        srv.reset()
        assert _ask(client, "job two").usage.prompt_tokens_details.cached_tokens == 0


def test_a_scripted_usage_is_reported_as_written() -> None:
    """A reply that sets `usage` keeps it; the prompt still counts as seen by the cache."""
    usage = {"prompt_tokens": 120, "completion_tokens": 30}
    with ScriptedLlmServer({"rules": [{"match": "one", "replies": [{"usage": usage}]}]}) as srv:
        client = _client(srv)
        first = _ask(client, "job one").usage
        assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (120, 30, 150)
        assert first.prompt_tokens_details is None
        assert _ask(client, "job two").usage.prompt_tokens_details.cached_tokens == 2944
