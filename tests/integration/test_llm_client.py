"""LlmClient against a ScriptedLlmServer on loopback: the openai SDK over real HTTP, no mocks.

Needs neither Postgres nor Redis. Backoff sleeps go to a recording fake, so nothing waits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.errors import (
    ContextOverflowError,
    LlmAuthError,
    LlmInvalidOutputError,
    LlmUnavailableError,
    TimeLimitError,
)
from reflection.llm import MODE_DOWNGRADE_SECONDS, LlmClient
from reflection.models import Usage
from reflection.settings import Settings

API_KEY = "sk-test-123"
ROOT = Path(__file__).resolve().parents[2]
DECISION: dict[str, Any] = {
    "reasoning": "The user asked for pytest twice.",
    "memory_changes": [
        {
            "op": "add",
            "name": "prefers-pytest",
            "description": "Wants pytest",
            "type": "feedback",
            "body": "Use pytest fixtures.",
        }
    ],
    "piece_edit": None,
}
OK = {"content": DECISION}


@dataclass
class Harness:
    srv: ScriptedLlmServer
    sleeps: list[float] = field(default_factory=list)
    clients: list[LlmClient] = field(default_factory=list)

    def client(self, clock: Callable[[], float] = time.monotonic, **overrides: Any) -> LlmClient:
        values: dict[str, Any] = {
            "llm_endpoint": self.srv.base_url,
            "llm_api_key": API_KEY,
            "llm_model": "scripted-1",
            "llm_proxy": False,
            "llm_timeout_seconds": 5,
            "llm_max_attempts": 4,
            "llm_backoff_base_seconds": 0.01,
            "llm_backoff_max_seconds": 0.05,
        }
        settings = Settings(**(values | overrides))
        client = LlmClient(settings, sleep=self.sleeps.append, clock=clock)
        self.clients.append(client)
        return client

    def script(self, *replies: dict[str, Any], **extra: Any) -> None:
        """Prompts about job-1 get these replies in order (the last one repeats)."""
        self.srv.set_script({"rules": [{"match": "job-1", "replies": list(replies)}], **extra})

    def calls(self) -> list[dict[str, Any]]:
        return [r for r in self.srv.requests if r["path"].endswith("/chat/completions")]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def decide(client: LlmClient, user_id: str = "alice") -> Any:
    return client.decide(
        system="You are the reflection worker.", user="About job-1.", user_id=user_id
    )


@pytest.fixture
def h() -> Iterator[Harness]:
    with ScriptedLlmServer({"rules": []}, require_key=API_KEY) as srv:
        harness = Harness(srv)
        yield harness
        for client in harness.clients:
            client.close()


def test_happy_path_returns_the_decision_with_usage(h: Harness) -> None:
    """One request in json_schema mode gives the validated decision, raw text, model, usage."""
    usage = {"prompt_tokens": 120, "completion_tokens": 30}
    h.script({"content": DECISION, "usage": usage}, model="gateway-model-7")
    result = decide(h.client(llm_max_output_tokens=512))
    assert result.decision.memory_changes[0].name == "prefers-pytest"
    assert json.loads(result.raw) == DECISION
    assert result.model == "gateway-model-7"
    assert result.usage == Usage(tokens_in=120, tokens_out=30)
    assert (result.attempts, result.mode, result.repaired) == (1, "json_schema", False)
    [call] = h.calls()
    body = call["json"]
    assert body["model"] == "scripted-1"
    assert (body["max_tokens"], body["temperature"]) == (512, 0)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "reflection_decision"
    assert "reasoning" in fmt["json_schema"]["schema"]["properties"]


def test_missing_usage_counts_as_zero(h: Harness) -> None:
    """An endpoint that reports no usage yields zero tokens, not a crash."""
    h.script({"content": DECISION, "usage": None})
    assert decide(h.client()).usage == Usage(tokens_in=0, tokens_out=0)


def test_cached_tokens_are_read_into_the_usage(h: Harness) -> None:
    """`usage.prompt_tokens_details.cached_tokens` becomes `Usage.tokens_cached`: none at
    first, then the blocks of the long system prompt two runs share (scripted counting)."""
    h.script(OK)
    client = h.client()
    system = "You are the reflection worker. " * 200  # about 1,500 tokens, 4 characters each

    def ask() -> Usage:
        return client.decide(system=system, user="About job-1.", user_id="alice").usage

    first, second = ask(), ask()
    assert first.tokens_cached == 0 and first.tokens_in > 1024
    assert 1024 <= second.tokens_cached < second.tokens_in
    assert second.tokens_cached % 128 == 0


def test_key_is_sent_as_bearer_and_connections_are_reused(h: Harness) -> None:
    """The worker's key goes in Authorization; two decisions share one connection."""
    h.script(OK)
    client = h.client()
    decide(client)
    decide(client)
    first, second = h.calls()
    assert first["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert first["client"] == second["client"]


def test_empty_key_sends_the_placeholder(h: Harness) -> None:
    """With no key configured the SDK still gets one: the placeholder `not-set`."""
    with pytest.raises(LlmAuthError):
        decide(h.client(llm_api_key=""))
    assert h.calls()[0]["headers"]["authorization"] == "Bearer not-set"


@pytest.mark.parametrize("proxy", [True, False])
def test_proxy_mode_sends_the_user_id(h: Harness, proxy: bool) -> None:
    """Proxy mode sends `user` and X-Reflection-User for attribution; otherwise neither."""
    h.script(OK)
    decide(h.client(llm_proxy=proxy), user_id="u-42")
    [call] = h.calls()
    assert call["json"].get("user") == ("u-42" if proxy else None)
    assert call["headers"].get("x-reflection-user") == ("u-42" if proxy else None)


@pytest.mark.parametrize(
    ("rejected", "modes", "final"),
    [
        (["json_schema"], ["json_schema", "json_object"], "json_object"),
        (["json_schema", "json_object"], ["json_schema", "json_object", None], "text"),
    ],
)
def test_output_mode_falls_back_and_is_remembered(
    h: Harness, rejected: list[str], modes: list[str | None], final: str
) -> None:
    """400 on response_format falls back schema → JSON mode → text; the next call starts there."""
    chatty = f"Here it is:\n```json\n{json.dumps(DECISION)}\n```"
    h.script({"content": chatty}, reject_response_format=rejected)
    client = h.client()
    result = decide(client)
    assert (result.mode, result.attempts) == (final, len(modes))
    assert result.decision.reasoning == DECISION["reasoning"]
    assert [(c["json"].get("response_format") or {}).get("type") for c in h.calls()] == modes
    again = decide(client)
    assert (again.mode, again.attempts) == (final, 1)
    assert len(h.calls()) == len(modes) + 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_each_refusal_status_triggers_the_fallback(h: Harness, status: int) -> None:
    """400, 404 and 422 on the structured request all move on to the next mode."""
    h.script({"status": status, "error": "response_format unsupported"}, OK)
    result = decide(h.client())
    assert (result.mode, result.attempts) == ("json_object", 2)
    assert h.sleeps == []


def test_refused_in_every_mode_is_unavailable(h: Harness) -> None:
    """A request refused in all three modes fails llm_unavailable with the endpoint's reason."""
    h.script({"status": 400, "error": "model does not exist"})
    with pytest.raises(LlmUnavailableError) as info:
        decide(h.client())
    assert "HTTP 400" in str(info.value) and "model does not exist" in str(info.value)
    assert len(h.calls()) == 3


def test_invalid_reply_is_repaired_once(h: Harness) -> None:
    """An invalid reply gets one repair round-trip quoting the error; usage is summed."""
    h.script(
        {"content": "I think the user likes pytest.", "usage": _usage(100, 8)},
        {"content": DECISION, "usage": _usage(130, 40)},
    )
    result = decide(h.client())
    assert (result.repaired, result.attempts, result.mode) == (True, 2, "json_schema")
    assert result.usage == Usage(tokens_in=230, tokens_out=48)
    assert json.loads(result.raw) == DECISION
    repair = h.calls()[1]["json"]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == "I think the user likes pytest."
    assert "no JSON object found" in repair[3]["content"]
    assert "only the corrected JSON object" in repair[3]["content"]


def test_truncated_reply_is_repaired_with_a_hint(h: Harness) -> None:
    """A reply cut off at max_tokens gets a repair prompt that asks for a shorter answer."""
    h.script({"content": '{"reasoning": "the user', "finish_reason": "length"}, OK)
    result = decide(h.client())
    assert result.repaired
    assert "cut off at the output token limit" in h.calls()[1]["json"]["messages"][3]["content"]


def test_second_invalid_reply_fails_invalid_output(h: Harness) -> None:
    """Still invalid after the repair: LlmInvalidOutputError after exactly two requests."""
    h.script({"content": {"reasoning": "r", "memory_changes": [{"op": "rename", "name": "x"}]}})
    with pytest.raises(LlmInvalidOutputError) as info:
        decide(h.client())
    assert "memory_changes.0.op" in str(info.value)
    assert getattr(info.value, "attempts", None) == 2
    assert len(h.calls()) == 2


def test_a_cut_off_answer_is_not_echoed_whole_in_the_repair(h: Harness) -> None:
    """The repair after a reply cut off at max_tokens repeats a bounded head of it, not the
    whole answer: the request stays about as large as the first, which the guard budgeted."""
    cut = '{"reasoning": "' + "the user wants shorter answers and " * 300
    h.script({"content": cut, "finish_reason": "length"}, OK)
    result = decide(h.client(llm_max_output_tokens=2048))
    assert (result.repaired, result.attempts) == (True, 2)
    first, repair = (c["json"] for c in h.calls())
    assert repair["max_tokens"] == first["max_tokens"] == 2048
    echo, ask = repair["messages"][2]["content"], repair["messages"][3]["content"]
    assert cut.startswith(echo) and len(echo) <= 1000 < len(cut)
    assert "cut off at the output token limit" in ask and "first 1000 of" in ask
    grown = len(json.dumps(repair["messages"])) - len(json.dumps(first["messages"]))
    assert grown < 1700


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_fallback_is_remembered_for_a_while_then_the_best_mode_is_tried_again(
    h: Harness,
) -> None:
    """A refused json_schema moves the client to JSON mode for MODE_DOWNGRADE_SECONDS only:
    then it asks with the schema again (a one-off refusal cannot pin it forever)."""
    h.script(OK, reject_response_format=["json_schema"])
    clock = _Clock()
    client = h.client(clock=clock)
    assert decide(client).mode == "json_object"
    clock.now += MODE_DOWNGRADE_SECONDS - 1
    assert decide(client).mode == "json_object"
    clock.now += 1
    h.script(OK)  # the endpoint takes the schema again
    assert decide(client).mode == "json_schema"
    assert decide(client).mode == "json_schema"
    formats = [(c["json"].get("response_format") or {}).get("type") for c in h.calls()]
    assert formats == ["json_schema", "json_object", "json_object", "json_schema", "json_schema"]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_context_length_error_fails_context_overflow_without_a_fallback(
    h: Harness, status: int
) -> None:
    """An endpoint's "maximum context length" is not a format refusal: the run fails
    context_overflow after one request, and the client keeps its best output mode."""
    message = "This model's maximum context length is 8192 tokens, you requested 9000"
    h.script({"status": status, "error": message}, OK)
    client = h.client()
    with pytest.raises(ContextOverflowError) as info:
        decide(client)
    assert info.value.code == "context_overflow"
    assert "maximum context length" in str(info.value) and API_KEY not in str(info.value)
    assert getattr(info.value, "attempts", None) == 1 and h.sleeps == []
    assert client.mode == "json_schema"
    assert decide(client).mode == "json_schema"
    assert [c["json"]["response_format"]["type"] for c in h.calls()] == ["json_schema"] * 2


def test_a_context_length_error_on_the_repair_is_context_overflow(h: Harness) -> None:
    h.script({"content": "not json"}, {"status": 400, "error": "prompt is too long"})
    with pytest.raises(ContextOverflowError):
        decide(h.client())
    assert len(h.calls()) == 2


UNUSABLE: list[tuple[str, dict[str, Any], str]] = [
    ("html", {"body": "<html><body>502 Bad gateway</body></html>"}, "502 Bad gateway"),
    ("error-object", {"body": {"error": {"message": "upstream overloaded", "code": 503}}},
     "upstream overloaded"),
    ("no-choices", {"body": {"id": "x", "object": "chat.completion", "choices": None}},
     "without choices"),
    ("broken-json", {"body": '{"choices": [', "headers": {"Content-Type": "application/json"}},
     "not JSON"),
    ("empty", {"body": ""}, "not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "reply", "said"), UNUSABLE, ids=[u[0] for u in UNUSABLE])
def test_a_200_without_a_completion_is_retried_like_an_outage(
    h: Harness, case: str, reply: dict[str, Any], said: str
) -> None:
    """A 200 that carries no chat completion (a proxy's page, an error object) is retried
    with backoff; once a real answer comes, the decision arrives."""
    h.script(reply, OK)
    result = decide(h.client())
    assert (result.attempts, result.repaired) == (2, False)
    assert len(h.sleeps) == 1


@pytest.mark.parametrize(("case", "reply", "said"), UNUSABLE, ids=[u[0] for u in UNUSABLE])
def test_a_200_without_a_completion_every_time_fails_unavailable(
    h: Harness, caplog: pytest.LogCaptureFixture, case: str, reply: dict[str, Any], said: str
) -> None:
    """Only such answers: llm_unavailable after llm_max_attempts, the log and the error
    saying what came back, never the key."""
    caplog.set_level(logging.DEBUG)
    h.script(reply)
    with pytest.raises(LlmUnavailableError) as info:
        decide(h.client(llm_max_attempts=3))
    message = str(info.value)
    assert "3 attempts" in message and "HTTP 200" in message and said in message
    assert getattr(info.value, "attempts", None) == 3 and len(h.calls()) == 3
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all(said in r for r in retries)
    assert API_KEY not in caplog.text and API_KEY not in message


def test_the_key_echoed_by_a_proxy_page_is_not_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h.script({"body": f"<pre>Authorization: Bearer {API_KEY}</pre>"})
    with pytest.raises(LlmUnavailableError) as info:
        decide(h.client(llm_max_attempts=2))
    assert "Authorization" in caplog.text
    assert API_KEY not in caplog.text and API_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("headers", "backoff_max", "expected"),
    [
        ({"Retry-After": "7"}, 20.0, 7.0),
        ({"retry-after-ms": "1500"}, 20.0, 1.5),
        ({"Retry-After": "1000"}, 2.0, 6.0),  # never more than 3 x the backoff cap
    ],
)
def test_rate_limit_honours_retry_after(
    h: Harness, headers: dict[str, str], backoff_max: float, expected: float
) -> None:
    """429 with Retry-After waits what the server asked (bounded), then succeeds."""
    h.script({"status": 429, "error": "slow down", "headers": headers}, OK)
    result = decide(h.client(llm_backoff_base_seconds=0.001, llm_backoff_max_seconds=backoff_max))
    assert result.attempts == 2
    assert h.sleeps == [expected]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(h: Harness, status: int) -> None:
    """429 and 5xx are retried with backoff within the cap, then the decision arrives."""
    h.script({"status": status}, {"status": status}, OK)
    result = decide(h.client())
    assert result.attempts == 3
    assert len(h.sleeps) == 2 and all(0 <= s <= 0.05 for s in h.sleeps)


def test_server_errors_until_the_last_attempt_fail_unavailable(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """500 on every attempt: LlmUnavailableError after llm_max_attempts requests, key-free."""
    caplog.set_level(logging.DEBUG)
    h.script({"status": 500, "error": "upstream exploded"})
    with pytest.raises(LlmUnavailableError) as info:
        decide(h.client(llm_max_attempts=4))
    message = str(info.value)
    assert len(h.calls()) == 4 and getattr(info.value, "attempts", None) == 4
    assert len(h.sleeps) == 3
    assert h.srv.base_url in message and "4 attempts" in message and "HTTP 500" in message
    assert API_KEY not in message and API_KEY not in caplog.text


def test_timeout_is_retried(h: Harness) -> None:
    """A reply slower than llm_timeout_seconds counts as a timeout and is retried."""
    h.script({"content": DECISION, "delay": 3.0}, OK)
    result = decide(h.client(llm_timeout_seconds=0.3))
    assert result.attempts == 2 and len(h.sleeps) == 1


def test_timeouts_on_every_attempt_fail_unavailable(h: Harness) -> None:
    """Only timeouts: LlmUnavailableError naming the timeout."""
    h.script({"content": DECISION, "delay": 3.0})
    with pytest.raises(LlmUnavailableError, match="timeout"):
        decide(h.client(llm_timeout_seconds=0.1, llm_max_attempts=2))
    assert len(h.calls()) == 2


def test_connection_refused_is_retried_then_unavailable(h: Harness) -> None:
    """Nothing listening: connection errors are retried, then llm_unavailable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = h.client(llm_endpoint=f"http://127.0.0.1:{port}/v1", llm_max_attempts=3)
    with pytest.raises(LlmUnavailableError, match="connection error") as info:
        decide(client)
    assert getattr(info.value, "attempts", None) == 3 and len(h.sleeps) == 2


def test_refused_key_fails_at_once_without_leaking_it(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """401: LlmAuthError after one request; the log says so; the key is nowhere in text."""
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-key-0000000000000000"
    with pytest.raises(LlmAuthError) as info:
        decide(h.client(llm_api_key=wrong))
    assert str(info.value) == "the LLM endpoint refused the worker's API key (HTTP 401)"
    assert len(h.calls()) == 1 and h.sleeps == []
    errors = [r for r in caplog.records if r.name == "reflection.llm" and r.levelname == "ERROR"]
    assert errors and "refused the worker's API key" in errors[0].getMessage()
    for text in (str(info.value), repr(info.value), caplog.text):
        assert wrong not in text and API_KEY not in text


def test_forbidden_is_an_auth_failure(h: Harness) -> None:
    """403 from a gateway (key not allowed this model) is llm_auth too, without retry."""
    h.script({"status": 403, "error": "key not allowed"})
    with pytest.raises(LlmAuthError, match=r"HTTP 403"):
        decide(h.client())
    assert len(h.calls()) == 1


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _post(url: str, body: Any) -> Any:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_scripted_server_control_endpoints() -> None:
    """The server's health, models, request log, script and reset endpoints work over HTTP."""
    with ScriptedLlmServer({"model": "m-1"}) as srv:
        root = srv.base_url.removesuffix("/v1")
        assert _get(f"{root}/health") == {"status": "ok"}
        assert _get(f"{srv.base_url}/models")["data"][0]["id"] == "m-1"
        chat = {"model": "x", "messages": [{"role": "user", "content": "hello job-9"}]}
        reply = _post(f"{srv.base_url}/chat/completions", chat)
        assert json.loads(reply["choices"][0]["message"]["content"])["memory_changes"] == []
        script = {"rules": [{"match": "job-9", "replies": [{"content": "a"}, {"content": "b"}]}]}
        assert _post(f"{root}/_script", script) == {"status": "ok"}
        texts = [_post(f"{srv.base_url}/chat/completions", chat) for _ in range(3)]
        assert [t["choices"][0]["message"]["content"] for t in texts] == ["a", "b", "b"]
        assert len(_get(f"{root}/_requests")) == 5
        _post(f"{root}/_reset", {})
        assert _get(f"{root}/_requests") == [] and srv.requests == []


def test_scripted_server_command_line(tmp_path: Path) -> None:
    """`python -m reflection.devtools.scripted_llm` prints its URL, serves, stops on SIGTERM."""
    script = tmp_path / "script.yaml"
    script.write_text("model: cli-model\ndefault:\n  content: hello\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    module = "reflection.devtools.scripted_llm"
    cmd = [sys.executable, "-m", module, "--port", str(port), "--script", str(script)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"listening on http://127.0.0.1:{port}/v1"
        assert _get(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "cli-model"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_run_deadline_bounds_every_request_and_wait(h: Harness) -> None:
    """A slow endpoint (2 s an answer, inside the 5 s timeout) with 0.6 s left: the answer
    would have come, so the error proves the request was cut at the deadline; no retry
    starts after it, and the error says time_limit."""
    import time

    h.script({**OK, "delay": 2.0})
    client = h.client(llm_backoff_base_seconds=0.0, llm_backoff_max_seconds=0.0)
    t0 = time.monotonic()
    with pytest.raises(TimeLimitError) as err:
        client.decide(system="s", user="About job-1.", user_id="u", deadline=t0 + 0.6)
    assert err.value.code == "time_limit"
    assert getattr(err.value, "attempts", 0) >= 1
    with pytest.raises(TimeLimitError):  # a deadline already past: no request at all
        client.decide(system="s", user="About job-1.", user_id="u", deadline=time.monotonic())
    assert len(h.calls()) == getattr(err.value, "attempts", 0)
