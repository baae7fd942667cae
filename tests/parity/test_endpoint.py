"""The endpoint client against a real local HTTP server that fails on cue (``fake_openai``)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import pytest
from fake_openai import FakeOpenAI, answer_pieces, answer_text, token_id

from harness.errors import CheckError, HarnessError
from harness.lib.endpoint import Completion, EndpointClient, EndpointError, redact
from harness.suite.parity import EndpointSpec

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]


class CountingTransport(httpx.BaseTransport):
    """A real transport that counts the attempts the client makes (refused ones included)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.count = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.count += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Sleeps(list[float]):
    """A fake ``sleep`` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def spec(url: str, **overrides: Any) -> EndpointSpec:
    values: dict[str, Any] = {"url": url, "model": "fake-model", "timeout_s": 5.0, "backoff_s": 0.5}
    values.update(overrides)
    return EndpointSpec(**values)


def client_for(
    url: str, sleeps: Sleeps | None = None, transport: httpx.BaseTransport | None = None, **overrides: Any
) -> EndpointClient:
    return EndpointClient(
        spec(url, **overrides), sleep=sleeps if sleeps is not None else Sleeps(), transport=transport
    )


# -- retries ----------------------------------------------------------------------------------


def test_5xx_twice_then_ok_backs_off_exponentially():
    sleeps = Sleeps()
    with FakeOpenAI([("status", 503), ("status", 502)]) as fake, client_for(fake.url, sleeps) as client:
        completion = client.chat(MESSAGES, {"temperature": 0})
    assert completion.text == answer_text(MESSAGES)
    assert len(fake.posts("/v1/chat/completions")) == 3
    assert sleeps == [0.5, 1.0]


def test_429_honours_retry_after_seconds_and_caps_it():
    sleeps = Sleeps()
    script = [("status", 429, 2), ("status", 429, 999), ("status", 429, "Wed, 21 Oct 2015 07:28:00 GMT")]
    with FakeOpenAI(script) as fake, client_for(fake.url, sleeps) as client:
        assert client.chat(MESSAGES, {}).text == answer_text(MESSAGES)
    # 2 s as asked; 999 s capped at 30; an HTTP date falls back to the normal backoff (0.5 * 2**2).
    assert sleeps == [2.0, 30.0, 2.0]


def test_timeouts_give_up_after_max_retries_plus_one_attempts():
    sleeps, transport = Sleeps(), CountingTransport()
    with (
        FakeOpenAI(default=("sleep", 5)) as fake,
        client_for(fake.url, sleeps, transport, timeout_s=0.3, max_retries=2) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.chat(MESSAGES, {})
    assert transport.count == 3
    assert sleeps == [0.5, 1.0]
    message = str(info.value)
    assert "timed out after 0.3s" in message
    assert "/v1/chat/completions" in message and "3 attempts" in message
    assert info.value.kind == "timeout"
    assert isinstance(info.value, CheckError) and info.value.exit_code == 3


def test_dropped_connection_then_ok_completes():
    sleeps = Sleeps()
    with FakeOpenAI(["drop"]) as fake, client_for(fake.url, sleeps) as client:
        completion = client.chat(MESSAGES, {})
    assert completion.text == answer_text(MESSAGES)
    assert len(fake.posts()) == 2
    assert sleeps == [0.5]


def test_refused_connection_is_retried_then_reported():
    sleeps, transport = Sleeps(), CountingTransport()
    fake = FakeOpenAI().start()
    url = fake.url
    fake.stop()
    with (
        client_for(url, sleeps, transport, max_retries=2) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.chat(MESSAGES, {})
    assert transport.count == 3 and sleeps == [0.5, 1.0]
    assert "connection refused" in str(info.value) and info.value.kind == "connection"


def test_400_fails_at_once():
    sleeps, transport = Sleeps(), CountingTransport()
    with (
        FakeOpenAI(default=("status", 400)) as fake,
        client_for(fake.url, sleeps, transport) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.chat(MESSAGES, {}, logprobs=False)
    assert transport.count == 1 and len(fake.posts()) == 1
    assert sleeps == []
    assert "HTTP 400" in str(info.value) and "injected status 400" in str(info.value)
    assert info.value.status == 400


def test_persistent_503_reports_the_status_after_all_attempts():
    sleeps = Sleeps()
    with (
        FakeOpenAI(default=("status", 503)) as fake,
        client_for(fake.url, sleeps, max_retries=3) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.chat(MESSAGES, {})
    assert len(fake.posts()) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert "HTTP 503" in str(info.value) and "4 attempts" in str(info.value)


def test_2xx_with_unparseable_body_is_an_error_without_retry():
    with (
        FakeOpenAI(default="garbage") as fake,
        client_for(fake.url) as client,
        pytest.raises(EndpointError) as info,
    ):
        client.chat(MESSAGES, {})
    assert len(fake.posts()) == 1
    assert info.value.kind == "parse" and "not a chat completion" in str(info.value)


# -- the API key --------------------------------------------------------------------------------


def test_api_key_never_appears_in_errors_even_when_echoed(monkeypatch):
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("HARNESS_TEST_KEY", canary)
    sleeps = Sleeps()
    with (
        FakeOpenAI(default="echo_auth") as fake,
        client_for(fake.url, sleeps, api_key_env="HARNESS_TEST_KEY", max_retries=1) as client,
    ):
        with pytest.raises(EndpointError) as info:
            client.chat(MESSAGES, {})
        assert canary not in repr(client.describe())
    # The server did get the key, and echoed it into its error body ...
    assert fake.posts()[0].headers["authorization"] == f"Bearer {canary}"
    message = str(info.value)
    # ... which the message quotes, with the key redacted.
    assert "HTTP 500" in message and "Authorization: Bearer ***" in message
    assert canary not in message and canary not in repr(info.value.args)
    assert canary[len("sk-canary-") :] not in message


def test_no_key_configured_sends_no_authorization_header():
    with FakeOpenAI() as fake, client_for(fake.url) as client:
        client.chat(MESSAGES, {})
    assert "authorization" not in fake.posts()[0].headers


def test_missing_key_variable_is_a_harness_error_naming_it():
    with pytest.raises(HarnessError) as info:
        EndpointClient(
            spec("http://127.0.0.1:9/v1", api_key_env="HARNESS_ABSENT_KEY"),
            environ={"OTHER": "sk-other-value"},
        )
    assert "HARNESS_ABSENT_KEY" in str(info.value)
    assert "sk-other-value" not in str(info.value)


def test_describe_strips_credentials_from_the_url():
    client = EndpointClient(spec("https://alice:s3cret@api.example.com/v1"), environ={})
    try:
        assert client.describe() == {"url": "https://api.example.com/v1", "model": "fake-model"}
    finally:
        client.close()


def test_redact():
    assert redact("key=abc123 and abc123!", ["abc123", ""]) == "key=*** and ***!"
    assert redact("abcdef", ["abc", "abcdef"]) == "***"
    assert redact("nothing here", []) == "nothing here"


# -- parsing ----------------------------------------------------------------------------------


def test_token_ids_parsed_and_request_body_complete():
    with FakeOpenAI() as fake, client_for(fake.url) as client:
        completion = client.chat(MESSAGES, {"temperature": 0.0, "max_tokens": 64})
    pieces = answer_pieces(MESSAGES)
    assert completion.text == "".join(pieces) == answer_text(MESSAGES)
    assert completion.token_ids == tuple(token_id(p) for p in pieces)
    assert completion.tokens == tuple(f"token_id:{token_id(p)}" for p in pieces)
    assert completion.logprobs == tuple(-0.125 * (i + 1) for i in range(len(pieces)))
    assert completion.finish_reason == "stop"
    body = fake.posts()[0].body
    assert body == {
        "model": "fake-model",
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": 64,
        "logprobs": True,
        "top_logprobs": 1,
        "return_tokens_as_token_ids": True,
    }


def test_plain_tokens_give_no_token_ids_and_length_finish():
    with FakeOpenAI(default="plain_tokens") as fake, client_for(fake.url) as client:
        completion = client.chat(MESSAGES, {"max_tokens": 2})
    pieces = answer_pieces(MESSAGES)[:2]
    assert completion.tokens == tuple(pieces) and completion.token_ids is None
    assert completion.text == "".join(pieces) and completion.finish_reason == "length"


def test_without_logprobs_nothing_extra_is_asked():
    with FakeOpenAI() as fake, client_for(fake.url) as client:
        completion = client.chat(MESSAGES, {}, logprobs=False)
    assert completion.tokens == () and completion.logprobs == () and completion.token_ids is None
    assert set(fake.posts()[0].body) == {"model", "messages"}


def test_server_refusing_token_ids_falls_back_once_and_remembers():
    sleeps = Sleeps()
    with FakeOpenAI(accepts_token_ids=False) as fake, client_for(fake.url, sleeps) as client:
        first = client.chat(MESSAGES, {})
        second = client.chat(MESSAGES, {})
    bodies = [r.body for r in fake.posts()]
    assert [b.get("return_tokens_as_token_ids") for b in bodies] == [True, None, None]
    assert all(b["logprobs"] is True for b in bodies)
    assert first == second
    assert first.token_ids is None and first.tokens == tuple(answer_pieces(MESSAGES))
    assert not client.token_ids_supported
    assert sleeps == []


def test_completion_json_round_trip():
    for completion in (
        Completion("hi", ("token_id:5",), (5,), (-0.5,), "stop"),
        Completion("hi", ("hi",), None, (-0.5,), None),
    ):
        assert Completion.from_json(completion.to_json()) == completion


# -- tokenize ---------------------------------------------------------------------------------


def test_tokenize_uses_the_server_root_and_returns_ids():
    with FakeOpenAI([("status", 503)]) as fake, client_for(fake.url) as client:
        ids = client.tokenize(MESSAGES)
        no_prompt = client.tokenize(MESSAGES, add_generation_prompt=False)
    words = [w for m in MESSAGES for w in m["content"].split()]
    assert ids == [1, *(token_id(w) for w in words), 2]
    assert no_prompt == ids[:-1]
    posts = fake.posts()
    assert [r.path for r in posts] == ["/tokenize"] * 3
    assert posts[0].body == {"model": "fake-model", "messages": MESSAGES, "add_generation_prompt": True}


@pytest.mark.parametrize("fake_kwargs", [{"has_tokenize": False}, {"default": ("status", 405)}])
def test_tokenize_without_the_route_returns_none(fake_kwargs):
    with FakeOpenAI(**fake_kwargs) as fake, client_for(fake.url) as client:
        assert client.tokenize(MESSAGES) is None
    assert len(fake.posts()) == 1


# -- map_chat ---------------------------------------------------------------------------------


def jobs_of(n: int) -> list[tuple[str, list[dict[str, str]], dict[str, Any]]]:
    return [(f"job-{i}", [{"role": "user", "content": f"question {i}"}], {"max_tokens": 16}) for i in range(n)]


def test_map_chat_stops_sending_when_the_server_goes_down():
    jobs = jobs_of(40)
    prompts = {job_id: messages for job_id, messages, _ in jobs}
    concurrency, max_retries, k = 2, 1, 6
    results: dict[str, Completion] = {}
    reported: dict[str, str] = {}
    threads: set[int] = set()

    def on_result(job_id: str, completion: Completion) -> None:
        threads.add(threading.get_ident())
        results[job_id] = completion

    def on_error(job_id: str, message: str) -> None:
        threads.add(threading.get_ident())
        reported[job_id] = message

    transport = CountingTransport()
    with (
        FakeOpenAI(stop_after=k) as fake,
        client_for(fake.url, Sleeps(), transport, concurrency=concurrency, max_retries=max_retries) as client,
    ):
        errors = client.map_chat(jobs, on_result=on_result, on_error=on_error)

    # The first k answers are kept, each with the answer to its own job's messages.
    assert len(results) == k
    for job_id, completion in results.items():
        assert completion.text == answer_text(prompts[job_id])
    # Every other job is reported, once, and the callbacks ran in this thread.
    assert errors == reported
    assert set(errors) == set(prompts) - set(results)
    assert threads == {threading.get_ident()}
    # After the stop, only a few jobs were tried before the client gave up on the server.
    attempts_after_stop = transport.count - k
    assert attempts_after_stop <= 3 * concurrency * (max_retries + 1)
    not_sent = [m for m in errors.values() if m.startswith("not sent: endpoint down (")]
    assert len(not_sent) >= len(jobs) - k - 3 * concurrency
    sent_failed = [m for m in errors.values() if not m.startswith("not sent")]
    assert sent_failed and all("connection" in m for m in sent_failed)


def test_map_chat_keeps_going_through_non_connection_errors():
    jobs = jobs_of(12)

    def script(number: int, body: Any) -> Any:
        # Every job whose question number is odd is rejected; the rest answer.
        return ("status", 400) if int(body["messages"][-1]["content"].split()[-1]) % 2 else "ok"

    results: dict[str, Completion] = {}
    with FakeOpenAI(script) as fake, client_for(fake.url, concurrency=2) as client:
        errors = client.map_chat(jobs, on_result=results.__setitem__)
    assert sorted(results) == sorted(f"job-{i}" for i in range(0, 12, 2))
    assert sorted(errors) == sorted(f"job-{i}" for i in range(1, 12, 2))
    assert all("HTTP 400" in m for m in errors.values())
    # logprobs are asked with token ids; a 400 is retried once without them, then given up.
    assert len(fake.posts()) == 6 + 6 * 2


def test_map_chat_bounds_concurrency():
    jobs = jobs_of(10)
    results: dict[str, Completion] = {}
    with FakeOpenAI(default=("sleep", 0.05)) as fake, client_for(fake.url, concurrency=3) as client:
        errors = client.map_chat(jobs, on_result=results.__setitem__)
    assert errors == {} and len(results) == 10
    assert 1 <= fake.max_in_flight <= 3


def test_map_chat_rejects_duplicate_ids():
    with (
        FakeOpenAI() as fake,
        client_for(fake.url) as client,
        pytest.raises(ValueError, match="unique"),
    ):
        client.map_chat(jobs_of(2) * 2, on_result=lambda *_: None)
    assert fake.posts() == []
