"""The LLM stage: ask an OpenAI-compatible endpoint for a decision and validate it.

Output modes, best first: `response_format` JSON schema, then JSON mode, then plain text
(the object is extracted from the prose). A fallback the endpoint forced (400/404/422 on a
format) is remembered for `MODE_DOWNGRADE_SECONDS`, then the best mode is tried again. A
reply that does not validate gets exactly one repair round-trip, which repeats at most a
bounded head of the broken answer. Timeouts, connection errors, 408, 429, 5xx and an HTTP
200 that carries no chat completion (a proxy's HTML page, an error object) are retried
with backoff (honouring `Retry-After`); 401/403 fail at once; an endpoint's "context
length exceeded" fails `context_overflow` at once, without a fallback. The API key never
appears in a log line or in an error we raise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
from openai import DefaultHttpxClient, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionMessageParam
from openai.types.chat.chat_completion import Choice

from reflection.backoff import compute_backoff, retry_after_seconds
from reflection.clamp import clamp_count, model_name
from reflection.constants import REPAIR_ECHO_MAX
from reflection.errors import (
    ContextOverflowError,
    LlmAuthError,
    LlmInvalidOutputError,
    LlmUnavailableError,
    LlmUnreachableError,
    TimeLimitError,
)
from reflection.models import LlmDecision, LlmResult, OutputMode, Usage
from reflection.reply import DecisionParseError, decision_json_schema, parse_decision
from reflection.secrets import mask_secrets
from reflection.settings import Settings

log = logging.getLogger(__name__)

MODES: tuple[OutputMode, ...] = get_args(OutputMode)  # best first
PLACEHOLDER_KEY = "not-set"  # the SDK insists on a key; a keyless endpoint ignores it
# How long a fallback to a weaker output mode is remembered before the best mode is tried
# again: a refusal that was not about the format cannot pin a worker to a weaker mode.
MODE_DOWNGRADE_SECONDS = 600.0

_FALLBACK_ERRORS = (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError)
_AUTH_ERRORS = (openai.AuthenticationError, openai.PermissionDeniedError)
_RETRY_STATUSES = frozenset({408, 429})
# An endpoint's "the request exceeds the context window" (OpenAI, vLLM, llama.cpp, LiteLLM,
# Anthropic and Bedrock wordings), matched on the error's code or its lower-cased message.
_CONTEXT_CODES = frozenset(
    {"context_length_exceeded", "context_window_exceeded", "exceed_context_size_error"}
)
_CONTEXT_PHRASES = (
    "context length",  # "This model's maximum context length is 8192 tokens"
    "context_length",
    "context window",
    "contextwindowexceeded",
    "context size",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)
_REPAIR_PROMPT = (
    "Your previous answer was not a valid decision: {error}\n"
    "Answer again with only the corrected JSON object: no prose, no code fence."
)
# The most of a broken answer a repair request repeats. The prompt guard budgeted one
# output: a cut-off answer echoed whole would take a second one's room in the window.
_ECHO_MAX_CHARS = REPAIR_ECHO_MAX
_SNIPPET_CHARS = 200  # of an unusable answer, for the log and the error


# The client.


@dataclass
class _Tally:
    """What one decide() spent, across every HTTP request it made, and its deadline."""

    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    deadline: float | None = None

    def remaining(self) -> float:
        """Seconds left before the deadline (infinite without one); TimeLimitError if none."""
        if self.deadline is None:
            return math.inf
        left = self.deadline - time.monotonic()
        if left <= 0:
            message = "the run's time budget ran out while asking the LLM"
            raise TimeLimitError(message, usage=self.usage, attempts=self.attempts)
        return left

    @property
    def usage(self) -> Usage:
        """The tokens paid for so far."""
        return Usage(
            tokens_in=self.tokens_in, tokens_out=self.tokens_out, tokens_cached=self.tokens_cached
        )

    def add(self, completion: ChatCompletion) -> None:
        # The SDK does not validate a 200: a count may be negative, huge or not a number.
        usage = completion.usage
        if usage is not None:
            self.tokens_in = clamp_count(self.tokens_in + clamp_count(usage.prompt_tokens))
            self.tokens_out = clamp_count(self.tokens_out + clamp_count(usage.completion_tokens))
            details = getattr(usage, "prompt_tokens_details", None)
            cached = clamp_count(getattr(details, "cached_tokens", 0))
            self.tokens_cached = clamp_count(self.tokens_cached + cached)


class _HttpClient(DefaultHttpxClient):
    """The SDK's default HTTP client that, like the one the SDK builds itself, closes its
    connections when collected (an LlmClient dropped without close() leaks no socket)."""

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                self.close()


class LlmClient:
    """Built once per worker process and reused for every decide(), from any thread.

    Each thread gets an OpenAI client of its own (connections stay open between its
    runs), all sharing one TLS context. One client for 50 threads was a bottleneck: its
    connection pool takes a single lock and probes every idle connection on each request
    and response (py-spy: 13 % of a threads-pool worker's time with 100 in flight).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._clock = clock  # for the downgrade's expiry only
        self._key = settings.llm_api_key.get_secret_value()
        self._endpoint = _without_userinfo(settings.llm_endpoint)
        # (mode, until `clock()`) after the endpoint refused a better mode; else None. One
        # attribute holding an immutable tuple: threads read and replace it without a lock.
        self._downgrade: tuple[OutputMode, float] | None = None
        self._tls = httpx2.create_ssl_context()  # loading the CA bundle costs ~20 ms
        self._local = threading.local()
        self._clients: list[OpenAI] = []
        self._clients_lock = threading.Lock()

    @property
    def mode(self) -> OutputMode:
        """The output mode the next decide() starts in: the best one, unless the endpoint
        refused it less than `MODE_DOWNGRADE_SECONDS` ago."""
        downgrade = self._downgrade
        if downgrade is not None and self._clock() < downgrade[1]:
            return downgrade[0]
        return MODES[0]

    def _openai(self) -> OpenAI:
        """This thread's client, built on its first request (or its first after close())."""
        client: OpenAI | None = getattr(self._local, "client", None)
        if client is None or client.is_closed():
            client = openai_client(
                self._settings,
                timeout=self._settings.llm_timeout_seconds,
                http_client=_HttpClient(verify=self._tls),
            )
            with self._clients_lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def decide(
        self, *, system: str, user: str, user_id: str, deadline: float | None = None
    ) -> LlmResult:
        """Ask for a decision; raises LlmAuthError, LlmUnavailableError (LlmUnreachableError
        for an outage: every attempt failed), LlmInvalidOutputError, and TimeLimitError
        once `deadline` (a `time.monotonic()` instant) has passed: no request, wait or
        retry outlasts it."""
        tally = _Tally(deadline=deadline)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        completion, mode = self._complete(messages, user_id, tally)
        text = _content(completion)
        repaired = False
        try:
            decision = parse_decision(text)
        except DecisionParseError as err:
            log.warning("the LLM's reply did not validate (%s); asking for a repair", err)
            echo, prompt = _repair_turn(text, err, completion)
            messages.append({"role": "assistant", "content": echo})
            messages.append({"role": "user", "content": prompt})
            completion, text, decision = self._repair(messages, mode, user_id, tally)
            repaired = True
        return LlmResult(
            decision=decision,
            raw=text,
            model=self._model_name(completion.model),
            usage=tally.usage,
            attempts=tally.attempts,
            mode=mode,
            repaired=repaired,
        )

    def _model_name(self, reported: object) -> str:
        """The model the endpoint says answered, if it is a model name (it is stored and
        shown to operators); else the configured one."""
        name = model_name(reported, self._settings.llm_model)
        if reported and name != reported:
            log.warning(
                "the LLM endpoint reported a model name that is not one (%s); recorded as %s",
                self._snippet(reported),
                name,
            )
        return name

    def close(self) -> None:
        """Close every thread's HTTP connections."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> LlmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _complete(
        self, messages: list[ChatCompletionMessageParam], user_id: str, tally: _Tally
    ) -> tuple[ChatCompletion, OutputMode]:
        """Call in the remembered mode, falling back while the endpoint refuses the format."""
        start = self.mode
        modes = MODES[MODES.index(start) :]
        for mode in modes[:-1]:
            try:
                completion = self._call(messages, mode, user_id, tally)
            except _FALLBACK_ERRORS as e:
                log.info("the LLM endpoint refused output mode %s (HTTP %d)", mode, e.status_code)
                continue
            self._remember(start, mode)
            return completion, mode
        try:
            completion = self._call(messages, modes[-1], user_id, tally)
        except _FALLBACK_ERRORS as e:
            raise self._rejected(e, tally) from e
        self._remember(start, modes[-1])
        return completion, modes[-1]

    def _remember(self, start: OutputMode, mode: OutputMode) -> None:
        """After a fallback from `start` to `mode`, start there for a while. Staying in a
        remembered mode does not extend it, so the best mode is tried again in time."""
        if mode != start:
            self._downgrade = (mode, self._clock() + MODE_DOWNGRADE_SECONDS)
            log.info(
                "the LLM endpoint answered in output mode %s; using it for the next %.0f s",
                mode,
                MODE_DOWNGRADE_SECONDS,
            )
        elif mode == MODES[0] and self._downgrade is not None:
            self._downgrade = None  # expired, and the best mode works again

    def _repair(
        self,
        messages: list[ChatCompletionMessageParam],
        mode: OutputMode,
        user_id: str,
        tally: _Tally,
    ) -> tuple[ChatCompletion, str, LlmDecision]:
        try:
            completion = self._call(messages, mode, user_id, tally)
        except _FALLBACK_ERRORS as e:
            raise self._rejected(e, tally) from e
        text = _content(completion)
        try:
            return completion, text, parse_decision(text)
        except DecisionParseError as err:
            message = f"the LLM's answer did not validate, even after one repair round-trip: {err}"
            raise LlmInvalidOutputError(
                message, usage=tally.usage, attempts=tally.attempts
            ) from err

    def _call(
        self,
        messages: list[ChatCompletionMessageParam],
        mode: OutputMode,
        user_id: str,
        tally: _Tally,
    ) -> ChatCompletion:
        """One request, retried on transient failures; 400/404/422 propagate to the caller
        (a context-length error as ContextOverflowError)."""
        attempts = self._settings.llm_max_attempts
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            timeout = min(self._settings.llm_timeout_seconds, tally.remaining())
            tally.attempts += 1
            try:
                completion = self._request(messages, mode, user_id, timeout)
            except openai.APIStatusError as e:
                last = self._retryable(e, tally)
            except openai.APIConnectionError as e:  # timeouts included
                last = e
            except openai.OpenAIError as e:
                raise self._unavailable(tally, f"failed ({type(e).__name__}: {e})") from e
            except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a 200 with a broken body
                body = e.doc if isinstance(e, json.JSONDecodeError) else e.object
                last = self._unusable_answer("a body that is not JSON", body)
            else:
                # A few isinstance checks: the good answer is not parsed a second time.
                problem = _unusable(completion)
                if problem is None:
                    tally.add(completion)
                    return completion
                last = self._unusable_answer(problem, completion)
            if attempt < attempts:
                self._wait(attempt, last, tally)
        what = f"failed after {tally.attempts} attempts (last: {_describe_api_error(last)})"
        raise self._unavailable(tally, what, LlmUnreachableError) from last

    def _request(
        self,
        messages: list[ChatCompletionMessageParam],
        mode: OutputMode,
        user_id: str,
        timeout: float,
    ) -> ChatCompletion:
        # The SDK's generic `post` (its documented way to send a body as is) rather than
        # `chat.completions.create`, whose type-driven transform walks the params, JSON
        # schema included, on every call: 40 % of the client's CPU, for a body of plain
        # JSON it leaves unchanged. Errors, retries and parsing are the SDK's all the same.
        s = self._settings
        body: dict[str, object] = {
            "model": s.llm_model,
            "messages": messages,
            "max_tokens": s.llm_max_output_tokens,
            "temperature": 0,
        }
        if (response_format := _RESPONSE_FORMATS[mode]) is not None:
            body["response_format"] = response_format
        headers: dict[str, str] = {}
        if s.llm_proxy:
            body["user"] = user_id
            headers["X-Reflection-User"] = user_id
        return self._openai().post(
            "/chat/completions",
            body=body,
            options={"timeout": timeout, "headers": headers},
            cast_to=ChatCompletion,
        )

    def _retryable(self, e: openai.APIStatusError, tally: _Tally) -> openai.APIStatusError:
        """`e` when it is worth retrying (408, 429, 5xx); else raises what decide() should:
        401/403 as LlmAuthError, a context-length error as ContextOverflowError, 400/404/422
        as they are (for the output mode fallback), any other as LlmUnavailableError."""
        if e.status_code in _RETRY_STATUSES or e.status_code >= 500:
            return e
        if isinstance(e, _AUTH_ERRORS):
            raise self._auth_error(e, tally) from e
        if _is_context_overflow(e):
            raise self._overflow(e, tally) from e
        if isinstance(e, _FALLBACK_ERRORS):
            raise e
        raise self._rejected(e, tally) from e

    def _wait(self, attempt: int, error: Exception | None, tally: _Tally) -> None:
        s = self._settings
        delay = compute_backoff(
            attempt, base=s.llm_backoff_base_seconds, cap=s.llm_backoff_max_seconds
        )
        if isinstance(error, openai.APIStatusError):
            asked = retry_after_seconds(error.response.headers)
            if asked is not None:
                delay = max(delay, min(asked, s.llm_backoff_max_seconds * 3))
        log.warning(
            "LLM request failed (%s); retry %d of %d in %.2fs",
            self._redact(_describe_api_error(error)),
            attempt + 1,
            s.llm_max_attempts,
            delay,
        )
        self._sleep(min(delay, tally.remaining()))

    def _auth_error(self, e: openai.APIStatusError, tally: _Tally) -> LlmAuthError:
        message = f"the LLM endpoint refused the worker's API key (HTTP {e.status_code})"
        log.error("%s; endpoint %s", message, self._endpoint)
        return LlmAuthError(message, usage=tally.usage, attempts=tally.attempts)

    def _overflow(self, e: openai.APIStatusError, tally: _Tally) -> ContextOverflowError:
        message = (
            f"the LLM endpoint {self._endpoint} refused the request as longer than the "
            f"model's context window ({_describe_api_error(e)}); set "
            "REFLECTION_LLM_CONTEXT_LIMIT_TOKENS to the model's real window"
        )
        message = self._redact(message)[:600]
        return ContextOverflowError(message, usage=tally.usage, attempts=tally.attempts)

    def _unusable_answer(self, problem: str, answer: object) -> _UnusableAnswerError:
        """The error for an HTTP 200 we cannot read, quoting the start of what came back
        (the worker's key and anything that looks like a credential masked)."""
        return _UnusableAnswerError(f"HTTP 200 with {problem}: {self._snippet(answer)}")

    def _snippet(self, answer: object) -> str:
        text = _as_text(answer)[: _SNIPPET_CHARS + 300]  # room to mask a secret at the cut
        text = " ".join(mask_secrets(self._redact(text)).split())
        if len(text) > _SNIPPET_CHARS:
            text = text[:_SNIPPET_CHARS] + "…"
        return repr(text)

    def _rejected(self, e: openai.APIStatusError, tally: _Tally) -> LlmUnavailableError:
        return self._unavailable(tally, f"rejected the request ({_describe_api_error(e)})")

    def _unavailable(
        self, tally: _Tally, what: str, kind: type[LlmUnavailableError] = LlmUnavailableError
    ) -> LlmUnavailableError:
        message = f"the LLM endpoint {self._endpoint} {self._redact(what)[:400]}"
        return kind(message, usage=tally.usage, attempts=tally.attempts)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def openai_client(
    settings: Settings, *, timeout: float, http_client: DefaultHttpxClient | None = None
) -> OpenAI:
    """The SDK's client of the endpoint: our own retries only (none of the SDK's), the
    placeholder key for a keyless endpoint. Built by `LlmClient` and `reflection.clients`."""
    return OpenAI(
        base_url=settings.llm_endpoint,
        api_key=settings.llm_api_key.get_secret_value() or PLACEHOLDER_KEY,
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )


# Built once: the SDK serialises the body without changing it.
_RESPONSE_FORMATS: dict[OutputMode, dict[str, object] | None] = {
    "json_schema": {
        "type": "json_schema",
        "json_schema": {"name": "reflection_decision", "schema": decision_json_schema()},
    },
    "json_object": {"type": "json_object"},
    "text": None,
}


class _UnusableAnswerError(Exception):
    """An HTTP 200 that carries no chat completion we can read: retried like a 5xx."""


def _unusable(answer: object) -> str | None:
    """None when `answer` is a chat completion with a readable first choice; else what it is.

    The SDK does not validate a 200: a proxy's HTML page comes back as a str, a JSON
    `{"error": ...}` or `{"choices": null}` as a ChatCompletion without choices."""
    if isinstance(answer, str):  # the SDK's answer when the body is not JSON
        return "a body that is not JSON"
    if not isinstance(answer, ChatCompletion):
        return f"a JSON {type(answer).__name__} instead of a chat completion"
    if answer.model_extra and answer.model_extra.get("error"):
        return "an error instead of a chat completion"
    return _unusable_choice(answer)


def _unusable_choice(answer: ChatCompletion) -> str | None:
    """None when the completion's first choice holds a text message; else what it holds."""
    choices = answer.choices
    if not choices or not isinstance(choices, list):
        return "a chat completion without choices"
    choice = choices[0]
    if not isinstance(choice, Choice) or not isinstance(choice.message, ChatCompletionMessage):
        return "a chat completion whose choice has no message"
    content = choice.message.content
    if content is not None and not isinstance(content, str):
        return "a chat completion whose message content is not text"
    return None


def _as_text(answer: object) -> str:
    """What came back, as text, for a log line: never raises."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, bytes):
        return answer.decode("utf-8", errors="replace")
    try:
        if isinstance(answer, ChatCompletion):
            answer = answer.model_dump(mode="json", exclude_unset=True, warnings=False)
        return json.dumps(answer, ensure_ascii=False, default=repr)
    except Exception:  # a description must not fail the run
        return repr(answer)


def _content(completion: ChatCompletion) -> str:
    return (completion.choices[0].message.content or "") if completion.choices else ""


def _repair_turn(text: str, err: DecisionParseError, completion: ChatCompletion) -> tuple[str, str]:
    """The assistant turn that repeats the broken answer, and the repair request.

    A cut-off or long answer is repeated only up to `_ECHO_MAX_CHARS` (and as many UTF-8
    bytes): the repair request then costs about what the first one did, which the prompt
    guard budgeted with room for one answer."""
    error = str(err)
    cut = bool(completion.choices) and completion.choices[0].finish_reason == "length"
    echo = _head(text) if cut or len(text) > _ECHO_MAX_CHARS else text
    omitted = ""
    if len(echo) < len(text):
        omitted = (
            f"; only its first {len(echo)} of {len(text)} characters are repeated above, "
            "so write the whole object again"
        )
    if cut:
        error = (
            "it was cut off at the output token limit, so answer more briefly: fewer "
            f"changes, shorter reasoning and bodies{omitted} ({error})"
        )
    elif omitted:
        error = f"{error}{omitted}"
    return echo, _REPAIR_PROMPT.format(error=error)


def _head(text: str) -> str:
    """At most `_ECHO_MAX_CHARS` characters of `text` and as many UTF-8 bytes."""
    head = text[:_ECHO_MAX_CHARS]
    if not head.isascii():
        raw = head.encode("utf-8", errors="surrogatepass")[:_ECHO_MAX_CHARS]
        head = raw.decode("utf-8", errors="ignore")
    return head


def _is_context_overflow(e: openai.APIStatusError) -> bool:
    """Whether the endpoint refused the request as longer than the model's context window."""
    code = e.code
    if isinstance(code, str) and code.lower() in _CONTEXT_CODES:
        return True
    message = _error_message(e).lower()
    return any(phrase in message for phrase in _CONTEXT_PHRASES)


def _error_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return e.message


def _describe_api_error(e: Exception | None) -> str:
    if isinstance(e, _UnusableAnswerError):
        return str(e)
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {_error_message(e)[:200]}"
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection error"
    return type(e).__name__


def _without_userinfo(url: str) -> str:
    """The endpoint for messages: credentials embedded in the URL are dropped."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
