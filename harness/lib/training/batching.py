"""Batch planning, sequence packing, collation and the token loss that every trainer shares.

The *plan* of an epoch says which examples make up each row of each batch; it is a pure function
of the examples and ``(seed, epoch)``, so a resumed run recomputes it and skips the batches already
done.  An epoch is one pass over the ``domain`` examples; replay and multi-task examples (their
``kind`` is a key of ``mix``) are drawn into every batch at a fixed share.  Three strategies:

* ``pad``: one example per row, in shuffled order;
* ``length_grouped``: like the ``group_by_length`` sampler of the HF Trainer: shuffled, sorted by
  length inside mega-batches of 50 batches, then the batches shuffled, the longest one first (an
  out-of-memory shows up at step 1); padding shrinks while the batches stay random;
* ``packed``: several whole examples per row of at most ``max_length`` tokens, placed by
  first-fit-decreasing bin packing over windows of shuffled examples.

``collate`` turns rows into tensors.  A row of one example gets an ``attention_mask``; a batch with
a row of several examples gets none but ``position_ids`` that restart at 0 at each example, from
which transformers (``masking_utils.find_packed_sequence_indices``, used by ``create_causal_mask``
for the ``sdpa``, ``eager`` and ``flex`` attentions) builds a block-diagonal causal mask, so the
examples of a row cannot see each other.  Transformers only does that when the forward pass has no
KV cache, and a model whose config says ``use_cache=True`` creates one even in training, so the
forward must be given ``use_cache=False``: ``model_inputs(batch)`` returns the arguments to pass.

``token_loss`` is the causal LM cross-entropy, weighted per token by the example's ``weight``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from harness.lib.training.examples import DOMAIN, IGNORE, Example

if TYPE_CHECKING:
    import torch as torch_types

Strategy = Literal["pad", "length_grouped", "packed"]
STRATEGIES: tuple[str, ...] = ("pad", "length_grouped", "packed")

MEGABATCH = 50
"""Batches per mega-batch (``length_grouped``) and per packing window (``packed``)."""

Plan = list[list[list[int]]]


def plan_epoch(
    examples: Sequence[Example],
    *,
    batch_size: int,
    max_length: int,
    strategy: Strategy,
    seed: int,
    epoch: int,
    mix: Mapping[str, float] = {},
) -> Plan:
    """The batches of one epoch: batch -> rows -> indices into ``examples``.

    Every ``domain`` example appears exactly once; the order depends only on ``(seed, epoch)`` and
    no global random state is read or changed, so the same arguments always give the same plan.
    ``mix`` maps each other kind to its share of every batch: ``k = max(1, round(f * batch_size))``
    rows with ``pad``/``length_grouped``, about ``f`` of the batch's tokens (at least one example)
    when ``packed``; those examples are drawn cyclically from their kind's own seeded shuffle.  The
    last, incomplete batch is kept.  Raises ``ValueError`` on inconsistent input (an example longer
    than ``max_length``, a kind not in ``mix``, a kind in ``mix`` without examples, no room left for
    domain examples).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown batching strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size ({batch_size}) and max_length ({max_length}) must be at least 1")
    pools = _pools(examples, max_length, mix)
    domain = pools.pop(DOMAIN)
    rng = random.Random(f"{seed}:{epoch}")
    rng.shuffle(domain)
    cycles = {kind: _Cycle(pools[kind], f"{seed}:{epoch}:{kind}") for kind in sorted(mix)}
    lengths = [len(example) for example in examples]
    draw = _Epoch(lengths, domain, batch_size, max_length, mix, cycles, rng)
    return _Packer(draw).plan() if strategy == "packed" else _plan_rows(draw, strategy)


@dataclass(frozen=True)
class _Epoch:
    """What one epoch's plan is drawn from: the example lengths, the shuffled ``domain`` indices,
    the batch shape, the mix with each kind's endless draws, and the epoch's seeded ``rng``."""

    lengths: list[int]
    domain: list[int]
    batch_size: int
    max_length: int
    mix: Mapping[str, float]
    cycles: dict[str, _Cycle]
    rng: random.Random


def _plan_rows(draw: _Epoch, strategy: Strategy) -> Plan:
    """One example per row (``pad`` or ``length_grouped``): the domain batches, then each mixed
    kind's ``max(1, round(f * batch_size))`` rows added to every batch."""
    lengths, batch_size = draw.lengths, draw.batch_size
    quotas = {kind: max(1, round(fraction * batch_size)) for kind, fraction in sorted(draw.mix.items())}
    per_batch = batch_size - sum(quotas.values())
    if per_batch < 1:
        raise ValueError(
            f"batch_size={batch_size} leaves {per_batch} domain rows after the mix quotas {quotas}; "
            "raise batch_size or lower the mix fractions"
        )
    domain = draw.domain
    if strategy == "pad":
        batches = [domain[start : start + per_batch] for start in range(0, len(domain), per_batch)]
    else:
        batches = []
        for start in range(0, len(domain), MEGABATCH * per_batch):
            mega = sorted(domain[start : start + MEGABATCH * per_batch], key=lambda i: -lengths[i])
            batches += [mega[j : j + per_batch] for j in range(0, len(mega), per_batch)]
        draw.rng.shuffle(batches)
    # Mixed rows: ``pad`` takes each kind's draws in batch order; ``length_grouped`` gives the longest
    # draws to the batches of longest domain examples, so mixing does not undo the grouping.
    ranked = list(range(len(batches)))
    if strategy == "length_grouped":
        ranked.sort(key=lambda b: -max(lengths[i] for i in batches[b]))
    for kind, k in quotas.items():
        draws = [draw.cycles[kind].take() for _ in range(k * len(batches))]
        if strategy == "length_grouped":
            draws.sort(key=lambda i: -lengths[i])
        for rank, b in enumerate(ranked):
            batches[b] = batches[b] + draws[rank * k : (rank + 1) * k]
    if strategy == "length_grouped" and batches:
        longest = max(range(len(batches)), key=lambda b: (max(lengths[i] for i in batches[b]), len(batches[b])))
        batches[0], batches[longest] = batches[longest], batches[0]
    return [[[i] for i in batch] for batch in batches]


def packing_efficiency(examples: Sequence[Example], plan: Plan, max_length: int | None = None) -> float:
    """Real tokens / allocated tokens of a plan.

    The allocation is ``rows * max_length`` when ``max_length`` is given (the fill rate of packed
    rows), else what ``collate`` allocates: each batch's rows padded to its longest row, so
    ``1 - efficiency`` is the share of padding, comparable across strategies.
    """
    real = allocated = 0
    for batch in plan:
        rows = [sum(len(examples[i]) for i in row) for row in batch]
        real += sum(rows)
        allocated += len(rows) * (max_length if max_length is not None else max(rows, default=0))
    return real / allocated if allocated else 0.0


def collate(
    torch: Any, examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int, device: Any = "cpu"
) -> dict[str, torch_types.Tensor]:
    """Tensors of one batch: rows of concatenated examples, right-padded with ``pad_id``.

    Always ``input_ids`` (long, [B, T]), ``labels`` (long, ``IGNORE`` at padding) and
    ``loss_weights`` (float32: the example's ``weight`` at supervised tokens, 0 elsewhere).  When
    every row holds one example, also ``attention_mask`` (long, 1 on tokens, 0 on padding).  When a
    row holds several, no ``attention_mask`` but ``position_ids`` restarting at 0 at every example
    and at the padding tail: transformers then masks attention block-diagonally (forward with
    ``use_cache=False``, see ``model_inputs``).  The label of each example's first token is set to
    ``IGNORE``, so no token is ever trained to predict across an example boundary (in a row of
    one example that label is never used anyway).
    """
    if not rows or any(not row for row in rows):
        raise ValueError("collate needs at least one row and no empty row")
    packed = any(len(row) > 1 for row in rows)
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    weights: list[list[float]] = []
    positions: list[list[int]] = []
    mask: list[list[int]] = []
    for row in rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        row_weights: list[float] = []
        for i in row:
            example = examples[i]
            if len(example.labels) != len(example.input_ids):
                raise ValueError(f"example {i} has {len(example.input_ids)} tokens but {len(example.labels)} labels")
            own = [IGNORE, *example.labels[1:]]
            row_ids += example.input_ids
            row_labels += own
            row_weights += [example.weight if label != IGNORE else 0.0 for label in own]
            row_positions += range(len(example))
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE] * pad)
        weights.append(row_weights + [0.0] * pad)
        positions.append(row_positions + list(range(pad)))
        mask.append([1] * len(row_ids) + [0] * pad)
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "labels": torch.tensor(labels, dtype=torch.long, device=device),
        "loss_weights": torch.tensor(weights, dtype=torch.float32, device=device),
    }
    if packed:
        batch["position_ids"] = torch.tensor(positions, dtype=torch.long, device=device)
    else:
        batch["attention_mask"] = torch.tensor(mask, dtype=torch.long, device=device)
    return batch


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the model's forward pass for a collated batch.

    ``use_cache=False`` is not optional for packed batches: with a cache (which transformers
    creates whenever the config says ``use_cache=True``, training or not) the packed format is
    not detected and the examples of a row attend to each other.
    """
    keys = ("input_ids", "attention_mask", "position_ids")
    return {**{k: batch[k] for k in keys if k in batch}, "use_cache": False}


def token_loss(torch: Any, logits: Any, labels: Any, loss_weights: Any) -> torch_types.Tensor:
    """Causal LM cross-entropy of a batch, weighted per token.

    Position ``t`` predicts ``labels[t + 1]``; the per-token loss (in float32) is multiplied by the
    shifted ``loss_weights``, summed, and divided by the number of supervised (non-``IGNORE``)
    shifted labels, not by the sum of weights, so a weight of 2 counts a token twice and with all
    weights 1 this is exactly the mean loss transformers computes.  A batch without supervised
    tokens gives 0 (not NaN).
    """
    logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    weight = loss_weights[:, 1:].float()
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    )
    supervised = (target != IGNORE).sum()
    loss: torch_types.Tensor = (per_token * weight.reshape(-1)).sum() / supervised.clamp(min=1)
    return loss


# --- internals ---------------------------------------------------------------------------------


def _pools(examples: Sequence[Example], max_length: int, mix: Mapping[str, float]) -> dict[str, list[int]]:
    """Indices of the examples of each kind, after checking the examples against ``mix``."""
    for kind, fraction in mix.items():
        if kind == DOMAIN:
            raise ValueError(f"mix cannot name {DOMAIN!r}: an epoch is one pass over the domain examples")
        if not 0 < fraction < 1:
            raise ValueError(f"mix fraction of {kind!r} is {fraction}; it must be between 0 and 1")
    share = sum(mix.values())
    if share >= 1:
        raise ValueError(f"mix fractions sum to {share:.2f}; they must stay below 1")
    pools: dict[str, list[int]] = {DOMAIN: [], **{kind: [] for kind in mix}}
    for index, example in enumerate(examples):
        if example.kind not in pools:
            raise ValueError(
                f"example {index} has kind {example.kind!r}, which is neither {DOMAIN!r} nor in mix "
                f"{sorted(mix)}"
            )
        if not len(example):
            raise ValueError(f"example {index} has no tokens")
        if len(example) > max_length:
            raise ValueError(
                f"example {index} has {len(example)} tokens, more than max_length={max_length} "
                "(examples must be truncated when encoded)"
            )
        pools[example.kind].append(index)
    for kind, pool in pools.items():
        if not pool:
            raise ValueError(
                f"no {DOMAIN!r} examples: an epoch is one pass over them"
                if kind == DOMAIN
                else f"mix names kind {kind!r} but no example has that kind (empty pool)"
            )
    return pools


class _Cycle:
    """Endless draws from a pool: a seeded shuffle, reshuffled (new seed) each time it runs out."""

    def __init__(self, pool: list[int], key: str) -> None:
        self.pool, self.key, self.rounds = pool, key, 0
        self.queue: list[int] = []
        self.pos = 0

    def peek(self) -> int:
        if self.pos == len(self.queue):
            self.queue = list(self.pool)
            random.Random(f"{self.key}:{self.rounds}").shuffle(self.queue)
            self.rounds, self.pos = self.rounds + 1, 0
        return self.queue[self.pos]

    def take(self) -> int:
        index = self.peek()
        self.pos += 1
        return index


class _Row:
    __slots__ = ("free", "items")

    def __init__(self, capacity: int) -> None:
        self.free: int = capacity
        self.items: list[int] = []


def _first_fit(rows: Sequence[_Row], index: int, length: int) -> bool:
    """Put ``index`` in the first row with room for it; False when none has."""
    for row in rows:
        if row.free >= length:
            row.free -= length
            row.items.append(index)
            return True
    return False


class _Packer:
    """Packs the shuffled ``domain`` examples (and the mixed draws) into batches of rows.

    Each new batch first gets its mixed examples (per kind, about ``f * batch_size * max_length``
    tokens, at least one example; a shortfall or excess is carried to the next batch, so over the
    epoch the share is ``f`` unless single examples exceed it), packed first-fit-decreasing.
    Then windows of ``MEGABATCH`` batches are filled with the next domain examples,
    first-fit-decreasing over the rows taken row-major across the window's batches (so long
    examples spread over batches); those that find no room wait for the next window, and the
    window's batches are shuffled.  The last window opens batches one by one as needed, so only the
    very last batch can be short.
    """

    def __init__(self, draw: _Epoch) -> None:
        self.draw = draw
        self.capacity = draw.batch_size * draw.max_length
        self.share = sum(draw.mix.values())
        self.debt = dict.fromkeys(draw.mix, 0.0)
        self.no_room = (
            f"no room for domain examples beside the mixed ones in a batch of {draw.batch_size} rows of "
            f"{draw.max_length} tokens; raise batch_size or max_length, or lower the mix fractions"
        )

    def plan(self) -> Plan:
        """Full windows while the domain tokens left fill one, then the last window."""
        lengths, domain = self.draw.lengths, self.draw.domain
        batches: list[list[_Row]] = []
        waiting: list[int] = []
        position = 0
        remaining = sum(lengths[i] for i in domain)
        while position < len(domain) or waiting:
            window: list[list[_Row]]
            if remaining >= MEGABATCH * self.capacity:
                window, position, waiting = self._full_window(position, waiting)
            else:
                window = self._last_window(waiting + domain[position:])
                waiting, position = [], len(domain)
            remaining = sum(lengths[i] for i in waiting) + sum(lengths[i] for i in domain[position:])
            batches += window
        return [[row.items for row in batch if row.items] for batch in batches]

    def _new_batch(self) -> list[_Row]:
        """Empty rows holding this batch's mixed draws (first-fit-decreasing)."""
        draw, lengths = self.draw, self.draw.lengths
        rows = [_Row(draw.max_length) for _ in range(draw.batch_size)]
        drawn: list[int] = []
        for kind in sorted(draw.mix):
            # Draw to the nearest whole example of the kind's token quota, at least one; what the
            # batch takes too few or too many is owed by the next (bounded), so the share holds.
            fraction = draw.mix[kind]
            quota = fraction * self.capacity + self.debt[kind]
            tokens = 0
            while not tokens or tokens + lengths[draw.cycles[kind].peek()] / 2 <= quota:
                index = draw.cycles[kind].take()
                drawn.append(index)
                tokens += lengths[index]
            low, high = -fraction * self.capacity, fraction * (1 - self.share) * self.capacity
            self.debt[kind] = min(max(quota - tokens, low), high)
        for index in self._by_length(drawn):
            if not _first_fit(rows, index, lengths[index]):
                raise ValueError(
                    f"the mixed examples drawn for one batch do not fit in {draw.batch_size} rows of "
                    f"{draw.max_length} tokens; raise batch_size or lower the mix fractions"
                )
        return rows

    def _by_length(self, indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: -self.draw.lengths[i])

    def _full_window(self, position: int, waiting: list[int]) -> tuple[list[list[_Row]], int, list[int]]:
        """A full window: fixed rows, filled with the waiting and next domain examples until they
        overflow; returns the shuffled window, the new position and what still waits."""
        draw, lengths = self.draw, self.draw.lengths
        window = [self._new_batch() for _ in range(MEGABATCH)]
        rows = [batch[r] for r in range(draw.batch_size) for batch in window]
        free = sum(row.free for row in rows)
        tokens = sum(lengths[i] for i in waiting)
        while tokens < free:
            waiting.append(draw.domain[position])
            tokens += lengths[draw.domain[position]]
            position += 1
        before = len(waiting)
        waiting = [i for i in self._by_length(waiting) if not _first_fit(rows, i, lengths[i])]
        if len(waiting) == before:
            raise ValueError(self.no_room)
        draw.rng.shuffle(window)
        return window, position, waiting

    def _last_window(self, todo: list[int]) -> list[list[_Row]]:
        """The last window: batches opened as needed (batch-major first fit keeps rows full);
        all but the last batch shuffled."""
        lengths = self.draw.lengths
        window: list[list[_Row]] = []
        for i in self._by_length(todo):
            if not _first_fit([row for batch in window for row in batch], i, lengths[i]):
                window.append(self._new_batch())
                if not _first_fit(window[-1], i, lengths[i]):
                    raise ValueError(self.no_room)
        tail = window[:-1]
        self.draw.rng.shuffle(tail)
        window[:-1] = tail
        return window
