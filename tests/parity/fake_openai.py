"""A tiny, real OpenAI-compatible HTTP server for fault injection in tests of the endpoint client.

It is not a model: it answers with deterministic text derived from the last user message, and
its point is to misbehave on cue.  Each POST gets a number (0, 1, 2, ... in arrival order,
retries included) and the *script* says what that request gets:

* ``"ok"``: a valid answer (a chat completion with ``logprobs.content``, tokens written as
  ``token_id:N`` when the request asked for ``return_tokens_as_token_ids``; or the ``/tokenize``
  ids);
* ``"plain_tokens"``: a valid chat completion whose tokens are text pieces;
* ``("status", code)`` or ``("status", code, retry_after)``: that status with a JSON error body
  (and a ``Retry-After`` header);
* ``("sleep", seconds)``: wait (interrupted by :meth:`FakeOpenAI.stop`), then ``ok``: makes the
  client time out;
* ``"drop"``: read the request, then close the socket without a response;
* ``"echo_auth"``: 500 with a body quoting the ``Authorization`` header received;
* ``"garbage"``: 200 with a body that is not JSON;
* ``"stop"``: stop the whole server and drop this connection; later requests are refused.

``script`` is a list (requests past its end get ``default``) or a callable
``(number, body) -> action``.  ``stop_after=k`` answers requests 0..k-1 by the script and stops
the server on request k.  ``accepts_token_ids=False`` makes the server behave like a non-vLLM
server: a chat request with ``return_tokens_as_token_ids`` gets a 400.

Every request (method, path, headers, parsed JSON body) is recorded in :attr:`requests`.
``GET /v1/models`` always answers; it takes no number.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

Action = str | tuple[Any, ...]
Script = Sequence[Action] | Callable[[int, Any], Action]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


def answer_text(messages: Sequence[dict[str, Any]]) -> str:
    """The deterministic answer to a conversation: derived from its last user message."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"You said: {last}"


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % 49_152  # within SmolLM2's vocabulary


def answer_pieces(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The answer cut into tokens (words with their trailing space)."""
    return re.findall(r"\S+\s*", answer_text(messages))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out or hung up is the point of these tests, not an error


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so that a stopped server refuses every later request
    # (no keep-alive connection outlives the listening socket).
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send(self, status: int, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None) -> None:
        if isinstance(body, dict):
            payload, ctype = json.dumps(body).encode(), "application/json"
        else:
            payload = body.encode() if isinstance(body, str) else body
            ctype = "text/plain; charset=utf-8"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout) before the answer

    def do_GET(self) -> None:
        fake = self.server.fake
        fake._record("GET", self.path, self._headers(), None)
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        number = fake._record("POST", self.path, self._headers(), body)
        if fake.stopped:
            self.close_connection = True
            return  # accepted just before the stop: drop it
        with fake._in_flight_lock:
            fake._in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
        try:
            action = fake._action(number, body)
            name, args = (action, ()) if isinstance(action, str) else (action[0], tuple(action[1:]))
            if name == "sleep":
                fake._stop_event.wait(float(args[0]))
                if fake.stopped:
                    return
                name = "ok"
            self._act(fake, name, args, body)
        finally:
            with fake._in_flight_lock:
                fake._in_flight -= 1

    def _act(self, fake: FakeOpenAI, name: str, args: tuple[Any, ...], body: Any) -> None:
        if name == "drop":
            self.close_connection = True
            return
        if name == "stop":
            self.close_connection = True
            fake.stop()
            return
        if name == "status":
            code = int(args[0])
            headers = {"Retry-After": str(args[1])} if len(args) > 1 and args[1] is not None else {}
            self._send(code, {"error": {"message": f"injected status {code}", "code": code}}, headers)
            return
        if name == "echo_auth":
            auth = self.headers.get("Authorization", "<none>")
            self._send(500, f"internal error while handling request with Authorization: {auth}")
            return
        if name == "garbage":
            self._send(200, "<html>this is not json</html>")
            return
        if name not in ("ok", "plain_tokens"):
            raise ValueError(f"unknown fake action {name!r}")
        route = self.path.rstrip("/")
        if route == "/v1/chat/completions":
            self._chat(fake, body, plain=name == "plain_tokens")
        elif route == "/tokenize" and fake.has_tokenize:
            self._tokenize(body)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, fake: FakeOpenAI, body: dict[str, Any], *, plain: bool) -> None:
        if body.get("return_tokens_as_token_ids") and not fake.accepts_token_ids:
            self._send(
                400,
                {"error": {"message": "Unrecognized request argument supplied: return_tokens_as_token_ids"}},
            )
            return
        pieces = answer_pieces(body.get("messages") or [])
        finish = "stop"
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and len(pieces) > int(max_tokens):
            pieces, finish = pieces[: int(max_tokens)], "length"
        as_ids = bool(body.get("return_tokens_as_token_ids")) and not plain
        content = [
            {
                "token": f"token_id:{token_id(p)}" if as_ids else p,
                "logprob": -0.125 * (i + 1),
                "top_logprobs": [],
            }
            for i, p in enumerate(pieces)
        ]
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(pieces)},
            "finish_reason": finish,
            "logprobs": {"content": content} if body.get("logprobs") else None,
        }
        self._send(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [choice],
                "usage": {"completion_tokens": len(pieces)},
            },
        )

    def _tokenize(self, body: dict[str, Any]) -> None:
        words = [w for m in body.get("messages") or [] for w in str(m.get("content", "")).split()]
        ids = [1, *(token_id(w) for w in words)]
        if body.get("add_generation_prompt"):
            ids.append(2)
        self._send(200, {"count": len(ids), "max_model_len": 2048, "tokens": ids})


class FakeOpenAI:
    """Start on ``__enter__`` (or :meth:`start`); :attr:`url` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(
        self,
        script: Script = (),
        *,
        default: Action = "ok",
        stop_after: int | None = None,
        accepts_token_ids: bool = True,
        has_tokenize: bool = True,
        model: str = "fake-model",
        port: int = 0,
    ) -> None:
        self.port_wanted = port  # a restarted server comes back on the same address
        self.script = script
        self.default = default
        self.stop_after = stop_after
        self.accepts_token_ids = accepts_token_ids
        self.has_tokenize = has_tokenize
        self.model = model
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._lock = threading.Lock()
        self._posts = 0
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        server = _Server(("127.0.0.1", self.port_wanted), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stopped(self) -> bool:
        return self._stop_event.is_set()

    def stop(self) -> None:
        """Shut down now: later connections are refused.  Safe from a handler thread."""
        with self._lock:
            if self._stop_event.is_set() or self._server is None:
                return
            self._stop_event.set()
        self._server.shutdown()  # handlers run in their own threads, so this cannot deadlock
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what happened ----------------------------------------------------------------------

    def posts(self, path_suffix: str = "") -> list[Recorded]:
        """The POST requests received, optionally only those whose path ends with the suffix."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(path_suffix)]

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> int:
        """Record a request; return its number among POSTs (-1 for other methods)."""
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body))
            if method != "POST":
                return -1
            number = self._posts
            self._posts += 1
            return number

    def _action(self, number: int, body: Any) -> Action:
        if self.stop_after is not None and number >= self.stop_after:
            return "stop"
        if callable(self.script):
            return self.script(number, body)
        return self.script[number] if number < len(self.script) else self.default
