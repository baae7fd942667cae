"""EWC: the Fisher estimate, the penalty's gradient, its effect on training, the state file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from harness.errors import DataError
from harness.lib.training.ewc import (
    EWCPenalty,
    estimate_fisher,
    load_ewc_state,
    save_ewc_state,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 1000
HALF = VOCAB // 2  # task A uses tokens [0, 500), task B tokens [500, 1000)
EMBED = "model.embed_tokens.weight"


def _loss(model, batch):
    return model(**batch).loss


def _model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return transformers.LlamaForCausalLM(config)


def _batches(n: int, low: int, high: int, seed: int, size: int = 4, length: int = 16):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(low, high, (size, length), generator=generator)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The model is tiny: threads only add contention on a shared machine (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return _model()


TASK_A = _batches(4, 0, HALF, seed=1)


@pytest.fixture(scope="module")
def fisher(model):
    return estimate_fisher(torch, model, TASK_A, _loss)


def _distance(model, fisher, anchor) -> float:
    params = dict(model.named_parameters())
    return sum(
        float((fisher[n] * (params[n].detach() - anchor[n]) ** 2).sum(dtype=torch.float64))
        for n in fisher
    )


def test_fisher_is_the_mean_squared_batch_gradient_normalized(model, fisher) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(fisher) == trainable
    assert all(f.dtype == torch.float32 and f.device.type == "cpu" for f in fisher.values())
    assert all(bool((f >= 0).all()) for f in fisher.values())
    total = sum(float(f.sum(dtype=torch.float64)) for f in fisher.values())
    assert total / sum(f.numel() for f in fisher.values()) == pytest.approx(1.0, rel=1e-6)

    # An embedding row gets gradient, hence Fisher, only if its token occurs in the batches at a
    # position that some later loss term sees (the last position predicts nothing; causal mask).
    used = torch.zeros(VOCAB, dtype=torch.bool)
    for batch in TASK_A:
        used[batch["input_ids"][:, :-1].flatten()] = True
    assert 100 < int(used.sum()) < HALF  # some tokens of task A's range do not occur either
    assert torch.equal(fisher[EMBED].sum(dim=1) > 0, used)

    # Raw values: the mean over batches of the *squared* gradient (not the square of the mean).
    batches = _batches(2, 0, HALF, seed=2)
    raw = estimate_fisher(torch, model, batches, _loss, normalize=False)
    norm = dict(model.named_parameters())["model.norm.weight"]
    squares = []
    for batch in batches:
        (grad,) = torch.autograd.grad(_loss(model, batch), [norm])
        squares.append(grad**2)
    expected = (squares[0] + squares[1]) / 2
    torch.testing.assert_close(raw["model.norm.weight"], expected, rtol=1e-5, atol=0)
    assert not torch.allclose(expected, ((squares[0].sqrt() + squares[1].sqrt()) / 2) ** 2)
    # normalize only rescales
    scaled = estimate_fisher(torch, model, batches, _loss)
    ratio = float(scaled[EMBED].sum() / raw[EMBED].sum())
    torch.testing.assert_close(scaled["model.norm.weight"], raw["model.norm.weight"] * ratio)


def test_fisher_restores_mode_leaves_no_grads_and_honours_names(model) -> None:
    model.train()
    model.model.layers[0].eval()  # a submodule deliberately in eval mode stays so
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    names = ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"]
    fisher = estimate_fisher(torch, model, _batches(2, 0, HALF, seed=3), _loss, names=names)
    assert set(fisher) == set(names)
    assert model.training and model.model.layers[1].training
    assert not model.model.layers[0].training
    assert all(p.grad is None for p in model.parameters())
    for name in names:
        assert fisher[name].shape == dict(model.named_parameters())[name].shape
    with pytest.raises(ValueError, match="no.such"):
        estimate_fisher(torch, model, _batches(1, 0, HALF, seed=3), _loss, names=["no.such"])
    model.eval()


def test_added_gradient_is_the_autograd_gradient_of_the_penalty(model, fisher) -> None:
    generator = torch.Generator().manual_seed(4)
    params = dict(model.named_parameters())
    anchor = {n: p.detach() + 0.01 * torch.randn(p.shape, generator=generator) for n, p in params.items()}
    lam = 3.5
    # Some gradients already there (the task's), some missing: both paths are exercised.
    before = {}
    for index, (name, p) in enumerate(params.items()):
        p.grad = None if index % 2 else torch.randn(p.shape, generator=generator)
        before[name] = None if p.grad is None else p.grad.clone()

    value = EWCPenalty(torch, fisher, anchor, lam).add_gradients(model.named_parameters())

    expected_value = 0.0
    for name, p in params.items():
        leaf = p.detach().clone().requires_grad_(True)
        penalty = lam * (fisher[name] * (leaf - anchor[name]) ** 2).sum()
        (grad,) = torch.autograd.grad(penalty, [leaf])
        expected_value += float(penalty.detach())
        if before[name] is not None:
            grad = grad + before[name]
        torch.testing.assert_close(p.grad, grad, rtol=1e-6, atol=1e-6)  # float32 rounding
    assert value == pytest.approx(expected_value, rel=1e-5)
    assert value > 0
    model.zero_grad(set_to_none=True)


def test_coverage_and_shape_mismatch(model, fisher) -> None:
    params = dict(model.named_parameters())
    anchor = {n: p.detach().clone() for n, p in params.items()}
    penalty = EWCPenalty(torch, fisher, anchor, 1.0)
    partial = [(n, p) for n, p in model.named_parameters() if n != EMBED]
    assert penalty.add_gradients(partial) == 0.0  # at the anchor: no penalty
    assert penalty.matched == frozenset(fisher) - {EMBED}
    assert penalty.uncovered() == [EMBED]
    with pytest.raises(ValueError, match=EMBED):
        penalty.assert_covered()
    penalty.add_gradients([*model.named_parameters(), ("not.in.fisher", torch.zeros(3))])
    penalty.assert_covered()

    bad_name = "model.layers.1.mlp.up_proj.weight"
    bad_fisher = dict(fisher, **{bad_name: torch.ones(3, 3)})
    bad_anchor = dict(anchor, **{bad_name: torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=bad_name.replace(".", r"\.")):
        EWCPenalty(torch, bad_fisher, bad_anchor, 1.0).add_gradients(model.named_parameters())
    with pytest.raises(ValueError, match=bad_name.replace(".", r"\.")):
        EWCPenalty(torch, bad_fisher, anchor, 1.0)  # fisher and anchor disagree
    model.zero_grad(set_to_none=True)


def _train(base, fisher, anchor, lam: float | None, steps: int = 30):
    model = copy.deepcopy(base)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    penalty = None if lam is None else EWCPenalty(torch, fisher, anchor, lam)
    for batch in _batches(steps, HALF, VOCAB, seed=5):
        optimizer.zero_grad(set_to_none=True)
        _loss(model, batch).backward()
        if penalty is not None:
            penalty.add_gradients(model.named_parameters())
            penalty.assert_covered()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model


def test_ewc_keeps_task_a_weights_near_the_anchor(model, fisher) -> None:
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain = _train(model, fisher, anchor, None)
    ewc = _train(model, fisher, anchor, 1000.0)
    zero = _train(model, fisher, anchor, 0.0)
    d_plain, d_ewc = _distance(plain, fisher, anchor), _distance(ewc, fisher, anchor)
    print(f"Fisher-weighted distance from the anchor: plain {d_plain:.4g}, EWC {d_ewc:.4g}")
    assert d_plain > 0
    assert d_ewc < 0.5 * d_plain
    # lam = 0 changes nothing at all
    zero_params = dict(zero.named_parameters())
    for name, p in plain.named_parameters():
        assert torch.equal(p, zero_params[name]), name


def test_state_round_trip_and_corrupt_file(tmp_path: Path, model, fisher) -> None:
    anchor = {n: p.detach().to(torch.bfloat16) for n, p in model.named_parameters()}
    meta = {"base": "tiny-llama", "data": "task-a", "normalize": "true"}
    path = tmp_path / "state" / "ewc.safetensors"
    save_ewc_state(path, fisher, anchor, meta)
    assert [p.name for p in path.parent.iterdir()] == ["ewc.safetensors"]  # no temp file left
    fisher2, anchor2, meta2 = load_ewc_state(path)
    assert meta2 == meta
    assert fisher2.keys() == fisher.keys() and anchor2.keys() == anchor.keys()
    assert all(torch.equal(fisher2[n], fisher[n]) for n in fisher)
    assert all(anchor2[n].dtype == torch.bfloat16 and torch.equal(anchor2[n], anchor[n]) for n in anchor)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.safetensors"):
        load_ewc_state(truncated)
    with pytest.raises(DataError, match="missing.safetensors"):
        load_ewc_state(tmp_path / "missing.safetensors")


@pytest.fixture
def fake_world():
    """A two-rank device mesh seen from rank 0, with no-op collectives (no other process)."""
    dist = torch.distributed
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group already set up")
    fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")
    dist.init_process_group("fake", store=fake_pg.FakeStore(), rank=0, world_size=2)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        yield init_device_mesh("cpu", (2,))
    finally:
        dist.destroy_process_group()


def test_sharded_parameters_get_the_gradient_of_their_own_shard(fake_world) -> None:
    from torch.distributed.tensor import DTensor, Shard

    def sharded(local):
        return DTensor.from_local(local, fake_world, [Shard(0)], run_check=False)

    generator = torch.Generator().manual_seed(6)
    shard = torch.randn(3, 4, generator=generator)  # rank 0's half of a (6, 4) parameter
    f = torch.rand(3, 4, generator=generator)
    anchor = torch.randn(3, 4, generator=generator)
    task_grad = torch.randn(3, 4, generator=generator)
    w = torch.nn.Parameter(sharded(shard.clone()))
    v = torch.nn.Parameter(sharded(shard.clone()))
    assert tuple(w.shape) == (6, 4)
    w.grad = sharded(task_grad.clone())  # as FSDP2 leaves it after the reduce-scatter
    # Fisher and anchor given as local shards, plain (w) or DTensor (v).
    penalty = EWCPenalty(torch, {"w": f, "v": sharded(f)}, {"w": anchor, "v": sharded(anchor)}, 2.0)
    value = penalty.add_gradients([("w", w), ("v", v)])

    step = 2 * 2.0 * f * (shard - anchor)
    assert isinstance(w.grad, DTensor) and isinstance(v.grad, DTensor)
    torch.testing.assert_close(w.grad.to_local(), task_grad + step)
    torch.testing.assert_close(v.grad.to_local(), step)
    assert value == pytest.approx(2 * 2.0 * float((f * (shard - anchor) ** 2).sum()), rel=1e-6)

    # A Fisher of the full parameter is not this rank's shard.
    full = EWCPenalty(torch, {"w": torch.ones(6, 4)}, {"w": torch.zeros(6, 4)}, 1.0)
    with pytest.raises(ValueError, match="parameter w "):
        full.add_gradients([("w", w)])

    # The Fisher of a sharded parameter is that of the local shard.
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(sharded(shard.clone()))
    batches = [{"x": torch.randn(3, 4, generator=generator)} for _ in range(2)]
    fisher = estimate_fisher(
        torch, module, batches, lambda m, b: (m.w.to_local() * b["x"]).sum(), normalize=False
    )
    torch.testing.assert_close(fisher["w"], (batches[0]["x"] ** 2 + batches[1]["x"] ** 2) / 2)
    assert module.w.grad is None
