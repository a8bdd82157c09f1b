"""A scripted OpenAI-compatible LLM server on loopback (stdlib only), for tests and the demo.

The real HTTP path of the openai SDK runs against it; nothing is mocked. Use it in tests:

    with ScriptedLlmServer({"rules": [...]}, require_key="sk-test") as srv:
        Settings(llm_endpoint=srv.base_url, ...)   # "http://127.0.0.1:<port>/v1"
        srv.requests                              # every API request: path, headers, json

or as a process (prints `listening on http://HOST:PORT/v1`, runs until SIGTERM/SIGINT):

    python -m reflection.devtools.scripted_llm --port 4010 --script script.json

Script (a dict, or a JSON/YAML file):

    {"model": "scripted-1",
     "default": <reply>,                                   # no rule matched
     "rules": [{"match": "<substring of any message>", "replies": [<reply>, ...]}],
     "reject_response_format": ["json_schema"]}            # answered with HTTP 400

A rule's replies are served in order, the last one repeating. A reply is
`{"content": str | object (JSON-dumped), "status": 200, "delay": seconds,
"jitter": seconds, "headers": {...}, "error": "message", "usage": {...} | null,
"finish_reason": "stop", "body": str | object}`; with `jitter` each answer waits a delay
drawn uniformly from delay ± jitter (never below 0), as a real model's latency varies.
With `body` the response is that body instead of a completion or an error (a str sent
as is, `text/html` unless `headers` set a Content-Type; an object JSON-dumped), with
`status`: a proxy's HTML page or an `{"error": ...}` object under HTTP 200.
Without a default, an abstaining decision is answered.

Usage. Unless a reply sets `usage` itself, the server counts tokens by characters (4 to
a token, no tokenizer) and reports `usage.prompt_tokens_details.cached_tokens` the way
OpenAI does: the longest prefix of this prompt that an earlier served prompt shared, in
whole 128-token blocks from 1,024 tokens on, 0 below (`prompt_cache`). Every completion
served is remembered, scripted usage or not; `reset` forgets them.

Control endpoints: GET /_requests, POST /_script (body: a script), POST /_reset.
Recorded header names are lower case. Nothing is redacted: this is a dev tool.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from reflection.devtools.prompt_cache import CHARS_PER_TOKEN, PromptCache, message_texts

DEFAULT_MODEL = "scripted-1"
ABSTAIN: dict[str, Any] = {
    "reasoning": "nothing to learn",
    "memory_changes": [],
    "piece_edit": None,
}
_REPLY_KEYS = {
    "content", "status", "delay", "jitter", "headers", "error", "usage", "finish_reason",
    "body",
}  # fmt: skip
_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def load_script(path: str | Path) -> dict[str, Any]:
    """Read a script file: YAML for .yaml/.yml, JSON otherwise."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"not valid YAML: {e}") from e
    else:
        data = json.loads(text)
    return _normalized(data)


def _normalized(script: Any) -> dict[str, Any]:
    """A deep copy of `script`, checked; ValueError says what is wrong."""
    if not isinstance(script, Mapping):
        raise ValueError("a script must be a mapping")
    out = copy.deepcopy(dict(script))
    rules = out.setdefault("rules", [])
    if not isinstance(rules, list):
        raise ValueError("script.rules must be a list")
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or not isinstance(rule.get("match"), str):
            raise ValueError(f"script.rules[{i}] needs a string 'match'")
        replies = rule.get("replies")
        if not isinstance(replies, list) or not replies:
            raise ValueError(f"script.rules[{i}].replies must be a non-empty list")
        for reply in replies:
            _check_reply(reply)
    if out.get("default") is not None:
        _check_reply(out["default"])
    rejects = out.setdefault("reject_response_format", [])
    if not isinstance(rejects, list) or not all(isinstance(r, str) for r in rejects):
        raise ValueError("script.reject_response_format must be a list of strings")
    return out


def reply_delay(reply: Mapping[str, Any], rng: random.Random | None = None) -> float:
    """Seconds to wait before answering: `delay`, spread uniformly by ± `jitter`."""
    delay, jitter = float(reply.get("delay") or 0.0), float(reply.get("jitter") or 0.0)
    if jitter:
        delay += (rng or random).uniform(-jitter, jitter)
    return max(0.0, delay)


def _check_reply(reply: Any) -> None:
    if not isinstance(reply, Mapping):
        raise ValueError(f"a reply must be a mapping, got {type(reply).__name__}")
    unknown = set(reply) - _REPLY_KEYS
    if unknown:
        raise ValueError(f"unknown reply keys {sorted(unknown)}; allowed: {sorted(_REPLY_KEYS)}")


def _message_texts(body: Mapping[str, Any]) -> list[str]:
    return [
        text
        for message in body.get("messages") or []
        if isinstance(message, Mapping)
        for text in message_texts(message)
    ]


def _tokens(chars: int) -> int:
    return max(1, round(chars / CHARS_PER_TOKEN))


class _State:
    """The script, the rule cursors and the request log, behind one lock."""

    def __init__(self, script: Mapping[str, Any]) -> None:
        self.lock = threading.Lock()
        self.script = _normalized(script)
        self.cursors: dict[int, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.prompt_cache = PromptCache()

    def set_script(self, script: Any) -> None:
        normalized = _normalized(script)
        with self.lock:
            self.script = normalized
            self.cursors.clear()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.cursors.clear()
            self.prompt_cache.clear()

    def cached_tokens(self, body: Mapping[str, Any], prompt_tokens: int) -> int:
        with self.lock:
            return self.prompt_cache.serve(body, prompt_tokens)

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def rejected_format(self, body: Mapping[str, Any]) -> str | None:
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        with self.lock:
            return kind if kind in self.script["reject_response_format"] else None

    def next_reply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        texts = _message_texts(body)
        with self.lock:
            for i, rule in enumerate(self.script["rules"]):
                if any(rule["match"] in t for t in texts):
                    n = self.cursors.get(i, 0)
                    self.cursors[i] = n + 1
                    replies = rule["replies"]
                    return dict(replies[min(n, len(replies) - 1)])
            default = self.script.get("default")
            return dict(default) if default is not None else {"content": ABSTAIN}

    def model(self) -> str:
        with self.lock:
            return str(self.script.get("model") or DEFAULT_MODEL)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping in a scripted delay must not block close()
    # socketserver's default backlog is 5: a burst of new connections (100 runs in flight)
    # would overflow it, and each dropped SYN costs its client a 1 s retransmit.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        state: _State,
        *,
        require_key: str | None,
        model: str | None,
        verbose: bool,
    ) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.require_key = require_key
        self.model_override = model
        self.verbose = verbose
        self.stopping = threading.Event()
        self.counter = 0
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            super().handle_error(request, client_address)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they exit."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes; no 40 ms stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # Routing.

    def do_GET(self) -> None:
        routes: dict[str, Callable[[], None]] = {
            "/v1/models": self._models,
            "/models": self._models,
            "/health": lambda: self._send(200, {"status": "ok"}),
            "/_requests": self._requests,
        }
        self._dispatch(routes, None)

    def do_POST(self) -> None:
        body = self._read_json()
        routes: dict[str, Callable[[], None]] = {
            "/v1/chat/completions": lambda: self._chat(body),
            "/chat/completions": lambda: self._chat(body),
            "/_script": lambda: self._set_script(body),
            "/_reset": self._reset,
        }
        self._dispatch(routes, body)

    def _dispatch(self, routes: Mapping[str, Callable[[], None]], body: Any) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if not path.startswith("/_") and path != "/health":
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {
                "method": self.command,
                "path": path,
                "headers": headers,
                "json": body,
                "client": f"{self.client_address[0]}:{self.client_address[1]}",
            }
            self.server.state.record(entry)
        handler = routes.get(path)
        if handler is None:
            self._error(404, f"no route {self.command} {path}")
        else:
            handler()

    # Endpoints.

    def _chat(self, body: Any) -> None:
        if not self._authorized():
            self._error(401, "Incorrect API key provided.")
            return
        if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
            self._error(400, "the body must be a JSON object with a 'messages' list")
            return
        state = self.server.state
        rejected = state.rejected_format(body)
        if rejected is not None:
            self._error(400, f"response_format of type '{rejected}' is not supported")
            return
        reply = state.next_reply(body)
        if self.server.stopping.wait(reply_delay(reply)):
            self.close_connection = True
            return
        status = int(reply.get("status", 200))
        headers = {str(k): str(v) for k, v in (reply.get("headers") or {}).items()}
        if "body" in reply:
            self._send_body(status, reply["body"], headers)
            return
        if status != 200:
            self._error(status, str(reply.get("error") or f"scripted HTTP {status}"), headers)
            return
        self._send(200, self._completion(body, reply), headers)

    def _completion(self, body: Mapping[str, Any], reply: Mapping[str, Any]) -> dict[str, Any]:
        content = reply.get("content", ABSTAIN)
        text = content if isinstance(content, str) else json.dumps(content)
        with self.server.state.lock:
            self.server.counter += 1
            n = self.server.counter
        completion: dict[str, Any] = {
            "id": f"chatcmpl-scripted-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.model_override or self.server.state.model(),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": reply.get("finish_reason", "stop"),
                    "logprobs": None,
                }
            ],
        }
        prompt = _tokens(sum(len(t) for t in _message_texts(body)))
        cached = self.server.state.cached_tokens(body, prompt)  # every served prompt is seen
        if "usage" not in reply:
            out = _tokens(len(text))
            completion["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": out,
                "total_tokens": prompt + out,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        elif reply["usage"] is not None:
            usage = dict(reply["usage"])
            counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
            usage.setdefault("total_tokens", sum(v for v in counts if isinstance(v, int)))
            completion["usage"] = usage
        return completion

    def _models(self) -> None:
        if not self._authorized():  # like a real gateway: a refused key lists nothing
            self._error(401, "Incorrect API key provided")
            return
        model = self.server.model_override or self.server.state.model()
        entry = {"id": model, "object": "model", "created": 0, "owned_by": "scripted"}
        self._send(200, {"object": "list", "data": [entry]})

    def _requests(self) -> None:
        with self.server.state.lock:
            log = copy.deepcopy(self.server.state.requests)
        self._send(200, log)

    def _set_script(self, body: Any) -> None:
        try:
            self.server.state.set_script(body)
        except ValueError as e:
            self._error(400, str(e))
            return
        self._send(200, {"status": "ok"})

    def _reset(self) -> None:
        self.server.state.reset()
        self._send(200, {"status": "ok"})

    # Plumbing.

    def _authorized(self) -> bool:
        key = self.server.require_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        kind, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self._send(status, body, headers)

    def _send_body(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        """A scripted body as is: a str (text/html by default), else JSON."""
        if isinstance(body, str):
            data, content_type = body.encode("utf-8"), "text/html; charset=utf-8"
        else:
            data, content_type = json.dumps(body).encode("utf-8"), "application/json"
        rest = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        content_type = next(
            (v for k, v in headers.items() if k.lower() == "content-type"), content_type
        )
        self._send_bytes(status, data, content_type, rest)

    def _send(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)


class ScriptedLlmServer:
    """The scripted server: bound on construction, serving in a daemon thread once started
    (`with ScriptedLlmServer(script) as srv:` starts and stops it)."""

    def __init__(
        self,
        script: Mapping[str, Any] | None = None,
        require_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str | None = None,
        verbose: bool = False,
    ) -> None:
        self._state = _State(script or {})
        self._httpd = _Server(
            (host, port), self._state, require_key=require_key, model=model, verbose=verbose
        )
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. `http://127.0.0.1:40123/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the recorded API requests: method, path, headers (lower-case names),
        json (the parsed body or None) and client (`host:port`, shows connection reuse)."""
        with self._state.lock:
            return copy.deepcopy(self._state.requests)

    @property
    def script(self) -> dict[str, Any]:
        """A copy of the current script (edit it and pass it to `set_script`)."""
        with self._state.lock:
            return copy.deepcopy(self._state.script)

    def set_script(self, script: Mapping[str, Any]) -> None:
        """Replace the script and rewind every rule's replies."""
        self._state.set_script(script)

    def reset(self) -> None:
        """Forget recorded requests and rewind every rule's replies."""
        self._state.reset()

    def start(self) -> ScriptedLlmServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.01},  # close() waits one poll
                name="scripted-llm",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.drop_connections()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedLlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve a script until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4010)
    parser.add_argument("--script", help="a JSON or YAML script file (default: abstain always)")
    parser.add_argument("--require-key", help="answer 401 unless 'Authorization: Bearer KEY'")
    parser.add_argument("--model", help="the model name to report (overrides the script's)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script) if args.script else {}
    except (OSError, ValueError) as e:
        print(f"cannot load script {args.script}: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ScriptedLlmServer(
        script, args.require_key, host=args.host, port=args.port, model=args.model,
        verbose=args.verbose,
    )  # fmt: skip
    with server:
        print(f"listening on {server.base_url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
