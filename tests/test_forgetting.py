"""The forgetting curve and checkpoint selection, driven by scripted components (no ML), so the
expected curve and the expected choice are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness
from harness.plugin.components import Backend, Benchmark, ComponentConfig, Trainer
from harness.suite.config import load_suite
from harness.lib.console import RunConsole
from harness.lib.models import LoadedModel
from harness.plugin.manager import get_plugin_manager
from harness.plugin.registry import Registries
from harness.run.runner import Runner, RunOptions
from harness.types import CheckpointEvent, ItemResult, TrainOutput

N_ITEMS = 40


class _StepTrainer(Trainer):
    """Writes a marker adapter at steps 2, 4 and 6 (the last one is the final adapter)."""

    name = "scripted_trainer"

    def train(self, base, data, ctx):
        for step in (2, 4, 6):
            final = step == 6
            path = ctx.output_dir / ("adapter" if final else f"checkpoint-{step}")
            path.mkdir(parents=True, exist_ok=True)
            (path / "adapter_config.json").write_text(json.dumps({"step": step}))
            ctx.on_checkpoint(CheckpointEvent(self.name, step, 6, path, 1.0 / step, final))
        return TrainOutput(path, 6, len(data), 10, 1.0, 0.2, 0.0)


class _FakeBackend(Backend):
    name = "scripted_backend"

    def load(self, ref, *, trainable=False):
        return LoadedModel(ref, None, None, "float32")


class _ScriptedConfig(ComponentConfig):
    accuracy: dict[int, float]


class _Scripted(Benchmark):
    """Item i is correct when i < accuracy[step] * N; the step comes from the adapter marker."""

    name = "scripted"
    Config = _ScriptedConfig

    def items(self):
        return [{"id": f"q{i:02d}"} for i in range(N_ITEMS)]

    def evaluate(self, model, items, progress):
        adapter = model.ref.adapter
        step = json.loads((adapter / "adapter_config.json").read_text())["step"] if adapter else 0
        correct = round(self.config.accuracy[step] * N_ITEMS)
        return [ItemResult(it["id"], "", "", float(int(it["id"][1:]) < correct)) for it in items]


class _Plugin:
    @harness.hookimpl
    def harness_register_trainers(self, registrar):
        registrar.add(_StepTrainer)

    @harness.hookimpl
    def harness_register_backends(self, registrar):
        registrar.add(_FakeBackend)

    @harness.hookimpl
    def harness_register_benchmarks(self, registrar):
        registrar.add(_Scripted)


@pytest.fixture
def run_suite(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path):
    def run(general: dict[int, float]):
        data = tmp_path / "d.jsonl"
        data.write_text('{"instruction": "a", "output": "b"}\n')
        domain = {0: 0.0, 2: 0.5, 4: 0.8, 6: 0.9}
        suite = harness_write_suite(
            {
                "name": "curve",
                "model": {"source": str(harness_tiny_model_dir), "backend": "scripted_backend"},
                "data": [{"path": str(data), "format": "alpaca"}],
                "train": "scripted_trainer",
                "forgetting": {
                    "probes": {
                        "domain": {"name": "scripted", "accuracy": domain},
                        "general": {"name": "scripted", "accuracy": general},
                    },
                    "domain": "domain",
                    "bounds": {"general": 0.05},
                },
                "evaluate": {"domain_full": {"name": "scripted", "accuracy": domain}},
                "gates": {"domain_full": "superior()"},
                "report": ["json", "curve"],
            }
        )
        pm = get_plugin_manager(load_entrypoints=False, plugins=[("scripted", _Plugin())])
        runner = Runner(load_suite(suite), pm, Registries.from_plugin_manager(pm), RunConsole(),
                        RunOptions(reports_root=tmp_path / "reports", store_dir=tmp_path / "store"))
        return runner, runner.run()

    return run


def test_the_best_checkpoint_within_bounds_is_selected_and_gated(run_suite) -> None:
    runner, result = run_suite({0: 0.8, 2: 0.8, 4: 0.75, 6: 0.3})
    f = result.forgetting
    assert f.steps == [0, 2, 4, 6]
    assert [p.score for p in f.series["domain"]] == [0.0, 0.5, 0.8, 0.9]
    general = f.series["general"]
    assert [p.score for p in general] == [0.8, 0.8, 0.75, 0.3]
    assert [p.within_bound for p in general] == [None, True, True, False]
    assert general[3].comparison.diff == pytest.approx(-0.5)
    assert general[3].comparison.ci_high < -0.05
    # Holm over 1 probe x 3 checkpoints: steps 2 and 4 are within at 0.05/3; step 6 alone is then
    # tested at 0.05
    assert f.correction == "holm over 3 bound checks (1 general probes x 3 checkpoints), family-wise alpha 0.05"
    assert [p.comparison.alpha for p in general[1:]] == pytest.approx([0.05 / 3, 0.05 / 3, 0.05])
    assert f.selected_step == 4
    assert f.reasons[4].startswith("selected: best domain score 0.800")
    assert "domain score 0.500 < 0.800" in f.reasons[2]
    assert f.reasons[6].startswith("general not within -0.05")
    assert "checkpoint-4" in result.models["candidate"]  # the gates judge the selected checkpoint
    assert result.benchmarks["domain_full"]["candidate"].score == pytest.approx(0.8)
    written = json.loads((runner.report_dir / "result.json").read_text())
    assert written["forgetting"]["selected_step"] == 4
    assert len(written["forgetting"]["series"]["general"]) == 4
    svg = (runner.report_dir / "forgetting.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "bound -0.05" in svg


def test_no_checkpoint_within_bounds_gates_the_final_one(run_suite) -> None:
    _, result = run_suite({0: 0.9, 2: 0.4, 4: 0.3, 6: 0.2})
    assert result.forgetting.selected_step is None
    assert all("general not within" in result.forgetting.reasons[s] for s in (2, 4, 6))
    assert result.models["candidate"].split(" + adapter ")[1].split(" [")[0].endswith("adapter")


def test_a_rerun_reuses_every_point(run_suite) -> None:
    run_suite({0: 0.8, 2: 0.8, 4: 0.75, 6: 0.3})
    _, again = run_suite({0: 0.8, 2: 0.8, 4: 0.75, 6: 0.3})
    assert again.train_from_cache
    assert [e.step for e in again.checkpoints] == [2, 4, 6]
    assert again.forgetting.selected_step == 4
