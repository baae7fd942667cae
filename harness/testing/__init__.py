"""Pytest fixtures and helpers for the harness and for plugin authors (registered as the
``harness`` pytest plugin through the ``pytest11`` entry point, so installing the harness makes
them available in every test session; ``pytest --fixtures`` lists each with its docstring).

Every fixture is named ``harness_*`` so it never shadows a project's own fixtures:

* ``harness_plugin_manager`` / ``harness_registries``: an isolated manager with the built-ins only.
* ``harness_register_plugin(plugin)``: registries with the built-ins and the plugin under test.
* ``harness_fake_model`` / ``harness_fake_model_dir``: a deterministic tiny model without weights
  to download (``harness.testing.fake_model``), in memory or as a model folder.
* ``harness_run_suite(suite)``: ``run_suite`` with its files under ``tmp_path``.
* ``harness_embedded_model_dir`` / ``harness_tiny_model_dir``: the embedded SmolLM2 as
  safetensors, and a random 2-layer Llama with its tokenizer and chat template.
* ``harness_write_suite``: writes a suite YAML into ``tmp_path`` and returns its path.
* ``harness_readonly_folder`` / ``harness_unprivileged_python``: for tests of read-only folders.
* ``harness_vllm_server``: a real OpenAI-compatible server (CPU vLLM in ``.venv-vllm``).
* ``pytest --harness-suite SUITE`` (``harness.gate_items``): a suite's gates as test items.

Helpers: ``run_suite`` (``harness.testing.suites``), the contract checks in
``harness.testing.contracts`` and ``synthetic_run()``, a finished run without a model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from harness.testing.suites import run_suite

__all__ = ["build_tiny_model", "run_suite", "synthetic_run"]

if TYPE_CHECKING:
    from harness.lib.models import LoadedModel
    from harness.lib.serving import VllmServer
    from harness.plugin.manager import HarnessPluginManager
    from harness.plugin.registry import Registries
    from harness.types import RunResult

pytest_plugins = ("harness.gate_items",)  # --harness-suite: a suite's gates as test items


@pytest.fixture
def harness_plugin_manager() -> HarnessPluginManager:
    """A fresh plugin manager with the built-in plugins only (installed entry points are not
    loaded), so a test sees the same components on every machine."""
    from harness.plugin.manager import get_plugin_manager

    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def harness_registries(harness_plugin_manager: HarnessPluginManager) -> Registries:
    """The component registries of ``harness_plugin_manager`` (built-ins only)."""
    from harness.plugin.registry import Registries

    return Registries.from_plugin_manager(harness_plugin_manager)


@pytest.fixture
def harness_register_plugin() -> Callable[..., Registries]:
    """``register(plugin, name=None) -> Registries``: registries with the built-ins and the plugin
    under test (a module or an object with ``@harness.hookimpl`` functions), without installed
    entry points; registration errors surface as the ``PluginError`` users would see."""
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    def register(plugin: object, name: str | None = None) -> Registries:
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        pm = get_plugin_manager(load_entrypoints=False, plugins=[(label, plugin)])
        return Registries.from_plugin_manager(pm)

    return register


@pytest.fixture
def harness_fake_model() -> LoadedModel:
    """The fake model in memory (``harness.testing.fake_model``): a seeded 2-layer Llama with a
    byte-level tokenizer and a chat template; deterministic, nothing downloaded."""
    from harness.testing.fake_model import fake_model

    return fake_model()


@pytest.fixture(scope="session")
def harness_fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake model saved as a model folder (a suite's ``model:``; the ``hf`` and ``fake``
    backends both load it)."""
    from harness.testing.fake_model import save_fake_model

    return save_fake_model(tmp_path_factory.mktemp("fake-model") / "model")


@pytest.fixture
def harness_run_suite(tmp_path: Path) -> Callable[..., RunResult]:
    """``run(suite, plugins=()) -> RunResult``: ``harness.testing.run_suite`` with the suite,
    its reports and its store under ``tmp_path`` (see ``run_suite`` for the arguments)."""
    from harness.testing.suites import run_suite

    def run(suite: Any, **kwargs: Any) -> RunResult:
        return run_suite(suite, work_dir=kwargs.pop("work_dir", tmp_path), **kwargs)

    return run


@pytest.fixture(scope="session")
def harness_embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct converted to safetensors (cached across sessions)."""
    from harness.lib.models import EMBEDDED, materialize_embedded

    return materialize_embedded(EMBEDDED["smollm2-135m-instruct"])


def build_tiny_model(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """Save a tiny random Llama (hidden 64, 2 layers) with the tokenizer of ``tokenizer_dir``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def harness_tiny_model_dir(harness_embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template, for fast
    tests of trainers and backends that need a real tokenizer."""
    return build_tiny_model(harness_embedded_model_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def harness_write_suite(tmp_path: Path) -> Callable[..., Path]:
    """``write(data, name="suite.yaml") -> Path``: a suite (dict or YAML text) written into ``tmp_path``."""

    def write(data: dict[str, Any] | str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def harness_readonly_folder() -> Iterator[Path]:
    """An empty folder with mode 0555 under the system's temporary folder (not under root's
    ``tmp_path``, which other users cannot reach); removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="harness-readonly-"))
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def harness_unprivileged_python() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """``run(code)``: ``code`` in a fresh interpreter as a user without privileges (as root, uid
    65534 through ``setpriv``), with this process's ``sys.path`` as its ``PYTHONPATH``."""

    def run(code: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.fail("setpriv (util-linux) is needed to drop root for this test", pytrace=False)
            cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
            closed = _closed_to_others(Path(sys.prefix))
            if closed is not None:
                pytest.fail(f"{closed} is not readable by other users, so the unprivileged user cannot "
                            "run this interpreter; check the project out in a readable folder", pytrace=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=300, check=False)

    return run


def _closed_to_others(path: Path) -> Path | None:
    """The first folder from the root down to ``path`` that other users cannot enter, or ``None``."""
    import stat

    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


@pytest.fixture(scope="session")
def harness_vllm_server(harness_embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A started ``harness.lib.serving.VllmServer`` (fp32, eager) for the session; stopped at the end.

    The first use builds ``.venv-vllm`` (a few minutes); its log is ``vllm.log`` under the
    session's tmp dir.
    """
    from harness.lib.serving import ServingError, VllmServer, ensure_venv

    problem = ""
    try:
        python = ensure_venv()
    except ServingError as exc:
        problem = f"the vLLM venv could not be set up: {exc}"
    if problem:  # outside the except block: no chained traceback in the report
        pytest.fail(problem, pytrace=False)
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = VllmServer(harness_embedded_model_dir, log_path=log, python=python)
    try:
        server.start()
    except RuntimeError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def synthetic_run(items: int = 200, gates: int = 3, seed: int = 0, run_id: str = "synthetic-run") -> RunResult:
    """A finished run without a model, for reporter tests and benchmarks: ``gates`` gates over as
    many benchmarks (every verdict, advisory and blocking), ``items`` items spread over them with
    baseline and candidate answers (some won, some lost), a curation ledger and a training."""
    import random

    from harness.types import (
        BenchmarkResult, CheckpointEvent, Comparison, Decision, Dropped, ItemResult, Ledger,
        RunResult, StageLedger, TrainOutput, Verdict,
    )

    rng = random.Random(seed)
    verdicts = [Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.ERROR]
    result = RunResult(run_id, "synthetic", Path("suites/synthetic.yaml"), 1_700_000_000.0, duration_s=42.0)
    result.models = {"baseline": "tiny [0123456789ab]", "candidate": "tiny + adapter [ba9876543210]"}
    labels = [f"bench_{g:02d}" for g in range(max(gates, 1))]
    per_bench = [items // len(labels) + (1 if g < items % len(labels) else 0) for g in range(len(labels))]
    for label, n in zip(labels, per_bench):
        base, cand = [], []
        for i in range(n):
            ref = rng.choice(["refund", "cancel_order", "track_order", "<b>html</b> & | pipes"])
            b, c = rng.random() < 0.5, rng.random() < 0.6
            prompt = f"Classify the intent of message {i}: " + "word " * rng.randint(3, 40)
            base.append(ItemResult(f"{label}/{i}", ref if b else "other", ref, float(b), prompt=prompt, raw=f" {ref if b else 'other'}\n"))
            cand.append(ItemResult(f"{label}/{i}", ref if c else "wrong", ref, float(c), prompt=prompt, raw=f"{ref if c else 'wrong'}"))
        result.benchmarks[label] = {
            "baseline": BenchmarkResult(label, "baseline", "exact_match", tuple(base), "k1"),
            "candidate": BenchmarkResult(label, "candidate", "exact_match", tuple(cand), "k2"),
        }
    for g, label in enumerate(labels[:gates]):
        verdict = verdicts[g % len(verdicts)]
        diff = rng.uniform(-0.1, 0.1)
        cmp = Comparison("mcnemar", per_bench[g], 0.5, 0.5 + diff, diff, diff - 0.05, diff + 0.05, rng.random(), 0.04, 0.05)
        result.decisions.append(Decision(label, label, "non_inferior(margin=0.02)", verdict, f"{verdict.value} because of the numbers",
                                         blocking=g % 5 != 4, comparison=None if verdict is Verdict.ERROR else cmp))
    result.ledger = Ledger([StageLedger("read data.csv", 10, 9, 1, 0), StageLedger("filter exact_dedup", 9, 8, 1, 0)],
                           dropped=[Dropped("data.csv:3", "exact_dedup", "duplicate", "same as data.csv:2 (mail jane@example.com)")])
    result.train = TrainOutput(Path("adapter"), 4, 9, 900, 2.5, 1.5, 3.0)
    result.checkpoints = [CheckpointEvent("lora", 2, 4, Path("ckpt-2"), 2.0), CheckpointEvent("lora", 4, 4, Path("ckpt-4"), 1.5, final=True)]
    result.exit_code = 3 if any(d.verdict is Verdict.ERROR and d.blocking for d in result.decisions) else 1
    return result
