"""Batch plans (pad, length-grouped, packed; replay/multi-task mixing), collation and the token loss.

The packing tests run a tiny random Llama with ``sdpa`` and ``eager`` attention: an example inside
a packed row must give the same logits as alone, and the loss of a packed batch must be the
token-weighted mean of the losses of its examples run one by one.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from harness.lib.training.batching import (
    collate,
    model_inputs,
    packing_efficiency,
    plan_epoch,
    token_loss,
)
from harness.lib.training.examples import IGNORE, Example

STRATEGIES = ["pad", "length_grouped", "packed"]


def _examples(lengths: list[int], kind: str = "domain", weight: float = 1.0, seed: int = 0) -> list[Example]:
    """Examples of the given lengths: random tokens, the first third unsupervised (a prompt)."""
    rng = random.Random(f"{kind}:{seed}")
    out = []
    for n in lengths:
        ids = [rng.randrange(1, 1000) for _ in range(n)]
        prompt = n // 3
        out.append(Example(ids, [IGNORE] * prompt + ids[prompt:], kind, weight))
    return out


def _lognormal(n: int, median: float, max_length: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [min(max_length, max(2, int(rng.lognormvariate(math.log(median), 0.8)))) for _ in range(n)]


def _flat(plan: list[list[list[int]]]) -> list[int]:
    return [i for batch in plan for row in batch for i in row]


def _plan(examples, strategy, *, batch_size=4, max_length=64, seed=0, epoch=0, mix=None):
    return plan_epoch(
        examples, batch_size=batch_size, max_length=max_length, strategy=strategy, seed=seed, epoch=epoch,
        mix=mix or {},
    )


def _mixed_set() -> tuple[list[Example], dict[str, float]]:
    domain = _examples(_lognormal(300, 16, 64))
    replay = _examples([64] * 5 + [20, 33], "replay", seed=1)
    task = _examples(_lognormal(9, 12, 64, seed=2), "task", weight=0.5, seed=2)
    return domain + replay + task, {"replay": 0.1, "task": 0.25}


# --- plans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mixed", [False, True])
def test_every_domain_example_exactly_once_per_epoch(strategy: str, mixed: bool) -> None:
    examples, mix = _mixed_set()
    if not mixed:
        examples, mix = [e for e in examples if e.kind == "domain"], {}
    domain = [i for i, e in enumerate(examples) if e.kind == "domain"]
    for epoch in range(3):
        flat = _flat(_plan(examples, strategy, batch_size=8, epoch=epoch, mix=mix))
        assert sorted(i for i in flat if examples[i].kind == "domain") == domain
        assert {examples[i].kind for i in flat} == {"domain", *mix}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_is_pure_and_depends_on_seed_and_epoch(strategy: str) -> None:
    examples, mix = _mixed_set()
    random.seed(1)
    state = random.getstate()
    first = _plan(examples, strategy, batch_size=8, seed=3, epoch=1, mix=mix)
    assert random.getstate() == state, "plan_epoch must not touch the global RNG"
    random.seed(2)
    random.random()
    assert _plan(list(examples), strategy, batch_size=8, seed=3, epoch=1, mix=dict(mix)) == first
    assert _flat(_plan(examples, strategy, batch_size=8, seed=3, epoch=2, mix=mix)) != _flat(first)
    assert _flat(_plan(examples, strategy, batch_size=8, seed=4, epoch=1, mix=mix)) != _flat(first)


def test_pad_keeps_the_last_incomplete_batch_and_shuffles() -> None:
    examples = _examples([5] * 23)
    plan = _plan(examples, "pad")
    assert [len(batch) for batch in plan] == [4, 4, 4, 4, 4, 3]
    assert all(len(row) == 1 for batch in plan for row in batch)
    assert _flat(plan) != list(range(23))


@pytest.mark.parametrize("strategy", ["pad", "length_grouped"])
def test_mix_quotas_hold_in_every_batch(strategy: str) -> None:
    examples, mix = _mixed_set()
    plan = _plan(examples, strategy, batch_size=8, mix=mix)
    # replay: max(1, round(0.8)) = 1 row, task: round(2.0) = 2 rows, domain: the other 5
    domain_rows = []
    for batch in plan:
        kinds = Counter(examples[i].kind for row in batch for i in row)
        assert kinds["replay"] == 1 and kinds["task"] == 2, kinds
        domain_rows.append(kinds["domain"])
    assert domain_rows[:-1] == [5] * (len(plan) - 1) and 1 <= domain_rows[-1] <= 5
    assert sum(domain_rows) == 300


def test_mixed_pool_cycles_with_a_fresh_shuffle_each_round() -> None:
    domain = _examples([6] * 60)
    replay = _examples([6, 7, 8], "replay")
    examples = domain + replay
    pool = {60, 61, 62}

    def draws(epoch: int) -> list[int]:
        plan = _plan(examples, "pad", batch_size=4, epoch=epoch, mix={"replay": 0.25})
        return [i for batch in plan for row in batch for i in row if i in pool]

    sequence = draws(0)
    assert len(sequence) == 20  # one replay row in each of the 20 batches
    rounds = [tuple(sequence[j : j + 3]) for j in range(0, 18, 3)]
    assert all(set(r) == pool for r in rounds), rounds  # each round uses the whole pool once
    assert len(set(rounds)) > 1, "the pool must be reshuffled every round"
    assert draws(0) == sequence
    assert draws(1) != sequence


def test_length_grouped_cuts_padding_and_puts_the_longest_batch_first() -> None:
    rng = random.Random(5)
    lengths = [rng.randint(8, 32) if rng.random() < 0.9 else rng.randint(200, 256) for _ in range(800)]
    examples = _examples(lengths)
    pad = _plan(examples, "pad", batch_size=8, max_length=256)
    grouped = _plan(examples, "length_grouped", batch_size=8, max_length=256)
    real = sum(lengths)

    def padding(plan: list[list[list[int]]]) -> int:
        return round(real / packing_efficiency(examples, plan)) - real

    print(f"pad: efficiency {packing_efficiency(examples, pad):.4f}, {padding(pad)} padded tokens; "
          f"length_grouped: {packing_efficiency(examples, grouped):.4f}, {padding(grouped)} padded tokens")
    assert packing_efficiency(examples, grouped) > 0.95
    assert padding(grouped) < 0.05 * padding(pad)
    assert max(len(examples[row[0]]) for row in grouped[0]) == max(lengths)
    maxima = [max(len(examples[row[0]]) for row in batch) for batch in grouped]
    assert maxima[1:] != sorted(maxima[1:], reverse=True), "batch order must stay random"
    assert [len(batch) for batch in grouped].count(8) == 100


def test_length_grouped_gives_long_mixed_draws_to_long_batches() -> None:
    examples, mix = _mixed_set()
    grouped = _plan(examples, "length_grouped", batch_size=8, mix=mix)
    profile = []  # (longest domain example, lengths of the task rows) per batch
    for batch in grouped:
        kinds: dict[str, list[int]] = {"domain": [], "task": [], "replay": []}
        for row in batch:
            kinds[examples[row[0]].kind].append(len(examples[row[0]]))
        profile.append((max(kinds["domain"]), kinds["task"]))
    for long_max, long_task in profile:
        for short_max, short_task in profile:
            if long_max > short_max:
                assert min(long_task) >= max(short_task)


def test_packed_rows_are_full_and_never_split_or_overflow() -> None:
    max_length = 64
    lengths = _lognormal(2500, 16, max_length)  # ~3 packing windows of 50 batches
    lengths[:3] = [max_length] * 3
    examples = _examples(lengths)
    plan = _plan(examples, "packed", batch_size=4, max_length=max_length)
    assert sorted(_flat(plan)) == list(range(len(examples)))
    assert [len(batch) for batch in plan[:-1]] == [4] * (len(plan) - 1) and 1 <= len(plan[-1]) <= 4
    for batch in plan:
        for row in batch:
            assert sum(lengths[i] for i in row) <= max_length
    packed, pad = packing_efficiency(examples, plan, max_length), packing_efficiency(examples, _plan(examples, "pad"))
    print(f"packed fill {packed:.4f} of rows * max_length; pad uses {pad:.4f} of its padded batches")
    assert packed > 0.98 and pad < 0.6
    torch = pytest.importorskip("torch")
    rows = plan[7]
    batch = collate(torch, examples, rows, pad_id=0)
    for r, row in enumerate(rows):  # every example whole, in one row
        tokens = [t for i in row for t in examples[i].input_ids]
        assert batch["input_ids"][r, : len(tokens)].tolist() == tokens


def test_packed_mix_takes_its_share_of_tokens_in_every_batch() -> None:
    examples, mix = _mixed_set()
    plan = _plan(examples, "packed", batch_size=8, max_length=64, mix=mix)
    shares = {kind: [] for kind in mix}
    for batch in plan:
        tokens = Counter()
        for row in batch:
            for i in row:
                tokens[examples[i].kind] += len(examples[i])
        total = sum(tokens.values())
        for kind in mix:
            assert tokens[kind] > 0, "every batch has at least one example of each mixed kind"
            shares[kind].append(tokens[kind] / total)
    for kind, fraction in mix.items():
        full = shares[kind][:-1]
        print(f"packed mix {kind}: f={fraction} per-batch share {min(full):.3f}..{max(full):.3f}, "
              f"mean {sum(full) / len(full):.3f}")
        assert max(full) <= 2 * fraction + 0.01, (kind, max(full))
        assert abs(sum(full) / len(full) - fraction) < 0.02


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_a_clear_value_error() -> None:
    domain = _examples([10] * 8)
    with pytest.raises(ValueError, match=r"example 2 has 65 tokens, more than max_length=64"):
        _plan(domain[:2] + _examples([65]), "packed")
    with pytest.raises(ValueError, match=r"kind 'wiki', which is neither 'domain' nor in mix \['replay'\]"):
        _plan(domain + _examples([5], "wiki") + _examples([5], "replay"), "pad", mix={"replay": 0.2})
    with pytest.raises(ValueError, match=r"mix names kind 'replay' but no example has that kind"):
        _plan(domain, "packed", mix={"replay": 0.2})
    both = domain + _examples([5], "replay") + _examples([5], "task")
    with pytest.raises(ValueError, match=r"batch_size=2 leaves 0 domain rows after the mix quotas"):
        _plan(both, "length_grouped", batch_size=2, mix={"replay": 0.1, "task": 0.1})
    with pytest.raises(ValueError, match=r"mix fractions sum to 1.10"):
        _plan(both, "packed", mix={"replay": 0.6, "task": 0.5})
    with pytest.raises(ValueError, match=r"no room for domain examples"):
        _plan(domain + _examples([64], "replay"), "packed", batch_size=1, max_length=64, mix={"replay": 0.1})
    with pytest.raises(ValueError, match=r"unknown batching strategy 'sorted'"):
        _plan(domain, "sorted")


# --- collation -----------------------------------------------------------------------------------


def test_collate_unpacked_rows_pad_right_and_mask() -> None:
    torch = pytest.importorskip("torch")
    examples = _examples([6, 3], weight=0.5)
    batch = collate(torch, examples, [[0], [1]], pad_id=7)
    assert set(batch) == {"input_ids", "labels", "loss_weights", "attention_mask"}
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["loss_weights"].dtype == torch.float32
    assert batch["input_ids"][1].tolist() == examples[1].input_ids + [7, 7, 7]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch["labels"][0].tolist() == [IGNORE, IGNORE, *examples[0].input_ids[2:]]
    assert batch["labels"][1].tolist() == [IGNORE, *examples[1].input_ids[1:], IGNORE, IGNORE, IGNORE]
    assert batch["loss_weights"][0].tolist() == [0, 0, 0.5, 0.5, 0.5, 0.5]


def test_collate_packed_rows_restart_positions_and_cut_labels_at_boundaries() -> None:
    torch = pytest.importorskip("torch")
    examples = _examples([4, 3, 6])
    examples[1] = Example(examples[1].input_ids, list(examples[1].input_ids), "domain", 2.0)  # all supervised
    batch = collate(torch, examples, [[0, 1], [2]], pad_id=0)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 5, 0]]
    labels = batch["labels"][0].tolist()
    assert labels[4] == IGNORE, "no token may learn to predict across an example boundary"
    assert labels[5:] == examples[1].input_ids[1:]
    assert batch["loss_weights"][0].tolist() == [0, 1, 1, 1, 0, 2, 2]
    assert batch["labels"][1, -1].item() == IGNORE
    assert model_inputs(batch) == {
        "input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False,
    }


# --- the model: packing isolation and the loss ---------------------------------------------------


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny_llama(request):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, attn_implementation=request.param,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == request.param
    return torch, model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_packed_examples_do_not_see_each_other(tiny_llama, mode: str) -> None:
    torch, model = tiny_llama
    examples = [*_examples([7, 12, 5, 9], weight=1.0), *_examples([3], weight=0.5, seed=1)]
    examples[2] = Example(examples[2].input_ids, examples[2].labels, "domain", 2.0)
    rows = [[0, 1, 2], [3, 4]]  # widths 24 and 12: the second row has a padding tail
    model.train(mode == "train")  # attention dropout is 0: train mode only changes the cache default
    try:
        with torch.no_grad():
            batch = collate(torch, examples, rows, pad_id=0)
            packed = model(**model_inputs(batch)).logits
            losses, counts = [], []
            for r, row in enumerate(rows):
                start = 0
                for i in row:
                    alone_batch = collate(torch, examples, [[i]], pad_id=0)
                    alone = model(**model_inputs(alone_batch)).logits
                    n = len(examples[i])
                    torch.testing.assert_close(packed[r, start : start + n], alone[0], atol=1e-5, rtol=0)
                    losses.append(token_loss(torch, alone, alone_batch["labels"], alone_batch["loss_weights"]))
                    counts.append(int((alone_batch["labels"][0, 1:] != IGNORE).sum()))
                    start += n
            loss = token_loss(torch, packed, batch["labels"], batch["loss_weights"])
    finally:
        model.eval()
    expected = sum(float(loss_i) * n for loss_i, n in zip(losses, counts)) / sum(counts)
    assert sum(counts) == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert abs(float(loss) - expected) < 1e-5


def test_token_loss_equals_the_transformers_loss_unpacked(tiny_llama) -> None:
    torch, model = tiny_llama
    examples = _examples([9, 4, 13, 6])
    batch = collate(torch, examples, [[0], [1], [2], [3]], pad_id=0)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ours = token_loss(torch, out.logits, batch["labels"], batch["loss_weights"])
    assert ours.dtype == torch.float32
    assert abs(float(ours) - float(out.loss)) < 1e-6


def test_token_loss_weights_scale_tokens_and_keep_the_token_count() -> None:
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=gen)
    labels = torch.tensor([[IGNORE, 3, 4, IGNORE, 5, 1], [IGNORE, IGNORE, 2, 7, IGNORE, IGNORE]])
    weights = torch.tensor([[0, 1.0, 1, 0, 2, 2], [0, 0, 0.5, 0.5, 0, 0]])
    ce = -torch.log_softmax(logits[:, :-1], -1)
    manual = 0.0
    for b in range(2):
        for t in range(5):
            label = int(labels[b, t + 1])
            if label != IGNORE:
                manual += float(weights[b, t + 1]) * float(ce[b, t, label])
    manual /= 6  # six supervised shifted labels, whatever their weights
    assert abs(float(token_loss(torch, logits, labels, weights)) - manual) < 1e-6
    double = token_loss(torch, logits, labels, 2 * weights)
    assert abs(float(double) - 2 * manual) < 1e-5
    ones = token_loss(torch, logits, labels, (labels != IGNORE).float())
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert abs(float(ones) - float(plain)) < 1e-6
    nothing = torch.full_like(labels, IGNORE)
    assert float(token_loss(torch, logits, nothing, weights)) == 0.0
