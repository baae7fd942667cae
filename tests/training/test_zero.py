"""DeepSpeed ZeRO-3 full fine-tuning (``harness.lib.training.zero``) under the real ``deepspeed``
launcher: two CPU processes (gloo) train a tiny random Llama.

One straight job of 4 steps (resumable state at step 2) is shared by the module: it must shard,
train, write a Hugging Face folder that transformers reloads, and match a single-process run of the
same loop (weights, and the AdamW moments at step 2, which carry the gradients' scale: clipping is
off so that a wrong averaging over ranks would show).  A second job resumes from the step-2 state
in a fresh pair of processes and must end with the same weights bit for bit.  A job whose spec
asks for more processes than the launcher starts fails with a ``CheckError``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import CheckError
from harness.lib.training.config import TrainingConfig
from harness.lib.training.examples import IGNORE, Example
from harness.lib.training.events import CheckpointSaved, Progress, RankSharding, Resumed, Started
from harness.lib.training.launch import JobSpec, LaunchConfig, check_sharded, resolve_launch, run_job

STEPS = 4
CONFIG = TrainingConfig(
    learning_rate=1e-3,
    batch_size=4,
    max_steps=STEPS,
    save_every=2,
    max_length=32,
    warmup_steps=1,
    max_grad_norm=1e6,  # no clipping: the AdamW moments then keep the gradients' scale
)
OPTIONS = {"offload_optimizer": False, "offload_param": False}
SEED = 0
DIGEST = "x" * 64


def _examples() -> list[Example]:
    rng = random.Random(0)
    out = []
    for _ in range(16):
        ids = [rng.randrange(1000) for _ in range(rng.randrange(6, 14))]
        out.append(Example(ids, [IGNORE, *ids[1:]]))
    return out


def _pad_id(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["pad_token_id"] or 0)


def _job(output_dir: Path, model_dir: Path, *, extra: dict | None = None) -> tuple[object, list[object]]:
    events: list[object] = []
    spec = JobSpec(
        "deepspeed",
        resolve_launch(LaunchConfig(nproc_per_node=2, timeout_s=600)),
        output_dir=output_dir,
        model_path=model_dir,
        examples=_examples(),
        fisher=[],
        config=CONFIG.model_dump(mode="json", by_alias=True),
        seed=SEED,
        pad_id=_pad_id(model_dir),
        config_digest=DIGEST,
        resume=True,
        bf16=False,
        extra={"deepspeed": OPTIONS, **(extra or {})},
    )
    return run_job(spec, events.append), events


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(harness_tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("zero-straight")
    job, events = _job(out, harness_tiny_model_dir)
    return SimpleNamespace(dir=out, job=job, events=events, weights=_weights(out / "model"))


@pytest.fixture(scope="module")
def reference(harness_tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The same loop in this process, one rank, plain torch AdamW on every parameter."""
    import torch
    import transformers

    from harness.lib.training.local import LocalEngine
    from harness.lib.training.loop import LoopSetup, TrainLoop, total_steps

    examples = _examples()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(harness_tiny_model_dir), dtype=torch.float32)
    model.train()
    moments: dict[str, dict[str, torch.Tensor]] = {}

    class Recording(LocalEngine):
        steps = 0

        def step(self, after_clip=None) -> float:
            norm = super().step(after_clip)
            self.steps += 1
            if self.steps == 2:
                for name, param in self.named:
                    state = self.optimizer.state[param]
                    moments[name] = {k: state[k].clone() for k in ("exp_avg", "exp_avg_sq")}
            return norm

    engine = Recording(
        torch, model, learning_rate=CONFIG.learning_rate, weight_decay=CONFIG.weight_decay,
        warmup_steps=CONFIG.warmup_steps, total_steps=total_steps(examples, CONFIG, SEED),
        max_grad_norm=CONFIG.max_grad_norm, bf16=False, save_weights=lambda model, path: None,
    )
    setup = LoopSetup(
        seed=SEED, output_dir=tmp_path_factory.mktemp("zero-reference"), pad_id=_pad_id(harness_tiny_model_dir),
        config_digest=DIGEST, resume=False,
    )
    result = TrainLoop(engine, CONFIG, examples, setup, emit=lambda event: None).run()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return SimpleNamespace(result=result, weights=weights, moments=moments)


def _relative(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


# --------------------------------------------------------------------------- jobs under the launcher


@pytest.mark.integration
def test_zero3_job_trains_sharded_over_two_processes(straight) -> None:
    job = straight.job
    assert job.result.steps == STEPS and job.result.resumed_from is None
    assert [e.step for e in straight.events if isinstance(e, Progress)] == list(range(1, STEPS + 1))
    final = [e for e in straight.events if isinstance(e, CheckpointSaved) and e.final]
    assert len(final) == 1 and final[0].path == str(straight.dir / "model")
    assert [entry.rank for entry in job.sharding] == [0, 1]
    for entry in job.sharding:
        assert entry.world_size == 2
        assert 0 < entry.local_params < entry.total_params
        assert 2 * entry.local_params >= entry.total_params  # partitions (padded) cover the model
    start = next(e for e in straight.events if isinstance(e, Started))
    assert start.local_params < start.total_params
    state = straight.dir / "state" / "step-00000002"
    assert (state / "manifest.json").is_file()
    assert not [p for p in state.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl"}]  # nothing pickled


@pytest.mark.integration
def test_zero3_final_model_reloads_with_transformers_and_was_trained(straight, harness_tiny_model_dir: Path) -> None:
    import torch
    import transformers

    folder = straight.dir / "model"
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert "lm_head.weight" not in straight.weights  # tied: left to tie_word_embeddings
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    state = model.state_dict()
    for name, tensor in straight.weights.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(state[name], tensor), name
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    initial = _weights(harness_tiny_model_dir)
    assert set(initial) == set(straight.weights)
    changed = max(float((straight.weights[k] - initial[k]).abs().max()) for k in initial)
    assert changed > 1e-4


@pytest.mark.integration
def test_zero3_matches_a_single_process_run(straight, reference) -> None:
    """Gradients averaged over ranks as the loop expects: same losses, same AdamW moments after
    step 2 (unclipped, so a factor in the gradient would show), same final weights (up to the
    order of floating-point sums: measured ~2e-7 against updates of ~2e-3)."""
    assert straight.job.result.losses == pytest.approx(reference.result.losses, rel=1e-6)
    from safetensors.torch import load_file

    saved = load_file(str(straight.dir / "state" / "step-00000002" / "optimizer.safetensors"))
    assert set(saved) == {f"{n}/{k}" for n in reference.moments for k in ("exp_avg", "exp_avg_sq")}
    for name, expected in reference.moments.items():
        for key, value in expected.items():
            assert _relative(saved[f"{name}/{key}"], value) < 1e-4, (name, key)
    for name, tensor in straight.weights.items():
        assert float((tensor - reference.weights[name]).abs().max()) < 1e-5, name


@pytest.mark.integration
def test_zero3_resumed_job_ends_bit_for_bit_like_the_straight_one(straight, harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    """Fresh processes and engines restore the step-2 state (weights, moments, step count, learning
    rate, schedule, RNG) and train steps 3-4: the weights equal the uninterrupted run's exactly."""
    import torch

    out = tmp_path / "resumed"
    shutil.copytree(straight.dir, out)
    shutil.rmtree(out / "model")  # as if killed after the state of step 2
    (out / "result.json").unlink()
    job, events = _job(out, harness_tiny_model_dir)
    assert Resumed(step=2, total=STEPS) in events
    assert [e.step for e in events if isinstance(e, Progress)] == [3, 4]
    assert job.result.resumed_from == 2 and job.result.steps == STEPS
    assert job.result.losses == straight.job.result.losses
    weights = _weights(out / "model")
    assert set(weights) == set(straight.weights)
    for name, tensor in straight.weights.items():
        assert torch.equal(weights[name], tensor), name


@pytest.mark.integration
def test_zero3_job_asking_for_more_processes_than_launched_fails_loudly(harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="deepspeed training failed") as info:
        _job(tmp_path / "mismatch", harness_tiny_model_dir, extra={"world_size": 3})
    assert "the job has 2 processes, the launch asked for 3" in str(info.value)
    assert not (tmp_path / "mismatch" / "model").exists()


# --------------------------------------------------------------------------- without a launcher


def test_ds_config_maps_the_training_config() -> None:
    from harness.lib.training.zero import ds_config

    cfg = TrainingConfig(batch_size=5, max_grad_norm=0.5, learning_rate=3e-4, weight_decay=0.1)
    plain = ds_config(cfg, 2, bf16=True, options={})
    assert plain["train_micro_batch_size_per_gpu"] == 3 and plain["gradient_accumulation_steps"] == 1
    assert plain["train_batch_size"] == 6
    assert plain["gradient_clipping"] == 0.5 and plain["bf16"] == {"enabled": True}
    assert plain["zero_optimization"] == {"stage": 3} and "optimizer" not in plain
    offload = ds_config(cfg, 4, bf16=False, options={"offload_optimizer": True, "offload_param": True})
    assert offload["train_micro_batch_size_per_gpu"] == 2
    assert offload["zero_optimization"] == {
        "stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"},
    }
    assert offload["optimizer"]["type"] == "AdamW"
    assert offload["optimizer"]["params"]["lr"] == 3e-4 and offload["optimizer"]["params"]["weight_decay"] == 0.1


class _Param:
    def __init__(self, torch, local: int, total: int) -> None:
        self.ds_tensor, self.ds_numel = torch.empty(local), total


class _Module:
    def __init__(self, params) -> None:
        self.params = params

    def parameters(self):
        return iter(self.params)

    def named_parameters(self):
        return ((f"p{i}", p) for i, p in enumerate(self.params))


def _engine(stage: int, world_size: int, sizes: list[tuple[int, int]]):
    import torch

    from harness.lib.training.zero import ZeroEngine

    engine = ZeroEngine.__new__(ZeroEngine)
    engine.rank, engine.world_size = 0, world_size
    module = _Module([_Param(torch, local, total) for local, total in sizes])
    engine.ds = SimpleNamespace(module=module, zero_optimization_stage=lambda: stage)
    return engine


def test_engine_refuses_to_train_unsharded() -> None:
    _engine(3, 2, [(50, 100), (5, 10)])._check_sharded()
    _engine(3, 1, [(100, 100)])._check_sharded()  # one process holds everything, legitimately
    with pytest.raises(CheckError, match="stage 2"):
        _engine(2, 2, [(50, 100)])._check_sharded()
    with pytest.raises(CheckError, match="holds all 110 parameters"):
        _engine(3, 2, [(100, 100), (10, 10)])._check_sharded()
    with pytest.raises(CheckError, match="EWC is not supported"):
        _engine(3, 2, [(50, 100)]).named_local_parameters()
    with pytest.raises(CheckError, match="was not sharded"):
        check_sharded("deepspeed", [RankSharding(rank=r, local_params=10, total_params=10, world_size=2) for r in (0, 1)], 2)
