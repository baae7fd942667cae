"""A robust client for a live OpenAI-compatible server (vLLM, llama.cpp server, TGI, hosted APIs).

The parity stage replays requests against production and compares what comes back with the
offline pipeline.  A live server fails in ordinary ways (overload, restarts, rate limits, dropped
connections, a dead process), and one bad minute must not turn a long replay into a crash or
into silently missing data.  So this client:

* retries what is worth retrying (429, 500, 502, 503, 504, timeouts, refused or dropped
  connections) with exponential backoff, honouring ``Retry-After``, and fails at once on any
  other client error, raising :class:`EndpointError` (a :class:`~harness.errors.CheckError`)
  that names the route and the last cause;
* never lets the API key out: it is read from an environment variable, sent only in the
  ``Authorization`` header, and redacted from every message, even when a misbehaving server
  echoes it back in an error body;
* asks for per-token log-probabilities and, on vLLM, for tokens as ids
  (``return_tokens_as_token_ids``), falling back once, and for good, when a server refuses that
  vLLM-only field;
* runs many requests at bounded concurrency (:meth:`EndpointClient.map_chat`), handing each
  result to the caller as soon as it arrives so that a killed run keeps what it already got, and
  stops sending when the server is plainly down rather than hammering it.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from harness.errors import CheckError, HarnessError
from harness.lib.pipeline_spec import EndpointSpec

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses that mean "try again later": rate limiting and server-side or gateway failures."""

RETRY_AFTER_CAP_S = 30.0
"""The longest ``Retry-After`` delay honoured; a server asking for more gets this much."""

TOKEN_ID_PREFIX = "token_id:"
"""How vLLM writes a token when the request sets ``return_tokens_as_token_ids``."""

REJECTED_FIELD_STATUSES = frozenset({400, 422})
"""Statuses with which a server refuses a request field it does not know (422: pydantic-based
servers)."""

EXCERPT_CHARS = 200
"""How much of an error body a message quotes."""

REDACTED = "***"

ErrorKind = Literal["status", "timeout", "connection", "protocol", "parse"]


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by ``***``.

    Longer secrets are replaced first, so that a secret containing another is fully hidden.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class EndpointError(CheckError):
    """The endpoint could not answer (after retries, where retrying made sense).

    The message names the route (path only, never credentials) and the last cause: the status
    code with a short excerpt of the body, a timeout, or a refused or dropped connection.  It
    never contains the API key.  ``kind`` says which sort of failure it was: ``status``,
    ``timeout``, ``connection`` (refused, reset or closed without an answer), ``protocol`` (a
    request that could not be sent at all, such as an unsupported URL scheme) or ``parse`` (a 2xx
    answer that is not what the route returns).
    """

    def __init__(self, message: str, *, kind: ErrorKind, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status


@dataclass(frozen=True)
class Completion:
    """One chat completion as the server returned it.

    ``tokens`` and ``logprobs`` come from ``logprobs.content`` (empty when the server gave none).
    ``token_ids`` is filled only when every token came as ``token_id:N`` (vLLM with
    ``return_tokens_as_token_ids``); otherwise it is ``None``.
    """

    text: str
    tokens: tuple[str, ...] = ()
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] = ()
    finish_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the cache; :meth:`from_json` reads it back."""
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "token_ids": None if self.token_ids is None else list(self.token_ids),
            "logprobs": list(self.logprobs),
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Completion:
        token_ids = data.get("token_ids")
        return cls(
            text=data["text"],
            tokens=tuple(data.get("tokens") or ()),
            token_ids=None if token_ids is None else tuple(int(t) for t in token_ids),
            logprobs=tuple(float(x) for x in data.get("logprobs") or ()),
            finish_reason=data.get("finish_reason"),
        )


def _token_ids(tokens: Sequence[str]) -> tuple[int, ...] | None:
    """The ids when every token is ``token_id:N``, else ``None``."""
    if not tokens:
        return None
    ids: list[int] = []
    for token in tokens:
        if not token.startswith(TOKEN_ID_PREFIX):
            return None
        try:
            ids.append(int(token[len(TOKEN_ID_PREFIX) :]))
        except ValueError:
            return None
    return tuple(ids)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, capped at :data:`RETRY_AFTER_CAP_S`; ``None`` when absent or
    not a number of seconds (the HTTP-date form falls back to the normal backoff)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _url_secrets(url: str) -> list[str]:
    """Credentials written into the URL itself: the password of ``http://user:pass@host``, or
    the user part alone when there is no password (``http://KEY@host``)."""
    parts = urlsplit(url)
    secret = parts.password if parts.password is not None else parts.username
    return [secret] if secret else []


class EndpointClient:
    """Talks to one OpenAI-compatible endpoint; use as a context manager (or call :meth:`close`).

    ``transport``, ``sleep`` and ``environ`` are injection points for tests: a fake transport, a
    sleep that records instead of waiting, an environment other than ``os.environ`` (the default).
    One ``httpx.Client`` is shared by every call, including the threads of :meth:`map_chat`.
    """

    def __init__(
        self,
        spec: EndpointSpec,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # ``environ`` defaults to ``os.environ`` at call time rather than in the signature, where
        # ``help()`` or API docs would print the whole environment, keys included.
        if environ is None:
            environ = os.environ
        self.spec = spec
        self._sleep = sleep
        self._base = spec.url.rstrip("/")
        key: str | None = None
        if spec.api_key_env:
            key = environ.get(spec.api_key_env) or None
            if key is None:
                raise HarnessError(
                    f"environment variable {spec.api_key_env} is not set (or empty); it should "
                    f"hold the API key for the endpoint {_strip_userinfo(spec.url)}"
                )
        self._secrets: tuple[str, ...] = tuple(s for s in (key, *_url_secrets(spec.url)) if s)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=spec.timeout_s, headers=headers, transport=transport)
        self._token_ids_supported = True

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> dict[str, str]:
        """What to write into a report: the URL without credentials, and the model name."""
        return {"url": _strip_userinfo(self.spec.url), "model": self.spec.model}

    # -- routes -----------------------------------------------------------------------------

    @property
    def token_ids_supported(self) -> bool:
        """False once the server has refused ``return_tokens_as_token_ids``."""
        return self._token_ids_supported

    def chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], *, logprobs: bool = True
    ) -> Completion:
        """POST ``/chat/completions`` and return choice 0.

        With ``logprobs`` the request asks for per-token log-probabilities and, unless the server
        has refused it before, for tokens as ids; a server answering 400 (or 422) to that is
        asked once more without it, and the field is not sent again by this client.
        """
        url = f"{self._base}/chat/completions"
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages, **params}
        if logprobs:
            body.update(logprobs=True, top_logprobs=1)
            asked_ids = self._token_ids_supported
            if asked_ids:
                body["return_tokens_as_token_ids"] = True
            response = self._post(url, body)
            if asked_ids and response.status_code in REJECTED_FIELD_STATUSES:
                body.pop("return_tokens_as_token_ids")
                response = self._post(url, body)
                if response.is_success:
                    self._token_ids_supported = False
        else:
            response = self._post(url, body)
        self._raise_for_status(url, response)
        return self._parse_chat(url, response)

    def tokenize(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> list[int] | None:
        """The server's own token ids for ``messages`` rendered by its chat template (vLLM's
        ``/tokenize``, at the server root), or ``None`` when the server has no such route."""
        url = f"{self._root()}/tokenize"
        body = {
            "model": self.spec.model,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
        }
        response = self._post(url, body)
        if response.status_code in (404, 405):
            return None
        self._raise_for_status(url, response)
        try:
            tokens = response.json()["tokens"]
            return [int(t) for t in tokens]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._parse_error(url, response, "a token list", exc) from None

    def complete(self, prompt: str | list[int], params: dict[str, Any]) -> dict[str, Any]:
        """POST ``/completions`` (text or token ids) and return choice 0 as the server sent it:
        the model API reads its ``text`` and, with ``echo`` and ``logprobs``, the prompt's
        per-token log-probabilities (``logprobs.token_logprobs``/``top_logprobs``)."""
        url = f"{self._base}/completions"
        response = self._post(url, {"model": self.spec.model, "prompt": prompt, **params})
        self._raise_for_status(url, response)
        try:
            choice = response.json()["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError("choice is not an object")
            return choice
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._parse_error(url, response, "a completion", exc) from None

    def served_models(self) -> list[str]:
        """The model ids the server lists at ``/models`` (its identity for the cache key)."""
        url = f"{self._base}/models"
        response = self._send("GET", url, None)
        self._raise_for_status(url, response)
        try:
            return sorted(str(entry["id"]) for entry in response.json()["data"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._parse_error(url, response, "a model list", exc) from None

    def map_calls(self, call: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """``call(job)`` for every job, ``spec.concurrency`` at a time, results in job order;
        the first error is raised (the benchmark errors rather than scoring what it lacks)."""
        with ThreadPoolExecutor(max_workers=self.spec.concurrency, thread_name_prefix="endpoint") as pool:
            return list(pool.map(call, jobs))

    def map_chat(
        self,
        jobs: Sequence[tuple[str, list[dict[str, str]], dict[str, Any]]],
        *,
        on_result: Callable[[str, Completion], None],
        on_error: Callable[[str, str], None] | None = None,
    ) -> dict[str, str]:
        """Run :meth:`chat` for each ``(job_id, messages, params)``, ``spec.concurrency`` at a time.

        ``on_result(job_id, completion)`` (and ``on_error(job_id, message)``) are called in the
        calling thread as each job finishes, so they need no locking; persist results there and
        an interrupted run keeps them.  Returns ``{job_id: message}`` for the jobs that failed.

        When ``2 * concurrency`` jobs in a row end with a connection error (refused, reset,
        closed without an answer), the server is taken as down: no further job is sent, and each
        unsent job is reported as ``not sent: endpoint down (<last cause>)``.
        """
        ids = [job[0] for job in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError("map_chat: job ids must be unique")
        queue = deque(jobs)
        errors: dict[str, str] = {}
        limit = self.spec.concurrency
        down_after = 2 * limit
        streak = 0
        down: str | None = None

        def fail(job_id: str, message: str) -> None:
            errors[job_id] = message
            if on_error is not None:
                on_error(job_id, message)

        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="endpoint") as pool:
            in_flight: dict[Future[Completion], str] = {}
            while in_flight or (queue and down is None):
                while queue and down is None and len(in_flight) < limit:
                    job_id, messages, params = queue.popleft()
                    in_flight[pool.submit(self.chat, messages, params)] = job_id
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    job_id = in_flight.pop(future)
                    try:
                        completion = future.result()
                    except EndpointError as exc:
                        streak = streak + 1 if exc.kind == "connection" else 0
                        if streak >= down_after and down is None:
                            down = str(exc)
                        fail(job_id, str(exc))
                    else:
                        streak = 0
                        on_result(job_id, completion)
        for job_id, _, _ in queue:
            fail(job_id, f"not sent: endpoint down ({down})")
        return errors

    # -- internals --------------------------------------------------------------------------

    def _root(self) -> str:
        """The server root: the base URL without a trailing ``/v1``."""
        return self._base.removesuffix("/v1")

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _excerpt(self, response: httpx.Response) -> str:
        try:
            text = response.text
        except (LookupError, ValueError):  # unknown charset; the status alone will have to do
            return ""
        # Redact before cutting, so that a key cut in two cannot leak its first half.
        text = " ".join(self._redact(text).split())
        return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."

    def _status_cause(self, response: httpx.Response) -> str:
        excerpt = self._excerpt(response)
        return f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")

    def _raise_for_status(self, url: str, response: httpx.Response) -> None:
        if not response.is_success:
            raise EndpointError(
                f"{httpx.URL(url).path}: {self._status_cause(response)}",
                kind="status",
                status=response.status_code,
            )

    def _parse_error(
        self, url: str, response: httpx.Response, expected: str, exc: BaseException
    ) -> EndpointError:
        excerpt = self._excerpt(response) or "empty body"
        return EndpointError(
            f"{httpx.URL(url).path}: HTTP {response.status_code} but the body is not "
            f"{expected} ({type(exc).__name__}; {excerpt})",
            kind="parse",
            status=response.status_code,
        )

    def _parse_chat(self, url: str, response: httpx.Response) -> Completion:
        try:
            choice = response.json()["choices"][0]
            text = choice["message"].get("content") or ""
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = tuple(str(entry["token"]) for entry in entries)
            logprobs = tuple(float(entry["logprob"]) for entry in entries)
            finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._parse_error(url, response, "a chat completion", exc) from None
        return Completion(
            text=text,
            tokens=tokens,
            token_ids=_token_ids(tokens),
            logprobs=logprobs,
            finish_reason=None if finish is None else str(finish),
        )

    def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """POST with the retry policy (see :meth:`_send`)."""
        return self._send("POST", url, body)

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> httpx.Response:
        """Send with the retry policy; returns the first response that is not worth retrying
        (any status outside :data:`RETRY_STATUSES`), or raises :class:`EndpointError`."""
        path = httpx.URL(url).path
        attempts = self.spec.max_retries + 1
        cause = ""
        kind: ErrorKind = "connection"
        status: int | None = None
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.request(method, url, json=body)
            except httpx.ConnectTimeout:
                cause, kind, status = f"connect timed out after {self.spec.timeout_s:g}s", "connection", None
            except httpx.TimeoutException:
                cause, kind, status = f"timed out after {self.spec.timeout_s:g}s", "timeout", None
            except httpx.ConnectError as exc:
                cause, kind, status = f"connection refused ({self._redact(str(exc))})", "connection", None
            except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
                # ReadError, WriteError, CloseError, or a server closing mid-response.
                cause = f"connection reset or closed without an answer ({self._redact(str(exc))})"
                kind, status = "connection", None
            except httpx.TransportError as exc:
                # UnsupportedProtocol, ProxyError, LocalProtocolError: retrying cannot help.
                raise EndpointError(
                    f"{path}: request could not be sent ({type(exc).__name__}: "
                    f"{self._redact(str(exc))})",
                    kind="protocol",
                ) from None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                cause, kind, status = self._status_cause(response), "status", response.status_code
                retry_after = _retry_after(response)
                response.close()
            if attempt + 1 < attempts:
                delay = retry_after if retry_after is not None else self.spec.backoff_s * 2**attempt
                self._sleep(delay)
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise EndpointError(f"{path}: no answer after {tries}: {cause}", kind=kind, status=status)
