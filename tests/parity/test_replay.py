"""Replay through ``harness parity``: fault injection on a fake endpoint (5xx then recovery,
timeouts, a server that drops mid-run and comes back), the API key never written anywhere, and
replay of logged requests against a real vLLM server on loopback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_openai import FakeOpenAI
from logs import support_requests, write_log

from harness.cli import main

KEY_ENV = "HARNESS_TEST_PRODUCTION_KEY"


def _suite(
    tmp: Path, model: str | Path, url: str, served: str, checks: dict[str, Any], production: dict[str, Any] | None = None, **endpoint: Any
) -> Path:
    matched = {"sampling": {"temperature": 0, "max_tokens": 24}}
    suite = {
        "name": "replay",
        "model": str(model),
        "parity": {
            "requests": {"path": "requests.jsonl", "format": "openai_requests"},
            "offline": matched,
            "production": {**matched, **(production or {}), "endpoint": {"url": url, "model": served, **endpoint}},
            "checks": checks,
            "gate": {"fail_on": "high"},
        },
        "report": ["terminal", "json", "junit"],
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _run(suite: Path, tmp: Path) -> tuple[int, dict[str, Any]]:
    reports = tmp / "reports"
    before = set(reports.iterdir()) if reports.exists() else set()
    code = main(["parity", str(suite), "--reports", str(reports), "--store", str(tmp / "store")])
    (new,) = set(reports.iterdir()) - before
    return code, json.loads((new / "result.json").read_text())


def _replay(result: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in result["parity"]["checks"] if c["check"] == "replay")


def _short_log(tmp: Path, n: int) -> None:
    requests = support_requests(n, seed=3)
    for body in requests:  # one short turn each: these tests are about the transport
        body["messages"] = body["messages"][:1]
    write_log(tmp / "requests.jsonl", requests)


def test_server_errors_then_recovery_completes(tmp_path: Path, harness_tiny_model_dir: Path) -> None:
    _short_log(tmp_path, 6)
    with FakeOpenAI([("status", 503), ("status", 502), ("status", 429, 0)]) as fake:
        suite = _suite(tmp_path, harness_tiny_model_dir, fake.url, fake.model, {"replay": "replay"}, backoff_s=0.01, concurrency=1)
        code, result = _run(suite, tmp_path)
    replay = _replay(result)
    assert replay["status"] != "error", replay["error"]
    assert replay["metrics"]["requests"] == 6 and len(replay["metrics"]["per_request"]) == 6
    assert len(fake.posts("/chat/completions")) == 6 + 3
    assert code in (0, 1)


def test_an_endpoint_that_keeps_timing_out_is_an_error_never_a_pass(tmp_path: Path, harness_tiny_model_dir: Path) -> None:
    _short_log(tmp_path, 3)
    with FakeOpenAI(default=("sleep", 2.0)) as fake:
        suite = _suite(tmp_path, harness_tiny_model_dir, fake.url, fake.model, {"replay": "replay"}, timeout_s=0.2, max_retries=1, backoff_s=0.01, concurrency=1)
        code, result = _run(suite, tmp_path)
    replay = _replay(result)
    assert replay["status"] == "error" and "timed out" in replay["error"]
    assert code == 3
    (decision,) = result["decisions"]
    assert decision["gate"] == "parity.replay" and decision["verdict"] == "error"


def test_a_server_that_drops_mid_run_keeps_partial_results_and_resume_completes(tmp_path: Path, harness_tiny_model_dir: Path) -> None:
    _short_log(tmp_path, 10)
    with FakeOpenAI(stop_after=4) as fake:
        port = fake.port
        suite = _suite(tmp_path, harness_tiny_model_dir, fake.url, fake.model, {"replay": "replay"}, max_retries=1, backoff_s=0.01, concurrency=1)
        code, first = _run(suite, tmp_path)
    assert code == 3
    assert "6 of 10 requests got no answer" in _replay(first)["error"]
    assert "the 4 answers received are kept" in _replay(first)["error"]
    with FakeOpenAI(port=port) as back:  # the server comes back at the same address
        code, second = _run(suite, tmp_path)
    replay = _replay(second)
    assert replay["status"] != "error", replay["error"]
    assert replay["metrics"]["from_cache"] == 4
    assert len(back.posts("/chat/completions")) == 6  # only what was missing is sent again
    assert len(replay["metrics"]["per_request"]) == 10


def test_divergences_are_attributed_to_the_cause_another_check_found(tmp_path: Path, harness_tiny_model_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _short_log(tmp_path, 4)
    with FakeOpenAI() as fake:  # its answers are not the model's: every request diverges
        suite = _suite(tmp_path, harness_tiny_model_dir, fake.url, fake.model, {"template": "template", "replay": "replay"},
                       production={"system_prompt": "You are ACME's assistant."})
        code, result = _run(suite, tmp_path)
    assert code == 1  # template: high system_prompt
    replay = _replay(result)
    assert replay["metrics"]["agreement_rate"] == 0.0
    assert replay["metrics"]["attribution"] == {"template:system_prompt": 4}
    for record in replay["metrics"]["per_request"]:
        d = record["first_divergence"]
        assert d["position"] == 0 and d["production_token"]["server_logprob"] == -0.125
    (finding,) = replay["findings"]
    assert finding["cause"] == "replay_divergence" and finding["severity"] == "high"
    out = capfd.readouterr().out
    assert "requests that diverge" in out and "template:system_prompt" in out


def test_the_api_key_appears_in_no_artifact(tmp_path: Path, harness_tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, canary)
    _short_log(tmp_path, 4)
    checks = {"template": "template", "replay": "replay"}
    # first a server that quotes the Authorization header back in its errors, then a good one
    with FakeOpenAI(default="echo_auth") as bad:
        suite = _suite(tmp_path, harness_tiny_model_dir, bad.url, bad.model, checks, api_key_env=KEY_ENV, max_retries=1, backoff_s=0.01)
        code_bad, _ = _run(suite, tmp_path)
    with FakeOpenAI() as good:
        suite = _suite(tmp_path, harness_tiny_model_dir, good.url, good.model, checks, api_key_env=KEY_ENV)
        code_good, _ = _run(suite, tmp_path)
    assert code_bad == 3 and code_good in (0, 1)
    assert all(r.headers.get("authorization") == f"Bearer {canary}" for r in good.posts())
    assert any(canary in str(r.headers) for r in bad.posts())  # the server did see it
    out = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "store.sqlite" for p in written) and any(p.name == "result.json" for p in written)
    leaks = [str(p) for p in written if canary.encode() in p.read_bytes()]
    assert leaks == []
    assert canary not in out.out + out.err


@pytest.mark.integration
def test_replay_against_a_real_vllm_server(tmp_path: Path, harness_vllm_server) -> None:
    """50 logged customer-support chats replayed against vLLM (CPU) serving SmolLM2 on loopback,
    compared token by token with the offline pipeline on the same weights."""
    write_log(tmp_path / "requests.jsonl", support_requests(50, seed=11))
    checks = {"template": {"name": "template", "server_requests": 50}, "replay": "replay"}
    suite = _suite(tmp_path, harness_vllm_server.model_dir, harness_vllm_server.url, harness_vllm_server.served_name, checks)
    code, result = _run(suite, tmp_path)
    template = next(c for c in result["parity"]["checks"] if c["check"] == "template")
    replay = _replay(result)
    assert replay["status"] != "error", replay["error"]
    # the server renders exactly the prompt production's description says
    assert template["metrics"]["server_checked"] == 50
    assert template["metrics"]["server_identical"] == 50, template["findings"]
    m = replay["metrics"]
    assert m["requests"] == 50 and len(m["per_request"]) == 50
    for record in m["per_request"]:
        assert record["tokens"] > 0 and record["max_abs_delta"] is not None
        if not record["agree"]:
            assert record["first_divergence"]["position"] >= 0 and record["attribution"]
    # same fp32 weights on both sides: nearly every answer agrees within tolerance
    assert m["agreement_rate"] >= 0.9, m["attribution"]
    assert m["median_abs_delta"] < 0.05
    assert code in (0, 1)
