"""Backend agreement through the real CPU vLLM server: ``vllm_server`` against ``hf`` on MMLU and
HellaSwag (100 items each, >= 98 predictions agree) and greedy support-intent answers (>= 95 of
100 identical); the ``openai`` backend against a running server agrees with ``hf`` too."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.lib.serving import VllmServer
from harness.run.agree import run_agreement
from harness.suite.config import load_suite

pytestmark = pytest.mark.integration

SUITE = {
    "name": "agree",
    "model": {"source": "smollm2-135m-instruct", "dtype": "float32"},
    "evaluate": {
        "mmlu": {"name": "mmlu", "per_subject": 2},
        "hellaswag": {"name": "hellaswag", "sample": 100},
        "intent": {"name": "support_intent", "sample": 100},
    },
    "report": ["json"],
}


def test_vllm_server_agrees_with_hf(harness_write_suite, harness_registries, tmp_path: Path, capsys) -> None:
    loaded = load_suite(harness_write_suite(SUITE))
    results = run_agreement(loaded, harness_registries, tmp_path / "work", [("hf", {}), ("vllm_server", {})], limit=100)
    with capsys.disabled():
        for result in results:
            print("\n" + result.line())
    by_name = {r.benchmark: r for r in results}
    assert by_name["mmlu"].items == by_name["hellaswag"].items == by_name["intent"].items == 100
    assert by_name["mmlu"].agree >= 98 and by_name["hellaswag"].agree >= 98
    assert by_name["intent"].agree >= 95
    assert by_name["mmlu"].max_logprob_diff is not None and by_name["mmlu"].max_logprob_diff < 0.5


def test_openai_backend_against_a_running_server(harness_write_suite, harness_registries, tmp_path: Path, harness_vllm_server: VllmServer) -> None:
    suite = {**SUITE, "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 1}}}
    loaded = load_suite(harness_write_suite(suite))
    options = {"url": harness_vllm_server.url, "served_model": harness_vllm_server.served_name}
    [result] = run_agreement(loaded, harness_registries, tmp_path / "work", [("hf", {}), ("openai", options)], limit=30)
    assert result.items == 30 and result.agree >= 29
    assert result.max_logprob_diff is not None and result.max_logprob_diff < 0.5
