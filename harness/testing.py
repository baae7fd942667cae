"""Pytest fixtures for the harness and for plugin authors (registered as the ``harness`` pytest
plugin through the ``pytest11`` entry point).

* ``plugin_manager`` / ``registries``: an isolated manager with the built-ins only.
* ``embedded_model_dir``: the embedded SmolLM2 converted to safetensors (cached across sessions).
* ``tiny_model_dir``: a randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat
  template, for fast unit tests of trainers and backends.
* ``write_suite``: writes a suite YAML into ``tmp_path`` and returns its path.
* ``readonly_folder``: an empty folder no one may write in, reachable by every user; with
  ``unprivileged_python(code)``, which runs Python code as an unprivileged user (root ignores
  permission bits), for tests of read-only stores and report folders.
* ``vllm_server``: a real OpenAI-compatible server (CPU vLLM in ``.venv-vllm``) serving the
  embedded SmolLM2 on 127.0.0.1 for the whole session; ``.url``, ``.served_name``,
  ``.model_dir``. It fails, never skips, when the venv cannot be set up.
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

if TYPE_CHECKING:
    from harness.lib.serving import VllmServer


@pytest.fixture
def plugin_manager():
    from harness.plugin.manager import get_plugin_manager

    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def registries(plugin_manager):
    from harness.plugin.registry import Registries

    return Registries.from_plugin_manager(plugin_manager)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
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
def tiny_model_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(embedded_model_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    def write(data: dict[str, Any] | str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def readonly_folder() -> Iterator[Path]:
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
def unprivileged_python() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """``run(code)``: ``code`` in a fresh interpreter as a user without privileges (as root, uid
    65534 through ``setpriv``), with this process's ``sys.path`` as its ``PYTHONPATH``."""

    def run(code: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.fail("setpriv (util-linux) is needed to drop root for this test", pytrace=False)
            cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=300, check=False)

    return run


@pytest.fixture(scope="session")
def vllm_server(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
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
    server = VllmServer(embedded_model_dir, log_path=log, python=python)
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
