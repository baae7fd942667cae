"""The endpoint model API (``openai``/``vllm_server`` backends) against a fake OpenAI server that
answers from the tiny transformers model: its log-likelihoods and generations must match the
``hf`` backend's, through the one endpoint client; a dead endpoint and a missing key are errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from harness.errors import EXIT_BAD_INPUT, EXIT_CHECK_ERRORED, ConfigError, HarnessError
from harness.lib.endpoint import EndpointClient
from harness.lib.model_api import GenerationConfig
from harness.lib.models import LoadedModel, ModelRef, dir_fingerprint
from harness.lib.pipeline_spec import EndpointSpec
from harness.plugin.components import ComponentConfig, RunContext
from harness_plugins.backends.endpoint_model import EndpointModel
from harness_plugins.backends.hf import HFBackend
from harness_plugins.backends.openai import OpenAIBackend, OpenAIConfig


@pytest.fixture(scope="module")
def tiny(harness_tiny_model_dir: Path) -> LoadedModel:
    ref = ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, dir_fingerprint(harness_tiny_model_dir))
    return HFBackend(ComponentConfig(), RunContext(harness_tiny_model_dir, harness_tiny_model_dir)).load(ref)


def _served_by(tiny: LoadedModel):
    """An httpx handler that answers /completions (echo with prompt log-probs, or greedy text)
    and /models from the tiny model, as vLLM does."""
    import torch

    tok = tiny.tokenizer

    def echo(ids: list[int]) -> dict:
        with torch.inference_mode():
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        names = [tok.convert_ids_to_tokens(i) for i in ids]
        values, tops = [None], [None]
        for pos in range(1, len(ids)):
            values.append(float(logits[pos - 1, ids[pos]]))
            best = int(logits[pos - 1].argmax())
            tops.append({tok.convert_ids_to_tokens(best): float(logits[pos - 1, best])})
        return {"text": "", "logprobs": {"tokens": names, "token_logprobs": values, "top_logprobs": tops}}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "tiny"}]})
        body = json.loads(request.content)
        if body.get("echo"):
            return httpx.Response(200, json={"choices": [echo(body["prompt"])]})
        text = tiny.api.generate([tok.decode(body["prompt"])], GenerationConfig(max_new_tokens=body["max_tokens"]))[0]
        return httpx.Response(200, json={"choices": [{"text": text}]})

    return handler


def _endpoint(tiny: LoadedModel, transport: httpx.BaseTransport) -> EndpointModel:
    client = EndpointClient(EndpointSpec(url="http://fake/v1", model="tiny", max_retries=0), transport=transport)
    return EndpointModel(client, tiny.tokenizer, 2047)


def test_endpoint_loglikelihoods_match_the_hf_backend(tiny: LoadedModel) -> None:
    api = _endpoint(tiny, httpx.MockTransport(_served_by(tiny)))
    requests = [("Question: 2+2=\nAnswer:", [" 4", " 5", " four"]), ("", ["Hello world"]), ("The cat ", ["sat on the mat"])]
    got, expected = api.choice_loglikelihoods(requests), tiny.api.choice_loglikelihoods(requests)
    for got_row, expected_row in zip(got, expected):
        for (lp, greedy), (lp_hf, greedy_hf) in zip(got_row, expected_row):
            assert lp == pytest.approx(lp_hf, abs=1e-4) and greedy == greedy_hf
    seqs = [(api.encode("a b c d e f", add_bos=True), 3)]
    assert api.token_logprobs(seqs)[0] == pytest.approx(tiny.api.token_logprobs(seqs)[0], abs=1e-4)
    assert api.client.served_models() == ["tiny"] and len(api.probe()) > 3


def test_endpoint_generation_is_cut_at_stop_strings(tiny: LoadedModel) -> None:
    api = _endpoint(tiny, httpx.MockTransport(_served_by(tiny)))
    prompt = tiny.api.render_chat([{"role": "user", "content": "hi"}])
    config = GenerationConfig(max_new_tokens=6)
    assert api.generate([prompt], config) == tiny.api.generate([prompt], config)


def test_more_stop_strings_than_the_api_takes_are_cut_on_our_side(tiny: LoadedModel) -> None:
    """The OpenAI API (and vLLM's server) refuse more than four ``stop`` sequences: the model sends
    four and cuts the text at the others itself, so the answer is what ``hf`` gives."""
    served, sent = _served_by(tiny), []

    def strict(request: httpx.Request) -> httpx.Response:
        stop = json.loads(request.content or b"{}").get("stop")
        sent.append(stop)
        if stop is not None and len(stop) > 4:
            return httpx.Response(400, json={"error": {"message": "body.stop: too_long"}})
        return served(request)

    api = _endpoint(tiny, httpx.MockTransport(strict))
    prompt = tiny.api.render_chat([{"role": "user", "content": "hi"}])
    free = tiny.api.generate([prompt], GenerationConfig(max_new_tokens=8))[0]
    assert len(free) > 2
    late = free[len(free) // 2 :][:2]  # a stop string only the fifth entry names
    config = GenerationConfig(max_new_tokens=8, stop=("\x00a", "\x00b", "\x00c", "\x00d", late, "\x00f"))
    [answer] = api.generate([prompt], config)
    assert answer == tiny.api.generate([prompt], config)[0] == free[: free.index(late)]
    assert sent[-1] == ["\x00a", "\x00b", "\x00c", "\x00d"]


def test_an_endpoint_that_is_down_is_a_check_error(tiny: LoadedModel) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = _endpoint(tiny, httpx.MockTransport(refuse))
    with pytest.raises(HarnessError, match="connection refused") as info:
        api.choice_loglikelihoods([("a", [" b"])])
    assert info.value.exit_code == EXIT_CHECK_ERRORED


def test_an_unset_api_key_variable_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HARNESS_TEST_KEY", raising=False)
    config = OpenAIConfig(url="http://127.0.0.1:9/v1", served_model="m", api_key_env="HARNESS_TEST_KEY")
    with pytest.raises(ConfigError, match="HARNESS_TEST_KEY") as info:
        OpenAIBackend(config, RunContext(tmp_path, tmp_path))
    assert info.value.exit_code == EXIT_BAD_INPUT
    monkeypatch.setenv("HARNESS_TEST_KEY", "sk-secret")
    assert OpenAIBackend(config, RunContext(tmp_path, tmp_path)).capabilities.loglikelihood


def _gpu_vllm() -> str | None:
    """Why the in-process vLLM backend cannot run here, or None when it can."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "vLLM in-process needs a GPU; none on this machine"
    if importlib.util.find_spec("vllm") is None:
        return "vLLM in-process needs a GPU build of vllm; it is not importable here"
    return None


@pytest.mark.skipif(_gpu_vllm() is not None, reason=_gpu_vllm() or "")
def test_vllm_in_process_agrees_with_hf(tiny: LoadedModel, tmp_path: Path) -> None:
    from harness_plugins.backends.vllm_inproc import VllmBackend, VllmConfig

    model = VllmBackend(VllmConfig(), RunContext(tmp_path, tmp_path)).load(tiny.ref)
    requests = [("Question: 2+2=\nAnswer:", [" 4", " 5"]), ("The cat ", ["sat on the mat"])]
    for got, expected in zip(model.api.choice_loglikelihoods(requests), tiny.api.choice_loglikelihoods(requests)):
        assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-3)
