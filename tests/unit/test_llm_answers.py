"""LlmClient's pure parts: which answers are unusable, which refusals are a context-length
error, how long an output mode fallback is remembered, and what a repair repeats."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion

from reflection import llm
from reflection.llm import MODE_DOWNGRADE_SECONDS, LlmClient
from reflection.reply import DecisionParseError
from reflection.settings import Settings

GOOD: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "{}"},
            "finish_reason": "stop",
        }
    ],
}


def completion(data: Any) -> Any:
    """What the SDK makes of a 200's JSON body: constructed, never validated."""
    return openai._models.construct_type(type_=ChatCompletion, value=data)


# An HTTP 200 that is not a chat completion (defect: AttributeError, `internal`).


def test_a_good_completion_is_usable() -> None:
    assert llm._unusable(completion(GOOD)) is None
    no_content = {**GOOD, "choices": [{**GOOD["choices"][0], "message": {"content": None}}]}
    assert llm._unusable(completion(no_content)) is None  # empty: the repair round handles it
    assert llm._unusable(completion({**GOOD, "error": None})) is None


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("<html>Bad gateway</html>", "a body that is not JSON"),
        (None, "a JSON NoneType instead of a chat completion"),
        ([], "a JSON list instead of a chat completion"),
        ({"choices": None}, "without choices"),
        ({"choices": []}, "without choices"),
        ({"choices": "abc"}, "without choices"),
        ({"error": {"message": "upstream overloaded", "code": 503}}, "an error instead"),
        ({**GOOD, "error": {"message": "partial"}}, "an error instead"),
        ({"choices": ["x"]}, "no message"),
        ({"choices": [{"message": None}]}, "no message"),
        ({"choices": [{"message": {"content": 5}}]}, "not text"),
    ],
)
def test_an_answer_without_a_readable_completion_is_unusable(answer: Any, problem: str) -> None:
    if isinstance(answer, dict):
        answer = completion(answer)
    found = llm._unusable(answer)
    assert found is not None and problem in found


def test_the_snippet_of_an_unusable_answer_is_short_and_keyless() -> None:
    """The log and the error quote ~200 characters of what came back, never the key, and
    other credentials masked too, even one that straddles the cut."""
    key = "sk-worker-key-0123456789abcdefghij"
    client = LlmClient(Settings(llm_endpoint="http://127.0.0.1:9/v1", llm_api_key=key))
    other = "sk-proj-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv"
    for pad in (100, 150):  # the other key inside the 200 characters, and across the cut
        page = f"<html>\n<pre>Authorization: Bearer {key}</pre>{'x' * pad} {other} {'y' * 999}"
        snippet = client._snippet(page)
        assert snippet.startswith("'<html> <pre>") and len(snippet) <= 205
        assert key[:8] not in snippet and other[:10] not in snippet and "\n" not in snippet
    error = client._snippet(completion({"error": {"message": f"bad key {key}"}}))
    assert "bad key" in error and key not in error


# A context-length error is context_overflow, not a reason to fall back.


def status_error(status: int, body: Any) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://gateway/v1/chat/completions")
    response = httpx2.Response(status, request=request, json={"error": body})
    cls = {400: openai.BadRequestError, 404: openai.NotFoundError}.get(status)
    cls = cls or {413: openai.APIStatusError, 422: openai.UnprocessableEntityError}[status]
    return cls("refused", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"message": "This model's maximum context length is 8192 tokens. However, "
                          "your messages resulted in 9000 tokens.", "code": None}),
        (400, {"message": "too long", "code": "context_length_exceeded"}),
        (400, {"message": "the request exceeds the available context size, try increasing "
                          "it", "code": "exceed_context_size_error"}),
        (400, {"message": "litellm.ContextWindowExceededError: prompt exceeds window"}),
        (400, {"message": "prompt is too long: 210000 tokens > 200000 maximum"}),
        (413, {"message": "Too many tokens in the request"}),
        (422, {"message": "Input is too long for requested model."}),
    ],
)  # fmt: skip
def test_context_length_errors_are_recognised(status: int, body: Any) -> None:
    assert llm._is_context_overflow(status_error(status, body))


@pytest.mark.parametrize(
    "message",
    [
        "response_format of type 'json_schema' is not supported",
        "Invalid schema for response_format 'reflection_decision'",
        "model does not exist",
    ],
)
def test_format_refusals_are_not_context_errors(message: str) -> None:
    assert not llm._is_context_overflow(status_error(400, {"message": message, "code": 400}))


# A fallback is remembered for a while, not for the process's lifetime.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fallback_is_remembered_until_it_expires() -> None:
    clock = Clock()
    client = LlmClient(Settings(llm_endpoint="http://127.0.0.1:9/v1"), clock=clock)
    modes = []
    modes.append(client.mode)
    client._remember("json_schema", "json_object")
    modes.append(client.mode)
    clock.now += MODE_DOWNGRADE_SECONDS - 1
    client._remember("json_object", "json_object")  # staying there does not extend it
    modes.append(client.mode)
    clock.now += 1
    modes.append(client.mode)
    assert modes == ["json_schema", "json_object", "json_object", "json_schema"]
    client._remember("json_schema", "json_schema")
    assert client._downgrade is None


# A repair after a cut-off or long answer repeats only a bounded head of it.


def choice_completion(finish_reason: str) -> Any:
    return completion({**GOOD, "choices": [{**GOOD["choices"][0], "finish_reason": finish_reason}]})


def test_a_short_invalid_answer_is_repeated_whole() -> None:
    err = DecisionParseError("no JSON object found in the reply")
    echo, prompt = llm._repair_turn("I think so.", err, choice_completion("stop"))
    assert echo == "I think so."
    assert "no JSON object found" in prompt and "repeated" not in prompt


@pytest.mark.parametrize("reason", ["length", "stop"])
def test_a_cut_off_or_long_answer_is_not_repeated_whole(reason: str) -> None:
    broken = '{"reasoning": "' + "the user wants shorter answers and " * 300
    err = DecisionParseError("the reply is not valid JSON")
    echo, prompt = llm._repair_turn(broken, err, choice_completion(reason))
    assert broken.startswith(echo) and len(echo) == llm._ECHO_MAX_CHARS
    assert f"only its first {len(echo)} of {len(broken)} characters" in prompt
    assert "not valid JSON" in prompt and len(prompt) < 600
    assert ("cut off at the output token limit" in prompt) == (reason == "length")


def test_a_cut_off_answer_is_echoed_within_as_many_bytes() -> None:
    """Non-ASCII text costs more tokens per character: the head is held to bytes too."""
    broken = '{"reasoning": "' + "用户希望回答更短" * 400
    echo, _ = llm._repair_turn(broken, DecisionParseError("x"), choice_completion("length"))
    assert broken.startswith(echo) and 0 < len(echo.encode()) <= llm._ECHO_MAX_CHARS
    json.dumps(echo)  # no broken surrogate
