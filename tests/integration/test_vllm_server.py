"""A real vLLM server (CPU build, ``.venv-vllm``) serving the embedded SmolLM2: the model list,
a greedy chat completion with logprobs, and the server's chat template against transformers'."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.lib.serving import VllmServer

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def hf_tokenizer(harness_embedded_model_dir: Path) -> Any:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(harness_embedded_model_dir))


def _ids(encoded: Any) -> list[int]:
    """transformers 5 returns a BatchEncoding from ``apply_chat_template(tokenize=True)``."""
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return [int(i) for i in ids]


def test_models_lists_the_served_name(harness_vllm_server: VllmServer) -> None:
    assert harness_vllm_server.url.startswith("http://127.0.0.1:") and harness_vllm_server.url.endswith("/v1")
    models = harness_vllm_server.request("/v1/models")
    assert [m["id"] for m in models["data"]] == [harness_vllm_server.served_name]
    assert models["data"][0]["root"] == str(harness_vllm_server.model_dir)


def test_greedy_chat_completion_with_logprobs(harness_vllm_server: VllmServer, hf_tokenizer: Any) -> None:
    reply = harness_vllm_server.request(
        "/v1/chat/completions",
        {
            "model": harness_vllm_server.served_name,
            "messages": MESSAGES,
            "temperature": 0,
            "max_tokens": 16,
            "logprobs": True,
            "top_logprobs": 1,
            "return_tokens_as_token_ids": True,
        },
    )
    choice = reply["choices"][0]
    text = choice["message"]["content"]
    assert text.strip()
    tokens = choice["logprobs"]["content"]
    assert 0 < len(tokens) == reply["usage"]["completion_tokens"] <= 16
    ids = [int(t["token"].removeprefix("token_id:")) for t in tokens]
    assert all(t["token"].startswith("token_id:") for t in tokens)
    assert all(t["logprob"] <= 0 for t in tokens)
    # Greedy: each chosen token is the most likely one.
    assert all(t["top_logprobs"][0]["logprob"] == pytest.approx(t["logprob"], abs=1e-4) for t in tokens)
    assert hf_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenize_renders_the_chat_template_like_transformers(
    harness_vllm_server: VllmServer, hf_tokenizer: Any
) -> None:
    served = harness_vllm_server.request(
        "/tokenize",
        {"model": harness_vllm_server.served_name, "messages": MESSAGES, "add_generation_prompt": True},
    )
    expected = _ids(hf_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))
    assert served["tokens"] == expected
    assert served["count"] == len(expected)
