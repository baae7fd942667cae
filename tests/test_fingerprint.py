"""Fingerprints hash configs in canonical form: an adapter whose ``adapter_config.json`` lists
``target_modules`` in another order (peft writes a set, in hash order) or writes ``16.0`` for
``16`` has the same fingerprint; any change of value changes it.  (Two real trainings in separate
stores, under different hash seeds, are compared in ``test_concurrency.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.lib.models import canonical_config, dir_fingerprint

CONFIG = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers_to_transform": [3, 1]}


def _adapter(folder: Path, config: dict, weights: bytes = b"\x00" * 32) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_order_of_a_set_and_integral_floats_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    reordered = {**dict(reversed(list(CONFIG.items()))), "lora_alpha": 16.0, "target_modules": ["v_proj", "o_proj", "q_proj", "k_proj"]}
    assert dir_fingerprint(_adapter(tmp_path / "a", CONFIG)) == dir_fingerprint(_adapter(tmp_path / "b", reordered))


@pytest.mark.parametrize(
    "change",
    [
        {"r": 4},
        {"lora_alpha": 16.5},
        {"target_modules": ["q_proj", "v_proj"]},
        {"layers_to_transform": [1, 3]},  # an ordinary list keeps its order
    ],
)
def test_any_change_of_value_changes_the_fingerprint(tmp_path: Path, change: dict) -> None:
    assert dir_fingerprint(_adapter(tmp_path / "a", CONFIG)) != dir_fingerprint(_adapter(tmp_path / "b", {**CONFIG, **change}))


def test_weights_are_hashed_byte_for_byte(tmp_path: Path) -> None:
    assert dir_fingerprint(_adapter(tmp_path / "a", CONFIG)) != dir_fingerprint(_adapter(tmp_path / "b", CONFIG, b"\x01" * 32))


def test_canonical_config() -> None:
    assert canonical_config({"target_modules": ["b", "a", "b"], "x": [2.0, 1.5], "modules_to_save": None}) == {
        "target_modules": ["a", "b"],
        "x": [2, 1.5],
        "modules_to_save": None,
    }


def test_lora_target_modules_are_a_set_in_the_cache_key() -> None:
    from harness_plugins.trainers.lora import LoRAConfig

    assert LoRAConfig(target_modules=["v_proj", "q_proj", "v_proj"]).target_modules == ["q_proj", "v_proj"]
